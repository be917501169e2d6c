"""The workflow engine at scale: listings read only what they answer, are complete while
other workers fire, come in pages, and old stores keep working (real gunicorn, real NATS)."""

from __future__ import annotations

import threading
import uuid

import pytest

from cb.agents.executions import ExecutionStore
from cb.agents.model import COMPLETED, Execution
from cb.events import EventBus
from cb.storage.nats import NatsStorage
from cb.workflow.model import Token
from tests.harness import Server

TOKENS = "query($w: ID, $p: String, $f: Int, $a: ID) { tokens(workflow_id: $w, place: $p, first: $f, after: $a) { id place } }"
CREATE = "mutation($w: ID!) { createToken(input: {workflow_id: $w}) { id } }"
FIRE = 'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "go"}) { id place } }'


def ok(body: dict) -> dict:
    assert "errors" not in body, body["errors"]
    return body["data"]


def line_workflow(server: Server, steps: int = 1) -> str:
    workflow_id = f"line-{uuid.uuid4().hex[:8]}"
    places = [f"p{i}" for i in range(steps + 1)]
    transitions = [
        {"id": "go" if i == 0 else f"go{i}", "name": "go", "from_places": [places[i]], "to_place": places[i + 1]}
        for i in range(steps)
    ]
    query = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { id } }"
    ok(
        server.graphql(
            query,
            {
                "i": {
                    "id": workflow_id,
                    "name": workflow_id,
                    "places": places,
                    "initial_place": "p0",
                    "transitions": transitions,
                }
            },
        )
    )
    return workflow_id


def new_tokens(server: Server, workflow_id: str, count: int) -> list[str]:
    return [ok(server.graphql(CREATE, {"w": workflow_id}))["createToken"]["id"] for _ in range(count)]


@pytest.fixture(scope="module")
def two_workers(request, tmp_path_factory):
    nats = request.getfixturevalue("nats_server")
    prefix = Server.fresh_namespace()
    server = Server(
        tmp_path_factory.mktemp("scale"),
        backend="nats",
        env={"NATS_URL": nats.url, "NATS_PREFIX": prefix, "WEB_CONCURRENCY": "2"},
    )
    server.start()
    yield server
    server.stop()


def test_a_listing_misses_no_token_while_eight_clients_fire_on_two_workers(two_workers):
    server = two_workers
    workflow_id = line_workflow(server)
    tokens = new_tokens(server, workflow_id, 200)
    pending = list(tokens)
    lock = threading.Lock()
    failures: list[str] = []

    def fire() -> None:
        while True:
            with lock:
                if not pending:
                    return
                token_id = pending.pop()
            body = server.graphql(FIRE, {"t": token_id})
            if "errors" in body:
                failures.append(str(body["errors"]))

    firing = [threading.Thread(target=fire) for _ in range(8)]
    for thread in firing:
        thread.start()
    listings = []
    while any(thread.is_alive() for thread in firing):
        listings.append({t["id"] for t in ok(server.graphql(TOKENS, {"w": workflow_id}))["tokens"]})
    for thread in firing:
        thread.join()
    assert failures == []
    assert len(listings) >= 3
    assert [len(set(tokens) - listed) for listed in listings] == [0] * len(listings)
    placed = ok(server.graphql(TOKENS, {"w": workflow_id, "p": "p1"}))["tokens"]
    assert sorted(t["id"] for t in placed) == sorted(tokens)


