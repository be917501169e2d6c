"""Subscriptions at /ws on a real gunicorn: both protocols, real clients, both backends."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import requests
import websocket
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from tests.harness import Server
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, WsClient

TOKEN_UPDATES = "subscription($t: ID!) { tokenUpdates(token_id: $t) { id place data history { transition } } }"
WORKFLOW_EVENTS = (
    "subscription($w: ID!) { workflowEvents(workflow_id: $w) "
    "{ type workflow_id token_id transition from_place to_place timestamp } }"
)
LOG_FILTER = "info,circuit_breaker::subscriptions=debug"


def start_server(request, tmp_path_factory, backend: str, **env) -> Server:
    env = {"WEB_CONCURRENCY": "1", "RUST_LOG": LOG_FILTER, **env}
    if backend == "nats":
        env.setdefault("NATS_URL", request.getfixturevalue("nats_server").url)
        env.setdefault("NATS_PREFIX", Server.fresh_namespace())
    server = Server(tmp_path_factory.mktemp("subscriptions"), backend=backend, env=env)
    server.start()
    return server


@pytest.fixture(scope="module", params=["memory", "nats"])
def api(request, tmp_path_factory):
    server = start_server(request, tmp_path_factory, request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def memory_api(request, tmp_path_factory):
    server = start_server(request, tmp_path_factory, "memory", GRAPHQL_WS_KEEPALIVE_SECONDS="0.5")
    yield server
    server.stop()


@pytest.fixture
def client(memory_api):
    made = []

    def connect(protocol=TRANSPORT_WS, init=True) -> WsClient:
        c = WsClient(memory_api, protocol)
        made.append(c)
        if init:
            c.init()
        return c

    yield connect
    for c in made:
        c.close()


def new_token(api: Server, workflow: str = "document_review", **fields) -> str:
    result = api.graphql(
        "mutation($i: CreateTokenInput!) { createToken(input: $i) { id } }", {"i": {"workflow_id": workflow, **fields}}
    )
    return result["data"]["createToken"]["id"]


def fire(api: Server, token: str, transition: str) -> dict:
    return api.graphql(
        "mutation($t: ID!, $x: ID!) { fireTransition(input: { token_id: $t, transition_id: $x }) { place } }",
        {"t": token, "x": transition},
    )


def new_workflow(api: Server) -> str:
    workflow = "w_" + uuid.uuid4().hex[:8]
    api.graphql(
        'mutation($w: ID!) { createWorkflow(input: { id: $w, name: "W", places: ["a", "b"], initial_place: "a", '
        'transitions: [{ id: "go", from_places: ["a"], to_place: "b" }] }) { id } }',
        {"w": workflow},
    )
    return workflow


async def live(session, api: Server) -> None:
    """Return once the server has registered this session's earlier subscriptions.

    Subscribes to a probe workflow and creates probe tokens until one event arrives;
    NATS registers one connection's subscriptions in order.
    """
    workflow = await asyncio.to_thread(new_workflow, api)
    probe = session.subscribe(gql(WORKFLOW_EVENTS), variable_values={"w": workflow})
    first = asyncio.ensure_future(probe.__anext__())
    for _ in range(100):
        await asyncio.to_thread(new_token, api, workflow)
        done, _ = await asyncio.wait({first}, timeout=0.2)
        if done:
            await probe.aclose()
            return
    raise TimeoutError("subscriptions never became live")


# --- the two protocols, end to end ---------------------------------------------------


def test_token_updates_reach_a_gql_client_over_graphql_transport_ws(api):
    token = new_token(api, data={"title": "Live"})

    async def scenario():
        transport = WebsocketsTransport(url=f"ws://127.0.0.1:{api.graphql_port}/ws")
        async with Client(transport=transport) as session:
            updates: asyncio.Queue = asyncio.Queue()

            async def consume():
                async for result in session.subscribe(gql(TOKEN_UPDATES), variable_values={"t": token}):
                    await updates.put(result["tokenUpdates"])

            consumer = asyncio.create_task(consume())
            await live(session, api)  # tokenUpdates was subscribed first, so it is live too
            await asyncio.to_thread(fire, api, token, "submit")
            first = await asyncio.wait_for(updates.get(), 10)
            await asyncio.to_thread(fire, api, token, "review")
            second = await asyncio.wait_for(updates.get(), 10)
            consumer.cancel()
            return first, second

    first, second = asyncio.run(scenario())
    assert first == {
        "id": token,
        "place": "pending_review",
        "data": {"title": "Live"},
        "history": [{"transition": "submit"}],
    }
    assert second["place"] == "reviewed"
    assert [h["transition"] for h in second["history"]] == ["submit", "review"]


def test_workflow_events_reach_a_legacy_graphql_ws_client(api):
    workflow = new_workflow(api)
    ws = WsClient(api, LEGACY_WS)
    try:
        assert ws.ws.getsubprotocol() == LEGACY_WS
        ws.init()
        ws.subscribe("events", WORKFLOW_EVENTS, {"w": workflow})
        ws.wait_ready()
        token = new_token(api, workflow)
        created = ws.result("events")["data"]["workflowEvents"]
        assert created["type"] == "token_created" and created["token_id"] == token and created["to_place"] == "a"
        fire(api, token, "go")
        moved = ws.result("events")["data"]["workflowEvents"]
        assert {k: moved[k] for k in ("type", "workflow_id", "token_id", "transition", "from_place", "to_place")} == {
            "type": "token_transitioned",
            "workflow_id": workflow,
            "token_id": token,
            "transition": "go",
            "from_place": "a",
            "to_place": "b",
        }
        assert moved["timestamp"].endswith("Z")
        ws.stop("events")
        assert ws.expect("complete", "events") == {"type": "complete", "id": "events"}
    finally:
        ws.close()


def test_deleting_a_token_is_a_workflow_event(api):
    workflow = new_workflow(api)
    token = new_token(api, workflow)
    ws = WsClient(api, TRANSPORT_WS)
    try:
        ws.init()
        ws.subscribe("events", WORKFLOW_EVENTS, {"w": workflow})
        ws.wait_ready()
        api.graphql("mutation($t: ID!) { deleteToken(id: $t) }", {"t": token})
        event = ws.result("events")["data"]["workflowEvents"]
        assert (event["type"], event["token_id"]) == ("token_deleted", token)
    finally:
        ws.close()


# --- graphql-transport-ws rules -------------------------------------------------------


def test_ping_gets_pong_with_its_payload(client):
    ws = client()
    ws.send({"type": "ping", "payload": {"n": 1}})
    assert ws.expect("pong") == {"type": "pong", "payload": {"n": 1}}
    ws.send({"type": "pong"})  # unsolicited pongs are fine
    ws.send({"type": "ping"})
    assert ws.expect("pong") == {"type": "pong"}


def test_a_query_over_the_socket_gets_next_then_complete(client):
    ws = client()
    ws.subscribe("q", '{ workflow(id: "document_review") { name } }')
    assert ws.result("q") == {"data": {"workflow": {"name": "Document Review Process"}}}
    assert ws.expect("complete", "q") == {"type": "complete", "id": "q"}


def test_an_invalid_document_errors_one_operation_and_spares_the_others(client, memory_api):
    workflow = new_workflow(memory_api)
    ws = client()
    ws.subscribe("good", WORKFLOW_EVENTS, {"w": workflow})
    ws.subscribe("bad", "subscription { nonsense }")
    error = ws.expect("error", "bad")
    assert error["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    ws.subscribe("syntax", "subscription {")
    assert "Syntax Error" in ws.expect("error", "syntax")["payload"][0]["message"]
    ws.subscribe("badarg", 'subscription { workflowEvents(workflow_id: "a.>") { type } }')
    assert ws.expect("error", "badarg")["payload"][0]["extensions"]["code"] == "VALIDATION_ERROR"
    new_token(memory_api, workflow)
    assert ws.result("good")["data"]["workflowEvents"]["type"] == "token_created"


def test_complete_for_an_unknown_id_is_ignored(client, memory_api):
    workflow = new_workflow(memory_api)
    ws = client()
    ws.subscribe("live", WORKFLOW_EVENTS, {"w": workflow})
    ws.stop("never-started")
    ws.send({"type": "ping"})
    ws.expect("pong")
    new_token(memory_api, workflow)
    assert ws.result("live")["data"]["workflowEvents"]["type"] == "token_created"


def test_complete_stops_only_that_subscription(client, memory_api):
    workflow = new_workflow(memory_api)
    ws = client()
    ws.subscribe("one", WORKFLOW_EVENTS, {"w": workflow})
    ws.subscribe("two", WORKFLOW_EVENTS, {"w": workflow})
    ws.stop("one")
    ws.send({"type": "ping"})
    ws.expect("pong")
    new_token(memory_api, workflow)
    assert ws.result("two")["data"]["workflowEvents"]["type"] == "token_created"
    ws.send({"type": "ping"})
    ws.expect("pong")
    assert not [m for m in ws.pending if m.get("id") == "one"]


@pytest.mark.parametrize(
    "messages, code",
    [
        ([{"type": "subscribe", "id": "1", "payload": {"query": "{ version }"}}], 4401),
        (["{not json"], 4400),
        ([{"type": "connection_init"}, {"type": "connection_init"}], 4429),
        ([{"type": "connection_init"}, {"type": "bogus"}], 4400),
        ([{"type": "connection_init"}, {"type": "subscribe", "payload": {"query": "{ version }"}}], 4400),
    ],
)
def test_protocol_violations_close_with_the_specified_code(client, messages, code):
    ws = client(init=False)
    for message in messages:
        ws.send(message)
    assert ws.close_code() == code


def test_a_duplicate_operation_id_closes_with_4409(client):
    ws = client()
    ws.subscribe("same", TOKEN_UPDATES, {"t": "x"})
    ws.subscribe("same", TOKEN_UPDATES, {"t": "x"})
    assert ws.close_code() == 4409


def test_connection_init_must_come_in_time(request, tmp_path_factory):
    server = start_server(request, tmp_path_factory, "memory", GRAPHQL_WS_INIT_TIMEOUT="0.5")
    try:
        assert WsClient(server, TRANSPORT_WS).close_code() == 4408
        late = WsClient(server, TRANSPORT_WS)
        late.init()
        late.send({"type": "ping"})
        assert late.expect("pong", timeout=3) == {"type": "pong"}
        late.close()
    finally:
        server.stop()


def test_no_subprotocol_means_graphql_transport_ws_and_an_unknown_one_is_refused(memory_api):
    plain = WsClient(memory_api, None)
    assert plain.init() == {"type": "connection_ack"}
    plain.close()
    with pytest.raises(websocket.WebSocketException, match="Invalid WebSocket Header"):
        WsClient(memory_api, "mqtt")  # the handshake names no protocol the client asked for


def test_a_disconnect_releases_the_subscriptions(client, memory_api):
    before = memory_api.logs().count("subscription workflowEvents released")
    ws = client()
    ws.subscribe("a", WORKFLOW_EVENTS, {"w": new_workflow(memory_api)})
    ws.subscribe("b", WORKFLOW_EVENTS, {"w": new_workflow(memory_api)})
    ws.send({"type": "ping"})
    ws.expect("pong")
    ws.close()
    for _ in range(50):
        if memory_api.logs().count("subscription workflowEvents released") == before + 2:
            break
        time.sleep(0.1)
    assert memory_api.logs().count("subscription workflowEvents released") == before + 2


def test_a_plain_get_of_ws_is_a_clear_400(memory_api):
    response = requests.get(memory_api.graphql_url + "/ws", timeout=10)
    assert response.status_code == 400


# --- legacy graphql-ws rules ----------------------------------------------------------


def test_legacy_acknowledges_then_keeps_alive(client):
    ws = client(LEGACY_WS, init=False)
    ws.send({"type": "connection_init"})
    assert ws._read(5) == {"type": "connection_ack"}
    assert ws._read(5) == {"type": "ka"}
    assert ws._read(5) == {"type": "ka"}


def test_legacy_bad_messages_get_errors_and_the_socket_stays(client, memory_api):
    workflow = new_workflow(memory_api)
    ws = client(LEGACY_WS)
    ws.subscribe("live", WORKFLOW_EVENTS, {"w": workflow})
    ws.send("{not json")
    assert ws.expect("error")["payload"] == {"message": "Message must be JSON-parseable."}
    ws.send({"type": "bogus", "id": "x"})
    assert ws.expect("error", "x")["payload"] == {"message": "Invalid message type!"}
    ws.subscribe("bad", "subscription { nonsense }")
    bad = ws.expect("error", "bad")["payload"]
    assert "nonsense" in bad["message"] and bad["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    ws.stop("unknown")
    new_token(memory_api, workflow)
    assert ws.result("live")["data"]["workflowEvents"]["type"] == "token_created"


def test_legacy_start_before_init_is_an_error(client):
    ws = client(LEGACY_WS, init=False)
    ws.subscribe("early", "{ version }")
    assert ws.expect("error", "early")["payload"]["message"] == "send connection_init first"


def test_legacy_query_gets_data_then_complete(client):
    ws = client(LEGACY_WS)
    ws.subscribe("q", '{ workflow(id: "software_deployment") { initial_place } }')
    assert ws.result("q") == {"data": {"workflow": {"initial_place": "development"}}}
    assert ws.expect("complete", "q")["id"] == "q"


def test_legacy_connection_terminate_closes(client):
    ws = client(LEGACY_WS)
    ws.send({"type": "connection_terminate"})
    assert ws.close_code() == 1000


# -- a subscriber that falls behind: every event in order, or an end that says how many it missed --


def _blocked_subscription(emitted: list, failures: list):
    """A workflowEvents subscription on a memory bus whose client takes nothing until released."""
    import gevent.event

    from cb.events import EventBus
    from cb.storage.memory import MemoryStorage
    from schema.subscriptions import LiveSubscription, prepare

    bus = EventBus(MemoryStorage())
    released = gevent.event.Event()

    def emit(body):
        released.wait()
        emitted.append(body["data"]["workflowEvents"]["token_id"])

    operation = prepare({"query": WORKFLOW_EVENTS, "variables": {"w": "w1"}})
    live = LiveSubscription(operation, type("Services", (), {"bus": bus})(), emit, failures.append)
    live.start()
    return bus, released, live


def _until(done, seconds: float = 30.0) -> None:
    """Yield to the subscription's greenlets until ``done()`` holds (a loaded machine sends slowly)."""
    import gevent

    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        gevent.sleep(0.01)


