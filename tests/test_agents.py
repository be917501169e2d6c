"""Agents on workflows, end to end: real gunicorn, a local OpenAI upstream, memory and nats.

A token entering a place with an agent is worked on in the background: the model is
called through the router, its output lands in the token's data, and the workflow moves
on. With nats and two workers every execution runs exactly once, also when a worker is
killed in the middle of one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid

import nats
import pytest
import requests

from tests.harness import Server
from tests.upstreams.base import Fault
from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream
from tests.ws_client import WsClient

BYOK = "sk-agent-own-key-9f8e7d6c5b4a"
SECRET = "test-secret-key-for-agents"

GUIDE_CREATE_AGENT = """
mutation {
  createAgent(input: {
    name: "Content Reviewer"
    description: "Reviews document content"
    llm_provider: {
      provider_type: "openai"
      model: "gpt-4"
      api_key: "your-key"
    }
    system_prompt: "You are a helpful content reviewer."
  }) {
    id
    name
    status
  }
}
"""

CREATE_AGENT = "mutation($i: CreateAgentInput!) { createAgent(input: $i) { id } }"
CONFIGURE = """mutation($i: ConfigurePlaceAgentInput!) {
  configurePlaceAgent(input: $i) { id place output_key auto_transition enabled retry { max_attempts } agent { name } }
}"""
EXECUTIONS = """query($t: ID) { agentExecutions(token_id: $t) {
  id status output error attempts input usage { prompt_tokens completion_tokens total_tokens } cost_usd
  started_at completed_at duration_ms trigger worker place workflow_id agent_id token_id } }"""
TOKEN = "query($t: ID!) { token(id: $t) { place data history { transition } } }"
CREATE_TOKEN = "mutation($i: CreateTokenInput!) { createToken(input: $i) { id place } }"
FIRE = "mutation($t: ID!, $x: ID!) { fireTransition(input: { token_id: $t, transition_id: $x }) { place } }"
FINAL = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")


# -- helpers ----------------------------------------------------------------------------------


def ok(result: dict) -> dict:
    assert "errors" not in result, result
    return result["data"]


def review_workflow(server: Server) -> str:
    """A copy of document_review with one more way out of pending_review (escalate -> rejected)."""
    workflow = "dr_" + uuid.uuid4().hex[:8]
    transitions = [
        {"id": "submit", "from_places": ["draft"], "to_place": "pending_review"},
        {"id": "review", "from_places": ["pending_review"], "to_place": "reviewed"},
        {"id": "escalate", "from_places": ["pending_review"], "to_place": "rejected"},
    ]
    ok(
        server.graphql(
            "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { id } }",
            {
                "i": {
                    "id": workflow,
                    "name": "Review",
                    "places": ["draft", "pending_review", "reviewed", "rejected"],
                    "initial_place": "draft",
                    "transitions": transitions,
                }
            },
        )
    )
    return workflow


def new_agent(server: Server, **fields) -> str:
    spec = {
        "name": "Reviewer",
        "llm_provider": {"provider_type": "openai", "model": "gpt-4"},
        "system_prompt": "You review documents.",
        "user_template": "Review {{data.title}}",
        **fields,
    }
    return ok(server.graphql(CREATE_AGENT, {"i": spec}))["createAgent"]["id"]


def place_agent(server: Server, workflow: str, agent: str, place: str = "pending_review", **fields) -> dict:
    spec = {
        "workflow_id": workflow,
        "place": place,
        "agent_id": agent,
        "output_key": "review",
        "auto_transition": "review",
        "retry": {"max_attempts": 1, "backoff_seconds": 0.05},
        **fields,
    }
    return ok(server.graphql(CONFIGURE, {"i": spec}))["configurePlaceAgent"]


def new_token(server: Server, workflow: str, place: str | None = None, **data) -> str:
    spec = {"workflow_id": workflow, "data": data or {"title": "My Document"}}
    if place:
        spec["place"] = place
    return ok(server.graphql(CREATE_TOKEN, {"i": spec}))["createToken"]["id"]


def executions(server: Server, token: str) -> list[dict]:
    return ok(server.graphql(EXECUTIONS, {"t": token}))["agentExecutions"]


def wait_for(check, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def finished(server: Server, token: str, timeout: float = 15.0) -> dict:
    """The token's one execution, once it has ended."""

    def done():
        found = executions(server, token)
        return found[0] if len(found) == 1 and found[0]["status"] in FINAL else None

    return wait_for(done, timeout)


