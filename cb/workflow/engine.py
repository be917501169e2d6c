"""The workflow engine: stores workflows and tokens, fires transitions, publishes events.

Every write of a token is a compare-and-set on the storage revision it was read at, so
two workers firing at one token cannot both win: the loser re-reads the token, and if
the transition is no longer enabled it gets :class:`TransitionNotEnabled`; after a few
lost races in a row it gets :class:`~cb.errors.Conflict`. No history entry is lost.

Events go to the bus on ``events.<workflow_id>.<token_id>``: ``token_created``,
``token_transitioned``, ``token_updated`` (data merged in place, e.g. an agent's output) and
``token_deleted``, each carrying the token as it now is.

Tokens are stored under their id (one get for ``token(id)``), and an index ``tokens``
holds one path ``(workflow, place, created_at, id)`` per token, so ``tokens(workflow_id,
place)`` reads only that workflow's (or place's) paths and then gets only the page it
answers. A firing adds the path of the new place before its compare-and-set and removes
the old one after it, so at every instant each token has at least one path: a listing
misses no token while other workers fire. Paths left stale by a lost race or a crash
between the two steps only cost a get; readers check each token against the listing.
"""

from __future__ import annotations

import time
import uuid
from functools import lru_cache
from typing import Any

from cb import metrics
from cb.errors import CircuitBreakerError, Conflict, NotFound, ValidationError
from cb.events import EventBus
from cb.logs import get_logger
from cb.storage import Storage
from cb.workflow.conditions import Condition
from cb.workflow.defaults import default_workflows
from cb.workflow.errors import ConditionFailed, TransitionNotEnabled
from cb.workflow.model import HistoryEvent, Token, Transition, Workflow, now
from cb.workflow.validation import validate

log = get_logger("workflow")

WORKFLOWS = "workflows"
TOKENS = "tokens"
TOKEN_INDEX = "tokens"
META = "meta"
LAYOUT_KEY = "tokens_layout"
LAYOUT_VERSION = 2  # 1: tokens without their index (before 0.2); 2: with the ``tokens`` index
FIRE_ATTEMPTS = 3
# A workflow is never changed once stored, only deleted (when no token is in it) and maybe
# created again: each worker keeps the definitions it read, drops one when any worker says
# it was deleted or created (bus subject ``workflows.<id>``), and re-reads after this long
# at most, should such a message be lost while NATS reconnects.
DEFINITION_SECONDS = 5.0
PAGE_LIMIT = 1000


def page_size(first: int | None) -> int:
    """``first`` of a paged listing: default and maximum :data:`PAGE_LIMIT`."""
    if first is None:
        return PAGE_LIMIT
    if first < 0 or first > PAGE_LIMIT:
        raise ValidationError(f"first must be between 0 and {PAGE_LIMIT}, got {first}")
    return first


def _token_path(token: Token) -> tuple[str, str, str, str]:
    return (token.workflow_id, token.place, token.created_at, token.id)


def definition_subject(workflow_id: str) -> str:
    """The bus subject that says workflow ``workflow_id`` was created or deleted."""
    return f"workflows.{workflow_id}"


def event_subject(workflow_id: str, token_id: str) -> str:
    """The bus subject of one token's events; ``events.<workflow>.*`` covers a workflow."""
    return f"events.{workflow_id}.{token_id}"


@lru_cache(maxsize=1024)
def _condition(source: str) -> Condition:
    return Condition.parse(source)


