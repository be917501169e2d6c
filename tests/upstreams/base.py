"""A small base for fake provider upstreams: a threaded HTTP/1.1 server in a thread.

Subclasses implement :meth:`UpstreamServer.handle` and answer through :class:`Reply`,
which writes JSON bodies, chunked streams (SSE or NDJSON) and notices when the client
(our gateway) closes the connection, even while the server is "thinking" before its
first byte. Every request is recorded in ``server.received``; faults can be queued
(``fail_next``, ``hang_next``, ``slow_next``) and are consumed one per request. Requests
to a subclass's ``listing_paths`` (model lists and descriptions the gateway polls in the background) go
to ``server.listings`` instead and consume no fault, so a poll never takes a test's.

Usage::

    with MyUpstream() as upstream:
        ...  # point the server at upstream.url
        assert upstream.received[-1].json["model"] == "gpt-4"
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """What to do instead of (or around) the normal answer to one request."""

    status: int | None = None  # answer with this error status and body
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0  # seconds to wait before answering (ends early if the client leaves)
    chunk_delay: float = 0.0  # seconds between streamed chunks
    first_chunk_delay: float = 0.0  # seconds between the stream's headers and its first chunk
    fail_after_chunks: int | None = None  # cut the stream after this many chunks
    stall_after_chunks: int | None = None  # then send nothing, connection open, until the client leaves


class ClientGone(Exception):
    """The client closed the connection."""


class Reply:
    """Ways to answer one request; tracks whether the client went away."""

    def __init__(self, handler: BaseHTTPRequestHandler, server: UpstreamServer, fault: Fault | None):
        self.handler = handler
        self.server = server
        self.fault = fault or Fault()
        self.chunks_sent = 0

    # -- client liveness -------------------------------------------------------------
    def client_closed(self) -> bool:
        """True if the peer has closed its side (readable with zero bytes pending)."""
        sock = self.handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, raising ClientGone as soon as the client closes."""
        deadline = time.monotonic() + seconds
        sock = self.handler.connection
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            except OSError:
                readable = [sock]
            if readable and self.client_closed():
                self.server._gone()
                raise ClientGone()

    # -- plain answers -----------------------------------------------------------------
    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(data)))
        for key, value in (self.server.answer_headers | (headers or {})).items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        self.handler.wfile.write(data)
        self.handler.wfile.flush()

    # -- streams -----------------------------------------------------------------------
    def start_stream(self, content_type: str, status: int = 200) -> None:
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", content_type)
        self.handler.send_header("Transfer-Encoding", "chunked")
        self.handler.send_header("Cache-Control", "no-cache")
        for key, value in self.server.answer_headers.items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        self.handler.wfile.flush()

    def chunk(self, data: bytes) -> None:
        """Send one HTTP chunk, honouring the fault's delay and cut-off."""
        if not self.chunks_sent and self.fault.first_chunk_delay:
            self.wait(self.fault.first_chunk_delay)
        if self.chunks_sent and self.fault.chunk_delay:
            self.wait(self.fault.chunk_delay)
        if self.fault.stall_after_chunks is not None and self.chunks_sent >= self.fault.stall_after_chunks:
            self.wait(300)  # ClientGone when the client closes the connection
        if self.fault.fail_after_chunks is not None and self.chunks_sent >= self.fault.fail_after_chunks:
            # a broken upstream: drop the connection in the middle of the stream
            self.handler.close_connection = True
            self.handler.connection.shutdown(socket.SHUT_RDWR)
            raise ClientGone()
        try:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.handler.wfile.flush()
        except OSError:
            self.server._gone()
            raise ClientGone() from None
        self.chunks_sent += 1

    def end_stream(self) -> None:
        try:
            self.handler.wfile.write(b"0\r\n\r\n")
            self.handler.wfile.flush()
        except OSError:
            self.server._gone()
            raise ClientGone() from None

    def sse(self, events: Iterable[Any], done: bool = True, event_names: bool = False) -> None:
        """Stream ``events`` as SSE ``data:`` frames (dicts as JSON; (name, data) pairs if event_names)."""
        self.start_stream("text/event-stream")
        for item in events:
            if event_names:
                name, payload = item
                frame = f"event: {name}\ndata: {json.dumps(payload)}\n\n"
            else:
                frame = f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n"
            self.chunk(frame.encode())
        if done:
            self.chunk(b"data: [DONE]\n\n")
        self.end_stream()

    def ndjson(self, objects: Iterable[Any]) -> None:
        self.start_stream("application/x-ndjson")
        for obj in objects:
            self.chunk((json.dumps(obj) + "\n").encode())
        self.end_stream()


class UpstreamServer:
    """Base class: a local HTTP server in a daemon thread. Subclasses implement ``handle``."""

    listing_paths: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.listings: list[Received] = []
        self.faults: deque[Fault] = deque()
        self.answer_headers: dict[str, str] = {}  # sent with every answer, as vendors send request ids
        self.disconnects: list[float] = []  # monotonic times at which a client went away
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.tls: ssl.SSLContext | None = None  # set before start() to serve https:// (see tests/upstreams/certs.py)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> UpstreamServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                owner._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # many clients connecting at once must not be refused

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is no error
                    super().handle_error(request, client_address)

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:  # the handshake happens in the request's thread, on its first read
            self._httpd.socket = self.tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}"  # the name the test certificate carries
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------------------
    def fail_next(self, status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.faults.append(Fault(status=status, body=body, headers=headers or {}))

    def hang_next(self, seconds: float, **kw) -> None:
        self.faults.append(Fault(hang=seconds, **kw))

    def slow_next(self, chunk_delay: float, **kw) -> None:
        self.faults.append(Fault(chunk_delay=chunk_delay, **kw))

    def wait_for_disconnect(self, timeout: float) -> float | None:
        """Monotonic time of the first disconnect seen within ``timeout``, else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnects:
                return self.disconnects[0]
            time.sleep(0.01)
        return None

    def reset(self) -> None:
        self.received.clear()
        self.listings.clear()
        self.faults.clear()
        self.disconnects.clear()
        self.answer_headers.clear()

    # -- serving -------------------------------------------------------------------------
    def _gone(self) -> None:
        with self._lock:
            self.disconnects.append(time.monotonic())

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        received = Received(handler.command, parts.path, parse_qs(parts.query), dict(handler.headers), body, parsed)
        with self._lock:
            if received.path in self.listing_paths:
                self.listings.append(received)
                fault = None
            else:
                self.received.append(received)
                fault = self.faults.popleft() if self.faults else None
        reply = Reply(handler, self, fault)
        try:
            if fault and fault.hang:
                reply.wait(fault.hang)
            if fault and fault.status:
                reply.json(fault.body, fault.status, fault.headers)
                return
            self.handle(received, reply)
        except ClientGone:
            handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self._gone()
            handler.close_connection = True

    def handle(self, request: Received, reply: Reply) -> None:
        """Answer one request; subclasses speak their provider's protocol here."""
        reply.json({"error": "not implemented"}, 404)
