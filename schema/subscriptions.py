"""Which bus subject feeds each subscription field, and what each event resolves to.

A subscription field is registered with two functions: ``subject(args)`` names the bus
subject (with NATS wildcards) to listen on, and ``root(event, services)`` turns one
event into the field's value (None skips the event). The WebSocket transports
(blueprints/subscriptions.py) execute the client's document once per event with
``{field: root(event, services)}`` as the root value, so no resolver is needed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.queue import Queue
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationType,
    execute,
    specified_rules,
)
from graphql.execution.executor import Executor
from graphql.execution.values import get_argument_values

from cb import metrics
from cb.errors import CircuitBreakerError
from cb.logs import get_logger

log = get_logger("subscriptions")


@dataclass(frozen=True)
class SubscriptionSource:
    subject: Callable[[dict], str]
    root: Callable[[dict, Any], Any]


SOURCES: dict[str, SubscriptionSource] = {}


def register(field: str, subject: Callable[[dict], str], root: Callable[[dict, Any], Any]) -> None:
    """Feed the Subscription field ``field`` from the bus."""
    SOURCES[field] = SubscriptionSource(subject, root)


# --- running operations that arrive over a WebSocket ---------------------------------

QUEUE_LIMIT = 1000
_FELL_BEHIND = object()  # queued after the last event a slow subscriber will get
_INTERRUPTED = object()  # queued when the bus lost its connection: events may be missing after it


class OperationRefused(Exception):
    """The operation cannot start; ``errors`` are formatted GraphQL errors."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors[0]["message"] if errors else "operation refused")
        self.errors = errors


@dataclass
class Operation:
    """A parsed and validated GraphQL operation ready to run."""

    document: DocumentNode
    kind: OperationType
    variables: dict
    operation_name: str | None
    field: str | None = None  # the subscription field, for subscriptions
    args: dict | None = None


def prepare(payload: Any) -> Operation:
    """Parse and validate ``{query, variables, operationName}``; raise OperationRefused."""
    from schema import format_error, get_schema
    from schema.documents import documents
    from schema.limits import VALIDATION_RULES

    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise OperationRefused([_error("payload must be an object with a 'query' string", "BAD_REQUEST")])
    variables = payload.get("variables") or {}
    operation_name = payload.get("operationName")
    if not isinstance(variables, dict):
        raise OperationRefused([_error("variables must be an object", "BAD_REQUEST")])
    schema = get_schema()
    try:
        document = documents.parse(payload["query"])
    except GraphQLError as exc:
        raise OperationRefused([format_error(exc)]) from None
    errors = documents.validate(schema, document, (*specified_rules, *VALIDATION_RULES))
    if errors:
        raise OperationRefused([format_error(e) for e in errors])
    executor = Executor.build(schema, document, raw_variable_values=variables, operation_name=operation_name)
    if isinstance(executor, list):
        raise OperationRefused([format_error(e) for e in executor])
    operation = Operation(document, executor.operation.operation, variables, operation_name)
    if operation.kind == OperationType.SUBSCRIPTION:
        node = _root_field(executor.operation.selection_set, executor.fragments)
        operation.field = node.name.value
        field_def = schema.subscription_type.fields[operation.field]
        try:
            operation.args = get_argument_values(field_def, node, executor.variable_values)
        except GraphQLError as exc:
            raise OperationRefused([format_error(exc)]) from None
        if operation.field not in SOURCES:
            raise OperationRefused([_error(f"subscription {operation.field!r} has no event source", "BAD_REQUEST")])
    return operation


def _root_field(selection_set, fragments) -> FieldNode:
    # validation guarantees exactly one root field; it may sit inside fragments
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            return selection
        inner = selection.selection_set if isinstance(selection, InlineFragmentNode) else None
        if isinstance(selection, FragmentSpreadNode):
            inner = fragments[selection.name.value].definition.selection_set
        if inner is not None:
            return _root_field(inner, fragments)
    raise OperationRefused([_error("subscription selects no field", "BAD_REQUEST")])


