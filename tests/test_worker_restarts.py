"""When gunicorn replaces a worker, the operator sees why and how often (issue 29).

A worker that stops answering (SIGSTOP: it no longer beats, as a worker stuck on its CPU)
is killed by gunicorn's timeout (``--timeout 2`` here, 120 in gunicorn.conf.py) and replaced.
gunicorn's own lines about it must reach the log through our formatter, as proper text or
JSON lines (its default format asked for a process id our logging does not collect: every
such line was a ``--- Logging error ---`` traceback instead), and /metrics counts the restart.
A worker that cannot load the application stops the server with gunicorn's boot-failure
lines, in the same formats.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from tests.harness import Server


class TimeoutServer(Server):
    """The server with gunicorn's worker timeout at 2 seconds (the command line wins over the config file)."""

    def command(self) -> list[str]:
        return [*super().command(), "--timeout", "2"]


def replaced(server: Server, worker: int) -> set[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = server.worker_pids()
        if workers and worker not in workers:
            return workers
        time.sleep(0.2)
    raise AssertionError("gunicorn did not replace the stopped worker")


@pytest.mark.parametrize("environment", ["development", "production"], ids=["text", "json"])
def test_a_worker_killed_by_the_timeout_is_logged_in_our_format_and_counted(tmp_path, environment):
    server = TimeoutServer(tmp_path, env={"ENVIRONMENT": environment})
    server.start()
    try:
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGSTOP)
        replaced(server, worker)
        server.wait_healthy()
        metrics = requests.get(server.graphql_url + "/metrics", timeout=5).text
        logs = server.logs()
    finally:
        server.stop()
    assert "Logging error" not in logs and "Traceback" not in logs
    expected = {f"WORKER TIMEOUT (pid:{worker})", f"Worker (pid:{worker}) was sent SIGKILL! Perhaps out of memory?"}
    if environment == "production":
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        found = {e["message"]: e for e in lines if e["logger"] == "gunicorn.error" and e["message"] in expected}
        assert set(found) == expected
        assert found[f"WORKER TIMEOUT (pid:{worker})"]["level"] == "critical"
    else:
        lines = [line for line in logs.splitlines() if " gunicorn.error " in line]
        assert all(any(line.endswith(message) for line in lines) for message in expected), lines
        assert any("CRITICAL gunicorn.error WORKER TIMEOUT" in line for line in lines)
    assert 'cb_worker_restarts_total{reason="timeout"} 1.0' in metrics


class UnloadableServer(Server):
    """The server pointed at an application the worker cannot load: gunicorn's boot failure."""

    def command(self) -> list[str]:
        return [*super().command()[:-1], "wsgi:missing"]


@pytest.mark.parametrize("environment", ["development", "production"], ids=["text", "json"])
def test_a_worker_that_cannot_boot_is_logged_in_our_format(tmp_path, environment):
    server = UnloadableServer(tmp_path, env={"ENVIRONMENT": environment})
    server.start(wait=False)
    assert server.proc.wait(30) == 4  # gunicorn's "App failed to load"
    logs = server.logs()
    assert "Logging error" not in logs and "Traceback" not in logs
    expected = ["Shutting down: Master", "Reason: App failed to load."]
    if environment == "production":
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        messages = [e["message"] for e in lines if e["logger"] == "gunicorn.error" and e["level"] == "error"]
        assert any(m.startswith("Worker (pid:") and m.endswith("exited with code 4.") for m in messages)
        assert all(message in messages for message in expected)
    else:
        assert any(
            line.endswith("exited with code 4.") and "ERROR   gunicorn.error Worker (pid:" in line
            for line in logs.splitlines()
        )
        assert all(f"ERROR   gunicorn.error {message}" in logs for message in expected)
