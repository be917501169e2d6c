"""The Gemini adapter: translation to generateContent / streamGenerateContent and back,
against a local Gemini that speaks the real wire protocol, then end to end through the
server with the official ``openai`` client."""

from __future__ import annotations

import json

import openai
import pytest

from cb.llm.errors import UnsupportedParameter, UpstreamError
from cb.llm.providers.base import Deployment
from cb.llm.providers.google import GoogleProvider, gemini_schema
from cb.llm.types import ChatRequest, ContentPart, EmbeddingRequest, Message, Tool, ToolCall
from tests.upstreams.exchange import arguments_of, chat, embed, serving, stream, text_of
from tests.upstreams.gemini_server import KEY, GeminiUpstream, error_body
from tests.upstreams.script import Answer

PROVIDER = GoogleProvider()
MODEL = "gemini-1.5-flash"
WEATHER = Tool(
    "get_weather",
    "Current weather",
    {
        "type": "object",
        "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f"]}},
        "required": ["city"],
    },
)


@pytest.fixture(scope="module")
def upstream():
    with GeminiUpstream() as server:
        yield server


@pytest.fixture
def gemini(upstream):
    upstream.reset()
    upstream.answers.clear()
    return upstream


@pytest.fixture
def deployment(gemini):
    return Deployment("google", "google", gemini.url, KEY, "GOOGLE_API_KEY")


def ask(*messages: Message, **fields) -> ChatRequest:
    return ChatRequest(MODEL, list(messages), **fields)


def body_of(request: ChatRequest) -> dict:
    return PROVIDER.chat_call(Deployment("g", "google", "http://x", KEY), request, MODEL).json


# -- request translation ---------------------------------------------------------------


def test_roles_become_user_and_model_and_system_becomes_system_instruction():
    body = body_of(
        ask(
            Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Bye")
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "Hello"}]


def test_generation_config_carries_every_sampling_field():
    body = body_of(
        ask(
            Message("user", "Hi"),
            temperature=0.2,
            top_p=0.8,
            max_tokens=99,
            stop=["END"],
            n=2,
            seed=5,
            presence_penalty=0.1,
            frequency_penalty=0.3,
            logprobs=True,
            top_logprobs=3,
        )
    )
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.8,
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 5,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.3,
        "responseLogprobs": True,
        "logprobs": 3,
    }


