"""Kept greenlets (cb.runners): a task runs in the caller's context, ends like a killed
greenlet, and its runner goes on to the next task."""

from __future__ import annotations

import contextvars

import gevent
import gevent.event

from cb import runners

request_id = contextvars.ContextVar("request_id", default=None)


def test_a_task_runs_in_a_copy_of_the_callers_context_on_a_kept_greenlet():
    seen = []
    request_id.set("req-1")
    first = runners.run(lambda: seen.append((request_id.get(), gevent.getcurrent())))
    first.done.wait(2)
    request_id.set("req-2")
    second = runners.run(lambda: seen.append((request_id.get(), gevent.getcurrent())))
    second.done.wait(2)
    assert [rid for rid, _ in seen] == ["req-1", "req-2"]
    assert seen[0][1] is seen[1][1]  # the second task reused the first one's greenlet


def test_kill_ends_a_waiting_task_through_its_finally_and_the_runner_is_reused():
    started, cleaned = gevent.event.Event(), []

    def waits_forever():
        try:
            started.set()
            gevent.sleep(60)
        finally:
            cleaned.append("finally ran")

    task = runners.run(waits_forever)
    started.wait(2)
    with gevent.Timeout(2):
        task.kill()  # returns once the task is over
    assert cleaned == ["finally ran"] and task.done.is_set()
    again = runners.run(lambda: cleaned.append("next task"))
    again.done.wait(2)
    assert cleaned[-1] == "next task"
    assert again.runner is task.runner


def test_kill_before_the_task_starts_means_it_never_runs_and_after_it_ended_does_nothing():
    ran = []
    task = runners.run(lambda: ran.append(1))
    task.kill()  # nothing has yielded since run(): the runner has not picked it up yet
    assert ran == [] and task.done.is_set()
    later = runners.run(lambda: ran.append(2))
    later.done.wait(2)
    later.kill()
    assert ran == [2]


def test_an_error_in_a_task_is_reported_and_the_runner_goes_on(capsys):
    def fails():
        raise ValueError("boom")

    failed = runners.run(fails)
    failed.done.wait(2)
    after = runners.run(lambda: None)
    assert after.done.wait(2)
    assert "ValueError: boom" in capsys.readouterr().err
