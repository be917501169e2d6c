"""Native pass-through: a request in the upstream's own API, relayed as the client sent it.

When a client speaks the API of the deployment that serves it (Anthropic's Messages to an
Anthropic deployment, OpenAI's Responses to an OpenAI one), the gateway translates nothing.
The body goes up byte for byte with only ``model`` rewritten, spliced into the raw bytes
(the body is decoded once, at the edge, and never encoded again); the vendor's headers
(``anthropic-*``) and the query string (``?beta=true``) go with it. The answer comes back
as the vendor sent it: a JSON body unchanged, a stream event by event (events we do not
know included), an error body in the vendor's own words. The gateway reads only what it
needs: the model, ``stream``, and the usage for the ledger.

Serving is the gateway's own (routes, failover to another deployment of the same API,
limits, budgets, the ledger): :class:`RelayStream` is a :class:`~cb.llm.stream.ChatStream`
whose calls and chunks are the relay's, and :class:`RelayEvents` is the stream format whose
frames are the upstream's own events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cb.jsondepth import without_strings
from cb.llm import messages_api, responses_api
from cb.llm.errors import InvalidRequest, NoNativeEndpoint, UpstreamError
from cb.llm.estimate import estimate_tokens
from cb.llm.stream import ChatStream
from cb.llm.types import StreamChunk, Usage

#: the client APIs relayed natively, and the request headers each forwards verbatim (by prefix)
FORWARDED_HEADERS = {"messages": ("anthropic-",), "responses": ("openai-beta",)}

#: the upstream's response headers a relayed answer carries on to the client: what SDKs and agents
#: read (request ids for support tickets, rate-limit state, the wait before a retry, processing
#: time). Only these: never hop-by-hop or framing headers (the gateway frames its own answer),
#: never set-cookie, never the vendor's account details (organization, project).
RELAYED_HEADERS = frozenset({"request-id", "retry-after", "retry-after-ms", "openai-processing-ms", "openai-version"})
RELAYED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
#: OpenAI's ``x-request-id`` is relayed under this name: ``X-Request-ID`` is the gateway's own
#: request id (the ledger's and the logs'), which a client may have chosen itself
UPSTREAM_REQUEST_ID = "x-cb-upstream-request-id"

_SPACE = rb"[ \t\r\n]*"
_RESPONSE_ID = re.compile(rb'"id"' + _SPACE + rb":" + _SPACE + rb'"(resp_[A-Za-z0-9_-]+)"')
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class NativeRequest:
    """A request in one vendor API's own shape, to be relayed to a deployment speaking it.

    ``body`` is the decoded body, read only (model, stream, estimates); ``raw`` is what the
    client sent, and what goes upstream."""

    api: str  # "messages" | "responses"
    path: str  # the client's path, e.g. "/v1/messages" or "/v1/messages/count_tokens"
    body: dict
    raw: bytes
    query: str = ""  # the query string as the client sent it, without "?"
    headers: dict[str, str] = field(default_factory=dict)  # vendor headers forwarded, names lowercased
    routing: dict = field(default_factory=dict)  # the body's ``circuit_breaker`` object

    #: what a translation left out (x-cb-dropped): nothing, a relayed request goes up whole
    dropped = ()

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def user(self) -> str | None:
        """Who the client says the end user is (ledger attribution only)."""
        if self.api == "messages":
            metadata = self.body.get("metadata")  # the vendor validates it; it may be anything here
            user = metadata.get("user_id") if isinstance(metadata, dict) else None
        else:
            user = self.body.get("user")
        return user if isinstance(user, str) else None

    def upstream_body(self, model: str) -> bytes:
        """The body to send: the client's bytes with ``model`` set to ``model`` (and our own
        ``circuit_breaker`` object, which no vendor knows, taken out)."""
        if "circuit_breaker" in self.body:
            return _encode({k: v for k, v in self.body.items() if k != "circuit_breaker"} | {"model": model}).encode()
        if model == self.model:
            return self.raw
        return with_model(self.raw, self.model, model) or _encode(self.body | {"model": model}).encode()

    def prompt_estimate(self) -> int:
        """Input tokens guessed from the body's size, for an answer that reports no usage."""
        return estimate_tokens(len(self.raw))


