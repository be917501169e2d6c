"""Added latency of the gateway: the same chat request sent straight to a fast local OpenAI
upstream and through Circuit Breaker (real gunicorn) to that upstream, sequentially.

    .venv/bin/python bench/overhead.py [requests]

Prints p50/p99 of both, their difference, and the server's own x-cb-overhead-ms header
(time spent in the gateway excluding the upstream). Also the same for streams (time to
the last byte). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from tests.harness import Server  # noqa: E402
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream  # noqa: E402

BODY = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello, how are you?"}]}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed(session: requests.Session, url: str, headers: dict, body: dict, n: int) -> tuple[list[float], list[float]]:
    latencies, overheads = [], []
    for _ in range(n):
        start = time.perf_counter()
        response = session.post(url, json=body, headers=headers, timeout=10)
        _ = response.content
        latencies.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
        if "x-cb-overhead-ms" in response.headers:
            overheads.append(float(response.headers["x-cb-overhead-ms"]))
    return latencies, overheads


def report(label: str, direct: list[float], gateway: list[float], overhead: list[float]) -> None:
    print(f"{label}: n={len(direct)}")
    print(f"  direct   p50 {pct(direct, 50):7.2f} ms   p99 {pct(direct, 99):7.2f} ms")
    print(f"  gateway  p50 {pct(gateway, 50):7.2f} ms   p99 {pct(gateway, 99):7.2f} ms")
    print(
        f"  added    p50 {pct(gateway, 50) - pct(direct, 50):7.2f} ms   p99 {pct(gateway, 99) - pct(direct, 99):7.2f} ms"
    )
    if overhead:
        print(f"  x-cb-overhead-ms p50 {statistics.median(overhead):.2f}  p99 {pct(overhead, 99):.2f}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    upstream = OpenAIUpstream().start()
    server = Server(
        Path(tempfile.mkdtemp(prefix="cb-bench-")),
        env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.base_url, "RUST_LOG": "warn"},
    )
    server.start()
    try:
        direct_url = upstream.base_url + "/chat/completions"
        gateway_url = server.openai_url + "/v1/chat/completions"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with requests.Session() as direct, requests.Session() as gateway:
            timed(direct, direct_url, auth, BODY, 30)  # warm up both paths and their pools
            timed(gateway, gateway_url, {}, BODY, 30)
            d, _ = timed(direct, direct_url, auth, BODY, n)
            g, o = timed(gateway, gateway_url, {}, BODY, n)
            report("chat.completions (JSON)", d, g, o)
            stream = dict(BODY, stream=True)
            d, _ = timed(direct, direct_url, auth, stream, n)
            g, o = timed(gateway, gateway_url, {}, stream, n)
            report("chat.completions (SSE, to last byte)", d, g, o)
    finally:
        server.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
