"""HTTP to the providers: one pooled keep-alive ``requests.Session`` per deployment.

Each session has our :class:`~cb.llm.adapter.PoolAdapter` mounted, sized for the
concurrency one gevent worker sees (urllib3 keeps ``pool_maxsize`` connections per host),
with the worker's proxies and TLS context (read and built once, see :mod:`cb.llm.adapter`).
Connection problems become :class:`UpstreamError` (retryable) or :class:`UpstreamTimeout`;
error statuses are mapped by the provider; a response is always closed, also when the
caller stops reading early.

Whatever an upstream sends, a call holds bounded memory and shares the worker's CPU: a
body is read in pieces of at most ``READ_SIZE`` bytes after decompression (urllib3 inflates
no more than it is asked for), counted against MAX_RESPONSE_BYTES by its inflated size,
a stream's lines are split in one pass over each piece (never rescanning what is held)
and bounded by MAX_STREAM_EVENT_BYTES, and a reader gives the other greenlets a turn
every ``YIELD_EVERY`` bytes: a fast local socket always has data, so gevent would
otherwise never switch.

``Session.request`` re-merges the session's settings into every call (headers, cookies,
hooks, proxies, environment). A deployment's calls differ only in their body, so the
merged request is prepared once per (method, URL, headers); each call gets a copy of its
headers and its own JSON body and goes straight to the mounted adapter (only an actual
redirect goes through the session's redirect logic). The sessions keep no cookies (one
upstream's cookies are not every client's), which is also what makes a prepared template
safe to reuse.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections.abc import Iterator, Mapping
from functools import partial
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import gevent
import requests
import urllib3
from requests.cookies import RequestsCookieJar

from cb.config import Settings
from cb.llm.adapter import Headers, PoolAdapter, UpstreamNetwork
from cb.llm.errors import AnswerTooLarge, InvalidRequest, UpstreamError, UpstreamTimeout
from cb.llm.providers.base import Deployment, Provider, UpstreamCall
from cb.llm.providers.errors import provider_label

POOL_SIZE = 512  # connections kept per upstream host and worker (gevent: many concurrent streams)
TEMPLATES_KEPT = 256  # prepared (method, URL, headers) per worker; client-supplied keys make more
ERROR_BODY_LIMIT = 64 * 1024
READ_SIZE = 64 * 1024  # most bytes one read returns, decompressed
YIELD_EVERY = 256 * 1024  # bytes read in a row before other greenlets get a turn
# a call's JSON body, compact and in UTF-8; made once (json.dumps with options makes an encoder per call)
_encode_body = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Transport:
    """Sends provider calls; owns the connection pools."""

    def __init__(self, settings: Settings, pool_size: int = POOL_SIZE):
        self.settings = settings
        self.pool_size = pool_size
        self.network = UpstreamNetwork.from_settings(settings)
        self._tls = None  # the worker's one TLS context, built with the first session
        self._sessions: dict[str, requests.Session] = {}
        self._adapters: dict[str, PoolAdapter] = {}
        self._templates: dict[tuple, requests.PreparedRequest] = {}
        self._lock = threading.Lock()

    def session(self, deployment: Deployment) -> requests.Session:
        """The keep-alive session of ``deployment`` (created on first use)."""
        session = self._sessions.get(deployment.id)
        if session is None:
            with self._lock:
                session = self._sessions.get(deployment.id)
                if session is None:
                    if self._tls is None:
                        self._tls = self.network.tls_context()
                    session = requests.Session()
                    adapter = PoolAdapter(self.network, self._tls, self.pool_size)
                    session.mount("http://", adapter)
                    session.mount("https://", adapter)
                    session.trust_env = False  # proxies and CAs are the adapter's, read once from Settings
                    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # keep no cookies
                    self._adapters[deployment.id] = adapter
                    self._sessions[deployment.id] = session
        return session

    def open(self, deployment: Deployment, call: UpstreamCall, provider: Provider) -> requests.Response:
        """Send ``call``; a 2xx response is returned open (the caller closes it)."""
        label = provider_label(provider.type)
        read = self.settings.read_timeout
        if call.stream:
            read = max(read, self.settings.first_token_timeout)
        try:
            response = self._send(deployment, call, (self.settings.connect_timeout, read))
        except requests.ConnectTimeout:
            raise UpstreamTimeout(label, f"could not connect to {_host(call.url)} in time") from None
        except requests.Timeout:
            raise UpstreamTimeout(label) from None
        except requests.RequestException:
            raise UpstreamError(label, f"could not reach {_host(call.url)}", retryable=True) from None
        if response.status_code >= 400:
            try:
                body = response.raw.read(ERROR_BODY_LIMIT, decode_content=True) or b""
            except Exception:  # the error body is best effort
                body = b""
            finally:
                response.close()
            error = provider.error(response.status_code, body, dict(response.headers))
            error.body = body  # the upstream's own words, which a pass-through relays unchanged
            error.headers = response.headers  # and the headers clients read on it (request-id, retry-after)
            raise error
        return response

    def _send(self, deployment: Deployment, call: UpstreamCall, timeout: tuple[float, float]) -> requests.Response:
        """What ``Session.send`` does for our calls, minus its per-call bookkeeping: the mounted
        adapter sends, and only an actual redirect goes through the session's redirect logic."""
        session = self.session(deployment)
        prepared = self._prepare(session, deployment, call)
        options = {"stream": True, "timeout": timeout, "verify": True, "cert": None, "proxies": {}}
        response = self._adapters[deployment.id].send(prepared, **options)
        if response.is_redirect:
            prepared._cookies = RequestsCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
            history = [response, *session.resolve_redirects(response, prepared, **options)]
            response = history.pop()
            response.history = history
        return response

    def _prepare(
        self, session: requests.Session, deployment: Deployment, call: UpstreamCall
    ) -> requests.PreparedRequest:
        """``call`` as ``session.request`` would prepare it, from a cached template plus the body."""
        key = (deployment.id, call.method, call.url, tuple(call.headers.items()))
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= TEMPLATES_KEPT:
                self._templates.clear()
            template = session.prepare_request(requests.Request(call.method, call.url, headers=call.headers))
            template.headers = Headers(template.headers)
            self._templates[key] = template
        prepared = requests.PreparedRequest()  # what template.copy() gives, without copying a cookie jar
        prepared.method, prepared.url, prepared.hooks = template.method, template.url, template.hooks
        prepared.headers = template.headers.copy()
        if call.data is not None:
            prepared.body = call.data
            prepared.headers["Content-Length"] = str(len(call.data))
        elif call.json is not None:
            try:
                prepared.body = _encode_body(call.json).encode()
            except ValueError:
                raise InvalidRequest("The request holds a number JSON cannot carry (NaN or Infinity).", None) from None
            prepared.headers["Content-Length"] = str(len(prepared.body))
            if "Content-Type" not in prepared.headers:
                prepared.headers["Content-Type"] = "application/json"
        return prepared

    def json(self, deployment: Deployment, call: UpstreamCall, provider: Provider) -> dict:
        """Send ``call`` and return its JSON body."""
        body = self.answer(deployment, call, provider)[0]
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamError(provider_label(provider.type), "the provider answered with invalid JSON") from None

    def body(self, deployment: Deployment, call: UpstreamCall, provider: Provider) -> bytes | bytearray:
        """Send ``call`` and return its body's bytes (at most MAX_RESPONSE_BYTES)."""
        return self.answer(deployment, call, provider)[0]

    def answer(self, deployment: Deployment, call: UpstreamCall, provider: Provider) -> tuple[bytes, Mapping[str, str]]:
        """Send ``call``: its body's bytes (as :meth:`body`) and the upstream's response headers."""
        response = self.open(deployment, call, provider)
        label = provider_label(provider.type)
        try:
            return self._body(response, label), response.headers
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise UpstreamTimeout(label) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            raise UpstreamError(label, "the connection broke while reading the answer", retryable=True) from None
        finally:
            response.close()

    def _body(self, response: requests.Response, label: str) -> bytes:
        """A whole answer, at most MAX_RESPONSE_BYTES once inflated (:class:`AnswerTooLarge`).
        Kept in its pieces until it is complete: one join, never a buffer grown and copied."""
        limit = self.settings.max_response_bytes
        headers = response.headers
        length = headers.get("Content-Length")
        if length and length.isdigit() and "Content-Encoding" not in headers:
            if int(length) > limit:
                raise AnswerTooLarge(label, "the answer", "MAX_RESPONSE_BYTES", limit)
            if int(length) <= YIELD_EVERY:
                return response.raw.read(decode_content=True)  # the common case: one read
        try:
            return b"".join(list(arrivals(response, limit, label)))
        except AnswerTooLarge:
            _give_back_memory()
            raise

    def lines(self, response: requests.Response, provider: Provider, marked: bool = False) -> Iterator[bytes | None]:
        """The body of a streamed response, line by line, as the bytes arrive (closed at the end);
        ``marked``: with a None after the complete lines of each arrival, so a relay can pass on
        together what came together.

        Each arrival is split once; only the unfinished end of a line is kept, in pieces joined
        when its newline comes, so a line costs its length once however it is cut."""
        label = provider_label(provider.type)
        bound = self.settings.max_stream_event_bytes
        unfinished: list[bytes] = []
        held = 0
        try:
            for data in arrivals(response, self.settings.max_response_bytes, label):
                *complete, tail = data.split(b"\n")
                if complete:
                    if unfinished:
                        if held + len(complete[0]) > bound:
                            raise AnswerTooLarge(label, "a line of the stream", "MAX_STREAM_EVENT_BYTES", bound)
                        unfinished.append(complete[0])
                        complete[0] = b"".join(unfinished)
                        unfinished.clear()
                        held = 0
                    for line in complete:
                        yield line.rstrip(b"\r")
                if tail:
                    held += len(tail)
                    if held > bound:
                        raise AnswerTooLarge(label, "a line of the stream", "MAX_STREAM_EVENT_BYTES", bound)
                    unfinished.append(tail)
                if marked:
                    yield None
            if unfinished:
                yield b"".join(unfinished)
        except AnswerTooLarge:
            unfinished.clear()
            _give_back_memory()
            raise
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise UpstreamTimeout(label, "the stream stalled") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            raise UpstreamError(label, "the connection broke in the middle of the stream", retryable=True) from None
        finally:
            response.close()

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self._adapters.clear()
        self._templates.clear()