def test_response_format_becomes_mime_type_and_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    config = body_of(
        ask(
            Message("user", "Hi"),
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    )["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {"type": "object", "properties": {"n": {"type": "integer"}}}
    json_object = body_of(ask(Message("user", "Hi"), response_format={"type": "json_object"}))["generationConfig"]
    assert json_object == {"responseMimeType": "application/json"}


def test_images_become_inline_data_and_file_data():
    parts = [
        ContentPart("text", text="What?"),
        ContentPart("image_url", image_url="data:image/png;base64,iVBORw0="),
        ContentPart("image_url", image_url="https://example.com/cat.webp"),
    ]
    sent = body_of(ask(Message("user", parts)))["contents"][0]["parts"]
    assert sent[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0="}}
    assert sent[2] == {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp"}}


def test_tools_become_function_declarations_with_a_gemini_schema():
    body = body_of(ask(Message("user", "Hi"), tools=[WEATHER], tool_choice="required"))
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather" and declaration["description"] == "Current weather"
    assert declaration["parameters"] == {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "nullable": True, "enum": ["c", "f"]}},
    }
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize(
    "choice, config",
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_function_calling_config(choice, config):
    body = body_of(ask(Message("user", "Hi"), tools=[WEATHER], tool_choice=choice))
    assert body["toolConfig"]["functionCallingConfig"] == config


def test_tool_results_are_matched_back_to_function_names_through_their_ids():
    calls = [ToolCall("call_a", "get_weather", '{"city": "Paris"}'), ToolCall("call_b", "get_time", "{}")]
    body = body_of(
        ask(
            Message("user", "?"),
            Message("assistant", None, calls),
            Message("tool", '{"temp": 18}', tool_call_id="call_a"),
            Message("tool", "noon", tool_call_id="call_b"),
        )
    )
    model, results = body["contents"][1], body["contents"][2]
    assert model["parts"][0] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
        ],
    }


def test_parallel_tool_calls_false_is_refused_by_name():
    with pytest.raises(UnsupportedParameter) as caught:
        PROVIDER.check(ask(Message("user", "Hi"), parallel_tool_calls=False))
    assert caught.value.param == "parallel_tool_calls"


def test_gemini_schema_keeps_property_names_that_look_like_dropped_keywords():
    schema = {"type": "object", "properties": {"additionalProperties": {"type": "string"}}}
    assert gemini_schema(schema) == schema


# -- against the local Gemini ------------------------------------------------------------


def test_sends_the_key_header_to_generate_content(gemini, deployment):
    chat(PROVIDER, deployment, ask(Message("user", "Hi")))
    seen = gemini.received[-1]
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == KEY and "key" not in seen.query


def test_text_answer_parses_content_usage_and_finish(gemini, deployment):
    gemini.say(Answer("Bonjour", prompt_tokens=6, completion_tokens=2))
    response = chat(PROVIDER, deployment, ask(Message("user", "Salut")))
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("Bonjour", "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (6, 2)


@pytest.mark.parametrize(
    "reason, finish",
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
    ],
)
def test_finish_reasons_are_mapped(gemini, deployment, reason, finish):
    gemini.say(Answer("x", finish=reason))
    assert chat(PROVIDER, deployment, ask(Message("user", "Hi"))).choices[0].finish_reason == finish


def test_function_call_answer_becomes_tool_calls_with_synthesized_ids(gemini, deployment):
    gemini.say(Answer("", tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {})]))
    choice = chat(PROVIDER, deployment, ask(Message("user", "?"), tools=[WEATHER])).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    first, second = choice.message.tool_calls
    assert first.name == "get_weather" and json.loads(first.arguments) == {"city": "Paris"}
    assert first.id.startswith("call_") and first.id != second.id


def test_a_full_function_round_trip_is_accepted_by_gemini(gemini, deployment):
    gemini.say(Answer("", tool_calls=[("get_weather", {"city": "Paris"})]), Answer("18C."))
    call = chat(PROVIDER, deployment, ask(Message("user", "?"), tools=[WEATHER])).choices[0].message.tool_calls[0]
    second = chat(
        PROVIDER,
        deployment,
        ask(
            Message("user", "?"),
            Message("assistant", None, [call]),
            Message("tool", "18C", tool_call_id=call.id),
            tools=[WEATHER],
        ),
    )
    assert second.choices[0].message.content == "18C."
    sent = gemini.received[-1].json["contents"][-1]["parts"][0]
    assert sent == {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}}


def test_stream_uses_alt_sse_and_yields_text_finish_and_usage(gemini, deployment):
    gemini.say(Answer("one two three", prompt_tokens=4, completion_tokens=3))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "Count")))
    seen = gemini.received[-1]
    assert seen.path.endswith(":streamGenerateContent") and seen.query == {"alt": ["sse"]}
    assert chunks[0].role == "assistant"
    assert [c.content for c in chunks if c.content] == ["one", " two", " three"]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 3)


def test_streamed_function_call_arrives_as_one_delta_with_id_and_name(gemini, deployment):
    gemini.say(Answer("Checking.", tool_calls=[("get_weather", {"city": "Paris"})]))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "?"), tools=[WEATHER]))
    calls = arguments_of(chunks)
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert text_of(chunks) == "Checking." and chunks[-1].finish_reason == "tool_calls"


def test_error_in_the_stream_raises_upstream_error(gemini, deployment):
    gemini.say(Answer("a b c", error_after=1))
    with pytest.raises(UpstreamError) as caught:
        stream(PROVIDER, deployment, ask(Message("user", "Hi")))
    assert "overloaded" in caught.value.message and caught.value.retryable


