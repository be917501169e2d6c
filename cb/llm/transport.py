"""HTTP to the providers: one pooled keep-alive ``requests.Session`` per deployment.

Each session has our :class:`~cb.llm.adapter.PoolAdapter` mounted, sized for the
concurrency one gevent worker sees (urllib3 keeps ``pool_maxsize`` connections per host),
with the worker's proxies and TLS context (read and built once, see :mod:`cb.llm.adapter`).
Connection problems become :class:`UpstreamError` (retryable) or :class:`UpstreamTimeout`;
error statuses are mapped by the provider; a response is always closed, also when the
caller stops reading early.

``Session.request`` re-merges the session's settings into every call (headers, cookies,
hooks, proxies, environment). A deployment's calls differ only in their body, so the
merged request is prepared once per (method, URL, headers); each call gets a copy of its
headers and its own JSON body and goes straight to the mounted adapter (only an actual
redirect goes through the session's redirect logic). The sessions keep no cookies (one
upstream's cookies are not every client's), which is also what makes a prepared template
safe to reuse.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import requests
import urllib3
from requests.cookies import RequestsCookieJar

from cb.config import Settings
from cb.llm.adapter import Headers, PoolAdapter, UpstreamNetwork
from cb.llm.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from cb.llm.providers.base import Deployment, Provider, UpstreamCall
from cb.llm.providers.errors import provider_label

POOL_SIZE = 512  # connections kept per upstream host and worker (gevent: many concurrent streams)
TEMPLATES_KEPT = 256  # prepared (method, URL, headers) per worker; client-supplied keys make more
ERROR_BODY_LIMIT = 64 * 1024
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
            raise provider.error(response.status_code, body, dict(response.headers))
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
        if call.json is not None:
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
        response = self.open(deployment, call, provider)
        label = provider_label(provider.type)
        try:
            return json.loads(response.raw.read(decode_content=True))
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise UpstreamTimeout(label) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            raise UpstreamError(label, "the connection broke while reading the answer", retryable=True) from None
        except ValueError:
            raise UpstreamError(label, "the provider answered with invalid JSON") from None
        finally:
            response.close()

    def lines(self, response: requests.Response, provider: Provider) -> Iterator[bytes]:
        """The body of a streamed response, line by line, as the bytes arrive (closed at the end)."""
        label = provider_label(provider.type)
        pending = b""
        try:
            for data in _arrivals(response):
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.rstrip(b"\r")
            if pending:
                yield pending
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


def _arrivals(response: requests.Response) -> Iterator[bytes]:
    """Body bytes as they arrive: per HTTP chunk, or whatever one read returns without a length."""
    if response.raw.chunked:
        yield from response.iter_content(chunk_size=None)
        return
    while data := response.raw.read1(65536, decode_content=True):
        yield data


def _host(url: str) -> str:
    """Scheme and host of ``url``, never its query (Gemini puts keys there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