def token(server: Server, token_id: str) -> dict:
    return ok(server.graphql(TOKEN, {"t": token_id}))["token"]


# -- one memory server for most tests ----------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def memory_server(upstream, tmp_path_factory):
    server = Server(
        tmp_path_factory.mktemp("agents"),
        env={
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
            "RUST_LOG": "debug",
            "BREAKER_FAILURE_THRESHOLD": "100",
            "BREAKER_MIN_REQUESTS": "100",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_upstream(upstream):
    """The shared upstream as new: default reply and key, nothing received, no faults queued."""
    upstream.reset()
    upstream.reply, upstream.api_key = REPLY, API_KEY
    yield upstream
    upstream.faults.clear()


@pytest.fixture
def api(memory_server, fresh_upstream):
    return memory_server


def test_guide_create_agent_mutation_works_verbatim(api):
    created = ok(api.graphql(GUIDE_CREATE_AGENT))["createAgent"]
    assert created["name"] == "Content Reviewer" and created["status"] == "ACTIVE" and created["id"]
    shown = ok(
        api.graphql(
            "query($a: ID!) { agent(id: $a) { description system_prompt "
            "llm_provider { provider_type model base_url has_api_key } } }",
            {"a": created["id"]},
        )
    )
    assert shown["agent"] == {
        "description": "Reviews document content",
        "system_prompt": "You are a helpful content reviewer.",
        "llm_provider": {"provider_type": "openai", "model": "gpt-4", "base_url": None, "has_api_key": True},
    }
    refused = api.graphql("query($a: ID!) { agent(id: $a) { llm_provider { api_key } } }", {"a": created["id"]})
    assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_document_moved_to_pending_review_is_reviewed_by_its_agent(api, upstream):
    agent = new_agent(api)
    configured = place_agent(api, "document_review", agent)
    assert configured["agent"] == {"name": "Reviewer"} and configured["id"] == "document_review:pending_review"
    token_id = new_token(api, "document_review", "draft")
    moved = ok(api.graphql(FIRE, {"t": token_id, "x": "submit"}))
    assert moved["fireTransition"]["place"] == "pending_review"  # the mutation does not wait for the agent

    execution = finished(api, token_id)
    assert execution["status"] == "COMPLETED", execution
    done = token(api, token_id)
    assert done["place"] == "reviewed"
    assert done["data"] == {"title": "My Document", "review": REPLY}
    assert [h["transition"] for h in done["history"]] == ["submit", "review"]
    assert execution["output"] == REPLY and execution["attempts"] == 1 and execution["trigger"] == "place"
    assert execution["input"]["prompt"] == "Review My Document"
    assert execution["usage"]["total_tokens"] > 0 and execution["cost_usd"] > 0
    assert execution["duration_ms"] > 0 and execution["worker"] is None
    sent = upstream.chats()[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "You review documents."},
        {"role": "user", "content": "Review My Document"},
    ]
    assert sent["stream"] is True
    analytics = ok(
        api.graphql('{ costAnalytics(input: { project_id: "document_review" }) { total_requests total_cost } }')
    )
    assert analytics["costAnalytics"]["total_requests"] == 1
    assert analytics["costAnalytics"]["total_cost"] == pytest.approx(execution["cost_usd"])
    assert 'cb_agent_executions_total{status="COMPLETED"} 1.0' in requests.get(api.graphql_url + "/metrics").text
    ok(api.graphql('mutation { removePlaceAgent(workflow_id: "document_review", place: "pending_review") }'))


def test_an_agent_on_todays_model_is_served_and_priced_by_genai_prices(api, upstream):
    from genai_prices import Usage, calc_price

    agent = new_agent(api, llm_provider={"provider_type": "openai", "model": "gpt-5"})
    workflow = review_workflow(api)
    place_agent(api, workflow, agent)
    execution = finished(api, new_token(api, workflow, "pending_review"))
    assert execution["status"] == "COMPLETED", execution
    assert upstream.chats()[-1].json["model"] == "gpt-5"
    usage = execution["usage"]
    priced = calc_price(
        Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]),
        "gpt-5",
        provider_id="openai",
    )
    assert execution["cost_usd"] == pytest.approx(float(priced.total_price), rel=1e-9)


