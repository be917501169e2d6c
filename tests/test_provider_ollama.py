"""The Ollama adapter: translation to /api/chat and back (NDJSON streams), embeddings,
model discovery from /api/tags, against a local Ollama speaking the real wire protocol,
then end to end through the server with the official ``openai`` client."""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from cb.config import Settings
from cb.llm.catalog import Catalog
from cb.llm.discovery import ModelDiscovery
from cb.llm.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from cb.llm.providers import PROVIDERS
from cb.llm.providers.base import Deployment
from cb.llm.providers.ollama import OllamaProvider
from cb.llm.transport import Transport
from cb.llm.types import ChatRequest, ContentPart, EmbeddingRequest, Message, Tool, ToolCall
from tests.upstreams.exchange import arguments_of, chat, embed, serving, stream, text_of
from tests.upstreams.ollama_server import OllamaUpstream
from tests.upstreams.script import Answer

PROVIDER = OllamaProvider()
MODEL = "llama3.2"
WEATHER = Tool("get_weather", "Current weather", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture(scope="module")
def upstream():
    with OllamaUpstream() as server:
        yield server


@pytest.fixture
def ollama(upstream):
    upstream.reset()
    upstream.answers.clear()
    upstream.models[:] = ["llama3.2:latest", "nomic-embed-text:latest"]
    return upstream


@pytest.fixture
def deployment(ollama):
    return Deployment("ollama", "ollama", ollama.url, None, "OLLAMA_BASE_URL")


def ask(*messages: Message, **fields) -> ChatRequest:
    return ChatRequest(MODEL, list(messages), **fields)


def body_of(request: ChatRequest) -> dict:
    return PROVIDER.chat_call(Deployment("o", "ollama", "http://x"), request, MODEL).json


# -- request translation ---------------------------------------------------------------


def test_sampling_fields_become_options_and_streaming_is_explicit():
    body = body_of(
        ask(
            Message("user", "Hi"),
            temperature=0.1,
            top_p=0.5,
            max_tokens=20,
            stop=["\n"],
            seed=3,
            presence_penalty=0.2,
            frequency_penalty=0.4,
        )
    )
    assert body["options"] == {
        "temperature": 0.1,
        "top_p": 0.5,
        "num_predict": 20,
        "stop": ["\n"],
        "seed": 3,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.4,
    }
    assert body["stream"] is False  # Ollama would stream by default


def test_response_format_becomes_format():
    assert body_of(ask(Message("user", "Hi"), response_format={"type": "json_object"}))["format"] == "json"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = body_of(
        ask(
            Message("user", "Hi"),
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
    )
    assert body["format"] == schema


def test_inline_images_are_sent_as_base64_and_links_are_refused():
    parts = [ContentPart("text", text="What?"), ContentPart("image_url", image_url="data:image/png;base64,iVBORw0=")]
    assert body_of(ask(Message("user", parts)))["messages"][0] == {
        "role": "user",
        "content": "What?",
        "images": ["iVBORw0="],
    }
    with pytest.raises(InvalidRequest) as caught:
        body_of(ask(Message("user", [ContentPart("image_url", image_url="https://example.com/a.png")])))
    assert caught.value.param == "messages"


def test_tool_calls_send_argument_objects_and_results_name_their_function():
    body = body_of(
        ask(
            Message("user", "?"),
            Message("assistant", None, [ToolCall("call_1", "get_weather", '{"city": "Oslo"}')]),
            Message("tool", "-3C", tool_call_id="call_1"),
            tools=[WEATHER],
        )
    )
    assert body["messages"][1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert body["messages"][2] == {"role": "tool", "content": "-3C", "tool_name": "get_weather"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


def test_tool_choice_none_sends_no_tools():
    assert "tools" not in body_of(ask(Message("user", "Hi"), tools=[WEATHER], tool_choice="none"))


@pytest.mark.parametrize(
    "field, value", [("n", 3), ("logprobs", True), ("parallel_tool_calls", False), ("tool_choice", "required")]
)
def test_fields_ollama_cannot_honour_are_refused_by_name(field, value):
    with pytest.raises(UnsupportedParameter) as caught:
        PROVIDER.check(ask(Message("user", "Hi"), tools=[WEATHER], **{field: value}))
    assert caught.value.param == field


# -- against the local Ollama ------------------------------------------------------------


def test_text_answer_parses_content_usage_and_finish(ollama, deployment):
    ollama.say(Answer("Hei!", prompt_tokens=26, completion_tokens=3))
    response = chat(PROVIDER, deployment, ask(Message("user", "Hallo")))
    assert ollama.received[-1].path == "/api/chat"
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("Hei!", "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (26, 3)


def test_length_done_reason_is_a_length_finish(ollama, deployment):
    ollama.say(Answer("cut", finish="length"))
    assert chat(PROVIDER, deployment, ask(Message("user", "Hi"))).choices[0].finish_reason == "length"


def test_tool_call_answer_becomes_tool_calls_with_ids(ollama, deployment):
    ollama.say(Answer("", tool_calls=[("get_weather", {"city": "Oslo"})]))
    choice = chat(PROVIDER, deployment, ask(Message("user", "?"), tools=[WEATHER])).choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "tool_calls" and call.id.startswith("call_")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}


def test_ndjson_stream_yields_role_text_finish_and_usage(ollama, deployment):
    ollama.say(Answer("one two three", prompt_tokens=7, completion_tokens=3))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "Count")))
    assert ollama.received[-1].json["stream"] is True
    assert chunks[0].role == "assistant"
    assert [c.content for c in chunks if c.content] == ["one", " two", " three"]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 3)


