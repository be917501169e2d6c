"""The Petri-net model: workflows of places and transitions, tokens that move between them.

A token sits in exactly one place. A transition moves a token from one of its
``from_places`` to its ``to_place`` when every condition holds. The types serialise to
plain JSON dicts (``to_dict``/``from_dict``) with the same snake_case names the GraphQL
API shows, which is how they are stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


def now() -> str:
    """An ISO 8601 UTC timestamp with milliseconds, e.g. ``2026-01-01T12:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Transition:
    """An arc bundle: from any of ``from_places`` to ``to_place``, guarded by ``conditions``."""

    id: str
    name: str
    from_places: tuple[str, ...]
    to_place: str
    conditions: tuple[str, ...] = ()
    description: str | None = None

    @classmethod
    def from_dict(cls, value: dict) -> Transition:
        return cls(
            id=value["id"],
            name=value.get("name") or value["id"],
            from_places=tuple(value.get("from_places") or ()),
            to_place=value["to_place"],
            conditions=tuple(value.get("conditions") or ()),
            description=value.get("description"),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["from_places"], d["conditions"] = list(self.from_places), list(self.conditions)
        return d


@dataclass(frozen=True)
class Workflow:
    """A net definition: its places, transitions and the place new tokens start in."""

    id: str
    name: str
    places: tuple[str, ...]
    transitions: tuple[Transition, ...]
    initial_place: str
    description: str | None = None
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)

    def transition(self, transition_id: str) -> Transition | None:
        return next((t for t in self.transitions if t.id == transition_id), None)

    @classmethod
    def from_dict(cls, value: dict) -> Workflow:
        return cls(
            id=value["id"],
            name=value["name"],
            description=value.get("description"),
            places=tuple(value["places"]),
            transitions=tuple(Transition.from_dict(t) for t in value.get("transitions") or ()),
            initial_place=value["initial_place"],
            created_at=value.get("created_at") or now(),
            updated_at=value.get("updated_at") or now(),
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "places": list(self.places),
            "transitions": [t.to_dict() for t in self.transitions],
            "initial_place": self.initial_place,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class HistoryEvent:
    """One firing in a token's life: which transition moved it where, with what data, and who
    fired it when the caller said (``actor``, e.g. ``mcp:claude-code``; stored only when set)."""

    timestamp: str
    transition: str
    from_place: str
    to_place: str
    data: dict | None = None
    actor: str | None = None

    @classmethod
    def from_dict(cls, value: dict) -> HistoryEvent:
        return cls(**{k: value.get(k) for k in ("timestamp", "transition", "from_place", "to_place", "data", "actor")})

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["actor"] is None:
            del d["actor"]
        return d


@dataclass(frozen=True)
class Token:
    """A case moving through a workflow: where it is, its data, and how it got there.

    ``revision`` is the storage revision the token was read at (not stored), used for the
    compare-and-set when it is written back. ``created_by`` names the actor that created it,
    when the caller said (stored only when set).
    """

    id: str
    workflow_id: str
    place: str
    data: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    history: tuple[HistoryEvent, ...] = ()
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    revision: int = 0
    created_by: str | None = None

    @classmethod
    def from_dict(cls, value: dict, revision: int = 0) -> Token:
        return cls(
            id=value["id"],
            workflow_id=value["workflow_id"],
            place=value["place"],
            data=value.get("data") or {},
            metadata=value.get("metadata") or {},
            history=tuple(HistoryEvent.from_dict(h) for h in value.get("history") or ()),
            created_at=value.get("created_at") or now(),
            updated_at=value.get("updated_at") or now(),
            revision=revision,
            created_by=value.get("created_by"),
        )

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "place": self.place,
            "data": self.data,
            "metadata": self.metadata,
            "history": [h.to_dict() for h in self.history],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.created_by is not None:
            d["created_by"] = self.created_by
        return d
