"""Greenlets kept to run one task after another (a stream's pump, on every streamed request).

A new greenlet costs more than its spawn: on its first Python call CPython maps a fresh
data stack for it, and unmaps it when the greenlet ends (two system calls, and page faults
on first use, on every request). A kept runner reuses its own. :func:`run` starts a task
on an idle runner, or on a new one when every runner is busy; a runner that finds
:data:`KEPT` others idle ends. The task runs in the context given, like
``gevent.spawn(context.run, fn)``, and :meth:`Task.kill` ends it as ``Greenlet.kill`` ends
a greenlet: ``GreenletExit`` raised where it waits, and the caller waits until it is over.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Callable

import gevent
import gevent.event
import gevent.queue
from greenlet import GreenletExit

KEPT = 64  # idle runners kept per worker

_idle: list[_Runner] = []
os.register_at_fork(after_in_child=_idle.clear)  # a parent's runners belong to the parent's hub


class Task:
    """One call of ``fn`` on a runner."""

    def __init__(self, fn: Callable[[], None], context: contextvars.Context):
        self.fn, self.context = fn, context
        self.done = gevent.event.Event()
        self.started = self.cancelled = False
        self.runner: _Runner | None = None

    def kill(self) -> None:
        """End the task (``GreenletExit`` where it waits) and wait until it is over."""
        if self.done.is_set():
            return
        if not self.started:
            self.cancelled = True  # its runner sees this before calling it
        else:
            gevent.get_hub().loop.run_callback(self.runner.throw_into, self)
        self.done.wait()


class _Runner:
    def __init__(self) -> None:
        self.inbox: gevent.queue.Queue = gevent.queue.Queue()
        self.task: Task | None = None
        self.greenlet = gevent.spawn(self._loop)

    def start(self, task: Task) -> None:
        self.task, task.runner = task, self
        self.inbox.put(task)

    def throw_into(self, task: Task) -> None:
        """In the hub: raise GreenletExit in the runner, if it is still running ``task``."""
        if self.task is task and task.started and not task.done.is_set():
            self.greenlet.throw(GreenletExit)

    def _loop(self) -> None:
        while True:
            task = self.inbox.get()
            try:
                if not task.cancelled:
                    task.started = True
                    task.context.run(task.fn)
            except GreenletExit:
                pass
            except Exception:  # what an unhandled error in a greenlet of its own would do: report it
                gevent.get_hub().handle_error(self.greenlet, *sys.exc_info())
            finally:
                self.task = None
                # what the task held (a stream's pump holds its task: a cycle) goes now, by
                # reference counting, not at the next collection with every object it reaches
                task.fn = task.context = None
                task.done.set()
            if len(_idle) >= KEPT:
                return
            _idle.append(self)


def run(fn: Callable[[], None]) -> Task:
    """Call ``fn`` in a runner greenlet, in a copy of the caller's context."""
    task = Task(fn, contextvars.copy_context())
    runner = _idle.pop() if _idle else _Runner()
    runner.start(task)
    return task
