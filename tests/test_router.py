"""The router's decisions: model resolution, strategies, breakers, constraints, fallbacks, TOML."""

from __future__ import annotations

import time

import pytest

from cb.config import ConfigError, Settings
from cb.llm.catalog import Catalog
from cb.llm.deployments import RouterConfig, env_deployments, load_config
from cb.llm.discovery import Listing
from cb.llm.errors import InvalidRequest, ModelNotFound, ProviderNotConfigured
from cb.llm.health import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, DeploymentHealth, HealthBook
from cb.llm.providers.base import Deployment
from cb.llm.router import NoRouteAvailable, Router
from cb.llm.routing import RequestContext
from cb.llm.strategies import balanced_scores
from cb.llm.types import Usage
from tests.harness import ROOT


def settings(**env) -> Settings:
    base = {"OLLAMA_BASE_URL": ""}
    base.update(env)
    return Settings.from_env(base, dotenv=None)


def make_router(extra: list[Deployment] = (), config: RouterConfig | None = None, **env) -> Router:
    s = settings(**env)
    return Router(s, Catalog.default(), env_deployments(s) + list(extra), config)


def pairs(routes) -> list[tuple[str, str]]:
    return [(r.deployment.id, r.model.id) for r in routes]


def listed(router: Router, deployment_id: str, *ids: str) -> None:
    """What discovery does when ``deployment_id``'s endpoint lists ``ids``."""
    router.discovered[deployment_id] = Listing(router.catalog.discovered(deployment_id, i).id for i in ids)


def proxy(id="proxy", **kw) -> Deployment:
    return Deployment(id, "openai", f"http://{id}.local/v1", "sk-" + id, **kw)


# -- model resolution --------------------------------------------------------------


def test_the_guides_alias_resolves_to_its_dated_model():
    router = make_router(ANTHROPIC_API_KEY="sk-ant")
    for name in ("claude-3-opus", "claude-3-opus-20240229"):
        routes = router.routes(name, RequestContext())
        assert pairs(routes) == [("anthropic", "claude-3-opus")]
        assert routes[0].upstream_model == "claude-3-opus-20240229"


def test_explicit_provider_prefix_picks_that_provider():
    router = make_router(OPENAI_API_KEY="sk-o", OLLAMA_BASE_URL="http://127.0.0.1:9")
    routes = router.routes("ollama/llama3.2", RequestContext())
    assert pairs(routes) == [("ollama", "llama3.2")]
    assert routes[0].upstream_model == "llama3.2"


def test_explicit_deployment_prefix_pins_the_deployment():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o")
    assert pairs(router.routes("proxy/gpt-4o", RequestContext())) == [("proxy", "gpt-4o")]


def test_explicit_unknown_model_is_sent_as_named_without_joining_the_catalog():
    router = make_router(OLLAMA_BASE_URL="http://127.0.0.1:9")
    routes = router.routes("ollama/mistral:7b", RequestContext())
    assert routes[0].upstream_model == "mistral:7b"
    assert router.catalog.get("mistral:7b") is None


def test_unknown_model_is_model_not_found():
    with pytest.raises(ModelNotFound):
        make_router(OPENAI_API_KEY="sk-o").routes("mistral-17", RequestContext())


