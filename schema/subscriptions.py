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


@dataclass(frozen=True)
class SubscriptionSource:
    subject: Callable[[dict], str]
    root: Callable[[dict, Any], Any]


SOURCES: dict[str, SubscriptionSource] = {}


def register(field: str, subject: Callable[[dict], str], root: Callable[[dict, Any], Any]) -> None:
    """Feed the Subscription field ``field`` from the bus."""
    SOURCES[field] = SubscriptionSource(subject, root)
