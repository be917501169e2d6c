"""Routing strategies: put candidate routes in order of preference.

A :class:`Candidate` is a route plus what this worker measured about its deployment.
Each strategy is a function ``list[Candidate] -> list[Candidate]`` (best first); all
of them break ties by deployment priority (lower first), then weight (higher first),
then deployment id, so the order is deterministic.

``cost_optimized``
    cheapest model first: price per 1k tokens = (input + output price per 1M) / 2 / 1000.
``performance_first``
    lowest measured latency first: the mean of the EWMAs of total latency and time to
    first token. A deployment never measured counts as 0 ms, so it gets tried (and
    measured) once instead of being starved.
``load_balanced``
    fewest requests in flight per unit of weight; among equals the one that served
    fewest per unit of weight (a weighted round robin when idle).
``reliability_first``
    lowest error rate over the breaker window, then priority, then fewest consecutive
    failures.
``balanced``
    the sum of four normalised scores, lower is better: 0.35 × cost/max cost +
    0.30 × latency/max latency + 0.25 × error rate + 0.10 × load/max load (each ratio
    is 0 when every candidate has 0). Priority breaks ties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cb.llm.health import DeploymentHealth
from cb.llm.routing import Route


@dataclass
class Candidate:
    """One possible route and the measurements that rank it."""

    route: Route
    health: DeploymentHealth

    @property
    def price_per_1k(self) -> float:
        return price_per_1k(self.route.model.input_price, self.route.model.output_price)

    @property
    def performance_ms(self) -> float:
        return self.health.performance_ms() or 0.0

    @property
    def load(self) -> float:
        return self.health.in_flight / max(self.route.deployment.weight, 1e-9)

    def tie_break(self) -> tuple:
        d = self.route.deployment
        return (d.priority, -d.weight, d.id, self.route.model.id)


def price_per_1k(input_price: float, output_price: float) -> float:
    """Blended USD price per 1,000 tokens from per-million input and output prices."""
    return (input_price + output_price) / 2 / 1000


def cost_optimized(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.price_per_1k, c.tie_break()))


def performance_first(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.performance_ms, c.tie_break()))


def load_balanced(candidates: list[Candidate]) -> list[Candidate]:
    def key(c: Candidate) -> tuple:
        weight = max(c.route.deployment.weight, 1e-9)
        return (c.load, c.health.served / weight, c.tie_break())

    return sorted(candidates, key=key)


def reliability_first(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(
        candidates,
        key=lambda c: (
            c.health.error_rate(),
            c.route.deployment.priority,
            c.health.consecutive_failures,
            c.tie_break(),
        ),
    )


BALANCED_WEIGHTS = {"cost": 0.35, "latency": 0.30, "errors": 0.25, "load": 0.10}


def balanced_scores(candidates: list[Candidate]) -> list[float]:
    """The documented balanced score of each candidate (lower is better)."""

    def ratios(values: list[float]) -> list[float]:
        top = max(values, default=0.0)
        return [v / top if top > 0 else 0.0 for v in values]

    cost = ratios([c.price_per_1k for c in candidates])
    latency = ratios([c.performance_ms for c in candidates])
    load = ratios([c.load for c in candidates])
    w = BALANCED_WEIGHTS
    return [
        w["cost"] * cost[i] + w["latency"] * latency[i] + w["errors"] * c.health.error_rate() + w["load"] * load[i]
        for i, c in enumerate(candidates)
    ]


def balanced(candidates: list[Candidate]) -> list[Candidate]:
    scores = balanced_scores(candidates)
    ranked = sorted(zip(scores, candidates, strict=True), key=lambda sc: (round(sc[0], 9), sc[1].tie_break()))
    return [c for _, c in ranked]


STRATEGIES: dict[str, Callable[[list[Candidate]], list[Candidate]]] = {
    "cost_optimized": cost_optimized,
    "performance_first": performance_first,
    "load_balanced": load_balanced,
    "reliability_first": reliability_first,
    "balanced": balanced,
}

#: spellings clients use for the same strategies
STRATEGY_ALIASES = {
    "cost": "cost_optimized",
    "cost_optimized": "cost_optimized",
    "costoptimized": "cost_optimized",
    "cost-optimized": "cost_optimized",
    "performance": "performance_first",
    "performance_first": "performance_first",
    "performancefirst": "performance_first",
    "performance-first": "performance_first",
    "fastest": "performance_first",
    "load": "load_balanced",
    "load_balanced": "load_balanced",
    "loadbalanced": "load_balanced",
    "load-balanced": "load_balanced",
    "round_robin": "load_balanced",
    "reliability": "reliability_first",
    "reliability_first": "reliability_first",
    "reliabilityfirst": "reliability_first",
    "reliability-first": "reliability_first",
    "balanced": "balanced",
}


def normalize_strategy(name: str | None) -> str | None:
    """The canonical strategy name for ``name``, None when not given. Raises ValueError if unknown."""
    if name is None or not str(name).strip():
        return None
    key = str(name).strip().lower()
    if key not in STRATEGY_ALIASES:
        raise ValueError(f"unknown routing strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    return STRATEGY_ALIASES[key]