@pytest.mark.parametrize(
    "model, provider",
    [
        ("claude-opus-4-8", "anthropic"),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("gpt-5", "openai"),
        ("gpt-4.1", "openai"),
        ("o3", "openai"),
        ("o4-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("gemini-2.5-pro", "google"),
        ("gemini-3-pro-preview", "google"),
    ],
)
def test_a_name_in_a_vendors_style_goes_to_that_vendor_before_any_listing(model, provider):
    router = make_router(OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a", GOOGLE_API_KEY="g")
    routes = router.routes(model, RequestContext())
    assert pairs(routes) == [(provider, model)]
    assert routes[0].upstream_model == model


def test_a_vendor_style_name_its_listing_lacks_is_not_found():
    router = make_router(ANTHROPIC_API_KEY="sk-a")
    router.discovered["anthropic"] = Listing(["claude-sonnet-4-5-20250929"])
    with pytest.raises(ModelNotFound):
        router.routes("claude-opus-4-8", RequestContext())


@pytest.mark.parametrize(
    "model, vendor",
    [
        ("gpt-image-1", "openai"),
        ("text-embedding-3-small", "openai"),
        ("gemini-embedding-001", "google"),
        ("text-embedding-004", "google"),
        ("gpt-4o-mini-tts", "openai"),
    ],
)
def test_names_of_models_that_cannot_chat_reach_their_vendor_marked_so(model, vendor):
    router = make_router(OPENAI_API_KEY="sk-o", GOOGLE_API_KEY="g")
    routes = router.routes(model, RequestContext())  # embeddings by name before any listing
    assert pairs(routes) == [(vendor, model)] and not routes[0].model.chat
    assert router.routes("cb:cost-optimal", RequestContext())[0].model.chat  # never a virtual model's choice


def test_a_vendor_style_name_without_its_key_names_the_variable():
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY"):
        make_router(OPENAI_API_KEY="sk-o").routes("claude-opus-4-8", RequestContext())


def test_model_of_unconfigured_provider_names_the_variable():
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY"):
        make_router(OPENAI_API_KEY="sk-o").routes("claude-3-haiku", RequestContext())


def test_own_key_makes_an_unconfigured_provider_usable():
    routes = make_router().routes("claude-3-haiku", RequestContext(provider_key="sk-agent"))
    assert pairs(routes) == [("anthropic", "claude-3-haiku")]


@pytest.mark.parametrize(
    "virtual", ["auto", "cb:cost-optimal", "cb:fastest", "cb:smart-chat", "cb:coding", "cb:analysis", "cb:creative"]
)
def test_virtual_models_resolve_only_to_configured_providers(virtual):
    routes = make_router(ANTHROPIC_API_KEY="sk-ant", ROUTER_MAX_ATTEMPTS="10").routes(virtual, RequestContext())
    assert routes
    assert {r.deployment.provider_type for r in routes} == {"anthropic"}


def test_virtual_model_with_no_provider_configured_is_refused():
    with pytest.raises(ProviderNotConfigured):
        make_router().routes("auto", RequestContext())


def test_virtual_model_ranks_across_deployments_serving_a_listed_model():
    vllm = Deployment("vllm", "openai_compatible", "http://vllm.local/v1", models=["llama3.2"])
    router = make_router([vllm], OPENAI_API_KEY="sk-o", OLLAMA_BASE_URL="http://127.0.0.1:9")
    router.discovered["ollama"] = Listing(["llama3.2"])
    routes = router.routes("cb:cost-optimal", RequestContext())
    assert set(pairs(routes)[:2]) == {("ollama", "llama3.2"), ("vllm", "llama3.2")}


@pytest.mark.parametrize("virtual", ["auto", "cb:cost-optimal", "cb:fastest", "cb:coding"])
def test_virtual_models_skip_an_ollama_whose_models_were_never_discovered(virtual):
    router = make_router(OPENAI_API_KEY="sk-o", OLLAMA_BASE_URL="http://localhost:11434", ROUTER_MAX_ATTEMPTS="20")
    listed(router, "openai", "gpt-5", "gpt-5-mini")
    assert {r.deployment.id for r in router.routes(virtual, RequestContext())} == {"openai"}


def test_virtual_model_reaches_ollama_only_for_what_it_listed():
    router = make_router(OPENAI_API_KEY="sk-o", OLLAMA_BASE_URL="http://localhost:11434", ROUTER_MAX_ATTEMPTS="20")
    router.catalog.discovered("ollama", "qwen2.5:7b")
    router.discovered["ollama"] = Listing(["qwen2.5:7b"])
    routes = router.routes("cb:cost-optimal", RequestContext())
    assert [r.model.id for r in routes if r.deployment.id == "ollama"] == ["qwen2.5:7b"]
    assert pairs(routes)[0] == ("ollama", "qwen2.5:7b")  # free, so first by cost


def test_bare_model_of_an_unreachable_ollama_is_not_found_naming_it():
    router = make_router(OLLAMA_BASE_URL="http://localhost:11434")
    with pytest.raises(ModelNotFound, match="localhost:11434 has not listed it"):
        router.routes("llama3.2", RequestContext())
    assert pairs(router.routes("ollama/llama3.2", RequestContext())) == [("ollama", "llama3.2")]


def test_virtual_models_skip_deployments_with_an_open_breaker():
    router = make_router(
        OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a", BREAKER_FAILURE_THRESHOLD="1", ROUTER_MAX_ATTEMPTS="20"
    )
    router.health["openai"].acquire()
    router.health["openai"].record(False, 5)
    assert {r.deployment.id for r in router.routes("auto", RequestContext())} == {"anthropic"}


def test_deployment_prices_make_cost_optimized_pick_the_cheaper_endpoint():
    cheap = proxy("cheap", priority=5, prices={"gpt-4o": [1.0, 2.0]})
    router = make_router([cheap], OPENAI_API_KEY="sk-o", ROUTING_STRATEGY="cost_optimized")
    routes = router.routes("gpt-4o", RequestContext())
    assert pairs(routes) == [("cheap", "gpt-4o"), ("openai", "gpt-4o")]
    now = time.time()
    assert (routes[0].model.cost(Usage(1000, 1000), now), routes[1].model.cost(Usage(1000, 1000), now)) == (
        0.003,
        0.0125,
    )
    assert router.catalog.by_vendor_name("openai", "gpt-4o").input_price == 2.5  # genai-prices', untouched


def test_a_model_served_by_two_deployments_gets_both_routes():
    router = make_router([proxy(priority=1)], OPENAI_API_KEY="sk-o", ROUTING_STRATEGY="cost_optimized")
    assert pairs(router.routes("gpt-4o", RequestContext())) == [("openai", "gpt-4o"), ("proxy", "gpt-4o")]


# -- strategies ----------------------------------------------------------------------


def test_cost_optimized_picks_the_cheapest_of_todays_listed_models():
    router = make_router(OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a")
    listed(router, "openai", "gpt-5", "gpt-5-mini", "text-embedding-3-small", "gpt-image-1")
    listed(router, "anthropic", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")
    plan = router.plan("cb:cost-optimal", RequestContext())
    assert plan.strategy == "cost_optimized"
    # $0.25/$2 per 1M, then $1/$5, $1.25/$10, $3/$15 (genai-prices); no embedding or image model
    assert pairs(plan.routes) == [
        ("openai", "gpt-5-mini"),
        ("anthropic", "claude-haiku-4-5-20251001"),
        ("openai", "gpt-5"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
    ]


def test_performance_first_picks_the_lowest_measured_latency():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o")
    for latency, ttft in ((300, 100), (320, 120)):
        router.health["openai"].acquire()
        router.health["openai"].record(True, latency, ttft)
    router.health["proxy"].acquire()
    router.health["proxy"].record(True, 150, 50)
    routes = router.routes("gpt-4o", RequestContext(strategy="performance_first"))
    assert pairs(routes) == [("proxy", "gpt-4o"), ("openai", "gpt-4o")]


def test_performance_first_tries_an_unmeasured_deployment_once():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o")
    router.health["openai"].acquire()
    router.health["openai"].record(True, 50, 10)
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="performance_first")))[0] == ("proxy", "gpt-4o")


def test_latency_ewma_weights_the_newest_sample_by_alpha():
    health = DeploymentHealth(BreakerPolicy(ewma_alpha=0.3))
    for sample in (100, 200):
        health.acquire(0)
        health.record(True, sample, now=0)
    assert health.latency_ewma == pytest.approx(0.3 * 200 + 0.7 * 100)


def test_load_balanced_picks_fewest_in_flight_per_weight():
    router = make_router([proxy(weight=2.0)], OPENAI_API_KEY="sk-o")
    router.health["openai"].acquire()
    router.health["proxy"].acquire()
    # openai: 1 in flight / weight 1 = 1.0; proxy: 1 / 2 = 0.5
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="load_balanced")))[0] == ("proxy", "gpt-4o")
    router.health["proxy"].acquire()
    router.health["proxy"].acquire()
    # proxy now 3 / 2 = 1.5
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="load_balanced")))[0] == ("openai", "gpt-4o")


