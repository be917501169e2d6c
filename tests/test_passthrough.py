"""Native pass-through: a client speaking its upstream's own API (Messages to Anthropic, Responses
to OpenAI) gets the vendor's behaviour exactly, and the gateway adds only routing, accounting
and limits. The official ``anthropic`` and ``openai`` clients against the real server; two local
Anthropic upstreams (for failover and affinity) and a local OpenAI upstream behind it, each
recording what it received."""

from __future__ import annotations

import gzip
import json
import time
import uuid

import anthropic
import openai
import pytest
import requests
import zstandard

from cb.llm.passthrough import with_model
from tests.harness import Server
from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import OVERLOADED, AnthropicUpstream, error_body, stream_events
from tests.upstreams.openai_server import API_KEY as OPENAI_KEY
from tests.upstreams.openai_server import REPLY, OpenAIUpstream
from tests.upstreams.script import Answer

OPUS = "claude-opus-4-8"  # served by both Anthropic deployments, by that name
BETAS = ["mid-conversation-system-2026-04-07", "context-management-2025-06-27", "interleaved-thinking-2025-05-14"]
CONFIG = """
[routing]
default_strategy = "cost_optimized"  # equal prices: by priority, so claude-a first unless a session says otherwise

[[deployments]]
id = "claude-a"
type = "anthropic"
base_url = "{a}"
key_variable = "CLAUDE_KEY"
models = ["{model}"]
priority = 0
prices = {{ "{model}" = {{ input = 5.0, output = 25.0, cached_input = 0.5, cache_write = 6.25 }} }}

[[deployments]]
id = "claude-b"
type = "anthropic"
base_url = "{b}"
key_variable = "CLAUDE_KEY"
models = ["{model}"]
priority = 1
prices = {{ "{model}" = {{ input = 5.0, output = 25.0, cached_input = 0.5, cache_write = 6.25 }} }}

[[deployments]]
id = "gpt"
type = "openai"
base_url = "{openai}"
key_variable = "GPT_KEY"
models = ["gpt-5.5"]
prices = {{ "gpt-5.5" = {{ input = 1.25, output = 10.0, cached_input = 0.125 }} }}

[[deployments]]
id = "gpt-b"
type = "openai"
base_url = "{openai_b}"
key_variable = "GPT_KEY"
models = ["gpt-5.5"]
priority = 1
prices = {{ "gpt-5.5" = {{ input = 1.25, output = 10.0, cached_input = 0.125 }} }}
"""


class AgentAnthropic(AnthropicUpstream):
    """Anthropic, streaming an event this gateway has never heard of after ``message_start``
    (as Anthropic does when it ships a feature before clients and gateways know it)."""

    UNKNOWN = {"type": "compaction_notice", "detail": {"kept_tokens": 1234}}

    def stream(self, model, answer):
        events = list(stream_events(model, answer))
        return [events[0], ("compaction_notice", self.UNKNOWN), *events[1:]]


def write_config(directory, upstreams):
    """The CB_CONFIG file of these tests' deployments, in ``directory``."""
    config = directory / "cb.toml"
    urls = {name: upstreams[name].url for name in ("a", "b")}
    config.write_text(
        CONFIG.format(**urls, openai=upstreams["gpt"].base_url, openai_b=upstreams["gpt_b"].base_url, model=OPUS)
    )
    return config


@pytest.fixture(scope="module")
def upstreams():
    with AgentAnthropic() as a, AnthropicUpstream() as b, OpenAIUpstream() as gpt, OpenAIUpstream() as gpt_b:
        yield {"a": a, "b": b, "gpt": gpt, "gpt_b": gpt_b}


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("passthrough")
    config = write_config(workdir, upstreams)
    env = {
        "CB_CONFIG": str(config),
        "CLAUDE_KEY": ANTHROPIC_KEY,
        "GPT_KEY": OPENAI_KEY,
        "BREAKER_FAILURE_THRESHOLD": "100",  # the 529s these tests script must not open claude-a's breaker
        "BREAKER_MIN_REQUESTS": "1000",
    }
    server = Server(workdir, env=env)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh(upstreams):
    for upstream in upstreams.values():
        upstream.reset()
        if hasattr(upstream, "answers"):
            upstream.answers.clear()
    return upstreams