def _error(message: str, code: str) -> dict:
    return {"message": message, "extensions": {"code": code}}


def execute_once(operation: Operation, services: Any, root_value: Any = None) -> dict:
    """Run the operation (a query, a mutation, or one subscription event); a formatted result."""
    from schema import format_error, get_schema

    result = execute(
        get_schema(),
        operation.document,
        root_value=root_value,
        context_value={"services": services, "request": None},
        variable_values=operation.variables,
        operation_name=operation.operation_name,
    )
    body: dict = {"data": result.data}
    if result.errors:
        body["errors"] = [format_error(e) for e in result.errors]
    return body


class LiveSubscription:
    """One running subscription: bus events in, one execution result out per event.

    Events wait in a bounded queue and are executed in order by one greenlet;
    :meth:`close` releases the bus subscription and stops the greenlet. A subscriber
    never misses events silently: when the queue is full, the events already queued are
    delivered, then the subscription ends through ``fail`` with an error that says how
    many events it missed (as NATS ends a slow consumer). Likewise when the bus says events
    may have been lost (its NATS connection dropped): what came before is delivered, then the
    subscription ends with SUBSCRIPTION_INTERRUPTED.
    """

    def __init__(
        self,
        operation: Operation,
        services: Any,
        emit: Callable[[dict], None],
        fail: Callable[[list[dict]], None] | None = None,
    ):
        self.operation, self.services, self.emit, self.fail = operation, services, emit, fail
        self.source = SOURCES[operation.field]
        self.queue: Queue = Queue(QUEUE_LIMIT + 1)
        self.subscription = None
        self.greenlet = None
        self.missed = 0
        self.interrupted = False

    def start(self) -> None:
        """Subscribe to the bus; raise OperationRefused if the arguments name no valid subject."""
        try:
            subject = self.source.subject(self.operation.args)
        except CircuitBreakerError as exc:
            raise OperationRefused([_error(exc.message, exc.code)]) from None
        self.subscription = self.services.bus.subscribe(subject, self._deliver, self._interrupt)
        self.greenlet = gevent.spawn(self._pump)
        log.debug("subscription %s started on %s", self.operation.field, subject)

    def _interrupt(self) -> None:
        if not (self.missed or self.interrupted):
            self.interrupted = True
            self.queue.put_nowait(_INTERRUPTED)  # _deliver keeps a place free for one sentinel

    def _deliver(self, _subject: str, event: dict) -> None:
        if self.interrupted:
            return
        if self.missed:
            self.missed += 1
        elif self.queue.qsize() >= QUEUE_LIMIT:
            self.missed = 1
            self.queue.put_nowait(_FELL_BEHIND)  # into the one place kept for it, after what is queued
        else:
            self.queue.put_nowait(event)

    def _pump(self) -> None:
        for event in self.queue:
            if event is _FELL_BEHIND:
                self._end_behind()
                return
            if event is _INTERRUPTED:
                self._end_interrupted()
                return
            root = self.source.root(event, self.services)
            if root is not None:
                self.emit(execute_once(self.operation, self.services, {self.operation.field: root}))

    def _end_behind(self) -> None:
        missed = self.missed
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        metrics.subscriptions_fell_behind.inc()
        log.warning("subscription %s fell behind by %d event(s); ended", self.operation.field, missed)
        message = (
            f"subscription fell behind: {missed} event(s) could not be delivered in order "
            f"(more than {QUEUE_LIMIT} were waiting); subscribe again"
        )
        if self.fail is not None:
            self.fail([_error(message, "SUBSCRIPTION_FELL_BEHIND")])

    def _end_interrupted(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        log.warning("subscription %s interrupted: the event bus lost its NATS connection; ended", self.operation.field)
        if self.fail is not None:
            self.fail(
                [
                    _error(
                        "subscription interrupted: the connection to NATS was lost and events may have "
                        "been missed; subscribe again",
                        "SUBSCRIPTION_INTERRUPTED",
                    )
                ]
            )

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
            log.debug("subscription %s released", self.operation.field)
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None
