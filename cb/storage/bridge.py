"""A bridge from gevent greenlets to one asyncio loop (in a greenlet of its own in a worker, a thread elsewhere).

nats-py is asyncio; the server is gevent. Per process (after the fork) we run one asyncio
loop in what threading's original ``Thread`` class starts
(``gevent.monkey.get_original('threading', 'Thread')``). Unpatched (the CLI) that is a real
thread. In a monkey-patched worker it is not: threading's ``start_new_thread`` is gevent's,
so the loop runs in a greenlet of the hub and waits on gevent's selector (the worker has one
OS thread, as ``/proc/<pid>/task`` shows); the hand-over below works both ways. A greenlet
hands a coroutine to the loop with ``call_soon_threadsafe`` and waits on a gevent
``AsyncResult``; when the coroutine finishes, the loop queues the outcome and wakes the
greenlet's hub through a ``hub.loop.async_()`` watcher, the one libev/libuv primitive that
is safe to fire from another thread. The hub is never blocked: a waiting greenlet just yields.

:meth:`HubPort.spawn` uses the same path to run plain callables (subscription handlers)
in greenlets of the hub, never in the loop thread.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.monkey import get_original

_RealThread = get_original("threading", "Thread")
_get_ident = get_original("threading", "get_ident")


class BridgeTimeout(Exception):
    """The coroutine did not finish in time (it has been cancelled)."""


class HubPort:
    """The inbox of one gevent hub: outcomes queued by the loop thread, drained in the hub."""

    def __init__(self) -> None:
        self.hub = gevent.get_hub()
        self.inbox: deque[Callable[[], None]] = deque()
        self.watcher = self.hub.loop.async_()
        self.watcher.start(self._drain)

    def post(self, action: Callable[[], None]) -> None:
        """Called from any thread: run ``action`` soon in this hub."""
        self.inbox.append(action)
        self.watcher.send()

    def spawn(self, fn: Callable, *args) -> None:
        """Called from any thread: run ``fn(*args)`` in a new greenlet of this hub."""
        self.post(lambda: gevent.spawn(fn, *args))

    def _drain(self) -> None:
        while self.inbox:
            action = self.inbox.popleft()
            try:
                action()
            except Exception:  # an action only sets a result or spawns; never let one kill the hub
                self.hub.handle_error(None, *sys.exc_info())

    def close(self) -> None:
        self.watcher.stop()
        self.watcher.close()


class Bridge:
    """One asyncio loop in one OS thread; :meth:`run` executes a coroutine from a greenlet."""

    def __init__(self, name: str = "asyncio-bridge") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ports: dict[int, HubPort] = {}
        self._looping = False

    @property
    def running(self) -> bool:
        """Whether the loop runs, as its thread says by setting ``_looping`` around ``run_forever``.

        Not ``Thread.is_alive()``: under gevent's monkey-patching that asks a gevent lock
        without blocking, which yields when the lock is held (it always is, while the loop
        runs), and a ``GreenletExit`` landing in that yield (a stream's pump stopped because
        its client left) makes threading release the lock and mark the thread stopped for
        good (its bpo-45274 clean-up): every later call then failed as if NATS did not answer."""
        return self.loop is not None and self._looping

    def start(self, timeout: float = 5.0) -> None:
        """Start the loop thread and wait until its loop runs."""
        if self.running:
            return
        port = self._port()
        ready = AsyncResult()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            loop.call_soon(port.post, lambda: ready.set(True))
            self._looping = True
            try:
                loop.run_forever()
            finally:
                self._looping = False
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        _RealThread(target=main, name=self.name, daemon=True).start()
        ready.get(timeout=timeout)

    def port(self) -> HubPort:
        """The inbox of the calling thread's hub (created on first use)."""
        return self._port()

    def _port(self) -> HubPort:
        ident = _get_ident()
        port = self._ports.get(ident)
        if port is None:
            port = self._ports[ident] = HubPort()
        return port

    def run(self, coro: Coroutine, timeout: float) -> Any:
        """Run ``coro`` on the loop and return its result; raises what it raised, or BridgeTimeout."""
        if not self.running:
            coro.close()
            raise BridgeTimeout("the asyncio bridge is not running")
        port = self._port()
        result = AsyncResult()
        holder: list[asyncio.Task] = []

        def finished(task: asyncio.Task) -> None:
            if task.cancelled():
                port.post(lambda: result.set_exception(BridgeTimeout("cancelled")))
            elif task.exception() is not None:
                error = task.exception()
                port.post(lambda: result.set_exception(error))
            else:
                value = task.result()
                port.post(lambda: result.set(value))

        def begin() -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(finished)
            holder.append(task)

        self.loop.call_soon_threadsafe(begin)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            self.loop.call_soon_threadsafe(lambda: holder and holder[0].cancel())
            raise BridgeTimeout(f"no answer within {timeout:g}s") from None

    def submit(self, coro: Coroutine) -> None:
        """Start ``coro`` on the loop without waiting for it (best-effort clean-ups)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        try:
            loop.call_soon_threadsafe(loop.create_task, coro)
        except RuntimeError:
            coro.close()

    def stop(self) -> None:
        """Stop the loop (its thread ends by itself) and release the hub watchers."""
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        port = self._ports.pop(_get_ident(), None)
        if port is not None:
            port.close()