def test_json_output_is_parsed_into_the_token_data(api, upstream):
    upstream.reply = '{"score": 8, "verdict": "approve"}'
    workflow = review_workflow(api)
    place_agent(api, workflow, new_agent(api), parse_json=True)
    token_id = new_token(api, workflow, "pending_review")
    assert finished(api, token_id)["output"] == {"score": 8, "verdict": "approve"}
    assert token(api, token_id)["data"]["review"] == {"score": 8, "verdict": "approve"}


def test_output_that_is_not_json_fails_clearly_and_fires_the_failure_transition(api, upstream):
    upstream.reply = "Looks good to me!"
    workflow = review_workflow(api)
    place_agent(api, workflow, new_agent(api), parse_json=True, failure_transition="escalate")
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert execution["status"] == "FAILED"
    assert "not valid JSON" in execution["error"] and "Looks good to me!" in execution["error"]
    assert token(api, token_id)["place"] == "rejected"


def test_failed_attempts_are_retried_then_failed_with_the_failure_transition(api, upstream):
    upstream.fail_next(500, {"error": {"message": "upstream exploded", "type": "server_error"}}, times=3)
    workflow = review_workflow(api)
    place_agent(
        api, workflow, new_agent(api), failure_transition="escalate", retry={"max_attempts": 3, "backoff_seconds": 0.05}
    )
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert execution["status"] == "FAILED" and execution["attempts"] == 3
    assert "upstream exploded" in execution["error"]
    assert len(upstream.chats()) == 3
    moved = token(api, token_id)
    assert moved["place"] == "rejected" and "review" not in moved["data"]


def test_a_retry_after_one_failure_completes(api, upstream):
    upstream.fail_next(503, {"error": {"message": "overloaded", "type": "server_error"}})
    workflow = review_workflow(api)
    place_agent(api, workflow, new_agent(api), retry={"max_attempts": 3, "backoff_seconds": 0.05})
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert (execution["status"], execution["attempts"]) == ("COMPLETED", 2)
    assert token(api, token_id)["place"] == "reviewed"


def test_a_missing_template_field_fails_without_calling_the_model(api, upstream):
    workflow = review_workflow(api)
    place_agent(
        api,
        workflow,
        new_agent(api, user_template="Check {{metadata.author}}: {{data.body}}"),
        failure_transition="escalate",
        retry={"max_attempts": 3, "backoff_seconds": 0.05},
    )
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert execution["status"] == "FAILED" and execution["attempts"] == 0
    assert "{{metadata.author}}" in execution["error"] and "no field 'author'" in execution["error"]
    assert upstream.chats() == []
    assert token(api, token_id)["place"] == "rejected"


def test_templates_that_could_run_code_are_refused(api):
    for template in ("{{ __import__('os').system('id') }}", "{{data.title", "{{ config.secret }}"):
        result = api.graphql(
            CREATE_AGENT,
            {
                "i": {
                    "name": "x",
                    "user_template": template,
                    "llm_provider": {"provider_type": "openai", "model": "gpt-4"},
                }
            },
        )
        assert result["errors"][0]["extensions"]["code"] == "TEMPLATE_ERROR", template