def test_load_balanced_splits_sequential_traffic_by_weight():
    router = make_router([proxy(weight=2.0)], OPENAI_API_KEY="sk-o")
    chosen = {"openai": 0, "proxy": 0}
    for _ in range(30):
        route = router.routes("gpt-4o", RequestContext(strategy="load_balanced"))[0]
        assert router.started(route)
        router.finished(route, True, 10)
        chosen[route.deployment.id] += 1
    assert chosen == {"openai": 10, "proxy": 20}


def test_reliability_first_prefers_lowest_recent_error_rate():
    router = make_router(
        [proxy(priority=5)], OPENAI_API_KEY="sk-o", BREAKER_FAILURE_THRESHOLD="100", BREAKER_MIN_REQUESTS="100"
    )
    for ok in (True, False, True, False):
        router.health["openai"].acquire()
        router.health["openai"].record(ok, 10)
    router.health["proxy"].acquire()
    router.health["proxy"].record(True, 10)
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="reliability_first")))[0] == ("proxy", "gpt-4o")


def test_reliability_first_breaks_ties_by_priority():
    router = make_router([proxy(priority=-1)], OPENAI_API_KEY="sk-o")
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="reliability_first")))[0] == ("proxy", "gpt-4o")


def test_balanced_score_is_the_documented_weighted_sum():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o", BREAKER_FAILURE_THRESHOLD="100", BREAKER_MIN_REQUESTS="100")
    router.health["openai"].acquire()
    router.health["openai"].record(True, 400)  # latency 400, no errors
    for ok in (True, False):  # proxy: latency 100, error rate 0.5
        router.health["proxy"].acquire()
        router.health["proxy"].record(ok, 100)
    gpt_4o = router.catalog.by_vendor_name("openai", "gpt-4o")
    candidates = [router._candidate(d, gpt_4o, "gpt-4o") for d in router.deployments[:1]]
    candidates.append(router._candidate(router.deployments[-1], gpt_4o, "gpt-4o"))
    # same price (ratio 1 each), latency ratios 1 and 0.25, error 0 and 0.5, no load
    assert balanced_scores(candidates) == pytest.approx([0.35 + 0.30, 0.35 + 0.075 + 0.125])
    assert pairs(router.routes("gpt-4o", RequestContext(strategy="balanced")))[0] == ("proxy", "gpt-4o")


