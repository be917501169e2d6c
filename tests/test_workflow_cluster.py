"""Workflows shared across workers and restarts: NATS storage, several gunicorn processes."""

from __future__ import annotations

import threading
from collections import Counter

import requests

from tests.harness import Server
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, WsClient

FIRE = """
mutation($t: ID!, $x: ID!) { fireTransition(input: { token_id: $t, transition_id: $x }) { place } }
"""


def token_in_reviewed(server: Server) -> str:
    token = server.graphql('mutation { createToken(input: { workflow_id: "document_review" }) { id } }')
    token = token["data"]["createToken"]["id"]
    for transition in ("submit", "review"):
        assert "errors" not in server.graphql(FIRE, {"t": token, "x": transition})
    return token


def test_fifty_clients_racing_approve_and_reject_leave_exactly_one_winner(server_factory):
    server = server_factory("nats", WEB_CONCURRENCY="2")
    for _round in range(2):
        token = token_in_reviewed(server)
        barrier = threading.Barrier(50)
        outcomes: list[tuple[str, str]] = []

        def client(i: int, token=token, barrier=barrier, outcomes=outcomes) -> None:
            transition = "approve" if i % 2 else "reject"
            with requests.Session() as session:
                session.post(server.graphql_url + "/health", timeout=10)  # connect before the race
                barrier.wait()
                body = session.post(
                    server.graphql_url + "/graphql",
                    timeout=30,
                    json={"query": FIRE, "variables": {"t": token, "x": transition}},
                ).json()
            if body.get("errors"):
                outcomes.append((transition, body["errors"][0]["extensions"]["code"]))
            else:
                outcomes.append((transition, body["data"]["fireTransition"]["place"]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(outcomes) == 50
        winners = [(t, result) for t, result in outcomes if result in ("approved", "rejected")]
        assert len(winners) == 1, Counter(outcomes)
        losers = Counter(result for _, result in outcomes if result not in ("approved", "rejected"))
        assert set(losers) <= {"CONFLICT", "TRANSITION_NOT_ENABLED"}, losers
        final = server.graphql("query($t: ID!) { token(id: $t) { place history { transition } } }", {"t": token})
        final = final["data"]["token"]
        assert final["place"] == winners[0][1]
        assert [h["transition"] for h in final["history"]] == ["submit", "review", winners[0][0]]


def test_workflows_and_tokens_survive_a_restart(server_factory):
    prefix = Server.fresh_namespace()
    first = server_factory("nats", NATS_PREFIX=prefix)
    first.graphql(
        'mutation { createWorkflow(input: { id: "kept", name: "Kept", places: ["a", "b"], initial_place: "a", '
        'transitions: [{ id: "go", from_places: ["a"], to_place: "b" }] }) { id } }'
    )
    token = first.graphql('mutation { createToken(input: { workflow_id: "kept", data: {n: 1} }) { id } }')
    token = token["data"]["createToken"]["id"]
    first.graphql(FIRE, {"t": token, "x": "go"})
    first.stop()

    second = server_factory("nats", NATS_PREFIX=prefix)
    workflows = second.graphql("{ workflows { id } }")["data"]["workflows"]
    assert sorted(w["id"] for w in workflows) == ["document_review", "kept", "software_deployment"]
    kept = second.graphql("query($t: ID!) { token(id: $t) { place data history { transition } } }", {"t": token})
    assert kept["data"]["token"] == {"place": "b", "data": {"n": 1}, "history": [{"transition": "go"}]}


def test_a_subscriber_on_one_server_sees_transitions_fired_through_another(server_factory):
    prefix = Server.fresh_namespace()
    subscriber_side = server_factory("nats", NATS_PREFIX=prefix, WEB_CONCURRENCY="1")
    firing_side = server_factory("nats", NATS_PREFIX=prefix, WEB_CONCURRENCY="1")
    token = firing_side.graphql('mutation { createToken(input: { workflow_id: "document_review" }) { id } }')
    token = token["data"]["createToken"]["id"]
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        ws = WsClient(subscriber_side, protocol)
        try:
            ws.init()
            ws.subscribe("t", "subscription($t: ID!) { tokenUpdates(token_id: $t) { place } }", {"t": token})
            ws.wait_ready(via=firing_side)
            transition = "submit" if protocol == TRANSPORT_WS else "review"
            assert "errors" not in firing_side.graphql(FIRE, {"t": token, "x": transition})
            place = ws.result("t")["data"]["tokenUpdates"]["place"]
            assert place == ("pending_review" if protocol == TRANSPORT_WS else "reviewed")
        finally:
            ws.close()


def test_several_workers_starting_at_once_store_the_defaults_once(server_factory):
    server = server_factory("nats", WEB_CONCURRENCY="2")
    workflows = server.graphql("{ workflows { id } }")["data"]["workflows"]
    assert sorted(w["id"] for w in workflows) == ["document_review", "software_deployment"]
    assert "Traceback" not in server.logs()
