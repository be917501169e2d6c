"""Small pieces of wire handling the provider adapters share.

Server-sent events (Anthropic, Gemini) and newline-delimited JSON (Ollama) arrive as
byte lines; image parts arrive as ``data:`` URLs or plain URLs; tool arguments arrive
as JSON strings. Each is decoded in exactly one place, here.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Protocol

from cb.llm.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from cb.llm.types import ChatRequest, Message, StreamChunk, Usage


def sse_data(lines: Iterable[bytes | str], provider: str) -> Iterator[dict]:
    """The JSON payload of each ``data:`` line of an SSE stream, in order.

    Lines may come with or without their line ending (``iter_lines`` strips it).
    ``event:`` lines, comments and blank separators are skipped: both Anthropic and
    Gemini repeat the event's type inside the JSON.
    """
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if not data or data == "[DONE]":
            continue
        yield _decode(data, provider)


EVENT_LINES_HELD = 64  # lines of one SSE event held before its bytes are passed on in pieces


def sse_events(lines: Iterable[bytes | None]) -> Iterator[tuple[str | None, bytes, bytes] | None]:
    """An SSE stream's events as (event name, data, the event's own bytes with its blank line).

    An event of more than EVENT_LINES_HELD lines (no vendor sends one) comes in pieces, each
    with its bytes and no data, so what is held stays bounded (each line is, by the transport).
    A None among ``lines`` (the end of what arrived at once, see ``Transport.lines``) is passed on."""
    name, data, held, split = None, [], [], False
    for line in lines:
        if line is None:
            yield None
            continue
        if line:
            held.append(line)
            if line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            if len(held) >= EVENT_LINES_HELD:
                yield name, b"", b"\n".join(held) + b"\n"
                data, held, split = [], [], True
            continue
        if held:
            yield name, b"" if split else b"\n".join(data), b"\n".join(held) + b"\n\n"
        elif split:
            yield name, b"", b"\n"  # the blank line that ends an event passed on in pieces
        name, data, held, split = None, [], [], False
    if held:
        yield name, b"" if split else b"\n".join(data), b"\n".join(held) + b"\n\n"


def event_json(data: bytes) -> dict:
    """An event's data as a JSON object (an empty one when it is not one)."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def relayed(raw: bytes, usage: Usage | None = None, error: bool = False) -> StreamChunk:
    """A chunk that carries the upstream's own event bytes (``error``: an error event, the stream's last)."""
    return StreamChunk(raw=raw, usage=usage, finish_reason="error" if error else None)


class RelayReader(Protocol):
    """What one vendor's relayed events mean to the gateway (see :func:`relay_events`)."""

    label: str  # how errors name the vendor
    opening: frozenset[str]  # the events held until the first with output
    final: frozenset[str]  # the events that end a complete stream
    unfinished: str  # what a stream that ends before one of them is called

    def failure(self, kind: str | None, data: bytes) -> UpstreamError | None:
        """The error an event reports, if it is an error event."""

    def usage(self, kind: str | None, data: bytes) -> Usage | None:
        """The usage known after this event, when it tells some (it may keep what earlier ones told)."""


def relay_events(lines: Iterable[bytes | None], reader: RelayReader) -> Iterator[StreamChunk]:
    """A relayed SSE stream as chunks of the upstream's own bytes, each carrying the events that
    arrived together (``lines`` marks the end of each arrival with None): one chunk through the
    gateway's stream per arrival, not one per event. The opening events are held until the first
    with output, so a failure before it can still fail over; the usage is read on the way; an
    error event after the first output is relayed, as the stream's last chunk, and raised."""
    opening: list[bytes] = []
    batch: list[bytes] = []
    usage: Usage | None = None
    committed = finished = False
    for event in sse_events(lines):
        if event is None:
            if batch:
                yield relayed(b"".join(batch), usage)
                batch, usage = [], None
            continue
        name, data, raw = event
        kind = name or event_json(data).get("type")
        error = reader.failure(kind, data)
        if error is not None:
            if committed:
                if batch:
                    yield relayed(b"".join(batch), usage)
                yield relayed(raw, error=True)
            raise error
        usage = reader.usage(kind, data) or usage
        finished = finished or kind in reader.final
        if kind in reader.opening and not committed:
            opening.append(raw)
            continue
        if opening:
            batch += opening
            opening = []
        committed = True
        batch.append(raw)
    if batch:
        yield relayed(b"".join(batch), usage)
    if not finished:
        raise UpstreamError(reader.label, reader.unfinished, retryable=True)