def test_agent_key_is_sent_upstream_instead_of_the_server_key_and_never_shown(api, upstream):
    upstream.api_key = BYOK  # the upstream now refuses the server's key
    created = api.graphql(
        CREATE_AGENT.replace("{ id }", "{ id llm_provider { has_api_key } }"),
        {
            "i": {
                "name": "Own key",
                "llm_provider": {"provider_type": "openai", "model": "gpt-4", "api_key": BYOK},
                "user_template": "Review {{data.title}}",
            }
        },
    )
    agent = ok(created)["createAgent"]["id"]
    workflow = review_workflow(api)
    place_agent(api, workflow, agent)
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert execution["status"] == "COMPLETED", execution
    assert [r.headers["Authorization"] for r in upstream.chats()] == [f"Bearer {BYOK}"]

    seen = [json.dumps(created)]
    seen.append(
        json.dumps(
            api.graphql(
                "{ agents { id name description status system_prompt user_template "
                "llm_provider { provider_type model base_url has_api_key } } }"
            )
        )
    )
    seen.append(json.dumps(api.graphql(EXECUTIONS, {"t": token_id})))
    seen.append(
        json.dumps(
            api.graphql(
                'mutation($a: ID!) { updateAgent(id: $a, input: { name: "Renamed" }) '
                "{ name llm_provider { has_api_key } } }",
                {"a": agent},
            )
        )
    )
    assert '"has_api_key": true' in seen[-1]
    for text in seen:
        assert BYOK not in text
    assert BYOK not in api.logs()


def test_running_execution_can_be_cancelled(api, upstream):
    upstream.hang_next(20)
    workflow = review_workflow(api)
    place_agent(api, workflow, new_agent(api))
    token_id = new_token(api, workflow, "pending_review")
    running = wait_for(lambda: [x for x in executions(api, token_id) if x["status"] == "RUNNING"])[0]
    wait_for(lambda: upstream.chats())
    cancelled = ok(api.graphql("mutation($x: ID!) { cancelExecution(id: $x) { status } }", {"x": running["id"]}))
    assert cancelled["cancelExecution"]["status"] == "CANCELLED"
    assert upstream.wait_for_disconnect(5) is not None  # the upstream call was stopped
    again = api.graphql("mutation($x: ID!) { cancelExecution(id: $x) { status } }", {"x": running["id"]})
    assert again["errors"][0]["extensions"]["code"] == "EXECUTION_FINISHED"
    time.sleep(0.3)
    assert finished(api, token_id)["status"] == "CANCELLED"
    assert token(api, token_id)["place"] == "pending_review"


def test_an_execution_that_runs_too_long_times_out(api, upstream):
    upstream.hang_next(20)
    workflow = review_workflow(api)
    place_agent(api, workflow, new_agent(api), timeout_seconds=0.5, failure_transition="escalate")
    token_id = new_token(api, workflow, "pending_review")
    execution = finished(api, token_id)
    assert execution["status"] == "TIMEOUT" and "0.5 seconds" in execution["error"]
    assert token(api, token_id)["place"] == "rejected"


def test_output_streams_over_the_subscription_then_the_final_status(api, upstream):
    stream_one_execution(api, upstream)


