"""Google Gemini: ``generateContent``, ``streamGenerateContent?alt=sse`` and ``batchEmbedContents``.

Translation notes:

- Roles become ``user``/``model``; leading system messages become ``systemInstruction``,
  later ones an operator note in the user turn.
- Gemini's function calls carry no ids: each gets a synthesized ``call_…`` id, and a later
  tool result message is matched back to its function name through the assistant message
  in the same conversation that holds that id. A call's thought signature rides on its id
  (:func:`_signed_id`) and goes back with the call, as Gemini wants.
- The reasoning effort is ``thinkingConfig`` (a budget; a level on Gemini 3); web search is
  ``googleSearch`` when no functions are offered.
- Schemas (tool parameters, ``json_schema``) are reduced to the OpenAPI subset Gemini
  accepts; ``type: [x, "null"]`` becomes ``nullable``.
- ``response_format`` maps to ``responseMimeType``/``responseSchema``, ``n`` to
  ``candidateCount``, ``logprobs`` to ``responseLogprobs``. ``parallel_tool_calls: false``
  has no equivalent and is refused. ``user`` only attributes usage in the gateway.
- ``batchEmbedContents`` reports no token counts: such usage is flagged ``estimated`` (zero).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from cb.llm.errors import UnsupportedParameter, UpstreamError
from cb.llm.providers.base import MAX_PAGES, Deployment, ListedModel, Provider, UpstreamCall
from cb.llm.providers.wire import (
    guess_media_type,
    join_url,
    leading_system,
    new_call_id,
    parse_arguments,
    refuse_server_tools,
    split_data_url,
    sse_data,
    tool_names_by_id,
)
from cb.llm.tools import effort_of, thinking_budget
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

LABEL = "Google"  # how errors name this provider
#: vendor-run tools a client asked for, as Gemini's own
SERVER_TOOLS = {
    "web_search": {"googleSearch": {}},
    "code_execution": {"codeExecution": {}},
    "web_fetch": {"urlContext": {}},
}
LIST_PAGE = 1000  # models per page of models.list (Gemini's largest)

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

#: the Schema fields Gemini accepts (an OpenAPI 3.0 subset)
SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}


class GoogleProvider(Provider):
    """Gemini models through the Generative Language API."""

    type = "google"

    keeps_listing_on_failure = True

    def models_call(self, deployment: Deployment, page_token: str | None = None) -> UpstreamCall:
        query = f"?pageSize={LIST_PAGE}" + (f"&pageToken={quote(page_token, safe='')}" if page_token else "")
        return UpstreamCall("GET", join_url(deployment.base_url, "/v1beta/models") + query, _headers(deployment))

    def discover_models(self, deployment: Deployment, transport: Any) -> list[ListedModel]:
        """Every page of ``models.list`` (``nextPageToken`` -> ``pageToken``): each model's id
        without ``models/``, ``inputTokenLimit`` as its context window, and from
        ``supportedGenerationMethods`` whether it chats (``generateContent``) or embeds
        (``embedContent``). Raises UpstreamError."""
        listed: list[ListedModel] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            body = transport.json(deployment, self.models_call(deployment, token), self)
            models = body.get("models", []) if isinstance(body, dict) else None
            if not isinstance(models, list):
                raise UpstreamError("Google", "models.list answered without a 'models' list", retryable=False)
            for entry in models:
                name = entry.get("name") if isinstance(entry, dict) else None
                if not isinstance(name, str) or not name.removeprefix("models/"):
                    continue
                methods = entry.get("supportedGenerationMethods") or []
                limit = entry.get("inputTokenLimit")
                limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
                chat = "generateContent" in methods
                embeds = "embedContent" in methods or "batchEmbedContents" in methods
                listed.append(ListedModel(name.removeprefix("models/"), limit, chat=chat, embeddings=embeds))
            token = body.get("nextPageToken")
            if not isinstance(token, str) or not token:
                return listed
        raise UpstreamError("Google", f"models.list had more than {MAX_PAGES} pages", retryable=False)

    def check(self, request: ChatRequest) -> None:
        super().check(request)
        if request.parallel_tool_calls is False:
            raise UnsupportedParameter(self.type, "parallel_tool_calls")

    # -- request -------------------------------------------------------------------

    def chat_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        self.check(request)
        system, rest = leading_system(request.messages)
        body: dict[str, Any] = {"contents": _contents(rest)}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if request.tools:
            body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
            config = _function_calling_config(request.tool_choice)
            if config:
                body["toolConfig"] = {"functionCallingConfig": config}
        # Gemini's own search, code execution and URL reading; beside functions only on some models
        runs = tuple(SERVER_TOOLS) if not request.tools else ()
        for tool in refuse_server_tools(LABEL, request, runs):
            body.setdefault("tools", []).append(SERVER_TOOLS[tool])
        if request.cache_key:
            request.drop("prompt_cache_key")  # Gemini caches shared prefixes by itself
        generation = _generation_config(request, model)
        if generation:
            body["generationConfig"] = generation
        action = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        url = join_url(deployment.base_url, f"/v1beta/models/{_bare(model)}:{action}")
        return UpstreamCall("POST", url, _headers(deployment), body, request.stream)

    def embeddings_call(self, deployment: Deployment, request: EmbeddingRequest, model: str) -> UpstreamCall:
        name = "models/" + _bare(model)
        requests = []
        for text in request.input:
            item: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if request.dimensions:
                item["outputDimensionality"] = request.dimensions
            requests.append(item)
        url = join_url(deployment.base_url, f"/v1beta/{name}:batchEmbedContents")
        return UpstreamCall("POST", url, _headers(deployment), {"requests": requests})

    # -- response ------------------------------------------------------------------

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        choices = []
        for position, candidate in enumerate(body.get("candidates") or []):
            text, calls = _candidate_parts(candidate)
            message = Message("assistant", text if text or not calls else None, calls)
            logprobs = _logprobs(candidate.get("logprobsResult"))
            choices.append(Choice(candidate.get("index", position), message, _finish(candidate, calls), logprobs))
        if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
            choices.append(Choice(0, Message("assistant", ""), "content_filter"))
        return ChatResponse(
            id=body.get("responseId") or "gen-" + uuid.uuid4().hex[:24],
            model=model,
            choices=choices,
            usage=_usage(body.get("usageMetadata") or {}),
            created=int(time.time()),
        )

    def parse_stream(self, lines: Iterable[bytes], model: str) -> Iterator[StreamChunk]:
        started: set[int] = set()
        tool_counts: dict[int, int] = {}
        usage: Usage | None = None
        finished = False
        for event in sse_data(lines, LABEL):
            if "error" in event:
                error = event["error"] or {}
                raise UpstreamError(
                    LABEL,
                    f"{error.get('message') or 'stream failed'} ({error.get('status')})",
                    retryable=error.get("code") in (429, 500, 503),
                )
            if event.get("usageMetadata"):
                usage = _usage(event["usageMetadata"])
            candidates = event.get("candidates") or []
            if not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
                yield StreamChunk(role="assistant", finish_reason="content_filter", usage=usage)
                return
            for candidate in candidates:
                index = candidate.get("index", 0)
                role = None if index in started else "assistant"
                started.add(index)
                text, calls = _candidate_parts(candidate)
                deltas = []
                for call in calls:
                    position = tool_counts.get(index, 0)
                    tool_counts[index] = position + 1
                    deltas.append(ToolCallDelta(position, call.id, call.name, call.arguments))
                if text or deltas or role:
                    yield StreamChunk(index=index, role=role, content=text or None, tool_calls=deltas)
                if candidate.get("finishReason"):
                    finished = True
                    reason = "tool_calls" if tool_counts.get(index) else _finish(candidate, [])
                    yield StreamChunk(index=index, finish_reason=reason, usage=usage)
        if not finished:
            raise UpstreamError(LABEL, "the stream ended without a finish reason", retryable=True)

    def parse_embeddings(self, body: dict, model: str) -> EmbeddingResponse:
        vectors = [e.get("values") or [] for e in body.get("embeddings") or []]
        counted = (body.get("usageMetadata") or {}).get("promptTokenCount")
        return EmbeddingResponse(model, vectors, Usage(counted or 0, 0, estimated=counted is None))


def _headers(deployment: Deployment) -> dict[str, str]:
    return {"x-goog-api-key": deployment.api_key or "", "content-type": "application/json"}


def _bare(model: str) -> str:
    return model.removeprefix("models/")


def _contents(messages: list[Message]) -> list[dict]:
    names = tool_names_by_id(messages)
    contents: list[dict] = []
    for message in messages:
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _parts(message: Message, names: dict[str, str]) -> list[dict]:
    if message.role == "tool":
        name = message.name or names.get(message.tool_call_id or "") or "function"
        return [{"functionResponse": {"name": name, "response": _tool_result(message.text())}}]
    parts: list[dict] = []
    if isinstance(message.content, list):
        for part in message.content:
            if part.type == "text" and part.text:
                parts.append({"text": part.text})
            elif part.type == "image_url" and part.image_url:
                inline = split_data_url(part.image_url)
                if inline:
                    parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
                else:
                    parts.append(
                        {"fileData": {"mimeType": guess_media_type(part.image_url), "fileUri": part.image_url}}
                    )
    elif message.content:
        parts.append({"text": message.content})
    for call in message.tool_calls:
        part = {"functionCall": {"name": call.name, "args": parse_arguments(call.arguments)}}
        signature = _signature(call.id)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signed_id(signature: str | None) -> str:
    """A call id carrying Gemini's thought signature of the call (URL-safe), so that the client
    sends it back with its tool result, and the call goes back to Gemini signed, as Gemini
    wants: ``call_<24 hex>_<signature>``. Every client API keeps tool call ids as they are."""
    call_id = new_call_id()
    if not signature:
        return call_id
    return f"{call_id}_{signature.replace('+', '-').replace('/', '_').rstrip('=')}"


def _signature(call_id: str | None) -> str | None:
    """The thought signature a :func:`_signed_id` carries, else None."""
    if not call_id or not call_id.startswith("call_") or len(call_id) <= 30 or call_id[29] != "_":
        return None
    token = call_id[30:].replace("-", "+").replace("_", "/")
    return token + "=" * (-len(token) % 4)


def _tool_result(text: str) -> dict:
    """Gemini wants an object as a function's response: JSON objects pass, anything else is wrapped."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, dict) else {"content": value}


