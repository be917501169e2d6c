"""Cost analytics: the usage ledger folded into totals, per day, month, provider and model.

The numbers are sums of the ledger's records and nothing else: ``total_cost`` is the
exact sum of ``cost_usd`` over the records in the period (kept as a fraction, so no float
error accumulates), rounded to 10 decimal places. Days and months are UTC. Every record
counts as a request, including failed ones (which carry the cost of what was consumed,
usually 0). Cached prompt tokens (read from a provider's cache, and written to it) are
counted apart within ``prompt_tokens``, as the ledger priced them; requests for a model
nobody priced are counted as ``unpriced_requests``, and a model all of whose requests
were unpriced is marked ``priced: false`` in ``model_breakdown``.

Each worker folds every record once into hourly aggregates keyed by (hour, provider,
model, user, project, api key), so memory grows with the number of distinct such
combinations per hour, not with the number of requests. Dates filter exactly; an ISO
datetime filter is applied at the resolution of the hour that contains it.
"""

from __future__ import annotations

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

    def matches(self, key: tuple) -> bool:
        """Whether the aggregate ``key`` (hour, provider, model, user, project, api key) counts."""
        hour, _, _, user, project, api_key = key
        return (
            (self.start is None or hour + HOUR > self.start)
            and (self.end is None or hour < self.end)
            and (self.user_id is None or user == self.user_id)
            and (self.project_id is None or project == self.project_id)
            and (self.api_key_id is None or api_key == self.api_key_id)
        )


HOUR = 3600
GRANULARITIES = {"HOUR": HOUR, "DAY": 24 * HOUR}


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


_UNIT_BITS = 1074  # every finite float is a whole number of 2**-1074
_UNIT = 1 << _UNIT_BITS


def _units(amount: float) -> int:
    """``amount`` as an exact whole number of 2**-1074: summing these is exact, like Fractions,
    at a small part of their cost (no gcd on every addition)."""
    numerator, denominator = amount.as_integer_ratio()  # the denominator is a power of two
    return numerator << (_UNIT_BITS + 1 - denominator.bit_length())


class _Sum:
    """Cost, requests and tokens of a group of records, and when the first and last were made."""

    __slots__ = (
        "cost_units",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "unpriced_requests",
        "first",
        "last",
    )

    def __init__(self) -> None:
        self.cost_units = 0  # exact: whole 2**-1074ths of a dollar (see _units)
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.cached_tokens = self.cache_write_tokens = self.unpriced_requests = 0
        self.first = self.last = None

    def add(self, record: UsageRecord) -> None:
        if record.cost_usd:
            self.cost_units += _units(record.cost_usd)
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cached_tokens += record.cached_tokens
        self.cache_write_tokens += record.cache_write_tokens
        self.unpriced_requests += not record.priced
        self._seen(record.timestamp, record.timestamp)

    def merge(self, other: _Sum) -> None:
        self.cost_units += other.cost_units
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.unpriced_requests += other.unpriced_requests
        self._seen(other.first, other.last)

    def _seen(self, first: float | None, last: float | None) -> None:
        if first is not None:
            self.first = first if self.first is None else min(self.first, first)
            self.last = last if self.last is None else max(self.last, last)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return round(self.cost_units / _UNIT, 10)  # int / int: correctly rounded

    def as_dict(self) -> dict:
        return {
            "cost": self.cost,
            "requests": self.requests,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "unpriced_requests": self.unpriced_requests,
        }


class CostAnalytics:
    """Answers ``costAnalytics`` from hourly aggregates of the usage ledger."""

    def __init__(self, ledger: UsageLedger):
        self.ledger = ledger
        self._hours: dict[tuple, _Sum] = {}
        ledger.add_fold(self._add)

    def _add(self, record: UsageRecord) -> None:
        hour = int(record.timestamp // HOUR) * HOUR
        key = (hour, record.provider or "unknown", record.model, record.user, record.project, record.api_key_id)
        group = self._hours.get(key)
        if group is None:
            group = self._hours[key] = _Sum()
        group.add(record)

    def report(self, flt: AnalyticsFilter | None = None) -> dict:
        flt = flt or AnalyticsFilter()
        self.ledger.catch_up()
        total, days, months, providers, models = _Sum(), {}, {}, {}, {}
        for key, group in list(self._hours.items()):
            if not flt.matches(key):
                continue
            moment = datetime.fromtimestamp(key[0], UTC)
            total.merge(group)
            days.setdefault(moment.strftime("%Y-%m-%d"), _Sum()).merge(group)
            months.setdefault(moment.strftime("%Y-%m"), _Sum()).merge(group)
            providers.setdefault(key[1], _Sum()).merge(group)
            models.setdefault(key[2], _Sum()).merge(group)
        ranked = sorted(models.items(), key=lambda kv: (-kv[1].cost, -kv[1].requests, kv[0]))
        return {
            "total_cost": total.cost,
            "total_tokens": total.tokens,
            "total_requests": total.requests,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "cached_tokens": total.cached_tokens,
            "cache_write_tokens": total.cache_write_tokens,
            "unpriced_requests": total.unpriced_requests,
            "daily_usage": [{"date": k, **v.as_dict()} for k, v in sorted(days.items())],
            "monthly_usage": [{"month": k, **v.as_dict()} for k, v in sorted(months.items())],
            "provider_breakdown": {k: v.as_dict() for k, v in sorted(providers.items())},
            "model_breakdown": {
                k: v.as_dict() | {"priced": v.unpriced_requests < v.requests} for k, v in sorted(models.items())
            },
            "top_models": [{"model": k, **v.as_dict()} for k, v in ranked[:TOP_MODELS]],
            "period_start": _iso(flt.start if flt.start is not None else total.first),
            "period_end": _iso(flt.end if flt.end is not None else total.last),
        }

    def series(self, flt: AnalyticsFilter | None = None, granularity: str = "DAY") -> list[dict]:
        """Usage per UTC hour or day, oldest first, each bucket split by provider.

        Buckets without usage are left out (a chart fills the gaps). The same hourly
        aggregates as :meth:`report`, so the buckets sum to its totals.
        """
        if granularity not in GRANULARITIES:
            raise ValidationError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
        flt = flt or AnalyticsFilter()
        self.ledger.catch_up()
        width = GRANULARITIES[granularity]
        buckets: dict[int, tuple[_Sum, dict[str, _Sum]]] = {}
        for key, group in list(self._hours.items()):
            if not flt.matches(key):
                continue
            total, providers = buckets.setdefault(key[0] // width * width, (_Sum(), {}))
            total.merge(group)
            providers.setdefault(key[1], _Sum()).merge(group)
        return [
            {
                "start": _iso(start),
                **total.as_dict(),
                "providers": {k: v.as_dict() for k, v in sorted(providers.items())},
            }
            for start, (total, providers) in sorted(buckets.items())
        ]