def test_request_strategy_overrides_the_default_and_is_reported():
    router = make_router(OPENAI_API_KEY="sk-o", ROUTING_STRATEGY="balanced")
    assert router.plan("gpt-4o", RequestContext()).strategy == "balanced"
    assert router.plan("gpt-4o", RequestContext(strategy="cost")).strategy == "cost_optimized"


def test_unknown_strategy_is_invalid_request_naming_the_field():
    with pytest.raises(InvalidRequest) as caught:
        make_router(OPENAI_API_KEY="sk-o").routes("gpt-4o", RequestContext(strategy="cheapest-please"))
    assert caught.value.param == "circuit_breaker.routing_strategy"


# -- constraints and fallbacks ---------------------------------------------------------


def test_max_cost_excludes_expensive_models():
    router = make_router(OPENAI_API_KEY="sk-o", ROUTER_MAX_ATTEMPTS="10")
    listed(router, "openai", "gpt-4", "gpt-5", "gpt-4.1")
    routes = router.routes("cb:smart-chat", RequestContext(max_cost_per_1k_tokens=0.0055))
    assert {r.model.id for r in routes} == {"gpt-4.1"}  # 0.005 per 1k; gpt-5 0.005625, gpt-4 0.045


def test_max_cost_with_nothing_cheap_enough_is_invalid_request():
    with pytest.raises(InvalidRequest, match="per 1k tokens"):
        make_router(OPENAI_API_KEY="sk-o").routes("gpt-4", RequestContext(max_cost_per_1k_tokens=0.001))


def test_max_latency_drops_measured_slow_deployments():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o")
    router.health["openai"].acquire()
    router.health["openai"].record(True, 5000)
    assert pairs(router.routes("gpt-4o", RequestContext(max_latency_ms=1000))) == [("proxy", "gpt-4o")]


