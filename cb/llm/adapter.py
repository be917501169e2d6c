"""A transport adapter of ours for ``requests``: each call goes straight into a urllib3 pool.

``requests`` stays the HTTP client; this is its documented extension point
(:class:`requests.adapters.BaseAdapter`, mounted on a session). What
``HTTPAdapter.send`` does on every call and our calls never need is left out: no
environment lookups (proxies and CA bundles are read once, from :class:`Settings`), no
per-call pool-key and TLS-context building, no CA-bundle path checks, no cookie jar
filled from each response. The pool of a URL is looked up once and kept; the TLS
context is built once and shared by every pool.

Proxies: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme, ``NO_PROXY`` exempting
names (with their subdomains), IP addresses, CIDR ranges or ``*``. https:// goes through
a CONNECT tunnel; http:// is forwarded with the absolute URL.

Every connection checks the address it actually reached: a link-local peer (cloud
metadata, 169.254.0.0/16, fe80::/10) is dropped before a byte is sent, whatever name
or DNS answer led there (see :mod:`cb.network`). Through a proxy the peer is the proxy,
so the target is checked too: an IP literal, or a name that resolves here, to a
link-local address is refused before the proxy is asked for it.
"""

from __future__ import annotations

import email.parser
import http.client
import ipaddress
import os.path
import re
import select
import socket
import ssl
import sys
from dataclasses import dataclass
from urllib.parse import unquote

import certifi
import requests
import urllib3
from gevent.monkey import get_original
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection, _ResponseOptions
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import SKIP_HEADER, Retry, Timeout, make_headers, parse_url
from urllib3.util.ssl_ import create_urllib3_context

from cb.network import forbidden_address, send_all

ROUTES_KEPT = 256  # URLs whose pool is remembered per adapter (Gemini puts the model in the path)
COALESCE_LIMIT = 1 << 20  # a body up to this size goes out in the same write as the head

_poll = get_original("select", "poll")
_NO_RETRIES = Retry(False, redirect=False)  # what urllib3 makes of retries=False on every call, made once


@dataclass(frozen=True)
class UpstreamNetwork:
    """How provider calls leave this machine: proxies and trusted CAs, read once at start."""

    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: tuple[str, ...] = ()
    ca_bundle: str | None = None

    @classmethod
    def from_settings(cls, settings) -> UpstreamNetwork:
        return cls(
            settings.http_proxy, settings.https_proxy, settings.no_proxy, settings.ca_bundle or settings.ssl_cert_file
        )

    def tls_context(self) -> ssl.SSLContext:
        """The one TLS context of a worker's provider connections: verified against the CA bundle."""
        context = create_urllib3_context()
        where = self.ca_bundle or certifi.where()
        if os.path.isdir(where):
            context.load_verify_locations(capath=where)
        else:
            context.load_verify_locations(cafile=where)
        return context

    def proxy_for(self, scheme: str, host: str, port: int) -> str | None:
        """The proxy URL for a target, or None to connect directly."""
        proxy = self.https_proxy if scheme == "https" else self.http_proxy
        if proxy is None or self.bypasses(host, port):
            return None
        return proxy

    def bypasses(self, host: str, port: int) -> bool:
        """Whether NO_PROXY exempts ``host`` (names match themselves and their subdomains)."""
        host = host.strip("[]").lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name, _, only_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
            if only_port and only_port != str(port):
                continue
            name = name.strip("[]").lstrip(".").rstrip(".")
            if address is not None:
                try:
                    if address in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
            elif host == name or host.endswith("." + name):
                return True
        return False


# -- reading a response's head ----------------------------------------------------------

_HEADER_LINE = re.compile(rb"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")


class _PlainMessage(http.client.HTTPMessage):
    """A plain head (every line ``Name: value``, read by :func:`_parse_headers`) answering
    ``get`` and ``items`` without the email policy's per-header work: http.client asks for
    four headers of every response and urllib3 copies them all. For such a head the policy
    returns every value unchanged (it rewrites only values with surrogates, which a head
    decoded from ISO-8859-1 cannot hold), so the answers are the same."""

    def get(self, name, failobj=None):
        name = name.lower()
        for key, value in self._headers:
            if key.lower() == name:
                return value
        return failobj

    def items(self):
        return list(self._headers)


