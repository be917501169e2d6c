"""OpenAI's Responses API on the gateway (``/v1/responses``), for every provider: the official
``openai`` client against the real server, each provider's local upstream behind it."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.exchange import serving
from tests.upstreams.gemini_server import KEY as GEMINI_KEY
from tests.upstreams.gemini_server import GeminiUpstream
from tests.upstreams.ollama_server import OllamaUpstream
from tests.upstreams.openai_server import API_KEY as OPENAI_KEY
from tests.upstreams.openai_server import REPLY, OpenAIUpstream
from tests.upstreams.script import Answer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
MODELS = ["gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-flash", "llama3.2"]


@pytest.fixture(scope="module")
def upstreams():
    with AnthropicUpstream() as claude, OpenAIUpstream() as gpt, GeminiUpstream() as gemini, OllamaUpstream() as ollama:
        yield {"anthropic": claude, "openai": gpt, "google": gemini, "ollama": ollama}


def chat_only(workdir, upstream: OpenAIUpstream) -> dict:
    """Environment serving gpt-4o-mini from a chat-completions-only deployment (``openai_compatible``),
    so Responses requests for it are translated; an OpenAI deployment gets them as they came
    (tests/test_passthrough.py)."""
    config = workdir / "chat-only.toml"
    config.write_text(
        f'[[deployments]]\nid = "chat-only"\ntype = "openai_compatible"\nbase_url = "{upstream.base_url}"\n'
        'key_variable = "CHAT_ONLY_KEY"\nmodels = ["gpt-4o-mini"]\n'
    )
    return {"CB_CONFIG": str(config), "CHAT_ONLY_KEY": OPENAI_KEY}


@pytest.fixture(scope="module")
def served(upstreams, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("responses")
    env = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": upstreams["anthropic"].url,
        "GOOGLE_API_KEY": GEMINI_KEY,
        "GOOGLE_BASE_URL": upstreams["google"].url,
        "OLLAMA_BASE_URL": upstreams["ollama"].url,
        **chat_only(workdir, upstreams["openai"]),
    }
    with serving(workdir, **env) as (server, client):
        yield server, client


@pytest.fixture
def client(served, upstreams):
    for upstream in upstreams.values():
        upstream.reset()
        if hasattr(upstream, "answers"):
            upstream.answers.clear()
    return served[1]


@pytest.fixture
def gateway(served):
    return served[0]


def say(upstreams, *answers):
    for upstream in upstreams.values():
        if hasattr(upstream, "say"):
            upstream.say(*answers)


# -- non-streamed --------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_provider_answers_a_response(client, upstreams, model):
    say(upstreams, Answer("Hello from a model.", prompt_tokens=9, completion_tokens=4))
    response = client.responses.create(model=model, input="Hi", instructions="Be brief.")
    assert response.object == "response" and response.status == "completed" and response.model == model
    assert response.output[0].type == "message" and response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_instructions_and_input_items_reach_openai_as_chat_messages(client, upstreams):
    response = client.responses.create(
        model="gpt-4o-mini",
        instructions="Be brief.",
        max_output_tokens=40,
        temperature=0.3,
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
    )
    assert response.output_text == REPLY
    sent = upstreams["openai"].chats()[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["max_tokens"] == 40 and sent["temperature"] == 0.3


def test_json_schema_text_format_becomes_the_providers_json_mode(client, upstreams):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.responses.create(
        model="gpt-4o-mini", input="Hi", text={"format": {"type": "json_schema", "name": "answer", "schema": schema}}
    )
    assert upstreams["openai"].chats()[-1].json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }


def test_a_response_is_billed_like_a_chat_completion(client, upstreams, gateway):
    upstreams["anthropic"].say(Answer("Billed.", prompt_tokens=1000, completion_tokens=500))
    client.responses.create(model="claude-3-5-sonnet", input="Hi", extra_headers={"X-CB-Project": "responses-bill"})
    report = gateway.graphql(
        '{ costAnalytics(input: { project_id: "responses-bill" }) { total_requests total_tokens total_cost } }'
    )["data"]["costAnalytics"]
    assert report["total_requests"] == 1 and report["total_tokens"] == 1500 and report["total_cost"] > 0


# -- function calls both ways ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet"])
def test_function_calls_and_their_outputs_round_trip(client, upstreams, model):
    upstreams["anthropic"].say(
        Answer("", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})]), Answer("The tool said: 18C")
    )
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER], store=False)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    second = client.responses.create(
        model=model,
        tools=[WEATHER],
        store=False,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ],
    )
    assert second.output_text == "The tool said: 18C"


def test_a_search_only_request_on_a_model_without_search_is_a_clear_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input="Hi", tools=[{"type": "web_search"}])
    assert "web_search" in caught.value.message and caught.value.body["param"] == "tools"


def test_missing_input_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body={"model": "gpt-4o-mini"}, cast_to=object)
    assert caught.value.body["param"] == "input"


# -- stored responses ----------------------------------------------------------------------------


def test_previous_response_id_continues_a_stored_conversation(client, upstreams):
    upstreams["anthropic"].say(Answer("Nice to meet you, Ada."), Answer("Your name is Ada."))
    first = client.responses.create(model="claude-3-5-sonnet", instructions="Be brief.", input="I am Ada.")
    second = client.responses.create(model="claude-3-5-sonnet", previous_response_id=first.id, input="What is my name?")
    assert second.output_text == "Your name is Ada." and second.previous_response_id == first.id
    sent = upstreams["anthropic"].received[-1].json
    assert "system" not in sent  # instructions are not carried over, as in OpenAI's API
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["text"] == "Nice to meet you, Ada."


def test_a_function_call_output_continues_the_response_that_asked_for_it(client, upstreams):
    first = client.responses.create(model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER])
    call = first.output[-1]
    second = client.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert second.output_text == "The tool said: 18C"
    tail = upstreams["openai"].chats()[-1].json["messages"][-2:]
    assert tail[0]["tool_calls"][0]["id"] == call.call_id and tail[1]["tool_call_id"] == call.call_id


def test_retrieve_and_delete_a_stored_response(client):
    created = client.responses.create(model="gpt-4o-mini", input="Hi")
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o-mini", input="again", previous_response_id=created.id)


def test_store_false_keeps_nothing(client):
    created = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert created.id in caught.value.message


# -- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_provider_streams_typed_events(client, upstreams, model):
    say(upstreams, Answer("streamed from a model", prompt_tokens=8, completion_tokens=4))
    with client.responses.stream(model=model, input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [k for k in kinds if k.endswith(".added")] == ["response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in kinds
    assert {"response.output_text.done", "response.content_part.done", "response.output_item.done"} <= set(kinds)
    assert final.output_text and final.status == "completed" and final.usage.output_tokens > 0


def test_streamed_text_deltas_join_to_the_final_text(client, upstreams):
    upstreams["anthropic"].say(Answer("one two three"))
    stream = client.responses.create(model="claude-3-5-sonnet", input="Count", stream=True)
    events = list(stream)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "one two three" == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet"])
def test_streamed_function_call_arguments_arrive_as_deltas(client, upstreams, model):
    upstreams["anthropic"].say(Answer("", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})]))
    with client.responses.stream(model=model, input="Weather?", tools=[WEATHER]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert json.loads("".join(deltas)) == {"city": "Paris", "unit": "celsius"}
    call = final.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}


def test_a_streamed_response_is_stored_and_can_be_continued(client, upstreams):
    upstreams["anthropic"].say(Answer("Hello Ada."), Answer("Ada."))
    with client.responses.stream(model="claude-3-5-sonnet", input="I am Ada.") as stream:
        final = stream.get_final_response()
    assert client.responses.retrieve(final.id).output_text == "Hello Ada."
    again = client.responses.create(model="claude-3-5-sonnet", previous_response_id=final.id, input="Name?")
    assert again.output_text == "Ada." and len(upstreams["anthropic"].received[-1].json["messages"]) == 3


def test_an_error_mid_stream_is_response_failed(gateway, upstreams):
    upstreams["anthropic"].say(Answer("a b c d", error_after=2))
    with requests.post(
        gateway.openai_url + "/v1/responses",
        stream=True,
        timeout=10,
        json={"model": "claude-3-5-sonnet", "input": "Hi", "stream": True},
    ) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith(b"data:")]
    assert events[-1]["type"] == "response.failed"
    assert "Overloaded" in events[-1]["response"]["error"]["message"]


def test_client_leaving_a_stream_closes_the_upstream(client, upstreams):
    claude = upstreams["anthropic"]
    claude.say(Answer(" ".join(["word"] * 50)))
    claude.slow_next(0.2)
    with client.responses.stream(model="claude-3-5-sonnet", input="Talk") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    assert claude.wait_for_disconnect(5) is not None


def test_responses_of_one_client_key_are_hidden_from_another(server_factory, upstreams, tmp_path):
    server = server_factory(
        **chat_only(tmp_path, upstreams["openai"]),
        OPENAI_API_KEY_REQUIRED="true",
        CB_API_KEYS="key-one-0123456789,key-two-0123456789",
    )
    one = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="key-one-0123456789", max_retries=0)
    two = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="key-two-0123456789", max_retries=0)
    created = one.responses.create(model="gpt-4o-mini", input="Hi")
    assert one.responses.retrieve(created.id).id == created.id
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(created.id)
    one.close()
    two.close()


def test_stored_responses_live_in_nats_for_every_worker(server_factory, upstreams, tmp_path):
    server = server_factory("nats", **chat_only(tmp_path, upstreams["openai"]))
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)
    first = client.responses.create(model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER])
    call = first.output[-1]
    for _ in range(4):  # whichever worker answers, it finds the stored conversation
        again = client.responses.create(
            model="gpt-4o-mini",
            previous_response_id=first.id,
            tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
        )
        assert again.output_text == "The tool said: 18C"
        assert client.responses.retrieve(again.id).previous_response_id == first.id
    client.close()


def test_stored_responses_expire_after_the_retention():
    import time

    from cb.llm.responses_store import ResponseStore
    from cb.llm.types import Message
    from cb.storage.memory import MemoryStorage

    storage = MemoryStorage()
    store = ResponseStore(storage, retention_seconds=3600)
    store.expire()  # sets the cursor at the current hour
    store.save({"id": "resp_old", "output": []}, [Message("user", "Hi")], None)
    assert store.get("resp_old", None) is not None and store.history("resp_old", None)[0].content == "Hi"
    assert store.get("resp_old", "another-key") is None
    assert store.expire(at=time.time() + 3 * 3600) == 1
    assert storage.get("responses", "resp_old") is None