def test_streamed_tool_calls_have_index_id_name_and_arguments(ollama, deployment):
    ollama.say(Answer("", tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "CET"})]))
    chunks = stream(PROVIDER, deployment, ask(Message("user", "?"), tools=[WEATHER]))
    calls = arguments_of(chunks)
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"tz": "CET"} and calls[0]["id"] != calls[1]["id"]
    assert chunks[-1].finish_reason == "tool_calls"


def test_error_object_mid_stream_raises_upstream_error(ollama, deployment):
    ollama.say(Answer("a b c", error_after=1))
    with pytest.raises(UpstreamError) as caught:
        stream(PROVIDER, deployment, ask(Message("user", "Hi")))
    assert "unexpected EOF" in caught.value.message


def test_stream_that_ends_before_done_is_an_error():
    lines = [b'{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":false}']
    with pytest.raises(UpstreamError):
        list(PROVIDER.parse_stream(lines, MODEL))
    assert text_of(list(PROVIDER.parse_stream(lines + [b'{"done":true,"eval_count":1}'], MODEL))) == "Hi"


def test_unknown_model_keeps_ollamas_404_and_message(ollama, deployment):
    with pytest.raises(UpstreamError) as caught:
        chat(PROVIDER, deployment, ask(Message("user", "Hi")), model="mistral")
    assert caught.value.http_status == 404 and "try pulling it first" in caught.value.message


def test_embeddings_use_api_embed_with_counted_usage(ollama, deployment):
    result = embed(PROVIDER, deployment, EmbeddingRequest("nomic-embed-text", ["hello world", "bye"]))
    assert ollama.received[-1].path == "/api/embed"
    assert ollama.received[-1].json == {"model": "nomic-embed-text", "input": ["hello world", "bye"]}
    assert len(result.vectors) == 2 and result.usage.prompt_tokens == 3 and not result.usage.estimated


