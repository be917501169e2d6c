"""A fake Gemini API (generativelanguage.googleapis.com, ``v1beta``).

``models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (``data:`` frames
separated by CRLF CRLF, as Google sends them) and ``:batchEmbedContents``, with Google's
error body ``{"error": {"code", "message", "status"}}``. Requests are checked like the
real API checks them (key, roles, non-empty parts, function responses as objects).
"""

from __future__ import annotations

import base64
import json
import re
import uuid

from tests.upstreams.base import Received, Reply, UpstreamServer
from tests.upstreams.script import Answer, Scripted

KEY = "AIza-test-gemini-key"
PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<action>\w+)$")
STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def error_body(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}}


CHAT_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
#: what models.list lists: (id, display name, input and output token limits, supported methods)
MODELS = (
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536, CHAT_METHODS),
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536, CHAT_METHODS),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1048576, 65536, CHAT_METHODS),
    ("gemini-3-pro-preview", "Gemini 3 Pro Preview", 1048576, 65536, CHAT_METHODS),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 1048576, 8192, CHAT_METHODS),
    ("gemini-1.5-pro", "Gemini 1.5 Pro", 2097152, 8192, CHAT_METHODS),
    ("gemini-1.5-flash", "Gemini 1.5 Flash", 1048576, 8192, CHAT_METHODS),
    ("gemini-embedding-001", "Gemini Embedding 001", 2048, 1, ["embedContent", "countTextTokens", "countTokens"]),
    ("text-embedding-004", "Text Embedding 004", 2048, 1, ["embedContent"]),
    ("imagen-4.0-generate-001", "Imagen 4", 480, 8192, ["predict"]),
)


def model_entry(model_id: str, name: str, inputs: int, outputs: int, methods: list[str]) -> dict:
    """One model of models.list, in the API's shape."""
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": name,
        "description": f"{name} by Google",
        "inputTokenLimit": inputs,
        "outputTokenLimit": outputs,
        "supportedGenerationMethods": methods,
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": "pro" in model_id or "2.5" in model_id,
    }


