"""The targets: nginx itself (direct), the stack's ceiling (a minimal Flask + urllib3 proxy),
our server (memory storage, one worker; NATS storage, two workers), LiteLLM's proxy and
Portkey's gateway.

Each target knows how to start (under the run's :class:`Supervisor`), where to send a
chat completion for a mode (JSON or stream), with which body and headers, and its version.
All of them use the same upstream (:mod:`upstream`) and one worker process, except
``ours_nats``, which shows how we scale out: two workers sharing a local nats-server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import agent_request
import requests
from installs import LITELLM_PYTHON, PORTKEY_ENTRY, ensure_litellm, ensure_portkey
from procs import BenchError, Supervisor, free_port, run, wait_for_port
from upstream import CONTENT, MODEL, Upstream

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DUMMY_KEY = "sk-bench-not-a-real-key"
# Anything that tries to reach the internet through a proxy-aware client fails at once on
# this closed local port; 127.0.0.1 itself is exempt.
OFFLINE_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "all_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def chat_body(model: str, stream: bool) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":"))


def base_env() -> dict:
    """The caller's environment without provider keys, base URLs or proxies of its own."""
    drop = ("_API_KEY", "_BASE_URL", "_PROXY", "_proxy")
    return {k: v for k, v in os.environ.items() if not k.endswith(drop)}


class Target:
    """One system under test. ``start`` may raise BenchError: the table then says why."""

    name = "target"
    label = "Target"
    #: json and stream: OpenAI chat completions; agent: a Claude Code-sized Messages stream
    #: (:mod:`agent_request`), for the targets that speak Anthropic's API to an Anthropic upstream
    modes = ("json", "stream")

    def request(self, mode: str) -> tuple[str, str, str, dict[str, str]]:
        """(base URL, path, body, headers) of a request in ``mode``."""
        stream = mode == "stream"
        return self.url(stream), self.path(stream), self.body(stream), self.headers(stream)

    def start(self, sup: Supervisor, upstream: Upstream, workdir: Path) -> None:
        raise NotImplementedError

    def url(self, stream: bool) -> str:
        """``http://127.0.0.1:<port>`` serving this mode."""
        raise NotImplementedError

    def path(self, stream: bool) -> str:
        return "/v1/chat/completions"

    def model(self, stream: bool) -> str:
        return MODEL

    def headers(self, stream: bool) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {DUMMY_KEY}"}

    def body(self, stream: bool) -> str:
        return chat_body(self.model(stream), stream)

    def version(self) -> str:
        return "?"

    def pid(self, mode: str) -> int | None:
        """The process serving ``mode`` on its own (its CPU is measured per cell), or None."""
        return None

    def probe(self, mode: str) -> str | None:
        """Send one real request; None when the answer is the upstream's content, else why not."""
        url, path, body, headers = self.request(mode)
        stream = mode != "json"
        try:
            response = requests.post(url + path, data=body, headers=headers, timeout=30, stream=stream)
        except requests.RequestException as exc:
            return f"request failed: {exc.__class__.__name__}"
        with response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.text[:160]!r}"
            try:
                if mode == "agent":
                    text = agent_request.stream_text(response.iter_lines(decode_unicode=True))
                    expected = agent_request.CONTENT
                else:
                    text = _stream_text(response) if stream else response.json()["choices"][0]["message"]["content"]
                    expected = CONTENT
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return f"unexpected answer ({exc.__class__.__name__}): {response.text[:160]!r}"
        if text != expected:
            return f"unexpected content {text!r}"
        return None


def _stream_text(response: requests.Response) -> str:
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise ValueError(f"content-type {response.headers.get('content-type')}")
    pieces, done = [], False
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        for choice in json.loads(data).get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
    if not done:
        raise ValueError("stream ended without [DONE]")
    return "".join(pieces)


