"""Cost analytics: the usage ledger folded into totals, per day, month, provider and model.

The numbers are sums of the ledger's records and nothing else: ``total_cost`` is the
exact (``math.fsum``) sum of ``cost_usd`` over the records in the period, rounded to
10 decimal places to hide float noise. Days and months are UTC. Every record counts as
a request, including failed ones (which carry the cost of what was consumed, usually 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from cb.errors import ValidationError
from cb.llm.ledger import UsageLedger
from cb.llm.routing import UsageRecord

TOP_MODELS = 10


@dataclass
class AnalyticsFilter:
    """Which records count: a period (inclusive dates or datetimes) and who made them."""

    start: float | None = None  # unix seconds, inclusive
    end: float | None = None  # unix seconds, exclusive
    user_id: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None

    @classmethod
    def from_input(cls, data: dict | None) -> AnalyticsFilter:
        data = data or {}
        start = parse_moment(data.get("start_date"), "start_date")
        end = parse_moment(data.get("end_date"), "end_date", end=True)
        if start is not None and end is not None and end <= start:
            raise ValidationError("end_date must not be before start_date")
        return cls(start, end, data.get("user_id"), data.get("project_id"), data.get("api_key_id"))

    def matches(self, record: UsageRecord) -> bool:
        return (
            (self.start is None or record.timestamp >= self.start)
            and (self.end is None or record.timestamp < self.end)
            and (self.user_id is None or record.user == self.user_id)
            and (self.project_id is None or record.project == self.project_id)
            and (self.api_key_id is None or record.api_key_id == self.api_key_id)
        )


def parse_moment(value: str | None, field: str, end: bool = False) -> float | None:
    """``2025-01-14`` (a whole day: an end date includes that day) or an ISO datetime."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError(f"{field} {value!r} is not a date (YYYY-MM-DD) or an ISO datetime") from None
    return moment.timestamp()


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


class _Sum:
    """Cost, requests and tokens of a group of records."""

    __slots__ = ("costs", "requests", "tokens", "prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self.costs: list[float] = []
        self.requests = self.tokens = self.prompt_tokens = self.completion_tokens = 0

    def add(self, record: UsageRecord) -> None:
        self.costs.append(record.cost_usd or 0.0)
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.tokens += record.prompt_tokens + record.completion_tokens

    @property
    def cost(self) -> float:
        return round(math.fsum(self.costs), 10)

    def as_dict(self) -> dict:
        return {
            "cost": self.cost,
            "requests": self.requests,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class CostAnalytics:
    """Answers ``costAnalytics`` from the usage ledger."""

    def __init__(self, ledger: UsageLedger):
        self.ledger = ledger

    def report(self, flt: AnalyticsFilter | None = None) -> dict:
        flt = flt or AnalyticsFilter()
        total, days, months, providers, models = _Sum(), {}, {}, {}, {}
        first = last = None
        for record in self.ledger.records():
            if not flt.matches(record):
                continue
            moment = datetime.fromtimestamp(record.timestamp, UTC)
            total.add(record)
            days.setdefault(moment.strftime("%Y-%m-%d"), _Sum()).add(record)
            months.setdefault(moment.strftime("%Y-%m"), _Sum()).add(record)
            providers.setdefault(record.provider or "unknown", _Sum()).add(record)
            models.setdefault(record.model, _Sum()).add(record)
            first = record.timestamp if first is None else min(first, record.timestamp)
            last = record.timestamp if last is None else max(last, record.timestamp)
        ranked = sorted(models.items(), key=lambda kv: (-kv[1].cost, -kv[1].requests, kv[0]))
        return {
            "total_cost": total.cost,
            "total_tokens": total.tokens,
            "total_requests": total.requests,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "daily_usage": [{"date": k, **v.as_dict()} for k, v in sorted(days.items())],
            "monthly_usage": [{"month": k, **v.as_dict()} for k, v in sorted(months.items())],
            "provider_breakdown": {k: v.as_dict() for k, v in sorted(providers.items())},
            "model_breakdown": {k: v.as_dict() for k, v in sorted(models.items())},
            "top_models": [{"model": k, **v.as_dict()} for k, v in ranked[:TOP_MODELS]],
            "period_start": _iso(flt.start if flt.start is not None else first),
            "period_end": _iso(flt.end if flt.end is not None else last),
        }
