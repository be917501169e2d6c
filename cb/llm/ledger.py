"""The usage ledger: one record per request, appended to the ``usage`` log.

With nats the log is a JetStream stream, so every worker and replica sees every record
and the records survive restarts. Analytics and budgets *fold* this log: each registers
a function that sees every record once, in order, and keeps only its aggregates, so a
worker holds no records at all. :meth:`UsageLedger.catch_up` reads only the records
appended since its last call.

Bounds: at most :data:`PENDING_LIMIT` records that could not be written yet (storage
away), retried on the next write and on :meth:`UsageLedger.flush` at shutdown.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import gevent
import gevent.lock

from cb.errors import StorageUnavailable
from cb.llm.routing import UsageRecord
from cb.logs import get_logger
from cb.storage import Storage

log = get_logger("llm.ledger")

PENDING_LIMIT = 10_000
RETRY_SECONDS = 1.0  # how often records kept while storage was away are tried again
CATCH_UP_EVERY = 200  # small batches: a catch-up on the request path stays a few ms


class UsageLedger:
    """Append-only record of usage."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._folds: list[Callable[[UsageRecord], None]] = []
        self._catching_up: gevent.Greenlet | None = None
        self._seq = 0
        self._lock = gevent.lock.Semaphore()  # cooperative: catch_up yields while holding it
        self._pending: deque[dict] = deque(maxlen=PENDING_LIMIT)
        self._flushing = threading.Lock()
        self._retrying: gevent.Greenlet | None = None

    def record(self, record: UsageRecord) -> None:
        """Append one record; if storage is away, keep it to retry (never lose it silently)."""
        data = record.to_dict()
        try:
            seq = self.storage.append("usage", data)
        except StorageUnavailable as exc:
            self._pending.append(data)
            log.warning("usage record kept for later (%d pending): %s", len(self._pending), exc.message)
            if self._retrying is None:  # written as soon as storage is back, traffic or not
                self._retrying = gevent.spawn(self._retry_pending)
            return
        if self._pending:
            self.flush()
        if seq == self._seq + 1 and self._folds and self._lock.acquire(blocking=False):
            # the record right after the last one folded (this process wrote both), and no
            # catch-up running: folded now, from the record in hand, instead of read back from
            # the log by the next catch-up (acquiring without waiting never yields)
            try:
                self._fold(record)
                self._seq = seq
            finally:
                self._lock.release()
        if self._folds and seq - self._seq >= CATCH_UP_EVERY and self._catching_up is None:
            # folds never lag far behind, even where a log keeps only recent records; in the
            # background, so no request waits for it
            self._catching_up = gevent.spawn(self._catch_up_in_background)

    def _retry_pending(self) -> None:
        try:
            while self._pending:
                gevent.sleep(RETRY_SECONDS)
                self.flush()
        finally:
            self._retrying = None

    def _catch_up_in_background(self) -> None:
        try:
            self.catch_up()
        except StorageUnavailable as exc:  # NATS away or failing over: nothing is lost, the fold waits
            log.warning("usage catch-up postponed: %s", exc.message)
        except Exception:
            log.exception("usage catch-up failed; the next query retries it")
        finally:
            self._catching_up = None

    def flush(self) -> int:
        """Write the records still pending (one flusher at a time); returns how many are left."""
        if not self._flushing.acquire(blocking=False):
            return len(self._pending)
        try:
            while self._pending:
                data = self._pending.popleft()
                try:
                    self.storage.append("usage", data)
                except StorageUnavailable:
                    self._pending.appendleft(data)
                    break
        finally:
            self._flushing.release()
        return len(self._pending)

    def add_fold(self, fold: Callable[[UsageRecord], None]) -> None:
        """Have ``fold`` see every record of the log once, in order (analytics, budgets).

        Folds are registered when the worker's services are built, before the first read.
        """
        with self._lock:
            if self._seq:
                raise RuntimeError("folds must be added before the ledger is first read")
            self._folds.append(fold)

    def catch_up(self) -> None:
        """Read the records appended since the last call and hand each to every fold."""
        with self._lock:
            for count, (seq, data) in enumerate(self.storage.read("usage", after=self._seq), 1):
                self._fold(UsageRecord.from_dict(data))
                self._seq = seq
                if count % 20 == 0:
                    gevent.sleep(0)  # a long catch-up lets requests run in between

    def _fold(self, record: UsageRecord) -> None:
        for fold in self._folds:
            fold(record)
