"""OpenAI's Chat Completions and Embeddings protocol, also spoken by compatible endpoints
(vLLM, LM Studio, proxies): the deployment's ``base_url`` decides where it goes.

Streams always ask for ``stream_options.include_usage`` so the ledger gets the real
token counts even when the client did not ask for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from cb.llm.errors import UpstreamError
from cb.llm.providers.base import Deployment, Provider, UpstreamCall
from cb.llm.providers.errors import redact
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
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


def _usage(data: dict | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


class OpenAIProvider(Provider):
    """OpenAI and every OpenAI-compatible endpoint."""

    type = "openai"

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
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        url = deployment.base_url.rstrip("/") + "/chat/completions"
        return UpstreamCall("POST", url, self._headers(deployment), body, stream=request.stream)

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        choices = []
        for raw in body.get("choices") or []:
            msg = raw.get("message") or {}
            calls = [
                ToolCall(c.get("id") or "", (c.get("function") or {}).get("name") or "",
                         (c.get("function") or {}).get("arguments") or "")
                for c in msg.get("tool_calls") or []
            ]
            message = Message(msg.get("role") or "assistant", msg.get("content"), calls)
            choices.append(Choice(int(raw.get("index") or 0), message, raw.get("finish_reason"), raw.get("logprobs")))
        usage = _usage(body.get("usage")) or Usage(estimated=True)
        return ChatResponse(body.get("id") or "", body.get("model") or model, choices, usage, int(body.get("created") or 0))

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

    @staticmethod
    def _chunk(raw: dict) -> StreamChunk:
        delta = raw.get("delta") or {}
        calls = []
        for c in delta.get("tool_calls") or []:
            function = c.get("function") or {}
            calls.append(ToolCallDelta(int(c.get("index") or 0), c.get("id"), function.get("name"),
                                       function.get("arguments") or ""))
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


class OpenAICompatibleProvider(OpenAIProvider):
    """Any endpoint speaking OpenAI's wire format (vLLM, LM Studio, llama.cpp, …) at its base_url."""

    type = "openai_compatible"
