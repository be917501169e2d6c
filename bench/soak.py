"""Soak: many mixed requests against real gunicorn and a fast local upstream, sampling the
RSS of every worker, to show memory stays bounded.

    .venv/bin/python bench/soak.py [requests] [memory|nats]      (default 100000 memory)

The mix, per 10 operations: 4 chat completions, 2 streams read to the end, 1 stream
dropped after its first chunk, 1 chat preceded by an upstream 500 (some request gets it),
1 GraphQL round (createToken, fireTransition, deleteToken, costAnalytics: 4 requests), 1 subscription
opened over WebSocket and closed. RSS comes from /proc/<pid>/status (VmRSS) of each
gunicorn worker every 2 s. Prints the first and last sample after warm-up (the first 20%
of requests) and the slope (KB per 10,000 requests, least squares) per worker.
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
import websocket  # noqa: E402

from tests.harness import NatsServer, Server  # noqa: E402
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream, openai_error  # noqa: E402

THREADS = 16
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello, how are you?"}]}


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def workers(master: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            found.append(int(stat.parent.name))
    return sorted(found)


class Soak:
    def __init__(self, server: Server, upstream: OpenAIUpstream, total: int):
        self.server, self.upstream, self.total = server, upstream, total
        self.done = 0
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.ops = itertools.count()
        self.samples: list[tuple[int, dict[int, int]]] = []  # (requests done, {pid: rss kb})

    def count(self, n: int = 1, error: str | None = None) -> None:
        with self.lock:
            self.done += n
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1

    def chat(self, session: requests.Session, **extra) -> None:
        r = session.post(self.server.openai_url + "/v1/chat/completions", json={**CHAT, **extra}, timeout=30)
        _ = r.content
        self.count(error=None if r.status_code == 200 else f"chat {r.status_code}")

    def stream(self, session: requests.Session, drop: bool) -> None:
        with session.post(self.server.openai_url + "/v1/chat/completions", json={**CHAT, "stream": True},
                          stream=True, timeout=30) as r:
            for line in r.iter_lines():
                if drop and line.startswith(b"data: "):
                    r.raw._fp.fp.raw._sock.shutdown(2)  # hang up mid-stream, as a client would
                    break
        self.count()

    def graphql(self, session: requests.Session) -> None:
        def call(query: str, variables: dict) -> dict:
            r = session.post(self.server.graphql_url + "/graphql", json={"query": query, "variables": variables},
                             timeout=30)
            return r.json()

        token = call('mutation { createToken(input: {workflow_id: "document_review"}) { id } }', {})
        token_id = token["data"]["createToken"]["id"]
        call('mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }',
             {"t": token_id})
        call("mutation($t: ID!) { deleteToken(id: $t) }", {"t": token_id})
        call("{ costAnalytics { total_requests } }", {})  # folds the usage ledger into the worker's cache
        self.count(4)

    def subscription(self) -> None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.server.graphql_port}/ws",
                                         subprotocols=["graphql-transport-ws"], timeout=10)
        try:
            ws.send(json.dumps({"type": "connection_init"}))
            json.loads(ws.recv())
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { workflowEvents(workflow_id: \"document_review\") { type } }"}}))
            ws.send(json.dumps({"id": "1", "type": "complete"}))
        finally:
            ws.close()
        self.count()

    def one(self, session: requests.Session, i: int) -> None:
        kind = i % 10
        if kind < 4:
            self.chat(session)
        elif kind < 6:
            self.stream(session, drop=False)
        elif kind == 6:
            self.stream(session, drop=True)
        elif kind == 7:
            self.upstream.fail_next(500, openai_error("soak fault", "server_error"))
            self.chat(session)
        elif kind == 8:
            self.graphql(session)
        else:
            self.subscription()

    def client(self) -> None:
        with requests.Session() as session:
            while self.done < self.total:
                i = next(self.ops)
                try:
                    self.one(session, i)
                except Exception as exc:  # keep soaking; report what failed
                    self.count(error=type(exc).__name__)

    def sampler(self, stop: threading.Event) -> None:
        master = self.server.proc.pid
        while not stop.is_set():
            sample = {pid: rss_kb(pid) for pid in workers(master)}
            self.samples.append((self.done, {p: v for p, v in sample.items() if v}))
            stop.wait(2)

    def run(self) -> None:
        stop = threading.Event()
        sampler = threading.Thread(target=self.sampler, args=(stop,), daemon=True)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=self.client) for _ in range(THREADS)]
        for t in threads:
            t.start()
        last_print = 0.0
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                print(f"  {self.done:>7} requests, {self.done / (last_print - started):.0f}/s, "
                      f"rss {self.samples[-1][1] if self.samples else {}}", flush=True)
        stop.set()
        sampler.join()
        self.samples.append((self.done, {p: rss_kb(p) for p in workers(self.server.proc.pid)}))
        elapsed = time.monotonic() - started
        print(f"{self.done} requests in {elapsed:.0f} s ({self.done / elapsed:.0f}/s); errors: {self.errors}")
        self.report()

    def report(self) -> None:
        warm = [(n, s) for n, s in self.samples if n >= self.total * 0.2]
        for pid in sorted({p for _, s in warm for p in s}):
            points = [(n, s[pid]) for n, s in warm if s.get(pid)]
            if len(points) < 2:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in points) / (sum((x - mx) ** 2 for x in xs) or 1)
            first_all = next((s[pid] for _, s in self.samples if s.get(pid)), None)
            print(f"worker {pid}: rss at start {first_all} KB; after warm-up first {ys[0]} KB "
                  f"(at {xs[0]} requests), last {ys[-1]} KB (at {xs[-1]}); "
                  f"slope {slope * 10_000:+.0f} KB per 10k requests; max {max(ys)} KB")


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    backend = sys.argv[2] if len(sys.argv) > 2 else "memory"
    work = Path(tempfile.mkdtemp(prefix="cb-soak-"))
    nats = None
    env = {"OPENAI_API_KEY": API_KEY, "RUST_LOG": "warn", "SSE_KEEPALIVE_SECONDS": "5",
           "BREAKER_FAILURE_THRESHOLD": "1000", "BREAKER_ERROR_RATE": "1"}
    if backend == "nats":
        nats = NatsServer(work / "nats")
        nats.start()
        env.update(NATS_URL=nats.url, WEB_CONCURRENCY="2")
    with OpenAIUpstream() as upstream:
        env["OPENAI_BASE_URL"] = upstream.base_url
        server = Server(work, backend=backend, env=env)
        server.start()
        try:
            print(f"soak: {total} requests, {backend} storage, {THREADS} client threads")
            Soak(server, upstream, total).run()
        finally:
            server.stop()
            if nats:
                nats.stop()


if __name__ == "__main__":
    main()