class Direct(Target):
    """nginx itself: the floor every gateway adds to."""

    name, label = "direct", "direct (nginx)"
    modes = ("json", "stream", "agent")

    def start(self, sup, upstream, workdir):
        self.upstream = upstream

    def request(self, mode):
        if mode == "agent":
            return self.upstream.anthropic_base, "/v1/messages", agent_request.body(), agent_request.headers()
        return super().request(mode)

    def url(self, stream):
        return self.upstream.base(stream).removesuffix("/v1")

    def version(self):
        done = run([_nginx(), "-v"], timeout=10)
        return (done.stderr or done.stdout).strip().split("/")[-1]


def _nginx() -> str:
    from upstream import nginx_binary

    return nginx_binary()


CEILING_CONFIG = """# generated by bench/targets.py: the settings of gunicorn.conf.py that shape a worker
worker_class = "wsgi.Worker"
workers = {workers}
worker_connections = 2000
keepalive = 75
control_socket_disable = True
accesslog = None
loglevel = "warning"
"""


class Ceiling(Target):
    """A minimal Flask view forwarding with urllib3's pool (:mod:`ceiling`), on our gunicorn
    worker class: the most this stack does as a proxy. One instance per mode."""

    name, label = "ceiling", "ceiling (Flask + urllib3)"
    workers = 1
    app = "ceiling:app"
    modes = ("json", "stream", "agent")  # agent: the pass-through's ceiling (ceiling.py's /v1/messages)

    def env(self, upstream, stream: bool, workdir: Path) -> dict:
        return {"CEILING_UPSTREAM": upstream.base(stream), "CEILING_ANTHROPIC": upstream.anthropic_base}

    def request(self, mode):
        if mode == "agent":
            return self.url(True), "/v1/messages", agent_request.body(), agent_request.headers()
        return super().request(mode)

    def start(self, sup, upstream, workdir):
        self.ports = {}
        run_dir = _run_dir(workdir)
        config = workdir / f"{self.name}.conf.py"
        config.write_text(CEILING_CONFIG.format(workers=self.workers))
        for stream in (False, True):
            port = free_port()
            env = base_env()
            env.update(self.env(upstream, stream, workdir), PYTHONUNBUFFERED="1")
            name = f"{self.name}-{'sse' if stream else 'json'}"
            argv = [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(config),
                "-b",
                f"127.0.0.1:{port}",
                "--pythonpath",
                str(BENCH),
                self.app,
            ]
            proc = sup.start(name, argv, env=env, cwd=run_dir)
            wait_for_port(port, proc, 30, sup.log_path(name))
            self.ports[stream] = port

    def url(self, stream):
        return f"http://127.0.0.1:{self.ports[stream]}"

    def version(self):
        import flask
        import urllib3

        return f"flask {flask.__version__}, urllib3 {urllib3.__version__}"


class Essential(Ceiling):
    """The least a gateway must do per request (:mod:`essential`: parse, send with requests, price
    the usage, answer, one metric, one log line), on our worker class: what the stack allows a
    gateway that does a gateway's work, beside the ceiling that only relays."""

    name, label = "essential", "essential gateway"
    app = "essential:app"
    modes = ("json", "stream")

    def env(self, upstream, stream: bool, workdir: Path) -> dict:
        metrics = workdir / f"essential-metrics-{'sse' if stream else 'json'}"
        metrics.mkdir(exist_ok=True)
        return {"ESSENTIAL_UPSTREAM": upstream.base(stream), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}


class CeilingTwoWorkers(Ceiling):
    """The ceiling with two workers: how far two processes of the bare stack scale on this
    machine, beside the NATS row (the load generator, the upstream and NATS share its cores)."""

    name, label = "ceiling_2w", "ceiling, 2 workers"
    workers = 2
    modes = ("json", "stream")


