"""The OpenAI-compatible API on port 3000, driven by the official `openai` client and plain
HTTP, against real gunicorn and a local upstream speaking OpenAI's wire protocol."""

from __future__ import annotations

import base64
import json
import struct
import time

import openai
import pytest
import requests

from tests.harness import Server
from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream, openai_error

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def api(upstream, tmp_path_factory):
    server = Server(
        tmp_path_factory.mktemp("openai-api"),
        env={
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
            "SSE_KEEPALIVE_SECONDS": "0.2",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_upstream(request):
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture
def client(api):
    with openai.OpenAI(base_url=api.openai_url + "/v1", api_key="client-key", max_retries=0, timeout=20) as client:
        yield client  # closed after the test: an idle keep-alive connection would hold up the server's shutdown


def sse_events(response: requests.Response) -> list[str]:
    """The raw SSE lines, blank separators left out."""
    return [line.decode() for line in response.iter_lines() if line]


def wait_for_log(server: Server, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.logs().splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {needle!r}:\n{server.logs()[-2000:]}")


# -- chat, both modes ----------------------------------------------------------------------


def test_chat_completion_with_the_openai_client(client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        temperature=0.2,
        max_tokens=50,
        seed=7,
        user="alice",
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    assert raw.headers["x-cb-provider"] == "openai"
    assert raw.headers["x-cb-model"] == "gpt-4"
    assert float(raw.headers["x-cb-overhead-ms"]) >= 0
    sent = upstream.chats()[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["user"]) == (0.2, 50, 7, "alice")
    assert upstream.chats()[-1].headers["Authorization"] == f"Bearer {API_KEY}"


def test_guide_basic_curl_example(api):
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        data='{\n    "model": "gpt-4",\n    "messages": [\n      {"role": "user", "content": "Hello, how are you?"}\n'
        "    ]\n  }",
        timeout=10,
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_guide_streaming_curl_example(api):
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        data='{\n    "model": "gpt-4",\n    "messages": [\n      {"role": "user", "content": "Write a short poem"}\n'
        '    ],\n    "stream": true\n  }',
        stream=True,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    lines = sse_events(response)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == REPLY


def test_stream_with_include_usage_ends_with_a_usage_chunk(client, upstream):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert last.choices == [] and last.usage.total_tokens > 0
    assert all(c.usage is None for c in content)
    assert "".join(c.choices[0].delta.content or "" for c in content) == REPLY


def test_upstream_is_always_asked_for_stream_usage(client, upstream, api):
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        extra_headers={"X-Request-ID": "usage-probe-1"},
    )
    assert stream.headers["x-request-id"] == "usage-probe-1"
    list(stream.parse())
    assert upstream.chats()[-1].json["stream_options"] == {"include_usage": True}
    line = wait_for_log(api, "[usage-probe-1] POST")
    assert "usage_status=success" in line and "streamed=True" in line and "estimated=False" in line


# -- tools ---------------------------------------------------------------------------------


def test_tool_calls_round_trip(client, upstream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="gpt-4", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=False
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    sent = upstream.chats()[-1].json
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = client.chat.completions.create(model="gpt-4", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "The tool said: 18C and sunny"
    relayed = upstream.chats()[-1].json["messages"]
    assert relayed[1]["tool_calls"][0]["id"] == call.id
    assert relayed[2] == {"role": "tool", "content": "18C and sunny", "tool_call_id": call.id}


def test_streamed_tool_call_arguments_arrive_as_deltas(client, upstream):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], stream=True
        )
    )
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) > 2
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert "".join(d.function.arguments for d in deltas) == upstream.tool_arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_content_parts_reach_the_upstream(client, upstream):
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": parts}], response_format={"type": "json_object"}
    )
    sent = upstream.chats()[-1].json
    assert sent["messages"][0]["content"] == parts
    assert sent["response_format"] == {"type": "json_object"}


# -- models and embeddings -----------------------------------------------------------------


def test_models_lists_configured_providers_and_virtual_models(client, api):
    models = {m.id: m for m in client.models.list()}
    assert {"gpt-4", "gpt-4o-mini", "auto", "cb:cost-optimal"} <= set(models)
    assert not any(m.provider == "anthropic" for m in models.values())
    gpt4 = models["gpt-4"].model_dump()
    assert gpt4 | {"input_price_per_million": 30.0, "output_price_per_million": 60.0} == gpt4
    assert (gpt4["owned_by"], gpt4["context_window"], gpt4["supports_streaming"]) == ("circuit-breaker", 8192, True)
    assert client.models.retrieve("gpt-4").id == "gpt-4"
    assert requests.get(api.openai_url + "/v1/models", timeout=5).json()["object"] == "list"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found" and info.value.param == "model"


