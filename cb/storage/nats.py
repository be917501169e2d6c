"""NATS JetStream storage: KV buckets for entities, streams for logs, subjects for events.

Names, for a prefix ``cb`` (NATS_PREFIX, one per deployment):

* bucket ``tokens``  -> JetStream KV bucket ``cb_tokens`` (file storage, history 1);
  keys are escaped so any string is a valid key (see :func:`encode_key`); a delete writes
  KV's delete marker and then purges it, so a deleted key leaves nothing in the stream,
  and the stream's message count is the bucket's number of entries (:meth:`NatsStorage.count`);
  a bucket's max age (:meth:`NatsStorage.set_max_age`) is the stream's ``max_age``: the
  server removes a message that old (no marker), so an entry vanishes that long after
  its last write;
* log ``usage``      -> stream ``cb_usage`` on subject ``cb_log.usage`` (file storage);
* event ``events.w.t`` -> core NATS subject ``cb.events.w.t``;
* index ``tokens``, path ``(w, p, t)`` -> subject ``cb_idx.tokens.w.p.t`` in the stream
  ``cb_index`` (one message per subject, empty). A path is added by publishing to its
  subject and removed by purging the subject (no delete marker stays behind), and a
  prefix is listed with one STREAM.INFO request with ``subjects_filter``: the server
  answers from its subject tree, so the cost is that of the answer, and the answer is
  the set of subjects at one instant (complete, unlike a watch that races writers).

``url`` may name several servers, comma-separated (the nodes of one cluster; nats-py also
learns the others from the server). Every bucket and stream is created with ``replicas``
copies (NATS_REPLICAS); :func:`replica_report` says at start which existing ones differ.
A write returns only after JetStream acknowledged it (KV create/put/update and stream
publishes wait for the ack), so what a client was told is stored survives a node's loss.

nats-py runs on the asyncio loop of a :class:`~cb.storage.bridge.Bridge` (one OS thread per
process, started in :meth:`NatsStorage.connect`, so after gunicorn forks). Every call waits
with a timeout: when NATS is away, calls raise :class:`StorageUnavailable` at once (or
after :data:`OP_TIMEOUT` at worst) while nats-py reconnects in the background forever;
subscriptions resume by themselves after the reconnect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header, StorageType, StreamConfig

from cb import metrics
from cb.errors import Conflict, NotFound, StorageUnavailable, ValidationError
from cb.logs import get_logger
from cb.storage import Entry, Handler
from cb.storage.bridge import Bridge, BridgeTimeout

log = get_logger("storage")

CONNECT_TIMEOUT = 2.5  # seconds for the first connection, then we give up
OP_TIMEOUT = 4.0  # a greenlet never waits longer than this for one storage call
JS_TIMEOUT = 2.5  # JetStream API requests (KV get/put, stream info …)
RECONNECT_WAIT = 0.5
READ_BATCH = 1000
ELECTION_WAIT = 1.5  # seconds a call retries while a stream has no leader (new, or failing over)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KEY_SAFE = re.compile(r"[A-Za-z0-9_-]")
_KEY_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_WRONG_LAST_SEQUENCE = (10071, 10164)
MIN_MAX_AGE = 0.1  # seconds: the shortest max age nats-server accepts
KV_DUPLICATE_WINDOW = 120.0  # seconds: what nats-py gives a KV bucket, or its max age if shorter


def encode_key(key: str) -> str:
    """A valid NATS KV key for any string: letters, digits, ``_``, ``-`` kept, the rest ``=XX``."""
    if not key:
        raise ValidationError("empty key")
    if _KEY_PLAIN.fullmatch(key):  # ids (uuids, names) need no escaping: the common case, made cheap
        return key
    return "".join(c if _KEY_SAFE.match(c) else "".join(f"={b:02X}" for b in c.encode()) for c in key)


def decode_key(key: str) -> str:
    return re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), key.encode()).decode()


def server_url(url: str) -> str:
    """``url`` with its host replaced by an IPv4 address (name lookups hang in the loop thread)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        address = host
    except ValueError:
        if host == "localhost":
            address = "127.0.0.1"
        else:
            try:
                address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            except OSError:
                address = host  # connecting will fail and say so
    netloc = address if ":" not in address else f"[{address}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        auth = parts.username + (f":{parts.password}" if parts.password else "")
        netloc = f"{auth}@{netloc}"
    return urlunsplit((parts.scheme or "nats", netloc, parts.path, "", ""))