def _object(kind: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{kind} must be a JSON object, got {type(value).__name__}")
    return value


class WorkflowEngine:
    """Workflows and tokens over a storage backend, with events on the bus."""

    def __init__(self, storage: Storage, bus: EventBus):
        self.storage = storage
        self.bus = bus
        self._definitions: dict[str, tuple[float, Workflow]] = {}  # id -> (fresh until, definition)
        self._definition_watch = None

    # --- workflows -------------------------------------------------------------

    def list_workflows(self) -> list[Workflow]:
        workflows = [Workflow.from_dict(e.value) for e in self.storage.list(WORKFLOWS)]
        return sorted(workflows, key=lambda w: (w.created_at, w.id))

    def get_workflow(self, workflow_id: str) -> Workflow:
        cached = self._definitions.get(workflow_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        entry = self.storage.get(WORKFLOWS, workflow_id)
        if entry is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        workflow = Workflow.from_dict(entry.value)
        if self._watch_definitions():
            self._definitions[workflow_id] = (time.monotonic() + DEFINITION_SECONDS, workflow)
        return workflow

    def _watch_definitions(self) -> bool:
        """Subscribe once to the workflows' created/deleted messages; False when it cannot (no cache then)."""
        if self._definition_watch is None:
            try:
                self._definition_watch = self.bus.subscribe(definition_subject("*"), self._forget_definition)
            except CircuitBreakerError:
                return False
        return True

    def _forget_definition(self, _subject: str, event: dict) -> None:
        self._definitions.pop(event.get("workflow_id"), None)

    def _definition_changed(self, workflow_id: str, kind: str) -> None:
        self._definitions.pop(workflow_id, None)
        try:
            self.bus.publish(definition_subject(workflow_id), {"type": kind, "workflow_id": workflow_id})
        except CircuitBreakerError as exc:  # the others re-read within DEFINITION_SECONDS anyway
            log.warning("could not announce that workflow %s was %s: %s", workflow_id, kind, exc)

    def create_workflow(self, workflow: Workflow) -> Workflow:
        """Validate and store a new workflow; Conflict if its id is taken."""
        validate(workflow)
        try:
            self.storage.create(WORKFLOWS, workflow.id, workflow.to_dict())
        except Conflict:
            raise Conflict(f"workflow {workflow.id!r} already exists") from None
        self._definition_changed(workflow.id, "workflow_created")
        log.info("workflow %s created", workflow.id)
        return workflow

    def delete_workflow(self, workflow_id: str) -> bool:
        """Delete a workflow that no token is in any more."""
        self.get_workflow(workflow_id)
        remaining = len(self.list_tokens(workflow_id, first=PAGE_LIMIT))
        if remaining:
            raise ValidationError(f"workflow {workflow_id!r} still has {remaining} token(s); delete them first")
        try:
            self.storage.delete(WORKFLOWS, workflow_id)
        except NotFound:
            raise NotFound(f"workflow {workflow_id!r} not found") from None
        self._definition_changed(workflow_id, "workflow_deleted")
        return True

    def load_defaults(self) -> int:
        """Store the example workflows if storage holds none; returns how many were stored.

        Several workers may start at once: each uses ``create``, so the slower ones just
        lose a harmless conflict.
        """
        if self.storage.list(WORKFLOWS):
            return 0
        stored = 0
        for workflow in default_workflows():
            try:
                self.storage.create(WORKFLOWS, workflow.id, workflow.to_dict())
                stored += 1
            except Conflict:
                pass
        return stored

    # --- tokens ----------------------------------------------------------------

    def migrate(self) -> int:
        """Index the tokens stored before the index existed; returns how many were indexed.

        Idempotent (adding a path twice is one path), and safe while other workers start
        or fire: a path added from a stale read is only a stale path.
        """
        layout = self.storage.get(META, LAYOUT_KEY)
        if layout is not None and layout.value.get("version", 1) >= LAYOUT_VERSION:
            return 0
        indexed = 0
        for entry in self.storage.list(TOKENS):  # once per store, at the first start of this version
            self.storage.index_add(TOKEN_INDEX, _token_path(Token.from_dict(entry.value)))
            indexed += 1
        self.storage.put(META, LAYOUT_KEY, {"version": LAYOUT_VERSION})
        if indexed:
            log.info("indexed %d stored token(s) by workflow and place", indexed)
        return indexed

    def list_tokens(
        self,
        workflow_id: str | None = None,
        place: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> list[Token]:
        """Tokens oldest first, at most ``first``, starting after the token ``after``."""
        first = page_size(first)
        prefix = (workflow_id, place) if workflow_id is not None and place is not None else (workflow_id,)
        paths = self.storage.index_scan(TOKEN_INDEX, prefix if workflow_id is not None else ())
        order = sorted({(created, token_id) for _w, p, created, token_id in paths if place is None or p == place})
        if after is not None:
            order = order[self._position_after(order, after) :]

        def wanted(token: Token) -> bool:
            return (workflow_id is None or token.workflow_id == workflow_id) and (place is None or token.place == place)

        tokens: list[Token] = []
        while len(tokens) < first and order:  # more than one round only past stale paths
            batch, order = order[: first - len(tokens)], order[first - len(tokens) :]
            for entry in self.storage.get_many(TOKENS, [token_id for _, token_id in batch]):
                if entry is not None and wanted(token := Token.from_dict(entry.value, entry.revision)):
                    tokens.append(token)
        return tokens

    def place_counts(self, workflow: Workflow) -> dict[str, int]:
        """How many tokens sit on each place of ``workflow`` (every place, zeros included).

        Reads the workflow's index paths only; a token with more than one path (a firing
        between its two index writes, or a lost race) is got to see where it really is.
        """
        paths: dict[str, list[str]] = {}
        for _w, place, _created, token_id in self.storage.index_scan(TOKEN_INDEX, (workflow.id,)):
            paths.setdefault(token_id, []).append(place)
        counts = dict.fromkeys(workflow.places, 0)
        unsure = [token_id for token_id, places in paths.items() if len(places) > 1]
        for places in paths.values():
            if len(places) == 1 and places[0] in counts:
                counts[places[0]] += 1
        for entry in self.storage.get_many(TOKENS, unsure) if unsure else ():
            if entry is not None and entry.value.get("place") in counts:
                counts[entry.value["place"]] += 1
        return counts

    def _position_after(self, order: list[tuple[str, str]], after: str) -> int:
        for i, (_, token_id) in enumerate(order):
            if token_id == after:
                return i + 1
        entry = self.storage.get(TOKENS, after)  # it has left this listing: continue from where it was
        if entry is None:
            raise ValidationError(f"after: token {after!r} not found")
        cursor = (Token.from_dict(entry.value).created_at, after)
        return next((i for i, key in enumerate(order) if key > cursor), len(order))

    def get_token(self, token_id: str) -> Token:
        entry = self.storage.get(TOKENS, token_id)
        if entry is None:
            raise NotFound(f"token {token_id!r} not found")
        return Token.from_dict(entry.value, entry.revision)

    def create_token(
        self,
        workflow_id: str,
        place: str | None = None,
        data: Any = None,
        metadata: Any = None,
        actor: str | None = None,
    ) -> Token:
        """A new token in ``place`` (default: the workflow's initial place), created by ``actor`` if named."""
        workflow = self.get_workflow(workflow_id)
        place = place or workflow.initial_place
        if place not in workflow.places:
            raise ValidationError(f"place {place!r} is not a place of workflow {workflow_id!r}")
        token = Token(
            id=str(uuid.uuid4()),
            workflow_id=workflow_id,
            place=place,
            data=_object("data", data),
            metadata=_object("metadata", metadata),
            created_by=actor,
        )
        self.storage.index_add(TOKEN_INDEX, _token_path(token))
        revision = self.storage.create(TOKENS, token.id, token.to_dict())
        token = Token.from_dict(token.to_dict(), revision)
        metrics.tokens_created.labels(workflow_id).inc()
        self._publish("token_created", token, actor=actor)
        return token

    def delete_token(self, token_id: str) -> bool:
        token = self.get_token(token_id)
        try:
            self.storage.delete(TOKENS, token_id)
        except NotFound:
            raise NotFound(f"token {token_id!r} not found") from None
        self.storage.index_remove(TOKEN_INDEX, _token_path(token))
        self._publish("token_deleted", token)
        return True

    # --- firing ----------------------------------------------------------------

    def available_transitions(self, token: Token, workflow: Workflow | None = None) -> list[Transition]:
        """The transitions the token could fire now, with its current data."""
        workflow = workflow or self.get_workflow(token.workflow_id)
        return [t for t in workflow.transitions if self._blocker(token, t, token.data) is None]

    def fire(self, token_id: str, transition_id: str, data: Any = None, actor: str | None = None) -> Token:
        """Move the token along the transition, merging ``data`` into its data; the history
        entry names ``actor`` when given.

        Conditions are evaluated over the token's data as it would be after the merge, so
        the firing can carry the evidence its guard asks for (``{"tests_passed": true}``).
        """
        data = _object("data", data)
        for _ in range(FIRE_ATTEMPTS):
            token = self.get_token(token_id)
            workflow = self.get_workflow(token.workflow_id)
            transition = workflow.transition(transition_id)
            if transition is None:
                raise NotFound(f"workflow {workflow.id!r} has no transition {transition_id!r}")
            merged = {**token.data, **data}
            blocker = self._blocker(token, transition, merged)
            if blocker is not None:
                raise blocker
            stamp = now()
            event = HistoryEvent(stamp, transition.id, token.place, transition.to_place, data or None, actor)
            moved = Token(
                id=token.id,
                workflow_id=token.workflow_id,
                place=transition.to_place,
                data=merged,
                metadata=token.metadata,
                history=(*token.history, event),
                created_at=token.created_at,
                updated_at=stamp,
                created_by=token.created_by,
            )
            moves = moved.place != token.place
            if moves:
                self.storage.index_add(TOKEN_INDEX, _token_path(moved))
            try:
                revision = self.storage.update(TOKENS, token.id, moved.to_dict(), token.revision)
            except Conflict:
                continue  # somebody else moved it first: look again
            except NotFound:
                raise NotFound(f"token {token_id!r} not found") from None
            if moves:
                self.storage.index_remove(TOKEN_INDEX, _token_path(token))
            moved = Token.from_dict(moved.to_dict(), revision)
            metrics.transitions_fired.labels(token.workflow_id).inc()
            self._publish("token_transitioned", moved, transition.id, token.place, transition.to_place, stamp, actor)
            return moved
        raise Conflict(f"token {token_id!r} kept changing while firing {transition_id!r}; try again")

    def merge_data(self, token_id: str, data: dict) -> Token:
        """Merge ``data`` into the token's data where it is (an agent's output); publishes ``token_updated``."""
        data = _object("data", data)
        for _ in range(FIRE_ATTEMPTS):
            token = self.get_token(token_id)
            updated = Token.from_dict({**token.to_dict(), "data": {**token.data, **data}, "updated_at": now()})
            try:
                revision = self.storage.update(TOKENS, token.id, updated.to_dict(), token.revision)
            except Conflict:
                continue
            except NotFound:
                raise NotFound(f"token {token_id!r} not found") from None
            updated = Token.from_dict(updated.to_dict(), revision)
            self._publish("token_updated", updated)
            return updated
        raise Conflict(f"token {token_id!r} kept changing while its data was updated; try again")

    def _blocker(self, token: Token, transition: Transition, data: dict) -> Exception | None:
        """The error that keeps ``transition`` from firing for ``token``, or None."""
        if token.place not in transition.from_places:
            return TransitionNotEnabled(
                f"transition {transition.id!r} is not enabled: the token is in {token.place!r}, "
                f"the transition needs it in {' or '.join(repr(p) for p in transition.from_places)}"
            )
        for source in transition.conditions:
            if not _condition(source).holds(data, token.metadata):
                return ConditionFailed(
                    f"transition {transition.id!r} is blocked: condition {source!r} does not hold", source
                )
        return None

    def _publish(
        self,
        kind: str,
        token: Token,
        transition: str | None = None,
        from_place: str | None = None,
        to_place: str | None = None,
        timestamp: str | None = None,
        actor: str | None = None,
    ) -> None:
        try:
            self.bus.publish(
                event_subject(token.workflow_id, token.id),
                {
                    "type": kind,
                    "workflow_id": token.workflow_id,
                    "token_id": token.id,
                    "transition": transition,
                    "from_place": from_place,
                    "to_place": to_place if to_place is not None else token.place,
                    "timestamp": timestamp or now(),
                    "actor": actor,
                    "token": token.to_dict(),
                },
            )
        except CircuitBreakerError as exc:
            # the write itself succeeded; a lost event must not turn it into an error
            log.warning("could not publish %s for token %s: %s", kind, token.id, exc.message)
