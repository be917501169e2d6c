"""Anthropic's Messages API on the gateway (``POST /v1/messages``), for every provider: the
official ``anthropic`` client against the real server, each provider's local upstream behind it."""

from __future__ import annotations

import json

import anthropic
import pytest

from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import OVERLOADED, AnthropicUpstream, counted_tokens
from tests.upstreams.exchange import serving
from tests.upstreams.gemini_server import KEY as GEMINI_KEY
from tests.upstreams.gemini_server import GeminiUpstream
from tests.upstreams.ollama_server import OllamaUpstream
from tests.upstreams.openai_server import API_KEY as OPENAI_KEY
from tests.upstreams.openai_server import OpenAIUpstream
from tests.upstreams.script import Answer

CLAUDE = "claude-3-5-sonnet"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def upstreams():
    with AnthropicUpstream() as claude, OpenAIUpstream() as gpt, GeminiUpstream() as gemini, OllamaUpstream() as ollama:
        yield {"anthropic": claude, "openai": gpt, "google": gemini, "ollama": ollama}


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory):
    env = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": upstreams["anthropic"].url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": upstreams["openai"].base_url,
        "GOOGLE_API_KEY": GEMINI_KEY,
        "GOOGLE_BASE_URL": upstreams["google"].url,
        "OLLAMA_BASE_URL": upstreams["ollama"].url,
    }
    with serving(tmp_path_factory.mktemp("messages"), **env) as (server, _):
        yield server


@pytest.fixture
def client(gateway, upstreams):
    for upstream in upstreams.values():
        upstream.reset()
        if hasattr(upstream, "answers"):
            upstream.answers.clear()
    client = anthropic.Anthropic(base_url=gateway.openai_url, api_key="unused", max_retries=0, timeout=20)
    yield client
    client.close()


@pytest.fixture
def claude(upstreams):
    return upstreams["anthropic"]


# -- non-streamed answers --------------------------------------------------------------


def test_claude_answers_a_message_with_content_stop_reason_and_usage(client, claude):
    claude.say(Answer("Hello from Claude.", prompt_tokens=11, completion_tokens=5))
    message = client.messages.create(model=CLAUDE, max_tokens=64, system="Be brief.", messages=HI)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == claude.received[-1].json["model"]  # relayed: the model as Anthropic names it
    assert message.content[0].type == "text" and message.content[0].text == "Hello from Claude."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 5)
    assert message.id.startswith("msg_")


def test_an_anthropic_deployment_gets_the_body_unchanged(client, claude):
    system = [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}]
    client.messages.create(
        model=CLAUDE,
        max_tokens=64,
        system=system,
        extra_body={"top_k": 5, "temperature": 0.2},
        metadata={"user_id": "u-1"},
        stop_sequences=["END"],
        messages=HI,
    )
    sent = claude.received[-1].json
    assert sent["system"] == system and sent["top_k"] == 5 and sent["stop_sequences"] == ["END"]
    assert sent["metadata"] == {"user_id": "u-1"} and sent["model"] == "claude-3-5-sonnet-20241022"
    assert sent["messages"] == HI


@pytest.mark.parametrize("stop, expected", [("max_tokens", "max_tokens"), ("stop_sequence", "stop_sequence")])
def test_stop_reasons_come_back_as_anthropic_names(client, claude, stop, expected):
    claude.say(Answer("cut", finish=stop))
    message = client.messages.create(model=CLAUDE, max_tokens=5, messages=HI, stop_sequences=["cut"])
    assert message.stop_reason == expected
    assert message.stop_sequence == ("cut" if stop == "stop_sequence" else None)


@pytest.mark.parametrize(
    "model, provider", [("gpt-4o-mini", "openai"), ("gemini-1.5-flash", "google"), ("llama3.2", "ollama")]
)
def test_every_provider_answers_the_messages_api(client, upstreams, model, provider):
    if hasattr(upstreams[provider], "say"):
        upstreams[provider].say(Answer("Hello from elsewhere.", prompt_tokens=9, completion_tokens=4))
    response = client.messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    )
    message = response.parse()
    assert response.headers["x-cb-provider"] == provider
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_openai_gets_system_and_max_tokens_translated(client, upstreams):
    client.messages.create(
        model="gpt-4o-mini", max_tokens=50, system="Be brief.", messages=HI, extra_body={"temperature": 0.5}
    )
    sent = upstreams["openai"].chats()[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5


def test_images_reach_openai_as_data_urls(client, upstreams):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "What is it?"}]}],
    )
    content = upstreams["openai"].chats()[-1].json["messages"][0]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="