def _declaration(tool) -> dict:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.parameters and tool.parameters.get("properties"):
        declaration["parameters"] = gemini_schema(tool.parameters)
    return declaration


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema reduced to the fields Gemini's Schema object accepts."""
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_FIELDS:
            continue
        if key == "properties" and isinstance(value, dict):
            if value:  # Gemini refuses an empty properties object
                result[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key == "format" and value not in ("enum", "date-time", "int32", "int64", "float", "double"):
            continue  # string formats other than these are refused
        elif key == "items":
            result[key] = gemini_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            result[key] = [gemini_schema(sub) for sub in value]
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            result["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                result["nullable"] = True
        else:
            result[key] = value
    return result


def _function_calling_config(choice: str | dict | None) -> dict | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return {"auto": {"mode": "AUTO"}, "required": {"mode": "ANY"}, "none": {"mode": "NONE"}}.get(choice or "")


def _thinking(request: ChatRequest, model: str) -> dict | None:
    """The request's effort as Gemini's ``thinkingConfig``: a level on Gemini 3, a budget before."""
    effort = effort_of(request)
    if effort is None:
        return None
    if _bare(model).startswith("gemini-3"):
        return {"thinkingLevel": "low" if effort in ("minimal", "low") else "high"}
    budget = thinking_budget(request, request.max_tokens or 65536)
    return {"thinkingBudget": min(budget, 24576)} if budget else None


def _generation_config(request: ChatRequest, model: str = "") -> dict:
    config: dict[str, Any] = {}
    thinking = _thinking(request, model)
    if thinking:
        config["thinkingConfig"] = thinking
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("max_tokens", "maxOutputTokens"),
        ("stop", "stopSequences"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = getattr(request, ours)
        if value is not None:
            config[theirs] = value
    kind = (request.response_format or {}).get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        schema = (request.response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = gemini_schema(schema)
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    return config


def _candidate_parts(candidate: dict) -> tuple[str, list[ToolCall]]:
    text, calls = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue
        if "text" in part:
            text.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            signature = part.get("thoughtSignature")
            call_id = _signed_id(signature) if signature else call.get("id") or new_call_id()
            calls.append(ToolCall(call_id, call.get("name", ""), json.dumps(call.get("args") or {})))
    return "".join(text), calls


def _finish(candidate: dict, calls: list[ToolCall]) -> str | None:
    reason = candidate.get("finishReason")
    if calls and reason in (None, "STOP"):
        return "tool_calls"
    if reason is None:
        return None
    return FINISH_REASONS.get(reason, "stop")


def _usage(metadata: dict) -> Usage:
    """``cachedContentTokenCount`` (within the prompt) and ``thoughtsTokenCount`` become OpenAI's
    cached and reasoning token details."""
    thoughts = metadata.get("thoughtsTokenCount") or 0
    completion = (metadata.get("candidatesTokenCount") or 0) + thoughts
    cached = metadata.get("cachedContentTokenCount") or 0
    return Usage(
        metadata.get("promptTokenCount") or 0,
        completion,
        prompt_details={"cached_tokens": cached} if cached else None,
        completion_details={"reasoning_tokens": thoughts} if thoughts else None,
    )


def _logprobs(result: dict | None) -> dict | None:
    """Gemini's ``logprobsResult`` in OpenAI's ``choices[].logprobs`` shape."""
    if not result:
        return None
    tops = result.get("topCandidates") or []
    content = []
    for position, chosen in enumerate(result.get("chosenCandidates") or []):
        alternatives = tops[position].get("candidates", []) if position < len(tops) else []
        content.append(
            {
                "token": chosen.get("token", ""),
                "logprob": chosen.get("logProbability", 0.0),
                "bytes": None,
                "top_logprobs": [
                    {"token": a.get("token", ""), "logprob": a.get("logProbability", 0.0), "bytes": None}
                    for a in alternatives
                ],
            }
        )
    return {"content": content}
