"""Ollama's native API: ``/api/chat`` (NDJSON stream), ``/api/embed`` and ``/api/tags``.

Translation notes:

- Images must be inline (``data:`` URLs): Ollama takes base64 only, and the gateway does
  not fetch URLs on a client's behalf, so an image URL is refused with a 400.
- Sampling options go in ``options`` (``max_tokens`` is ``num_predict``);
  ``response_format`` becomes ``format`` (``"json"`` or the JSON schema).
- Tool calls carry no ids: each gets a synthesized ``call_…`` id; a tool result is sent
  with the function's name (``tool_name``) found through that id.
- ``tool_choice: "none"`` is honoured by not sending the tools; Ollama cannot force a
  call, so ``"required"`` or a named function is refused, as are ``n`` > 1, ``logprobs``
  and ``parallel_tool_calls: false``. ``user`` only attributes usage in the gateway.
- Models are whatever the server has pulled: :meth:`OllamaProvider.discover_models` reads
  ``/api/tags`` (``name:latest`` is listed as ``name``, as Ollama treats them alike) and
  ``/api/show`` once per model version (context length, whether it chats or embeds).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from cb.llm.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from cb.llm.providers.base import Deployment, ListedModel, Provider, UpstreamCall
from cb.llm.providers.wire import (
    join_url,
    ndjson,
    new_call_id,
    parse_arguments,
    refuse_choices_and_logprobs,
    split_data_url,
    tool_names_by_id,
    with_role,
)
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
)

LABEL = "Ollama"  # how errors name this provider

OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("max_tokens", "num_predict"),
    ("stop", "stop"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
)


class OllamaProvider(Provider):
    """Local models served by Ollama."""

    type = "ollama"
    unsupported = frozenset({"top_logprobs"})

    def __init__(self):
        #: (base URL, name, digest) -> what /api/show said: asked once per version of a model
        self._shown: dict[tuple, tuple[int | None, bool | None, bool | None]] = {}

    def check(self, request: ChatRequest) -> None:
        super().check(request)
        refuse_choices_and_logprobs(self.type, request)
        if request.parallel_tool_calls is False:
            raise UnsupportedParameter(self.type, "parallel_tool_calls")
        if request.tools and (isinstance(request.tool_choice, dict) or request.tool_choice == "required"):
            raise UnsupportedParameter(self.type, "tool_choice")

    # -- request -------------------------------------------------------------------

    def chat_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        self.check(request)
        names = tool_names_by_id(request.messages)
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m, names) for m in request.messages],
            "stream": request.stream,  # Ollama streams unless told otherwise
        }
        options = {theirs: getattr(request, ours) for ours, theirs in OPTIONS if getattr(request, ours) is not None}
        if options:
            body["options"] = options
        if request.tools and request.tool_choice != "none":
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description or "",
                        "parameters": t.parameters or {"type": "object", "properties": {}},
                    },
                }
                for t in request.tools
            ]
        kind = (request.response_format or {}).get("type")
        if kind == "json_object":
            body["format"] = "json"
        elif kind == "json_schema":
            body["format"] = (request.response_format.get("json_schema") or {}).get("schema") or "json"
        return UpstreamCall(
            "POST", join_url(deployment.base_url, "/api/chat"), _headers(deployment), body, request.stream
        )

    def embeddings_call(self, deployment: Deployment, request: EmbeddingRequest, model: str) -> UpstreamCall:
        body: dict[str, Any] = {"model": model, "input": request.input}
        if request.dimensions:
            body["dimensions"] = request.dimensions
        return UpstreamCall("POST", join_url(deployment.base_url, "/api/embed"), _headers(deployment), body)

    def tags_call(self, deployment: Deployment) -> UpstreamCall:
        """The request listing the models the server has pulled."""
        return UpstreamCall("GET", join_url(deployment.base_url, "/api/tags"), _headers(deployment))

    models_call = tags_call

    # -- response ------------------------------------------------------------------

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        raw = body.get("message") or {}
        calls = _tool_calls(raw)
        content = raw.get("content") or ""
        message = Message("assistant", content if content or not calls else None, calls)
        return ChatResponse(
            id="chatcmpl-" + uuid.uuid4().hex[:24],
            model=model,
            choices=[Choice(0, message, _finish(body, bool(calls)))],
            usage=_usage(body),
            created=int(time.time()),
        )

    def parse_stream(self, lines: Iterable[bytes], model: str) -> Iterator[StreamChunk]:
        return with_role(self._objects(lines))

    def _objects(self, lines: Iterable[bytes]) -> Iterator[StreamChunk]:
        tools = 0
        for event in ndjson(lines, LABEL):
            if "error" in event:
                raise UpstreamError(LABEL, str(event["error"]))
            raw = event.get("message") or {}
            deltas = []
            for call in _tool_calls(raw):
                deltas.append(ToolCallDelta(tools, call.id, call.name, call.arguments))
                tools += 1
            if raw.get("content") or deltas:
                yield StreamChunk(content=raw.get("content") or None, tool_calls=deltas)
            if event.get("done"):
                yield StreamChunk(finish_reason=_finish(event, tools > 0), usage=_usage(event))
                return
        raise UpstreamError(LABEL, "the stream ended before done", retryable=True)

    def parse_embeddings(self, body: dict, model: str) -> EmbeddingResponse:
        counted = body.get("prompt_eval_count")
        return EmbeddingResponse(model, body.get("embeddings") or [], Usage(counted or 0, 0, estimated=counted is None))

    def show_call(self, deployment: Deployment, model: str) -> UpstreamCall:
        """The request describing one pulled model (its context length and capabilities)."""
        return UpstreamCall("POST", join_url(deployment.base_url, "/api/show"), _headers(deployment), {"model": model})

    def discover_models(self, deployment: Deployment, transport: Any) -> list[ListedModel]:
        """What the server has pulled (``/api/tags``), each described by ``/api/show`` once per
        version (its digest): ``<architecture>.context_length`` and ``capabilities`` (``completion``:
        it chats; ``embedding``: it embeds). A model ``/api/show`` cannot describe is listed by name."""
        listed = []
        for entry in (transport.json(deployment, self.tags_call(deployment), self) or {}).get("models") or []:
            name = entry.get("name") or entry.get("model") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                continue
            key = (deployment.base_url, name, entry.get("digest"))
            shown = self._shown.get(key)
            if shown is None:
                try:
                    shown = self._shown[key] = _described(
                        transport.json(deployment, self.show_call(deployment, name), self)
                    )
                except UpstreamError:
                    shown = (None, None, None)  # asked again next round
            listed.append(ListedModel(name.removesuffix(":latest"), *shown))
        return listed


def _described(show: dict) -> tuple[int | None, bool | None, bool | None]:
    """(context length, chats, embeds) from an ``/api/show`` answer."""
    info = show.get("model_info") if isinstance(show, dict) else None
    context = None
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length")
        context = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    abilities = show.get("capabilities") if isinstance(show, dict) else None
    if not isinstance(abilities, list):
        return context, None, None
    return context, "completion" in abilities, "embedding" in abilities


def model_names(tags: dict) -> list[str]:
    """The model names of an ``/api/tags`` answer, ``:latest`` dropped."""
    names = []
    for entry in tags.get("models") or []:
        name = entry.get("name") or entry.get("model")
        if name:
            names.append(name.removesuffix(":latest"))
    return names


def _headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if deployment.api_key:  # a proxy in front of Ollama may want one
        headers["authorization"] = f"Bearer {deployment.api_key}"
    return headers


def _message(message: Message, names: dict[str, str]) -> dict:
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if isinstance(message.content, list):
        images = []
        for part in message.content:
            if part.type == "image_url" and part.image_url:
                inline = split_data_url(part.image_url)
                if not inline:
                    raise InvalidRequest("Ollama takes images only as base64 data: URLs, not links", "messages")
                images.append(inline[1])
        if images:
            out["images"] = images
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": parse_arguments(c.arguments)}} for c in message.tool_calls
        ]
    if message.role == "tool":
        name = message.name or names.get(message.tool_call_id or "")
        if name:
            out["tool_name"] = name
    return out


def _tool_calls(raw: dict) -> list[ToolCall]:
    calls = []
    for call in raw.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        calls.append(ToolCall(call.get("id") or new_call_id(), function.get("name", ""), text))
    return calls


def _finish(body: dict, called: bool) -> str:
    if called:
        return "tool_calls"
    return "length" if body.get("done_reason") == "length" else "stop"


def _usage(body: dict) -> Usage:
    return Usage(body.get("prompt_eval_count") or 0, body.get("eval_count") or 0)
