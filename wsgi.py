"""Entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:application``.

``application`` is built on first access (PEP 562), which happens in each worker after
the fork and after gevent's monkey-patching, never in the gunicorn master. ``Worker`` is
the gevent-websocket worker with the client socket put back into the WSGI environ, and
a graceful stop (see cb/lifecycle.py): on SIGTERM idle keep-alive connections are
closed, responses carry ``Connection: close``, open streams get GRACEFUL_TIMEOUT to
finish, and the services are closed (pending usage flushed) before the worker exits.

WebSocket limits that must hold before the app sees a message: a worker accepts at most
GRAPHQL_WS_MAX_CONNECTIONS upgrades at once (more are answered 503 with a GraphQL error),
and a frame whose header announces more than GRAPHQL_WS_MAX_MESSAGE_BYTES (for the whole
message, fragments included) closes the socket with 1009 before its payload is read.
"""

from __future__ import annotations

import gc
import json
import socket
import struct
import sys
import time
import weakref

import gevent
import gevent.pywsgi
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket
from gunicorn.workers.ggevent import PyWSGIServer

from cb.network import send_all

# gunicorn's own code stops a worker with this exit code when the app cannot load; the
# master then halts instead of respawning workers forever.
WORKER_BOOT_ERROR = 3
BOOT_PATIENCE = 30.0  # seconds a booting worker keeps trying to reach its storage


_format_http_date = gevent.pywsgi.format_date_time
_date: list = [0, b""]  # the second and its Date header value


def _http_date(timestamp: float) -> bytes:
    """pywsgi's Date header value, formatted once a second instead of for every response."""
    second = int(timestamp)
    if _date[0] != second:
        _date[:] = second, _format_http_date(second)
    return _date[1]


gevent.pywsgi.format_date_time = _http_date  # what pywsgi calls for each response's Date

# handlers waiting for the next request on a keep-alive connection
_idle: weakref.WeakSet = weakref.WeakSet()


class MessageTooBig(Exception):
    """A frame header announced more than the connection's message limit."""


class BoundedWebSocket(WebSocket):
    """gevent-websocket's WebSocket, refusing a message larger than ``max_bytes`` from the
    frame headers alone: the payload of a refused frame is never read."""

    def __init__(self, environ, stream, handler, max_bytes: int):
        super().__init__(environ, stream, handler)
        self.max_bytes = max_bytes
        self.message_bytes = 0  # of the message being read, fragments so far

    def read_frame(self):
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_bytes = 0
        if header.opcode < self.OPCODE_CLOSE:  # data and continuation frames count; control frames are tiny
            self.message_bytes += header.length
            if self.message_bytes > self.max_bytes:
                raise MessageTooBig(f"Message larger than GRAPHQL_WS_MAX_MESSAGE_BYTES ({self.max_bytes} bytes)")
        if not header.length:
            return header, b""
        payload = self.raw_read(header.length)
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = header.unmask_payload(payload)
        return header, payload

    def receive(self):
        try:
            return super().receive()
        except MessageTooBig as exc:
            try:
                self.send_frame(struct.pack("!H", 1009) + str(exc).encode()[:120], opcode=self.OPCODE_CLOSE)
            except WebSocketError:
                pass
            self.closed = True
            return None


_open_websockets = 0  # in this worker


