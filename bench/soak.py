"""Soak: mixed load for a fixed time against real gunicorn and a fast local upstream, sampling
every worker's RSS and, on NATS, the size of every JetStream bucket and stream, to show that
nothing grows without bound but the usage log and what retention keeps.

    .venv/bin/python bench/soak.py [--minutes 30] [--backend nats|memory] [--workers 2]

``make soak`` runs it on NATS with two workers for SOAK_MINUTES (30). The mix, per 12
operations: 4 chat completions, 2 streams read to the end, 1 stream dropped after its first
chunk, 1 chat preceded by an upstream 500, 1 Responses API call (stored), 1 GraphQL round
(createToken, fireTransition, deleteToken, costAnalytics: 4 requests), 1 agent execution (a
token fired into a place with an agent, which answers and fires on; the token is deleted by the
thread's next agent round) and 1 subscription opened over WebSocket, fed one event, and closed.

RSS comes from /proc/<pid>/status (VmRSS) of each gunicorn worker every 5 s. The report
(printed, and written to bench/results/soak-<time>.md) has a row per SOAK_ROW_SECONDS and,
from the end of the warm-up (the first fifth) to the end: each worker's RSS slope and, per
bucket and stream, messages and bytes added per 1,000 requests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import websocket  # noqa: E402

from tests.harness import NatsServer, Server  # noqa: E402
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream, openai_error  # noqa: E402

THREADS = 16
ROW_SECONDS = 120
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello, how are you?"}]}
AGENT_WORKFLOW = "soak_agents"
# what is expected to grow with use: the usage log (one record per chat), and what retention
# keeps (finished agent executions for AGENT_EXECUTION_RETENTION_SECONDS, stored responses for
# RESPONSES_RETENTION_SECONDS, and their indexes); everything else must stay flat
GROWS_BY_DESIGN = {
    "usage": "one record per request",
    "executions": "kept for AGENT_EXECUTION_RETENTION_SECONDS",
    "responses": "kept for RESPONSES_RETENTION_SECONDS",
    "index": "executions and responses by hour, tokens by place",
}


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
    def __init__(self, server: Server, upstream: OpenAIUpstream, seconds: float, storage=None):
        self.server, self.upstream, self.seconds, self.storage = server, upstream, seconds, storage
        self.done = 0
        self.faults = 0
        self.kinds: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.ops = itertools.count()
        self.deadline = 0.0
        self.rss: list[tuple[float, int, dict[int, int]]] = []  # (seconds, requests done, {pid: rss kb})
        self.stores: list[tuple[float, int, dict[str, tuple[int, int]]]] = []  # (s, done, {store: (msgs, bytes)})
        self.started = 0.0

    def count(self, kind: str, n: int = 1, error: str | None = None) -> None:
        with self.lock:
            self.done += n
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1

    # -- the operations ---------------------------------------------------------------------

    def graphql(self, session: requests.Session, query: str, variables: dict | None = None) -> dict:
        r = session.post(
            self.server.graphql_url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        body = r.json()
        if r.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"graphql {r.status_code} {json.dumps(body.get('errors'))[:200]}")
        return body["data"]

    def chat(self, session: requests.Session, kind: str = "chat") -> None:
        r = session.post(self.server.openai_url + "/v1/chat/completions", json=CHAT, timeout=30)
        _ = r.content
        self.count(kind, error=None if r.status_code == 200 else f"{kind} {r.status_code}")

    def stream(self, session: requests.Session, drop: bool) -> None:
        kind = "stream dropped" if drop else "stream"
        with session.post(
            self.server.openai_url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=30
        ) as r:
            ended = False
            for line in r.iter_lines():
                if drop and line.startswith(b"data: "):
                    r.raw._fp.fp.raw._sock.shutdown(2)  # hang up mid-stream, as a client would
                    ended = True
                    break
                ended = ended or line == b"data: [DONE]"
        self.count(kind, error=None if r.status_code == 200 and ended else f"{kind} {r.status_code}")

    def response(self, session: requests.Session) -> None:
        r = session.post(
            self.server.openai_url + "/v1/responses", json={"model": "gpt-4", "input": "Hi", "store": True}, timeout=30
        )
        _ = r.content
        self.count("responses", error=None if r.status_code == 200 else f"responses {r.status_code}")

    def workflow_round(self, session: requests.Session) -> None:
        token = self.graphql(session, 'mutation { createToken(input: {workflow_id: "document_review"}) { id } }')
        token_id = token["createToken"]["id"]
        self.graphql(
            session,
            'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }',
            {"t": token_id},
        )
        self.graphql(session, "mutation($t: ID!) { deleteToken(id: $t) }", {"t": token_id})
        self.graphql(session, "{ costAnalytics { total_requests } }")  # folds the usage log into the worker
        self.count("graphql", 4)

    def agent_round(self, session: requests.Session, mine: list[str]) -> None:
        token = self.graphql(
            session,
            'mutation($w: ID!) { createToken(input: {workflow_id: $w, data: {title: "Soak"}}) { id } }',
            {"w": AGENT_WORKFLOW},
        )["createToken"]["id"]
        self.graphql(
            session,
            'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }',
            {"t": token},
        )
        mine.append(token)
        made = 2
        # the oldest of this thread's tokens: once its execution is over (the agent fired
        # review, or fail after an upstream 500), delete it
        place = (
            self.graphql(session, "query($t: ID!) { token(id: $t) { place } }", {"t": mine[0]})["token"] or {}
        ).get("place")
        made += 1
        if place in ("reviewed", "failed"):
            self.graphql(session, "mutation($t: ID!) { deleteToken(id: $t) }", {"t": mine.pop(0)})
            made += 1
            self.count(f"agent executions {place}", 0)
        self.count("agent rounds", made)

    def subscription(self) -> None:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.server.graphql_port}/ws", subprotocols=["graphql-transport-ws"], timeout=10
        )
        try:
            ws.send(json.dumps({"type": "connection_init"}))
            json.loads(ws.recv())
            ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {
                            "query": 'subscription { workflowEvents(workflow_id: "document_review") { type } }'
                        },
                    }
                )
            )
            ws.send(json.dumps({"id": "1", "type": "complete"}))
        finally:
            ws.close()
        self.count("subscription")

    def one(self, session: requests.Session, i: int, mine: list[str]) -> None:
        kind = i % 12
        if kind < 4:
            self.chat(session)
        elif kind < 6:
            self.stream(session, drop=False)
        elif kind == 6:
            self.stream(session, drop=True)
        elif kind == 7:
            self.upstream.fail_next(500, openai_error("soak fault", "server_error"))
            self.faults += 1
            self.chat(session, "chat (an upstream 500 queued)")
        elif kind == 8:
            self.response(session)
        elif kind == 9:
            self.workflow_round(session)
        elif kind == 10:
            self.agent_round(session, mine)
        else:
            self.subscription()

    def client(self) -> None:
        mine: list[str] = []
        with requests.Session() as session:
            while time.monotonic() < self.deadline:
                i = next(self.ops)
                try:
                    self.one(session, i, mine)
                except Exception as exc:  # keep soaking; report what failed
                    self.count("failed", error=f"{type(exc).__name__}: {str(exc)[:80]}")

    # -- sampling ---------------------------------------------------------------------------

    def sampler(self, stop: threading.Event) -> None:
        master = self.server.proc.pid
        last_stores = 0.0
        while not stop.is_set():
            now = time.monotonic() - self.started
            sample = {pid: rss_kb(pid) for pid in workers(master)}
            self.rss.append((now, self.done, {p: v for p, v in sample.items() if v}))
            if self.storage is not None and now - last_stores >= 30:
                last_stores = now
                self.stores.append((now, self.done, self.store_sizes()))
            stop.wait(5)

    def store_sizes(self) -> dict[str, tuple[int, int]]:
        stores = self.storage.status()["stores"]
        return {name: (s["messages"], s["bytes"]) for name, s in stores.items() if s}

    def run(self) -> None:
        stop = threading.Event()
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        sampler = threading.Thread(target=self.sampler, args=(stop,), daemon=True)
        sampler.start()
        threads = [threading.Thread(target=self.client) for _ in range(THREADS)]
        for t in threads:
            t.start()
        last_print = 0.0
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last_print > 60:
                last_print = time.monotonic()
                print(
                    f"  {last_print - self.started:5.0f} s: {self.done:>7} requests, "
                    f"rss {self.rss[-1][2] if self.rss else {}}, errors {sum(self.errors.values())}",
                    flush=True,
                )
        stop.set()
        sampler.join()
        end = time.monotonic() - self.started
        self.rss.append((end, self.done, {p: rss_kb(p) for p in workers(self.server.proc.pid)}))
        if self.storage is not None:
            self.stores.append((end, self.done, self.store_sizes()))

    # -- the report -------------------------------------------------------------------------

    def report(self, title: str) -> str:
        elapsed = self.rss[-1][0]
        lines = [
            f"# {title}",
            "",
            f"{self.done:,} requests in {elapsed:,.0f} s ({self.done / elapsed:,.0f}/s), {THREADS} client "
            f"threads; operations: {dict(sorted(self.kinds.items()))}.",
            "",
            f"Upstream 500s queued: {self.faults:,}; each fails the next request to reach the one upstream "
            f"(answered 502, or an agent execution failed). Errors: {self.errors or 'none'}.",
            "",
        ]
        pids = sorted({p for _, _, s in self.rss for p in s})
        lines += [
            "## RSS over time (MB)",
            "",
            "| time | requests | " + " | ".join(f"worker {i + 1}" for i in range(len(pids))) + " |",
            "| ---: | ---: |" + " ---: |" * len(pids),
        ]
        next_row = 0.0
        for i, (t, done, sample) in enumerate(self.rss):
            if t >= next_row or i == len(self.rss) - 1:
                next_row = t + ROW_SECONDS
                lines.append(
                    f"| {t / 60:.0f} min | {done:,} | "
                    + " | ".join(f"{sample[p] / 1024:.1f}" if sample.get(p) else "" for p in pids)
                    + " |"
                )
        warm = [(n, s) for t, n, s in self.rss if t >= elapsed * 0.2]
        lines += ["", "After warm-up (the first fifth): "]
        for i, pid in enumerate(pids):
            points = [(n, s[pid]) for n, s in warm if s.get(pid)]
            if len(points) >= 2:
                lines.append(
                    f"- worker {i + 1}: {points[0][1] / 1024:.1f} MB at {points[0][0]:,} requests, "
                    f"{points[-1][1] / 1024:.1f} MB at {points[-1][0]:,}, max {max(v for _, v in points) / 1024:.1f}"
                    f" MB; slope {slope(points) * 10_000:+,.0f} KB per 10,000 requests"
                )
        if self.stores:
            lines += self.store_report()
        return "\n".join(lines) + "\n"

    def store_report(self) -> list[str]:
        elapsed = self.stores[-1][0]
        warm = next((s for s in self.stores if s[0] >= elapsed * 0.2), self.stores[0])
        _, n0, first = warm
        _, n1, last = self.stores[-1]
        per = 1000 / max(n1 - n0, 1)
        lines = [
            "",
            f"## JetStream buckets and streams, from {n0:,} to {n1:,} requests",
            "",
            "| store | messages | bytes | messages per 1,000 requests | bytes per 1,000 requests | growth |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name in sorted(set(first) | set(last)):
            m0, b0 = first.get(name, (0, 0))
            m1, b1 = last.get(name, (0, 0))
            grows = (m1 - m0) * per >= 1 or (b1 - b0) * per >= 1024
            verdict = GROWS_BY_DESIGN.get(name, "UNBOUNDED") if grows else "flat"
            lines.append(
                f"| {name} | {m1:,} | {b1:,} | {(m1 - m0) * per:+,.1f} | {(b1 - b0) * per:+,.0f} | {verdict} |"
            )
        return lines


def slope(points: list[tuple[int, int]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in points) / (sum((x - mx) ** 2 for x in xs) or 1)


def set_up_agents(server: Server) -> None:
    """A workflow whose pending_review place has an agent that answers and fires review."""

    def call(query: str, variables: dict) -> dict:
        body = requests.post(
            server.graphql_url + "/graphql", json={"query": query, "variables": variables}, timeout=30
        ).json()
        assert not body.get("errors"), body
        return body["data"]

    call(
        "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { id } }",
        {
            "i": {
                "id": AGENT_WORKFLOW,
                "name": "Soak",
                "places": ["draft", "pending_review", "reviewed", "failed"],
                "initial_place": "draft",
                "transitions": [
                    {"id": "submit", "from_places": ["draft"], "to_place": "pending_review"},
                    {"id": "review", "from_places": ["pending_review"], "to_place": "reviewed"},
                    {"id": "fail", "from_places": ["pending_review"], "to_place": "failed"},
                ],
            }
        },
    )
    agent = call(
        "mutation($i: CreateAgentInput!) { createAgent(input: $i) { id } }",
        {
            "i": {
                "name": "Soak reviewer",
                "llm_provider": {"provider_type": "openai", "model": "gpt-4"},
                "system_prompt": "You review documents.",
                "user_template": "Review {{data.title}}",
            }
        },
    )["createAgent"]["id"]
    call(
        "mutation($i: ConfigurePlaceAgentInput!) { configurePlaceAgent(input: $i) { id } }",
        {
            "i": {
                "workflow_id": AGENT_WORKFLOW,
                "place": "pending_review",
                "agent_id": agent,
                "output_key": "review",
                "auto_transition": "review",
                "failure_transition": "fail",
                "retry": {"max_attempts": 1},
            }
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--backend", choices=("nats", "memory"), default="nats")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cb-soak-"))
    nats = storage = None
    prefix = "soak" + uuid.uuid4().hex[:6]
    env = {
        "OPENAI_API_KEY": API_KEY,
        "SSE_KEEPALIVE_SECONDS": "5",
        "WEB_CONCURRENCY": str(args.workers),
        "BREAKER_FAILURE_THRESHOLD": "1000",
        "BREAKER_ERROR_RATE": "1",
        "LOG_LEVEL": "WARNING",
    }
    if args.backend == "nats":
        nats = NatsServer(work / "nats")
        nats.start()
        env.update(NATS_URL=nats.url, NATS_PREFIX=prefix)
        from cb.storage.nats import NatsStorage

        storage = NatsStorage(nats.url, prefix)
        storage.connect()
    with OpenAIUpstream() as upstream:
        env["OPENAI_BASE_URL"] = upstream.base_url
        server = Server(work, backend=args.backend, env=env)
        server.start()
        try:
            set_up_agents(server)
            title = (
                f"Soak: {args.minutes:g} minutes, {args.backend} storage, {args.workers} worker(s), "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
            )
            print(title, flush=True)
            soak = Soak(server, upstream, args.minutes * 60, storage)
            soak.run()
            report = soak.report(title)
        finally:
            server.stop()
            if storage is not None:
                storage.close()
            if nats:
                nats.stop()
    print(report)
    out = ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
