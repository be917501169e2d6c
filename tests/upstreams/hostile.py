"""A local OpenAI-compatible upstream that misbehaves in one way per model (issue 29).

Any other model gets :class:`OpenAIUpstream`'s ordinary answers, so one server also serves
the ordinary requests a test sends beside a hostile one. The behaviours:

- ``hostile-endless-line`` (stream): one ordinary event, then an SSE line of ``size`` bytes
  that never ends.
- ``hostile-huge-json``: a chat completion of ``size`` bytes, chunked (no length announced).
- ``hostile-gzip-bomb``: a gzip-encoded chat completion of a few hundred KB inflating to ``size``.
- ``hostile-tiny-events`` (stream): ``events`` one-token events as fast as the socket takes
  them, then the usage (``completion_tokens`` = ``events``) and ``[DONE]``; on
  ``/v1/responses``, Responses events ending with ``response.completed``.
- ``hostile-never-headers``: a status line, then one byte of a header every half second.
- ``hostile-trickle``: headers, then the body one byte per second (a stream sends its first
  event whole, then trickles).

The first three stop on the way (``midway`` is set) until the test sets ``release``
(or 30 s pass), so a test can send ordinary requests while the hostile answer is in flight
and part of it is in the gateway's hands.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import zlib

from tests.upstreams.base import ClientGone, Received, Reply
from tests.upstreams.openai_server import MODELS, OpenAIUpstream

BEHAVIOURS = (
    "hostile-endless-line",
    "hostile-huge-json",
    "hostile-gzip-bomb",
    "hostile-tiny-events",
    "hostile-never-headers",
    "hostile-trickle",
)
PIECE = 64 * 1024
HOLD_SECONDS = 30.0


@functools.lru_cache(maxsize=2)
def gzip_bomb(size: int, hold_at: int) -> tuple[bytes, int]:
    """A gzip member whose content is a chat completion's start and then ``size`` bytes of 'a',
    and the length of its prefix that inflates to about ``hold_at`` bytes (flushed there)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    head = b'{"id":"chatcmpl-bomb","object":"chat.completion","choices":[{"index":0,"message":{"content":"'
    out = [packer.compress(head)]
    block = b"a" * (1 << 20)
    split = 0
    for i in range(size // len(block)):
        out.append(packer.compress(block))
        if not split and (i + 1) * len(block) >= hold_at:
            out.append(packer.flush(zlib.Z_SYNC_FLUSH))
            split = sum(map(len, out))
    out.append(packer.compress(b'"}}]}') + packer.flush())
    return b"".join(out), split


class HostileUpstream(OpenAIUpstream):
    """OpenAI's protocol, with the hostile models above; ``size`` and ``events`` set their scale."""

    def __init__(self, size: int = 64 << 20, events: int = 200_000, hold_at: int = 8 << 20):
        super().__init__()
        self.size = size
        self.events = events
        self.hold_at = hold_at  # bytes of a held body written before it stops (below the gateway's bounds)
        self.midway = threading.Event()  # a held answer reached its middle
        self.release = threading.Event()  # let it go on
        self.sent = 0  # bytes of the current hostile body written so far

    def prepare(self) -> None:
        """Before each hostile request: nothing held, nothing released, no disconnect seen yet."""
        self.midway.clear()
        self.release.clear()
        self.sent = 0
        self.disconnects.clear()

    def handle(self, request: Received, reply: Reply) -> None:
        if request.method == "GET" and request.path == "/v1/models":
            names = [*MODELS, *((name, "hostile") for name in BEHAVIOURS)]
            reply.json({"object": "list", "data": [{"id": n, "object": "model", "owned_by": o} for n, o in names]})
            return
        body = request.json if isinstance(request.json, dict) else {}
        model = body.get("model") if request.method == "POST" else None  # chat, and a relayed API's own path
        if model not in BEHAVIOURS:
            super().handle(request, reply)
            return
        getattr(self, model.removeprefix("hostile-").replace("-", "_"))(request, reply)

    # -- helpers ---------------------------------------------------------------------------
    def _pour(self, reply: Reply, total: int, chunked: bool) -> None:
        """Write ``total`` bytes of 'a' as fast as the socket takes them, holding after ``hold_at``."""
        piece = b"a" * PIECE
        while self.sent < total:
            if self.sent >= self.hold_at and not self.midway.is_set():
                self.midway.set()
                self._hold(reply)
            data = piece[: min(PIECE, total - self.sent)]
            self._write(reply, b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.sent += len(data)

    def _hold(self, reply: Reply) -> None:
        deadline = time.monotonic() + HOLD_SECONDS
        while not self.release.is_set() and time.monotonic() < deadline:
            reply.wait(0.05)  # ClientGone if the gateway hangs up meanwhile

    @staticmethod
    def _write(reply: Reply, data: bytes) -> None:
        try:
            reply.handler.wfile.write(data)
            reply.handler.wfile.flush()
        except OSError:
            reply.server._gone()
            raise ClientGone() from None

    @staticmethod
    def _event(content: str, model: str) -> bytes:
        body = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1, "model": model}
        body["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    # -- behaviours --------------------------------------------------------------------------
    def endless_line(self, request: Received, reply: Reply) -> None:
        reply.start_stream("text/event-stream")
        reply.chunk(self._event("Hi", "hostile-endless-line"))
        reply.chunk(b'data: {"choices":[{"index":0,"delta":{"content":"')
        self._pour(reply, self.size, chunked=True)
        reply.end_stream()

    def huge_json(self, request: Received, reply: Reply) -> None:
        reply.start_stream("application/json")
        reply.chunk(b'{"id":"chatcmpl-huge","object":"chat.completion","choices":[{"index":0,"message":{"content":"')
        self._pour(reply, self.size, chunked=True)
        reply.chunk(b'"}}]}')
        reply.end_stream()

    def gzip_bomb(self, request: Received, reply: Reply) -> None:
        body, half = gzip_bomb(self.size, self.hold_at)
        handler = reply.handler
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        self._write(reply, body[:half])
        self.midway.set()
        self._hold(reply)
        self._write(reply, body[half:])

    def tiny_events(self, request: Received, reply: Reply) -> None:
        reply.start_stream("text/event-stream")
        if request.path == "/v1/responses":  # OpenAI's Responses events (the gateway relays them as they come)
            self._responses_events(reply)
            return
        event = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'  # 2,000,000: 140 MB
        batch = max(1, PIECE // len(event))
        sent = 0
        while sent < self.events:
            n = min(batch, self.events - sent)
            reply.chunk(event * n)
            sent += n
            if sent >= self.events // 2:
                self.midway.set()
        usage = {"prompt_tokens": 5, "completion_tokens": self.events, "total_tokens": 5 + self.events}
        finish = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        finish["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        reply.chunk(b"data: " + json.dumps(finish).encode() + b"\n\n")
        reply.chunk(b"data: " + json.dumps({**finish, "choices": [], "usage": usage}).encode() + b"\n\n")
        reply.chunk(b"data: [DONE]\n\n")
        reply.end_stream()

    def _responses_events(self, reply: Reply) -> None:
        def event(kind: str, **fields) -> bytes:
            data = json.dumps({"type": kind, **fields}, separators=(",", ":"))
            return f"event: {kind}\ndata: {data}\n\n".encode()

        response = {"id": "resp_hostile", "object": "response", "status": "in_progress", "output": []}
        reply.chunk(event("response.created", response=response))
        delta = event("response.output_text.delta", delta="a")  # 2,000,000: 190 MB
        batch = max(1, PIECE // len(delta))
        sent = 0
        while sent < self.events:
            n = min(batch, self.events - sent)
            reply.chunk(delta * n)
            sent += n
            if sent >= self.events // 2:
                self.midway.set()
        usage = {"input_tokens": 5, "output_tokens": self.events, "total_tokens": 5 + self.events}
        reply.chunk(event("response.completed", response={**response, "status": "completed", "usage": usage}))
        reply.end_stream()

    def never_headers(self, request: Received, reply: Reply) -> None:
        self._write(reply, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
        while True:
            self._write(reply, b"a")
            reply.wait(0.5)

    def trickle(self, request: Received, reply: Reply) -> None:
        if (request.json or {}).get("stream"):
            reply.start_stream("text/event-stream")
            reply.chunk(self._event("Hi", "hostile-trickle"))
            rest = self._event(" there", "hostile-trickle")
        else:
            reply.start_stream("application/json")
            rest = b'{"id":"chatcmpl-slow","object":"chat.completion","choices":[]}'
        for byte in rest:
            reply.chunk(bytes([byte]))
            reply.wait(1.0)
        reply.end_stream()