@pytest.fixture
def claude(gateway, fresh):
    client = anthropic.Anthropic(base_url=gateway.openai_url, api_key="unused", max_retries=0, timeout=20)
    yield client
    client.close()


@pytest.fixture
def gpt(gateway, fresh):
    client = openai.OpenAI(base_url=gateway.openai_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield client
    client.close()


def claude_code_body(prompt: str, **extra) -> dict:
    """A body shaped like Claude Code's: fields and blocks the gateway has no model of."""
    return {
        "model": OPUS,
        "max_tokens": 64000,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": str(uuid.uuid4())})},
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [
            {
                "name": "Read",
                "description": "Read a file",
                "input_schema": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"file_path": {"type": "string"}},
                },
            }
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Noted."}]},
            {"role": "system", "content": "The user switched to plan mode."},
            {
                "role": "user",
                "content": [{"type": "future_block", "payload": {"x": 1}}, {"type": "text", "text": "go"}],
            },
        ],
        **extra,
    }


def post(gateway, body, path="/v1/messages?beta=true", headers=None, data=None, stream=False):
    headers = {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": ",".join(BETAS),
        **(headers or {}),
    }
    if data is None:
        data = json.dumps(body).encode()
    return requests.post(gateway.openai_url + path, data=data, headers=headers, timeout=20, stream=stream)


def sse_events(response) -> list[tuple[str | None, dict]]:
    return sse_events_of(line.decode() for line in response.iter_lines())


