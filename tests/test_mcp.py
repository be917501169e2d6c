"""The MCP server at /mcp, driven by the official `mcp` Python SDK over Streamable HTTP against a
real gunicorn, and by plain HTTP for what the SDK never sends (bad origins, missing sessions)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import time

import httpx2
import pytest
import requests
from mcp import Client, Implementation
from mcp.client.streamable_http import streamable_http_client

from tests.harness import ROOT, NatsServer, Server
from tests.ws_client import WsClient

TOKEN = "query($t: ID!) { token(id: $t) { place data created_by history { transition actor } } }"
EVENTS = 'subscription { workflowEvents(workflow_id: "document_review") { type token_id to_place actor } }'
JSON_AND_SSE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def sdk(url: str, headers: dict | None = None, transport=None, name: str = "sdk-test") -> Client:
    """The official client over Streamable HTTP (it probes the 2026-07-28 server/discover first
    and falls back to the initialize handshake, as against any handshake-era server)."""
    http = httpx2.AsyncClient(headers=headers or {}, transport=transport, timeout=30)
    return Client(streamable_http_client(url, http_client=http), client_info=Implementation(name=name, version="1"))


def run(coroutine):
    return asyncio.run(coroutine)


def initialize(server: Server, headers: dict | None = None) -> requests.Response:
    return requests.post(server.graphql_url + "/mcp", json=INITIALIZE, headers={**JSON_AND_SSE, **(headers or {})})


def session_headers(server: Server) -> dict:
    answer = initialize(server)
    assert answer.status_code == 200, answer.text
    return {**JSON_AND_SSE, "Mcp-Session-Id": answer.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-06-18"}


def call(server: Server, headers: dict, method: str, params: dict | None = None) -> requests.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    return requests.post(server.graphql_url + "/mcp", json=body, headers=headers)


def test_sdk_lists_tools_creates_a_token_fires_a_transition_and_reads_resources(server):
    async def agent():
        async with sdk(server.graphql_url + "/mcp") as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_info.name == "circuit-breaker"
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            created = await client.call_tool(
                "create_token", {"workflow_id": "document_review", "data": {"title": "Q3 report"}}
            )
            token = created.structured_content
            fired = await client.call_tool("fire_transition", {"token_id": token["id"], "transition_id": "submit"})
            listed = (await client.list_resources()).resources
            definition = await client.read_resource("cb://workflows/document_review")
            diagram = await client.read_resource("cb://workflows/document_review/diagram")
            return tools, created, fired, listed, definition, diagram

    tools, created, fired, listed, definition, diagram = run(agent())

    assert set(tools) == {
        "list_workflows",
        "get_workflow",
        "list_tokens",
        "get_token",
        "create_token",
        "fire_transition",
        "list_agents",
        "cost_analytics",
    }
    read_only = {name for name, tool in tools.items() if tool.annotations.read_only_hint}
    assert read_only == set(tools) - {"create_token", "fire_transition"}
    assert tools["fire_transition"].input_schema["required"] == ["token_id", "transition_id"]
    assert all(len(tool.description) > 80 for tool in tools.values())

    assert not created.is_error
    token = created.structured_content
    assert token["place"] == "draft" and token["created_by"] == "mcp:sdk-test"
    assert [t["id"] for t in token["enabled_transitions"]] == ["submit"]
    assert json.loads(created.content[0].text) == token
    assert not fired.is_error and fired.structured_content["place"] == "pending_review"

    stored = server.graphql(TOKEN, {"t": token["id"]})["data"]["token"]
    assert stored == {
        "place": "pending_review",
        "data": {"title": "Q3 report"},
        "created_by": "mcp:sdk-test",
        "history": [{"transition": "submit", "actor": "mcp:sdk-test"}],
    }

    uris = {str(r.uri) for r in listed}
    assert {"cb://workflows/document_review", "cb://workflows/document_review/diagram"} <= uris
    net = json.loads(definition.contents[0].text)
    assert net["initial_place"] == "draft" and {t["id"] for t in net["transitions"]} >= {"submit", "approve"}
    assert diagram.contents[0].mime_type == "text/vnd.mermaid"
    assert diagram.contents[0].text.startswith("flowchart LR")
    assert '-- "submit" -->' in diagram.contents[0].text


def test_a_transition_that_is_not_enabled_answers_is_error_naming_the_enabled_ones(server):
    async def agent():
        async with sdk(server.graphql_url + "/mcp") as client:
            token = (await client.call_tool("create_token", {"workflow_id": "document_review"})).structured_content
            wrong = await client.call_tool("fire_transition", {"token_id": token["id"], "transition_id": "approve"})
            unknown = await client.call_tool("get_workflow", {"workflow_id": "no_such_flow"})
            bad_place = await client.call_tool("create_token", {"workflow_id": "document_review", "place": "limbo"})
            return token, wrong, unknown, bad_place

    token, wrong, unknown, bad_place = run(agent())
    assert wrong.is_error
    assert "'approve' is not enabled" in wrong.content[0].text
    assert (
        "Enabled transitions for this token in place 'draft': 'submit' (to 'pending_review')" in wrong.content[0].text
    )
    assert unknown.is_error and "'document_review'" in unknown.content[0].text
    assert bad_place.is_error and "draft, pending_review, reviewed" in bad_place.content[0].text
    assert server.graphql(TOKEN, {"t": token["id"]})["data"]["token"]["history"] == []


def test_list_tokens_pages_like_the_graphql_field(server):
    async def agent():
        async with sdk(server.graphql_url + "/mcp") as client:
            for n in range(3):
                await client.call_tool("create_token", {"workflow_id": "software_deployment", "data": {"n": n}})
            first = await client.call_tool("list_tokens", {"workflow_id": "software_deployment", "first": 2})
            after = first.structured_content["next_after"]
            rest = await client.call_tool(
                "list_tokens", {"workflow_id": "software_deployment", "first": 2, "after": after}
            )
            too_many = await client.call_tool("list_tokens", {"workflow_id": "software_deployment", "first": 5000})
            return first.structured_content, rest.structured_content, too_many

    first, rest, too_many = run(agent())
    assert [t["data"]["n"] for t in first["tokens"]] == [0, 1]
    assert [t["data"]["n"] for t in rest["tokens"]] == [2] and rest["next_after"] is None
    assert too_many.is_error and "between 0 and 1000" in too_many.content[0].text


def test_a_graphql_subscription_sees_the_token_an_mcp_client_created(server):
    ws = WsClient(server)
    ws.init()
    ws.subscribe("events", EVENTS)
    ws.wait_ready()

    async def agent():
        async with sdk(server.graphql_url + "/mcp", name="subscriber-test") as client:
            return (await client.call_tool("create_token", {"workflow_id": "document_review"})).structured_content

    token = run(agent())
    event = ws.result("events")["data"]["workflowEvents"]
    ws.close()
    assert event == {
        "type": "token_created",
        "token_id": token["id"],
        "to_place": "draft",
        "actor": "mcp:subscriber-test",
    }


def test_a_session_on_nats_is_served_by_two_workers_in_turn(server_factory, nats_server):
    """Two gunicorn servers (one worker each) on one NATS namespace; every request of the SDK's
    session goes to the other one than the last, so each worker serves the session it did not start."""
    prefix = Server.fresh_namespace()
    first = server_factory("nats", NATS_PREFIX=prefix, WEB_CONCURRENCY="1")
    second = server_factory("nats", NATS_PREFIX=prefix, WEB_CONCURRENCY="1")
    ports = itertools.cycle([first.graphql_port, second.graphql_port])
    served = {first.graphql_port: 0, second.graphql_port: 0}

    class Alternate(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            port = next(ports)
            served[port] += 1
            request.url = request.url.copy_with(port=port)
            return await super().handle_async_request(request)

    ws = WsClient(second)
    ws.init()
    ws.subscribe("events", EVENTS)
    ws.wait_ready(via=first)

    async def agent():
        async with sdk(first.graphql_url + "/mcp", transport=Alternate(), name="cluster-test") as client:
            token = (await client.call_tool("create_token", {"workflow_id": "document_review"})).structured_content
            fired = []
            for transition in ("submit", "review", "approve"):
                result = await client.call_tool(
                    "fire_transition", {"token_id": token["id"], "transition_id": transition}
                )
                fired.append(result.structured_content["place"])
            return token, fired

    token, fired = run(agent())
    assert fired == ["pending_review", "reviewed", "approved"]
    assert min(served.values()) >= 4, served
    for node in (first, second):
        stored = node.graphql(TOKEN, {"t": token["id"]})["data"]["token"]
        assert stored["place"] == "approved"
        assert [h["actor"] for h in stored["history"]] == ["mcp:cluster-test"] * 3
    created = ws.result("events")["data"]["workflowEvents"]
    assert created["token_id"] == token["id"] and created["actor"] == "mcp:cluster-test"
    ws.close()


def test_with_graphql_api_key_mcp_needs_a_bearer_key(server_factory):
    server = server_factory(GRAPHQL_API_KEY="gql-secret-123", CB_API_KEYS="cb-client-key-456")
    missing = initialize(server)
    wrong = initialize(server, {"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert initialize(server, {"Authorization": "Bearer cb-client-key-456"}).status_code == 200

    async def agent():
        async with sdk(server.graphql_url + "/mcp", {"Authorization": "Bearer gql-secret-123"}) as client:
            return await client.call_tool("list_workflows", {})

    listed = run(agent())
    assert {w["id"] for w in listed.structured_content["workflows"]} >= {"document_review", "software_deployment"}


def test_a_foreign_origin_is_refused_and_loopback_ones_are_served(server):
    assert initialize(server, {"Origin": "http://evil.example"}).status_code == 403
    assert initialize(server, {"Origin": "null"}).status_code == 403
    assert initialize(server, {"Origin": "http://localhost:5173"}).status_code == 200
    rebound = requests.post(
        server.graphql_url + "/mcp", json=INITIALIZE, headers={**JSON_AND_SSE, "Host": "evil.example:4000"}
    )
    assert rebound.status_code == 421


def test_sessions_end_with_delete_and_unknown_ones_get_404(server):
    headers = session_headers(server)
    assert call(server, headers, "ping").json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
    no_session = {k: v for k, v in headers.items() if k != "Mcp-Session-Id"}
    assert call(server, no_session, "tools/list").status_code == 400
    assert requests.delete(server.graphql_url + "/mcp", headers=headers).status_code == 204
    gone = call(server, headers, "tools/list")
    assert gone.status_code == 404 and "initialize" in gone.json()["error"]["message"]
    assert requests.delete(server.graphql_url + "/mcp", headers=headers).status_code == 404


def test_versions_are_negotiated_and_checked(server):
    asked_newer = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2099-01-01"}}
    answer = requests.post(server.graphql_url + "/mcp", json=asked_newer, headers=JSON_AND_SSE).json()
    assert answer["result"]["protocolVersion"] == "2025-11-25"
    assert initialize(server).json()["result"]["protocolVersion"] == "2025-06-18"
    headers = session_headers(server)
    wrong = call(server, {**headers, "MCP-Protocol-Version": "1999-01-01"}, "tools/list")
    assert wrong.status_code == 400 and "2025-11-25" in wrong.json()["error"]["message"]
    probe = call(server, JSON_AND_SSE, "server/discover")
    assert probe.json()["error"]["code"] == -32601


def test_answers_as_sse_to_a_client_that_accepts_only_sse(server):
    headers = {**session_headers(server), "Accept": "text/event-stream"}
    answer = call(server, headers, "tools/list")
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    event, data = answer.text.split("\n")[:2]
    assert event == "event: message" and json.loads(data[len("data: ") :])["result"]["tools"]
    notified = requests.post(
        server.graphql_url + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert notified.status_code == 202


def test_the_get_stream_says_when_workflows_change_and_ends_with_the_session(server_factory):
    server = server_factory(SSE_KEEPALIVE_SECONDS="1")
    headers = session_headers(server)
    assert (
        requests.get(server.graphql_url + "/mcp", headers={**headers, "Accept": "application/json"}).status_code == 406
    )
    with requests.get(
        server.graphql_url + "/mcp", headers={**headers, "Accept": "text/event-stream"}, stream=True, timeout=30
    ) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == ": stream open"
        server.graphql(
            'mutation { createWorkflow(input: { id: "announced", name: "Announced", places: ["a"], '
            'initial_place: "a", transitions: [] }) { id } }'
        )
        data = next(line for line in lines if line.startswith("data: "))
        assert json.loads(data[len("data: ") :]) == {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}
        assert requests.delete(server.graphql_url + "/mcp", headers=headers).status_code == 204
        rest = list(lines)  # the stream ends once the server sees the session is gone
    assert set(rest) <= {"", ": keep-alive"}


def test_open_get_streams_per_worker_are_bounded_and_head_opens_none(server_factory):
    server = server_factory(MCP_MAX_SESSIONS="1")
    url, headers = server.graphql_url + "/mcp", {**session_headers(server), "Accept": "text/event-stream"}
    assert requests.head(url, headers=headers, timeout=10).status_code == 200
    with requests.get(url, headers=headers, stream=True, timeout=30) as first:
        assert next(first.iter_lines(decode_unicode=True)) == ": stream open"
        second = requests.get(url, headers=headers, timeout=10)
        assert second.status_code == 503 and "streams" in second.json()["error"]["message"]


def test_bad_bodies_get_json_rpc_errors_not_500(server_factory):
    server = server_factory(MAX_JSON_DEPTH="8", MAX_REQUEST_BYTES="2048")
    headers = session_headers(server)
    url = server.graphql_url + "/mcp"
    broken = requests.post(url, data=b"{not json", headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700
    deep = requests.post(url, data=b'{"a":' * 20 + b"1" + b"}" * 20, headers=headers)
    assert deep.status_code == 400 and "deep" in deep.json()["error"]["message"]
    large = requests.post(url, data=b'{"x": "' + b"a" * 5000 + b'"}', headers=headers)
    assert large.status_code == 413 and large.json()["error"]["message"].startswith("Request body is too large")
    for not_json_text in (b'{"a": NaN}', b'{"a": 1e999}', b'{"a": "\\ud800"}'):
        refused = requests.post(url, data=not_json_text, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32700, not_json_text
    not_rpc = requests.post(url, json={"hello": 1}, headers=headers)
    assert not_rpc.status_code == 400 and not_rpc.json()["error"]["code"] == -32600
    text = requests.post(url, data=b"{}", headers={**headers, "Content-Type": "text/plain"})
    assert text.status_code == 415
    arguments = call(server, headers, "tools/call", {"name": "get_token", "arguments": {"token_id": 5}})
    assert arguments.json()["result"]["isError"] and "must be a JSON string" in arguments.text
    unknown = call(server, headers, "tools/call", {"name": "drop_tables", "arguments": {}})
    assert unknown.json()["error"]["code"] == -32602 and "create_token" in unknown.json()["error"]["message"]
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("backend", ["memory", "nats"])
def test_sessions_are_bounded_and_expire(server_factory, backend):
    server = server_factory(backend, MCP_MAX_SESSIONS="2", MCP_SESSION_IDLE_SECONDS="1")
    kept = session_headers(server)
    ended = session_headers(server)
    full = initialize(server)
    assert full.status_code == 503 and "MCP_MAX_SESSIONS" in full.json()["error"]["message"]
    assert full.headers["Retry-After"]
    assert requests.delete(server.graphql_url + "/mcp", headers=ended).status_code == 204
    session_headers(server)  # an ended session's place is free at once
    assert initialize(server).status_code == 503
    time.sleep(1.5)  # longer than MCP_SESSION_IDLE_SECONDS
    assert call(server, kept, "ping").status_code == 404
    # the expired ones no longer count: at once in memory, once NATS's expiry removed them (moments later)
    deadline = time.monotonic() + 10
    while (answer := initialize(server)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200


@pytest.mark.parametrize("arguments", [{"workflow_id": "document_review", "bogus": 1}, {}])
def test_arguments_outside_the_schema_are_tool_errors(server, arguments):
    headers = session_headers(server)
    answer = call(server, headers, "tools/call", {"name": "create_token", "arguments": arguments}).json()
    assert answer["result"]["isError"]
    assert "argument" in answer["result"]["content"][0]["text"]


def test_null_optional_arguments_and_data_as_a_json_string_are_understood(server):
    headers = session_headers(server)
    arguments = {"workflow_id": "document_review", "place": None, "data": '{"title": "as text"}'}
    answer = call(server, headers, "tools/call", {"name": "create_token", "arguments": arguments}).json()
    token = answer["result"]["structuredContent"]
    assert token["place"] == "draft" and token["data"] == {"title": "as text"}


def test_an_origin_in_graphql_cors_origins_may_use_mcp_and_read_the_session_id(server_factory):
    server = server_factory(GRAPHQL_CORS_ORIGINS="https://app.example.com", GRAPHQL_API_KEY="gql-secret-123")
    origin = {"Origin": "https://app.example.com", "Authorization": "Bearer gql-secret-123"}
    preflight = requests.options(  # a browser's preflight carries no key
        server.graphql_url + "/mcp",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    answer = initialize(server, origin)
    assert answer.status_code == 200
    assert "Mcp-Session-Id" in answer.headers["Access-Control-Expose-Headers"]
    assert initialize(server, {**origin, "Origin": "https://other.example.com"}).status_code == 403


def test_hostile_bodies_get_json_answers_below_500(server):
    """The fuzzer's generators (tests/fuzz_hostile.py) on a tools/call and on its arguments."""
    from tests.fuzz_hostile import check, mutate, raw_json

    headers = session_headers(server)
    rng = random.Random(30)
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_token", "arguments": {}}}
    arguments = {"workflow_id": "document_review", "place": "draft", "data": {"title": "x"}}
    findings = []
    with requests.Session() as session:
        for n in range(600):
            if n % 2:
                kind, data = mutate(message, rng)
            else:
                kind, inner = mutate(arguments, rng)
                data = raw_json({**message, "params": {"name": "create_token", "arguments": "ARGS"}})
                data = data.replace(b'"ARGS"', inner or b"null")
            answer = session.post(server.graphql_url + "/mcp", data=data, headers=headers, timeout=60)
            found = check(answer)
            if found:
                findings.append(f"{kind}: {found} body={data[:200]!r}")
    assert findings == []
    assert requests.get(server.graphql_url + "/health", timeout=10).status_code == 200
    assert "Traceback" not in server.logs()