def test_google_errors_keep_client_statuses(gemini, deployment):
    gemini.fail_next(400, error_body(400, "Invalid value at 'generation_config.temperature'"))
    with pytest.raises(UpstreamError) as caught:
        chat(PROVIDER, deployment, ask(Message("user", "Hi")))
    assert caught.value.http_status == 400 and "temperature" in caught.value.message


def test_embeddings_use_batch_embed_contents(gemini, deployment):
    result = embed(PROVIDER, deployment, EmbeddingRequest("text-embedding-004", ["hello", "world!"], dimensions=4))
    sent = gemini.received[-1]
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.json["requests"][1] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "world!"}]},
        "outputDimensionality": 4,
    }
    assert len(result.vectors) == 2 and len(result.vectors[0]) == 4 and result.usage.estimated


# -- end to end: the official openai client, the real server, the local Gemini ----------------


@pytest.fixture(scope="module")
def client(upstream, tmp_path_factory):
    with serving(tmp_path_factory.mktemp("gemini"), GOOGLE_API_KEY=KEY, GOOGLE_BASE_URL=upstream.url) as (_, client):
        yield client


def test_openai_client_chats_with_gemini(client, gemini):
    gemini.say(Answer("Hello from Gemini.", prompt_tokens=5, completion_tokens=4))
    response = client.chat.completions.create(model="gemini-1.5-flash", messages=[{"role": "user", "content": "Hi"}])
    assert response.choices[0].message.content == "Hello from Gemini."
    assert response.usage.total_tokens == 9 and response.choices[0].finish_reason == "stop"


def test_cached_content_and_thoughts_become_openai_usage_details(client, gemini):
    gemini.say(
        Answer("Thought about it.", prompt_tokens=1000, completion_tokens=4, cached_tokens=800, reasoning_tokens=30)
    )
    response = client.chat.completions.create(model="gemini-1.5-flash", messages=[{"role": "user", "content": "Hi"}])
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 34, 1034)
    assert usage.prompt_tokens_details.cached_tokens == 800
    assert usage.completion_tokens_details.reasoning_tokens == 30


def test_openai_client_streams_gemini(client, gemini):
    gemini.say(Answer("Streaming from Gemini", prompt_tokens=5, completion_tokens=3))
    chunks = list(
        client.chat.completions.create(
            model="gemini-1.5-flash",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hi"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Streaming from Gemini"
    assert chunks[-1].usage.completion_tokens == 3


def test_tool_calls_work_both_ways_with_gemini(client, gemini):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}]
    gemini.say(Answer("", tool_calls=[("get_weather", {"city": "Paris"})]), Answer("Sunny."))
    messages = [{"role": "user", "content": "Weather?"}]
    first = client.chat.completions.create(model="gemini-1.5-flash", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    second = client.chat.completions.create(model="gemini-1.5-flash", messages=messages, tools=tools)
    assert second.choices[0].message.content == "Sunny."
    assert gemini.received[-1].json["contents"][-1]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"sky": "clear"},
    }


def test_safety_block_is_a_content_filter_finish(client, gemini):
    gemini.say(Answer("", finish="SAFETY"))
    response = client.chat.completions.create(model="gemini-1.5-flash", messages=[{"role": "user", "content": "Hi"}])
    assert response.choices[0].finish_reason == "content_filter"


def test_gemini_rate_limit_is_a_rate_limit_error(client, gemini):
    gemini.fail_next(429, error_body(429, "Resource has been exhausted (e.g. check quota)."))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gemini-1.5-flash", messages=[{"role": "user", "content": "Hi"}])


def test_unsupported_parallel_tool_calls_is_a_bad_request(client, gemini):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gemini-1.5-flash",
            parallel_tool_calls=False,
            messages=[{"role": "user", "content": "Hi"}],
            tools=[{"type": "function", "function": {"name": "f"}}],
        )
    assert caught.value.body["param"] == "parallel_tool_calls"


def test_openai_client_gets_gemini_embeddings(client, gemini):
    result = client.embeddings.create(model="text-embedding-004", input=["one", "two"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == GeminiUpstream.dimensions
    assert result.usage.prompt_tokens > 0
    assert gemini.received[-1].path.endswith(":batchEmbedContents")
