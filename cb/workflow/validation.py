"""Checking a workflow definition before it is stored, and analysing what its net can reach."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cb.errors import ValidationError
from cb.workflow.conditions import Condition, ConditionSyntaxError
from cb.workflow.model import Workflow

# Ids appear in storage keys and event subjects (``events.<workflow>.<token>``): no dots.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_id(kind: str, value: str) -> None:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValidationError(f"{kind} {value!r} is invalid: use 1-128 letters, digits, '_' or '-'")


def validate(workflow: Workflow) -> None:
    """Raise ValidationError naming the first problem with the definition."""
    check_id("workflow id", workflow.id)
    if not workflow.name or not workflow.name.strip():
        raise ValidationError("workflow name must not be empty")
    if not workflow.places:
        raise ValidationError("a workflow needs at least one place")
    seen: set[str] = set()
    for place in workflow.places:
        if not isinstance(place, str) or not place.strip():
            raise ValidationError("place names must not be empty")
        if place in seen:
            raise ValidationError(f"place {place!r} is listed twice")
        seen.add(place)
    if workflow.initial_place not in seen:
        raise ValidationError(f"initial_place {workflow.initial_place!r} is not one of the places")
    ids: set[str] = set()
    for transition in workflow.transitions:
        if not transition.id or not transition.id.strip():
            raise ValidationError("transition ids must not be empty")
        if transition.id in ids:
            raise ValidationError(f"transition id {transition.id!r} is used twice")
        ids.add(transition.id)
        if not transition.from_places:
            raise ValidationError(f"transition {transition.id!r} has no from_places")
        for place in (*transition.from_places, transition.to_place):
            if place not in seen:
                raise ValidationError(f"transition {transition.id!r} refers to unknown place {place!r}")
        for index, source in enumerate(transition.conditions):
            try:
                Condition.parse(source)
            except ConditionSyntaxError as exc:
                raise ValidationError(
                    f"transition {transition.id!r} condition {index + 1} {source!r} is invalid: {exc}"
                ) from None


@dataclass(frozen=True)
class Analysis:
    """What a token starting in the initial place can and cannot reach (guards ignored)."""

    reachable_places: list[str]
    unreachable_places: list[str]
    terminal_places: list[str]
    dead_transitions: list[str]


def analyse(workflow: Workflow) -> Analysis:
    """Reachability from the initial place; a transition fires from any of its from_places."""
    reachable = {workflow.initial_place}
    frontier = [workflow.initial_place]
    while frontier:
        place = frontier.pop()
        for transition in workflow.transitions:
            if place in transition.from_places and transition.to_place not in reachable:
                reachable.add(transition.to_place)
                frontier.append(transition.to_place)
    outgoing = {p for t in workflow.transitions for p in t.from_places}
    return Analysis(
        reachable_places=[p for p in workflow.places if p in reachable],
        unreachable_places=[p for p in workflow.places if p not in reachable],
        terminal_places=[p for p in workflow.places if p not in outgoing],
        dead_transitions=[t.id for t in workflow.transitions if not reachable.intersection(t.from_places)],
    )
