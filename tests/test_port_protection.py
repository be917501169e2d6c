"""The GraphQL port's key, CORS on both ports, and request limits (size, messages, slow bodies)."""

from __future__ import annotations

import json
import socket

import pytest
import requests
import websocket

GQL_KEY = "graphql-port-secret-0123456789"


@pytest.fixture
def locked(server_factory):
    return server_factory(GRAPHQL_API_KEY=GQL_KEY)


def test_graphql_without_the_key_is_unauthenticated(locked):
    response = requests.post(locked.graphql_url + "/graphql", json={"query": "{ version }"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    wrong = locked.graphql("{ version }", headers={"Authorization": "Bearer nope"})
    assert wrong["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    by_get = requests.get(locked.graphql_url + "/graphql", params={"query": "{ version }"}, timeout=5)
    assert by_get.status_code == 401


def test_graphql_with_the_key_works(locked):
    result = locked.graphql("{ version }", headers={"Authorization": f"Bearer {GQL_KEY}"})
    assert result["data"]["version"]


def test_graphiql_still_loads(locked):
    for path in ("/", "/graphql"):
        response = requests.get(locked.graphql_url + path, headers={"Accept": "text/html"}, timeout=5)
        assert response.status_code == 200
        assert "text/html" in response.headers["Content-Type"]


def _ws(server, headers=None):
    url = server.graphql_url.replace("http", "ws") + "/ws"
    return websocket.create_connection(url, subprotocols=["graphql-transport-ws"], header=headers or [], timeout=5)


def test_websocket_needs_the_key_in_connection_init(locked):
    ws = _ws(locked)
    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 4403
    ws = _ws(locked)
    ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {GQL_KEY}"}}))
    assert json.loads(ws.recv())["type"] == "connection_ack"
    ws.close()


def test_websocket_accepts_the_authorization_header(locked):
    ws = _ws(locked, [f"Authorization: Bearer {GQL_KEY}"])
    ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(ws.recv())["type"] == "connection_ack"
    ws.close()


def test_openai_port_cors_answers_preflight_for_allowed_origin(server_factory):
    server = server_factory(OPENAI_CORS_ORIGINS="https://app.example.com")
    preflight = requests.options(
        server.openai_url + "/v1/chat/completions",
        timeout=5,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    other = requests.get(server.openai_url + "/v1/models", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_openai_port_cors_default_allows_loopback_origins_and_exposes_rate_headers(server_factory):
    server = server_factory()
    response = requests.get(server.openai_url + "/v1/models", headers={"Origin": "http://127.0.0.1:8080"}, timeout=5)
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
    assert "x-ratelimit-remaining-requests" in exposed
    assert "request-id" in exposed and "x-cb-upstream-request-id" in exposed  # a relayed answer's upstream ids


def test_openai_cors_can_be_disabled(server_factory):
    server = server_factory(OPENAI_CORS_ENABLED="false")
    response = requests.get(server.openai_url + "/v1/models", headers={"Origin": "https://x.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_graphql_port_cors_only_for_configured_origins(server_factory):
    server = server_factory(GRAPHQL_CORS_ORIGINS="http://localhost:5173")
    preflight = requests.options(
        server.graphql_url + "/graphql",
        timeout=5,
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    denied = requests.post(
        server.graphql_url + "/graphql",
        json={"query": "{ version }"},
        timeout=5,
        headers={"Origin": "https://evil.example"},
    )
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_graphql_port_has_no_cors_by_default(server):
    response = requests.post(
        server.graphql_url + "/graphql",
        json={"query": "{ version }"},
        timeout=5,
        headers={"Origin": "http://localhost:5173"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.fixture
def small(server_factory):
    return server_factory(
        MAX_REQUEST_BYTES="2048", MAX_MESSAGES="3", GRAPHQL_MAX_QUERY_BYTES="200", REQUEST_BODY_TIMEOUT="1"
    )


def test_oversized_body_is_413_in_the_envelope(small):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = requests.post(small.openai_url + "/v1/chat/completions", json=body, timeout=5)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_oversized_chunked_body_is_413_too(small):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = requests.post(
        small.openai_url + "/v1/chat/completions",
        data=chunks(),
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_oversized_body_on_graphql_is_a_graphql_error(small):
    response = requests.post(small.graphql_url + "/graphql", json={"query": "{ version }", "x": "y" * 5000}, timeout=5)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"


def test_oversized_graphql_document_is_refused(small):
    query = "{ version " + " ".join("version" for _ in range(40)) + " }"
    response = requests.post(small.graphql_url + "/graphql", json={"query": query}, timeout=5)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_LARGE"


def test_too_many_messages_is_400(small):
    messages = [{"role": "user", "content": "hi"}] * 4
    response = requests.post(
        small.openai_url + "/v1/chat/completions", timeout=5, json={"model": "gpt-4o-mini", "messages": messages}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_messages"
    assert response.json()["error"]["param"] == "messages"


def test_slow_body_is_cut_off_and_does_not_hold_the_worker(small):
    slow = socket.create_connection(("127.0.0.1", small.openai_port), timeout=15)
    slow.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 500\r\n\r\n{"model":'
    )
    # the single worker still serves others while this body trickles
    assert requests.get(small.openai_url + "/health", timeout=5).status_code == 200
    answer = b""
    while chunk := slow.recv(4096):  # the server closes the connection after its answer
        answer += chunk
    slow.close()
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408")
    assert '"code":"request_timeout"' in answer