def arrivals(response: requests.Response, limit: int, label: str) -> Iterator[bytes]:
    """Body bytes as they arrive, decompressed, at most ``READ_SIZE`` at a time (per HTTP
    chunk, or whatever one read returns without a length); :class:`AnswerTooLarge` once more
    than ``limit`` bytes came. Every ``YIELD_EVERY`` bytes the other greenlets get a turn."""
    raw = response.raw
    if raw.chunked:
        pieces = raw.read_chunked(READ_SIZE, decode_content=True)
    else:
        pieces = iter(partial(raw.read1, READ_SIZE, decode_content=True), b"")
    total = 0
    mark = min(YIELD_EVERY, limit)  # the next byte count at which to look up: the limit, or a pause
    for data in pieces:
        total += len(data)
        if total > mark:
            if total > limit:
                raise AnswerTooLarge(label, "the answer", "MAX_RESPONSE_BYTES", limit)
            gevent.sleep(0)
            mark = min(total + YIELD_EVERY, limit)
        yield data


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim  # glibc
except (AttributeError, OSError):
    _malloc_trim = None


def _give_back_memory() -> None:
    """Return the free heap to the system after a large answer was dropped: glibc keeps it
    otherwise (the answer's 64 KiB pieces come from the heap, not from separate mappings)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _host(url: str) -> str:
    """Scheme and host of ``url``, never its query (Gemini puts keys there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
