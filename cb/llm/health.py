"""Health of each deployment: its circuit breaker, measured latency, error rate, load.

A breaker per deployment moves through three states:

* ``closed``: requests flow. It opens after ``failure_threshold`` consecutive failures,
  or when, over the last ``window_seconds``, at least ``min_requests`` requests were seen
  and the share that failed reached ``error_rate_threshold``.
* ``open``: the deployment is skipped. After ``cooldown_seconds`` it lets exactly one
  probe request through (``half_open``).
* ``half_open``: the probe is in flight; nobody else gets through. Success closes the
  breaker (counters reset), failure opens it again for another cooldown.

Only faults of the deployment count as failures (connection errors, timeouts, 429, 5xx):
an error that is the client's fault (``retryable`` false, e.g. a 400) proves the
deployment answered, so it counts as a success. A ``Retry-After`` from the deployment
makes it ineligible until then, whatever the breaker says.

State is per process (each gunicorn worker learns on its own), which is what breakers
are for: cheap, local, quick to react.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and for how long (settings BREAKER_*)."""

    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    error_rate_threshold: float = 0.5
    window_seconds: float = 60.0
    min_requests: int = 10
    ewma_alpha: float = 0.3  # weight of the newest latency sample

    @classmethod
    def from_settings(cls, settings) -> BreakerPolicy:
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            cooldown_seconds=settings.breaker_cooldown_seconds,
            error_rate_threshold=settings.breaker_error_rate,
            window_seconds=settings.breaker_window_seconds,
            min_requests=settings.breaker_min_requests,
        )


def is_fault(ok: bool, error: Exception | None) -> bool:
    """Whether an outcome counts against the deployment (client mistakes do not)."""
    if ok:
        return False
    return error is None or bool(getattr(error, "retryable", True))


@dataclass
class DeploymentHealth:
    """What one worker knows about one deployment."""

    policy: BreakerPolicy
    state: str = CLOSED
    opened_at: float = 0.0
    probe_taken: bool = False
    consecutive_failures: int = 0
    in_flight: int = 0
    served: int = 0  # attempts started, for weighted round robin among equals
    latency_ewma: float | None = None
    ttft_ewma: float | None = None
    last_error: str | None = None
    retry_until: float = 0.0
    outcomes: deque = field(default_factory=deque)  # (monotonic time, fault?)
    faults: int = 0  # how many of ``outcomes`` are faults, kept in step so error_rate() is O(1)

    # -- eligibility -------------------------------------------------------------

    def circuit_state(self, now: float | None = None) -> str:
        """The state as a client should see it: an open breaker past its cooldown reads half_open."""
        now = time.monotonic() if now is None else now
        if self.state == OPEN and now - self.opened_at >= self.policy.cooldown_seconds:
            return HALF_OPEN
        return self.state

    def available(self, now: float | None = None) -> bool:
        """Whether a request may be sent here now."""
        now = time.monotonic() if now is None else now
        if now < self.retry_until:
            return False
        state = self.circuit_state(now)
        if state == CLOSED:
            return True
        return state == HALF_OPEN and not self.probe_taken

    def acquire(self, now: float | None = None) -> bool:
        """Claim a slot for one attempt; False if the breaker lets nothing through."""
        now = time.monotonic() if now is None else now
        if not self.available(now):
            return False
        if self.circuit_state(now) == HALF_OPEN:
            self.state, self.probe_taken = HALF_OPEN, True
        self.in_flight += 1
        self.served += 1
        return True

    # -- outcomes ----------------------------------------------------------------

    def record(
        self,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None = None,
        error: Exception | None = None,
        now: float | None = None,
    ) -> None:
        """Fold one finished attempt into the breaker and the measurements."""
        now = time.monotonic() if now is None else now
        self.in_flight = max(0, self.in_flight - 1)
        fault = is_fault(ok, error)
        self.outcomes.append((now, fault))
        self.faults += fault
        self._trim(now)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            self.retry_until = max(self.retry_until, now + float(retry_after))
        if fault:
            self.consecutive_failures += 1
            self.last_error = _describe(error)
            if self.state == HALF_OPEN or self._should_open():
                self._open(now)
            return
        self._measure(latency_ms, ttft_ms)
        self.consecutive_failures = 0
        if self.state == HALF_OPEN:
            self.state, self.probe_taken = CLOSED, False
            self.outcomes.clear()
            self.faults = 0

    def release(self) -> None:
        """An acquired slot that was never used (the request stopped before sending)."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.state == HALF_OPEN:
            self.probe_taken = False

    def _should_open(self) -> bool:
        if self.consecutive_failures >= self.policy.failure_threshold:
            return True
        total = len(self.outcomes)
        return total >= self.policy.min_requests and self.error_rate() >= self.policy.error_rate_threshold

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.probe_taken = OPEN, now, False

    def _measure(self, latency_ms: float, ttft_ms: float | None) -> None:
        alpha = self.policy.ewma_alpha
        self.latency_ewma = (
            latency_ms if self.latency_ewma is None else alpha * latency_ms + (1 - alpha) * self.latency_ewma
        )
        if ttft_ms is not None:
            self.ttft_ewma = ttft_ms if self.ttft_ewma is None else alpha * ttft_ms + (1 - alpha) * self.ttft_ewma

    def _trim(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        while self.outcomes and self.outcomes[0][0] < horizon:
            self.faults -= self.outcomes.popleft()[1]

    # -- reporting ---------------------------------------------------------------

    def error_rate(self, now: float | None = None) -> float:
        """Share of faults among attempts in the window (0.0 with no attempts)."""
        if now is not None:
            self._trim(now)
        if not self.outcomes:
            return 0.0
        return self.faults / len(self.outcomes)

    def performance_ms(self) -> float | None:
        """The latency a client would feel: mean of the known EWMAs of latency and TTFT."""
        known = [v for v in (self.latency_ewma, self.ttft_ewma) if v is not None]
        return sum(known) / len(known) if known else None

    def snapshot(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        state = self.circuit_state(now)
        return {
            "is_healthy": state == CLOSED and now >= self.retry_until,
            "circuit_state": state,
            "error_rate": round(self.error_rate(now), 4),
            "average_latency_ms": round(self.latency_ewma, 2) if self.latency_ewma is not None else None,
            "average_ttft_ms": round(self.ttft_ewma, 2) if self.ttft_ewma is not None else None,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "in_flight": self.in_flight,
            "retry_after_seconds": round(self.retry_until - now, 3) if now < self.retry_until else None,
        }


def _describe(error: Exception | None) -> str:
    if error is None:
        return "request failed"
    return getattr(error, "message", None) or str(error) or type(error).__name__


class HealthBook:
    """The health of every deployment this worker has used, by deployment id."""

    def __init__(self, policy: BreakerPolicy | None = None):
        self.policy = policy or BreakerPolicy()
        self._by_id: dict[str, DeploymentHealth] = {}

    def __getitem__(self, deployment_id: str) -> DeploymentHealth:
        health = self._by_id.get(deployment_id)
        if health is None:
            health = self._by_id[deployment_id] = DeploymentHealth(self.policy)
        return health

    def forget(self, deployment_id: str) -> None:
        self._by_id.pop(deployment_id, None)