class Ours(Target):
    """Our server under gunicorn with our gunicorn.conf.py: memory storage, one worker.

    One instance per mode, because OPENAI_BASE_URL names one upstream and nginx answers a
    fixed payload per server block.
    """

    name, label = "ours", "Circuit Breaker"
    storage = {"STORAGE_BACKEND": "memory"}
    modes = ("json", "stream", "agent")

    def start(self, sup, upstream, workdir):
        self.ports, self.pids = {}, {}
        run_dir = self.run_dir(workdir)
        for mode in self.modes:
            stream = mode != "json"
            storage = self.storage_env(sup, workdir, mode)
            graphql_port, openai_port = free_port(), free_port()
            env = base_env()
            env.update(server_env(graphql_port, openai_port))
            if mode == "agent":  # Claude Code's requests relayed to an Anthropic deployment as they came
                env.update(ANTHROPIC_BASE_URL=upstream.anthropic_base, ANTHROPIC_API_KEY=DUMMY_KEY)
            else:
                env.update(OPENAI_BASE_URL=upstream.base(stream), OPENAI_API_KEY=DUMMY_KEY)
            env.update(CB_LOAD_DEFAULT_WORKFLOWS="false", **storage)
            name = f"{self.name}-{'sse' if mode == 'stream' else mode}"
            proc = sup.start(name, gunicorn_argv(), env=env, cwd=run_dir)
            wait_for_port(openai_port, proc, 60, sup.log_path(name))
            self.ports[mode] = openai_port
            self.pids[mode] = proc.pid

    def run_dir(self, workdir: Path) -> Path:
        return _run_dir(workdir)

    def request(self, mode):
        if mode == "agent":
            return self.url_of(mode), "/v1/messages", agent_request.body(), agent_request.headers()
        return super().request(mode)

    def url_of(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.ports[mode]}"

    def pid(self, mode):
        return self.pids.get(mode)

    def storage_env(self, sup, workdir, mode: str) -> dict:
        return dict(self.storage)

    def url(self, stream):
        return self.url_of("stream" if stream else "json")

    def version(self):
        done = run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], timeout=10)
        return f"git {done.stdout.strip() or '?'}"


class OursBase(Ours):
    """Our server as it was at an earlier commit (BENCH_BASE_REV, by default the last landing
    before this work), same worker and settings: what a change costs, side by side in one run.
    The agent mode needs a base with the pass-through (6312fbd or later)."""

    name = "ours_base"
    modes = ("json", "stream", "agent")
    rev = os.environ.get("BENCH_BASE_REV", "6312fbd")

    @property
    def label(self) -> str:
        return f"Circuit Breaker at {self.rev}"

    def run_dir(self, workdir: Path) -> Path:
        source = workdir / "base-source"
        if not source.exists():
            source.mkdir()
            archive = run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(workdir / "base.tar"), self.rev],
                timeout=60,
            )
            if archive.returncode:
                raise BenchError(f"git archive {self.rev} failed: {archive.stderr.strip()}")
            run(["tar", "-xf", str(workdir / "base.tar"), "-C", str(source)], timeout=60)
        return _run_dir(workdir, source, "base-server")

    def version(self):
        return f"git {self.rev}"


class OursNats(Ours):
    """Our server on NATS storage with two workers (a local nats-server): how we scale out."""

    name, label = "ours_nats", "Circuit Breaker (NATS, 2 workers)"

    def storage_env(self, sup, workdir, mode):
        from graphql_bench import start_nats

        if not getattr(self, "nats_url", None):
            self.nats_url = start_nats(sup, workdir)
        return {
            "STORAGE_BACKEND": "nats",
            "NATS_URL": self.nats_url,
            "WEB_CONCURRENCY": "2",
            "NATS_PREFIX": f"bench{mode}",
        }


def server_env(graphql_port: int, openai_port: int) -> dict:
    """Variables every instance of our server gets in the benchmark."""
    return {
        "GRAPHQL_HOST": "127.0.0.1",
        "GRAPHQL_PORT": str(graphql_port),
        "OPENAI_HOST": "127.0.0.1",
        "OPENAI_PORT": str(openai_port),
        "OLLAMA_BASE_URL": "",
        "PYTHONUNBUFFERED": "1",
    }


