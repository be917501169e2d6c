"""A request's total deadline for trying routes (``ROUTER_DEADLINE_SECONDS``).

Counted from the request's start (``RequestContext.started``). Before each attempt the
gateway asks :meth:`Deadline.remaining`; an attempt runs :meth:`Deadline.bounding` so a
hanging upstream is given up on when the deadline passes rather than after its own read
timeout, raising :class:`DeadlinePassed` (504, not retried). A stream is bounded only
until its first chunk: once it reaches the client it runs as long as the upstream does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent

from cb.llm.errors import DeadlinePassed


class Deadline:
    """``seconds`` after the monotonic time ``started``."""

    def __init__(self, started: float, seconds: float):
        self.seconds = seconds
        self.at = started + seconds

    def remaining(self) -> float:
        """Seconds left (zero or less: passed)."""
        return self.at - time.monotonic()

    def passed(self) -> DeadlinePassed:
        return DeadlinePassed(self.seconds)

    @contextmanager
    def bounding(self) -> Iterator[None]:
        """Run the block until the deadline at most; :class:`DeadlinePassed` if it is still running then."""
        timer = gevent.Timeout(max(self.remaining(), 0.0))
        timer.start()
        try:
            yield
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise self.passed() from None
        finally:
            timer.close()
