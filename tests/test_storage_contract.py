"""One storage contract, run against both backends (memory and a real JetStream nats-server).

The test process is not monkey-patched: NATS calls wait from the main greenlet, which
also exercises the bridge outside gunicorn.
"""

from __future__ import annotations

import threading

import gevent
import pytest

from cb.errors import Conflict, NotFound
from cb.storage.memory import MemoryStorage
from cb.storage.nats import NatsStorage


@pytest.fixture
def store(connected_storage):
    return connected_storage


def wait_until(predicate, timeout: float = 5.0) -> bool:
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.02)
    return predicate()


# -- key-value -----------------------------------------------------------------------------


def test_connected_after_connect(store):
    assert store.is_connected()


def test_get_of_a_missing_key_is_none(store):
    assert store.get("tokens", "nope") is None


def test_create_then_get_returns_value_and_revision(store):
    revision = store.create("tokens", "t1", {"place": "start", "data": {"n": [1, 2]}})
    entry = store.get("tokens", "t1")
    assert (entry.key, entry.value, entry.revision) == ("t1", {"place": "start", "data": {"n": [1, 2]}}, revision)


def test_create_of_an_existing_key_conflicts(store):
    store.create("tokens", "t1", {"v": 1})
    with pytest.raises(Conflict):
        store.create("tokens", "t1", {"v": 2})
    assert store.get("tokens", "t1").value == {"v": 1}


def test_put_overwrites_and_moves_the_revision_on(store):
    first = store.put("agents", "a", {"v": 1})
    second = store.put("agents", "a", {"v": 2})
    assert second > first
    assert store.get("agents", "a").value == {"v": 2}


def test_update_at_the_current_revision_wins(store):
    revision = store.create("tokens", "t", {"v": 1})
    new_revision = store.update("tokens", "t", {"v": 2}, revision)
    assert new_revision > revision
    assert store.get("tokens", "t").revision == new_revision


def test_update_at_a_stale_revision_conflicts_and_keeps_the_winner(store):
    revision = store.create("tokens", "t", {"v": 1})
    store.update("tokens", "t", {"v": "winner"}, revision)
    with pytest.raises(Conflict):
        store.update("tokens", "t", {"v": "loser"}, revision)
    assert store.get("tokens", "t").value == {"v": "winner"}


def test_update_of_a_missing_key_is_not_found(store):
    with pytest.raises(NotFound):
        store.update("tokens", "ghost", {"v": 1}, 1)


def test_concurrent_updates_of_one_revision_have_exactly_one_winner(store):
    revision = store.create("tokens", "t", {"v": 0})

    def attempt(i):
        try:
            store.update("tokens", "t", {"v": i}, revision)
            return "won"
        except Conflict:
            return "conflict"

    jobs = [gevent.spawn(attempt, i) for i in range(20)]
    gevent.joinall(jobs, raise_error=True)
    outcomes = [job.value for job in jobs]
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 19
    winner = outcomes.index("won")
    assert store.get("tokens", "t").value == {"v": winner}


def test_delete_removes_the_entry(store):
    store.create("tokens", "t", {"v": 1})
    store.delete("tokens", "t")
    assert store.get("tokens", "t") is None
    assert store.list("tokens") == []


def test_delete_of_a_missing_key_is_not_found(store):
    with pytest.raises(NotFound):
        store.delete("tokens", "ghost")


def test_delete_at_a_stale_revision_conflicts(store):
    revision = store.create("tokens", "t", {"v": 1})
    store.update("tokens", "t", {"v": 2}, revision)
    with pytest.raises(Conflict):
        store.delete("tokens", "t", revision)
    assert store.get("tokens", "t").value == {"v": 2}


def test_a_deleted_key_can_be_created_again(store):
    store.create("tokens", "t", {"v": 1})
    store.delete("tokens", "t")
    store.create("tokens", "t", {"v": 2})
    assert store.get("tokens", "t").value == {"v": 2}


def test_deleted_keys_leave_nothing_behind_in_nats(store):
    if not isinstance(store, NatsStorage):
        pytest.skip("memory storage keeps no delete markers")
    for i in range(50):
        store.create("tokens", f"t{i}", {"v": i})
    store.create("tokens", "kept", {"v": "kept"})
    for i in range(50):
        store.delete("tokens", f"t{i}", store.get("tokens", f"t{i}").revision if i % 2 else None)
    tokens = store.status()["stores"]["tokens"]
    assert tokens["messages"] == 1  # only "kept": no marker per deleted key, which would grow for good
    assert [e.key for e in store.list("tokens")] == ["kept"]
    store.create("tokens", "t3", {"v": "again"})
    assert store.get("tokens", "t3").value == {"v": "again"}


def test_list_returns_the_live_entries_of_one_bucket(store):
    for key in ("a", "b", "c"):
        store.put("workflows", key, {"name": key})
    store.put("agents", "x", {"name": "x"})
    store.delete("workflows", "b")
    store.put("workflows", "c", {"name": "c2"})
    listed = {entry.key: entry.value for entry in store.list("workflows")}
    assert listed == {"a": {"name": "a"}, "c": {"name": "c2"}}
    assert store.list("budgets") == []


def test_count_is_the_number_of_live_entries(store):
    assert store.count("workflows") == 0
    for key in ("a", "b", "c"):
        store.create("workflows", key, {"name": key})
    store.put("workflows", "a", {"name": "a2"})  # rewritten: still one entry
    store.delete("workflows", "b")  # deleted: nothing left to count (nats purges the marker)
    store.put("agents", "x", {"name": "x"})
    assert store.count("workflows") == 2 and store.count("agents") == 1


