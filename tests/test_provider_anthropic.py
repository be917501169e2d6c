"""The Anthropic adapter: translation to the Messages API and back, against a local
Anthropic that speaks the real wire protocol, then end to end through the server with
the official ``openai`` client."""

from __future__ import annotations

import json
import time

import openai
import pytest

from cb.llm.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from cb.llm.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from cb.llm.providers.base import Deployment
from cb.llm.types import ChatRequest, ContentPart, Message, Tool, ToolCall
from tests.upstreams.anthropic_server import KEY, OVERLOADED, AnthropicUpstream, error_body
from tests.upstreams.exchange import arguments_of, chat, send, serving, stream, text_of
from tests.upstreams.script import Answer

PROVIDER = AnthropicProvider()
MODEL = "claude-3-5-sonnet-20241022"
WEATHER = Tool(
    "get_weather",
    "Current weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(scope="module")
def upstream():
    with AnthropicUpstream() as server:
        yield server


@pytest.fixture
def anthropic(upstream):
    upstream.reset()
    upstream.answers.clear()
    return upstream


@pytest.fixture
def deployment(anthropic):
    return Deployment("anthropic", "anthropic", anthropic.url, KEY, "ANTHROPIC_API_KEY")


def ask(*messages: Message, **fields) -> ChatRequest:
    return ChatRequest(MODEL, list(messages), **fields)


def body_of(request: ChatRequest) -> dict:
    return PROVIDER.chat_call(Deployment("a", "anthropic", "http://x", KEY), request, MODEL).json


# -- request translation ---------------------------------------------------------------


def test_leading_system_messages_are_lifted_to_the_top_level_field_and_later_ones_stay_in_place():
    body = body_of(
        ask(
            Message("system", "Be brief."),
            Message("developer", "Use tools."),
            Message("user", "Hi"),
            Message("system", "Be kind."),
        )
    )
    assert body["system"] == "Be brief.\n\nUse tools."
    note = {"type": "text", "text": "<system-note>\nBe kind.\n</system-note>"}
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}, note]}]


def test_max_tokens_defaults_when_unset_and_passes_when_set():
    assert body_of(ask(Message("user", "Hi")))["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body_of(ask(Message("user", "Hi"), max_tokens=50))["max_tokens"] == 50


def test_sampling_fields_stop_and_user_are_translated():
    body = body_of(ask(Message("user", "Hi"), temperature=0.3, top_p=0.9, stop=["END"], user="u-42"))
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.3, 0.9, ["END"])
    assert body["metadata"] == {"user_id": "u-42"}


def test_images_become_base64_and_url_sources():
    parts = [
        ContentPart("text", text="What is this?"),
        ContentPart("image_url", image_url="data:image/png;base64,iVBORw0KGgo="),
        ContentPart("image_url", image_url="https://example.com/cat.jpg"),
    ]
    blocks = body_of(ask(Message("user", parts)))["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_tool_calls_and_results_become_tool_use_and_merged_tool_result_turns():
    calls = [ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("toolu_2", "get_weather", "{}")]
    body = body_of(
        ask(
            Message("user", "Weather?"),
            Message("assistant", None, calls),
            Message("tool", "18C", tool_call_id="toolu_1"),
            Message("tool", "20C", tool_call_id="toolu_2"),
            Message("user", "Thanks"),
        )
    )
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][1] == {"type": "tool_result", "tool_use_id": "toolu_2", "content": "20C"}
    assert len(body["messages"]) == 3


@pytest.mark.parametrize(
    "choice, expected",
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_is_translated(choice, expected):
    body = body_of(ask(Message("user", "Hi"), tools=[WEATHER], tool_choice=choice))
    assert body["tool_choice"] == expected
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER.parameters}
    ]


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    body = body_of(ask(Message("user", "Hi"), tools=[WEATHER], parallel_tool_calls=False))
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_json_schema_response_format_is_emulated_with_a_system_instruction():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    body = body_of(
        ask(
            Message("user", "Hi"),
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        )
    )
    assert "JSON" in body["system"] and json.dumps(schema, separators=(",", ":")) in body["system"]


@pytest.mark.parametrize(
    "field, value", [("seed", 7), ("presence_penalty", 0.5), ("frequency_penalty", 0.5), ("n", 2), ("logprobs", True)]
)
def test_fields_without_an_anthropic_equivalent_are_refused_by_name(field, value):
    with pytest.raises(UnsupportedParameter) as caught:
        PROVIDER.check(ask(Message("user", "Hi"), **{field: value}))
    assert caught.value.param == field and field in caught.value.message


def test_tool_arguments_that_are_not_json_are_a_client_error():
    with pytest.raises(InvalidRequest):
        body_of(ask(Message("user", "Hi"), Message("assistant", None, [ToolCall("t", "f", "{oops")])))


# -- against the local Anthropic -------------------------------------------------------