def test_discovery_registers_pulled_models_in_the_catalog(ollama, deployment):
    catalog = Catalog.default()
    ollama.models.append("qwen2.5:7b")
    transport = Transport(Settings.from_env({}, dotenv=None))
    found = ModelDiscovery(catalog, [deployment], PROVIDERS, transport, 60).refresh()
    assert found["ollama"] == ["llama3.2", "nomic-embed-text", "qwen2.5:7b"]
    qwen = catalog.get("qwen2.5:7b")
    assert (qwen.provider, qwen.context_window, qwen.chat, qwen.priced, qwen.input_price) == (
        "ollama",
        32768,
        True,
        True,
        0.0,
    )  # /api/show's context length; Ollama is free
    assert (catalog.get("nomic-embed-text").chat, catalog.get("nomic-embed-text").embeddings) == (False, True)
    assert {("GET", "/api/tags"), ("POST", "/api/show")} <= {(r.method, r.path) for r in ollama.listings}


def test_discovery_survives_an_unreachable_ollama():
    gone = Deployment("ollama", "ollama", "http://127.0.0.1:9")
    transport = Transport(Settings.from_env({"UPSTREAM_CONNECT_TIMEOUT": "1"}, dotenv=None))
    assert ModelDiscovery(Catalog.default(), [gone], PROVIDERS, transport, 60).refresh() == {}


# -- end to end: the official openai client, the real server, the local Ollama ----------------


@pytest.fixture(scope="module")
def served(upstream, tmp_path_factory):
    with serving(tmp_path_factory.mktemp("ollama"), OLLAMA_BASE_URL=upstream.url, OLLAMA_REFRESH_SECONDS="0.3") as (
        server,
        client,
    ):
        yield server, client


@pytest.fixture
def client(served, ollama):
    return served[1]


def test_openai_client_chats_with_ollama(client, ollama):
    ollama.say(Answer("Hello from Llama.", prompt_tokens=10, completion_tokens=4))
    response = client.chat.completions.create(
        model="llama3.2", temperature=0.2, messages=[{"role": "user", "content": "Hi"}]
    )
    assert response.choices[0].message.content == "Hello from Llama."
    assert response.usage.prompt_tokens == 10 and response.usage.completion_tokens == 4
    assert ollama.chats()[-1].json["options"] == {"temperature": 0.2}


def test_openai_client_streams_ollama(client, ollama):
    ollama.say(Answer("Streaming from Llama", prompt_tokens=10, completion_tokens=3))
    chunks = list(
        client.chat.completions.create(
            model="llama3.2",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hi"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Streaming from Llama"
    assert chunks[-1].usage.completion_tokens == 3


def test_streamed_tool_calls_reach_the_client_from_ollama(client, ollama):
    ollama.say(Answer("", tool_calls=[("get_weather", {"city": "Oslo"})]))
    chunks = list(
        client.chat.completions.create(
            model="llama3.2",
            stream=True,
            messages=[{"role": "user", "content": "?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}],
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_a_model_pulled_while_running_appears_without_a_restart(served, ollama):
    server, client = served
    assert "llama3.2" in [m.id for m in client.models.list()]
    ollama.models.append("qwen2.5:7b")
    deadline = time.monotonic() + 10
    while "qwen2.5:7b" not in [m.id for m in client.models.list()] and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = requests.get(server.openai_url + "/v1/models/qwen2.5:7b", timeout=5).json()
    assert listed["id"] == "qwen2.5:7b" and listed["provider"] == "ollama"
    ollama.say(Answer("Hi from Qwen."))
    answer = client.chat.completions.create(model="qwen2.5:7b", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "Hi from Qwen."
    assert ollama.chats()[-1].json["model"] == "qwen2.5:7b"


def test_model_missing_from_ollama_is_a_not_found_error(client, ollama):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="ollama/mistral", messages=[{"role": "user", "content": "Hi"}])
    assert "Ollama" in caught.value.message


def test_openai_client_gets_ollama_embeddings(client, ollama):
    result = client.embeddings.create(model="nomic-embed-text", input="the quick brown fox")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 6
    assert result.usage.prompt_tokens == 4


def test_chat_model_refuses_embeddings(client, ollama):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="llama3.2", input="hi")
