"""OpenAI's Chat Completions and Embeddings protocol, also spoken by compatible endpoints
(vLLM, LM Studio, proxies): the deployment's ``base_url`` decides where it goes.

Streams always ask for ``stream_options.include_usage`` so the ledger gets the real
token counts even when the client did not ask for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cb.llm.errors import UpstreamError
from cb.llm.providers.base import Deployment, ListedModel, Provider, UpstreamCall
from cb.llm.providers.errors import redact
from cb.llm.providers.wire import event_json, refuse_server_tools, relay_events, safe_call_id
from cb.llm.tools import effort_of
from cb.llm.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    WireEvent,
)

if TYPE_CHECKING:
    from cb.llm.passthrough import NativeRequest

#: Responses stream events that open a stream, held back until one with output (see relay_stream)
_OPENING_EVENTS = ("response.created", "response.in_progress")
#: Responses error codes worth trying another deployment for
_RETRYABLE_CODES = ("rate_limit_exceeded", "server_error", "server_is_overloaded", "slow_down")

# reasoning models refuse max_tokens and want max_completion_tokens
_COMPLETION_TOKENS_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def _content(message: Message):
    if not isinstance(message.content, list):
        return message.content
    parts = []
    for part in message.content:
        if part.type == "image_url":
            image = {"url": part.image_url}
            if part.detail:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.text or ""})
    return parts


def wire_message(message: Message) -> dict:
    """A canonical message in OpenAI's request shape."""
    out: dict = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": safe_call_id(c.id), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = safe_call_id(message.tool_call_id)
    if message.name:
        out["name"] = message.name
    return out


