"""MCP sessions in storage, with a clock the test moves: expiry, the bound, and a refresh that
never undoes an end made elsewhere."""

from __future__ import annotations

import pytest

from cb.mcp.errors import SessionNotFound, TooManySessions
from cb.mcp.sessions import BUCKET, SessionStore
from cb.storage import open_storage


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def storage():
    store = open_storage("memory")
    store.connect()
    return store


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
