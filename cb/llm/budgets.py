"""Spending budgets: a limit in USD per day or month, for everyone or one key, user, project.

Budgets live in the storage bucket ``budgets`` (every worker reloads it at most every
half second). What was spent is folded from the usage ledger, per scope and UTC day /
month, incrementally. The gateway calls :meth:`Budgets.check` before a request: it
raises :class:`BudgetExceeded` (429, ``insufficient_quota``) when a budget that applies
is used up, and otherwise returns one warning per budget past its warning threshold,
for the ``x-cb-budget-warning`` header.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from cb import metrics
from cb.errors import NotFound, ValidationError
from cb.llm.errors import LLMError
from cb.llm.ledger import UsageLedger
from cb.llm.routing import RequestContext, UsageRecord
from cb.logs import get_logger
from cb.storage import Reloads, Storage

log = get_logger("llm.budgets")

BUCKET = "budgets"
SCOPES = ("GLOBAL", "API_KEY", "USER", "PROJECT")
PERIODS = ("DAILY", "MONTHLY")


class BudgetExceeded(LLMError):
    """A budget that applies to the request is used up."""

    http_status = 429
    code = "BUDGET_EXCEEDED"
    openai_code = "insufficient_quota"


@dataclass
class Budget:
    scope: str
    scope_id: str | None
    limit_usd: float
    period: str = "MONTHLY"
    warning_threshold: float = 0.8  # share of the limit

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.scope_id or '*'}"

    def label(self) -> str:
        who = "global budget" if self.scope == "GLOBAL" else f"{self.scope} budget '{self.scope_id}'"
        return f"{who} ({self.period})"


def period_label(period: str, ts: float) -> str:
    day = _day_label(int(ts // 86400))  # a UTC day is 86,400 s of POSIX time
    return day if period == "DAILY" else day[:7]


@functools.lru_cache(maxsize=64)
def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def _scopes_of(record_or_ctx) -> list[tuple[str, str | None]]:
    found = [("GLOBAL", None)]
    for scope, value in (
        ("API_KEY", record_or_ctx.api_key_id),
        ("USER", record_or_ctx.user),
        ("PROJECT", record_or_ctx.project),
    ):
        if value:
            found.append((scope, value))
    return found


class Budgets:
    """Set budgets, report their status, and refuse requests in exhausted scopes."""

    def __init__(self, storage: Storage, ledger: UsageLedger, refresh_seconds: float = 0.5):
        self.storage = storage
        self.ledger = ledger
        self._budgets: dict[str, Budget] = {}
        self._reloads = Reloads(refresh_seconds)
        self._spent: dict[tuple[str, str | None, str], float] = {}
        ledger.add_fold(self._add)

    # -- configuration ------------------------------------------------------------

    def set(self, spec: dict) -> Budget:
        """Create or replace the budget of a scope (GraphQL ``setBudget``)."""
        scope = str(spec.get("scope") or "").upper()
        if scope not in SCOPES:
            raise ValidationError(f"scope must be one of {', '.join(SCOPES)}")
        scope_id = spec.get("scope_id") or None
        if scope != "GLOBAL" and not scope_id:
            raise ValidationError(f"a {scope} budget needs a scope_id")
        period = str(spec.get("period") or "MONTHLY").upper()
        if period not in PERIODS:
            raise ValidationError(f"period must be one of {', '.join(PERIODS)}")
        limit = float(spec.get("limit_usd", -1))
        if limit < 0:
            raise ValidationError("limit_usd must be 0 or more")
        threshold = spec.get("warning_threshold")
        threshold = 0.8 if threshold is None else float(threshold)
        if threshold > 1:
            threshold /= 100  # given as a percentage
        if not 0 < threshold <= 1:
            raise ValidationError("warning_threshold must be a share of the limit between 0 and 1")
        budget = Budget(scope, None if scope == "GLOBAL" else str(scope_id), limit, period, threshold)
        self.storage.put(BUCKET, budget.key, asdict(budget))
        self._load()
        return budget

    def get(self, scope: str, scope_id: str | None) -> Budget | None:
        scope = scope.upper()
        return self._current().get(f"{scope}:{(scope_id if scope != 'GLOBAL' else None) or '*'}")

    def _current(self) -> dict[str, Budget]:
        self._reloads.when_due(self._load)
        return self._budgets

    def _load(self) -> None:
        try:
            entries = self.storage.list(BUCKET)
        except Exception as exc:  # keep enforcing what we had
            log.warning("could not reload budgets: %s", exc)
        else:
            self._budgets = {e.key: Budget(**e.value) for e in entries}
        self._reloads.loaded()

    # -- spending -----------------------------------------------------------------

    def _fold(self) -> None:
        self.ledger.catch_up()
        self._forget_old_periods()

    def _forget_old_periods(self) -> None:
        """Keep spending only for the current day and month (older periods never count again)."""
        current = {period_label(p, time.time()) for p in PERIODS}
        if any(key[2] not in current for key in self._spent):
            self._spent = {k: v for k, v in self._spent.items() if k[2] in current}

    def _add(self, record: UsageRecord) -> None:
        if not record.cost_usd:
            return
        labels = [period_label(p, record.timestamp) for p in PERIODS]
        for scope, scope_id in _scopes_of(record):
            for label in labels:
                key = (scope, scope_id, label)
                self._spent[key] = self._spent.get(key, 0.0) + record.cost_usd

    def used(self, budget: Budget, now: float | None = None) -> float:
        """USD spent in the budget's scope during its current period."""
        self._fold()
        label = period_label(budget.period, time.time() if now is None else now)
        return round(self._spent.get((budget.scope, budget.scope_id, label), 0.0), 10)

    def status(self, scope: str, scope_id: str | None) -> dict:
        """``budgetStatus``: limit, used, remaining, percentage and flags of one budget."""
        budget = self.get(scope, scope_id)
        if budget is None:
            raise NotFound(f"no {scope.upper()} budget" + (f" for '{scope_id}'" if scope_id else ""))
        return self._status(budget)

    def statuses(self) -> list[dict]:
        """``budgets``: the status of every budget, ordered by scope and scope id."""
        budgets = sorted(self._current().values(), key=lambda b: (SCOPES.index(b.scope), b.scope_id or ""))
        return [self._status(b) for b in budgets]

    def _status(self, budget: Budget) -> dict:
        used = self.used(budget)
        limit = budget.limit_usd
        return {
            "scope": budget.scope,
            "scope_id": budget.scope_id,
            "period": budget.period,
            "limit_usd": limit,
            "used_usd": used,
            "remaining_usd": round(max(0.0, limit - used), 10),
            "percentage_used": round(used / limit * 100, 4) if limit > 0 else (100.0 if used > 0 else 0.0),
            "warning_threshold": budget.warning_threshold,
            "is_warning": used >= budget.warning_threshold * limit,
            "is_exhausted": used >= limit,
        }

    def check(self, ctx: RequestContext) -> list[str]:
        """Before a request: raise BudgetExceeded if a budget that applies is used up, else return warnings."""
        budgets = self._current()
        if not budgets:
            return []
        warnings = []
        for scope, scope_id in _scopes_of(ctx):
            budget = budgets.get(f"{scope}:{scope_id or '*'}")
            if budget is None:
                continue
            status = self._status(budget)
            if status["is_exhausted"]:
                metrics.budget_refused.inc()
                raise BudgetExceeded(
                    f"Budget exceeded: the {budget.label()} of ${budget.limit_usd:.2f} is used up "
                    f"(${status['used_usd']:.2f} spent)"
                )
            if status["is_warning"]:
                warnings.append(f"{budget.label()} at {status['percentage_used']:.1f}% of ${budget.limit_usd:.2f}")
        return warnings
