"""Self-hosted model servers as upstreams: a local vLLM and a local llama.cpp server (each on
its own wire accent, tests/upstreams/selfhosted.py) behind a real gunicorn, used with the
official ``openai`` client. What they list is what is served, routed and priced; their usage
details reach the client and the ledger."""

from __future__ import annotations

import time

import openai
import pytest
import requests

from tests.upstreams.selfhosted import LlamaCppUpstream, VLLMUpstream

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
SYSTEM = "You are a terse assistant for the Circuit Breaker test suite. " * 12  # a long shared prefix


@pytest.fixture
def vllm():
    with VLLMUpstream() as server:
        yield server


@pytest.fixture
def llama_cpp():
    with LlamaCppUpstream(n_ctx=4096, n_ctx_train=8192) as server:
        yield server


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)


def listed(server) -> dict[str, dict]:
    return {m["id"]: m for m in requests.get(server.openai_url + "/v1/models", timeout=5).json()["data"]}


def wait_until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def analytics(server) -> dict:
    answer = server.graphql(
        "{ costAnalytics { total_cost total_requests prompt_tokens cached_tokens unpriced_requests model_breakdown } }"
    )
    assert "errors" not in answer, answer
    return answer["data"]["costAnalytics"]


def conversation(*turns: str) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


# -- discovery and names ----------------------------------------------------------------------


def test_models_are_what_the_vllm_endpoint_lists_under_both_names(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)  # a self-hosted server needs no key
    models = listed(server)
    served = {name for name, m in models.items() if not m.get("virtual")}
    assert served == {LLAMA, f"openai/{LLAMA}"}
    entry = models[f"openai/{LLAMA}"]
    assert entry["context_window"] == 32768  # vLLM's max_model_len
    assert (entry["priced"], entry["input_price_per_million"], entry["output_price_per_million"]) == (False, 0, 0)
    assert {"auto", "cb:cost-optimal"} <= set(models)
    with client_for(server) as client:
        assert client.models.retrieve(f"openai/{LLAMA}").id == f"openai/{LLAMA}"
        assert client.models.retrieve(LLAMA).id == LLAMA
        with pytest.raises(openai.NotFoundError) as missing:
            client.models.retrieve("gpt-4o-mini")
    assert missing.value.code == "model_not_found"