def server_urls(url: str) -> list[str]:
    """Each server of a comma-separated NATS_URL, resolved by :func:`server_url`."""
    return [server_url(part.strip()) for part in url.split(",") if part.strip()]


def _connect_timeout(url: str) -> float:
    """Time for the first connection: CONNECT_TIMEOUT per listed server (each may be down), at most three."""
    return CONNECT_TIMEOUT * min(3, max(1, len(server_urls(url))))


async def _open(url: str, **options) -> nats.NATS:
    """Connect within :func:`_connect_timeout` (nats-py alone would retry forever)."""
    client = nats.NATS()

    async def quiet(_exc: Exception) -> None:
        pass

    options.setdefault("error_cb", quiet)
    try:
        await asyncio.wait_for(
            client.connect(servers=server_urls(url), connect_timeout=CONNECT_TIMEOUT, **options), _connect_timeout(url)
        )
        await client.jetstream(timeout=JS_TIMEOUT).account_info()
    except BaseException:
        try:
            await asyncio.wait_for(client.close(), 1.0)
        except Exception:
            pass
        raise
    return client


def _failure(url: str, exc: BaseException) -> str:
    if isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError)):
        return f"Failed to connect to NATS server at {url}: JetStream is not enabled (run nats-server --jetstream)"
    return f"Failed to connect to NATS server at {url}"


def probe(url: str) -> bool:
    """Whether a JetStream NATS server answers at ``url``. Uses a short-lived loop, leaves nothing behind."""

    async def attempt() -> bool:
        try:
            client = await _open(url, allow_reconnect=False)
        except Exception as exc:
            log.debug("NATS probe failed: %r", exc)
            if "JetStream" in _failure(url, exc):
                log.error("Error: %s", _failure(url, exc))
            return False
        await client.close()
        return True

    return _run_once(attempt())


