"""Today's models, end to end: which models exist comes from each provider's own listing (every
page), names in a vendor's style reach that vendor, and each request costs what genai-prices'
``calc_price`` says for its usage. Real gunicorn, real nats-server, local upstreams listing in
each vendor's exact shape (Anthropic and Gemini over several pages), the official clients."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anthropic
import openai
import pytest
import requests
from genai_prices import Usage as PricedUsage
from genai_prices import calc_price

from cb.llm.discovery import SYNC_SECONDS
from tests.harness import Server
from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import MODELS as CLAUDES
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.exchange import serving
from tests.upstreams.gemini_server import KEY as GEMINI_KEY
from tests.upstreams.gemini_server import GeminiUpstream
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream
from tests.upstreams.script import Answer


def wait_until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def env_for(openai_up=None, anthropic_up=None, gemini_up=None, **more) -> dict:
    env = {}
    if openai_up:
        env |= {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": openai_up.base_url}
    if anthropic_up:
        env |= {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": anthropic_up.url}
    if gemini_up:
        env |= {"GOOGLE_API_KEY": GEMINI_KEY, "GOOGLE_BASE_URL": gemini_up.url}
    return env | more


def models_of(server) -> dict[str, dict]:
    answer = requests.get(server.openai_url + "/v1/models", timeout=10)
    assert answer.status_code == 200, answer.text
    return {m["id"]: m for m in answer.json()["data"]}


def chat(server, model: str, project: str | None = None, **body) -> requests.Response:
    headers = {"X-CB-Project": project} if project else {}
    payload = {"model": model, "messages": [{"role": "user", "content": "Hi"}], **body}
    return requests.post(server.openai_url + "/v1/chat/completions", json=payload, headers=headers, timeout=20)


@pytest.fixture(scope="module")
def upstreams():
    # a few models per page, so the gateway must follow Anthropic's after_id and Gemini's pageToken
    with (
        OpenAIUpstream() as openai_up,
        AnthropicUpstream(page_size=3, strict=True) as anthropic_up,
        GeminiUpstream(page_size=4) as gemini_up,
    ):
        yield openai_up, anthropic_up, gemini_up


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory):
    with serving(tmp_path_factory.mktemp("models"), **env_for(*upstreams)) as (server, client):
        yield server, client


# -- listing -----------------------------------------------------------------------------------


def test_every_page_of_every_listing_is_served(gateway, upstreams):
    server, _ = gateway
    _, anthropic_up, gemini_up = upstreams
    listed = models_of(server)
    # the last page of each
    assert {"claude-3-haiku-20240307", "claude-opus-4-8", "gemini-1.5-flash", "gemini-2.5-pro", "gpt-5"} <= set(listed)
    assert any(r.query.get("after_id") for r in anthropic_up.listings)
    assert any(r.query.get("pageToken") for r in gemini_up.listings)
    sonnet = listed["claude-sonnet-4-5-20250929"]
    assert (sonnet["provider"], sonnet["context_window"], sonnet["priced"]) == ("anthropic", 1000000, True)
    assert (sonnet["input_price_per_million"], sonnet["cached_input_price_per_million"]) == (3.0, 0.3)
    assert (sonnet["cache_write_price_per_million"], sonnet["cache_write_1h_price_per_million"]) == (3.75, 6.0)
    assert sonnet["output_price_per_million"] == 15.0
    assert sonnet["long_context"] == {
        "above_prompt_tokens": 200000,
        "input_price_per_million": 6.0,
        "output_price_per_million": 22.5,
        "cached_input_price_per_million": 0.6,
        "cache_write_price_per_million": 7.5,
    }
    pro = listed["gemini-2.5-pro"]
    assert (pro["provider"], pro["context_window"], pro["input_price_per_million"]) == ("google", 1048576, 1.25)
    assert pro["long_context"]["input_price_per_million"] == 2.5
    assert listed["gpt-5"]["context_window"] == 400000  # OpenAI lists none: genai-prices' window
    one = requests.get(server.openai_url + "/v1/models/claude-opus-4-8", timeout=10).json()
    assert (one["id"], one["provider"], one["context_window"], one["priced"]) == (
        "claude-opus-4-8",
        "anthropic",
        1000000,
        True,
    )


def test_the_guides_models_example_keeps_its_entries(gateway):
    server, _ = gateway
    listed = models_of(server)
    for name, provider, window in (("gpt-4", "openai", 8192), ("claude-3-opus", "anthropic", 200000)):
        entry = listed[name]
        assert (entry["object"], entry["created"], entry["owned_by"]) == ("model", 1677652288, "circuit-breaker")
        assert (entry["provider"], entry["context_window"], entry["supports_streaming"]) == (provider, window, True)


def test_models_that_cannot_chat_are_listed_as_such_and_refused_for_chat(gateway):
    server, _ = gateway
    listed = models_of(server)
    assert (listed["gemini-embedding-001"]["chat"], listed["gemini-embedding-001"]["embeddings"]) == (False, True)
    assert listed["imagen-4.0-generate-001"]["chat"] is False
    answer = chat(server, "gemini-embedding-001")
    assert answer.status_code == 400
    assert (
        answer.json()["error"]["code"] == "model_not_supported" and "cannot chat" in answer.json()["error"]["message"]
    )


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, vendor, upstream",
    [
        ("gpt-5", 0, "gpt-5"),
        ("o3", 0, "o3"),
        ("openai/gpt-5-mini", 0, "gpt-5-mini"),
        ("claude-opus-4-8", 1, "claude-opus-4-8"),
        ("claude-sonnet-4-5-20250929", 1, "claude-sonnet-4-5-20250929"),
        ("claude-sonnet-4-5", 1, "claude-sonnet-4-5-20250929"),  # undated: the listed snapshot
        ("anthropic/claude-sonnet-4-5", 1, "claude-sonnet-4-5-20250929"),  # prefixed
        ("gemini-2.5-pro", 2, "gemini-2.5-pro"),
        ("gemini-3-pro-preview", 2, "gemini-3-pro-preview"),
        ("google/gemini-2.5-flash", 2, "gemini-2.5-flash"),
    ],
)
def test_bare_dated_and_prefixed_names_reach_their_vendor(gateway, upstreams, model, vendor, upstream):
    _, client = gateway
    before = len(upstreams[vendor].received)
    answer = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    assert answer.headers["x-cb-provider"] == ("openai", "anthropic", "google")[vendor]
    sent = upstreams[vendor].received[before:]
    assert len(sent) == 1
    assert upstream in sent[0].path or (sent[0].json or {}).get("model") == upstream


def test_cost_optimal_chooses_the_cheapest_of_todays_listed_models(gateway):
    server, _ = gateway
    chat_models = [
        m
        for m in models_of(server).values()
        if m.get("chat") and m.get("priced") and not m.get("virtual") and "/" not in m["id"]
    ]
    cheapest = min(chat_models, key=lambda m: m["input_price_per_million"] + m["output_price_per_million"])
    answer = chat(server, "cb:cost-optimal")
    assert answer.status_code == 200
    assert answer.headers["x-cb-model"] == cheapest["id"] == "gemini-1.5-flash"  # $0.075 / $0.30 per 1M


def test_claude_codes_default_model_on_the_messages_api(gateway):
    server, _ = gateway
    client = anthropic.Anthropic(base_url=server.openai_url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text


def test_a_vendor_style_name_its_listing_lacks_is_not_found(gateway):
    server, _ = gateway
    answer = chat(server, "claude-opus-9-9")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"


# -- prices ------------------------------------------------------------------------------------


def cost_of(server, project: str) -> dict:
    answer = server.graphql(
        "query($p: String) { costAnalytics(input: {project_id: $p}) { total_cost unpriced_requests model_breakdown } }",
        {"p": project},
    )
    assert "errors" not in answer, answer
    return answer["data"]["costAnalytics"]


def expected(model: str, provider: str, **usage: int) -> float:
    now = datetime.now(UTC)
    return float(calc_price(PricedUsage(**usage), model, provider_id=provider, genai_request_timestamp=now).total_price)


@pytest.mark.parametrize(
    "model, vendor, provider, answer, usage",
    [
        (  # above 200k: every token at Sonnet 4.5's long-context rates; cache reads, 5-minute and 1-hour writes
            "claude-sonnet-4-5",
            1,
            "anthropic",
            Answer(
                prompt_tokens=250_000,
                cached_tokens=50_000,
                cache_write_tokens=20_000,
                cache_write_1h_tokens=8_000,
                completion_tokens=900,
            ),
            {
                "input_tokens": 250_000,
                "cache_read_tokens": 50_000,
                "cache_write_tokens": 20_000,
                "cache_write_1h_tokens": 8_000,
                "output_tokens": 900,
            },
        ),
        (  # below 200k: a 1-hour cache write at Opus 4.8's price
            "claude-opus-4-8",
            1,
            "anthropic",
            Answer(prompt_tokens=30_000, cached_tokens=1_000, cache_write_tokens=9_000, cache_write_1h_tokens=9_000),
            {
                "input_tokens": 30_000,
                "cache_read_tokens": 1_000,
                "cache_write_tokens": 9_000,
                "cache_write_1h_tokens": 9_000,
                "output_tokens": 7,
            },
        ),
        (  # a cache read and thinking; below 200k
            "gemini-2.5-pro",
            2,
            "google",
            Answer(prompt_tokens=120_000, cached_tokens=100_000, completion_tokens=700, reasoning_tokens=300),
            {
                "input_tokens": 120_000,
                "cache_read_tokens": 100_000,
                "output_tokens": 1000,
                "output_reasoning_tokens": 300,
            },
        ),
        (  # above 200k on Gemini 2.5 Pro
            "gemini-2.5-pro",
            2,
            "google",
            Answer(prompt_tokens=210_000, cached_tokens=10_000, completion_tokens=50),
            {"input_tokens": 210_000, "cache_read_tokens": 10_000, "output_tokens": 50},
        ),
    ],
)
def test_a_requests_cost_is_genai_prices_calc_price(gateway, upstreams, model, vendor, provider, answer, usage):
    server, _ = gateway
    project = f"cost-{model}-{answer.prompt_tokens}"
    upstreams[vendor].say(answer)
    assert chat(server, model, project).status_code == 200
    report = cost_of(server, project)
    assert report["unpriced_requests"] == 0
    assert report["total_cost"] == pytest.approx(expected(model, provider, **usage), rel=1e-9)


def test_an_openai_requests_cost_is_calc_price(gateway):
    server, client = gateway
    answer = client.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "Hi"}], extra_headers={"X-CB-Project": "cost-gpt-5"}
    )
    usage = {"input_tokens": answer.usage.prompt_tokens, "output_tokens": answer.usage.completion_tokens}
    assert cost_of(server, "cost-gpt-5")["total_cost"] == pytest.approx(expected("gpt-5", "openai", **usage), rel=1e-9)


# -- listings failing, workers starting, workers agreeing ----------------------------------------


def anthropic_ids(server) -> set[str]:
    return {k for k, v in models_of(server).items() if v.get("provider") == "anthropic" and "/" not in k}


def test_a_failed_listing_keeps_the_last_good_list(server_factory):
    with AnthropicUpstream(strict=True) as up:
        server = server_factory(**env_for(anthropic_up=up, OPENAI_MODELS_REFRESH_SECONDS="0.3"))
        assert "claude-3-7-sonnet-20250219" in models_of(server)
        up.listing_down = True
        polls = len(up.listings)
        assert wait_until(lambda: len(up.listings) >= polls + 3)  # three failed rounds
        assert "claude-3-7-sonnet-20250219" in models_of(server)
        assert chat(server, "claude-3-7-sonnet").status_code == 200
        assert "could not list the models of anthropic" in server.logs()
        up.models = [m for m in up.models if m[0] != "claude-3-7-sonnet-20250219"]
        up.listing_down = False  # it lists again: its new list applies
        assert wait_until(lambda: "claude-3-7-sonnet-20250219" not in models_of(server))
        gone = chat(server, "claude-3-7-sonnet")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


def test_a_worker_started_while_the_listing_is_down_serves_by_naming(server_factory):
    with AnthropicUpstream(strict=True) as up:
        up.listing_down = True
        server = server_factory(**env_for(anthropic_up=up))
        assert "claude-opus-4-8" not in models_of(server)  # nothing listed
        claude = anthropic.Anthropic(base_url=server.openai_url, api_key="unused", max_retries=0)
        assert claude.messages.create(
            model="claude-opus-4-8", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
        )
        client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)
        assert client.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}])
        # a name Anthropic does not have: its own 404, in the envelope of the API asked
        with pytest.raises(anthropic.NotFoundError) as native:
            claude.messages.create(model="claude-opus-9-9", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
        assert native.value.body["type"] == "error" and native.value.body["error"]["type"] == "not_found_error"
        assert "claude-opus-9-9" in native.value.body["error"]["message"]
        with pytest.raises(openai.NotFoundError) as translated:
            client.chat.completions.create(model="claude-opus-9-9", messages=[{"role": "user", "content": "Hi"}])
        assert "claude-opus-9-9" in translated.value.body["message"]


def test_two_workers_on_nats_serve_the_same_lists(server_factory):
    with AnthropicUpstream() as up:
        prefix = Server.fresh_namespace()
        env = env_for(anthropic_up=up, OPENAI_MODELS_REFRESH_SECONDS="0.5", NATS_PREFIX=prefix, WEB_CONCURRENCY="2")
        first = server_factory("nats", **env)
        listed = {m[0] for m in CLAUDES} - {"claude-3-opus-20240229"} | {"claude-3-opus"}
        assert anthropic_ids(first) == listed
        up.listing_down = True
        second = server_factory("nats", **env)  # it cannot list: it serves what the first stored
        assert anthropic_ids(second) == listed
        up.models.insert(0, ("claude-opus-5", "Claude Opus 5", "2026-12-05T00:00:00Z", 1000000, 128000))
        up.listing_down = False
        for server in (first, second):  # whichever worker lists it first, the others adopt it
            assert wait_until(lambda s=server: "claude-opus-5" in anthropic_ids(s))
        # every worker adopts what another stored within a sync round (SYNC_SECONDS); which worker
        # answers a request is the kernel's choice, so give each three rounds, then ask many times
        time.sleep(3 * SYNC_SECONDS)
        for server in (first, second):
            assert all(anthropic_ids(server) == listed | {"claude-opus-5"} for _ in range(10))


# -- unpriced ----------------------------------------------------------------------------------


def test_a_model_nobody_prices_is_served_and_recorded_as_unpriced(server_factory):
    lab = ("claude-lab-preview-1", "Claude Lab Preview", "2026-12-01T00:00:00Z", 200000, 8192)
    with AnthropicUpstream(models=(lab, *CLAUDES)) as up:
        server = server_factory(**env_for(anthropic_up=up))
        entry = models_of(server)["claude-lab-preview-1"]
        assert (entry["priced"], entry["input_price_per_million"], entry["cached_input_price_per_million"]) == (
            False,
            0.0,
            None,
        )
        for _ in range(2):
            assert chat(server, "claude-lab-preview-1", "lab").status_code == 200
        assert chat(server, "claude-haiku-4-5", "lab").status_code == 200
        report = cost_of(server, "lab")
        assert report["unpriced_requests"] == 2
        assert report["model_breakdown"]["claude-lab-preview-1"]["priced"] is False
        assert report["model_breakdown"]["claude-lab-preview-1"]["cost"] == 0
        assert report["total_cost"] == pytest.approx(report["model_breakdown"]["claude-haiku-4-5-20251001"]["cost"])
        metrics = requests.get(server.graphql_url + "/metrics", timeout=5).text
        assert 'cb_llm_unpriced_requests_total{model="claude-lab-preview-1",provider="anthropic"} 2.0' in metrics
        said = [line for line in server.logs().splitlines() if "claude-lab-preview-1 at anthropic has no price" in line]
        assert len(said) == 1


def test_a_stored_list_that_is_not_ours_is_ignored():
    from cb.llm.catalog import Catalog
    from cb.llm.discovery import ModelDiscovery
    from cb.llm.providers import PROVIDERS
    from cb.llm.providers.base import Deployment
    from cb.storage.memory import MemoryStorage

    storage = MemoryStorage()
    storage.connect()
    deployment = Deployment("anthropic", "anthropic", "http://127.0.0.1:9", "sk-a")
    discovery = ModelDiscovery(Catalog.default(), [deployment], PROVIDERS, None, 60, storage=storage)
    storage.put("models", "anthropic", {"models": "claude-opus-4-8"})
    discovery.sync()
    assert discovery.found == {}
    storage.put("models", "anthropic", {"models": [["claude-opus-4-8", 1000000, True, False], [7], "x"]})
    discovery.sync()
    assert discovery.found == {"anthropic": ["claude-opus-4-8"]}
