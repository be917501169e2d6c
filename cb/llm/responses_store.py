"""Stored Responses API responses (``store: true``): retrieved by id, continued with
``previous_response_id``, deleted, and expired after RESPONSES_RETENTION_SECONDS.

Each entry keeps the rendered response, the conversation up to and including it (as
canonical messages, so a continuation reads one entry, not a chain) and the client key
that created it: another key cannot see it. A response relayed to OpenAI as it came
(:mod:`cb.llm.passthrough`) is stored by OpenAI; its entry here keeps only which deployment
holds it and the client key, so that key alone can retrieve or delete it through the gateway. Entries live in the ``responses`` bucket of
storage (memory, or NATS KV so any worker can continue a conversation). Expiry reads
only what it deletes: each entry is indexed under the hour it expires in, and a cursor
in storage says which past hour comes next.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from cb.errors import NotFound
from cb.llm.types import ContentPart, Message, ToolCall
from cb.logs import get_logger

log = get_logger("llm.responses")

BUCKET = "responses"
INDEX = "responses_expiry"
META = "meta"
CURSOR_KEY = "responses_expiry"
EXPIRY_EVERY_SECONDS = 60.0  # how often one worker's writes also expire old entries
HOURS_PER_EXPIRY = 24


def _hour(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H")


def dump_messages(messages: list[Message]) -> list[dict]:
    return [asdict(m) for m in messages]


def load_messages(raw: list[dict]) -> list[Message]:
    messages = []
    for m in raw:
        content = m.get("content")
        if isinstance(content, list):
            content = [ContentPart(**p) for p in content]
        messages.append(
            Message(
                m["role"],
                content,
                [ToolCall(**c) for c in m.get("tool_calls") or []],
                m.get("tool_call_id"),
                m.get("name"),
            )
        )
    return messages


class ResponseStore:
    """Stored responses of one storage, kept for ``retention_seconds``."""

    def __init__(self, storage, retention_seconds: float):
        self.storage = storage
        self.retention = retention_seconds
        self._expired_at = 0.0

    def save(self, response: dict, history: list[Message], api_key_id: str | None) -> None:
        expires = time.time() + self.retention
        self.storage.index_add(INDEX, (_hour(expires), response["id"]))
        self.storage.put(
            BUCKET,
            response["id"],
            {"response": response, "history": dump_messages(history), "api_key_id": api_key_id, "expires_at": expires},
        )
        if time.monotonic() - self._expired_at > EXPIRY_EVERY_SECONDS:
            self._expired_at = time.monotonic()
            try:
                self.expire()
            except Exception:
                log.exception("could not expire stored responses")

    def remember_relayed(self, response_id: str, deployment_id: str, api_key_id: str | None) -> None:
        """A response a deployment stored itself: where it is, and whose it is."""
        expires = time.time() + self.retention
        self.storage.index_add(INDEX, (_hour(expires), response_id))
        self.storage.put(
            BUCKET, response_id, {"relayed": deployment_id, "api_key_id": api_key_id, "expires_at": expires}
        )

    def relayed(self, response_id: str, api_key_id: str | None) -> str | None:
        """The deployment that stored a relayed response of this client key, or None."""
        entry = self._entry(response_id, api_key_id)
        return entry.value.get("relayed") if entry else None

    def _entry(self, response_id: str, api_key_id: str | None):
        entry = self.storage.get(BUCKET, response_id)
        if entry is None or entry.value.get("api_key_id") != api_key_id:
            return None
        if entry.value.get("expires_at", 0) < time.time():
            return None
        return entry

    def get(self, response_id: str, api_key_id: str | None) -> dict | None:
        """The stored response, or None (unknown, expired, or stored by another client key)."""
        entry = self._entry(response_id, api_key_id)
        return entry.value.get("response") if entry else None

    def history(self, response_id: str, api_key_id: str | None) -> list[Message] | None:
        """The conversation up to and including the response, to continue it."""
        entry = self._entry(response_id, api_key_id)
        return load_messages(entry.value["history"]) if entry and "history" in entry.value else None

    def delete(self, response_id: str, api_key_id: str | None) -> bool:
        entry = self._entry(response_id, api_key_id)
        if entry is None:
            return False
        try:
            self.storage.delete(BUCKET, response_id)
        except NotFound:
            return False
        self.storage.index_remove(INDEX, (_hour(entry.value["expires_at"]), response_id))
        return True

    def expire(self, at: float | None = None) -> int:
        """Delete entries whose expiry hour has passed, from the stored cursor on; returns how many."""
        at = time.time() if at is None else at
        now = datetime.fromtimestamp(at, UTC).replace(minute=0, second=0, microsecond=0)
        cursor = self.storage.get(META, CURSOR_KEY)
        hour = datetime.strptime(cursor.value["hour"], "%Y%m%d%H").replace(tzinfo=UTC) if cursor else now
        deleted = 0
        for _ in range(HOURS_PER_EXPIRY):
            if hour >= now:  # this hour's entries are not all past their expiry yet
                break
            key = hour.strftime("%Y%m%d%H")
            for path in self.storage.index_scan(INDEX, (key,)):
                try:
                    self.storage.delete(BUCKET, path[-1])
                    deleted += 1
                except NotFound:
                    pass
                self.storage.index_remove(INDEX, path)
            hour += timedelta(hours=1)
        if cursor is None or hour.strftime("%Y%m%d%H") != cursor.value["hour"]:
            self.storage.put(META, CURSOR_KEY, {"hour": hour.strftime("%Y%m%d%H")})
        if deleted:
            log.info("deleted %d stored response(s) past RESPONSES_RETENTION_SECONDS", deleted)
        return deleted
