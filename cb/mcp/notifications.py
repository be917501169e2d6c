"""What the server tells a session unasked, on its ``GET /mcp`` stream: that the list of
resources changed, because a workflow was created or deleted (on any worker: the definitions'
bus subject ``workflows.*`` crosses workers with NATS).

Notices are coalesced: one pending ``notifications/resources/list_changed`` says all a client
needs (it lists the resources again), so a stream holds at most one, however fast workflows
change and however slowly the client reads.
"""

from __future__ import annotations

import gevent.queue

from cb.events import EventBus
from cb.workflow.engine import definition_subject

LIST_CHANGED = {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}
END = object()  # the stream should end (the worker is shutting down)


class ResourceChanges:
    """One stream's feed of ``list_changed`` notices; :meth:`close` releases its subscription."""

    def __init__(self, bus: EventBus):
        self._queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=2)
        # a gap (NATS reconnected) may hide a change: say "changed", the client re-lists
        self._subscription = bus.subscribe(definition_subject("*"), self._changed, on_gap=lambda: self._changed())

    def _changed(self, _subject: str | None = None, _event: dict | None = None) -> None:
        if self._queue.empty():
            self._queue.put_nowait(LIST_CHANGED)

    def end(self) -> None:
        """Make the stream end at once (from another greenlet)."""
        try:
            self._queue.put_nowait(END)
        except gevent.queue.Full:
            pass  # a notice is pending and END is already queued, or will be seen after it

    def next(self, timeout: float):
        """The next notice, :data:`END`, or None when nothing came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return None

    def close(self) -> None:
        self._subscription.close()
