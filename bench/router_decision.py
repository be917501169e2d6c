"""The router's decision time per request, in microseconds (no network, memory storage).

Run: ``.venv/bin/python bench/router_decision.py [iterations]``. Measures Router.plan for
an explicit model with two deployments, an alias, and the virtual models ``auto`` and
``cb:cost-optimal`` across three configured providers, plus started()+finished().
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cb.config import Settings  # noqa: E402
from cb.llm.routing import RequestContext  # noqa: E402
from cb.llm.services import llm_services  # noqa: E402
from cb.storage.memory import MemoryStorage  # noqa: E402


def measure(label: str, fn, iterations: int) -> None:
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<42} median {statistics.median(samples):7.1f} us   p99 {p99:7.1f} us")


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b", "GOOGLE_API_KEY": "sk-c",
                                  "OLLAMA_BASE_URL": ""}, dotenv=None)
    services = llm_services(settings, MemoryStorage())
    router = services["router"]
    router.registry.configure({"id": "proxy", "provider_type": "openai", "base_url": "http://proxy/v1",
                               "api_key": "sk-p"})
    for route in router.routes("cb:smart-chat", RequestContext()):
        router.started(route)
        router.finished(route, True, 120.0, 30.0)

    def round_trip():
        route = router.routes("gpt-4o", RequestContext())[0]
        router.started(route)
        router.finished(route, True, 100.0, 20.0)

    measure("plan gpt-4o (2 deployments, balanced)", lambda: router.plan("gpt-4o", RequestContext()), iterations)
    measure("plan claude-3-opus (alias)", lambda: router.plan("claude-3-opus", RequestContext()), iterations)
    measure("plan auto (virtual, 3 providers)", lambda: router.plan("auto", RequestContext()), iterations)
    measure("plan cb:cost-optimal", lambda: router.plan("cb:cost-optimal", RequestContext()), iterations)
    measure("plan gpt-4o + fallbacks", lambda: router.plan(
        "gpt-4o", RequestContext(fallback_models=["claude-3-5-sonnet", "gemini-1.5-pro"])), iterations)
    measure("routes + started + finished", round_trip, iterations)


if __name__ == "__main__":
    main()
