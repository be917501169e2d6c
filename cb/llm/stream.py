"""A streamed chat completion in flight, failing over until its first chunk.

:class:`ChatStream` tries the gateway's routes in order when it is iterated. An attempt
that fails with a retryable error, or yields no output within
``UPSTREAM_FIRST_TOKEN_TIMEOUT`` (connecting and the upstream's headers included), is
closed, reported to the router, not billed, and the next route is tried. The first
chunk that carries output (content, a tool call, a finish reason or usage; leading
role-only chunks are held back with it) commits the stream to its route: nothing has
reached the client before that, so nothing is lost by failing over. After it, a failure
ends the stream with the error (the edge turns it into an error event). Until the first
chunk the request's total deadline (:mod:`cb.llm.deadline`) also applies: when it passes,
the attempt is given up and no further route is tried. After the first chunk, an upstream
silent for ``UPSTREAM_STREAM_IDLE_TIMEOUT`` ends the stream with :class:`StreamStalled`
(its connection closed); whatever the edge sends the client meanwhile does not count.

Exactly one usage record is written, when the stream ends: ``success``; ``error`` (the
usage of what was delivered, zero if nothing was); or ``interrupted`` when the client
left (``close()``, or the consuming greenlet killed) or the upstream stalled, with the usage
of what it was given.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import gevent

from cb.llm.deadline import Deadline
from cb.llm.errors import LLMError, NoNativeEndpoint, UpstreamError, UpstreamTimeout
from cb.llm.estimate import estimate_prompt, estimate_tokens
from cb.llm.providers.base import Provider
from cb.llm.providers.errors import provider_label
from cb.llm.routing import RequestContext, Route
from cb.llm.types import ChatRequest, StreamChunk, Usage
from cb.logs import get_logger

log = get_logger("llm.stream")
DRAIN_SECONDS = 0.2  # what a finished stream waits for the rest of its body before closing the connection


def elapsed_ms(since: float) -> float:
    """Milliseconds since the monotonic time ``since``."""
    return (time.monotonic() - since) * 1000


def carries_output(chunk: StreamChunk) -> bool:
    """Whether a chunk gives the client something (a role-only opening chunk does not; a relayed
    event does, the relay holding back the opening ones itself)."""
    return bool(chunk.content or chunk.tool_calls or chunk.finish_reason or chunk.usage or chunk.raw)


class StreamStalled(UpstreamTimeout):
    """The upstream sent nothing for UPSTREAM_STREAM_IDLE_TIMEOUT in the middle of a stream."""

    def __init__(self, provider: str, seconds: float):
        super().__init__(
            provider, f"the stream stalled: nothing for {seconds:g} seconds (UPSTREAM_STREAM_IDLE_TIMEOUT)"
        )
        self.retryable = False


class ChatStream:
    """Iterate for canonical chunks; ``route`` is the route being tried, then the one serving."""

    def __init__(self, gateway, request: ChatRequest, ctx: RequestContext, pairs: list[tuple[Route, Provider]]):
        self.gateway, self.request, self.ctx = gateway, request, ctx
        self._pairs = pairs
        self.route: Route | None = None
        self.provider: Provider | None = None
        self.response = None
        self.started = time.monotonic()  # of the current attempt
        self.upstream_open_ms = 0.0  # time spent waiting on upstreams until the first output
        self.usage: Usage | None = None
        self.delivered_chars = 0
        self.ttft_ms: float | None = None
        self._chunks: Iterator[StreamChunk] | None = None
        self._lines: Iterator[bytes] | None = None
        self._pending = False  # an attempt whose outcome the router has not heard yet
        self._recorded = False

    def __iter__(self) -> Iterator[StreamChunk]:
        status, error = "interrupted", None
        try:
            for chunk in self._first():
                yield self._seen(chunk)
            for chunk in self._until_idle(iter(self._chunks or ())):
                yield self._seen(chunk)
            status = "success"
            self._drain()
        except StreamStalled as exc:
            status, error = "interrupted", exc
            raise
        except LLMError as exc:
            status, error = "error", exc
            raise
        finally:
            self._close_upstream()
            self._finish(status, error)

    # -- until the first output: failover ----------------------------------------------
    def _first(self) -> list[StreamChunk]:
        """Try the routes until one yields output; its first chunks (role-only ones held back included)."""
        last: LLMError | None = None
        waited = 0.0
        deadline = self.gateway.deadline(self.ctx)
        for route, provider in self._pairs:
            if deadline.remaining() <= 0:
                raise last or deadline.passed()
            deployment = self.gateway._deployment(route, self.ctx)
            call = self._call(provider, deployment, route)
            started = self.gateway._send(route, self.ctx)
            if started is None:
                continue
            self.route, self.provider, self.started, self._pending = route, provider, started, True
            try:
                held = self._open(deployment, call, deadline)
            except UpstreamError as exc:
                self._close_upstream()
                exc.deployment_id = route.deployment.id
                if not exc.retryable:
                    raise
                self._pending = False
                waited += elapsed_ms(started)
                self.gateway.router.finished(route, False, elapsed_ms(started), error=exc)
                last = exc
                log.warning(
                    "stream attempt failed before its first chunk, trying the next route",
                    extra={"fields": {"deployment": route.deployment.id, "error": exc.message}},
                )
                continue
            self.upstream_open_ms = waited + elapsed_ms(started)
            return held
        if last is not None:
            raise last
        from cb.llm.router import NoRouteAvailable

        raise NoRouteAvailable(f"Every deployment of '{self.request.model}' is unavailable right now")

    def _open(self, deployment, call, deadline: Deadline) -> list[StreamChunk]:
        """Send ``call`` and read up to the first chunk with output, within the first-token limit
        and the request's deadline (:class:`DeadlinePassed` if that comes first)."""
        transport, provider, route = self.gateway.transport, self.provider, self.route
        seconds = self.gateway.settings.first_token_timeout
        remaining = max(deadline.remaining(), 0.0)
        timer = gevent.Timeout(min(seconds, remaining))
        timer.start()
        try:
            self.response = transport.open(deployment, call, provider)
            self._lines = self._read(transport, provider)
            self._chunks = self._parse(provider, self._lines, route)
            held = []
            for chunk in self._chunks:
                held.append(chunk)
                if carries_output(chunk):
                    break
            return held
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if remaining < seconds:
                raise deadline.passed() from None
            raise UpstreamTimeout(provider_label(provider.type), f"no first token within {seconds:g} seconds") from None
        finally:
            timer.close()

    def _call(self, provider: Provider, deployment, route: Route):
        """The upstream call of one attempt (a relay makes its own)."""
        return provider.chat_call(deployment, self.request, route.upstream_model)

    def _read(self, transport, provider: Provider) -> Iterator[bytes]:
        """The attempt's body, line by line (a relay's marks the end of each arrival)."""
        return transport.lines(self.response, provider)

    def _parse(self, provider: Provider, lines: Iterator[bytes], route: Route) -> Iterator[StreamChunk]:
        """The attempt's chunks from its body's lines (a relay reads its own)."""
        return provider.parse_stream(lines, route.upstream_model)

    def _prompt_estimate(self) -> int:
        return estimate_prompt(self.request)

    # -- after it ------------------------------------------------------------------------
    def _until_idle(self, chunks: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
        """``chunks``, each within UPSTREAM_STREAM_IDLE_TIMEOUT of the one before (StreamStalled if not)."""
        seconds = self.gateway.settings.stream_idle_timeout
        timer = gevent.Timeout(seconds)
        try:
            while True:
                timer.start()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except gevent.Timeout as exc:
                    if exc is not timer:
                        raise
                    raise StreamStalled(provider_label(self.provider.type), seconds) from None
                finally:
                    timer.cancel()
                yield chunk
        finally:
            timer.close()

    def _drain(self) -> None:
        """The provider saw the stream's end (OpenAI's ``[DONE]``): read what is left of the body,
        briefly (a chunked stream's last, empty chunk), so its connection goes back to the pool
        instead of being closed."""
        if self._lines is not None:
            with gevent.Timeout(DRAIN_SECONDS, False):
                for _ in itertools.islice(self._lines, 16):
                    pass

    def _seen(self, chunk: StreamChunk) -> StreamChunk:
        if self.ttft_ms is None:
            self.ttft_ms = round(elapsed_ms(self.started), 3)
        if chunk.usage:
            self.usage = chunk.usage
        self.delivered_chars += len(chunk.content or "")
        if chunk.tool_calls:
            self.delivered_chars += sum(len(c.arguments) for c in chunk.tool_calls)
        return chunk

    def final_usage(self) -> Usage:
        """The upstream's usage, or an estimate of what was delivered (nothing delivered: zero)."""
        if self.usage and self.usage.total_tokens:
            return self.usage
        if self.ttft_ms is None:
            return Usage()
        return Usage(self._prompt_estimate(), estimate_tokens(self.delivered_chars), estimated=True)

    def close(self) -> None:
        """Stop early (client gone): close the upstream now and record ``interrupted``."""
        self._close_upstream()
        self._finish("interrupted", None)

    def _close_upstream(self) -> None:
        for generator in (self._chunks, self._lines):
            try:
                generator and generator.close()
            except ValueError:  # still running in the greenlet that iterates us; the response close ends it
                pass
        if self.response is not None:
            self.response.close()

    def _finish(self, status: str, error: Exception | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        if self._pending:
            self._pending = False
            if status == "interrupted" and self.ttft_ms is None:
                self.gateway.router.abandoned(self.route)
            else:
                self.gateway.router.finished(self.route, error is None, elapsed_ms(self.started), self.ttft_ms, error)
        if isinstance(error, NoNativeEndpoint):
            return  # a relayed request the gateway translates next: that one is recorded
        self.gateway.record(
            self.ctx, self.request.model, self.route, self.final_usage(), status, streamed=True, ttft_ms=self.ttft_ms
        )
