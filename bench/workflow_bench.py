"""How many createToken + fireTransition pairs per second one worker sustains.

Starts the server itself (gunicorn, one worker, free ports) on memory and on nats (a
JetStream nats-server it starts too), drives it with client threads over keep-alive
HTTP connections, and prints pairs per second with latency percentiles.

    .venv/bin/python bench/workflow_bench.py [--seconds 10] [--clients 16] [--backend memory,nats]

The client runs on the same machine, so the numbers include its cost too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import NatsServer, Server  # noqa: E402

CREATE = 'mutation { createToken(input: { workflow_id: "document_review", data: {n: 1} }) { id } }'
FIRE = 'mutation($t: ID!) { fireTransition(input: { token_id: $t, transition_id: "submit" }) { place } }'


def run_clients(server: Server, clients: int, seconds: float) -> tuple[int, list[float], int, float]:
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        mine, failed = [], 0
        with requests.Session() as session:
            url = server.graphql_url + "/graphql"
            while time.monotonic() < stop:
                started = time.perf_counter()
                created = session.post(url, json={"query": CREATE}, timeout=30).json()
                token = created["data"]["createToken"]["id"]
                fired = session.post(url, json={"query": FIRE, "variables": {"t": token}}, timeout=30).json()
                if fired.get("errors"):
                    failed += 1
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return len(latencies), latencies, errors[0], elapsed


def bench(backend: str, clients: int, seconds: float, workdir: Path, nats: NatsServer | None) -> None:
    env = {"WEB_CONCURRENCY": "1", "RUST_LOG": "warn"}
    if nats:
        env.update(NATS_URL=nats.url, NATS_PREFIX=Server.fresh_namespace())
    server = Server(workdir, backend=backend, env=env)
    server.start()
    try:
        run_clients(server, clients, 1.0)  # warm up
        pairs, latencies, errors, elapsed = run_clients(server, clients, seconds)
    finally:
        server.stop()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"{backend:6s} 1 worker, {clients} clients, {elapsed:.1f}s: {pairs / elapsed:7.1f} pairs/s "
        f"({2 * pairs / elapsed:.0f} requests/s), pair latency p50 {p50:.1f} ms p99 {p99:.1f} ms, {errors} errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--backend", default="memory,nats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backend.split(","):
            nats = None
            if backend == "nats":
                nats = NatsServer(workdir / "nats")
                nats.start()
            try:
                bench(backend, args.clients, args.seconds, workdir, nats)
            finally:
                if nats:
                    nats.stop()


if __name__ == "__main__":
    main()
