"""``stream_response`` (blueprints/openai.py) starts a stream's pump, which reads the upstream in
a greenlet and watches the client's socket, before it builds the answer's headers. A failure in
between must stop the pump: a watcher left on the socket after the request is gone makes gevent
abort the whole worker (``libev: I/O watcher with invalid fd``), every other request with it."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import gevent
import pytest
from flask import Flask

from blueprints.openai import stream_response
from cb.llm.types import StreamChunk


class HeadersFail:
    """A stream whose first chunk comes, and whose request breaks the answer's headers."""

    route = None
    upstream_open_ms = 0.0

    def __init__(self):
        self.closed = False

    def __iter__(self):
        yield StreamChunk(content="first")
        gevent.sleep(30)  # an upstream still streaming when the request fails

    @property
    def request(self):
        raise RuntimeError("a bug while naming the route")

    def close(self):
        self.closed = True


def test_a_failure_before_the_answer_stops_the_pump_and_its_socket_watcher():
    app = Flask(__name__)
    settings = SimpleNamespace(stream_idle_timeout=5.0, keepalive_seconds=1.0)
    app.extensions["circuit_breaker"] = SimpleNamespace(settings=settings)
    client, ours = socket.socketpair()
    stream = HeadersFail()
    try:
        with app.test_request_context("/v1/chat/completions", environ_base={"gunicorn.socket": ours}):
            with pytest.raises(RuntimeError, match="naming the route"):
                stream_response(stream, None, None, {})
        assert stream.closed  # the upstream is closed, not left streaming into a queue nobody reads
        assert ours.gettimeout() is None  # the socket is the connection's again (its write timeout undone)
    finally:
        client.close()
        ours.close()
    gevent.sleep(0.05)  # a watcher left on the closed socket would abort this process here


class Relayed:
    """A stream of two relayed events, like a pass-through's: it holds the request it serves."""

    route = None
    upstream_open_ms = 0.0
    request = None

    def __init__(self, body: dict):
        self.body = body  # what a relayed stream keeps: the client's decoded body, its context

    def __iter__(self):
        yield StreamChunk(raw=b"event: a\ndata: {}\n\n")
        yield StreamChunk(raw=b"event: b\ndata: {}\n\n")

    def final_usage(self):
        return None

    def close(self):
        pass


def test_a_finished_stream_and_the_body_it_holds_are_freed_when_the_answer_closes_not_by_a_collection():
    # a cycle through the stream (its pump and the pump's task, or the pump and the watcher of
    # the client's socket) kept each streamed request's parsed body until the next garbage
    # collection: every collection then walked the request's objects (about 0.2 ms of CPU per
    # Claude Code-sized request), and memory held the bodies of the requests in between
    import gc
    import weakref

    from cb.llm.passthrough import RelayEvents

    app = Flask(__name__)
    settings = SimpleNamespace(stream_idle_timeout=5.0, keepalive_seconds=1.0)
    app.extensions["circuit_breaker"] = SimpleNamespace(settings=settings)
    client, ours = socket.socketpair()
    gc.disable()
    try:
        with app.test_request_context("/v1/messages", environ_base={"gunicorn.socket": ours}):
            stream = Relayed({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
            held = weakref.ref(stream)  # and with it the body it holds
            ctx = SimpleNamespace(started=0.0, attempts=1)
            response = stream_response(stream, RelayEvents("messages", None), ctx, {})
            del stream
            assert b"".join(response.response) == b"event: a\ndata: {}\n\nevent: b\ndata: {}\n\n"
            response.close()
            del response
        gevent.sleep(0)  # the pump's runner finishes its task
        assert held() is None
    finally:
        gc.enable()
        client.close()
        ours.close()