def sse_events_of(lines) -> list[tuple[str | None, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
            name = None
    return events


def usage_of(gateway, project: str) -> dict:
    """The project's usage, once its request is recorded: a stream is recorded when the gateway
    has read the upstream's end, which may come just after the client read the last event."""
    query = """query($f: CostAnalyticsInput) { costAnalytics(input: $f) {
        total_cost total_requests prompt_tokens completion_tokens cached_tokens cache_write_tokens } }"""
    deadline = time.monotonic() + 10
    while True:
        result = gateway.graphql(query, {"f": {"project_id": project}})
        assert "errors" not in result, result
        usage = result["data"]["costAnalytics"]
        if usage["total_requests"] or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


# -- the request goes up as it came ---------------------------------------------------------


def test_the_body_arrives_upstream_byte_for_byte_with_unknown_fields_blocks_and_system_turns(gateway, fresh):
    body = claude_code_body("Unknown fields, please")
    sent = json.dumps(body, indent=1).encode()  # spacing a re-encoding would not keep
    response = post(gateway, body, data=sent, headers={"anthropic-beta": ",".join(BETAS)})
    assert response.status_code == 200, response.text
    received = fresh["a"].received[-1]
    assert received.body == sent


def test_only_the_model_is_rewritten_for_a_deployment_that_names_it_differently(gateway, fresh):
    body = claude_code_body("Rename me", model=f"claude-b/{OPUS}")
    sent = json.dumps(body).encode()
    response = post(gateway, body, data=sent, headers={"anthropic-beta": ",".join(BETAS)})
    assert response.status_code == 200, response.text
    assert response.headers["x-cb-deployment"] == "claude-b"
    expected = sent.replace(f'"model": "claude-b/{OPUS}"'.encode(), f'"model":"{OPUS}"'.encode())
    assert fresh["b"].received[-1].body == expected


def test_anthropic_headers_and_the_query_string_arrive_verbatim(claude, fresh):
    claude.beta.messages.create(
        model=OPUS,
        max_tokens=100,
        betas=BETAS,
        messages=[{"role": "user", "content": "Headers, please"}],
        extra_headers={"anthropic-dangerous-direct-browser-access": "true"},
        extra_query={"beta": "true"},  # as Claude Code asks
    )
    received = fresh["a"].received[-1]
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["anthropic-beta"] == ",".join(BETAS)
    assert headers["anthropic-dangerous-direct-browser-access"] == "true"
    assert headers["x-api-key"] == ANTHROPIC_KEY  # the deployment's key, not the client's
    assert received.query == {"beta": ["true"]}


# -- the answer comes back as it was sent ----------------------------------------------------


def test_a_json_answer_comes_back_unchanged_with_routing_headers(gateway, fresh):
    fresh["a"].say(Answer("Unchanged.", prompt_tokens=20, completion_tokens=3))
    response = post(gateway, claude_code_body("JSON, please"), headers={"anthropic-beta": ",".join(BETAS)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == OPUS and answer["content"] == [{"type": "text", "text": "Unchanged."}]
    assert answer["usage"]["input_tokens"] == 20 and "cache_creation" in answer["usage"]
    assert response.headers["x-cb-provider"] == "anthropic" and response.headers["x-cb-attempts"] == "1"


def test_a_stream_relays_every_event_including_ones_the_gateway_does_not_know(gateway, fresh):
    fresh["a"].say(Answer("Streamed unchanged."))
    body = claude_code_body("Stream, please", stream=True)
    with post(gateway, body, headers={"anthropic-beta": ",".join(BETAS)}, stream=True) as response:
        assert response.status_code == 200 and response.headers["x-cb-deployment"] == "claude-a"
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "compaction_notice"]
    assert events[1][1] == AgentAnthropic.UNKNOWN
    assert names[-2:] == ["message_delta", "message_stop"]
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "Streamed unchanged."


def test_the_anthropic_sdk_streams_through_the_pass_through(claude, fresh):
    fresh["a"].say(Answer("Hello through the SDK."))
    with claude.beta.messages.stream(
        model=OPUS, max_tokens=100, betas=BETAS, messages=[{"role": "user", "content": "SDK stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello through the SDK." and final.stop_reason == "end_turn"


def test_an_upstream_error_body_reaches_the_client_byte_for_byte(gateway, fresh):
    refusal = error_body("invalid_request_error", "prompt is too long: 208107 tokens > 200000 maximum")
    fresh["a"].fail_next(400, refusal, headers={"request-id": "req_011"})
    response = post(gateway, claude_code_body("Too long"))
    assert response.status_code == 400
    assert response.content == json.dumps(refusal).encode()


def test_a_streamed_requests_upstream_error_reaches_the_client_byte_for_byte(gateway, fresh):
    refusal = error_body("invalid_request_error", "prompt is too long: 208107 tokens > 200000 maximum")
    fresh["a"].fail_next(400, refusal)
    response = post(gateway, claude_code_body("Too long, streamed", stream=True))  # Claude Code always streams
    assert response.status_code == 400
    assert response.content == json.dumps(refusal).encode()
    assert response.headers["content-type"].startswith("application/json")


def test_an_error_event_in_the_middle_of_a_stream_is_relayed_as_the_upstream_sent_it(gateway, fresh):
    fresh["a"].say(Answer("one two three four", error_after=2))
    with post(gateway, claude_code_body("Break midway", stream=True), stream=True) as response:
        events = sse_events(response)
    assert events[-1] == ("error", OVERLOADED)
    assert [n for n, _ in events].count("error") == 1


ANTHROPIC_HEADERS = {
    "request-id": "req_011CUpstream",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-tokens-reset": "2026-12-06T21:30:00Z",
    "anthropic-organization-id": "org-of-the-server",  # the operator's account: not the client's business
    "set-cookie": "upstream=1",
    "x-cache-note": "never",  # a header no client reads: not relayed
}


def _relayed(response) -> dict:
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert headers["request-id"] == "req_011CUpstream"
    assert headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert headers["anthropic-ratelimit-tokens-reset"] == "2026-12-06T21:30:00Z"
    assert not {"anthropic-organization-id", "set-cookie", "x-cache-note"} & set(headers)
    return headers


def test_the_upstreams_request_id_and_rate_limit_headers_reach_the_client(claude, fresh):
    fresh["a"].answer_headers.update(ANTHROPIC_HEADERS)
    raw = claude.beta.messages.with_raw_response.create(
        model=OPUS, max_tokens=100, betas=BETAS, messages=[{"role": "user", "content": "Headers back"}]
    )
    assert raw.request_id == "req_011CUpstream"  # what the SDK shows a user filing a support ticket
    headers = _relayed(raw.http_response)
    assert headers["x-cb-deployment"] == "claude-a"
    assert headers["content-length"] == str(len(raw.http_response.content))  # the gateway frames its own answer
    with claude.beta.messages.stream(
        model=OPUS, max_tokens=100, betas=BETAS, messages=[{"role": "user", "content": "Stream headers back"}]
    ) as stream:
        assert "".join(stream.text_stream)
        _relayed(stream.response)
        assert stream.response.headers["x-cb-deployment"] == "claude-a"
    counted = claude.messages.with_raw_response.count_tokens(
        model=OPUS, messages=[{"role": "user", "content": "Count with headers"}]
    )
    assert counted.request_id == "req_011CUpstream" and counted.headers["x-cb-token-count"] == "provider"


def test_a_relayed_errors_request_id_and_retry_after_reach_the_client(gateway, claude, fresh):
    for name in ("a", "b"):
        fresh[name].fail_next(529, OVERLOADED, headers={**ANTHROPIC_HEADERS, "retry-after": "7"})
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.create(model=OPUS, max_tokens=100, messages=[{"role": "user", "content": "Overloaded"}])
    assert refused.value.status_code == 529 and refused.value.request_id == "req_011CUpstream"
    headers = _relayed(refused.value.response)
    assert headers["retry-after"] == "7"
    fresh["a"].fail_next(400, error_body("invalid_request_error", "prompt is too long"), headers=ANTHROPIC_HEADERS)
    streamed = post(gateway, claude_code_body("Too long", stream=True))
    assert streamed.status_code == 400
    _relayed(streamed)


def test_openais_headers_reach_the_client_and_the_gateways_own_limits_win(server_factory, upstreams, tmp_path):
    from tests.security_helpers import create_key

    openai_headers = {
        "x-request-id": "req_openai_42",
        "openai-processing-ms": "321",
        "openai-version": "2020-10-01",
        "openai-organization": "org-of-the-server",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-limit-tokens": "30000000",
    }
    upstreams["gpt"].reset()
    upstreams["gpt"].answer_headers.update(openai_headers)
    config = write_config(tmp_path, upstreams)
    server = server_factory(CB_CONFIG=str(config), CLAUDE_KEY=ANTHROPIC_KEY, GPT_KEY=OPENAI_KEY)
    try:
        anyone = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)
        raw = anyone.responses.with_raw_response.create(model="gpt-5.5", input="headers", store=False)
        headers = {k.lower(): v for k, v in raw.headers.items()}
        assert headers["openai-processing-ms"] == "321" and headers["openai-version"] == "2020-10-01"
        assert headers["x-ratelimit-limit-requests"] == "10000"  # no limits of its own: the upstream's
        assert headers["x-cb-upstream-request-id"] == "req_openai_42"
        assert headers["x-request-id"] != "req_openai_42"  # the gateway's own id, the one its logs name
        assert "openai-organization" not in headers
        stored = anyone.responses.create(model="gpt-5.5", input="kept")
        fetched = anyone.responses.with_raw_response.retrieve(stored.id)  # from the deployment that stored it
        assert fetched.headers["x-cb-upstream-request-id"] == "req_openai_42"
        with anyone.responses.with_streaming_response.create(model="gpt-5.5", input="hi", stream=True) as streamed:
            assert streamed.headers["openai-processing-ms"] == "321"
            assert streamed.headers["x-cb-upstream-request-id"] == "req_openai_42"
            list(streamed.iter_lines())
        anyone.close()

        key, _ = create_key(server, rpm_limit=50)
        limited = openai.OpenAI(base_url=server.openai_url + "/v1", api_key=key, max_retries=0)
        raw = limited.responses.with_raw_response.create(model="gpt-5.5", input="mine", store=False)
        limits = {k.lower(): v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit-")}
        assert limits["x-ratelimit-limit-requests"] == "50"  # the client's own limit at the gateway
        assert "x-ratelimit-limit-tokens" not in limits  # none of OpenAI's beside it
        assert raw.headers["openai-processing-ms"] == "321"
        limited.close()
    finally:
        upstreams["gpt"].reset()


def test_a_silent_gap_in_a_relayed_anthropic_stream_is_filled_with_anthropics_ping(server_factory, upstreams, tmp_path):
    config = write_config(tmp_path, upstreams)
    server = server_factory(
        CB_CONFIG=str(config), CLAUDE_KEY=ANTHROPIC_KEY, GPT_KEY=OPENAI_KEY, SSE_KEEPALIVE_SECONDS="0.1"
    )
    upstreams["a"].reset()
    upstreams["a"].say(Answer("Slow."))
    upstreams["a"].slow_next(0.5)  # every event half a second after the one before: five keep-alive intervals
    with post(server, claude_code_body("Take your time", stream=True), stream=True) as response:
        assert response.status_code == 200
        lines = [line.decode() for line in response.iter_lines()]
    assert not [line for line in lines if line.startswith(":")]  # no SSE comments on Anthropic's wire
    pings = [at for at, line in enumerate(lines) if line == "event: ping"]
    assert all(json.loads(lines[at + 1].removeprefix("data:")) == {"type": "ping"} for at in pings)
    assert len(pings) > 2  # the upstream's one, and the gateway's while it waited
    events = [name for name, _ in sse_events_of(lines)]
    assert events[-1] == "message_stop" and "content_block_delta" in events


# -- what the gateway still does ------------------------------------------------------------


def test_a_529_fails_over_to_the_next_anthropic_deployment(gateway, fresh):
    fresh["a"].fail_next(529, OVERLOADED)
    fresh["b"].say(Answer("From b."))
    response = post(gateway, claude_code_body("Failover please"))
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "From b."
    assert response.headers["x-cb-deployment"] == "claude-b" and response.headers["x-cb-attempts"] == "2"
    assert fresh["b"].received[-1].body == fresh["a"].received[-1].body


def test_a_stream_fails_over_on_529_before_its_first_event(gateway, fresh):
    fresh["a"].fail_next(529, OVERLOADED)
    fresh["b"].say(Answer("Streamed from b."))
    with post(gateway, claude_code_body("Stream failover", stream=True), stream=True) as response:
        assert response.headers["x-cb-deployment"] == "claude-b"
        events = sse_events(response)
    assert "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta") == "Streamed from b."


def test_when_every_deployment_is_overloaded_the_client_gets_anthropics_529(gateway, fresh):
    fresh["a"].fail_next(529, OVERLOADED)
    fresh["b"].fail_next(529, OVERLOADED)
    response = post(gateway, claude_code_body("All overloaded"))
    assert response.status_code == 529 and response.json() == OVERLOADED


@pytest.mark.parametrize("stream", [False, True])
def test_cost_is_recorded_from_cache_reads_and_5m_and_1h_cache_writes(gateway, fresh, stream):
    project = f"cache-{stream}-{uuid.uuid4().hex[:6]}"
    answer = Answer(
        "Cached.",
        prompt_tokens=1000,
        cached_tokens=600,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
        completion_tokens=40,
    )
    fresh["a"].say(answer)
    response = post(gateway, claude_code_body(f"Cache {project}", stream=stream), headers={"x-cb-project": project})
    assert response.status_code == 200
    assert response.content  # the whole stream: the usage is recorded at its end
    usage = usage_of(gateway, project)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (1000, 40)
    assert (usage["cached_tokens"], usage["cache_write_tokens"]) == (600, 300)
    base = (100 * 5.0 + 600 * 0.5 + 40 * 25.0) / 1e6
    five_minutes_only = base + 300 * 6.25 / 1e6  # every write at the 5-minute price
    hour_priced = base + (100 * 6.25 + 200 * 10.0) / 1e6  # 1-hour writes at twice the input price
    assert usage["total_cost"] == pytest.approx(five_minutes_only) or usage["total_cost"] == pytest.approx(hour_priced)


def test_an_exhausted_budget_refuses_a_relayed_request_in_anthropics_envelope(gateway, fresh):
    project = "broke-" + uuid.uuid4().hex[:6]
    result = gateway.graphql(
        f'mutation {{ setBudget(input: {{scope: PROJECT, scope_id: "{project}", limit_usd: 0.000001}}) {{ scope }} }}'
    )
    assert "errors" not in result, result
    first = post(gateway, claude_code_body(f"Spend {project}"), headers={"x-cb-project": project})
    assert first.status_code == 200  # within the budget when it started: it is spent now
    usage_of(gateway, project)
    refused = post(gateway, claude_code_body(f"Spend more {project}"), headers={"x-cb-project": project})
    assert refused.status_code == 429 and refused.json()["type"] == "error"
    assert "budget" in refused.json()["error"]["message"]
    assert len(fresh["a"].received) == 1


def test_a_session_stays_on_the_deployment_that_served_it(gateway, fresh):
    session = {"X-Claude-Code-Session-Id": str(uuid.uuid4())}
    fresh["a"].fail_next(529, OVERLOADED)
    first = post(gateway, claude_code_body("Session start"), headers=session)
    assert first.headers["x-cb-deployment"] == "claude-b"
    for turn in range(3):  # claude-a is healthy again, but the session's caches and signatures are on claude-b
        again = post(gateway, claude_code_body(f"Session turn {turn}"), headers=session)
        assert again.headers["x-cb-deployment"] == "claude-b" and again.headers["x-cb-attempts"] == "1"
    other = post(gateway, claude_code_body("Another session"), headers={"X-Claude-Code-Session-Id": "other"})
    assert other.headers["x-cb-deployment"] == "claude-a"


def test_without_a_session_header_the_conversation_keeps_its_deployment(gateway, fresh):
    fresh["a"].fail_next(529, OVERLOADED)
    assert post(gateway, claude_code_body("Headerless session")).headers["x-cb-deployment"] == "claude-b"
    body = claude_code_body("Headerless session")
    body["messages"] += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}]
    assert post(gateway, body).headers["x-cb-deployment"] == "claude-b"


def test_count_tokens_goes_to_anthropic_as_it_came(claude, fresh):
    count = claude.beta.messages.count_tokens(
        model=OPUS,
        betas=BETAS,
        messages=[{"role": "user", "content": "count me"}],
        system="sys",
        extra_query={"beta": "true"},
    )
    received = fresh["a"].received[-1]
    assert received.path == "/v1/messages/count_tokens" and received.query == {"beta": ["true"]}
    assert received.json == {"model": OPUS, "messages": [{"role": "user", "content": "count me"}], "system": "sys"}
    assert count.input_tokens > 1000  # the upstream's count, not our estimate


def test_metadata_the_gateway_cannot_read_goes_up_for_the_vendor_to_judge(gateway, fresh):
    # found by the fuzzer: a numeric metadata made the gateway's attribution fail with a 500
    for path in ("/v1/messages/count_tokens", "/v1/messages"):
        body = {"model": OPUS, "messages": [{"role": "user", "content": "odd metadata"}], "metadata": 7}
        answer = post(gateway, body | ({"max_tokens": 100} if path == "/v1/messages" else {}), path=path)
        assert answer.status_code == 200 and answer.json()  # the vendor's answer, whatever it makes of it
        assert fresh["a"].received[-1].path == path and fresh["a"].received[-1].json["metadata"] == 7


# -- OpenAI's Responses API -----------------------------------------------------------------


def test_responses_go_to_openai_as_they_came_and_come_back_unchanged(gpt, fresh, gateway):
    project = "responses-" + uuid.uuid4().hex[:6]
    response = gpt.responses.create(
        model="gpt-5.5",
        input=[{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "hi"}],
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"summary": "auto"},
        prompt_cache_key="codex-session-1",
        extra_body={"client_metadata": {"x": "y"}, "tools": [{"type": "namespace", "name": "mcp", "tools": []}]},
        extra_headers={"x-cb-project": project},
    )
    received = fresh["gpt"].received[-1]
    assert received.path == "/v1/responses"
    assert received.json["tools"] == [{"type": "namespace", "name": "mcp", "tools": []}]
    assert received.json["client_metadata"] == {"x": "y"} and received.json["prompt_cache_key"] == "codex-session-1"
    assert response.output_text == REPLY
    usage = usage_of(gateway, project)
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["cached_tokens"]) == (120, 30, 100)


def test_a_responses_stream_relays_the_upstreams_events_and_bills_its_usage(gpt, fresh, gateway):
    project = "responses-stream-" + uuid.uuid4().hex[:6]
    headers = {"session-id": "codex-1", "x-cb-project": project}
    with gpt.responses.stream(model="gpt-5.5", input="hi", extra_headers=headers) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == REPLY and final.usage.output_tokens_details.reasoning_tokens == 20
    usage = usage_of(gateway, project)
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["cached_tokens"]) == (120, 30, 100)