def _publish(bus, first: int, count: int) -> None:
    import gevent

    from cb.workflow import event_subject

    for n in range(first, first + count):
        bus.publish(
            event_subject("w1", f"t{n}"),
            {"type": "token_created", "workflow_id": "w1", "token_id": f"t{n}", "timestamp": "2026-01-01T00:00:00Z"},
        )
    gevent.sleep(0.05)  # the bus hands the events over


def test_a_subscriber_that_falls_behind_gets_what_was_queued_in_order_then_an_error_with_the_count():

    from cb import metrics
    from schema.subscriptions import QUEUE_LIMIT

    before = metrics.subscriptions_fell_behind._value.get()
    emitted, failures = [], []
    bus, released, live = _blocked_subscription(emitted, failures)
    _publish(bus, 0, 1)  # the first event is taken and its client blocks
    _publish(bus, 1, QUEUE_LIMIT + 250)
    released.set()
    _until(lambda: failures)  # the error follows the last queued event
    assert emitted == [f"t{n}" for n in range(QUEUE_LIMIT + 1)]  # no gap, no reordering
    assert len(failures) == 1
    [error] = failures[0]
    assert error["extensions"]["code"] == "SUBSCRIPTION_FELL_BEHIND"
    assert "fell behind" in error["message"] and "250 event(s)" in error["message"]
    _publish(bus, 5000, 5)  # ended: nothing more is delivered
    assert len(emitted) == QUEUE_LIMIT + 1 and len(failures) == 1
    assert metrics.subscriptions_fell_behind._value.get() == before + 1
    live.close()


def test_a_subscriber_within_the_queue_gets_every_event_and_no_error():
    import gevent

    from schema.subscriptions import QUEUE_LIMIT

    emitted, failures = [], []
    bus, released, live = _blocked_subscription(emitted, failures)
    _publish(bus, 0, 1)
    _publish(bus, 1, QUEUE_LIMIT)  # exactly fills the queue behind the event being sent
    released.set()
    _until(lambda: len(emitted) == QUEUE_LIMIT + 1)
    gevent.sleep(0.1)  # an error, had there been one, would follow the last event at once
    assert emitted == [f"t{n}" for n in range(QUEUE_LIMIT + 1)] and failures == []
    live.close()