def test_usage_is_billed_like_chat_completions(client, claude, gateway):
    claude.say(Answer("Billed.", prompt_tokens=1000, completion_tokens=500))
    client.messages.create(model=CLAUDE, max_tokens=64, messages=HI, extra_headers={"X-CB-Project": "messages-bill"})
    report = gateway.graphql(
        '{ costAnalytics(input: { project_id: "messages-bill" }) { total_requests total_tokens total_cost } }'
    )["data"]["costAnalytics"]
    assert report["total_requests"] == 1 and report["total_tokens"] == 1500 and report["total_cost"] > 0


# -- errors in Anthropic's envelope ---------------------------------------------------------


def test_missing_max_tokens_is_an_anthropic_bad_request(gateway):
    import requests

    response = requests.post(gateway.openai_url + "/v1/messages", json={"model": CLAUDE, "messages": HI}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_unknown_model_is_a_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=5, messages=HI)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in caught.value.message


def test_a_bad_role_names_the_field(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "tool", "content": "x"}])
    assert "messages.0.role" in caught.value.message


def test_a_search_only_request_on_a_model_without_search_is_an_anthropic_bad_request(client, upstreams):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=5,
            messages=HI,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "web_search" in caught.value.message and caught.value.body["error"]["type"] == "invalid_request_error"
    assert not upstreams["openai"].chats()


def test_server_tools_reach_claude_as_sent(client, claude):
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    client.messages.create(model=CLAUDE, max_tokens=5, messages=HI, tools=tools)
    assert claude.received[-1].json["tools"] == tools


def test_an_unknown_url_under_messages_answers_in_anthropic_shape(gateway):
    import requests

    response = requests.get(gateway.openai_url + "/v1/messages/nothing", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_overloaded_claude_is_an_anthropic_server_error(client, claude):
    claude.fail_next(529, OVERLOADED)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=CLAUDE, max_tokens=5, messages=HI)
    assert caught.value.body["type"] == "error" and "Overloaded" in caught.value.message


# -- count_tokens ------------------------------------------------------------------------


def test_count_tokens_is_anthropics_own_count_for_claude(client, claude):
    response = client.messages.with_raw_response.count_tokens(model=CLAUDE, system="Be brief.", messages=HI)
    assert response.parse().input_tokens == counted_tokens({"messages": HI, "system": "Be brief."})
    assert response.headers["x-cb-token-count"] == "provider"
    assert claude.received[-1].path == "/v1/messages/count_tokens"


def test_count_tokens_is_an_estimate_elsewhere(client):
    response = client.messages.with_raw_response.count_tokens(model="gpt-4o-mini", messages=HI)
    assert 0 < response.parse().input_tokens < 50
    assert response.headers["x-cb-token-count"] == "estimated"


# -- streams: Anthropic's named events ---------------------------------------------------


def test_claude_streams_text_events_and_a_final_message_with_usage(client, claude):
    claude.say(Answer("one two three", prompt_tokens=9, completion_tokens=3))
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HI) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(events)
    assert message.content[0].text == "one two three" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 3)
    assert claude.received[-1].json["stream"] is True


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-1.5-flash", "llama3.2"])
def test_every_provider_streams_the_messages_api(client, upstreams, model):
    for upstream in upstreams.values():
        if hasattr(upstream, "say"):
            upstream.say(Answer("streamed from elsewhere"))
    with client.messages.stream(model=model, max_tokens=64, messages=HI) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text and message.content[0].text == text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


def test_raw_stream_names_each_sse_event(gateway, claude):
    import requests

    with requests.post(
        gateway.openai_url + "/v1/messages",
        stream=True,
        timeout=10,
        json={"model": "gpt-4o-mini", "max_tokens": 20, "stream": True, "messages": HI},  # translated
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith(b"event:")]
    names = [line.split(b":", 1)[1].strip().decode() for line in lines]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert response.headers["content-type"].startswith("text/event-stream")


