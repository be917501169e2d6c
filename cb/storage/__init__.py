"""Storage: one interface, two backends (memory and NATS JetStream).

Three things are stored:

* entities in key-value buckets (``workflows``, ``tokens``, ``agents`` …), each write
  returning a revision; :meth:`Storage.update` is a compare-and-set on that revision, so
  a concurrent writer gets :class:`~cb.errors.Conflict`, never a silent overwrite.
  A bucket may be given a maximum age (:meth:`Storage.set_max_age`): the store itself
  forgets an entry that long after its last write, nobody reads the bucket to find it.
  :meth:`Storage.count` says how many entries a bucket holds without reading them;
* append-only logs (``usage``, ``events``) that survive restarts with nats;
* indexes: sets of paths (tuples of non-empty strings) listed by a path prefix, so a
  listing reads only what it is asked for (``("wf", "place")`` -> the paths under it).
  An index is kept beside the data it points to, never instead of it: writers add a
  path before the write that makes it true and remove it after the write that makes it
  false, so an index holds at least every path that is true (and maybe a few stale ones,
  which readers check against the data and skip);
* published events on dotted subjects (``cb.events.<workflow>.<token>``) with NATS-style
  wildcards (``*`` one token, ``>`` the rest), seen by subscribers in every process.

Values are JSON-compatible dicts. Handlers of subscriptions run in greenlets, never in
the NATS thread, and must not modify the event they are given (it may be shared).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cb.errors import Conflict, StorageUnavailable

__all__ = [
    "Conflict",
    "Entry",
    "Reloads",
    "Storage",
    "StorageUnavailable",
    "Subscription",
    "open_storage",
    "subject_matches",
]

BUCKETS = (
    "workflows",
    "tokens",
    "agents",
    "place_agents",
    "executions",
    "api_keys",
    "budgets",
    "deployments",
    "counters",
    "meta",
    "responses",
    "mcp_sessions",
    "models",
)
LOGS = ("usage", "events")

Handler = Callable[[str, dict], None]


@dataclass(frozen=True)
class Entry:
    """One key-value entry and the revision it was read at."""

    key: str
    value: dict
    revision: int


class Subscription(Protocol):
    def close(self) -> None: ...


class Storage(Protocol):
    """What every backend provides. See the module docstring for the semantics."""

    backend: str

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def is_connected(self) -> bool: ...
    def status(self) -> dict: ...

    def get(self, bucket: str, key: str) -> Entry | None: ...
    def list(self, bucket: str) -> list[Entry]: ...
    def get_many(self, bucket: str, keys: list[str]) -> list[Entry | None]: ...
    def create(self, bucket: str, key: str, value: dict) -> int: ...
    def put(self, bucket: str, key: str, value: dict) -> int: ...
    def update(self, bucket: str, key: str, value: dict, revision: int) -> int: ...
    def delete(self, bucket: str, key: str, revision: int | None = None) -> None: ...
    def set_max_age(self, bucket: str, seconds: float) -> None:
        """Entries of ``bucket`` vanish ``seconds`` after their last write (create, put or update),
        removed by the store. Call it before this process first uses the bucket; it writes nothing
        until then (nats: the KV bucket is created with this max age, or an existing bucket's is
        changed to it, so the last process to start with a new setting sets it for all)."""
        ...

    def count(self, bucket: str) -> int:
        """How many entries ``bucket`` holds, at a cost that does not grow with them (nats: the
        stream's message count). It may include, for a moment, an entry being deleted (nats: its
        delete marker, until purged; a marker whose purge failed stays counted until the bucket's
        max age removes it, or for good in a bucket without one)."""
        ...

    def index_add(self, index: str, path: tuple[str, ...]) -> None: ...
    def index_remove(self, index: str, path: tuple[str, ...]) -> None: ...
    def index_scan(self, index: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]: ...

    def append(self, log: str, record: dict) -> int: ...
    def read(self, log: str, after: int = 0) -> Iterator[tuple[int, dict]]: ...

    def publish(self, subject: str, event: dict) -> None: ...
    def subscribe(self, subject: str, handler: Handler, on_gap: Callable[[], None] | None = None) -> Subscription:
        """``handler(subject, event)`` for each event; ``on_gap()`` when events may have been
        missed (the connection to NATS was lost), so a subscriber can say so instead of a silent gap."""
        ...


class Reloads:
    """When a worker's copy of stored data is read again: ``seconds`` after the last load, by one
    caller; the others go on with the copy they have meanwhile (requests in flight all see it
    age at once, and each reload may read a whole bucket). Before the first load every caller
    loads. The load itself calls :meth:`loaded`, also when it is made directly."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._at = float("-inf")
        self._running = False

    def loaded(self) -> None:
        self._at = time.monotonic()

    def when_due(self, load: Callable[[], None]) -> None:
        if time.monotonic() - self._at < self.seconds or (self._running and self._at != float("-inf")):
            return
        self._running = True
        try:
            load()
        finally:
            self._running = False


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` matches one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)


def open_storage(backend: str, nats_url: str | None = None, prefix: str = "cb", replicas: int = 1) -> Storage:
    """The storage backend named by STORAGE_BACKEND (not yet connected)."""
    if backend == "nats":
        from cb.storage.nats import NatsStorage

        return NatsStorage(nats_url or "nats://127.0.0.1:4222", prefix=prefix, replicas=replicas)
    from cb.storage.memory import MemoryStorage

    return MemoryStorage()