def _parse_headers(fp, _class=http.client.HTTPMessage):
    """``http.client.parse_headers``, without the email parser for a plain head (every line
    ``Name: value``): the same message, about six times faster. Any other head (folded lines,
    a stray CR, a line that is not a header) goes through the email parser as before, so it
    gets the same message and defects."""
    lines = http.client._read_headers(fp)
    message = _PlainMessage() if _class is http.client.HTTPMessage else _class()
    for line in lines[:-1]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        message.set_raw(match[1].decode("ascii"), match[2].decode("iso-8859-1"))
    return message


# every response read through http.client (urllib3's, so ours) gets its head read this way
http.client.parse_headers = _parse_headers


# -- connections: a request's head in one pass, link-local peers refused -----------------


_USER_AGENT = f"User-Agent: {urllib3.connection._get_default_user_agent()}".encode()
_LINES_KEPT = 1024
_lines: dict[tuple, bytes] = {}  # (name, value) -> its head line, checked as http.client checks it


def _header_line(name, value) -> bytes | None:
    """``Name: value`` as http.client's ``putheader`` encodes and checks it (ValueError for a
    name or value it refuses), remembered: a provider's headers repeat on every request. None
    for urllib3's SKIP_HEADER, which only its own ``putheader`` understands."""
    line = _lines.get((name, value))
    if line is None:
        if value == SKIP_HEADER:
            return None
        raw_name = name.encode("ascii") if isinstance(name, str) else name
        if not http.client._is_legal_header_name(raw_name):
            raise ValueError(f"Invalid header name {raw_name!r}")
        if isinstance(value, str):
            raw_value = value.encode("latin-1")
        elif isinstance(value, int):
            raw_value = str(value).encode("ascii")
        else:
            raw_value = value
        if http.client._is_illegal_header_value(raw_value):
            raise ValueError(f"Invalid header value {raw_value!r}")
        if len(_lines) >= _LINES_KEPT:
            _lines.clear()
        line = _lines[(name, value)] = raw_name + b": " + raw_value
    return line


class _GuardedConnection(HTTPConnection):
    _holding = False  # sending a request whose head waits to go out with its body
    _head: bytes | None = None

    def request(self, method, url, body=None, headers=None, **options):
        """urllib3's ``request``, with the head and a body of bytes sent in one write: one
        packet for the upstream to read instead of two, and one system call fewer. A body of
        bytes with headers urllib3 need not rework (every request the gateway sends) has its
        head built in one pass (:meth:`_request_bytes`)."""
        if type(body) is bytes and len(body) <= COALESCE_LIMIT and headers and not options.get("chunked"):
            lines = self._head_lines(headers, len(body))
            if lines is not None:
                return self._request_bytes(method, url, body, lines, **options)
        self._holding = type(body) is bytes and len(body) <= COALESCE_LIMIT
        try:
            super().request(method, url, body=body, headers=headers, **options)
            if self._head is not None:  # no body followed after all
                super().send(self._head)
        finally:
            self._holding, self._head = False, None

    @staticmethod
    def _head_lines(headers, length: int) -> tuple[list[bytes], bool, bool] | None:
        """The header lines urllib3's ``request`` would put for a body of ``length`` bytes, and
        whether Host and Accept-Encoding are given; None when urllib3 must decide (chunked
        framing, a SKIP_HEADER)."""
        lines, names = [], set()
        for name, value in headers.items():
            line = _header_line(name, value)
            if line is None:
                return None
            lines.append(line)
            names.add(name.lower())
        if "transfer-encoding" in names:
            return None
        if "user-agent" not in names:
            lines.insert(0, _USER_AGENT)
        if "content-length" not in names:
            lines.insert(0, b"Content-Length: %d" % length)
        return lines, "host" in names, "accept-encoding" in names

    def _request_bytes(self, method, url, body, head, **options):
        """urllib3's ``request`` for a body of bytes, with the head lines worked out already."""
        lines, skip_host, skip_accept_encoding = head
        if self.sock is not None:
            self.sock.settimeout(self.timeout)
        self._response_options = _ResponseOptions(
            request_method=method,
            request_url=url,
            preload_content=options.get("preload_content", True),
            decode_content=options.get("decode_content", True),
            enforce_content_length=options.get("enforce_content_length", True),
        )
        self.putrequest(method, url, skip_accept_encoding=skip_accept_encoding, skip_host=skip_host)
        self._buffer.extend(lines)  # what http.client's putheader appends, line by line
        self._holding = True
        try:
            self.endheaders()
            self.send(body)  # with the head held by endheaders: one write
        finally:
            self._holding, self._head = False, None

    def send(self, data):
        if self._holding:
            if self._head is None:
                self._head = data
                return
            data, self._head, self._holding = self._head + data, None, False
        if self.sock is not None and type(data) is bytes and data:
            sys.audit("http.client.send", self, data)  # as http.client's send does
            send_all(self.sock, data)
        else:
            super().send(data)  # connecting first, or a file or iterable body

    @property
    def is_connected(self) -> bool:
        """Asked before a pooled connection is reused: a zero-timeout poll of the socket, made
        directly (gevent's ``poll`` arms a timer for it that expires at once, on every request)."""
        if self.sock is None:
            return False
        poller = _poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def _new_conn(self):
        sock = super()._new_conn()
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = ""
        if forbidden_address(peer):
            sock.close()
            raise NewConnectionError(self, f"{self.host} is a link-local or metadata address ({peer}), not allowed")
        return sock


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS = {"http": _GuardedPool, "https": _GuardedHTTPSPool}