def native_request(api: str, path: str, body: Any, raw: bytes, query: str, headers: Mapping[str, str]) -> NativeRequest:
    """Check what the gateway needs of a body it relays (a JSON object naming a model; size and
    nesting were checked before it was parsed) and keep the vendor headers it forwards."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        if api == "responses":  # each API's own words
            raise InvalidRequest(
                "Missing required parameter: 'model'." if model is None else "Invalid 'model'.", "model"
            )
        raise InvalidRequest("model: Field required" if model is None else "model: Input should be a string", "model")
    routing = body.get("circuit_breaker")
    if routing is not None and not isinstance(routing, dict):
        raise InvalidRequest("circuit_breaker: Input should be an object", "circuit_breaker")
    prefixes = FORWARDED_HEADERS[api]
    forwarded = {k.lower(): v for k, v in headers.items() if k.lower().startswith(prefixes)}
    return NativeRequest(api, path, body, raw, query, forwarded, routing or {})


def relayed_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Of an upstream's response headers, those a relayed answer carries on (see :data:`RELAYED_HEADERS`)."""
    out = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower in RELAYED_HEADERS or lower.startswith(RELAYED_PREFIXES):
            out[lower] = value
        elif lower == "x-request-id":
            out[UPSTREAM_REQUEST_ID] = value
    return out


def with_model(raw: bytes, old: str, new: str) -> bytes | None:
    """``raw`` (a JSON object's text) with its top-level ``"model": old`` member now naming
    ``new``, changed in place; None when that member is not written plainly (escapes in the
    name), so the caller encodes the body instead."""
    member = re.compile(rb'"model"' + _SPACE + rb":" + _SPACE + re.escape(json.dumps(old).encode()))
    for found in member.finditer(raw):
        if _top_level(raw, found.start()):
            return raw[: found.start()] + b'"model":' + _encode(new).encode() + raw[found.end() :]
    return None


def _top_level(raw: bytes, at: int) -> bool:
    """Whether the quote at offset ``at`` of a (valid) JSON text opens a key directly inside the
    outer object. A quote that no backslash escapes opens a string there (closing one would put
    ``model"`` outside any string), so only the brackets before it, strings cut out, decide."""
    prefix = raw[:at]
    if (len(prefix) - len(prefix.rstrip(b"\\"))) % 2:
        return False  # an escaped quote, inside a string
    before = without_strings(prefix)
    opened = before.count(b"{") + before.count(b"[")
    return opened - before.count(b"}") - before.count(b"]") == 1


# -- streams ---------------------------------------------------------------------------------


class RelayStream(ChatStream):
    """A relayed stream: the gateway's stream (routes, failover before the first output, the one
    usage record), with the relay's upstream calls and the upstream's events as chunks."""

    def _call(self, provider, deployment, route):
        return provider.relay_call(deployment, self.request, route.upstream_model)

    def _open(self, deployment, call, deadline):
        try:
            return super()._open(deployment, call, deadline)
        except UpstreamError as exc:
            raise NoNativeEndpoint.of(exc) from None

    def _read(self, transport, provider):
        return transport.lines(self.response, provider, marked=True)

    def _parse(self, provider, lines, route):
        return provider.relay_stream(lines)

    def _prompt_estimate(self) -> int:
        return self.request.prompt_estimate()


class RelayEvents:
    """The stream format of a relayed stream: each chunk's frame is the upstream's own event.

    Only what the gateway itself must say is rendered, in the API's own events: a failure after
    the first event (a broken connection, a stall, the server's shutdown) as its error event, and
    the keep-alive while the upstream is silent (``ping`` events for Messages, as Anthropic's
    contract has it; SSE comments for Responses, which has no such event). An error event the
    upstream sent is relayed as it came and ends the stream."""

    keepalive = b": keep-alive\n\n"

    def __init__(self, api: str, on_response_id: Callable[[str], None] | None = None):
        self.api = api
        if api == "messages":  # while the upstream is silent, Anthropic's own keep-alive, as Anthropic sends it
            self.keepalive = messages_api.MessageEvents.keepalive
        self.ended = False  # the upstream's own error event went out
        self.on_response_id = on_response_id  # told the id of a Responses response, from its first event

    def start(self) -> list:
        return []

    def chunk(self, chunk: StreamChunk) -> list:
        return []

    def frame(self, chunk: StreamChunk) -> bytes:
        if chunk.finish_reason == "error":
            self.ended = True
        if self.on_response_id is not None and chunk.raw:
            found = _RESPONSE_ID.search(chunk.raw)  # response.created comes first, its response's id first in it
            if found:
                self.on_response_id(found[1].decode())
                self.on_response_id = None
        return chunk.raw or b""

    def end(self, usage: Usage) -> list:
        return []

    def fail(self, status: int, message: str, code: str | None = None) -> list:
        if self.ended:
            return []
        if self.api == "messages":
            return [("error", messages_api.error_body(status, message))]
        # a Responses stream ends with response.completed or response.failed: Codex retries any other end
        error = {"code": responses_api.failure_code(status, message, code), "message": message}
        failed = {"id": responses_api.new_id("resp"), "object": "response", "status": "failed", "error": error}
        return [("response.failed", {"type": "response.failed", "response": failed})]
