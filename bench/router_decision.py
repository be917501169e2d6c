"""The router's decision time per request, in microseconds (no network, memory storage).

Run: ``.venv/bin/python bench/router_decision.py [iterations]`` (default 20000). Times
``Router.plan`` for an explicit model with two deployments, an alias, the virtual models
``auto`` and ``cb:cost-optimal`` across three configured providers (plus a discovered
Ollama), a model with fallbacks, the gateway's plan (routes and per-provider request
checks), and a full decision round trip (plan, started, finished). Prints one table and
the headline number: the median of the round trip, which is what one request pays.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cb.config import Settings  # noqa: E402
from cb.llm.gateway import build_gateway  # noqa: E402
from cb.llm.routing import RequestContext  # noqa: E402
from cb.llm.services import llm_services  # noqa: E402
from cb.llm.types import ChatRequest, Message  # noqa: E402
from cb.storage.memory import MemoryStorage  # noqa: E402

COLUMNS = ("median", "p90", "p99", "mean")


def measure(fn, iterations: int) -> dict[str, float]:
    """Microseconds per call of ``fn``: median, p90, p99 and mean over ``iterations`` calls."""
    for _ in range(min(iterations, 500)):  # warm up
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return {
        "median": statistics.median(samples),
        "p90": samples[int(len(samples) * 0.90) - 1],
        "p99": samples[int(len(samples) * 0.99) - 1],
        "mean": statistics.fmean(samples),
    }


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    settings = Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-a",
            "ANTHROPIC_API_KEY": "sk-b",
            "GOOGLE_API_KEY": "sk-c",
            "OLLAMA_BASE_URL": "http://127.0.0.1:11434",
        },
        dotenv=None,
    )
    storage = MemoryStorage()
    services = llm_services(settings, storage)
    router = services["router"]
    router.discovered["ollama"] = ["llama3.2"]  # as if discovery had found it
    router.registry.configure(
        {"id": "proxy", "provider_type": "openai", "base_url": "http://proxy/v1", "api_key": "sk-p"}
    )
    gateway = build_gateway(settings, storage, router, services["ledger"], services["catalog"])
    for route in router.routes("cb:smart-chat", RequestContext(strategy="cost")):
        router.started(route)
        router.finished(route, True, 120.0, 30.0)
    chat = ChatRequest(model="gpt-4o", messages=[Message("user", "Hello")])

    def round_trip():
        route = router.routes("gpt-4o", RequestContext())[0]
        router.started(route)
        router.finished(route, True, 100.0, 20.0)

    cases = [
        ("plan gpt-4o (2 deployments, balanced)", lambda: router.plan("gpt-4o", RequestContext())),
        ("plan claude-3-opus (alias)", lambda: router.plan("claude-3-opus", RequestContext())),
        ("plan auto (virtual, 5 deployments)", lambda: router.plan("auto", RequestContext())),
        ("plan cb:cost-optimal (virtual)", lambda: router.plan("cb:cost-optimal", RequestContext())),
        (
            "plan gpt-4o + 2 fallback models",
            lambda: router.plan("gpt-4o", RequestContext(fallback_models=["claude-3-5-sonnet", "gemini-1.5-pro"])),
        ),
        ("gateway.plan gpt-4o (+ provider checks)", lambda: gateway.plan("gpt-4o", chat, RequestContext())),
        ("decision round trip (plan+started+finished)", round_trip),
    ]
    print(f"Router decision time, microseconds per call ({iterations} calls each after warm-up)")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {len(router.deployments)} deployments, "
        f"strategy {router.default_strategy}"
    )
    print()
    width = max(len(label) for label, _ in cases)
    print(f"{'case':<{width}}  " + "  ".join(f"{c:>8}" for c in COLUMNS))
    print("-" * (width + 2 + 10 * len(COLUMNS)))
    results = {}
    for label, fn in cases:
        results[label] = stats = measure(fn, iterations)
        print(f"{label:<{width}}  " + "  ".join(f"{stats[c]:8.1f}" for c in COLUMNS))
    headline = results["decision round trip (plan+started+finished)"]
    print()
    print(f"Router decision per request: median {headline['median']:.1f} us, p99 {headline['p99']:.1f} us")


if __name__ == "__main__":
    main()