def _run_once(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def stream_names(prefix: str) -> dict[str, str]:
    """The JetStream stream behind each bucket, log and the index, by our name for it."""
    from cb.storage import BUCKETS, LOGS

    return {
        **{b: f"KV_{prefix}_{b}" for b in BUCKETS},
        **{g: f"{prefix}_{g}" for g in LOGS},
        "index": f"{prefix}_index",
    }


def replica_report(url: str, prefix: str, replicas: int) -> str | None:
    """One line naming the existing buckets and streams whose replica count is not ``replicas``
    (NATS keeps a stream's count until an operator changes it), or None when all agree."""

    async def attempt() -> str | None:
        client = await _open(url, allow_reconnect=False)
        js = client.jetstream(timeout=JS_TIMEOUT)

        async def replicas_of(stream: str) -> int | None:
            try:
                return (await js.stream_info(stream)).config.num_replicas or 1
            except nats.js.errors.NotFoundError:
                return None

        try:
            clustered = bool((client._server_info or {}).get("cluster"))
            names = list(stream_names(prefix).values())
            found = await asyncio.gather(*(replicas_of(n) for n in names))
        finally:
            await client.close()
        if replicas > 1 and not clustered:
            return (
                f"NATS_REPLICAS={replicas} but the NATS server at {url} is not part of a cluster: "
                "buckets and streams cannot be created (set NATS_REPLICAS=1, or run a JetStream cluster)"
            )
        differ = [
            f"{name} has {count}" for name, count in zip(names, found, strict=True) if count not in (None, replicas)
        ]
        if not differ:
            return None
        return (
            f"NATS_REPLICAS={replicas} but existing streams keep their replica count: {', '.join(differ)} "
            f"(change one with `nats stream edit <name> --replicas {replicas}`)"
        )

    try:
        return _run_once(attempt())
    except Exception as exc:  # the probe before this one already said whether NATS answers
        log.debug("replica check failed: %r", exc)
        return None


async def _led(attempt):
    """``attempt()``, tried again while no stream leader answers (a new replicated stream, or
    one electing a new leader after losing a node): "no responders" means no server took the
    request, so nothing was stored and trying again cannot store anything twice."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ELECTION_WAIT
    while True:
        try:
            return await attempt()
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


class _Subscription:
    def __init__(self, storage: NatsStorage, on_gap=None) -> None:
        self.storage = storage
        self.sub = None
        self.closed = False
        self.on_gap = on_gap  # called in the subscriber's hub (see NatsStorage._on_disconnected)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.storage._gap_listeners.discard(self)
        if self.sub is not None:
            self.storage._bridge.submit(self._unsubscribe())

    async def _unsubscribe(self) -> None:
        try:
            await self.sub.unsubscribe()
        except Exception:  # already gone with the connection: nothing to undo
            pass


class NatsStorage:
    """The ``nats`` backend. Not usable until :meth:`connect` (call it after forking)."""

    backend = "nats"

    def __init__(self, url: str, prefix: str = "cb", replicas: int = 1) -> None:
        if not _NAME.fullmatch(prefix):
            raise ValidationError(f"NATS prefix {prefix!r} may only contain letters, digits, '_' and '-'")
        self.url = url
        self.prefix = prefix
        self.replicas = replicas
        self._bridge = Bridge("nats-bridge")
        self._nc: nats.NATS | None = None
        self._js = None
        self._kv: dict[str, object] = {}  # touched only in the loop thread
        self._max_age: dict[str, float] = {}  # bucket -> seconds, applied when the bucket is opened
        self._streams: set[str] = set()
        self._gap_listeners: set[_Subscription] = set()  # added to in the loop thread
        self._instance = uuid.uuid4().hex  # tells this process's gap notices from the others'
        self._gaps_subject = f"{prefix}._gaps"

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        if self._nc is not None:
            return
        self._bridge.start()
        options = dict(
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,
            ping_interval=5,
            max_outstanding_pings=2,
            name=f"circuit-breaker-{self.prefix}",
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:
            self._nc = self._bridge.run(_open(self.url, **options), _connect_timeout(self.url) + 2)
        except Exception as exc:
            self._bridge.stop()
            raise StorageUnavailable(_failure(self.url, exc)) from None
        self._js = self._nc.jetstream(timeout=JS_TIMEOUT)
        self._call(self._listen_to_gap_notices())
        metrics.nats_connected.set(1)
        log.info("Connected to NATS server at %s (prefix %s)", self.url, self.prefix)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        metrics.nats_connected.set(0)
        if self._nc is not None:  # not when we close it ourselves
            log.warning("Disconnected from NATS server at %s; reconnecting", self.url)
            # core NATS keeps nothing for a subscriber that is away: events published until we
            # are back are lost to it, so those who asked are told now
            self._tell_gap_listeners()

    def _tell_gap_listeners(self) -> None:
        for subscription in list(self._gap_listeners):
            self._gap_listeners.discard(subscription)
            subscription.port.spawn(subscription.on_gap)

    async def _on_reconnected(self) -> None:
        metrics.nats_connected.set(1)
        log.info("Reconnected to NATS server at %s", self.url)
        # events this process published just before the connection dropped may never have
        # left it: every other process's subscribers hear that they may have missed some
        try:
            await self._nc.publish(self._gaps_subject, json.dumps({"from": self._instance}).encode())
        except Exception as exc:  # noqa: BLE001 - the connection went again; the next reconnect says it
            log.debug("could not announce a possible gap: %r", exc)

    async def _listen_to_gap_notices(self) -> None:
        async def on_notice(msg) -> None:
            try:
                sender = json.loads(msg.data).get("from")
            except (ValueError, AttributeError):
                return
            if sender != self._instance:
                self._tell_gap_listeners()

        await self._nc.subscribe(self._gaps_subject, cb=on_notice)

    def close(self) -> None:
        client, self._nc = self._nc, None
        if client is not None:
            try:
                self._bridge.run(self._shutdown(client), 3.0)
            except Exception:
                pass
        self._bridge.stop()

    @staticmethod
    async def _shutdown(client: nats.NATS) -> None:
        try:
            await client.flush(timeout=1)  # what was published reaches the server
        except Exception:
            pass
        await client.close()

    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _call(self, coro, timeout: float = OP_TIMEOUT):
        """Run a coroutine on the loop; NATS failures become StorageUnavailable."""
        if not self.is_connected():
            coro.close()
            raise StorageUnavailable(f"NATS server at {self.url} is unavailable")
        try:
            return self._bridge.run(coro, timeout)
        except BridgeTimeout:
            raise StorageUnavailable(f"NATS server at {self.url} did not answer in time") from None
        except nats.errors.MaxPayloadError:
            raise ValidationError("value too large for NATS") from None
        except nats.js.errors.APIError as exc:
            raise StorageUnavailable(f"NATS server at {self.url} refused: {exc.description}") from None
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise StorageUnavailable(f"NATS server at {self.url} is unavailable ({type(exc).__name__})") from None

    # -- status -------------------------------------------------------------------------

    async def _status(self) -> dict:
        async def stream(name: str) -> dict | None:
            try:
                info = await self._js.stream_info(name)
            except nats.js.errors.NotFoundError:
                return None
            return {
                "stream": name,
                "replicas": info.config.num_replicas or 1,
                "messages": info.state.messages,
                "bytes": info.state.bytes,
            }

        names = stream_names(self.prefix)
        found = await asyncio.gather(*(stream(n) for n in names.values()))
        info = self._nc._server_info or {}
        return {
            "backend": "nats",
            "url": self.url,
            "prefix": self.prefix,
            "server_version": info.get("version"),
            "jetstream": bool(info.get("jetstream", True)),
            "stores": dict(zip(names, found, strict=True)),
        }

    def status(self) -> dict:
        """The server's version and, per bucket, log and index, its JetStream stream (None where
        none was created yet): replicas, messages, bytes."""
        return self._call(self._status())

    # -- key-value ----------------------------------------------------------------------

    async def _bucket(self, bucket: str):
        kv = self._kv.get(bucket)
        if kv is None:
            if not _NAME.fullmatch(bucket):
                raise ValidationError(f"invalid bucket name {bucket!r}")
            name = f"{self.prefix}_{bucket}"
            max_age = self._max_age.get(bucket)
            try:
                kv = await self._js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                try:
                    kv = await self._js.create_key_value(
                        bucket=name,
                        history=1,
                        storage=StorageType.FILE,
                        direct=self.replicas == 1,
                        replicas=self.replicas,
                        ttl=max_age,
                    )
                    max_age = None  # created with it
                except nats.js.errors.BadRequestError:  # created concurrently by another worker
                    kv = await self._js.key_value(name)
            if max_age is not None:
                await self._keep_max_age(kv._stream, max_age)
            if self.replicas > 1:
                # a direct get may be answered by a follower still catching up (a restarted
                # node): read from the leader, so a token just acknowledged is found
                kv._direct = False
            self._kv[bucket] = kv
        return kv

    async def _keep_max_age(self, stream: str, max_age: float) -> None:
        """Give an existing bucket's stream this max age, if it has another (an operator changed
        the setting, or the bucket was created by a version without it)."""
        config = (await self._js.stream_info(stream)).config
        if abs((config.max_age or 0) - max_age) < 0.001:
            return
        log.info(
            "Bucket %s: entries now vanish %gs after their last write (was %s)",
            stream,
            max_age,
            f"{config.max_age:g}s" if config.max_age else "never",
        )
        config.max_age = max_age
        config.duplicate_window = min(KV_DUPLICATE_WINDOW, max_age)  # the server wants it within the max age
        await _led(lambda: self._js.update_stream(config))

    def set_max_age(self, bucket: str, seconds: float) -> None:
        self._max_age[bucket] = max(MIN_MAX_AGE, seconds)

    async def _count(self, bucket: str) -> int:
        kv = await self._bucket(bucket)
        return (await _led(lambda: self._js.stream_info(kv._stream))).state.messages

    def count(self, bucket: str) -> int:
        return self._call(self._count(bucket))

    async def _get(self, bucket: str, key: str) -> Entry | None:
        kv = await self._bucket(bucket)
        try:
            entry = await _led(lambda: kv.get(encode_key(key)))
        except nats.js.errors.KeyNotFoundError:
            return None
        return Entry(key, json.loads(entry.value), entry.revision)

    def get(self, bucket: str, key: str) -> Entry | None:
        return self._call(self._get(bucket, key))

    async def _list(self, bucket: str) -> list[Entry]:
        kv = await self._bucket(bucket)
        state = (await self._js.stream_info(f"KV_{self.prefix}_{bucket}")).state
        if not state.messages:
            return []
        # A key updated while the watch runs loses its old message (history 1) and gets a
        # new one beyond the stream's last sequence as read above, so stopping there would
        # skip it. Read on until the watcher has caught up with the stream (its init
        # marker: no message pending) and has passed that last sequence.
        watcher = await kv.watchall(inactive_threshold=30)
        found: dict[str, Entry] = {}
        caught_up = passed = False
        try:
            while not (caught_up and passed):
                item = await watcher.updates(timeout=JS_TIMEOUT)
                if item is None:
                    caught_up = True
                    continue
                key = decode_key(item.key)
                if item.operation is None and item.value:
                    found[key] = Entry(key, json.loads(item.value), item.revision)
                else:
                    found.pop(key, None)
                # the last sequence may be a purged delete marker that never comes: nothing
                # pending after an entry also says every message up to it was read
                passed = passed or item.revision >= state.last_seq or item.delta == 0
                caught_up = caught_up or item.delta == 0
        finally:
            await watcher.stop()
        return list(found.values())

    def list(self, bucket: str) -> list[Entry]:
        return self._call(self._list(bucket))

    async def _get_many(self, bucket: str, keys: list[str]) -> list[Entry | None]:
        return list(await asyncio.gather(*(self._get(bucket, key) for key in keys)))

    def get_many(self, bucket: str, keys: list[str]) -> list[Entry | None]:
        if not keys:
            return []
        return self._call(self._get_many(bucket, keys))

    async def _write(self, bucket: str, key: str, value: dict, revision: int | None, create: bool) -> int:
        kv = await self._bucket(bucket)
        data = json.dumps(value, separators=(",", ":")).encode()
        try:
            if create:
                return await _led(lambda: kv.create(encode_key(key), data))
            if revision is None:
                return await _led(lambda: kv.put(encode_key(key), data))
            return await _led(lambda: kv.update(encode_key(key), data, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            if create:
                raise Conflict(f"{bucket} entry {key!r} already exists") from None
            if await self._get(bucket, key) is None:
                raise NotFound(f"{bucket} entry {key!r} not found") from None
            raise Conflict(f"{bucket} entry {key!r} was changed concurrently") from None

    def create(self, bucket: str, key: str, value: dict) -> int:
        return self._call(self._write(bucket, key, value, None, create=True))

    def put(self, bucket: str, key: str, value: dict) -> int:
        return self._call(self._write(bucket, key, value, None, create=False))

    def update(self, bucket: str, key: str, value: dict, revision: int) -> int:
        return self._call(self._write(bucket, key, value, revision, create=False))

    async def _delete(self, bucket: str, key: str, revision: int | None) -> None:
        current = await self._get(bucket, key)
        if current is None:
            raise NotFound(f"{bucket} entry {key!r} not found")
        kv = await self._bucket(bucket)
        subject = f"{kv._pre}{encode_key(key)}"
        headers = {"KV-Operation": "DEL"}
        if revision is not None:
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(revision)
        try:
            ack = await _led(lambda: self._js.publish(subject, b"", stream=kv._stream, headers=headers))
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                if await self._get(bucket, key) is None:
                    raise NotFound(f"{bucket} entry {key!r} not found") from None
                raise Conflict(f"{bucket} entry {key!r} was changed concurrently") from None
            raise
        # The delete marker replaced the value (history 1) but would stay in the stream for
        # good, one per key ever deleted. Purge it, and only it: messages of this key up to
        # and including the marker's sequence, so a value created meanwhile is kept.
        try:
            await _led(lambda: self._js.purge_stream(kv._stream, subject=subject, seq=ack.seq + 1))
        except Exception as exc:  # noqa: BLE001 - the key is deleted; a marker left over is harmless
            log.debug("delete marker of %s entry %r kept (%r)", bucket, key, exc)

    def delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        self._call(self._delete(bucket, key, revision))

    # -- indexes ------------------------------------------------------------------------

    def _index_subject(self, index: str, path: tuple[str, ...]) -> str:
        if not _NAME.fullmatch(index):
            raise ValidationError(f"invalid index name {index!r}")
        return ".".join((f"{self.prefix}_idx", index, *(encode_key(part) for part in path)))

    async def _index_stream(self) -> str:
        stream = f"{self.prefix}_index"
        if stream not in self._streams:
            config = StreamConfig(
                name=stream,
                subjects=[f"{self.prefix}_idx.>"],
                storage=StorageType.FILE,
                max_msgs_per_subject=1,
                num_replicas=self.replicas,
            )
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.stream_info(stream)
            self._streams.add(stream)
        return stream

    async def _index_add(self, subject: str) -> None:
        stream = await self._index_stream()
        await _led(lambda: self._js.publish(subject, b"", stream=stream))

    def index_add(self, index: str, path: tuple[str, ...]) -> None:
        self._call(self._index_add(self._index_subject(index, path)))

    async def _index_remove(self, subject: str) -> None:
        stream = await self._index_stream()
        await _led(lambda: self._js.purge_stream(stream, subject=subject))

    def index_remove(self, index: str, path: tuple[str, ...]) -> None:
        self._call(self._index_remove(self._index_subject(index, path)))

    async def _index_scan(self, subjects_filter: str) -> list[str]:
        stream = await self._index_stream()
        subjects: list[str] = []
        while True:  # the server pages long answers
            request = json.dumps({"subjects_filter": subjects_filter, "offset": len(subjects)}).encode()
            info = await self._js._api_request(f"{self._js._prefix}.STREAM.INFO.{stream}", request, timeout=JS_TIMEOUT)
            page = list((info.get("state") or {}).get("subjects") or ())
            subjects.extend(page)
            if not page or len(subjects) >= info.get("total", 0):
                return subjects

    def index_scan(self, index: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        base = self._index_subject(index, prefix)
        skip = len(f"{self.prefix}_idx.{index}.")
        subjects = self._call(self._index_scan(base + ".>"))
        return sorted(tuple(decode_key(part) for part in subject[skip:].split(".")) for subject in subjects)

    # -- logs ---------------------------------------------------------------------------

    def _log_names(self, log_name: str) -> tuple[str, str]:
        if not _NAME.fullmatch(log_name):
            raise ValidationError(f"invalid log name {log_name!r}")
        return f"{self.prefix}_{log_name}", f"{self.prefix}_log.{log_name}"

    async def _append(self, stream: str, subject: str, data: bytes, headers: dict | None = None) -> int:
        if stream not in self._streams:
            config = StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE, num_replicas=self.replicas)
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:  # exists (maybe with settings changed by an operator)
                await self._js.stream_info(stream)
            self._streams.add(stream)
        ack = await _led(lambda: self._js.publish(subject, data, stream=stream, headers=headers))
        return ack.seq

    def append(self, log: str, record: dict) -> int:
        stream, subject = self._log_names(log)
        # A record with an id is sent with it as Nats-Msg-Id: appending it again after a timeout
        # whose ack was lost (the ledger retries) is dropped by JetStream's duplicate window.
        headers = {"Nats-Msg-Id": str(record["id"])} if record.get("id") else None
        return self._call(self._append(stream, subject, json.dumps(record, separators=(",", ":")).encode(), headers))

    async def _open_reader(self, stream: str, subject: str, after: int):
        try:
            info = await self._js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return None, 0
        last = info.state.last_seq
        if last <= after:
            return None, last
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30,
        )
        sub = await self._js.pull_subscribe(subject, durable=None, stream=stream, config=config)
        return sub, last

    @staticmethod
    async def _fetch(sub, count: int) -> list[tuple[int, bytes]]:
        try:
            msgs = await sub.fetch(count, timeout=JS_TIMEOUT)
        except nats.errors.TimeoutError:
            return []
        return [(m.metadata.sequence.stream, m.data) for m in msgs]

    async def _close_reader(self, sub) -> None:
        try:
            await sub.unsubscribe()
            await self._js.delete_consumer(sub._stream, sub._consumer)
        except Exception:  # the consumer expires by itself after its inactive threshold
            pass

    def read(self, log: str, after: int = 0) -> Iterator[tuple[int, dict]]:
        """Records with a sequence above ``after``, up to the last one when the read began."""
        stream, subject = self._log_names(log)
        sub, last = self._call(self._open_reader(stream, subject, after))
        if sub is None:
            return
        cursor = after
        try:
            while cursor < last:
                batch = self._call(self._fetch(sub, min(READ_BATCH, last - cursor)))
                if not batch:
                    break
                for seq, data in batch:
                    cursor = seq
                    yield seq, json.loads(data)
        finally:
            self._bridge.submit(self._close_reader(sub))

    # -- events -------------------------------------------------------------------------

    @staticmethod
    async def _publish(client, subject: str, data: bytes) -> None:
        try:
            await client.publish(subject, data)
        except Exception as exc:  # noqa: BLE001 - nobody waits for a publish: say what was lost
            log.warning("event on %s not published (%s)", subject, type(exc).__name__)

    def publish(self, subject: str, event: dict) -> None:
        """Hand the event to the connection without waiting: core NATS publishing only
        appends to the client's outgoing buffer, and tasks start in the order they are
        submitted, so one greenlet's events keep their order."""
        if not self.is_connected():
            raise StorageUnavailable(f"NATS server at {self.url} is unavailable")
        data = json.dumps(event, separators=(",", ":")).encode()
        if len(data) > self._nc.max_payload:
            raise ValidationError("value too large for NATS")
        # the client as it is now: a close() right after still flushes what was handed over
        self._bridge.submit(self._publish(self._nc, f"{self.prefix}.{subject}", data))

    async def _subscribe(self, subject: str, callback):
        return await self._nc.subscribe(subject, cb=callback)

    def subscribe(self, subject: str, handler: Handler, on_gap=None) -> _Subscription:
        port = self._bridge.port()  # handlers run in greenlets of the subscriber's hub
        subscription = _Subscription(self, on_gap)
        subscription.port = port
        skip = len(self.prefix) + 1

        def run(name: str, event: dict) -> None:
            if not subscription.closed:
                handler(name, event)

        async def on_message(msg) -> None:
            try:
                event = json.loads(msg.data)
            except ValueError:
                log.warning("Ignoring a non-JSON event on %s", msg.subject)
                return
            port.spawn(run, msg.subject[skip:], event)

        subscription.sub = self._call(self._subscribe(f"{self.prefix}.{subject}", on_message))
        if on_gap is not None:
            self._bridge.submit(self._listen_for_gaps(subscription))
        return subscription

    async def _listen_for_gaps(self, subscription: _Subscription) -> None:
        if not subscription.closed:
            self._gap_listeners.add(subscription)
