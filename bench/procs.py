"""Child processes of one benchmark run: started in their own process groups, always stopped.

Every process the benchmark starts goes through :class:`Supervisor`, which stops them all
(SIGTERM to the group, then SIGKILL) when the run ends, fails or is interrupted with
Ctrl-C or SIGTERM. Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class BenchError(Exception):
    """A step of the benchmark could not be carried out (the message says which and why)."""


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import free_port, nats_server_binary  # noqa: E402  (the one way to pick a port, tests and bench alike)

__all__ = ["BenchError", "Supervisor", "free_port", "nats_server_binary", "wait_for_port"]


def wait_for_port(
    port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, log: Path | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``, or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process exited with {proc.returncode} before listening on {port}{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s{tail(log)}")


def tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not Path(log).exists():
        return ""
    text = Path(log).read_text(errors="replace").strip().splitlines()[-lines:]
    return "\n  " + "\n  ".join(text) if text else ""


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (Linux /proc), or None.

    Steadier than latency when other work shares the machine: it counts what the target did,
    not how long it waited for a core."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total, pending = 0.0, [pid]
        while pending:
            current = pending.pop()
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        return total
    except (OSError, ValueError, IndexError):
        return None


class Supervisor:
    """Starts processes and guarantees they are stopped; use as a context manager."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> Supervisor:
        # SIGINT too: a shell starting us in the background would have set it to "ignore"
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)

    @staticmethod
    def _on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cwd: str | Path | None = None
    ) -> subprocess.Popen:
        """Start ``argv`` in a new session (its own process group), output to ``<logdir>/<name>.log``."""
        log_path = self.log_path(name)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def log_path(self, name: str) -> Path:
        return self.logdir / f"{name}.log"

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left of it."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # children of the leader (gunicorn workers, nginx workers) may outlive it for a moment
        _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        kill_running()
        for _, proc in reversed(list(self.procs)):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in list(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in list(self.procs):
            self.stop(proc, timeout=0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


_RUNNING: set[subprocess.Popen] = set()


def run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a short command to completion; its whole group is killed if it overruns ``timeout``."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    _RUNNING.add(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        _RUNNING.discard(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def kill_running() -> None:
    """Kill the commands :func:`run` is waiting for in other threads (on interruption)."""
    for proc in list(_RUNNING):
        _signal_group(proc, signal.SIGKILL)
