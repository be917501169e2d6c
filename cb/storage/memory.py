"""In-process storage: dicts guarded by a lock, events fanned out to greenlets.

State lives in one process, so the server runs one worker with this backend. A bucket with
a max age keeps its keys in order of last write beside it, so the aged ones are dropped from
the front, each once, by the next call that touches the bucket: as NATS does, nobody reads
the whole bucket to expire it.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import NamedTuple

import gevent

from cb.errors import Conflict, NotFound
from cb.logs import get_logger
from cb.storage import Entry, Handler, subject_matches

log = get_logger("storage.memory")

# The in-memory logs keep this many records each; older ones are dropped (documented
# in the README: memory mode is for development; usage that must last needs nats).
LOG_LIMIT = 20_000


_SCALARS = frozenset((str, int, float, bool, type(None)))
_TEXT = frozenset((str,))


def _copy(record: dict) -> dict:
    """A copy the caller may change; log records are mostly flat, so copy deeply only what nests."""
    return {k: copy.deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in record.items()}


class _Stored(NamedTuple):
    text: str  # the value as JSON
    revision: int


class _Sub:
    def __init__(self, owner: MemoryStorage, pattern: str, handler: Handler):
        self.owner, self.pattern, self.handler = owner, pattern, handler

    def close(self) -> None:
        self.owner._subs.discard(self)


class MemoryStorage:
    """The default backend. Values are stored as JSON text and decoded on every read, as a real store would."""

    backend = "memory"

    def __init__(self, clock=time.monotonic) -> None:
        self._lock = threading.RLock()
        self._clock = clock  # ages of entries in buckets with a max age
        self._buckets: dict[str, dict[str, _Stored]] = {}
        self._max_age: dict[str, float] = {}
        # per bucket with a max age: key -> time of its last write, oldest first
        self._written: dict[str, OrderedDict[str, float]] = {}
        self._revisions = itertools.count(1)
        self._logs: dict[str, deque[tuple[int, dict]]] = {}
        self._log_seq: dict[str, int] = {}
        self._subs: set[_Sub] = set()
        # index name -> prefix -> the paths under it (every proper prefix of a path, () included)
        self._indexes: dict[str, dict[tuple[str, ...], set[tuple[str, ...]]]] = {}

    def connect(self) -> None:
        pass

    def close(self) -> None:
        self._subs.clear()

    def is_connected(self) -> bool:
        return True

    def status(self) -> dict:
        """What this process holds, per bucket and log (see :meth:`NatsStorage.status`)."""
        from cb.storage import BUCKETS, LOGS

        with self._lock:
            for bucket in self._written:
                self._drop_aged(bucket)
            stores = {b: {"replicas": 1, "messages": len(self._buckets.get(b, {}))} for b in BUCKETS}
            stores.update({g: {"replicas": 1, "messages": len(self._logs.get(g, ()))} for g in LOGS})
        return {"backend": "memory", "stores": stores}

    def _bucket(self, bucket: str) -> dict[str, _Stored]:
        return self._buckets.setdefault(bucket, {})

    @staticmethod
    def _frozen(value: dict) -> dict:
        """A copy of ``value`` as JSON would give it back. A flat record of text, numbers and
        flags (a usage record, on every request) comes back unchanged, so it is only copied."""
        if _TEXT.issuperset(map(type, value)) and _SCALARS.issuperset(map(type, value.values())):
            return dict(value)
        return json.loads(json.dumps(value))

    def set_max_age(self, bucket: str, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._max_age[bucket] = seconds
            written = self._written.setdefault(bucket, OrderedDict())
            for key in self._bucket(bucket).keys() - written.keys():
                written[key] = now  # stored before the max age was set: aged from now on

    def _drop_aged(self, bucket: str) -> None:
        """Forget the entries of ``bucket`` last written more than its max age ago (call with the lock)."""
        written = self._written.get(bucket)
        if not written:
            return
        cutoff = self._clock() - self._max_age[bucket]
        entries = self._bucket(bucket)
        while written:
            key, at = next(iter(written.items()))  # an OrderedDict gives its first item at once
            if at >= cutoff:
                return
            del written[key]
            entries.pop(key, None)

    def count(self, bucket: str) -> int:
        with self._lock:
            self._drop_aged(bucket)
            return len(self._bucket(bucket))

    def get(self, bucket: str, key: str) -> Entry | None:
        if bucket in self._written:
            with self._lock:
                self._drop_aged(bucket)
        stored = self._bucket(bucket).get(key)
        return Entry(key, json.loads(stored.text), stored.revision) if stored else None

    def list(self, bucket: str) -> list[Entry]:
        with self._lock:
            self._drop_aged(bucket)
            entries = list(self._bucket(bucket).items())
        return [Entry(key, json.loads(stored.text), stored.revision) for key, stored in entries]

    def get_many(self, bucket: str, keys: list[str]) -> list[Entry | None]:
        return [self.get(bucket, key) for key in keys]

    def _write(self, bucket: str, key: str, value: dict) -> int:
        revision = next(self._revisions)
        written = self._written.get(bucket)
        if written is not None:
            written[key] = self._clock()
            written.move_to_end(key)
        # kept as JSON text, as a real store keeps bytes: a copy on every read, and one object
        # per entry for the cyclic collector instead of every dict and list of the value (a
        # million tokens as trees made each full collection stall the worker for seconds)
        self._bucket(bucket)[key] = _Stored(json.dumps(value, separators=(",", ":")), revision)
        return revision

    def create(self, bucket: str, key: str, value: dict) -> int:
        with self._lock:
            self._drop_aged(bucket)
            if key in self._bucket(bucket):
                raise Conflict(f"{bucket} entry {key!r} already exists")
            return self._write(bucket, key, value)

    def put(self, bucket: str, key: str, value: dict) -> int:
        with self._lock:
            return self._write(bucket, key, value)

    def update(self, bucket: str, key: str, value: dict, revision: int) -> int:
        with self._lock:
            self._drop_aged(bucket)
            current = self._bucket(bucket).get(key)
            if current is None:
                raise NotFound(f"{bucket} entry {key!r} not found")
            if current.revision != revision:
                raise Conflict(f"{bucket} entry {key!r} was changed concurrently")
            return self._write(bucket, key, value)

    def delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        with self._lock:
            self._drop_aged(bucket)
            current = self._bucket(bucket).get(key)
            if current is None:
                raise NotFound(f"{bucket} entry {key!r} not found")
            if revision is not None and current.revision != revision:
                raise Conflict(f"{bucket} entry {key!r} was changed concurrently")
            del self._bucket(bucket)[key]
            self._written.get(bucket, {}).pop(key, None)

    def index_add(self, index: str, path: tuple[str, ...]) -> None:
        path = tuple(path)
        with self._lock:
            prefixes = self._indexes.setdefault(index, {})
            for i in range(len(path)):
                prefixes.setdefault(path[:i], set()).add(path)

    def index_remove(self, index: str, path: tuple[str, ...]) -> None:
        path = tuple(path)
        with self._lock:
            prefixes = self._indexes.get(index, {})
            for i in range(len(path)):
                under = prefixes.get(path[:i])
                if under is not None:
                    under.discard(path)
                    if not under:
                        del prefixes[path[:i]]

    def index_scan(self, index: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        with self._lock:
            return sorted(self._indexes.get(index, {}).get(tuple(prefix), ()))

    def append(self, log: str, record: dict) -> int:
        with self._lock:
            seq = self._log_seq.get(log, 0) + 1
            self._log_seq[log] = seq
            self._logs.setdefault(log, deque(maxlen=LOG_LIMIT)).append((seq, self._frozen(record)))
            return seq

    def read(self, log: str, after: int = 0) -> Iterator[tuple[int, dict]]:
        with self._lock:
            entries = self._logs.get(log)
            if not entries:
                return
            skip = max(0, after - entries[0][0] + 1)  # sequences are consecutive within the deque
            records = list(itertools.islice(entries, skip, None))
        for seq, record in records:
            yield seq, _copy(record)

    def publish(self, subject: str, event: dict) -> None:
        matching = [sub for sub in self._subs if subject_matches(sub.pattern, subject)]
        if matching:
            # one greenlet per event, not per subscriber: a hundred subscribers cost one spawn
            gevent.spawn(self._deliver, matching, subject, self._frozen(event))

    @staticmethod
    def _deliver(subs: list[_Sub], subject: str, event: dict) -> None:
        # every subscriber gets the same fresh copy (handlers read events, never change them)
        for sub in subs:
            try:
                sub.handler(subject, event)
            except Exception:  # one failing subscriber must not starve the others
                log.exception("event handler failed for %s", subject)

    def subscribe(self, subject: str, handler: Handler, on_gap=None) -> _Sub:  # in-process: never a gap
        sub = _Sub(self, subject, handler)
        self._subs.add(sub)
        return sub