def test_preferred_providers_come_first_in_the_order_given():
    router = make_router(OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a", ROUTER_MAX_ATTEMPTS="10")
    routes = router.routes("cb:cost-optimal", RequestContext(preferred_providers=["anthropic"]))
    assert routes[0].deployment.provider_type == "anthropic"
    assert routes[-1].deployment.provider_type == "openai"


def test_fallback_models_come_after_the_primary_marked_fallback():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a")
    routes = router.routes("gpt-4o", RequestContext(fallback_models=["claude-3-haiku", "gemini-1.5-pro"]))
    assert [(r.deployment.id, r.model.id, r.fallback) for r in routes] == [
        ("openai", "gpt-4o", False),
        ("proxy", "gpt-4o", False),
        ("anthropic", "claude-3-haiku", True),
    ]


def test_attempts_are_bounded_by_max_attempts():
    extra = [proxy(f"p{i}") for i in range(6)]
    router = make_router(extra, OPENAI_API_KEY="sk-o", ROUTER_MAX_ATTEMPTS="3")
    assert len(router.routes("gpt-4o", RequestContext())) == 3


def test_open_breaker_is_skipped_and_all_open_is_no_route_with_retry_after():
    router = make_router([proxy()], OPENAI_API_KEY="sk-o", BREAKER_FAILURE_THRESHOLD="1", BREAKER_COOLDOWN_SECONDS="30")
    route = router.routes("gpt-4o", RequestContext())[0]
    router.started(route)
    router.finished(route, False, 5, error=TimeoutError("slow"))
    assert [r.deployment.id for r in router.routes("gpt-4o", RequestContext())] == ["proxy"]
    other = router.routes("gpt-4o", RequestContext())[0]
    router.started(other)
    router.finished(other, False, 5)
    with pytest.raises(NoRouteAvailable) as caught:
        router.routes("gpt-4o", RequestContext())
    assert caught.value.http_status == 503
    assert 29 < caught.value.retry_after <= 30


def test_retry_after_makes_a_deployment_ineligible_until_then():
    class RateLimited(Exception):
        retryable, retry_after = True, 20.0

    health = DeploymentHealth(BreakerPolicy(failure_threshold=10))
    health.acquire(100)
    health.record(False, 5, error=RateLimited(), now=100)
    assert health.circuit_state(100) == CLOSED
    assert not health.available(119.9)
    assert health.available(120.0)


# -- circuit breaker -----------------------------------------------------------------


def fail(health, now, error=None):
    assert health.acquire(now)
    health.record(False, 5, error=error, now=now)


def succeed(health, now):
    assert health.acquire(now)
    health.record(True, 5, now=now)


def test_breaker_opens_after_exactly_the_threshold_of_consecutive_failures():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=3, cooldown_seconds=10))
    fail(health, 0)
    fail(health, 0)
    assert health.circuit_state(0) == CLOSED and health.available(0)
    fail(health, 0)
    assert health.circuit_state(0) == OPEN
    assert not health.available(9.99)
    assert health.consecutive_failures == 3


def test_a_success_resets_the_run_of_failures():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=3))
    fail(health, 0)
    fail(health, 0)
    succeed(health, 0)
    fail(health, 0)
    fail(health, 0)
    assert health.circuit_state(0) == CLOSED


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=1, cooldown_seconds=10))
    fail(health, 0)
    assert health.circuit_state(10) == HALF_OPEN
    assert health.acquire(10)
    assert not health.acquire(10)
    assert not health.available(10)
    health.record(True, 5, now=10.5)
    assert health.circuit_state(10.5) == CLOSED
    assert health.acquire(10.5) and health.acquire(10.5)


def test_failed_probe_opens_the_breaker_for_another_cooldown():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=1, cooldown_seconds=10))
    fail(health, 0)
    fail(health, 10)
    assert health.circuit_state(19.9) == OPEN
    assert health.circuit_state(20) == HALF_OPEN


def test_error_rate_over_the_window_opens_the_breaker():
    health = DeploymentHealth(
        BreakerPolicy(failure_threshold=100, error_rate_threshold=0.5, min_requests=4, window_seconds=60)
    )
    succeed(health, 0)
    fail(health, 1)
    succeed(health, 2)
    assert health.circuit_state(2) == CLOSED  # 3 requests: below min_requests
    fail(health, 3)
    assert health.circuit_state(3) == OPEN
    assert health.error_rate(3) == 0.5