def stream_one_execution(api: Server, upstream: OpenAIUpstream) -> None:
    upstream.faults.append(Fault(first_chunk_delay=1.0, chunk_delay=0.02))
    workflow = review_workflow(api)
    agent = new_agent(api)
    token_id = new_token(api, workflow, "draft")
    run = ok(
        api.graphql(
            "mutation($a: ID!, $t: ID!) { runAgent(input: { agent_id: $a, token_id: $t, "
            'output_key: "notes" }) { id status trigger } }',
            {"a": agent, "t": token_id},
        )
    )["runAgent"]
    assert run["status"] in ("PENDING", "RUNNING") and run["trigger"] == "manual"
    client = WsClient(api)
    try:
        client.init()
        client.subscribe(
            "s",
            "subscription($x: ID!) { agentExecutionStream(execution_id: $x) "
            "{ execution_id type status delta output error } }",
            {"x": run["id"]},
        )
        client.wait_ready()
        events = []
        while not events or events[-1]["type"] != "STATUS" or events[-1]["status"] not in FINAL:
            events.append(client.result("s", timeout=10)["data"]["agentExecutionStream"])
    finally:
        client.close()
    deltas = [e["delta"] for e in events if e["type"] == "OUTPUT"]
    assert len(deltas) > 5 and "".join(deltas) == REPLY
    assert events[-1] == {
        "execution_id": run["id"],
        "type": "STATUS",
        "status": "COMPLETED",
        "delta": None,
        "output": REPLY,
        "error": None,
    }
    assert token(api, token_id)["data"]["notes"] == REPLY


def test_an_agent_with_its_own_base_url_is_served_there(api, upstream):
    with OpenAIUpstream(api_key=BYOK, reply="From the agent's own endpoint.") as own:
        agent = new_agent(
            api, llm_provider={"provider_type": "openai", "model": "gpt-4", "base_url": own.base_url, "api_key": BYOK}
        )
        workflow = review_workflow(api)
        place_agent(api, workflow, agent)
        token_id = new_token(api, workflow, "pending_review")
        assert finished(api, token_id)["output"] == "From the agent's own endpoint."
        assert len(own.chats()) == 1 and upstream.chats() == []


