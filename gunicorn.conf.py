"""gunicorn settings, read from the same variables as the server (cb.config.Settings).

Binds both listeners, picks the worker count (one with memory storage, whose state is
per process), and refuses to start on a bad variable, a port in use or an unreachable
NATS server with one clear line instead of a loop of tracebacks.
"""

import math
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile

from gunicorn.glogging import Logger

from cb.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as _exc:
    sys.exit(f"Configuration error: {_exc}")

# Each worker writes its metrics here; /metrics folds them (prometheus-client multiprocess
# mode). Set before anything imports prometheus_client: it picks its mode at import time.
_metrics_dir = _settings.metrics_dir or tempfile.mkdtemp(prefix="cb-metrics-")
os.makedirs(_metrics_dir, exist_ok=True)
for _stale in os.listdir(_metrics_dir):
    os.remove(os.path.join(_metrics_dir, _stale))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from cb.logs import get_logger, setup_logging  # noqa: E402
from cb.network import exposure_warnings  # noqa: E402
from cb.services import provider_status_lines  # noqa: E402


def _check_free(host: str, port: int, variable: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError:
        sys.exit(f"Address already in use: {port} ({variable})")
    finally:
        probe.close()


_check_free(_settings.graphql_host, _settings.graphql_port, "GRAPHQL_PORT")
_check_free(_settings.openai_host, _settings.openai_port, "OPENAI_PORT")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


bind = [
    f"{_host(_settings.graphql_host)}:{_settings.graphql_port}",
    f"{_host(_settings.openai_host)}:{_settings.openai_port}",
]
worker_class = "wsgi.Worker"
if _settings.storage_backend == "memory":
    workers = 1
else:
    workers = _settings.web_concurrency or multiprocessing.cpu_count()
worker_connections = 2000
timeout = 120
# Our own grace (GRACEFUL_TIMEOUT) ends open streams cleanly; gunicorn's is a little longer so
# it never kills a worker that is still writing those final events and usage records.
GRACE_MARGIN = 5
graceful_timeout = math.ceil(_settings.graceful_timeout) + GRACE_MARGIN
keepalive = 75
# gunicorn 27 opens a control socket under ~/.gunicorn by default; we have no use for it.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = "warning"


def child_exit(server, worker):
    # drop the dead worker's live gauges
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    if server.LISTENERS:  # still serving (stop() closes the listeners first): a replacement follows
        from cb import metrics

        metrics.worker_restarts.labels("timeout" if worker.aborted else "exit").inc()
        metrics.flush()  # written by the master at once (its counters live in the master's own file)


class ServerLog(Logger):
    """gunicorn's logger with its error lines (worker timeouts and exits, boot failures) sent to
    our handler, so they are formatted like every other line, text or JSON. Its own handler's
    format asks for the process id, which our logging set-up does not collect (a TypeError for
    every line, and the line lost)."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            if getattr(handler, "_gunicorn", False):
                self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = ServerLog


def worker_exit(server, worker):
    # counters and histograms not yet written to the worker's file (see cb.metrics)
    from cb import metrics

    metrics.flush()


def on_exit(server):
    if not _settings.metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def on_starting(server):
    setup_logging(_settings.rust_log, _settings.log_level, _settings.environment == "production", _settings.secrets)
    log = get_logger("server")
    for ok, line in provider_status_lines(_settings):
        (log.info if ok else log.warning)(line)
    for line in exposure_warnings(_settings):
        log.warning(line)
    if _settings.storage_backend == "nats":
        from cb.storage.nats import probe, replica_report

        if not probe(_settings.nats_url):
            log.error("Error: Failed to connect to NATS server at %s", _settings.nats_url)
            sys.exit(1)
        mismatch = replica_report(_settings.nats_url, _settings.nats_prefix, _settings.nats_replicas)
        if mismatch:
            log.warning(mismatch)


def when_ready(server):
    # importing the services created (zero) metric files for the master; only workers count
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())
    get_logger("server").info(
        "Circuit Breaker ready: GraphQL on http://%s:%d, OpenAI API on http://%s:%d (%s storage, %d worker%s)",
        _settings.graphql_host,
        _settings.graphql_port,
        _settings.openai_host,
        _settings.openai_port,
        _settings.storage_backend,
        workers,
        "" if workers == 1 else "s",
    )
