"""MCP sessions in storage, with a clock the test moves: expiry, the bound, and a refresh that
never undoes an end made elsewhere; then the same bound and expiry on a real nats-server,
and ``initialize`` never reading the sessions bucket whole (on either backend)."""

from __future__ import annotations

import gevent
import pytest

from cb.mcp.errors import SessionNotFound, TooManySessions
from cb.mcp.sessions import BUCKET, SessionStore
from cb.storage.memory import MemoryStorage
from cb.storage.nats import NatsStorage
from tests.harness import NoWholeBucketReads, Server


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def storage(clock):
    store = MemoryStorage(clock=clock)  # entries age by the test's clock too
    store.connect()
    return store


@pytest.fixture
def nats_storage(nats_server):
    store = NatsStorage(nats_server.url, prefix=Server.fresh_namespace())
    store.connect()
    yield store
    store.close()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.05)
    return predicate()


def test_a_session_stays_while_used_and_expires_when_idle(storage, clock):
    sessions = SessionStore(storage, max_sessions=10, idle_seconds=100, clock=clock)
    session = sessions.create("2025-11-25", "claude-code", "2.1.332")
    for _ in range(5):  # used every 60 s: 300 s in all, never idle for 100
        clock.now += 60
        assert sessions.get(session.id).actor == "mcp:claude-code"
    clock.now += 101
    with pytest.raises(SessionNotFound):
        sessions.get(session.id)
    assert storage.list(BUCKET) == []  # dropped when found expired


def test_storage_holds_no_usable_session_id(storage, clock):
    session = SessionStore(storage, 10, 100, clock=clock).create("2025-11-25", "codex", "0.171.0")
    [entry] = storage.list(BUCKET)
    assert session.id not in entry.key and session.id not in str(entry.value)


def test_beyond_the_bound_initialize_is_refused_until_one_expires(storage, clock):
    sessions = SessionStore(storage, max_sessions=2, idle_seconds=100, clock=clock)
    sessions.create("2025-11-25", "a", "1")
    clock.now += 50
    kept = sessions.create("2025-11-25", "b", "1")
    with pytest.raises(TooManySessions):
        sessions.create("2025-11-25", "c", "1")
    clock.now += 60  # the first is idle for 110 s now, the second for 60
    sessions.create("2025-11-25", "c", "1")
    assert sessions.get(kept.id).client_name == "b"


def test_a_refresh_racing_an_end_does_not_bring_the_session_back(storage, clock):
    sessions = SessionStore(storage, max_sessions=10, idle_seconds=100, clock=clock)
    session = sessions.create("2025-11-25", "sdk", "1")
    clock.now += 50  # due for a refresh of its last use
    real_get = storage.get

    def get_then_end_elsewhere(bucket, key):
        entry = real_get(bucket, key)
        storage.delete(bucket, key)  # DELETE /mcp on another worker, between the read and the write
        return entry

    storage.get = get_then_end_elsewhere
    with pytest.raises(SessionNotFound):
        sessions.get(session.id)
    storage.get = real_get
    assert storage.list(BUCKET) == []


def test_initialize_counts_sessions_without_reading_them(storage, clock):
    sessions = SessionStore(NoWholeBucketReads(storage, BUCKET), max_sessions=50, idle_seconds=100, clock=clock)
    for _ in range(50):
        sessions.create("2025-11-25", "sdk", "1")
    with pytest.raises(TooManySessions):
        sessions.create("2025-11-25", "sdk", "1")
    clock.now += 101  # all idle past their time: the store forgot them, nobody listed them
    assert storage.count(BUCKET) == 0
    sessions.create("2025-11-25", "sdk", "1")


def test_an_ended_session_frees_its_place_at_once(storage, clock):
    sessions = SessionStore(NoWholeBucketReads(storage, BUCKET), max_sessions=1, idle_seconds=100, clock=clock)
    first = sessions.create("2025-11-25", "sdk", "1")
    with pytest.raises(TooManySessions):
        sessions.create("2025-11-25", "sdk", "1")
    sessions.end(first.id)
    sessions.create("2025-11-25", "sdk", "1")


def test_on_nats_the_bound_holds_across_processes_and_idle_sessions_vanish(nats_storage, nats_server):
    # a second process's storage on the same NATS and prefix: the bound is one for both
    other = NatsStorage(nats_server.url, prefix=nats_storage.prefix)
    other.connect()
    try:
        here = SessionStore(NoWholeBucketReads(nats_storage, BUCKET), max_sessions=2, idle_seconds=1)
        there = SessionStore(NoWholeBucketReads(other, BUCKET), max_sessions=2, idle_seconds=1)
        first = here.create("2025-11-25", "a", "1")
        there.create("2025-11-25", "b", "1")
        with pytest.raises(TooManySessions):
            here.create("2025-11-25", "c", "1")
        with pytest.raises(TooManySessions):
            there.create("2025-11-25", "c", "1")
        there.end(first.id)  # ended elsewhere: its place is free (the delete marker is purged)
        here.create("2025-11-25", "c", "1")
        with pytest.raises(TooManySessions):
            there.create("2025-11-25", "d", "1")
        # unused for longer than the idle time: NATS itself removes them, and the places free up
        assert wait_until(lambda: nats_storage.count(BUCKET) == 0)
        there.create("2025-11-25", "d", "1")
    finally:
        other.close()


def test_on_nats_a_sessions_bucket_made_without_a_max_age_gets_one(nats_storage, nats_server):
    nats_storage.create(BUCKET, "stored-by-an-older-version", {"last_used_at": 0})
    assert bucket_max_age(nats_storage) == 0  # no max age: kept for good
    for idle_seconds in (30, 45):  # a server started with this version, then with the setting changed
        later = NatsStorage(nats_server.url, prefix=nats_storage.prefix)
        later.connect()
        try:
            SessionStore(later, max_sessions=10, idle_seconds=idle_seconds).create("2025-11-25", "sdk", "1")
            assert bucket_max_age(later) == idle_seconds
        finally:
            later.close()
    assert nats_storage.count(BUCKET) == 3  # changing the max age kept what the bucket held


def bucket_max_age(storage: NatsStorage) -> float:
    async def read():
        return (await storage._js.stream_info(f"KV_{storage.prefix}_{BUCKET}")).config.max_age or 0

    return storage._call(read())
