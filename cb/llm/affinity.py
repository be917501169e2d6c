"""Session affinity: the requests of one agent session stay on one deployment while it is healthy.

Two reasons. Thinking signatures and encrypted reasoning cannot cross deployments (OpenAI
answers ``invalid_encrypted_content``), and a prompt cache pays only on the deployment that
wrote it. A session is known by Claude Code's ``X-Claude-Code-Session-Id`` header, Codex's
``session-id`` header or its body's ``prompt_cache_key``; failing those, on the agent APIs
(Messages, Responses), by a hash of the conversation's first user message, which every later
request of the session repeats.

A Responses request continuing a relayed response (``previous_response_id``) goes first to
the deployment that stored it (:func:`first`, from the note in storage that every worker reads).

The gateway orders a plan's routes with :meth:`SessionAffinity.order` (the deployment that
last served the session first, when the router still offers it: a deployment whose breaker
opened is not offered, and the session moves) and remembers who served with
:meth:`SessionAffinity.remember`. Memory is bounded: at most ``capacity`` sessions, each
forgotten ``ttl`` seconds after its last request. The table is per worker: with several
workers a session may settle on a different deployment in each, which costs at most one
cache miss per worker; sharing it through storage would add a round trip to every request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

SESSION_HEADERS = ("x-claude-code-session-id", "session-id")
CAPACITY = 10_000
TTL_SECONDS = 3600.0


def session_of(headers: Mapping[str, str], body: Any, by_content: bool) -> str | None:
    """The agent session a request belongs to, or None. ``by_content``: when neither a header nor
    ``prompt_cache_key`` names it, hash the first user message (Messages and Responses bodies)."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    if not isinstance(body, dict):
        return None
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    if not by_content:
        return None
    text = _first_user_text(body)
    return "h:" + hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest() if text else None


def _first_user_text(body: dict) -> str:
    """The text of a Messages or Responses body's first user turn (cache markers, which move
    between a session's requests, left out)."""
    turns = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    if isinstance(turns, str):
        return turns
    for turn in turns if isinstance(turns, list) else ():
        if isinstance(turn, dict) and turn.get("role") == "user":
            return _text(turn.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text") or "" for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def first(pairs: list[tuple], deployment: str) -> list[tuple]:
    """``pairs`` of (route, …) with ``deployment``'s route of the model asked for first, if it
    is among them (fallback routes keep their place)."""
    for i, pair in enumerate(pairs):
        route = pair[0]
        if route.deployment.id == deployment and not route.fallback:
            return [pair, *pairs[:i], *pairs[i + 1 :]] if i else pairs
    return pairs


class SessionAffinity:
    """Which deployment served each recent session (per requested model), bounded in size and age."""

    def __init__(self, capacity: int = CAPACITY, ttl: float = TTL_SECONDS):
        self.capacity, self.ttl = capacity, ttl
        self._served: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def preferred(self, session: str, model: str) -> str | None:
        """The deployment that last served ``session`` for ``model``, if it did recently."""
        entry = self._served.get((session, model))
        if entry is None:
            return None
        if time.monotonic() - entry[1] > self.ttl:
            del self._served[(session, model)]
            return None
        return entry[0]

    def order(self, session: str | None, model: str, pairs: list[tuple]) -> list[tuple]:
        """``pairs`` of (route, …) with the session's deployment first, if it is among the
        routes of the model asked for (fallback routes keep their place)."""
        deployment = self.preferred(session, model) if session else None
        return first(pairs, deployment) if deployment else pairs

    def remember(self, session: str, model: str, deployment: str) -> None:
        key = (session, model)
        self._served[key] = (deployment, time.monotonic())
        self._served.move_to_end(key)
        while len(self._served) > self.capacity:
            self._served.popitem(last=False)
