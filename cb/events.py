"""The event bus: domain events published on dotted subjects, seen by every worker.

Subjects: ``cb.events.<workflow_id>.<token_id>`` for token events,
``cb.executions.<execution_id>`` for agent execution progress. With the memory backend
the fan-out is in-process; with nats it crosses processes and replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cb.storage import Storage, Subscription


class EventBus:
    """Publish/subscribe of domain events over the storage backend's subjects."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def publish(self, subject: str, event: dict) -> None:
        event.setdefault("timestamp", time.time())
        self.storage.publish(subject, event)

    def subscribe(
        self, subject: str, handler: Callable[[str, dict], None], on_gap: Callable[[], None] | None = None
    ) -> Subscription:
        """See :meth:`cb.storage.Storage.subscribe`: ``on_gap`` hears that events may have been missed."""
        return self.storage.subscribe(subject, handler, on_gap)