def test_sends_key_and_version_headers_to_v1_messages(anthropic, deployment):
    chat(PROVIDER, deployment, ask(Message("user", "Hi")))
    seen = anthropic.received[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY and seen.headers["anthropic-version"] == "2023-06-01"


def test_text_answer_parses_content_usage_and_stop(anthropic, deployment):
    anthropic.say(Answer("Bonjour !", prompt_tokens=21, completion_tokens=4))
    response = chat(PROVIDER, deployment, ask(Message("user", "Salut")))
    choice = response.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Bonjour !", "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (21, 4)


@pytest.mark.parametrize(
    "stop_reason, finish", [("max_tokens", "length"), ("stop_sequence", "stop"), ("end_turn", "stop")]
)
def test_stop_reasons_map_to_finish_reasons(anthropic, deployment, stop_reason, finish):
    anthropic.say(Answer("cut", finish=stop_reason))
    assert chat(PROVIDER, deployment, ask(Message("user", "Hi"))).choices[0].finish_reason == finish


def test_tool_use_answer_becomes_tool_calls(anthropic, deployment):
    anthropic.say(Answer("Let me check.", tool_calls=[("get_weather", {"city": "Paris"})]))
    choice = chat(PROVIDER, deployment, ask(Message("user", "Weather?"), tools=[WEATHER])).choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("toolu_")


def test_a_full_tool_round_trip_is_accepted_by_anthropic(anthropic, deployment):
    anthropic.say(Answer("", tool_calls=[("get_weather", {"city": "Paris"})]), Answer("It is 18C in Paris."))
    first = chat(
        PROVIDER, deployment, ask(Message("system", "Be brief."), Message("user", "Weather?"), tools=[WEATHER])
    )
    call = first.choices[0].message.tool_calls[0]
    second = chat(
        PROVIDER,
        deployment,
        ask(
            Message("system", "Be brief."),
            Message("user", "Weather?"),
            Message("assistant", None, [call]),
            Message("tool", '{"temp": 18}', tool_call_id=call.id),
            tools=[WEATHER],
        ),
    )
    assert second.choices[0].message.content == "It is 18C in Paris."


def test_stream_yields_role_text_finish_and_usage(anthropic, deployment):
    anthropic.say(Answer("one two three", prompt_tokens=9, completion_tokens=3))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "Count")))
    assert chunks[0].role == "assistant"
    assert text_of(chunks) == "one two three"
    assert [c.content for c in chunks if c.content] == ["one", " two", " three"]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 3)


def test_streamed_tool_call_arguments_arrive_as_deltas(anthropic, deployment):
    args = {"city": "Paris", "unit": "celsius"}
    anthropic.say(Answer("Checking.", tool_calls=[("get_weather", args), ("get_time", {"tz": "CET"})]))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "Weather?"), tools=[WEATHER]))
    calls = arguments_of(chunks)
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == args
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"tz": "CET"}
    first_deltas = [d for c in chunks for d in c.tool_calls if d.index == 0]
    assert first_deltas[0].id and first_deltas[0].name and not first_deltas[0].arguments
    assert len(first_deltas) > 2 and all(d.id is None for d in first_deltas[1:])
    assert chunks[-1].finish_reason == "tool_calls"


def test_error_event_mid_stream_raises_upstream_error(anthropic, deployment):
    anthropic.say(Answer("a b c d", error_after=2))
    seen = []
    with pytest.raises(UpstreamError) as caught:
        for chunk in PROVIDER.parse_stream(_lines(anthropic, deployment), MODEL):
            seen.append(chunk)
    assert text_of(seen) == "a b"
    assert "Overloaded" in caught.value.message and caught.value.retryable


def test_stream_cut_before_message_stop_is_an_error():
    lines = [
        b"event: message_start",
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":3}}}',
        b"",
        b"event: content_block_delta",
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        b"",
    ]
    with pytest.raises(UpstreamError):
        list(PROVIDER.parse_stream(lines, MODEL))


def test_overloaded_529_is_a_retryable_provider_fault(anthropic, deployment):
    anthropic.fail_next(529, OVERLOADED)
    with pytest.raises(UpstreamError) as caught:
        chat(PROVIDER, deployment, ask(Message("user", "Hi")))
    assert caught.value.http_status == 502 and caught.value.retryable and "Overloaded" in caught.value.message


def test_anthropic_refusal_keeps_the_client_status_and_message(anthropic, deployment):
    anthropic.fail_next(400, error_body("invalid_request_error", "temperature: must be <= 1"))
    with pytest.raises(UpstreamError) as caught:
        chat(PROVIDER, deployment, ask(Message("user", "Hi"), temperature=1.5))
    assert caught.value.http_status == 400 and "temperature" in caught.value.message


def _lines(anthropic, deployment):
    with send(PROVIDER.chat_call(deployment, ask(Message("user", "Hi"), stream=True), MODEL)) as response:
        yield from response.iter_lines()


# -- end to end: the official openai client, the real server, the local Anthropic --------------


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    with serving(tmp_path_factory.mktemp("anthropic"), ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=upstream.url) as (
        server,
        client,
    ):
        yield server, client


@pytest.fixture(scope="module")
def client(gateway):
    return gateway[1]