def test_chat_accepts_the_bare_and_the_prefixed_name(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client:
        for name in (LLAMA, f"openai/{LLAMA}"):
            answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
            assert answer.choices[0].message.content == vllm.reply
    assert [c.json["model"] for c in vllm.chats()] == [LLAMA, LLAMA]


def test_the_messages_and_responses_apis_accept_the_bare_and_the_prefixed_name(server_factory, vllm):
    import anthropic

    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    claude_client = anthropic.Anthropic(base_url=server.openai_url, api_key="unused", max_retries=0)
    with client_for(server) as client:
        for name in (LLAMA, f"openai/{LLAMA}"):
            message = claude_client.messages.create(
                model=name, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
            )
            assert message.content[0].text == vllm.reply
            response = client.responses.create(model=name, input="Hi", store=False)
            assert response.output_text == vllm.reply
    assert [c.json["model"] for c in vllm.chats()] == [LLAMA] * 4


def test_embeddings_of_a_listed_embedding_model_under_both_names(server_factory):
    with (
        VLLMUpstream(models={"BAAI/bge-small-en-v1.5": 512}) as vllm,
        client_for(server_factory(OPENAI_BASE_URL=vllm.base_url)) as client,
    ):
        for name in ("BAAI/bge-small-en-v1.5", "openai/BAAI/bge-small-en-v1.5"):
            answer = client.embeddings.create(model=name, input=["a token", "a place"])
            assert len(answer.data) == 2 and answer.data[0].embedding
        assert [r.json["model"] for r in vllm.received] == ["BAAI/bge-small-en-v1.5"] * 2


def test_a_catalog_model_the_endpoint_does_not_list_is_404_and_never_sent(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client, pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.code == "model_not_found" and "has not listed it" in refused.value.message
    assert vllm.chats() == []


def test_an_explicit_unlisted_name_is_sent_as_asked_and_vllms_404_reaches_the_client(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client, pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="openai/mistral-7b", messages=[{"role": "user", "content": "Hi"}])
    assert "The model `mistral-7b` does not exist." in refused.value.message
    assert [c.json["model"] for c in vllm.chats()] == ["mistral-7b"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_responses_request_the_endpoint_cannot_take_natively_is_translated_and_recorded_once(
    server_factory, vllm, stream
):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)  # a fresh worker: it has not learnt vLLM lacks the API
    with client_for(server) as client:
        if stream:
            with client.responses.stream(model=LLAMA, input="Hi", store=False) as events:
                assert events.get_final_response().output_text == vllm.reply
        else:
            assert client.responses.create(model=LLAMA, input="Hi", store=False).output_text == vllm.reply
    assert [r.path for r in vllm.received] == ["/v1/responses", "/v1/chat/completions"]
    report = wait_until(lambda: (r := analytics(server))["prompt_tokens"] and r)
    assert report["total_requests"] == 1  # the translated request; the relay attempt before it is not a request


def test_remote_compaction_at_an_endpoint_without_it_is_a_404_that_says_why(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client, pytest.raises(openai.NotFoundError) as refused:
        client.responses.compact(model=LLAMA, input=[{"role": "user", "content": "hi"}])
    assert refused.value.body["message"] == (
        "/v1/responses/compact is OpenAI's own endpoint, relayed only to OpenAI deployments: its deployment "
        "'openai' has no such endpoint. Compact the conversation locally instead."
    )
    assert [r.path for r in vllm.received] == ["/v1/responses/compact"]
    assert wait_until(lambda: analytics(server)["total_requests"]) == 1


def test_virtual_models_route_only_to_served_models_and_cost_nothing(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client:
        for name in ("auto", "cb:cost-optimal", "cb:fastest"):
            answer = client.chat.completions.with_raw_response.create(
                model=name, messages=[{"role": "user", "content": "Hi"}]
            )
            assert answer.headers["x-cb-model"] == LLAMA
    assert {c.json["model"] for c in vllm.chats()} == {LLAMA}
    report = analytics(server)
    assert (report["total_cost"], report["total_requests"], report["unpriced_requests"]) == (0, 3, 3)
    assert report["model_breakdown"][LLAMA]["priced"] is False


def test_a_model_loaded_later_is_served_after_a_refresh_and_a_failed_refresh_keeps_the_list(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url, OPENAI_MODELS_REFRESH_SECONDS="0.3")
    vllm.models["sql-lora"] = 32768  # vLLM loaded a LoRA adapter
    assert wait_until(lambda: "sql-lora" in listed(server))
    vllm.listing_down = True
    polls = len(vllm.listings)
    assert wait_until(lambda: len(vllm.listings) >= polls + 3)
    assert {LLAMA, "sql-lora"} <= set(listed(server))
    with client_for(server) as client:
        answer = client.chat.completions.create(model="sql-lora", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == vllm.reply
    warnings = [line for line in server.logs().splitlines() if "could not list the models of openai" in line]
    assert len(warnings) == 1 and "keeping its last list" in warnings[0]


# -- usage details and prices -------------------------------------------------------------------


def test_cached_tokens_reach_the_client_in_json_and_streams(server_factory, vllm):
    server = server_factory(OPENAI_BASE_URL=vllm.base_url)
    with client_for(server) as client:
        first = client.chat.completions.create(model=LLAMA, messages=conversation("What is a token?"))
        second = client.chat.completions.create(model=LLAMA, messages=conversation("What is a place?"))
        chunks = list(
            client.chat.completions.create(
                model=LLAMA,
                messages=conversation("And a transition?"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % 16 == 0 and cached < second.usage.prompt_tokens
    streamed = chunks[-1].usage
    assert streamed.prompt_tokens_details.cached_tokens > 0
    report = analytics(server)
    assert report["cached_tokens"] == cached + streamed.prompt_tokens_details.cached_tokens


def test_configured_prices_apply_to_discovered_models_with_their_cached_rate(server_factory, vllm, tmp_path):
    config = tmp_path / "prices.toml"
    config.write_text(f'[prices]\n"{LLAMA}" = {{ input = 1.0, output = 2.0, cached_input = 0.25 }}\n')
    server = server_factory(OPENAI_BASE_URL=vllm.base_url, CB_CONFIG=str(config))
    entry = listed(server)[LLAMA]
    assert (entry["priced"], entry["input_price_per_million"], entry["cached_input_price_per_million"]) == (
        True,
        1.0,
        0.25,
    )
    with client_for(server) as client:
        usages = [
            client.chat.completions.create(model="auto", messages=conversation(q)).usage
            for q in ("What is a token?", "What is a place?")
        ]
    expected = (
        sum(
            (u.prompt_tokens - u.prompt_tokens_details.cached_tokens) * 1.0
            + u.prompt_tokens_details.cached_tokens * 0.25
            + u.completion_tokens * 2.0
            for u in usages
        )
        / 1e6
    )
    report = analytics(server)
    assert usages[1].prompt_tokens_details.cached_tokens > 0
    assert report["total_cost"] == pytest.approx(expected, abs=1e-10)
    assert report["unpriced_requests"] == 0 and report["model_breakdown"][LLAMA]["priced"] is True


def test_a_context_window_no_source_gives_comes_from_the_configuration(server_factory, tmp_path):
    # a server that lists its models without their length (not vLLM's max_model_len), unknown to genai-prices
    with VLLMUpstream(models={"acme-finetune-7b": None, "acme-other-7b": None}) as upstream:
        config = tmp_path / "context.toml"
        config.write_text('[context_windows]\n"acme-finetune-7b" = 32768\n')
        server = server_factory(OPENAI_BASE_URL=upstream.base_url, CB_CONFIG=str(config))
        models = listed(server)
    assert models["acme-finetune-7b"]["context_window"] == 32768
    assert models["acme-other-7b"]["context_window"] == 8192  # nobody says: the default


# -- llama.cpp ------------------------------------------------------------------------------------


def test_llama_cpp_context_is_the_one_it_runs_with_from_props(server_factory, llama_cpp):
    server = server_factory(OPENAI_BASE_URL=llama_cpp.base_url)
    models = listed(server)
    assert models[llama_cpp.alias]["context_window"] == 4096  # /props n_ctx, not meta.n_ctx_train (8192)
    assert models[f"openai/{llama_cpp.alias}"]["priced"] is False
    assert "gpt-4o" not in models


def test_llama_cpp_chats_and_streams_with_cached_tokens_of_its_slot(server_factory, llama_cpp):
    server = server_factory(OPENAI_BASE_URL=llama_cpp.base_url)
    with client_for(server) as client:
        first = client.chat.completions.create(model="auto", messages=conversation("Hello"))
        chunks = list(
            client.chat.completions.create(
                model=f"openai/{llama_cpp.alias}",
                messages=conversation("Hello", first.choices[0].message.content, "Tell me more"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert first.choices[0].message.content == llama_cpp.reply
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == llama_cpp.reply
    usage = chunks[-1].usage
    assert 0 < usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens
    assert [c.json["model"] for c in llama_cpp.chats()] == [llama_cpp.alias, llama_cpp.alias]


def test_a_deployment_added_over_graphql_is_discovered_and_priced(server_factory, llama_cpp):
    server = server_factory(OPENAI_MODELS_REFRESH_SECONDS="0.3")
    added = server.graphql(
        'mutation($url: String, $p: JSON) { configureLlmProvider(input: {id: "laptop", provider_type: '
        '"openai_compatible", base_url: $url, prices: $p}) { id } }',
        {"url": llama_cpp.base_url, "p": {llama_cpp.alias: {"input": 0.1, "output": 0.3}}},
    )
    assert added.get("data", {}).get("configureLlmProvider", {}).get("id") == "laptop", added
    name = f"laptop/{llama_cpp.alias}"
    entry = wait_until(lambda: listed(server).get(name))
    assert entry and (entry["priced"], entry["output_price_per_million"], entry["context_window"]) == (True, 0.3, 4096)
    with client_for(server) as client:
        answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == llama_cpp.reply
    report = analytics(server)
    assert report["total_cost"] > 0 and report["unpriced_requests"] == 0