def test_a_response_openai_stored_is_retrieved_and_deleted_through_the_gateway(gpt, fresh):
    created = gpt.responses.create(model="gpt-5.5", input="keep this")
    assert created.id in fresh["gpt"].stored
    again = gpt.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == REPLY
    gpt.responses.delete(created.id)
    assert created.id not in fresh["gpt"].stored
    with pytest.raises(openai.NotFoundError):
        gpt.responses.retrieve(created.id)


def test_a_continuation_goes_to_the_deployment_that_stored_the_response(gpt, fresh):
    first = gpt.responses.create(model="gpt-b/gpt-5.5", input="remember me")  # stored by gpt-b
    again = gpt.responses.create(model="gpt-5.5", previous_response_id=first.id, input="and now?")
    assert fresh["gpt_b"].received[-1].json["previous_response_id"] == first.id
    assert not [r for r in fresh["gpt"].received if r.path == "/v1/responses"]
    assert again.output_text == REPLY


def test_a_streamed_response_is_retrievable_and_an_unstored_one_is_not(gpt, fresh):
    with gpt.responses.stream(model="gpt-5.5", input="stream and keep") as stream:
        final = stream.get_final_response()
    assert gpt.responses.retrieve(final.id).id == final.id
    unstored = gpt.responses.create(model="gpt-5.5", input="forget this", store=False)
    with pytest.raises(openai.NotFoundError):
        gpt.responses.retrieve(unstored.id)


