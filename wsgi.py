"""Entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:application``.

``application`` is built on first access (PEP 562), which happens in each worker after
the fork and after gevent's monkey-patching, never in the gunicorn master. ``Worker`` is
the gevent-websocket worker with the client socket put back into the WSGI environ.
"""

from __future__ import annotations

import gc
import sys

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

# gunicorn's own code stops a worker with this exit code when the app cannot load; the
# master then halts instead of respawning workers forever.
WORKER_BOOT_ERROR = 3


class Handler(WebSocketHandler):
    """Adds ``gunicorn.socket`` (so a streaming response can notice a departed client) and
    answers the WebSocket subprotocol the app chooses."""

    def get_environ(self):
        environ = super().get_environ()
        environ["gunicorn.socket"] = self.socket
        return environ

    def start_response(self, status, headers, exc_info=None):
        # gevent-websocket cannot choose among several subprotocols; the app names its own
        if status.startswith("101"):
            choose = getattr(self.application, "choose_websocket_subprotocol", None)
            protocol = choose(self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")) if choose else None
            if protocol:
                headers = [*headers, ("Sec-WebSocket-Protocol", protocol)]
                self.environ["wsgi.websocket_protocol"] = protocol
        return super().start_response(status, headers, exc_info)

    def log_request(self):
        pass  # the app writes one structured access-log line per request


class Worker(GeventWebSocketWorker):
    wsgi_handler = Handler


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
