"""Per-key rate limits: requests per minute and tokens per minute, exact across workers.

Each limit is its own fixed window of :data:`WINDOW` seconds, opened by the first
request after the previous one ended, kept as one counter entry in the ``counters``
bucket: ``{"start": <epoch>, "used": <n>}``. Every change is a compare-and-set on the
entry's revision (``Storage.create`` / ``Storage.update``), retried on
:class:`~cb.errors.Conflict`, so with nats all workers and replicas share one exact
count, and with memory one process does. A full window is refused without a write.

Tokens are reserved up front from an estimate (:func:`estimate_tokens`) and settled
with the real usage when the response is known (:meth:`Reservation.settle`).
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field

from cb.errors import Conflict, NotFound, StorageUnavailable
from cb.security.errors import RateLimited
from cb.storage import Storage

BUCKET = "counters"
WINDOW = 60.0
MAX_ATTEMPTS = 2000
_UNSAFE = re.compile(r"[^A-Za-z0-9_=-]")


@dataclass
class WindowState:
    """Where one window stands after a decision."""

    limit: int
    used: int
    reset: float  # seconds until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    seconds = math.ceil(seconds)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def rate_limit_headers(requests: WindowState | None, tokens: WindowState | None) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers for the windows that exist."""
    headers = {}
    for kind, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = _duration(state.reset)
    return headers


@dataclass
class Reservation:
    """One admitted request: its window states and the tokens reserved for it."""

    limiter: RateLimiter | None = None
    identity: str = ""
    reserved_tokens: int = 0
    token_window: float | None = None  # start of the token window the reservation went into
    requests: WindowState | None = None
    tokens: WindowState | None = None
    settled: bool = field(default=False)

    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.requests, self.tokens)

    @property
    def unsettled(self) -> bool:
        """Whether :meth:`settle` would still change a token count."""
        return not self.settled and self.limiter is not None and self.token_window is not None

    def settle(self, actual_tokens: int) -> None:
        """Replace the estimate by the real usage (once; later calls do nothing)."""
        if self.settled or self.limiter is None or self.token_window is None:
            return
        self.settled = True
        delta = int(actual_tokens) - self.reserved_tokens
        if delta:
            self.limiter._adjust(self.identity, "tokens", delta, self.token_window)


class RateLimiter:
    """Admits or refuses requests per identity (a key id, or ``anonymous``)."""

    def __init__(self, storage: Storage, clock=time.time):
        self.storage = storage
        self.clock = clock

    def acquire(self, identity: str, rpm: int | None, tpm: int | None, estimated_tokens: int = 0) -> Reservation:
        """Count one request and reserve its estimated tokens, or raise :class:`RateLimited`."""
        if rpm is None and tpm is None:
            return Reservation()
        identity = _UNSAFE.sub("_", identity)
        estimated_tokens = max(0, int(estimated_tokens))
        reservation = Reservation(self, identity, estimated_tokens)
        if rpm is not None:
            ok, reservation.requests, request_window = self._add(identity, "requests", 1, rpm)
            if not ok:
                tokens = self._peek(identity, "tokens", tpm) if tpm is not None else None
                raise self._refusal("requests", rpm, reservation.requests, tokens)
        if tpm is not None:
            ok, reservation.tokens, reservation.token_window = self._add(identity, "tokens", estimated_tokens, tpm)
            if not ok:
                if rpm is not None:
                    self._adjust(identity, "requests", -1, request_window)
                    reservation.requests.used -= 1
                raise self._refusal("tokens", tpm, reservation.requests, reservation.tokens)
        return reservation

    @staticmethod
    def _refusal(kind: str, limit: int, requests: WindowState | None, tokens: WindowState | None) -> RateLimited:
        state = requests if kind == "requests" else tokens
        unit = "requests" if kind == "requests" else "tokens"
        return RateLimited(
            f"Rate limit reached: {limit} {unit} per minute for this API key. Try again in {_duration(state.reset)}.",
            retry_after=state.reset,
            headers=rate_limit_headers(requests, tokens),
        )

    def _key(self, identity: str, kind: str) -> str:
        return f"rl.{identity}.{kind}"

    def _peek(self, identity: str, kind: str, limit: int) -> WindowState:
        now = self.clock()
        entry = self.storage.get(BUCKET, self._key(identity, kind))
        if entry is None or now - entry.value["start"] >= WINDOW:
            return WindowState(limit, 0, WINDOW)
        return WindowState(limit, entry.value["used"], entry.value["start"] + WINDOW - now)

    def _add(self, identity: str, kind: str, amount: int, limit: int) -> tuple[bool, WindowState, float]:
        """Add ``amount`` if it fits in the current window: (admitted, state, window start)."""
        key = self._key(identity, kind)
        for attempt in range(MAX_ATTEMPTS):
            now = self.clock()
            entry = self.storage.get(BUCKET, key)
            start, used = now, 0
            if entry is not None and now - entry.value["start"] < WINDOW:
                start, used = entry.value["start"], entry.value["used"]
            reset = start + WINDOW - now
            if used + amount > limit:
                return False, WindowState(limit, used, reset), start
            value = {"start": start, "used": used + amount}
            try:
                if entry is None:
                    self.storage.create(BUCKET, key, value)
                else:
                    self.storage.update(BUCKET, key, value, entry.revision)
            except (Conflict, NotFound):
                _backoff(attempt)
                continue
            return True, WindowState(limit, used + amount, reset), start
        raise StorageUnavailable("rate-limit counter is too contended; try again")

    def _adjust(self, identity: str, kind: str, delta: int, window_start: float) -> None:
        """Add ``delta`` to a window if it is still the current one (never below zero)."""
        key = self._key(identity, kind)
        for attempt in range(MAX_ATTEMPTS):
            entry = self.storage.get(BUCKET, key)
            if entry is None or entry.value["start"] != window_start:
                return  # that window is over; nothing left to correct
            value = {"start": window_start, "used": max(0, entry.value["used"] + delta)}
            try:
                self.storage.update(BUCKET, key, value, entry.revision)
                return
            except (Conflict, NotFound):
                _backoff(attempt)


def _backoff(attempt: int) -> None:
    """A short random pause so contending workers do not retry in lockstep."""
    time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))


def estimate_tokens(body: dict) -> int:
    """A cheap upper-ish estimate of a request's tokens: prompt characters / 4 + max_tokens."""
    chars = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            chars += _text_length(message.get("content"))
    for name in ("input", "prompt", "system", "instructions"):  # the last two: Messages and Responses APIs
        chars += _text_length(body.get(name))
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens") or 0
    if not isinstance(completion, int) or isinstance(completion, bool):
        completion = 0
    return math.ceil(chars / 4) + max(0, completion)


def _text_length(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(v.get("text") if isinstance(v, dict) else v) for v in value)
    return 0
