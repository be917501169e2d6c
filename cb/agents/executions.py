"""Executions in the ``executions`` bucket, claimed by exactly one worker at a time.

A worker claims an execution with a compare-and-set on its revision (PENDING, or
RUNNING under an expired lease -> RUNNING with this worker as ``owner`` and a fresh
``lease_until``). Only the winner runs it. While it runs, every write goes through its
:class:`Lease`, again a compare-and-set, so a worker whose lease was taken over, or
whose execution was cancelled, finds out at its next write and stops.

Progress is published on the bus subject ``executions.<id>``: ``OUTPUT`` events with
each piece of text as it streams, and ``STATUS`` events when the status changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gevent.lock import RLock

from cb import metrics
from cb.agents.errors import Cancelled, ExecutionFinished, LeaseLost
from cb.agents.model import CANCELLED, RUNNING, Execution
from cb.errors import CircuitBreakerError, Conflict, NotFound
from cb.events import EventBus
from cb.logs import get_logger
from cb.storage import Storage
from cb.workflow.model import now

log = get_logger("agents")

EXECUTIONS = "executions"
CAS_ATTEMPTS = 5


def execution_subject(execution_id: str) -> str:
    return f"executions.{execution_id}"


class ExecutionStore:
    """Create, read, claim and cancel executions; publish their progress."""

    def __init__(self, storage: Storage, bus: EventBus):
        self.storage = storage
        self.bus = bus

    def get(self, execution_id: str) -> Execution:
        entry = self.storage.get(EXECUTIONS, execution_id)
        if entry is None:
            raise NotFound(f"agent execution {execution_id!r} not found")
        return Execution.from_dict(entry.value, entry.revision)

    def list(self, token_id: str | None = None, agent_id: str | None = None) -> list[Execution]:
        found = [Execution.from_dict(e.value, e.revision) for e in self.storage.list(EXECUTIONS)]
        found = [x for x in found if (token_id is None or x.token_id == token_id)
                 and (agent_id is None or x.agent_id == agent_id)]
        return sorted(found, key=lambda x: (x.created_at, x.id))

    def create(self, execution: Execution) -> bool:
        """Store a new execution; False if one with its id exists (another worker was first)."""
        try:
            execution.revision = self.storage.create(EXECUTIONS, execution.id, execution.to_dict())
        except Conflict:
            return False
        return True

    def claim(self, execution: Execution, worker: str, lease_seconds: float) -> Lease | None:
        """Take ``execution`` (as read) for ``worker``; None if it is not claimable or another worker won."""
        at = time.time()
        if not execution.claimable(at):
            return None
        takeover = execution.status == RUNNING
        execution.status, execution.owner, execution.lease_until = RUNNING, worker, at + lease_seconds
        if takeover:
            execution.takeovers += 1
        if execution.started_at is None:
            execution.started_at, execution.started_ts = now(), at
        try:
            execution.revision = self.storage.update(EXECUTIONS, execution.id, execution.to_dict(), execution.revision)
        except (Conflict, NotFound):
            return None
        if takeover:
            log.warning("execution %s taken over by %s after its lease ran out", execution.id, worker)
        return Lease(self, execution, worker, lease_seconds)

    def cancel(self, execution_id: str) -> Execution:
        """Mark a pending or running execution CANCELLED; its worker stops at its next step."""
        for _ in range(CAS_ATTEMPTS):
            execution = self.get(execution_id)
            if execution.finished:
                raise ExecutionFinished(f"agent execution {execution_id!r} already ended: {execution.status}")
            execution.status, execution.error = CANCELLED, "cancelled"
            execution.completed_at = now()
            try:
                execution.revision = self.storage.update(EXECUTIONS, execution_id, execution.to_dict(),
                                                         execution.revision)
            except Conflict:
                continue  # a heartbeat renewed the lease meanwhile: read again
            metrics.agent_executions.labels(CANCELLED).inc()
            self.publish_status(execution)
            self._publish_control({"type": "cancel", "execution_id": execution_id})
            return execution
        raise Conflict(f"agent execution {execution_id!r} kept changing; try again")

    # -- progress ---------------------------------------------------------------------------

    def publish_output(self, execution: Execution, delta: str) -> None:
        self._publish(execution, {"type": "OUTPUT", "delta": delta})

    def publish_status(self, execution: Execution) -> None:
        output = execution.output if execution.finished else None
        self._publish(execution, {"type": "STATUS", "output": output, "error": execution.error})

    def _publish_control(self, event: dict) -> None:
        try:
            self.bus.publish("agents.control", event)
        except CircuitBreakerError as exc:  # the running worker notices at its next heartbeat instead
            log.warning("could not announce %s of execution %s: %s", event["type"], event["execution_id"], exc.message)

    def _publish(self, execution: Execution, event: dict) -> None:
        event.update(execution_id=execution.id, status=execution.status, attempt=execution.attempts)
        try:
            self.bus.publish(execution_subject(execution.id), event)
        except CircuitBreakerError as exc:  # progress is best effort; the record is the truth
            log.warning("could not publish progress of execution %s: %s", execution.id, exc.message)


class Lease:
    """One worker's claim on one execution: every write is a compare-and-set, serialized."""

    def __init__(self, store: ExecutionStore, execution: Execution, worker: str, seconds: float):
        self.store = store
        self.execution = execution
        self.worker = worker
        self.seconds = seconds
        self._lock = RLock()

    def write(self, change: Callable[[Execution], None] | None = None) -> Execution:
        """Apply ``change`` and renew the lease; raises Cancelled or LeaseLost if it is no longer ours."""
        with self._lock:
            for _ in range(CAS_ATTEMPTS):
                updated = Execution.from_dict(self.execution.to_dict(), self.execution.revision)
                if change is not None:
                    change(updated)
                if not updated.finished:
                    updated.lease_until = time.time() + self.seconds
                try:
                    updated.revision = self.store.storage.update(EXECUTIONS, updated.id, updated.to_dict(),
                                                                 self.execution.revision)
                except NotFound:
                    raise Cancelled("the execution was deleted") from None
                except Conflict:
                    current = self.store.get(self.execution.id)
                    if current.status == CANCELLED:
                        raise Cancelled("the execution was cancelled") from None
                    if current.owner != self.worker or current.status != RUNNING:
                        raise LeaseLost(f"execution {current.id} is now run by {current.owner}") from None
                    self.execution = current
                    continue
                self.execution = updated
                return updated
            raise LeaseLost(f"execution {self.execution.id} kept changing under its lease")

    @property
    def expires_in(self) -> float:
        return self.execution.lease_until - time.time()

