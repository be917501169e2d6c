"""The usage ledger: one record per request, appended to the ``usage`` log.

With nats the log is a JetStream stream, so every worker and replica sees every record
and the records survive restarts. Analytics and budgets fold this log; each worker
keeps the records it has read and fetches only newer ones on each call.
"""

from __future__ import annotations

import threading

from cb.llm.routing import UsageRecord
from cb.logs import get_logger
from cb.storage import Storage

log = get_logger("llm.ledger")


class UsageLedger:
    """Append-only record of usage."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._records: list[UsageRecord] = []
        self._seq = 0
        self._lock = threading.Lock()

    def record(self, record: UsageRecord) -> None:
        self.storage.append("usage", record.to_dict())

    def records(self) -> list[UsageRecord]:
        """Every record so far, oldest first (the returned list must not be modified)."""
        with self._lock:
            for seq, data in self.storage.read("usage", after=self._seq):
                self._records.append(UsageRecord.from_dict(data))
                self._seq = seq
            return self._records
