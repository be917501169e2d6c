"""NATS faults with real processes: unreachable at start-up, and an outage while running."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import gevent
import pytest
import requests

from cb.errors import StorageUnavailable
from cb.storage.nats import NatsStorage, probe
from tests.harness import NatsServer, Server, free_port


def poll(predicate, timeout: float = 20.0, interval: float = 0.1):
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (StorageUnavailable, requests.RequestException):
            value = None
        if value:
            return value
        gevent.sleep(interval)
    return None


def health_status(server: Server) -> int:
    return requests.get(server.graphql_url + "/health", timeout=2).status_code


def test_gunicorn_refuses_to_start_when_nats_is_unreachable(tmp_path):
    dead = f"nats://127.0.0.1:{free_port()}"
    server = Server(tmp_path, backend="nats", env={"NATS_URL": dead, "NATS_PREFIX": Server.fresh_namespace()})
    server.start(wait=False)
    try:
        code = server.proc.wait(30)
    finally:
        server.stop()
    output = server.logs()
    assert code != 0
    assert f"Failed to connect to NATS server at {dead}" in output
    assert "Traceback" not in output


def test_probe_tells_a_live_server_from_a_dead_port(nats_server):
    assert probe(nats_server.url) is True
    assert probe(nats_server.url.replace("127.0.0.1", "localhost")) is True
    assert probe(f"nats://127.0.0.1:{free_port()}") is False


def test_connect_to_a_dead_port_raises_storage_unavailable():
    url = f"nats://127.0.0.1:{free_port()}"
    storage = NatsStorage(url, prefix="dead")
    with pytest.raises(StorageUnavailable, match=f"Failed to connect to NATS server at {url}"):
        storage.connect()
    assert not storage.is_connected()


@pytest.fixture
def own_nats(tmp_path):
    """A nats-server of this test alone, so it can be stopped and restarted on the same port."""
    nats = NatsServer(tmp_path / "nats-store")
    nats.start()
    yield nats
    nats.stop()


def test_outage_turns_health_to_503_and_recovery_needs_no_restart(tmp_path, own_nats, server_factory):
    prefix = Server.fresh_namespace()
    server = server_factory("nats", NATS_URL=own_nats.url, NATS_PREFIX=prefix, WEB_CONCURRENCY=2)
    assert health_status(server) == 200

    storage = NatsStorage(own_nats.url, prefix=prefix)
    storage.connect()
    try:
        revision = storage.create("workflows", "wf-1", {"name": "before the outage"})
        storage.append("usage", {"tokens": 42})
        events = []
        storage.subscribe("events.>", lambda subject, event: events.append(event))

        own_nats.stop()
        assert poll(lambda: health_status(server) == 503), server.logs()
        assert poll(lambda: not storage.is_connected())
        with pytest.raises(StorageUnavailable):
            storage.get("workflows", "wf-1")
        body = requests.get(server.openai_url + "/health", timeout=2)
        assert body.status_code == 503
        assert body.json()["storage"] == {"backend": "nats", "connected": False}
        during = requests.post(server.graphql_url + "/graphql", json={"query": "{ workflows { id } }"}, timeout=10)
        assert during.status_code == 503
        assert during.json()["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE"

        own_nats.start()  # same port, same store
        assert poll(lambda: health_status(server) == 200), server.logs()
        entry = poll(lambda: storage.get("workflows", "wf-1"))
        assert entry is not None and entry.value == {"name": "before the outage"} and entry.revision == revision
        assert [record for _, record in storage.read("usage")] == [{"tokens": 42}]
        storage.update("workflows", "wf-1", {"name": "after the outage"}, revision)
        after = poll(lambda: server.graphql('{ workflow(id: "document_review") { id places } }')["data"]["workflow"])
        assert after["places"][0] == "draft"  # written at start-up, before the outage

        storage.publish("events.wf-1.t1", {"after": "restart"})
        assert poll(lambda: events) == [{"after": "restart"}]
    finally:
        storage.close()
    assert "Traceback" not in server.logs()


def test_clients_leaving_in_the_middle_of_streams_leave_the_worker_its_storage(server_factory):
    """A stream whose client leaves has its pump stopped wherever it waits, a storage call
    included. That must cost nothing but the stream: before, a stop landing in the bridge's
    liveness check marked the NATS loop stopped and every later call of the worker failed."""
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

    with OpenAIUpstream() as upstream:
        server = server_factory("nats", OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
        address = urlsplit(server.openai_url)
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        for _ in range(150):
            clients = [socket.create_connection((address.hostname, address.port)) for _ in range(64)]
            for client in clients:
                client.sendall(head + body)
            for client in clients:
                client.close()  # gone before, during or after the answer: the server finds out
        answer = requests.post(
            server.openai_url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        logs = server.logs()
        assert "did not answer in time" not in logs and "never awaited" not in logs, logs[-3000:]
