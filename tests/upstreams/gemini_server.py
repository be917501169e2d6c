"""A fake Gemini API (generativelanguage.googleapis.com, ``v1beta``).

``models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (``data:`` frames
separated by CRLF CRLF, as Google sends them) and ``:batchEmbedContents``, with Google's
error body ``{"error": {"code", "message", "status"}}``. Requests are checked like the
real API checks them (key, roles, non-empty parts, function responses as objects).
"""

from __future__ import annotations

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


class GeminiUpstream(Scripted, UpstreamServer):
    """Answers like the Gemini API."""

    dimensions = 8

    def handle(self, request: Received, reply: Reply) -> None:
        match = PATH.match(request.path)
        if request.method != "POST" or not match:
            return reply.json(error_body(404, f"Not found: {request.path}"), 404)
        headers = {k.lower(): v for k, v in request.headers.items()}
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