def with_role(chunks: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    """``chunks`` with the assistant role on the first one.

    The role rides on the first chunk that carries something, not on an early "message
    started" event, so the gateway's time-to-first-token limit measures a real token.
    """
    first = True
    for chunk in chunks:
        if first:
            chunk.role = chunk.role or "assistant"
            first = False
        yield chunk


def ndjson(lines: Iterable[bytes | str], provider: str) -> Iterator[dict]:
    """One JSON object per non-blank line (Ollama's streaming format)."""
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.strip()
        if line:
            yield _decode(line, provider)


def _decode(text: str, provider: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise UpstreamError(provider, "sent a malformed stream event") from None
    if not isinstance(value, dict):
        raise UpstreamError(provider, "sent a malformed stream event")
    return value


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL, else None."""
    if not url.startswith("data:"):
        return None
    header, _, data = url[5:].partition(",")
    if ";base64" not in header or not data:
        raise InvalidRequest("Image data URLs must be base64 encoded: data:<type>;base64,<data>", "messages")
    return header.split(";", 1)[0] or "application/octet-stream", data


def guess_media_type(url: str) -> str:
    """The media type an image URL's extension suggests (JPEG when it says nothing)."""
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or "image/jpeg"


def parse_arguments(arguments: str) -> dict:
    """A tool call's JSON arguments as an object; a clear 400 when they are not one."""
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidRequest("tool_calls[].function.arguments must be a JSON object", "messages") from None
    if not isinstance(value, dict):
        raise InvalidRequest("tool_calls[].function.arguments must be a JSON object", "messages")
    return value


def refuse_choices_and_logprobs(provider: str, request: ChatRequest) -> None:
    """For providers with one answer and no log probabilities: refuse ``n`` > 1 and ``logprobs``.

    ``n: 1`` and ``logprobs: false`` ask for nothing extra, so they pass.
    """
    if request.n is not None and request.n > 1:
        raise UnsupportedParameter(provider, "n")
    if request.logprobs:
        raise UnsupportedParameter(provider, "logprobs")


def tool_names_by_id(messages: list[Message]) -> dict[str, str]:
    """Which function each earlier assistant tool call id named (for tool result messages)."""
    return {call.id: call.name for m in messages for call in m.tool_calls}


def new_call_id() -> str:
    """An OpenAI-style id for a tool call whose provider does not give one."""
    return "call_" + uuid.uuid4().hex[:24]


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path`` without a doubled slash or a doubled version segment."""
    base = base_url.rstrip("/")
    first = path.lstrip("/").split("/", 1)[0]
    if base.endswith("/" + first):
        base = base[: -len(first) - 1]
    return base + "/" + path.lstrip("/")


def leading_system(messages: list[Message]) -> tuple[str, list[Message]]:
    """For targets whose system instruction stands apart from the turns (Anthropic, Gemini): the
    leading system messages joined, and the rest, where a later system message (Claude Code's
    and Codex's mid-conversation instructions) becomes an operator note in a user turn, so it
    keeps its place instead of being moved or lost."""
    system: list[str] = []
    rest: list[Message] = []
    for message in messages:
        if message.role in ("system", "developer"):
            if not rest:
                system.append(message.text())
            elif message.text():
                rest.append(Message("user", f"<system-note>\n{message.text()}\n</system-note>"))
            continue
        rest.append(message)
    return "\n\n".join(t for t in system if t), rest


def in_tool_loop(messages: list[Message]) -> bool:
    """Whether the last assistant turn called tools without the thinking that came with it (a
    history from another vendor): a target that wants it back in a tool loop (Anthropic) must
    not think now."""
    for message in reversed(messages):
        if message.role == "assistant":
            return bool(message.tool_calls) and not message.reasoning
    return False


def refuse_server_tools(provider: str, request: ChatRequest, runs: tuple[str, ...] = ()) -> list[str]:
    """The vendor-run tools the request asked for that this target ``runs``; the others are
    refused when the request needs them (its only tools, or forced), else noted dropped."""
    if not request.server_tools:  # the usual request: nothing to look at
        return []
    missing = sorted({tool for tool in request.server_tools if tool not in runs})
    if missing and request.server_tools_required:
        raise InvalidRequest(
            f"The {provider} model cannot run {', '.join(missing)}: this request needs a tool that only "
            "the client's own vendor runs. Send it to a model of that vendor.",
            "tools",
            "unsupported_tool_type",
        )
    for tool in missing:
        request.drop(tool)
    return [tool for tool in dict.fromkeys(request.server_tools) if tool in runs]


_CALL_ID = re.compile(r"[a-zA-Z0-9_-]{1,40}")


def safe_call_id(call_id: str | None) -> str:
    """A tool call id every target takes (at most 40 characters of ``[a-zA-Z0-9_-]``: OpenAI's limit,
    Anthropic's alphabet), the same for the same id, so a call and its result still match. Ids from
    another vendor (Gemini's carry a thought signature) get shortened when a session changes models."""
    if call_id is None or _CALL_ID.fullmatch(call_id):
        return call_id or ""
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]
