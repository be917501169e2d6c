"""The usage ledger: one record per request, appended to the ``usage`` log.

With nats the log is a JetStream stream, so every worker and replica sees every record
and the records survive restarts. Analytics and budgets fold this log; each worker
keeps the records it has read and fetches only newer ones on each call.

Bounds: a worker keeps at most ``window`` records it has read (USAGE_CACHE_RECORDS;
older ones are dropped from its memory, never from the log), and at most
:data:`PENDING_LIMIT` records that could not be written yet (storage away), which are
retried on the next write and on :meth:`UsageLedger.flush` at shutdown.
"""

from __future__ import annotations

import threading
from collections import deque

from cb.errors import StorageUnavailable
from cb.llm.routing import UsageRecord
from cb.logs import get_logger
from cb.storage import Storage

log = get_logger("llm.ledger")

DEFAULT_WINDOW = 50_000
PENDING_LIMIT = 10_000


class UsageLedger:
    """Append-only record of usage."""

    def __init__(self, storage: Storage, window: int = DEFAULT_WINDOW):
        self.storage = storage
        self.window = max(1, window)
        self._records: list[UsageRecord] = []
        self._base = 0  # how many records were read before self._records[0]
        self._seq = 0
        self._lock = threading.Lock()
        self._pending: deque[dict] = deque(maxlen=PENDING_LIMIT)
        self._flushing = threading.Lock()

    def record(self, record: UsageRecord) -> None:
        """Append one record; if storage is away, keep it to retry (never lose it silently)."""
        data = record.to_dict()
        try:
            self.storage.append("usage", data)
        except StorageUnavailable as exc:
            self._pending.append(data)
            log.warning("usage record kept for later (%d pending): %s", len(self._pending), exc.message)
            return
        if self._pending:
            self.flush()

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

    def records(self) -> list[UsageRecord]:
        """The records this worker holds (the newest ``window``), oldest first; do not modify."""
        return self.since(self._base)[0]

    def since(self, position: int) -> tuple[list[UsageRecord], int]:
        """Records after absolute ``position`` still held, and the new position (count read so far)."""
        with self._lock:
            for seq, data in self.storage.read("usage", after=self._seq):
                self._records.append(UsageRecord.from_dict(data))
                self._seq = seq
            if len(self._records) > self.window:
                drop = len(self._records) - self.window
                del self._records[:drop]
                self._base += drop
            start = max(0, position - self._base)
            held = self._records if start == 0 else self._records[start:]  # no copy when all are asked for
            return held, self._base + len(self._records)
