"""MCP sessions in storage, so that any worker serves any session (NATS) and they survive a
worker's restart.

A session id is 256 random bits, given to the client once in the ``Mcp-Session-Id`` header;
storage keeps only its SHA-256 (a leaked store holds no usable id). A session expires when
unused for MCP_SESSION_IDLE_SECONDS; its last use is written back (compare-and-set, so a DELETE
on another worker is never undone) at most every tenth of that time, so a busy session costs
one read per request, not a write.

Expiry is two things. :meth:`SessionStore.get` refuses (and deletes) a session whose stored
last use is older than the idle time, by this worker's clock. And the bucket has that idle
time as its max age (:meth:`~cb.storage.Storage.set_max_age`): the store itself forgets an
entry that long after its last write. The last write of a session is the one that stamped its
last use (stamped just before it), so, with the workers' and NATS's clocks in step, the store
never forgets a live session and forgets every idle one, nobody reading the bucket to find them.

At most MCP_MAX_SESSIONS are open: ``initialize`` refuses when the bucket's
:meth:`~cb.storage.Storage.count` has reached it. That count costs the same however many
sessions there are (nats: the stream's message count, one answer for every worker and process).
It is never below the open sessions, and above them only by entries on their way out, each for
a bounded time: a session idle past its time until the store's expiry removes it (at once in
memory, moments later on NATS), and on NATS an ended session until its delete marker is purged
(right after the delete; a marker whose purge failed ages out with the max age). So a full
server admits again at the latest when sessions have gone unused for the idle time, never
locks clients out for good, and lets no more than the limit in but for workers starting
sessions at the same instant, which may pass it by a few. Not chosen: a counter in storage,
which sessions expiring without a decrement would drift upwards until it refused everyone.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass

from cb.errors import CircuitBreakerError, Conflict, NotFound
from cb.mcp.errors import SessionNotFound, TooManySessions
from cb.storage import Storage

BUCKET = "mcp_sessions"


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """One client's session: the protocol version agreed at ``initialize`` and who the client is."""

    id: str
    protocol_version: str
    client_name: str
    client_version: str
    created_at: float
    last_used_at: float

    @property
    def actor(self) -> str:
        """How token history names this client: ``mcp:<clientInfo.name>``."""
        return f"mcp:{self.client_name}"

    def stored(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "id"}


class SessionStore:
    """Creates, finds, refreshes and ends sessions in the ``mcp_sessions`` bucket."""

    def __init__(self, storage: Storage, max_sessions: int, idle_seconds: float, clock=time.time):
        self.storage = storage
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.clock = clock
        storage.set_max_age(BUCKET, idle_seconds)

    def create(self, protocol_version: str, client_name: str, client_version: str) -> Session:
        """A new session; TooManySessions when MCP_MAX_SESSIONS are open (see the module docstring)."""
        if self.storage.count(BUCKET) >= self.max_sessions:
            raise TooManySessions(self.max_sessions)
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), protocol_version, client_name, client_version, now, now)
        self.storage.create(BUCKET, _key(session.id), session.stored())
        return session

    def get(self, session_id: str) -> Session:
        """The live session with this id (its last use refreshed when due); SessionNotFound otherwise."""
        key = _key(session_id)
        entry = self.storage.get(BUCKET, key)
        now = self.clock()
        if entry is None:
            raise SessionNotFound()
        if self._expired(entry.value, now):
            self._drop(key)
            raise SessionNotFound()
        session = Session(id=session_id, **entry.value)
        if now - session.last_used_at > self.idle_seconds / 10:
            session = Session(**{**asdict(session), "last_used_at": now})
            try:  # compare-and-set: a DELETE on another worker meanwhile must not be undone
                self.storage.update(BUCKET, key, session.stored(), entry.revision)
            except Conflict:
                pass  # another request of this session refreshed it first
            except NotFound:
                raise SessionNotFound() from None
        return session

    def alive(self, session_id: str) -> bool:
        """Whether the session still exists (refreshing its last use, as :meth:`get` does)."""
        try:
            self.get(session_id)
        except SessionNotFound:
            return False
        except CircuitBreakerError:
            return True  # storage unreachable for a moment: no reason to end the stream
        return True

    def end(self, session_id: str) -> None:
        """End a session (DELETE); SessionNotFound if there is none."""
        self.get(session_id)
        self._drop(_key(session_id))

    def _expired(self, value: dict, now: float) -> bool:
        return now - float(value.get("last_used_at") or 0) > self.idle_seconds

    def _drop(self, key: str) -> None:
        try:
            self.storage.delete(BUCKET, key)
        except NotFound:
            pass  # another worker dropped it first