def test_a_relayed_response_is_hidden_from_other_client_keys(server_factory, upstreams, tmp_path):
    config = write_config(tmp_path, upstreams)
    server = server_factory(
        CB_CONFIG=str(config),
        CLAUDE_KEY=ANTHROPIC_KEY,
        GPT_KEY=OPENAI_KEY,
        OPENAI_API_KEY_REQUIRED="true",
        CB_API_KEYS="key-one-0123456789,key-two-0123456789",
    )
    one = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="key-one-0123456789", max_retries=0)
    two = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="key-two-0123456789", max_retries=0)
    created = one.responses.create(model="gpt-5.5", input="mine")
    assert one.responses.retrieve(created.id).id == created.id
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        two.responses.delete(created.id)
    one.close()
    two.close()


def test_remote_compaction_goes_to_openai_as_it_came_and_is_billed(gpt, fresh, gateway):
    project = "compact-" + uuid.uuid4().hex[:6]
    conversation = [
        {"role": "user", "content": "Refactor the parser."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
    ]
    compacted = gpt.responses.compact(
        model="gpt-5.5",
        input=conversation,
        instructions="You are Codex.",
        prompt_cache_key="codex-session-9",
        extra_body={"future_field": {"kept": True}},
        extra_headers={"x-cb-project": project},
    )
    received = fresh["gpt"].received[-1]
    assert received.path == "/v1/responses/compact"
    assert received.json == {
        "model": "gpt-5.5",
        "input": conversation,
        "instructions": "You are Codex.",
        "prompt_cache_key": "codex-session-9",
        "future_field": {"kept": True},
    }
    assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
    usage = usage_of(gateway, project)
    assert (usage["total_requests"], usage["prompt_tokens"], usage["cached_tokens"]) == (1, 120, 100)
    with pytest.raises(openai.NotFoundError):  # the compaction is not a stored response
        gpt.responses.retrieve(compacted.id)


def test_remote_compaction_for_a_model_not_on_openai_is_a_404_that_says_why(gpt, fresh, gateway):
    project = "compact-claude-" + uuid.uuid4().hex[:6]
    with pytest.raises(openai.NotFoundError) as refused:
        gpt.responses.compact(
            model=OPUS, input=[{"role": "user", "content": "hi"}], extra_headers={"x-cb-project": project}
        )
    error = refused.value.body
    assert error["code"] == "unsupported_endpoint" and error["param"] == "model"
    assert error["message"] == (
        "/v1/responses/compact is OpenAI's own endpoint, relayed only to OpenAI deployments: the model "
        f"'{OPUS}' is not served by an OpenAI deployment here. Compact the conversation locally instead."
    )
    assert not fresh["a"].received and not fresh["gpt"].received
    assert usage_of(gateway, project)["total_requests"] == 1  # refused, and recorded as every request is


# -- around the requests -----------------------------------------------------------------------


def test_a_gzip_body_is_inflated_and_relayed(gateway, fresh):
    body = claude_code_body("Compressed")
    data = gzip.compress(json.dumps(body).encode())
    response = post(gateway, body, data=data, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert fresh["a"].received[-1].json == body


def test_a_zstd_body_is_inflated_and_relayed(gateway, fresh):
    body = claude_code_body("Zstd compressed")
    data = zstandard.ZstdCompressor().compress(json.dumps(body).encode())
    response = post(gateway, body, data=data, headers={"content-encoding": "zstd"})
    assert response.status_code == 200, response.text
    assert fresh["a"].received[-1].json == body


def test_a_body_that_inflates_past_the_limit_is_refused(gateway, fresh):
    bomb = gzip.compress(b'{"model": "' + b"a" * (33 * 1024 * 1024) + b'"}')
    response = post(gateway, None, data=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "request_too_large"
    assert not fresh["a"].received


def test_an_unknown_content_encoding_gets_a_clear_415(gateway, fresh):
    response = post(gateway, None, data=b"\x00\x01", headers={"content-encoding": "br"})
    assert response.status_code == 415
    assert "br" in response.json()["error"]["message"]


def test_head_probes_answer_200(gateway):
    for path in ("/", "/api/hello"):
        assert requests.head(gateway.openai_url + path, timeout=5).status_code == 200


def test_models_are_listed_in_anthropics_shape_for_anthropic_clients(claude):
    page = claude.models.list(limit=2)
    assert len(page.data) == 2 and all(m.type == "model" for m in page.data)
    assert page.has_more and page.first_id == page.data[0].id and page.last_id == page.data[1].id
    ids = [m.id for m in claude.models.list(limit=1000).data]
    assert OPUS in ids and "gpt-5.5" in ids
    opus = claude.models.retrieve(OPUS)
    assert opus.type == "model" and opus.id == OPUS and opus.display_name


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "x": 1},
        {"input": [{"model": "m"}], "model": "m"},  # a nested "model" first
        {"input": 'he said "model": "m"', "model": "m"},  # in a string
        {"a": "\\", "model": "m"},  # a string ending in a backslash before it
        {"a": "x\\\\", "b": {"model": "m"}, "model": "m", "c": "[{"},
    ],
)
def test_only_the_top_level_model_is_spliced_whatever_precedes_it(body):
    for raw in (json.dumps(body), json.dumps(body, separators=(",", ":")), json.dumps(body, indent=2)):
        spliced = with_model(raw.encode(), "m", "claude-opus-4-8")
        assert json.loads(spliced) == body | {"model": "claude-opus-4-8"}


def test_relayed_requests_are_billed_on_nats_with_two_workers(server_factory, upstreams, tmp_path):
    config = write_config(tmp_path, upstreams)
    server = server_factory(
        "nats", CB_CONFIG=str(config), CLAUDE_KEY=ANTHROPIC_KEY, GPT_KEY=OPENAI_KEY, WEB_CONCURRENCY="2"
    )
    project = "nats-" + uuid.uuid4().hex[:6]
    for stream in (False, True, False, True):
        response = post(server, claude_code_body(f"NATS {stream}", stream=stream), headers={"x-cb-project": project})
        assert response.status_code == 200 and response.content
    deadline = time.monotonic() + 10
    while usage_of(server, project)["total_requests"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert usage_of(server, project)["total_requests"] == 4