def test_entries_vanish_max_age_after_their_last_write(store):
    store.set_max_age("aging", 0.5)
    store.create("aging", "old", {"v": 1})
    store.put("kept", "k", {"v": 1})  # another bucket: no max age
    assert wait_until(lambda: store.count("aging") == 0, timeout=10)
    assert store.get("aging", "old") is None and store.list("aging") == []
    store.create("aging", "old", {"v": 2})  # the key is free again
    assert store.get("aging", "old").value == {"v": 2}
    assert store.get("kept", "k").value == {"v": 1}


def test_a_rewrite_starts_an_entrys_age_again():
    class Clock:
        now = 100.0

        def __call__(self):
            return self.now

    clock = Clock()
    store = MemoryStorage(clock=clock)
    store.create("aging", "before", {"v": 0})  # stored before the max age was set: ages from then
    store.set_max_age("aging", 10)
    store.create("aging", "a", {"v": 1})
    revision = store.create("aging", "b", {"v": 1})
    clock.now += 6
    store.update("aging", "b", {"v": 2}, revision)
    clock.now += 6  # a, and the entry from before, are 12 s old; b was written 6 s ago
    assert store.get("aging", "a") is None and store.get("aging", "before") is None
    assert store.count("aging") == 1 and [e.key for e in store.list("aging")] == ["b"]
    with pytest.raises(NotFound):
        store.update("aging", "a", {"v": 2}, 1)
    clock.now += 5
    assert store.count("aging") == 0


def test_keys_may_hold_any_characters(store):
    keys = ["openai/gpt-4", "cb:fastest", "with space", "dots.in.key", "ünïcode", "a=3A", "x>y*z"]
    for i, key in enumerate(keys):
        store.create("deployments", key, {"i": i})
    for i, key in enumerate(keys):
        assert store.get("deployments", key).value == {"i": i}
    assert sorted(e.key for e in store.list("deployments")) == sorted(keys)


def test_values_read_are_copies(store):
    store.put("tokens", "t", {"history": []})
    store.get("tokens", "t").value["history"].append("mutated")
    assert store.get("tokens", "t").value == {"history": []}


def test_200_concurrent_greenlets_all_make_progress(store):
    def work(i):
        store.put("counters", f"k{i}", {"i": i})
        return store.get("counters", f"k{i}").value["i"]

    jobs = [gevent.spawn(work, i) for i in range(200)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert [job.value for job in jobs] == list(range(200))


# -- logs -----------------------------------------------------------------------------------


def test_append_returns_increasing_sequences_and_read_returns_records_in_order(store):
    seqs = [store.append("usage", {"n": n}) for n in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert list(store.read("usage")) == [(seq, {"n": n}) for n, seq in enumerate(seqs)]


def test_read_after_a_sequence_returns_only_later_records(store):
    seqs = [store.append("events", {"n": n}) for n in range(5)]
    assert [record["n"] for _, record in store.read("events", after=seqs[2])] == [3, 4]
    assert list(store.read("events", after=seqs[-1])) == []


def test_read_of_an_empty_log_yields_nothing(store):
    assert list(store.read("usage")) == []


def test_logs_are_independent(store):
    store.append("usage", {"kind": "usage"})
    store.append("events", {"kind": "event"})
    assert [r["kind"] for _, r in store.read("usage")] == ["usage"]


def test_a_long_log_reads_back_completely(store):
    def write(start):
        for n in range(start, start + 500):
            store.append("usage", {"n": n})

    gevent.joinall([gevent.spawn(write, start) for start in range(0, 3000, 500)], raise_error=True)
    records = list(store.read("usage"))
    assert len(records) == 3000
    assert [seq for seq, _ in records] == sorted(seq for seq, _ in records)
    assert sorted(r["n"] for _, r in records) == list(range(3000))


# -- publish / subscribe --------------------------------------------------------------------


def test_subscribers_see_events_matching_their_wildcards(store):
    seen = {"star": [], "tail": [], "exact": []}
    subs = [
        store.subscribe("events.*.t1", lambda s, e: seen["star"].append((s, e))),
        store.subscribe("events.>", lambda s, e: seen["tail"].append((s, e))),
        store.subscribe("events.w1.t2", lambda s, e: seen["exact"].append((s, e))),
    ]
    store.publish("events.w1.t1", {"n": 1})
    store.publish("events.w1.t2", {"n": 2})
    store.publish("usage.x", {"n": 3})
    assert wait_until(lambda: len(seen["tail"]) == 2 and seen["star"] and seen["exact"])
    gevent.sleep(0.1)
    assert seen["star"] == [("events.w1.t1", {"n": 1})]
    assert sorted(seen["tail"], key=lambda x: x[1]["n"]) == [("events.w1.t1", {"n": 1}), ("events.w1.t2", {"n": 2})]
    assert seen["exact"] == [("events.w1.t2", {"n": 2})]
    for sub in subs:
        sub.close()


def test_handlers_run_in_greenlets_of_the_subscriber(store):
    threads = []
    sub = store.subscribe("ping", lambda s, e: threads.append(threading.get_ident()))
    store.publish("ping", {})
    assert wait_until(lambda: threads)
    assert threads == [threading.get_ident()]
    sub.close()


def test_a_closed_subscription_receives_nothing_more(store):
    got = []
    sub = store.subscribe("events.>", lambda s, e: got.append(e))
    store.publish("events.a", {"n": 1})
    assert wait_until(lambda: got)
    sub.close()
    store.publish("events.a", {"n": 2})
    gevent.sleep(0.3)
    assert got == [{"n": 1}]