def test_error_mid_stream_is_an_anthropic_error_event(client, claude):
    claude.say(Answer("a b c d", error_after=2))
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HI) as stream:
            received.extend(stream.text_stream)
    assert "".join(received) == "a b" and "Overloaded" in str(caught.value)


def test_client_leaving_a_stream_closes_the_upstream(client, claude):
    claude.say(Answer(" ".join(["word"] * 50)))
    claude.slow_next(0.2)
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HI) as stream:
        next(iter(stream.text_stream))
    assert claude.wait_for_disconnect(5) is not None


# -- tools both ways ---------------------------------------------------------------------------


def test_claude_tool_use_and_tool_result_round_trip(client, claude):
    claude.say(Answer("Let me check.", tool_calls=[("get_weather", {"city": "Paris"})]), Answer("18C in Paris."))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model=CLAUDE, max_tokens=64, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = client.messages.create(model=CLAUDE, max_tokens=64, tools=[WEATHER], messages=messages)
    assert second.content[0].text == "18C in Paris."
    assert claude.received[-1].json["messages"][-1]["content"][0]["tool_use_id"] == call.id


def test_openai_tool_calls_become_tool_use_and_results_become_tool_messages(client, upstreams):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(
        model="gpt-4o-mini", max_tokens=64, tools=[WEATHER], messages=messages, tool_choice={"type": "any"}
    )
    call = first.content[-1]
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and call.input["city"] == "Paris"
    sent = upstreams["openai"].chats()[-1].json
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"] and sent["tool_choice"] == "required"
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = client.messages.create(model="gpt-4o-mini", max_tokens=64, tools=[WEATHER], messages=messages)
    assert second.content[0].text == "The tool said: 18C"
    tail = upstreams["openai"].chats()[-1].json["messages"][-2:]
    assert tail[0]["tool_calls"][0]["id"] == call.id and tail[1] == {
        "role": "tool",
        "content": "18C",
        "tool_call_id": call.id,
    }


@pytest.mark.parametrize("model", [CLAUDE, "gpt-4o-mini"])
def test_streamed_tool_input_arrives_as_input_json_deltas(client, claude, model):
    claude.say(Answer("", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})]))
    with client.messages.stream(
        model=model, max_tokens=64, tools=[WEATHER], messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        deltas = [
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        message = stream.get_final_message()
    assert deltas and json.loads("".join(deltas)) == {"city": "Paris", "unit": "celsius"}
    assert message.stop_reason == "tool_use" and message.content[-1].input == {"city": "Paris", "unit": "celsius"}


def test_a_claude_code_shaped_request_streams(client, upstreams):
    """System blocks with cache_control, many tools, thinking blocks in history, betas, stream: true."""
    system = [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Working directory: /repo"},
    ]
    tools = [dict(WEATHER, name=f"tool_{i}") for i in range(30)]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Sure."}],
        },
        {"role": "user", "content": "Go on"},
    ]
    for model in (CLAUDE, "gpt-4o-mini"):
        with client.messages.stream(
            model=model,
            max_tokens=32000,
            system=system,
            tools=tools,
            messages=messages,
            metadata={"user_id": "user_abc_session_1"},
            extra_headers={"anthropic-beta": "claude-code-20250219,fine-grained-tool-streaming-2025-05-14"},
        ) as stream:
            message = stream.get_final_message()
        assert message.content and message.stop_reason in ("end_turn", "tool_use")
    assert upstreams["anthropic"].received[-1].json["messages"][1]["content"][0]["type"] == "thinking"
    assert "thinking" not in json.dumps(upstreams["openai"].chats()[-1].json["messages"])


def test_client_keys_are_read_from_x_api_key(server_factory, upstreams):
    server = server_factory(
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=upstreams["openai"].base_url,
        OPENAI_API_KEY_REQUIRED="true",
        CB_API_KEYS="client-key-0123456789",
    )
    good = anthropic.Anthropic(base_url=server.openai_url, api_key="client-key-0123456789", max_retries=0)
    assert good.messages.create(model="gpt-4o-mini", max_tokens=16, messages=HI).content[0].text
    bad = anthropic.Anthropic(base_url=server.openai_url, api_key="wrong-key-0123456789", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model="gpt-4o-mini", max_tokens=16, messages=HI)
    assert caught.value.body["error"]["type"] == "authentication_error"
    good.close()
    bad.close()
