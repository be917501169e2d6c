"""Hostile input: deep nesting, unknown paths, a stalled upstream stream, WebSocket abuse."""

from __future__ import annotations

import json
import socket
import struct

import pytest
import requests

from tests.upstreams.openai_server import API_KEY, OpenAIUpstream
from tests.ws_client import WsClient

CREATE = 'mutation($d: JSON) { createToken(input: { workflow_id: "document_review", data: $d }) { id } }'


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deep_chat_body_is_a_400_envelope_naming_the_limit(server):
    body = '{"model": "gpt-4", "messages": [], "metadata": ' + nested(100_000) + "}"
    response = requests.post(
        server.openai_url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "MAX_JSON_DEPTH" in error["message"] and error["code"] == "json_too_deep" and "param" in error


def test_deep_graphql_variables_are_bad_request(server):
    body = '{"query": "query { version }", "variables": {"x": ' + nested(5000) + "}}"
    response = requests.post(
        server.graphql_url + "/graphql", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST" and "MAX_JSON_DEPTH" in error["message"]
    get = requests.get(
        server.graphql_url + "/graphql", params={"query": "{ version }", "variables": nested(1000)}, timeout=10
    )
    assert get.status_code == 400 and get.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def test_deep_graphql_document_is_bad_request(server):
    query = 'mutation { createToken(input: { workflow_id: "document_review", data: ' + nested(20_000) + " }) { id } }"
    response = requests.post(server.graphql_url + "/graphql", json={"query": query}, timeout=10)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def test_token_data_past_the_limit_is_refused_and_within_it_reads_back(server):
    refused = server.graphql(CREATE, {"d": json.dumps(json.loads(nested(900)))})  # JSON inside a string
    assert "MAX_JSON_DEPTH" in refused["errors"][0]["message"] and not refused.get("data")
    deep = {"a": json.loads(nested(58))}
    token = server.graphql(CREATE, {"d": deep})["data"]["createToken"]["id"]
    read = server.graphql("query($id: ID!) { token(id: $id) { data } }", {"id": token})
    assert read["data"]["token"]["data"] == deep


def test_graphql_port_answers_errors_in_json(server):
    missing = requests.get(server.graphql_url + "/no/such/path", timeout=10)
    assert missing.status_code == 404 and missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    wrong = requests.put(server.graphql_url + "/graphql", data="{}", timeout=10)
    assert wrong.status_code == 405 and wrong.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


def test_openai_port_answers_errors_in_its_envelope(server):
    missing = requests.get(server.openai_url + "/nope", timeout=10)
    wrong = requests.put(server.openai_url + "/v1/chat/completions", data="{}", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


def test_a_stalled_upstream_stream_ends_with_upstream_timeout(server_factory, upstream):
    api = server_factory(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        SSE_KEEPALIVE_SECONDS="0.1",
        UPSTREAM_STREAM_IDLE_TIMEOUT="1",
    )
    upstream.slow_next(0.0, stall_after_chunks=2)
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        stream=True,
        timeout=30,
        headers={"X-Request-ID": "stalled-1"},
        json={"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    lines = [line.decode() for line in response.iter_lines() if line]
    assert ": keep-alive" in lines  # keep-alives went out while the upstream was silent, and did not reset the clock
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "upstream_timeout"
    assert upstream.wait_for_disconnect(5) is not None  # the upstream connection was closed
    from tests.test_openai_api import wait_for_log

    assert "usage_status=interrupted" in wait_for_log(api, "[stalled-1] POST")


def test_websocket_frame_over_the_limit_is_refused_before_its_payload(server_factory):
    server = server_factory(GRAPHQL_WS_MAX_MESSAGE_BYTES="1000")
    client = WsClient(server)
    client.init()
    sock = client.ws.sock
    # a text frame announcing 50 MB, of which nothing follows: refused from the header alone
    sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 50 * 1024 * 1024) + b"\0\0\0\0")
    assert client.close_code() == 1009


def test_websocket_subscriptions_per_connection_are_bounded(server_factory):
    server = server_factory(GRAPHQL_WS_MAX_SUBSCRIPTIONS="3")
    client = WsClient(server)
    client.init()
    for i in range(4):
        client.subscribe(f"s{i}", 'subscription { workflowEvents(workflow_id: "document_review") { type } }')
    error = client.expect("error", "s3")
    assert "GRAPHQL_WS_MAX_SUBSCRIPTIONS" in error["payload"][0]["message"]
    created = server.graphql(CREATE, {"d": {}})  # another client is served meanwhile
    assert created["data"]["createToken"]["id"]
    assert client.result("s0")["data"]["workflowEvents"]["type"]


def test_a_connection_flooding_subscribes_does_not_starve_other_clients(server):
    """The report's flood, 5,000 subscribes on one socket at once: past GRAPHQL_WS_MAX_SUBSCRIPTIONS
    (100) each is refused on its own id, and another client's mutation is served meanwhile."""
    query = 'subscription { workflowEvents(workflow_id: "document_review") { type token_id } }'
    flooder = WsClient(server)
    flooder.init()
    flooder.subscribe("s0", query)
    flooder.wait_ready()  # s0 is live before the event it must receive
    for i in range(1, 5000):
        flooder.subscribe(f"s{i}", query)
    created = server.graphql(CREATE, {"d": {}})["data"]["createToken"]["id"]
    assert "GRAPHQL_WS_MAX_SUBSCRIPTIONS" in flooder.expect("error", "s100")["payload"][0]["message"]
    assert flooder.expect("error", "s4999")
    assert flooder.result("s0")["data"]["workflowEvents"]["token_id"] == created
    assert not [m for m in flooder.pending if m["type"] == "error" and int(m["id"][1:]) < 100]


def test_websocket_connections_per_worker_are_bounded(server_factory):
    server = server_factory(GRAPHQL_WS_MAX_CONNECTIONS="1")
    first = WsClient(server)
    first.init()
    with socket.create_connection(("127.0.0.1", server.graphql_port), timeout=10) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = ""
        while "}" not in answer and (data := sock.recv(65536)):
            answer += data.decode()
    assert answer.startswith("HTTP/1.1 503") and "GRAPHQL_WS_MAX_CONNECTIONS" in answer


def test_deep_websocket_message_is_a_bad_message(server):
    client = WsClient(server)
    client.init()
    client.send('{"type": "ping", "payload": ' + nested(10_000) + "}")
    assert client.close_code() == 4400


def test_a_graphql_document_with_a_lone_surrogate_is_a_bad_request(server):
    for body in (b'{"query": "\\ud800"}', b'{"query": "{ workflows { i\xed\xa0\x80d } }"}'):
        answer = requests.post(
            server.graphql_url + "/graphql", data=body, timeout=10, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