class GeminiUpstream(Scripted, UpstreamServer):
    """Answers like the Gemini API. ``models`` is what models.list lists (``page_size`` per page at
    most, whatever ``pageSize`` asks; page tokens are opaque); ``listing_down`` makes it answer 503."""

    dimensions = 8
    listing_paths = frozenset({"/v1beta/models"})

    def __init__(self, models=MODELS, page_size: int = 1000):
        super().__init__()
        self.models = list(models)
        self.page_size = page_size
        self.listing_down = False

    def handle(self, request: Received, reply: Reply) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.method == "GET" and request.path == "/v1beta/models":
            return self.list_models(request, headers, reply)
        match = PATH.match(request.path)
        if request.method != "POST" or not match:
            return reply.json(error_body(404, f"Not found: {request.path}"), 404)
        key = headers.get("x-goog-api-key") or (request.query.get("key") or [None])[0]
        if not key:
            return reply.json(
                error_body(
                    403,
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity "
                    "to call this API.",
                ),
                403,
            )
        if key != KEY:
            return reply.json(error_body(400, "API key not valid. Please pass a valid API key."), 400)
        model, action = match["model"], match["action"]
        if action == "batchEmbedContents":
            return self.embed(model, request.json or {}, reply)
        problem = validate(request.json)
        if problem:
            return reply.json(error_body(400, problem), 400)
        answer = self.next_answer()
        if action == "streamGenerateContent":
            if request.query.get("alt") != ["sse"]:  # without alt=sse Google streams one JSON array
                return reply.json([response(model, answer)])
            reply.start_stream("text/event-stream")
            for event in stream_events(model, answer):
                reply.chunk(f"data: {json.dumps(event)}\r\n\r\n".encode())
            return reply.end_stream()
        if action != "generateContent":
            return reply.json(error_body(404, f"Method {action} not found"), 404)
        reply.json(response(model, answer))

    def list_models(self, request: Received, headers: dict, reply: Reply) -> None:
        """models.list: ``pageSize`` (default 50, at most 1000) and ``pageToken``; ``nextPageToken``."""
        if (headers.get("x-goog-api-key") or (request.query.get("key") or [None])[0]) != KEY:
            return reply.json(error_body(400, "API key not valid. Please pass a valid API key."), 400)
        if self.listing_down:
            return reply.json(error_body(503, "The service is currently unavailable."), 503)
        size = min(int((request.query.get("pageSize") or ["50"])[0]), 1000, self.page_size)
        token = (request.query.get("pageToken") or [""])[0]
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:")) if token else 0
        except ValueError:
            return reply.json(error_body(400, "Invalid page token."), 400)
        page = self.models[start : start + size]
        body: dict = {"models": [model_entry(*m) for m in page]}
        if start + size < len(self.models):
            body["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
        reply.json(body)

    def embed(self, model: str, body: dict, reply: Reply) -> None:
        vectors = []
        for i, item in enumerate(body.get("requests") or []):
            if item.get("model") != f"models/{model}":
                return reply.json(error_body(400, f"Model name in request {i} does not match the URL"), 400)
            text = "".join(p.get("text", "") for p in (item.get("content") or {}).get("parts") or [])
            size = item.get("outputDimensionality") or self.dimensions
            vectors.append({"values": [round((len(text) + d) / 100, 4) for d in range(size)]})
        reply.json({"embeddings": vectors})


def validate(body: dict | None) -> str | None:
    """The first reason the real API would refuse ``body``, or None."""
    if not isinstance(body, dict) or not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(body["contents"]):
        if content.get("role") not in ("user", "model"):
            return "Please use a valid role: user, model."
        if not content.get("parts"):
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for part in content["parts"]:
            response = (part.get("functionResponse") or {}).get("response", {})
            if not isinstance(response, dict):
                return f"* GenerateContentRequest.contents[{i}]: functionResponse.response must be an object"
    return None


def _parts(answer: Answer) -> list[dict]:
    parts: list[dict] = [{"text": answer.text}] if answer.text else []
    return parts + [{"functionCall": {"name": name, "args": args}} for name, args in answer.tool_calls]


def _usage(answer: Answer, final: bool = True) -> dict:
    usage = {"promptTokenCount": answer.prompt_tokens, "totalTokenCount": answer.prompt_tokens}
    if answer.cached_tokens:  # within promptTokenCount
        usage["cachedContentTokenCount"] = answer.cached_tokens
    if final:
        usage["candidatesTokenCount"] = answer.completion_tokens
        usage["totalTokenCount"] += answer.completion_tokens
        if answer.reasoning_tokens:  # besides candidatesTokenCount
            usage["thoughtsTokenCount"] = answer.reasoning_tokens
            usage["totalTokenCount"] += answer.reasoning_tokens
    return usage


def response(model: str, answer: Answer) -> dict:
    return {
        "candidates": [
            {
                "content": {"parts": _parts(answer), "role": "model"},
                "finishReason": answer.finish or "STOP",
                "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
            }
        ],
        "usageMetadata": _usage(answer),
        "modelVersion": model + "-002",
        "responseId": uuid.uuid4().hex[:22],
    }


def stream_events(model: str, answer: Answer):
    """GenerateContentResponse chunks, as streamGenerateContent sends them."""
    pieces = answer.text_pieces()
    for sent, piece in enumerate(pieces):
        if answer.error_after is not None and sent == answer.error_after:
            yield error_body(503, "The model is overloaded. Please try again later.")
            return
        yield {
            "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
            "usageMetadata": _usage(answer, final=False),
            "modelVersion": model + "-002",
        }
    last = {
        "content": {
            "parts": [{"functionCall": {"name": n, "args": a}} for n, a in answer.tool_calls] or [{"text": ""}],
            "role": "model",
        },
        "finishReason": answer.finish or "STOP",
        "index": 0,
    }
    yield {"candidates": [last], "usageMetadata": _usage(answer), "modelVersion": model + "-002"}
