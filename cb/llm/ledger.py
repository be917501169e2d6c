"""The usage ledger: one record per request, appended to the ``usage`` log.

With nats the log is a JetStream stream, so every worker and replica sees every record
and the records survive restarts. Analytics and budgets fold this log.
"""

from __future__ import annotations

from cb.llm.routing import UsageRecord
from cb.logs import get_logger
from cb.storage import Storage

log = get_logger("llm.ledger")


class UsageLedger:
    """Append-only record of usage."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def record(self, record: UsageRecord) -> None:
        self.storage.append("usage", record.to_dict())

    def records(self) -> list[UsageRecord]:
        return [UsageRecord.from_dict(data) for _, data in self.storage.read("usage")]