def test_tokens_come_in_pages_oldest_first(backend, server_factory):
    server = server_factory(backend)
    workflow_id = line_workflow(server)
    tokens = new_tokens(server, workflow_id, 7)
    other = line_workflow(server)
    new_tokens(server, other, 3)
    pages, after = [], None
    while True:
        page = ok(server.graphql(TOKENS, {"w": workflow_id, "f": 3, "a": after}))["tokens"]
        if not page:
            break
        pages.append([t["id"] for t in page])
        after = page[-1]["id"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [t for p in pages for t in p] == tokens
    ok(server.graphql(FIRE, {"t": tokens[0]}))
    assert [t["id"] for t in ok(server.graphql(TOKENS, {"w": workflow_id, "p": "p0", "f": 2}))["tokens"]] == tokens[1:3]
    assert [t["id"] for t in ok(server.graphql(TOKENS, {"w": workflow_id, "p": "p1"}))["tokens"]] == tokens[:1]


def test_a_page_larger_than_the_limit_is_a_clear_error(server):
    body = server.graphql(TOKENS, {"w": "document_review", "f": 5000})
    error = body["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "first must be between 0 and 1000" in error["message"]


def test_tokens_stored_before_the_index_existed_are_listed_after_an_upgrade(nats_server, tmp_path):
    prefix = Server.fresh_namespace()
    old = NatsStorage(nats_server.url, prefix=prefix)  # write tokens exactly as the previous version did
    old.connect()
    try:
        stored = [
            Token(id=str(uuid.uuid4()), workflow_id="document_review", place="draft", data={"n": i}) for i in range(5)
        ]
        for token in stored:
            old.create("tokens", token.id, token.to_dict())
    finally:
        old.close()
    servers = [
        Server(
            tmp_path / f"s{i}",
            backend="nats",
            env={"NATS_URL": nats_server.url, "NATS_PREFIX": prefix, "WEB_CONCURRENCY": "2"},
        )
        for i in range(2)
    ]
    for server in servers:  # two servers (four workers) migrate at once
        (tmp_path / server.workdir.name).mkdir(exist_ok=True)
        server.start(wait=False)
    try:
        for server in servers:
            server.wait_healthy()
        listed = ok(servers[0].graphql(TOKENS, {"w": "document_review", "p": "draft"}))["tokens"]
        assert sorted(t["id"] for t in listed) == sorted(t.id for t in stored)
        moved = ok(
            servers[1].graphql(
                'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }',
                {"t": stored[0].id},
            )
        )
        assert moved["fireTransition"]["place"] == "pending_review"
        assert len(ok(servers[0].graphql(TOKENS, {"w": "document_review", "p": "draft"}))["tokens"]) == 4
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def storage(connected_storage):
    return connected_storage


def finished(store: ExecutionStore, token_id: str, completed_at: str) -> Execution:
    execution = Execution(id=str(uuid.uuid4()), agent_id="a", workflow_id="w", place="p", token_id=token_id)
    assert store.create(execution)
    done = Execution.from_dict(execution.to_dict(), execution.revision)
    done.status, done.completed_at = COMPLETED, completed_at
    done.revision = store.update(execution, done)
    return done


def test_finished_executions_are_deleted_after_their_retention(storage):
    store = ExecutionStore(storage, EventBus(storage))
    store.expire(3600, at=1_767_182_400)  # 2025-12-31T12:00Z: the first pass starts the cursor
    old = finished(store, "t-old", "2025-12-31T20:15:00.000Z")
    recent = finished(store, "t-new", "2026-01-01T05:30:00.000Z")
    running = Execution(id=str(uuid.uuid4()), agent_id="a", workflow_id="w", place="p", token_id="t-run")
    store.create(running)
    assert store.expire(3600, at=1_767_232_800) == 1  # 2026-01-01T02:00Z: old finished over an hour ago
    assert store.list(token_id="t-old") == []
    assert [x.id for x in store.list(token_id="t-new")] == [recent.id]
    assert [x.id for x in store.unfinished()] == [running.id]
    assert old.id not in {x.id for x in store.list()}
    assert store.expire(3600, at=1_767_236_400) == 0  # 03:00: recent is inside its retention
    assert store.expire(3600, at=1_767_250_800) == 1  # 07:00: now it is not
    assert store.list(token_id="t-new") == []
    assert [x.id for x in store.list()] == [running.id]


def test_the_newest_executions_come_with_last_still_oldest_first(storage):
    store = ExecutionStore(storage, EventBus(storage))
    made = []
    for i in range(5):
        execution = Execution(
            id=f"x{i}-{uuid.uuid4().hex[:6]}",
            agent_id="a",
            workflow_id="w",
            place="p",
            token_id=f"t{i % 2}",
            created_at=f"2026-01-01T00:00:0{i}.000Z",
        )
        assert store.create(execution)
        made.append(execution.id)
    assert [x.id for x in store.list(last=2)] == made[3:]
    assert [x.id for x in store.list(token_id="t0", last=2)] == [made[2], made[4]]
    assert [x.id for x in store.list(last=1000)] == made


PLACE_COUNTS = "query($w: ID!) { workflow(id: $w) { place_counts { place tokens } } }"


def test_place_counts_follow_creation_firing_and_deletion(backend, server_factory):
    server = server_factory(backend)
    workflow_id = line_workflow(server, steps=2)
    tokens = new_tokens(server, workflow_id, 4)
    ok(server.graphql(FIRE, {"t": tokens[0]}))
    ok(server.graphql(FIRE, {"t": tokens[1]}))
    ok(server.graphql("mutation($t: ID!) { deleteToken(id: $t) }", {"t": tokens[2]}))
    counts = ok(server.graphql(PLACE_COUNTS, {"w": workflow_id}))["workflow"]["place_counts"]
    assert counts == [{"place": "p0", "tokens": 1}, {"place": "p1", "tokens": 2}, {"place": "p2", "tokens": 0}]


def test_a_workflow_deleted_and_created_again_elsewhere_is_fired_by_its_new_definition(nats_server):
    import time

    import gevent

    from cb.errors import NotFound
    from cb.workflow import Workflow, WorkflowEngine
    from cb.workflow.engine import DEFINITION_SECONDS
    from cb.workflow.model import Transition

    prefix = Server.fresh_namespace()
    here, there = NatsStorage(nats_server.url, prefix=prefix), NatsStorage(nats_server.url, prefix=prefix)
    for storage in (here, there):
        storage.connect()
    try:
        mine, theirs = WorkflowEngine(here, EventBus(here)), WorkflowEngine(there, EventBus(there))

        def define(engine: WorkflowEngine, transition: str, to_place: str) -> None:
            engine.create_workflow(
                Workflow(
                    id="again",
                    name="again",
                    places=("start", to_place),
                    initial_place="start",
                    transitions=(Transition(transition, transition, ("start",), to_place),),
                )
            )

        define(theirs, "go", "done")
        assert mine.fire(mine.create_token("again").id, "go").place == "done"  # this worker keeps the definition
        for token in mine.list_tokens("again"):
            mine.delete_token(token.id)
        theirs.delete_workflow("again")
        define(theirs, "next", "end")
        deadline = time.monotonic() + DEFINITION_SECONDS / 2  # well before a cached copy would expire by itself
        while "again" in mine._definitions and time.monotonic() < deadline:
            gevent.sleep(0.01)  # the other worker's message on its way
        assert mine.fire(mine.create_token("again").id, "next").place == "end"
        with pytest.raises(NotFound):
            mine.fire(mine.create_token("again").id, "go")
    finally:
        here.close()
        there.close()