def _refuse_link_local_target(host: str) -> None:
    """Through a proxy: refuse a target that is, or resolves here to, a link-local address."""
    addresses = [host.strip("[]")]
    try:
        ipaddress.ip_address(addresses[0].split("%", 1)[0])
    except ValueError:
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            addresses = []  # the proxy resolves it; what it reaches is its business
    if any(forbidden_address(a) for a in addresses):
        raise requests.ConnectionError(f"{host} is a link-local or metadata address, not allowed")


# -- the adapter ------------------------------------------------------------------------


class Headers(CaseInsensitiveDict):
    """requests' case-insensitive headers, copied and iterated without re-inserting or looking
    up each one: a call's headers are a copy of its template's, and urllib3 copies them again."""

    def copy(self) -> Headers:
        new = Headers.__new__(Headers)
        new._store = self._store.copy()
        return new

    def items(self):
        return self._store.values()  # (name as given, value) pairs, as the mapping's items


class _Response(requests.Response):
    """requests' Response without the cookie jar each one makes: the sessions keep no cookies,
    so a jar is made only if something asks for this response's."""

    def __init__(self) -> None:
        self.__dict__.update(_BLANK_RESPONSE)  # what requests' own __init__ sets, but the jar
        self.history = []

    @property
    def cookies(self) -> requests.cookies.RequestsCookieJar:
        jar = self.__dict__.get("_cookie_jar")
        if jar is None:
            jar = self.__dict__["_cookie_jar"] = requests.cookies.cookiejar_from_dict({})
        return jar

    @cookies.setter
    def cookies(self, jar) -> None:
        self.__dict__["_cookie_jar"] = jar


# the attributes requests' Response.__init__ sets, taken from one (immutable values only: the
# history list is made per response, the cookie jar on demand, the headers set by the adapter)
_BLANK_RESPONSE = {k: v for k, v in vars(requests.Response()).items() if k not in ("cookies", "history", "headers")} | {
    "headers": None
}


@dataclass
class _Route:
    pool: HTTPConnectionPool
    target: str  # what goes on the request line: the path, or the absolute URL for a forwarding proxy
    proxy_headers: dict | None  # Proxy-Authorization for a forwarding proxy with credentials