def test_openai_client_chats_with_claude(client, anthropic):
    anthropic.say(Answer("Hello from Claude.", prompt_tokens=11, completion_tokens=5))
    response = client.chat.completions.create(
        model="claude-3-5-sonnet",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=64,
    )
    assert response.choices[0].message.content == "Hello from Claude."
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (11, 5, 16)
    sent = anthropic.received[-1].json
    assert sent["model"] == MODEL and sent["system"] == "Be brief." and sent["max_tokens"] == 64
    assert anthropic.received[-1].headers["x-api-key"] == KEY


def test_openai_client_streams_claude_with_usage(client, anthropic):
    anthropic.say(Answer("Streaming from Claude", prompt_tokens=8, completion_tokens=3))
    chunks = list(
        client.chat.completions.create(
            model="claude-3-5-sonnet",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hi"}],
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming from Claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 8 and chunks[-1].usage.completion_tokens == 3
    assert anthropic.received[-1].json["stream"] is True


def test_tool_calls_work_both_ways_through_the_gateway(client, anthropic):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}]
    anthropic.say(Answer("", tool_calls=[("get_weather", {"city": "Paris"})]), Answer("18C and sunny."))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="claude-3-5-sonnet", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    second = client.chat.completions.create(model="claude-3-5-sonnet", messages=messages, tools=tools)
    assert second.choices[0].message.content == "18C and sunny."
    result = anthropic.received[-1].json["messages"][-1]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": call.id, "content": "18C"}


def test_streamed_tool_call_argument_deltas_reach_the_client(client, anthropic):
    anthropic.say(Answer("", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})]))
    chunks = list(
        client.chat.completions.create(
            model="claude-3-5-sonnet",
            stream=True,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}],
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert len(deltas) > 2
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_unsupported_field_is_a_bad_request_naming_it(client, anthropic):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-3-5-sonnet", seed=1, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["param"] == "seed" and "seed" in caught.value.message
    assert anthropic.received == []


def test_overloaded_529_becomes_a_502_naming_anthropic(client, anthropic):
    anthropic.fail_next(529, OVERLOADED)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="claude-3-5-sonnet", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and "Anthropic" in caught.value.message


def test_rate_limit_429_is_a_rate_limit_error_with_retry_after(client, anthropic):
    anthropic.fail_next(
        429,
        error_body("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
        {"retry-after": "1"},
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="claude-3-5-sonnet", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers.get("retry-after") == "1"
    time.sleep(1.1)  # the deployment honours Retry-After; let it pass before the next test


def test_error_event_mid_stream_ends_the_stream_with_an_error(client, anthropic):
    anthropic.say(Answer("a b c d", error_after=2))
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model="claude-3-5-sonnet", stream=True, messages=[{"role": "user", "content": "Hi"}]
        ):
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "a b"
    assert "Overloaded" in caught.value.message


def test_client_leaving_a_stream_closes_the_anthropic_connection(client, anthropic):
    anthropic.say(Answer(" ".join(["word"] * 50)))
    anthropic.slow_next(0.2)
    stream = client.chat.completions.create(
        model="claude-3-5-sonnet", stream=True, messages=[{"role": "user", "content": "Talk"}]
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    assert anthropic.wait_for_disconnect(5) is not None


def test_prompt_cache_reads_and_writes_reach_the_client_and_are_priced_at_their_rates(gateway, anthropic):
    server, client = gateway
    anthropic.say(
        Answer("Cached.", prompt_tokens=2000, completion_tokens=10, cache_write_tokens=1800),
        Answer("Cached.", prompt_tokens=2000, completion_tokens=10, cached_tokens=1800),
    )
    first = client.chat.completions.create(model="claude-3-haiku", messages=[{"role": "user", "content": "Hi"}])
    chunks = list(
        client.chat.completions.create(
            model="claude-3-haiku",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hi"}],
        )
    )
    assert first.usage.prompt_tokens == 2000  # OpenAI's prompt tokens include the cached ones
    assert first.usage.prompt_tokens_details.cached_tokens is None
    assert first.usage.prompt_tokens_details.cache_write_tokens == 1800  # ours: OpenAI has no such field
    streamed = chunks[-1].usage
    assert (streamed.prompt_tokens, streamed.prompt_tokens_details.cached_tokens) == (2000, 1800)
    # claude-3-haiku: $0.25 per 1M input, $0.03 cache reads, $0.30 cache writes, $1.25 output
    expected = (200 * 0.25 + 1800 * 0.30 + 10 * 1.25) + (200 * 0.25 + 1800 * 0.03 + 10 * 1.25)
    report = server.graphql("{ costAnalytics { cached_tokens cache_write_tokens model_breakdown } }")["data"]
    entry = report["costAnalytics"]["model_breakdown"]["claude-3-haiku-20240307"]
    assert entry["cost"] == pytest.approx(expected / 1e6, abs=1e-12)
    assert (entry["cached_tokens"], entry["cache_write_tokens"]) == (1800, 1800)
