"""The event bus across real processes: a subscriber in one sees events published in another."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import gevent

from cb.events import EventBus
from cb.storage.memory import MemoryStorage
from tests.harness import ROOT, Server

PEER = str(ROOT / "tests" / "bus_peer.py")


class LineReader:
    """Lines from a child's stdout, with a deadline (never blocks forever)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.buffer = proc, b""

    def next(self, timeout: float = 15.0) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def peer(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, PEER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_a_subscriber_process_sees_events_published_by_another_process(nats_server):
    prefix = Server.fresh_namespace()
    subscriber = peer("subscribe", nats_server.url, prefix, "events.*.t1")
    try:
        lines = LineReader(subscriber)
        assert lines.next() == "ready", subscriber.stderr.read1().decode() if subscriber.poll() is not None else ""
        publisher = peer("publish", nats_server.url, prefix, "events.wf-1.t1", "5")
        other = peer("publish", nats_server.url, prefix, "events.wf-1.t2", "3")
        assert publisher.wait(30) == 0, publisher.stderr.read().decode()
        assert other.wait(30) == 0, other.stderr.read().decode()
        received = [json.loads(lines.next()) for _ in range(5)]
        assert [r["event"]["n"] for r in received] == [0, 1, 2, 3, 4]
        assert {r["subject"] for r in received} == {"events.wf-1.t1"}
        assert all("timestamp" in r["event"] for r in received)
        assert lines.next(timeout=0.5) is None  # events of token t2 do not match the pattern
    finally:
        subscriber.stdin.close()
        try:
            subscriber.wait(10)
        except subprocess.TimeoutExpired:
            subscriber.kill()
            subscriber.wait()


def test_memory_bus_fans_out_in_process():
    bus = EventBus(MemoryStorage())
    got = []
    bus.subscribe("events.>", lambda subject, event: got.append((subject, event["n"])))
    bus.publish("events.w.t", {"n": 1})
    gevent.sleep(0.05)
    assert got == [("events.w.t", 1)]