def test_a_client_name_is_recorded_without_control_characters(server):
    forged = {
        **INITIALIZE,
        "params": {**INITIALIZE["params"], "clientInfo": {"name": "bot\n12:00 INFO forged", "version": "1"}},
    }
    answer = requests.post(server.graphql_url + "/mcp", json=forged, headers=JSON_AND_SSE)
    headers = {**JSON_AND_SSE, "Mcp-Session-Id": answer.headers["Mcp-Session-Id"]}
    created = call(
        server, headers, "tools/call", {"name": "create_token", "arguments": {"workflow_id": "document_review"}}
    )
    assert created.json()["result"]["structuredContent"]["created_by"] == "mcp:bot12:00 INFO forged"
    assert "\n12:00 INFO forged" not in server.logs()


def test_the_readme_python_client_runs_as_written(server, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Agents over MCP", 1)[1].split("\n## ", 1)[0]
    code = section.split("**Python**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_mcp.py"
    script.write_text(code.replace("http://localhost:4000/mcp", server.graphql_url + "/mcp"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pending_review"


def test_with_nats_down_a_session_request_gets_a_json_rpc_503(server_factory, tmp_path):
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    server = server_factory("nats", NATS_URL=nats.url)
    headers = session_headers(server)
    nats.stop()
    answer = call(server, headers, "tools/list")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == -32603
    assert answer.headers["Retry-After"]
