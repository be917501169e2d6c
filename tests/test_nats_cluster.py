"""A three-node NATS cluster losing nodes under load: nothing acknowledged is lost, clients see
only 503 / STORAGE_UNAVAILABLE while it fails over, and our server never needs a restart."""

from __future__ import annotations

import threading
import time
from collections import Counter

import openai
import pytest
import requests

from cb.storage.nats import NatsStorage, replica_report
from tests.harness import NatsCluster, Server
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream
from tests.ws_client import WsClient

CREATE = 'mutation { createToken(input: { workflow_id: "document_review" }) { id } }'
FIRE = "mutation($t: ID!, $x: ID!) { fireTransition(input: { token_id: $t, transition_id: $x }) { place } }"
TOKEN = "query($t: ID!) { token(id: $t) { place history { transition } } }"
EVENTS = 'subscription { workflowEvents(workflow_id: "document_review") { type token_id transition } }'
PATH = ("submit", "review", "approve")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nats = NatsCluster(tmp_path_factory.mktemp("cluster"))
    nats.start()
    yield nats
    nats.stop()


class Load:
    """Client threads driving tokens through document_review and chat completions, recording
    what the server acknowledged and every failure it answered."""

    def __init__(self, server: Server):
        self.server = server
        self.stop = threading.Event()
        self.acknowledged: dict[str, list[str]] = {}  # token -> transitions answered with a place
        self.failures: Counter = Counter()  # (port, status, code) of every failed answer
        self.failure_times: list[float] = []
        self.chats_ok = 0
        self.lock = threading.Lock()

    def failed(self, port: str, status: int | str, code: str | None) -> None:
        with self.lock:
            self.failures[(port, status, code)] += 1
            self.failure_times.append(time.monotonic())

    def graphql(self, session: requests.Session, query: str, variables: dict | None = None) -> dict | None:
        try:
            response = session.post(
                self.server.graphql_url + "/graphql", timeout=30, json={"query": query, "variables": variables or {}}
            )
        except requests.RequestException as exc:
            self.failed("graphql", type(exc).__name__, None)
            return None
        body = response.json()
        if body.get("errors"):
            self.failed("graphql", response.status_code, body["errors"][0].get("extensions", {}).get("code"))
            return None
        return body["data"]

    def tokens(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                created = self.graphql(session, CREATE)
                if created is None:
                    continue
                token = created["createToken"]["id"]
                with self.lock:
                    self.acknowledged[token] = []
                for transition in PATH:  # after a failed fire the token is left where it is
                    fired = self.graphql(session, FIRE, {"t": token, "x": transition})
                    if fired is None:
                        break
                    with self.lock:
                        self.acknowledged[token].append(transition)

    def chats(self) -> None:
        client = openai.OpenAI(base_url=self.server.openai_url + "/v1", api_key="unused", max_retries=0, timeout=30)
        while not self.stop.is_set():
            try:
                client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
            except openai.APIStatusError as exc:
                self.failed(
                    "openai", exc.status_code, (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
                )
                continue
            except openai.APIConnectionError as exc:
                self.failed("openai", type(exc).__name__, None)
                continue
            with self.lock:
                self.chats_ok += 1


def analytics(server: Server) -> dict | None:
    """Cost totals, or None while storage is unavailable (a STORAGE_UNAVAILABLE error)."""
    body = server.graphql("{ costAnalytics { total_requests total_cost } }")
    if body.get("errors"):
        assert body["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE", body
        return None
    return body["data"]["costAnalytics"]


def test_existing_streams_with_another_replica_count_are_reported_in_one_line(cluster):
    prefix = Server.fresh_namespace()
    storage = NatsStorage(cluster.url, prefix=prefix, replicas=1)
    storage.connect()
    try:
        storage.put("tokens", "t1", {"n": 1})
    finally:
        storage.close()
    assert replica_report(cluster.url, prefix, 1) is None
    line = replica_report(cluster.url, prefix, 3)
    assert line is not None and "\n" not in line
    assert "NATS_REPLICAS=3" in line and f"KV_{prefix}_tokens has 1" in line


def test_losing_nodes_one_after_another_loses_nothing_acknowledged(tmp_path, cluster):
    with OpenAIUpstream() as upstream:
        server = Server(
            tmp_path,
            backend="nats",
            env={
                "NATS_URL": cluster.url,
                "NATS_REPLICAS": "3",
                "NATS_PREFIX": Server.fresh_namespace(),
                "WEB_CONCURRENCY": "2",
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": upstream.base_url,
            },
        )
        server.start()
        try:
            run_failovers(server, cluster)
        finally:
            server.stop()
        assert "Traceback" not in server.logs()


def run_failovers(server: Server, cluster: NatsCluster) -> None:
    load = Load(server)
    openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused").chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hi"}]
    )
    unit_cost = analytics(server)["total_cost"]
    assert unit_cost > 0
    pids = server.worker_pids()
    assert len(pids) == 2

    ws = WsClient(server)
    ws.init()
    ws.subscribe("events", EVENTS)
    ws.wait_ready()

    threads = [threading.Thread(target=load.tokens) for _ in range(3)] + [threading.Thread(target=load.chats)]
    for thread in threads:
        thread.start()
    health_failures = 0
    try:
        time.sleep(2)
        for _ in range(2):
            victim = cluster.stream_leader(f"KV_{server.env['NATS_PREFIX']}_tokens")
            cluster.kill(victim)
            time.sleep(2)
            cluster.start_node(victim)
            time.sleep(1)
            if requests.get(server.graphql_url + "/health", timeout=5).status_code != 200:
                health_failures += 1
        time.sleep(2)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)

    assert server.proc.poll() is None and server.worker_pids() == pids, "the server or a worker restarted"
    bad = {key: n for key, n in load.failures.items() if key[1] != 503}
    assert not bad, f"failures other than 503: {bad}"
    assert {code for (_port, _status, code) in load.failures} <= {"STORAGE_UNAVAILABLE", "storage_unavailable", None}

    finished = 0
    for token, transitions in load.acknowledged.items():
        body = server.graphql(TOKEN, {"t": token})
        assert body.get("data", {}).get("token") is not None, f"acknowledged token {token} is missing"
        history = [h["transition"] for h in body["data"]["token"]["history"]]
        # a fire that timed out may still have been stored: the history may hold one more
        assert history[: len(transitions)] == transitions and len(history) <= len(transitions) + 1, (token, history)
        finished += len(transitions) == len(PATH)
    assert finished > 0

    # the cluster may still be electing leaders for a few seconds after the last restart (calls
    # answer 503 meanwhile); it serves again by itself, and the ledger writes the usage records
    # it kept during the outage
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)
    recovered_by = time.monotonic() + 60
    while True:
        try:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
            break
        except openai.APIStatusError as exc:
            assert exc.status_code == 503 and time.monotonic() < recovered_by, f"not serving again: {exc}"
            time.sleep(0.5)
    load.chats_ok += 1
    deadline = time.monotonic() + 15
    while True:
        totals = analytics(server) or {"total_requests": 0, "total_cost": 0.0}
        if totals["total_requests"] >= load.chats_ok + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert totals["total_requests"] == load.chats_ok + 1
    assert totals["total_cost"] == pytest.approx(unit_cost * (load.chats_ok + 1))

    events = received_events(ws)
    expected = {(token, "created") for token in load.acknowledged}
    expected |= {(token, t) for token, transitions in load.acknowledged.items() for t in transitions}
    missing = expected - events["seen"]
    assert not missing or events["ended"], f"{len(missing)} events missing and the subscription did not say so"

    spread = (max(load.failure_times) - min(load.failure_times)) if load.failure_times else 0.0
    print(
        f"\ntokens acknowledged: {len(load.acknowledged)} ({finished} finished), chats ok: {load.chats_ok}, "
        f"failures: {dict(load.failures)} over {spread:.1f}s, /health not 200 after a restart: {health_failures}, "
        f"events missing: {len(missing)}, subscription ended: {events['ended']}"
    )


def received_events(ws: WsClient) -> dict:
    """Every (token, transition or 'created') the subscription delivered, and whether it ended."""
    seen: set[tuple[str, str]] = set()
    ended = None
    while True:
        try:
            message = ws._read(2)
        except TimeoutError:
            break
        except Exception as exc:  # the socket closed
            ended = repr(exc)
            break
        if message.get("type") in ("error", "complete"):
            ended = message
            break
        if message.get("type") == "next":
            event = message["payload"]["data"]["workflowEvents"]
            seen.add((event["token_id"], event["transition"] or "created"))
    for message in ws.pending:
        if message.get("type") == "next":
            event = message["payload"]["data"]["workflowEvents"]
            seen.add((event["token_id"], event["transition"] or "created"))
    ws.close()
    return {"seen": seen, "ended": ended}
