"""Client API keys: created once, stored only as SHA-256 hashes, revocable everywhere.

A key is ``cb-`` plus 43 URL-safe random characters. The plaintext leaves the server
exactly once, in the answer to ``createApiKey``; the ``api_keys`` bucket holds the
hash (its storage key), a short display prefix, the limits and the timestamps. Each
worker caches lookups for at most :data:`CACHE_TTL` seconds, so a revocation made on
any worker is seen by every worker within that time. Keys from ``CB_API_KEYS`` live in
the settings, never in storage.

A key is found by its id through the index ``api_keys``: one path ``(id, hash)`` per key,
added before the key is stored (so the index holds every stored key; no key is ever
deleted), so a revocation reads one entry, not the bucket. Keys stored before the index
existed are indexed once by :meth:`KeyStore.migrate`, at a server's start (layout v2).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field

from cb.errors import Conflict, NotFound, ValidationError
from cb.logs import get_logger
from cb.security.errors import InvalidApiKey, ModelNotAllowed
from cb.storage import Entry, Storage

log = get_logger("security")

BUCKET = "api_keys"
INDEX = "api_keys"
META = "meta"
LAYOUT_KEY = "api_keys_layout"
LAYOUT_VERSION = 2  # v1: no index by id
KEY_PREFIX = "cb-"
CACHE_TTL = 0.5  # seconds; the bound on how stale a revocation can be on another worker
TOUCH_EVERY = 60.0  # seconds between last_used_at writes per key and worker
_CACHE_MAX = 10_000


def hash_key(plaintext: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass
class ApiKey:
    """One client key's public record (everything but the plaintext)."""

    id: str
    name: str
    prefix: str
    key_hash: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    allowed_models: list[str] | None = None
    created_at: float = field(default_factory=time.time)
    last_used_at: float | None = None
    expires_at: float | None = None
    revoked: bool = False
    from_settings: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ApiKey:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def is_usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def allows(self, model: str) -> bool:
        """Whether the key may use ``model`` (``provider/name`` matches an allowed ``name`` too)."""
        if not self.allowed_models:
            return True
        return model in self.allowed_models or model.split("/", 1)[-1] in self.allowed_models


class KeyStore:
    """Creates, lists, revokes and authenticates client keys."""

    def __init__(self, storage: Storage, env_keys: tuple[str, ...] = (), clock=time.time):
        self.storage = storage
        self.clock = clock
        self._env = {
            hash_key(k): ApiKey(
                id=f"env-{i + 1}",
                name=f"CB_API_KEYS[{i}]",
                prefix=k[:6],
                key_hash=hash_key(k),
                created_at=0.0,
                from_settings=True,
            )
            for i, k in enumerate(env_keys)
        }
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._looking_up: set[str] = set()  # digests being read from storage right now
        self._touched: dict[str, float] = {}

    def create(
        self,
        name: str,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        allowed_models: list[str] | None = None,
        expires_at: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key: its record and the plaintext, which is never available again."""
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise ValidationError("name must be 1 to 200 characters")
        for label, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit)):
            if value is not None and value < 1:
                raise ValidationError(f"{label} must be at least 1")
        if expires_at is not None and expires_at <= self.clock():
            raise ValidationError("expires_at must be in the future")
        models = [m.strip() for m in allowed_models or [] if m and m.strip()] or None
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=name,
            prefix=plaintext[:10],
            key_hash=hash_key(plaintext),
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            allowed_models=models,
            created_at=self.clock(),
            expires_at=expires_at,
        )
        self.storage.index_add(INDEX, (record.id, record.key_hash))  # before the key exists: see the module
        self.storage.create(BUCKET, record.key_hash, record.to_dict())
        return record, plaintext

    def list(self) -> list[ApiKey]:
        """Every stored key, oldest first, without secrets."""
        keys = [ApiKey.from_dict(entry.value) for entry in self.storage.list(BUCKET)]
        return sorted(keys, key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked; every worker refuses it within :data:`CACHE_TTL` seconds."""
        for _ in range(10):
            entry = self._find(key_id)
            if entry is None:
                raise NotFound(f"API key {key_id!r} not found")
            record = ApiKey.from_dict(entry.value)
            record.revoked = True
            try:
                self.storage.update(BUCKET, entry.key, record.to_dict(), entry.revision)
            except Conflict:
                continue
            self._cache.pop(entry.key, None)
            return record
        raise Conflict(f"API key {key_id!r} is being changed concurrently; try again")

    def _find(self, key_id: str) -> Entry | None:
        """The stored entry of the key with this id, through the index (None if there is none)."""
        digests = [path[-1] for path in self.storage.index_scan(INDEX, (key_id,)) if len(path) == 2]
        for entry in self.storage.get_many(BUCKET, digests):
            if entry is not None and entry.value.get("id") == key_id:  # an index path may be stale
                return entry
        return None

    def migrate(self) -> int:
        """Index the keys stored before the index existed; returns how many were indexed.
        Idempotent (adding a path twice is one path) and safe while other workers run."""
        layout = self.storage.get(META, LAYOUT_KEY)
        if layout is not None and layout.value.get("version", 1) >= LAYOUT_VERSION:
            return 0
        indexed = 0
        for entry in self.storage.list(BUCKET):  # once per store, at the first start of this version
            if entry.value.get("id"):
                self.storage.index_add(INDEX, (entry.value["id"], entry.key))
                indexed += 1
        self.storage.put(META, LAYOUT_KEY, {"version": LAYOUT_VERSION})
        if indexed:
            log.info("indexed %d stored API key(s) by id", indexed)
        return indexed

    def authenticate(self, plaintext: str | None) -> ApiKey:
        """The key's record, or :class:`InvalidApiKey` (missing, unknown, revoked, expired)."""
        if not plaintext:
            raise InvalidApiKey(
                "Missing API key. Send it in the Authorization header (Bearer scheme) or in the api-key header."
            )
        digest = hash_key(plaintext)
        record = self._lookup(digest)
        if record is None:
            raise InvalidApiKey("Incorrect API key provided.")
        now = self.clock()
        if record.revoked:
            raise InvalidApiKey("This API key has been revoked.")
        if not record.is_usable(now):
            raise InvalidApiKey("This API key has expired.")
        if not record.from_settings:
            self._touch(digest, now)
        return record

    @staticmethod
    def check_model(record: ApiKey, model: str | None) -> None:
        if model and not record.allows(model):
            raise ModelNotAllowed(f"This API key is not allowed to use the model '{model}'.")

    def _lookup(self, digest: str) -> ApiKey | None:
        for known, record in self._env.items():
            if hmac.compare_digest(known, digest):
                return record
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and (cached[0] > now or digest in self._looking_up):
            return cached[1]  # fresh, or being looked up again by another request: the last answer meanwhile
        self._looking_up.add(digest)
        try:
            entry = self.storage.get(BUCKET, digest)
        finally:
            self._looking_up.discard(digest)
        record = ApiKey.from_dict(entry.value) if entry else None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL, record)
        return record

    def _touch(self, digest: str, now: float) -> None:
        """Record last_used_at, at most once a minute per key on this worker."""
        if now - self._touched.get(digest, 0.0) < TOUCH_EVERY:
            return
        self._touched[digest] = now
        entry = self.storage.get(BUCKET, digest)
        if entry is None:
            return
        value = dict(entry.value, last_used_at=now)
        try:
            self.storage.update(BUCKET, digest, value, entry.revision)
        except (Conflict, NotFound):
            pass  # another worker wrote it first, or it was just deleted: either way nothing is lost
