"""Usage ledger folds: cost analytics, budgets; run-time deployments in storage with sealed keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import gevent
import pytest

from cb.errors import NotFound, ValidationError
from cb.llm.analytics import AnalyticsFilter, CostAnalytics
from cb.llm.budgets import BudgetExceeded, Budgets
from cb.llm.deployments import BUCKET, DeploymentRegistry
from cb.llm.ledger import UsageLedger
from cb.llm.providers.base import Deployment
from cb.llm.routing import RequestContext, UsageRecord
from cb.logs import redactor
from cb.secrets import SecretBox, SecretUnavailable
from cb.storage.memory import MemoryStorage


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def rec(
    n: int,
    when: str,
    cost: float,
    model="gpt-4o",
    provider="openai",
    user=None,
    project=None,
    key=None,
    prompt=10,
    completion=5,
) -> UsageRecord:
    return UsageRecord(
        id=f"r{n}",
        timestamp=ts(when),
        model=model,
        provider=provider,
        user=user,
        project=project,
        api_key_id=key,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
    )


@pytest.fixture
def ledger():
    ledger = UsageLedger(MemoryStorage())
    for r in (
        rec(1, "2025-01-14T10:00:00", 0.10, user="alice"),
        rec(2, "2025-01-14T23:59:59", 0.20, model="claude-3-haiku-20240307", provider="anthropic", user="bob"),
        rec(3, "2025-01-15T00:00:00", 0.30, user="alice", project="p1"),
        rec(4, "2025-02-01T12:00:00", 0.01, model="gpt-4o-mini", project="p1", key="k1", prompt=100, completion=0),
    ):
        ledger.record(r)
    return ledger


def test_totals_are_the_sum_of_the_ledger(ledger):
    report = CostAnalytics(ledger).report()
    assert report["total_cost"] == 0.61
    assert report["total_requests"] == 4
    assert report["total_tokens"] == 15 * 3 + 100
    assert report["period_start"] == "2025-01-14T10:00:00Z" and report["period_end"] == "2025-02-01T12:00:00Z"


def test_daily_and_monthly_usage_group_by_utc_day_and_month(ledger):
    report = CostAnalytics(ledger).report()
    assert [(d["date"], d["cost"], d["requests"]) for d in report["daily_usage"]] == [
        ("2025-01-14", 0.3, 2),
        ("2025-01-15", 0.3, 1),
        ("2025-02-01", 0.01, 1),
    ]
    assert [(m["month"], m["cost"], m["tokens"]) for m in report["monthly_usage"]] == [
        ("2025-01", 0.6, 45),
        ("2025-02", 0.01, 100),
    ]


def test_breakdowns_and_top_models_rank_by_cost(ledger):
    report = CostAnalytics(ledger).report()
    assert report["provider_breakdown"]["openai"]["cost"] == 0.41
    assert report["provider_breakdown"]["anthropic"]["requests"] == 1
    assert report["model_breakdown"]["gpt-4o"]["cost"] == 0.4
    assert [m["model"] for m in report["top_models"]] == ["gpt-4o", "claude-3-haiku-20240307", "gpt-4o-mini"]


def test_filters_by_period_user_project_and_key(ledger):
    analytics = CostAnalytics(ledger)
    jan14 = analytics.report(AnalyticsFilter.from_input({"start_date": "2025-01-14", "end_date": "2025-01-14"}))
    assert (jan14["total_cost"], jan14["total_requests"]) == (0.3, 2)
    assert analytics.report(AnalyticsFilter.from_input({"user_id": "alice"}))["total_cost"] == 0.4
    assert analytics.report(AnalyticsFilter.from_input({"project_id": "p1"}))["total_cost"] == 0.31
    assert analytics.report(AnalyticsFilter.from_input({"api_key_id": "k1"}))["total_requests"] == 1


def test_bad_dates_are_validation_errors():
    with pytest.raises(ValidationError, match="start_date"):
        AnalyticsFilter.from_input({"start_date": "yesterday"})
    with pytest.raises(ValidationError, match="before"):
        AnalyticsFilter.from_input({"start_date": "2025-02-01", "end_date": "2025-01-01"})


def test_many_small_costs_sum_to_the_cent():
    ledger = UsageLedger(MemoryStorage())
    for i in range(1000):
        ledger.record(rec(i, "2025-03-01T00:00:00", 0.001))
    assert CostAnalytics(ledger).report()["total_cost"] == 1.0


def test_each_fold_sees_every_record_once_in_order():
    ledger = UsageLedger(MemoryStorage())
    seen: list[str] = []
    ledger.add_fold(lambda record: seen.append(record.id))
    ledger.record(rec(1, "2025-03-01T00:00:00", 0.5))
    ledger.catch_up()
    ledger.record(rec(2, "2025-03-01T00:00:00", 0.5))
    ledger.catch_up()
    ledger.catch_up()
    assert seen == ["r1", "r2"]


def test_analytics_hold_aggregates_not_records():
    ledger = UsageLedger(MemoryStorage())
    analytics = CostAnalytics(ledger)
    for i in range(3000):
        ledger.record(rec(i, f"2025-03-01T10:{i % 60:02d}:00", 0.001))
    assert analytics.report()["total_requests"] == 3000 and analytics.report()["total_cost"] == 3.0
    assert len(analytics._hours) == 1  # one hour, one provider/model/user/project/key


# -- budgets --------------------------------------------------------------------------


def now_rec(n, cost, **kw):
    record = rec(n, "2025-01-01T00:00:00", cost, **kw)
    record.timestamp = time.time()
    return record


def test_budget_status_reports_use_in_the_current_period():
    ledger = UsageLedger(MemoryStorage())
    budgets = Budgets(ledger.storage, ledger)
    budgets.set({"scope": "USER", "scope_id": "alice", "limit_usd": 2.0, "period": "DAILY"})
    ledger.record(now_rec(1, 0.5, user="alice"))
    ledger.record(now_rec(2, 9.0, user="bob"))
    ledger.record(rec(3, "2020-01-01T00:00:00", 9.0, user="alice"))  # another day
    status = budgets.status("USER", "alice")
    assert (status["used_usd"], status["remaining_usd"], status["percentage_used"]) == (0.5, 1.5, 25.0)
    assert not status["is_warning"] and not status["is_exhausted"]


def test_budgets_lists_every_budget_with_its_status_global_first():
    ledger = UsageLedger(MemoryStorage())
    budgets = Budgets(ledger.storage, ledger)
    budgets.set({"scope": "USER", "scope_id": "bob", "limit_usd": 1.0})
    budgets.set({"scope": "GLOBAL", "limit_usd": 10.0, "period": "DAILY"})
    ledger.record(now_rec(1, 0.25, user="bob"))
    listed = [(s["scope"], s["scope_id"], s["used_usd"]) for s in budgets.statuses()]
    assert listed == [("GLOBAL", None, 0.25), ("USER", "bob", 0.25)]


def test_exhausted_budget_refuses_with_insufficient_quota_naming_it():
    ledger = UsageLedger(MemoryStorage())
    budgets = Budgets(ledger.storage, ledger)
    budgets.set({"scope": "PROJECT", "scope_id": "apollo", "limit_usd": 1.0, "period": "MONTHLY"})
    ledger.record(now_rec(1, 1.0, project="apollo"))
    assert budgets.check(RequestContext(project="gemini")) == []
    with pytest.raises(BudgetExceeded) as caught:
        budgets.check(RequestContext(project="apollo"))
    assert (caught.value.http_status, caught.value.openai_code) == (429, "insufficient_quota")
    assert "PROJECT budget 'apollo' (MONTHLY)" in caught.value.message


def test_warning_threshold_produces_a_warning():
    ledger = UsageLedger(MemoryStorage())
    budgets = Budgets(ledger.storage, ledger)
    budgets.set({"scope": "GLOBAL", "limit_usd": 10.0, "period": "DAILY", "warning_threshold": 0.5})
    ledger.record(now_rec(1, 4.99))
    assert budgets.check(RequestContext()) == []
    ledger.record(now_rec(2, 0.01))
    assert budgets.check(RequestContext(user="anyone")) == ["global budget (DAILY) at 50.0% of $10.00"]


def test_budget_set_on_one_worker_is_enforced_by_another():
    storage = MemoryStorage()
    ledger = UsageLedger(storage)
    Budgets(storage, UsageLedger(storage)).set({"scope": "API_KEY", "scope_id": "k1", "limit_usd": 0.0})
    with pytest.raises(BudgetExceeded):
        ledger.record(now_rec(1, 0.01, key="k1"))
        Budgets(storage, ledger).check(RequestContext(api_key_id="k1"))


def test_budget_input_is_validated():
    budgets = Budgets(MemoryStorage(), UsageLedger(MemoryStorage()))
    with pytest.raises(ValidationError, match="scope_id"):
        budgets.set({"scope": "USER", "limit_usd": 1})
    with pytest.raises(ValidationError, match="limit_usd"):
        budgets.set({"scope": "GLOBAL", "limit_usd": -1})
    with pytest.raises(NotFound):
        budgets.status("USER", "nobody")


# -- run-time deployments ---------------------------------------------------------------


def registry(storage, secret=None, refresh=0.5):
    env = [Deployment("openai", "openai", "https://api.openai.com/v1", "sk-env-key", "OPENAI_API_KEY", "OpenAI")]
    return DeploymentRegistry(env, [], storage, SecretBox(secret), refresh_seconds=refresh)


def test_configured_key_is_encrypted_at_rest_and_redacted():
    storage = MemoryStorage()
    reg = registry(storage, secret="s3cret-server-key")
    made = reg.configure(
        {
            "id": "vllm",
            "provider_type": "openai_compatible",
            "base_url": "http://vllm:8000/v1",
            "api_key": "sk-managed-abcdef",
            "models": ["llama3.2"],
        }
    )
    assert made.api_key == "sk-managed-abcdef"
    stored = storage.get(BUCKET, "vllm").value
    assert stored["api_key"].startswith("fernet:") and "sk-managed-abcdef" not in str(stored)
    assert redactor.redact("key=sk-managed-abcdef") == "key=[REDACTED]"


def test_sealed_key_needs_the_same_secret():
    sealed = SecretBox("one").seal("sk-abc")
    assert SecretBox("one").open(sealed) == "sk-abc"
    with pytest.raises(SecretUnavailable):
        SecretBox("two").open(sealed)
    with pytest.raises(SecretUnavailable):
        SecretBox(None).open(sealed)


def test_other_workers_see_a_configured_deployment_after_the_refresh_interval():
    storage = MemoryStorage()
    mine, theirs = registry(storage), registry(storage, refresh=0.2)
    assert [d.id for d in theirs.all()] == ["openai"]
    mine.configure({"id": "ollama-2", "provider_type": "ollama", "base_url": "http://gpu:11434"})
    time.sleep(0.25)
    assert [d.id for d in theirs.all()] == ["openai", "ollama-2"]
    mine.remove("ollama-2")
    time.sleep(0.25)
    assert [d.id for d in theirs.all()] == ["openai"]


class SlowListing(MemoryStorage):
    """Counts whole-bucket reads, each taking a while (a NATS listing yields to other greenlets)."""

    def __init__(self):
        super().__init__()
        self.lists = 0

    def list(self, bucket):
        self.lists += 1
        gevent.sleep(0.05)
        return super().list(bucket)


def test_requests_that_find_the_deployments_stale_at_once_reload_them_once():
    storage = SlowListing()
    reg = registry(storage, refresh=0.2)
    reg.all()
    registry(storage).configure({"id": "ollama-2", "provider_type": "ollama", "base_url": "http://gpu:11434"})
    time.sleep(0.25)
    before = storage.lists
    seen = [g.value for g in gevent.joinall([gevent.spawn(reg.all) for _ in range(32)])]
    assert storage.lists - before == 1  # not one read of the whole bucket per waiting request
    assert [d.id for d in reg.all()] == ["openai", "ollama-2"]
    assert all([d.id for d in ids] in (["openai"], ["openai", "ollama-2"]) for ids in seen)


def test_requests_that_find_the_budgets_stale_at_once_reload_them_once():
    storage = SlowListing()
    budgets = Budgets(storage, UsageLedger(MemoryStorage()), refresh_seconds=0.2)
    budgets.set({"scope": "GLOBAL", "limit_usd": 5.0})
    time.sleep(0.25)
    before = storage.lists
    gevent.joinall([gevent.spawn(budgets.get, "GLOBAL", None) for _ in range(32)])
    assert storage.lists - before == 1
    assert budgets.get("GLOBAL", None).limit_usd == 5.0


def test_overriding_an_environment_deployment_keeps_its_key_unless_given():
    reg = registry(MemoryStorage())
    updated = reg.configure({"id": "openai", "weight": 3, "priority": 2})
    assert (updated.api_key, updated.weight, updated.priority, reg.source("openai")) == (
        "sk-env-key",
        3.0,
        2,
        "managed",
    )
    assert "sk-env-key" not in str(reg.storage.get(BUCKET, "openai").value)
    reg.remove("openai")
    assert reg.get("openai").weight == 1.0
    with pytest.raises(ValidationError, match="environment"):
        reg.remove("openai")


def test_configure_validates_its_input():
    reg = registry(MemoryStorage())
    with pytest.raises(ValidationError, match="provider_type"):
        reg.configure({"id": "x", "base_url": "http://x"})
    with pytest.raises(ValidationError, match="provider_type"):
        reg.configure({"id": "x", "provider_type": "telepathy"})
    with pytest.raises(ValidationError, match="base_url"):
        reg.configure({"id": "x", "provider_type": "ollama", "base_url": "ftp://x"})
    with pytest.raises(ValidationError, match="id"):
        reg.configure({"id": "a/b", "provider_type": "ollama"})
    with pytest.raises(NotFound):
        reg.remove("missing")


def test_budgets_count_every_record_folded_since_they_were_set():
    storage = MemoryStorage()
    ledger = UsageLedger(storage)
    budgets = Budgets(storage, ledger)
    budgets.set({"scope": "GLOBAL", "limit_usd": 100, "period": "DAILY"})
    for i in range(5):
        ledger.record(rec(i, datetime.now(UTC).isoformat(), 1.0))
        if i % 2:
            budgets.status("GLOBAL", None)
    assert budgets.status("GLOBAL", None)["used_usd"] == 5.0


def test_usage_series_per_day_and_hour_split_by_provider_sums_to_the_totals(ledger):
    analytics = CostAnalytics(ledger)
    days = analytics.series(granularity="DAY")
    assert [(d["start"], d["cost"], d["requests"]) for d in days] == [
        ("2025-01-14T00:00:00Z", 0.3, 2),
        ("2025-01-15T00:00:00Z", 0.3, 1),
        ("2025-02-01T00:00:00Z", 0.01, 1),
    ]
    uncached = {"cached_tokens": 0, "cache_write_tokens": 0, "unpriced_requests": 0}
    assert days[0]["providers"] == {
        "anthropic": {
            "cost": 0.2,
            "requests": 1,
            "tokens": 15,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            **uncached,
        },
        "openai": {"cost": 0.1, "requests": 1, "tokens": 15, "prompt_tokens": 10, "completion_tokens": 5, **uncached},
    }
    flt = AnalyticsFilter.from_input({"start_date": "2025-01-14", "end_date": "2025-01-15"})
    hours = analytics.series(flt, "HOUR")
    assert [(h["start"], h["cost"]) for h in hours] == [
        ("2025-01-14T10:00:00Z", 0.1),
        ("2025-01-14T23:00:00Z", 0.2),
        ("2025-01-15T00:00:00Z", 0.3),
    ]
    assert sum(h["requests"] for h in hours) == analytics.report(flt)["total_requests"]
    with pytest.raises(ValidationError):
        analytics.series(granularity="WEEK")