def _details(data) -> dict | None:
    """A ``*_tokens_details`` object, its counts only (servers add nulls and zeros freely)."""
    if not isinstance(data, dict):
        return None
    counts = {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    return counts or None


def _usage(data: dict | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        int(data.get("prompt_tokens") or 0),
        int(data.get("completion_tokens") or 0),
        prompt_details=_details(data.get("prompt_tokens_details")),
        completion_details=_details(data.get("completion_tokens_details")),
    )


def is_openai_api(base_url: str) -> bool:
    """OpenAI's own API, whose catalog we know, rather than a server that lists what it serves."""
    return (urlsplit(base_url).hostname or "").lower() == "api.openai.com"


def _context_length(entry: dict) -> int | None:
    """The context length a ``/v1/models`` entry reports: vLLM's ``max_model_len``, llama.cpp's
    ``meta.n_ctx`` / ``meta.n_ctx_train``, LM Studio's and OpenRouter's ``context_length``."""
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    for value in (
        entry.get("max_model_len"),
        meta.get("n_ctx"),
        meta.get("n_ctx_train"),
        entry.get("context_length"),
        entry.get("max_context_length"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _is_llama_cpp(entries: list[dict]) -> bool:
    """One model served by llama.cpp's llama-server (its router mode lists several, without ``/props``)."""
    return len(entries) == 1 and entries[0].get("owned_by") == "llamacpp"


def responses_usage(data) -> Usage | None:
    """The Responses API's usage: input (cached ones in ``input_tokens_details``), output
    (reasoning ones in ``output_tokens_details``)."""
    if not isinstance(data, dict):
        return None
    return Usage(
        int(data.get("input_tokens") or 0),
        int(data.get("output_tokens") or 0),
        prompt_details=_details(data.get("input_tokens_details")),
        completion_details=_details(data.get("output_tokens_details")),
    )


def _response_error(event: dict) -> UpstreamError:
    """A Responses stream's ``error`` or ``response.failed`` event as an error (retryable when its
    code says the deployment is busy or failing)."""
    error = event.get("error") or (event.get("response") or {}).get("error") or event
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = redact(str(error.get("message") or "the response failed"))
    failed = UpstreamError("OpenAI", f"{message} ({code})" if code else message, retryable=code in _RETRYABLE_CODES)
    if code:
        failed.openai_code = code
    return failed


class _RelayedResponses:
    """What a relayed Responses stream's events mean (a :class:`RelayReader`)."""

    label = "OpenAI"
    opening = frozenset(_OPENING_EVENTS)
    final = frozenset({"response.completed", "response.incomplete"})
    unfinished = "the stream ended before response.completed"

    def failure(self, kind: str | None, data: bytes) -> UpstreamError | None:
        return _response_error(event_json(data)) if kind in ("error", "response.failed") else None

    def usage(self, kind: str | None, data: bytes) -> Usage | None:
        if kind in self.final:
            return responses_usage((event_json(data).get("response") or {}).get("usage"))
        return None


class OpenAIProvider(Provider):
    """OpenAI and every OpenAI-compatible endpoint."""

    type = "openai"
    unsupported = frozenset({"top_k"})
    keeps_listing_on_failure = True  # a self-hosted server that blinks keeps serving what it listed
    relays = frozenset({"responses"})

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        return headers

    def chat_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        body: dict = {"model": model, "messages": [wire_message(m) for m in request.messages]}
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "n": request.n,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "seed": request.seed,
            "user": request.user,
            "tool_choice": request.tool_choice,
            "parallel_tool_calls": request.parallel_tool_calls,
            "response_format": request.response_format,
            "logprobs": request.logprobs,
            "top_logprobs": request.top_logprobs,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if request.max_tokens is not None:
            key = "max_completion_tokens" if model.startswith(_COMPLETION_TOKENS_PREFIXES) else "max_tokens"
            body[key] = request.max_tokens
        if request.tools:
            body["tools"] = []
            for tool in request.tools:
                function = {"name": tool.name}
                if tool.description is not None:
                    function["description"] = tool.description
                if tool.parameters is not None:
                    function["parameters"] = tool.parameters
                if tool.strict is not None:
                    function["strict"] = tool.strict
                body["tools"].append({"type": "function", "function": function})
        self._translated(request, body, model)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        url = deployment.base_url.rstrip("/") + "/chat/completions"
        return UpstreamCall("POST", url, self._headers(deployment), body, stream=request.stream)

    def _translated(self, request: ChatRequest, body: dict, model: str) -> None:
        """What a request from another vendor's API asks beyond the chat fields: reasoning effort
        (reasoning models only), the prompt cache key (OpenAI's own API), server tools (none here)."""
        effort = effort_of(request) if request.reasoning_effort or request.reasoning_budget else None
        if effort and model.startswith(_COMPLETION_TOKENS_PREFIXES):
            body["reasoning_effort"] = effort
        elif effort:
            request.drop("reasoning")
        if request.cache_key and self.type == "openai":
            body["prompt_cache_key"] = request.cache_key
        elif request.cache_key:
            request.drop("prompt_cache_key")
        refuse_server_tools("OpenAI", request)

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        choices = []
        for raw in body.get("choices") or []:
            msg = raw.get("message") or {}
            calls = [
                ToolCall(
                    c.get("id") or "",
                    (c.get("function") or {}).get("name") or "",
                    (c.get("function") or {}).get("arguments") or "",
                )
                for c in msg.get("tool_calls") or []
            ]
            message = Message(msg.get("role") or "assistant", msg.get("content"), calls)
            choices.append(Choice(int(raw.get("index") or 0), message, raw.get("finish_reason"), raw.get("logprobs")))
        usage = _usage(body.get("usage")) or Usage(estimated=True)
        return ChatResponse(
            body.get("id") or "", body.get("model") or model, choices, usage, int(body.get("created") or 0)
        )

    def parse_stream(self, lines: Iterable[bytes], model: str) -> Iterator[StreamChunk]:
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, ": comments", "event:" lines
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise UpstreamError("OpenAI", "the stream sent a malformed event", retryable=False) from None
            if "error" in event:
                error = event["error"] if isinstance(event["error"], dict) else {"message": str(event["error"])}
                raise UpstreamError("OpenAI", redact(str(error.get("message") or "error in stream")))
            usage = _usage(event.get("usage"))
            chunks = [self._chunk(raw) for raw in event.get("choices") or []]
            if usage and chunks:
                chunks[-1].usage = usage
            elif usage:
                chunks = [StreamChunk(usage=usage)]
            elif len(chunks) == 1:
                chunks[0].wire = WireEvent(data, event.get("id"), event.get("created"), event.get("model"))
            yield from chunks

    # -- pass-through (Responses in, Responses out) ------------------------------------------

    def relay_call(self, deployment: Deployment, request: NativeRequest, model: str) -> UpstreamCall:
        """The client's own Responses request, to this deployment: its body with ``model`` set."""
        url = deployment.base_url.rstrip("/") + request.path.removeprefix("/v1")
        headers = self._headers(deployment) | request.headers
        if request.query:
            url += "?" + request.query
        return UpstreamCall("POST", url, headers, stream=request.stream, data=request.upstream_body(model))

    def relay_usage(self, body: dict) -> Usage | None:
        return responses_usage(body.get("usage"))

    def stored_call(self, deployment: Deployment, method: str, path: str) -> UpstreamCall:
        """``GET`` or ``DELETE`` of something the deployment stored (``/v1/responses/{id}``)."""
        return UpstreamCall(
            method, deployment.base_url.rstrip("/") + path.removeprefix("/v1"), self._headers(deployment)
        )

    def relay_stream(self, lines: Iterable[bytes | None]) -> Iterator[StreamChunk]:
        """The upstream's Responses events as they came (:func:`relay_events`), the usage read from
        the final ``response.completed`` (or ``incomplete``); ``response.created`` and
        ``in_progress`` wait for the first event with output, so a failure before it can still
        fail over, and after it an ``error`` or ``response.failed`` event is relayed and ends the stream."""
        return relay_events(lines, _RelayedResponses())

    @staticmethod
    def _chunk(raw: dict) -> StreamChunk:
        delta = raw.get("delta") or {}
        calls = []
        for c in delta.get("tool_calls") or []:
            function = c.get("function") or {}
            calls.append(
                ToolCallDelta(
                    int(c.get("index") or 0), c.get("id"), function.get("name"), function.get("arguments") or ""
                )
            )
        return StreamChunk(
            index=int(raw.get("index") or 0),
            role=delta.get("role"),
            content=delta.get("content"),
            tool_calls=calls,
            finish_reason=raw.get("finish_reason"),
            logprobs=raw.get("logprobs"),
        )

    def embeddings_call(self, deployment: Deployment, request: EmbeddingRequest, model: str) -> UpstreamCall:
        body: dict = {"model": model, "input": request.input, "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        url = deployment.base_url.rstrip("/") + "/embeddings"
        return UpstreamCall("POST", url, self._headers(deployment), body)

    def parse_embeddings(self, body: dict, model: str) -> EmbeddingResponse:
        data = sorted(body.get("data") or [], key=lambda d: d.get("index") or 0)
        usage = _usage(body.get("usage")) or Usage(estimated=True)
        return EmbeddingResponse(body.get("model") or model, [d.get("embedding") or [] for d in data], usage)

    def models_call(self, deployment: Deployment) -> UpstreamCall:
        """The request listing the models the endpoint serves."""
        return UpstreamCall("GET", deployment.base_url.rstrip("/") + "/models", self._headers(deployment))

    def discover_models(self, deployment: Deployment, transport: Any) -> list[ListedModel] | None:
        """What the endpoint serves, from its ``/v1/models`` (OpenAI's own API included: one page,
        no abilities, so names tell chat models from the rest; a self-hosted one may report its
        context length)."""
        body = transport.json(deployment, self.models_call(deployment), self)
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise UpstreamError("OpenAI", "GET /models answered without a 'data' list", retryable=False)
        entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]
        serving = self._llama_cpp_context(deployment, transport) if _is_llama_cpp(entries) else None
        return [ListedModel(e["id"], serving or _context_length(e)) for e in entries]

    def _llama_cpp_context(self, deployment: Deployment, transport: Any) -> int | None:
        """The context a llama.cpp server runs its model with (``/props``: ``n_ctx`` of a slot, which
        ``--ctx-size`` and ``--parallel`` set), rather than the one it was trained with."""
        root = deployment.base_url.rstrip("/").removesuffix("/v1")
        try:
            props = transport.json(deployment, UpstreamCall("GET", root + "/props", self._headers(deployment)), self)
        except UpstreamError:
            return None
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        return n_ctx if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0 else None


class OpenAICompatibleProvider(OpenAIProvider):
    """Any endpoint speaking OpenAI's wire format (vLLM, LM Studio, llama.cpp, …) at its base_url."""

    type = "openai_compatible"
    relays = frozenset()  # chat completions only: not every such server has the Responses API
