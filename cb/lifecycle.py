"""The worker's shutdown: a drain that starts on SIGTERM and a grace period that ends it.

When the worker is told to stop (gunicorn's graceful stop, a Kubernetes rollout), it
stops accepting connections and calls :func:`begin_drain`. From then on:

* callbacks registered with :func:`on_drain` run at once (WebSocket connections are
  closed with 1001 "going away" so clients reconnect to another replica);
* callbacks registered with :func:`on_grace_expired` run when ``GRACEFUL_TIMEOUT``
  has passed (streams still open end with an error event and ``[DONE]``).

Each registration returns a function that cancels it; a finished request cancels its
own, so the registries hold only what is open now.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import gevent

from cb.logs import get_logger

log = get_logger("server")

_drain: dict[int, Callable[[], None]] = {}
_expiry: dict[int, Callable[[], None]] = {}
_ids = itertools.count()
_state = {"draining": False, "deadline": None}


def draining() -> bool:
    """Whether this worker is shutting down (readiness then answers 503)."""
    return bool(_state["draining"])


def _register(table: dict, callback: Callable[[], None]) -> Callable[[], None]:
    key = next(_ids)
    table[key] = callback

    def cancel() -> None:
        table.pop(key, None)

    return cancel


def on_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` when the drain begins (at once if it already has)."""
    if draining():
        gevent.spawn(callback)
        return lambda: None
    return _register(_drain, callback)


def on_grace_expired(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` when the grace period ends."""
    return _register(_expiry, callback)


def _run_all(table: dict) -> None:
    for callback in list(table.values()):
        try:
            callback()
        except Exception:  # one bad callback must not keep the others from running
            log.exception("shutdown callback failed")
    table.clear()


def begin_drain(grace_seconds: float) -> None:
    """Start the drain now; after ``grace_seconds`` what is still open is ended."""
    if draining():
        return
    _state["draining"], _state["deadline"] = True, time.monotonic() + grace_seconds
    log.info("Shutting down: finishing in-flight requests (up to %g s)", grace_seconds)
    _run_all(_drain)
    gevent.spawn_later(grace_seconds, _expire)


def _expire() -> None:
    if _expiry:
        log.warning("Grace period over: ending %d open stream(s)", len(_expiry))
    _run_all(_expiry)


def reset() -> None:
    """Forget the drain (for tests that run an app in-process)."""
    _drain.clear()
    _expiry.clear()
    _state["draining"], _state["deadline"] = False, None