def test_old_outcomes_leave_the_window():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=100, min_requests=2, window_seconds=10))
    fail(health, 0)
    succeed(health, 20)
    succeed(health, 21)
    assert health.error_rate(21) == 0.0


def test_client_errors_do_not_count_against_the_deployment():
    bad_request = InvalidRequest("messages is required", "messages")
    health = DeploymentHealth(BreakerPolicy(failure_threshold=1))
    fail(health, 0, error=bad_request)
    assert health.circuit_state(0) == CLOSED
    assert health.consecutive_failures == 0


def test_health_snapshot_reports_what_graphql_shows():
    health = DeploymentHealth(BreakerPolicy(failure_threshold=2))
    fail(health, 0, error=TimeoutError("upstream timed out"))
    health.acquire(0)
    snap = health.snapshot(0)
    assert snap["circuit_state"] == "closed" and snap["consecutive_failures"] == 1
    assert snap["last_error"] == "upstream timed out" and snap["in_flight"] == 1 and snap["error_rate"] == 1.0


def test_health_book_creates_one_health_per_deployment():
    book = HealthBook(BreakerPolicy())
    assert book["a"] is book["a"] and book["a"] is not book["b"]


# -- TOML ------------------------------------------------------------------------------


def test_example_config_loads(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-vllm-test")
    config = load_config(str(ROOT / "examples" / "circuit-breaker.toml"))
    vllm = next(d for d in config.deployments if d.id == "vllm-gpu")
    assert (vllm.provider_type, vllm.base_url, vllm.api_key, vllm.models, vllm.weight) == (
        "openai_compatible",
        "http://gpu-box:8000/v1",
        "sk-vllm-test",
        ["llama3.2"],
        2.0,
    )
    assert config.fallbacks["gpt-5"] == ["claude-sonnet-4-5", "gemini-2.5-pro"]
    assert config.prices["claude-sonnet-4-5"] == [3.0, 15.0, 0.3, 3.75, 6.0]
    assert config.default_strategy == "balanced" and config.max_attempts == 4
    assert config.context_windows == {"llama3.2": 131072}


def test_a_context_window_that_is_not_a_positive_whole_number_is_a_config_error(tmp_path):
    path = tmp_path / "cb.toml"
    for bad in ("0", "-5", '"big"', "1.5", "true"):
        path.write_text(f'[context_windows]\n"m" = {bad}\n')
        with pytest.raises(ConfigError, match="context_windows.m must be a whole number"):
            load_config(str(path))


def test_config_prices_fallbacks_and_strategy_drive_the_router(tmp_path):
    path = tmp_path / "cb.toml"
    path.write_text(
        '[routing]\ndefault_strategy = "cost_optimized"\n'
        '[prices]\n"gpt-4o" = { input = 1.0, output = 2.0 }\n"my-model" = { input = 0.5, output = 0.5 }\n'
        '[fallbacks]\n"gpt-4o" = ["claude-3-haiku"]\n'
        '[[deployments]]\nid = "local"\ntype = "openai-compatible"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["my-model"]\n'
    )
    config = load_config(str(path))
    router = make_router(list(config.deployments), config, OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a")
    plan = router.plan("gpt-4o", RequestContext())
    assert plan.strategy == "cost_optimized"
    assert pairs(plan.routes) == [("openai", "gpt-4o"), ("anthropic", "claude-3-haiku")]
    assert plan.routes[0].model.input_price == 1.0 and plan.routes[1].fallback
    mine = router.routes("my-model", RequestContext())[0]
    assert (mine.deployment.id, mine.model.input_price) == ("local", 0.5)


def test_config_deployment_prices_are_read(tmp_path):
    path = tmp_path / "cb.toml"
    path.write_text(
        '[[deployments]]\nid = "cheap"\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'prices = { "gpt-4o" = { input = 1.0, output = 4.0 } }\n'
    )
    assert load_config(str(path)).deployments[0].prices == {"gpt-4o": [1.0, 4.0]}


def test_invalid_config_is_one_line_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[deployments]]\nid = "x"\ntype = "telepathy"\nbase_url = "http://x"\n')
    with pytest.raises(ConfigError, match="telepathy"):
        load_config(str(path))
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.from_env({"CB_CONFIG": str(path)}, dotenv=None)