class PoolAdapter(BaseAdapter):
    """Sends a prepared request through urllib3's pool of its host (or of its proxy).

    The ``verify``, ``cert`` and ``proxies`` arguments of ``send`` are ignored: TLS and
    proxies are the adapter's, fixed when it is made."""

    def __init__(self, network: UpstreamNetwork, tls: ssl.SSLContext, pool_size: int):
        super().__init__()
        self.network = network
        options = {"maxsize": pool_size, "block": False, "retries": False}
        self._direct = urllib3.PoolManager(num_pools=64, ssl_context=tls, **options)
        self._direct.pool_classes_by_scheme = _GUARDED_POOLS
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._options = options
        self._tls = tls
        self._routes: dict[str, _Route] = {}
        self._timeouts: dict[object, Timeout] = {}

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout=None,
        verify=True,
        cert=None,
        proxies=None,
    ) -> requests.Response:
        route = self._routes.get(request.url)
        if route is None or route.pool.pool is None:  # new, or its pool was closed
            route = self._route(request.url)
        headers = request.headers
        if route.proxy_headers:
            headers = {**headers, **route.proxy_headers}
        try:
            raw = route.pool.urlopen(
                request.method,
                route.target,
                body=request.body,
                headers=headers,
                retries=_NO_RETRIES,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=self._timeout(timeout),
                chunked=request.body is not None and "Content-Length" not in request.headers,
            )
        except ProxyError as exc:
            raise requests.exceptions.ProxyError(exc, request=request) from None
        except NewConnectionError as exc:  # also a refused link-local peer (before ConnectTimeoutError: a subclass)
            raise requests.ConnectionError(exc, request=request) from None
        except ConnectTimeoutError as exc:
            raise requests.ConnectTimeout(exc, request=request) from None
        except ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc, request=request) from None
        except SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from None
        except (ProtocolError, HTTPError, OSError) as exc:
            raise requests.ConnectionError(exc, request=request) from None
        response = _Response()
        response.status_code = raw.status
        response.headers = raw.headers  # urllib3's HTTPHeaderDict: case-insensitive, like requests' own
        response.raw = raw
        response.reason = raw.reason
        response.url = request.url
        response.request = request
        response.connection = self
        return response

    def _timeout(self, timeout) -> Timeout:
        found = self._timeouts.get(timeout)
        if found is None:
            connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
            found = self._timeouts[timeout] = Timeout(connect=connect, read=read)
        return found

    def _route(self, url: str) -> _Route:
        """Which pool serves ``url`` and what its request line names (worked out once per URL)."""
        try:
            parts = parse_url(url)
        except urllib3.exceptions.LocationParseError as exc:
            raise requests.exceptions.InvalidURL(str(exc)) from None
        scheme, host = (parts.scheme or "http").lower(), parts.host or ""
        if scheme not in _GUARDED_POOLS or not host:
            raise requests.exceptions.InvalidURL(f"cannot send to {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = self.network.proxy_for(scheme, host, port)
        if proxy is None:
            route = _Route(self._direct.connection_from_host(host, port, scheme), parts.request_uri, None)
        else:
            _refuse_link_local_target(host)
            manager = self._proxy_manager(proxy)
            pool = manager.connection_from_host(host, port, scheme)
            if scheme == "https":
                route = _Route(pool, parts.request_uri, None)  # tunnelled: the proxy headers go on CONNECT
            else:
                route = _Route(pool, url, manager.proxy_headers or None)
        if len(self._routes) >= ROUTES_KEPT:
            self._routes.clear()
        self._routes[url] = route
        return route

    def _proxy_manager(self, proxy: str) -> urllib3.ProxyManager:
        manager = self._proxied.get(proxy)
        if manager is None:
            parts = parse_url(proxy)
            headers = {}
            if parts.auth:
                user, _, password = parts.auth.partition(":")
                headers = make_headers(proxy_basic_auth=f"{unquote(user)}:{unquote(password)}")
            plain = parts._replace(auth=None).url
            manager = urllib3.ProxyManager(
                plain,
                num_pools=64,
                proxy_headers=headers,
                ssl_context=self._tls,
                proxy_ssl_context=self._tls if parts.scheme == "https" else None,
                **self._options,
            )
            manager.pool_classes_by_scheme = _GUARDED_POOLS
            self._proxied[proxy] = manager
        return manager

    def close(self) -> None:
        self._routes.clear()
        self._direct.clear()
        for manager in self._proxied.values():
            manager.clear()
