"""Executions in the ``executions`` bucket, claimed by exactly one worker at a time.

A worker claims an execution with a compare-and-set on its revision (PENDING, or
RUNNING under an expired lease -> RUNNING with this worker as ``owner`` and a fresh
``lease_until``). Only the winner runs it. While it runs, every write goes through its
:class:`Lease`, again a compare-and-set, so a worker whose lease was taken over, or
whose execution was cancelled, finds out at its next write and stops.

Progress is published on the bus subject ``executions.<id>``: ``OUTPUT`` events with
each piece of text as it streams, and ``STATUS`` events when the status changes.

The index ``executions`` keeps, per execution, the paths ``("token", token, created, id)``
and ``("agent", agent, created, id)`` (listings by token or agent read only those),
``("open", created, id)`` while it is unfinished (the sweeper reads only these) and
``("done", hour, id)`` once it finished (retention deletes whole past hours). As for
tokens, a path is added before the write that makes it true and removed after the write
that makes it false; readers check every execution they get.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gevent.lock import RLock

from cb import metrics
from cb.agents.errors import Cancelled, ExecutionFinished, LeaseLost
from cb.agents.model import CANCELLED, RUNNING, Execution
from cb.errors import CircuitBreakerError, Conflict, NotFound, ValidationError
from cb.events import EventBus
from cb.logs import get_logger
from cb.storage import Storage
from cb.workflow.engine import page_size
from cb.workflow.model import now

log = get_logger("agents")

EXECUTIONS = "executions"
INDEX = "executions"
META = "meta"
LAYOUT_KEY = "executions_layout"
RETENTION_KEY = "executions_retention"
LAYOUT_VERSION = 2
CAS_ATTEMPTS = 5
HOURS_PER_EXPIRY = 168  # past hours one retention pass looks at (it catches up over passes)


def _hour(stamp: str) -> str:
    """``2026-01-01T12`` for an ISO timestamp: the retention bucket of a finished execution."""
    return stamp[:13]


def _paths(execution: Execution) -> list[tuple[str, ...]]:
    """Every index path that is true for ``execution`` as it is."""
    created = (execution.created_at, execution.id)
    paths = [("token", execution.token_id, *created), ("agent", execution.agent_id, *created)]
    if execution.finished:
        paths.append(("done", _hour(execution.completed_at or execution.created_at), execution.id))
    else:
        paths.append(("open", *created))
    return paths


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

    def list(
        self,
        token_id: str | None = None,
        agent_id: str | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
    ) -> list[Execution]:
        """Executions oldest first (of one token or agent when given), at most ``first``, after ``after``;
        with ``last``, only the newest ``last`` of those."""
        first = page_size(first)
        if last is not None:
            last = page_size(last)
        if token_id is not None:
            prefix: tuple[str, ...] = ("token", token_id)
        else:
            prefix = ("agent", agent_id) if agent_id is not None else ("token",)
        paths = self.storage.index_scan(INDEX, prefix)
        order = sorted({(created, execution_id) for *_, created, execution_id in paths})
        if after is not None:
            position = next((i for i, (_, x) in enumerate(order) if x == after), None)
            if position is None:
                raise ValidationError(f"after: agent execution {after!r} is not in this listing")
            order = order[position + 1 :]
        if last is not None:
            order = order[max(0, len(order) - last) :]
        found: list[Execution] = []
        seen: set[str] = set()
        while len(found) < first and order:
            batch, order = order[: first - len(found)], order[first - len(found) :]
            for entry in self.storage.get_many(EXECUTIONS, [x for _, x in batch]):
                if entry is None or entry.key in seen:  # a stale path of an execution listed already
                    continue
                seen.add(entry.key)
                execution = Execution.from_dict(entry.value, entry.revision)
                if (token_id is None or execution.token_id == token_id) and (
                    agent_id is None or execution.agent_id == agent_id
                ):
                    found.append(execution)
        return found

    def unfinished(self) -> list[Execution]:
        """Executions not finished yet, read through their ``open`` paths only."""
        paths = self.storage.index_scan(INDEX, ("open",))
        found = []
        for path, entry in zip(paths, self.storage.get_many(EXECUTIONS, [p[-1] for p in paths]), strict=True):
            if entry is None:
                continue
            execution = Execution.from_dict(entry.value, entry.revision)
            if execution.finished:  # finished is final: this path can only be stale
                self.storage.index_remove(INDEX, path)
            else:
                found.append(execution)
        return found

    def create(self, execution: Execution) -> bool:
        """Store a new execution; False if one with its id exists (another worker was first)."""
        for path in _paths(execution):
            self.storage.index_add(INDEX, path)
        try:
            execution.revision = self.storage.create(EXECUTIONS, execution.id, execution.to_dict())
        except Conflict:
            # another worker created it first, with its own timestamps: drop the paths only we added
            winner = self.storage.get(EXECUTIONS, execution.id)
            kept = set(_paths(Execution.from_dict(winner.value))) if winner is not None else set()
            for path in set(_paths(execution)) - kept:
                self.storage.index_remove(INDEX, path)
            return False
        return True

    def update(self, before: Execution, after: Execution) -> int:
        """Write ``after`` over ``before`` (compare-and-set), keeping its index paths true."""
        finishing = after.finished and not before.finished
        if finishing:
            self.storage.index_add(INDEX, _paths(after)[-1])
        revision = self.storage.update(EXECUTIONS, after.id, after.to_dict(), before.revision)
        if finishing:
            self.storage.index_remove(INDEX, _paths(before)[-1])
        return revision

    def delete(self, execution: Execution) -> None:
        try:
            self.storage.delete(EXECUTIONS, execution.id)
        except NotFound:
            pass
        for path in _paths(execution):
            self.storage.index_remove(INDEX, path)

    # -- layout and retention ---------------------------------------------------------------

    def migrate(self) -> int:
        """Index executions stored before the index existed (idempotent, safe on many workers)."""
        layout = self.storage.get(META, LAYOUT_KEY)
        if layout is not None and layout.value.get("version", 1) >= LAYOUT_VERSION:
            return 0
        hours = []
        stored = self.storage.list(EXECUTIONS)  # once per store, at the first start of this version
        for entry in stored:
            execution = Execution.from_dict(entry.value, entry.revision)
            for path in _paths(execution):
                self.storage.index_add(INDEX, path)
            if execution.finished:
                hours.append(_paths(execution)[-1][1])
        if hours and self.storage.get(META, RETENTION_KEY) is None:
            self.storage.put(META, RETENTION_KEY, {"hour": min(hours)})
        self.storage.put(META, LAYOUT_KEY, {"version": LAYOUT_VERSION})
        if stored:
            log.info("indexed %d stored agent execution(s)", len(stored))
        return len(stored)

    def expire(self, retention_seconds: float, at: float | None = None) -> int:
        """Delete executions that finished more than ``retention_seconds`` ago; returns how many.

        Works through whole past hours (``done`` paths), from the hour after the last one
        it emptied; the cursor lives in storage so every worker continues from it.
        """
        at = time.time() if at is None else at
        cutoff = datetime.fromtimestamp(at - retention_seconds, UTC).replace(minute=0, second=0, microsecond=0)
        cursor_entry = self.storage.get(META, RETENTION_KEY)
        if cursor_entry is None:
            self.storage.put(META, RETENTION_KEY, {"hour": _hour(cutoff.isoformat())})
            return 0
        hour = datetime.fromisoformat(cursor_entry.value["hour"] + ":00:00+00:00")
        deleted = 0
        for _ in range(HOURS_PER_EXPIRY):
            if hour >= cutoff:  # this hour still holds executions inside the retention
                break
            paths = self.storage.index_scan(INDEX, ("done", _hour(hour.isoformat())))
            for entry in self.storage.get_many(EXECUTIONS, [p[-1] for p in paths]):
                if entry is not None:
                    self.delete(Execution.from_dict(entry.value, entry.revision))
                    deleted += 1
            for path in paths:
                self.storage.index_remove(INDEX, path)
            hour += timedelta(hours=1)
        if _hour(hour.isoformat()) != cursor_entry.value["hour"]:
            self.storage.put(META, RETENTION_KEY, {"hour": _hour(hour.isoformat())})
        if deleted:
            log.info("deleted %d agent execution(s) finished more than %gs ago", deleted, retention_seconds)
        return deleted

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
            current = self.get(execution_id)
            if current.finished:
                raise ExecutionFinished(f"agent execution {execution_id!r} already ended: {current.status}")
            execution = Execution.from_dict(current.to_dict(), current.revision)
            execution.status, execution.error = CANCELLED, "cancelled"
            execution.completed_at = now()
            try:
                execution.revision = self.update(current, execution)
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
                    updated.revision = self.store.update(self.execution, updated)
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