def test_agents_can_be_updated_disabled_and_deleted(api, upstream):
    agent = new_agent(api)
    updated = ok(
        api.graphql(
            "mutation($a: ID!) { updateAgent(id: $a, input: { status: DISABLED, llm_config: "
            "{ temperature: 0.2, max_tokens: 50 } }) { status llm_config { temperature max_tokens } "
            "llm_provider { model } } }",
            {"a": agent},
        )
    )["updateAgent"]
    assert updated == {
        "status": "DISABLED",
        "llm_config": {"temperature": 0.2, "max_tokens": 50},
        "llm_provider": {"model": "gpt-4"},
    }
    workflow = review_workflow(api)
    place_agent(api, workflow, agent)
    token_id = new_token(api, workflow, "pending_review")
    time.sleep(0.3)
    assert executions(api, token_id) == [] and upstream.chats() == []  # a disabled agent does not run
    refused = api.graphql("mutation($a: ID!) { deleteAgent(id: $a) }", {"a": agent})
    assert refused["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"  # still on a place
    ok(api.graphql('mutation($w: ID!) { removePlaceAgent(workflow_id: $w, place: "pending_review") }', {"w": workflow}))
    assert ok(api.graphql("mutation($a: ID!) { deleteAgent(id: $a) }", {"a": agent}))["deleteAgent"] is True
    gone = api.graphql("query($a: ID!) { agent(id: $a) { id } }", {"a": agent})
    assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_place_agent_names_are_checked(api):
    workflow = review_workflow(api)
    agent = new_agent(api)
    for fields, words in (
        ({"place": "nowhere"}, "not a place"),
        ({"auto_transition": "approve"}, "not a transition"),
        ({"auto_transition": "submit"}, "does not start from"),
        ({"agent_id": "missing"}, "not found"),
    ):
        spec = {"workflow_id": workflow, "place": "pending_review", "agent_id": agent, **fields}
        result = api.graphql(CONFIGURE, {"i": spec})
        assert words in result["errors"][0]["message"], result
    bad = api.graphql(CREATE_AGENT, {"i": {"name": "x", "llm_provider": {"provider_type": "skynet", "model": "m"}}})
    assert bad["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


# -- nats, two workers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(request, upstream, tmp_path_factory):
    nats_server = request.getfixturevalue("nats_server")
    server = Server(
        tmp_path_factory.mktemp("agents-nats"),
        backend="nats",
        env={
            "NATS_URL": nats_server.url,
            "NATS_PREFIX": Server.fresh_namespace(),
            "WEB_CONCURRENCY": "2",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
            "CB_SECRET_KEY": SECRET,
            "AGENT_LEASE_SECONDS": "1.5",
            "AGENT_SWEEP_SECONDS": "0.3",
            "BREAKER_FAILURE_THRESHOLD": "100",
            "BREAKER_MIN_REQUESTS": "100",
        },
    )
    server.start()
    yield server, nats_server
    server.stop()


@pytest.fixture
def nats_api(cluster, fresh_upstream):
    return cluster


def raw_kv_value(url: str, bucket: str, key: str) -> bytes:
    async def read() -> bytes:
        client = await nats.connect(url)
        try:
            kv = await client.jetstream().key_value(bucket)
            return (await kv.get(key)).value
        finally:
            await client.close()

    return asyncio.run(read())


def test_agent_key_is_encrypted_at_rest(nats_api):
    server, nats_server = nats_api
    agent = new_agent(server, llm_provider={"provider_type": "openai", "model": "gpt-4", "api_key": BYOK})
    raw = raw_kv_value(nats_server.url, f"{server.env['NATS_PREFIX']}_agents", agent)
    stored = json.loads(raw)
    assert BYOK.encode() not in raw
    assert stored["llm_provider"]["api_key"].startswith("fernet:")
    assert stored["name"] == "Reviewer"


def test_twenty_tokens_entering_at_once_run_exactly_once_on_two_workers(nats_api, upstream):
    server, _ = nats_api
    workflow = review_workflow(server)
    place_agent(server, workflow, new_agent(server))
    barrier = threading.Barrier(20)
    tokens: list[str] = []

    def enter(i: int) -> None:
        barrier.wait()
        tokens.append(new_token(server, workflow, "pending_review", title=f"doc {i}"))

    threads = [threading.Thread(target=enter, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 20
    reviewed = 'query($w: ID!) { tokens(workflow_id: $w, place: "reviewed") { id } }'
    wait_for(lambda: len(ok(server.graphql(reviewed, {"w": workflow}))["tokens"]) == 20, timeout=30, interval=0.2)
    time.sleep(1.0)  # a few sweeps later, nothing ran again
    assert len(upstream.chats()) == 20
    prompts = sorted(r.json["messages"][-1]["content"] for r in upstream.chats())
    assert prompts == sorted(f"Review doc {i}" for i in range(20))
    for token_id in tokens:
        (execution,) = executions(server, token_id)
        assert (execution["status"], execution["attempts"]) == ("COMPLETED", 1)
        assert [h["transition"] for h in token(server, token_id)["history"]] == ["review"]


def test_an_execution_survives_its_worker_being_killed(nats_api, upstream):
    server, _ = nats_api
    upstream.hang_next(30)  # the first call never answers; the second does
    workflow = review_workflow(server)
    place_agent(server, workflow, new_agent(server), retry={"max_attempts": 1, "backoff_seconds": 0.05})
    token_id = new_token(server, workflow, "pending_review")
    running = wait_for(lambda: [x for x in executions(server, token_id) if x["worker"]])[0]
    wait_for(lambda: upstream.chats())
    pid = int(running["worker"].split(":")[1])
    os.kill(pid, signal.SIGKILL)

    execution = finished(server, token_id, timeout=20)
    assert execution["status"] == "COMPLETED", execution
    assert execution["attempts"] == 2 and execution["output"] == REPLY
    assert len(upstream.chats()) == 2
    done = token(server, token_id)
    assert done["place"] == "reviewed" and [h["transition"] for h in done["history"]] == ["review"]
    server.wait_healthy()


def test_output_streams_to_a_subscriber_on_any_worker(nats_api, upstream):
    server, _ = nats_api
    stream_one_execution(server, upstream)
