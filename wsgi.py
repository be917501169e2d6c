"""Entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:application``.

``application`` is built on first access (PEP 562), which happens in each worker after
the fork and after gevent's monkey-patching, never in the gunicorn master. ``Worker`` is
the gevent-websocket worker with the client socket put back into the WSGI environ, and
a graceful stop (see cb/lifecycle.py): on SIGTERM idle keep-alive connections are
closed, responses carry ``Connection: close``, open streams get GRACEFUL_TIMEOUT to
finish, and the services are closed (pending usage flushed) before the worker exits.
"""

from __future__ import annotations

import gc
import socket
import sys
import weakref

import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

# gunicorn's own code stops a worker with this exit code when the app cannot load; the
# master then halts instead of respawning workers forever.
WORKER_BOOT_ERROR = 3


# handlers waiting for the next request on a keep-alive connection
_idle: weakref.WeakSet = weakref.WeakSet()


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
        from cb import lifecycle

        if lifecycle.draining():
            self.close_connection = True

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


class Worker(GeventWebSocketWorker):
    """The gevent-websocket worker with our handler and a graceful stop."""

    wsgi_handler = Handler

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


def _build():
    from app import create_app
    from cb.config import Settings
    from cb.errors import StorageUnavailable
    from cb.logs import get_logger, setup_logging

    settings = Settings.from_env()
    setup_logging(settings.rust_log, settings.log_level, settings.environment == "production", settings.secrets)
    try:
        app = create_app(settings)
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