def test_embeddings_in_both_encodings(client, upstream, api):
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world!"])  # base64 on the wire
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx([((5 + k) % 7) / 7.0 for k in range(8)], abs=1e-3)
    assert result.usage.prompt_tokens > 0
    plain = requests.post(
        api.openai_url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "hey", "encoding_format": "float", "dimensions": 4},
        timeout=5,
    ).json()
    assert len(plain["data"][0]["embedding"]) == 4 and upstream.received[-1].json["dimensions"] == 4
    encoded = requests.post(
        api.openai_url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "hey", "encoding_format": "base64"},
        timeout=5,
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(
        [((3 + k) % 7) / 7.0 for k in range(8)], abs=1e-3
    )


def test_embeddings_refused_for_a_chat_model(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="gpt-4", input="hello")
    assert info.value.param == "model"


# -- errors --------------------------------------------------------------------------------


def test_wrong_types_name_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], temperature="hot")
    assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": 42}])
    assert info.value.param == "messages[0].content"


def test_invalid_json_and_unknown_paths_answer_in_the_envelope(api):
    bad = requests.post(
        api.openai_url + "/v1/chat/completions",
        data="{not json",
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    missing = requests.get(api.openai_url + "/v1/nothing", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.headers["x-request-id"] == "abc-123"


def test_upstream_rate_limit_passes_through_with_retry_after(client, upstream):
    upstream.fail_next(
        429, openai_error("Rate limit reached for gpt-4", "requests", "rate_limit_exceeded"), {"retry-after": "2"}
    )
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "2"
    assert "OpenAI" in info.value.message and "Rate limit reached" in info.value.message
    # the deployment's Retry-After is honoured: the next request waits without reaching the upstream
    with pytest.raises(openai.RateLimitError) as again:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert int(again.value.response.headers["retry-after"]) in (1, 2)
    assert len(upstream.received) == 1
    time.sleep(2.1)


def test_upstream_client_error_keeps_its_status(client, upstream):
    upstream.fail_next(
        400,
        openai_error(
            "This model's maximum context length is 8192 tokens.", code="context_length_exceeded", param="messages"
        ),
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert "maximum context length" in info.value.message and info.value.code == "context_length_exceeded"


def test_upstream_fault_becomes_502_naming_the_provider(client, upstream):
    upstream.fail_next(500, openai_error("The server had an error", "server_error"))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and "OpenAI" in info.value.message


def test_upstream_key_errors_never_echo_the_key(client, upstream, api):
    upstream.fail_next(401, openai_error(f"Incorrect API key provided: {API_KEY}.", code="invalid_api_key"))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert API_KEY not in info.value.response.text and API_KEY not in api.logs()


def test_provider_without_key_names_the_variable(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude-3-opus", messages=[{"role": "user", "content": "x"}])
    assert "ANTHROPIC_API_KEY" in info.value.message


# -- streaming behaviour -------------------------------------------------------------------


def test_mid_stream_failure_becomes_an_error_event(api, upstream):
    upstream.slow_next(0.0, fail_after_chunks=3)
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        stream=True,
        timeout=10,
        json={"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    lines = sse_events(response)  # ends cleanly: iter_lines would raise on a broken chunked body
    assert len(lines) == 5 and lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert "OpenAI" in error["message"] and error["type"] == "server_error"


def test_keep_alive_comments_while_waiting_for_the_first_token(api, upstream):
    upstream.slow_next(0.0, first_chunk_delay=0.8)
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        stream=True,
        timeout=10,
        json={"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    lines = sse_events(response)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_data >= 1 and all(line == ": keep-alive" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"


def test_client_disconnect_closes_the_upstream_and_records_usage(api, upstream):
    upstream.slow_next(0.4)
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        stream=True,
        timeout=10,
        headers={"X-Request-ID": "disconnect-1"},
        json={"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    lines = response.iter_lines()
    seen = [next(lines)]
    while b"Hello!" not in seen[-1]:  # the first words were delivered (keep-alives may come between)
        seen.append(next(lines))
    frames = [line for line in seen if line.startswith(b"data: ")]
    assert b'"role":"assistant"' in frames[0]  # the opening chunk is held back until the first words, not lost
    response.raw._fp.fp.raw._sock.close()  # hang up the way a client process dies: the socket closes
    response.close()
    left = time.monotonic()
    gone = upstream.wait_for_disconnect(5)
    assert gone is not None and gone - left < 1.0
    line = wait_for_log(api, "[disconnect-1] POST")
    assert "usage_status=interrupted" in line and "streamed=True" in line
    assert "estimated=True" in line and "completion_tokens=0" not in line


def test_streaming_disabled_is_a_400(server_factory, upstream):
    server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url, OPENAI_ENABLE_STREAMING="false")
    with openai.OpenAI(base_url=server.openai_url + "/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True)
        assert "Streaming is disabled" in info.value.message and info.value.param == "stream"
        assert client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}]).choices