class Handler(WebSocketHandler):
    """Adds ``gunicorn.socket`` (so a streaming response can notice a departed client),
    answers the WebSocket subprotocol the app chooses, and closes connections while draining."""

    def read_requestline(self):
        from cb import lifecycle

        if lifecycle.draining():
            return ""  # no new request on this connection: close it
        _idle.add(self)
        try:
            return super().read_requestline()
        finally:
            _idle.discard(self)

    def handle_one_response(self):
        super().handle_one_response()
        # Let the other connections run before this one reads its next request: a keep-alive
        # client whose next request is already in the socket would otherwise be served again
        # and again without a switch, starving the rest (at c=32: p50 2 ms, p99 700 ms; with
        # the yield p50 25 ms, p99 50 ms at the same throughput).
        gevent.sleep(0)
        from cb import lifecycle

        if lifecycle.draining():
            self.close_connection = True

    def upgrade_websocket(self):
        wants_upgrade = self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        settings = self.application.extensions["circuit_breaker"].settings if wants_upgrade else None
        if wants_upgrade and _open_websockets >= settings.ws_max_connections:
            message = f"Too many WebSocket connections on this worker (GRAPHQL_WS_MAX_CONNECTIONS={settings.ws_max_connections})"
            body = json.dumps(
                {"errors": [{"message": message, "extensions": {"code": "SERVICE_UNAVAILABLE"}}]}
            ).encode()
            self.start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Retry-After", "1"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return super().upgrade_websocket()

    def upgrade_connection(self):
        result = super().upgrade_connection()
        plain = self.environ.get("wsgi.websocket")
        if plain is not None:
            plain.closed = True  # replaced before use: it must not send a close frame when collected
            limit = self.application.extensions["circuit_breaker"].settings.ws_max_message_bytes
            self.websocket = BoundedWebSocket(self.environ, plain.stream, self, limit)
            self.environ["wsgi.websocket"] = self.websocket
        return result

    def run_websocket(self):
        """gevent-websocket's, with the app's answer closed when the socket ends (it only
        iterates it): its close is where the session's access line is written and it stops
        counting as in flight."""
        global _open_websockets
        _open_websockets += 1
        app = self.application

        def closing(environ, start_response):
            answer = app(environ, start_response)
            try:
                yield from answer
            finally:
                if hasattr(answer, "close"):
                    answer.close()

        self.application = closing
        try:
            super().run_websocket()
        finally:
            self.application = app
            _open_websockets -= 1

    def get_environ(self):
        environ = super().get_environ()
        environ["gunicorn.socket"] = self.socket
        return environ

    def start_response(self, status, headers, exc_info=None):
        # gevent-websocket cannot choose among several subprotocols; the app names its own
        from cb import lifecycle

        if lifecycle.draining() and not status.startswith("101"):
            headers = [*headers, ("Connection", "close")]
        if status.startswith("101"):
            choose = getattr(self.application, "choose_websocket_subprotocol", None)
            protocol = choose(self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")) if choose else None
            if protocol:
                headers = [*headers, ("Sec-WebSocket-Protocol", protocol)]
                self.environ["wsgi.websocket_protocol"] = protocol
        return super().start_response(status, headers, exc_info)

    def _sendall(self, data):
        try:
            send_all(self.socket, data)  # pywsgi's, without gevent's getsockopt on every write
        except OSError as ex:
            if isinstance(ex, TimeoutError):  # a stream's write timeout (blueprints/openai.py _StreamPump)
                from cb.logs import get_logger

                get_logger("api").warning("the client took nothing for %gs: stream cut", self.socket.gettimeout() or 0)
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def log_request(self):
        pass  # the app writes one structured access-log line per request


def _close_idle_connections() -> None:
    for handler in list(_idle):
        sock = getattr(handler, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)  # its readline returns b"": the connection ends
            except OSError:
                pass


class OneAtATimeServer(PyWSGIServer):
    """Takes one connection per wake-up (gevent's default is up to 100): the workers share the
    listening socket, and a burst of new connections (a pool opening 32 at once) then spreads
    over all of them instead of landing on whichever woke first. gunicorn does the same for its
    plain gevent worker, not for the pywsgi one we run."""

    max_accept = 1


class Worker(GeventWebSocketWorker):
    """The gevent-websocket worker with our handler and a graceful stop."""

    wsgi_handler = Handler

    def init_process(self):
        if self.cfg.workers > 1:
            self.server_class = OneAtATimeServer
        # a spawn (a stream's pump, a connection) costs a third without recording who spawned
        # it and from where, which only gevent's debugging helpers read
        gevent.config.track_greenlet_tree = False
        super().init_process()

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        from cb import lifecycle

        app = globals().get("application")
        grace = app.extensions["circuit_breaker"].settings.graceful_timeout if app is not None else 0.0
        lifecycle.begin_drain(grace)
        _close_idle_connections()

    def run(self):
        try:
            super().run()
        finally:
            app = globals().get("application")
            if app is not None:
                app.extensions["circuit_breaker"].close()


def _started_services(settings):
    """The worker's services, started. The master saw NATS answer before forking, so a worker
    that cannot reach it now boots during a blip (a cluster node failing over, a restart):
    it keeps trying for BOOT_PATIENCE seconds instead of failing at once, which would make
    gunicorn stop every worker of the server."""
    from cb.errors import StorageUnavailable
    from cb.logs import get_logger
    from cb.services import build_services

    deadline = time.monotonic() + BOOT_PATIENCE
    while True:
        services = None
        try:
            services = build_services(settings)
            return services.start()
        except StorageUnavailable as exc:
            if services is not None:
                services.storage.close()
            if time.monotonic() >= deadline:
                raise
            get_logger("server").warning("Worker waiting for storage: %s", exc.message)
            gevent.sleep(1.0)


def _build():
    from app import create_app
    from cb.config import Settings
    from cb.errors import StorageUnavailable
    from cb.logs import get_logger, setup_logging

    settings = Settings.from_env()
    setup_logging(settings.rust_log, settings.log_level, settings.environment == "production", settings.secrets)
    try:
        app = create_app(settings, _started_services(settings))
    except StorageUnavailable as exc:
        get_logger("server").error("Error: %s", exc.message)
        sys.exit(WORKER_BOOT_ERROR)
    # What the app built at start-up lives as long as the worker: keep it out of the cyclic
    # collector's scans, which otherwise cost ~8% of a request's CPU (bench/PERF_NOTES.md).
    gc.freeze()
    return app


def __getattr__(name: str):
    if name == "application":
        app = _build()
        globals()["application"] = app
        return app
    raise AttributeError(name)