def gunicorn_argv() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]


def _run_dir(workdir: Path, root: Path = ROOT, name: str = "server") -> Path:
    """A directory linking to the checkout's code (or ``root``'s) but not its .env, so a
    developer's own settings never change what is measured."""
    run_dir = workdir / name
    if run_dir.exists():
        return run_dir
    run_dir.mkdir()
    skip = {".env", ".git", ".venv", "bench", "tests", "examples", "deploy", "__pycache__"}
    for entry in root.iterdir():
        if entry.name not in skip and not entry.name.startswith("."):
            (run_dir / entry.name).symlink_to(entry)
    return run_dir


class LiteLLM(Target):
    """LiteLLM's proxy from its own virtualenv: no database, no master key, no callbacks."""

    name, label = "litellm", "LiteLLM"

    def start(self, sup, upstream, workdir):
        ensure_litellm(sup.logdir)
        config = workdir / "litellm.yaml"
        config.write_text(litellm_config(upstream))
        self.port = free_port()
        env = base_env()
        for key in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"):
            env.pop(key, None)
        env.update(OFFLINE_ENV)
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # else it downloads the cost map at import
            LITELLM_TELEMETRY="False",
            LITELLM_LOG="ERROR",
            # no client keys on any target (ours runs with OPENAI_API_KEY_REQUIRED=false, its default)
            LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",
            LITELLM_MODE="PRODUCTION",
            DISABLE_ADMIN_UI="True",
            NO_DOCS="True",
            STORE_MODEL_IN_DB="False",
            PYTHONUNBUFFERED="1",
        )
        argv = [
            str(LITELLM_PYTHON.parent / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]
        proc = sup.start("litellm", argv, env=env, cwd=workdir)
        wait_for_port(self.port, proc, 120, sup.log_path("litellm"))

    def url(self, stream):
        return f"http://127.0.0.1:{self.port}"

    def model(self, stream):
        return "bench-sse" if stream else "bench-json"

    def version(self):
        done = run(
            [str(LITELLM_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], timeout=30
        )
        return done.stdout.strip() or "?"


def litellm_config(upstream: Upstream) -> str:
    """One model per upstream block; YAML written as JSON, which YAML reads."""
    models = [
        {
            "model_name": name,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream.base(stream), "api_key": DUMMY_KEY},
        }
        for name, stream in (("bench-json", False), ("bench-sse", True))
    ]
    config = {
        "model_list": models,
        "litellm_settings": {
            "telemetry": False,
            "success_callback": [],
            "failure_callback": [],
            "callbacks": [],
            "drop_params": True,
            "set_verbose": False,
        },
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }
    return json.dumps(config, indent=2)


class Portkey(Target):
    """Portkey's open-source gateway under node, told the upstream by request headers."""

    name, label = "portkey", "Portkey"

    def start(self, sup, upstream, workdir):
        ensure_portkey(sup.logdir)
        self.upstream = upstream
        self.port = free_port()
        env = base_env()
        env.update(OFFLINE_ENV)
        env.update(NODE_ENV="production")
        argv = ["node", str(BENCH / "portkey_local.mjs"), str(PORTKEY_ENTRY), f"--port={self.port}", "--headless"]
        proc = sup.start("portkey", argv, env=env, cwd=workdir)
        wait_for_port(self.port, proc, 60, sup.log_path("portkey"))

    def url(self, stream):
        return f"http://127.0.0.1:{self.port}"

    def headers(self, stream):
        return {
            **super().headers(stream),
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": self.upstream.base(stream),
        }

    def version(self):
        try:
            return json.loads((PORTKEY_ENTRY.parent.parent / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "?"


ALL = (Direct, Ceiling, Essential, CeilingTwoWorkers, Ours, OursBase, OursNats, LiteLLM, Portkey)
