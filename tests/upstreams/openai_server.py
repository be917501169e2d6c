"""A local OpenAI: Chat Completions (JSON and SSE), Embeddings and Models, on the real wire.

Payloads follow OpenAI's API reference: ``chat.completion`` and ``chat.completion.chunk``
objects, tool calls with streamed argument deltas, the ``include_usage`` chunk with
``choices: []``, and error bodies ``{"error": {"message", "type", "param", "code"}}``.

Behaviour: with tools offered (and ``tool_choice`` not "none") and a user message last,
it calls the first tool with ``tool_arguments``; after a tool result it answers with the
result in its text; otherwise it answers ``reply``. Run standalone for the bench:
``python -m tests.upstreams.openai_server`` (prints its base URL).
"""

from __future__ import annotations

import json
import time
import uuid

from tests.upstreams.base import Received, Reply, UpstreamServer

API_KEY = "sk-test-upstream-key-0123456789"
#: what GET /v1/models lists, as OpenAI's API does (a subset of its real list: the models
#: these tests use, with the ``owned_by`` values OpenAI gives them)
MODELS = (
    ("gpt-5", "system"),
    ("gpt-5-mini", "system"),
    ("gpt-5-2025-08-07", "system"),
    ("gpt-4.1", "system"),
    ("o3", "system"),
    ("o4-mini", "system"),
    ("chatgpt-4o-latest", "system"),
    ("gpt-4", "openai"),
    ("gpt-4-turbo", "system"),
    ("gpt-4o", "system"),
    ("gpt-4o-mini", "system"),
    ("gpt-3.5-turbo", "openai"),
    ("o1-mini", "system"),
    ("text-embedding-3-small", "system"),
    ("text-embedding-3-large", "system"),
    ("text-embedding-ada-002", "openai-internal"),
)
REPLY = "Hello! I'm doing well, thank you for asking. How can I assist you today?"


def openai_error(
    message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _pieces(text: str) -> list[str]:
    """Split like a tokenizer would, roughly: each word with its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


class OpenAIUpstream(UpstreamServer):
    """Speaks OpenAI's protocol under ``/v1``; ``url + "/v1"`` is the OPENAI_BASE_URL."""

    listing_paths = frozenset({"/v1/models"})

    def __init__(self, api_key: str = API_KEY, reply: str = REPLY):
        super().__init__()
        self.api_key = api_key
        self.reply = reply
        self.tool_arguments = '{"city": "Paris", "unit": "celsius"}'
        self.stored: dict[str, dict] = {}  # responses created with store (OpenAI's default)
        self.responses_usage = {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 100},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 150,
        }

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def chats(self) -> list[Received]:
        return [r for r in self.received if r.path == "/v1/chat/completions"]

    def handle(self, request: Received, reply: Reply) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            reply.json(
                openai_error(
                    "Incorrect API key provided: sk-wr*****. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                ),
                401,
            )
            return
        if request.method == "POST" and request.path == "/v1/chat/completions":
            self.chat(request, reply)
        elif request.method == "POST" and request.path == "/v1/responses":
            self.responses(request, reply)
        elif request.method == "POST" and request.path == "/v1/responses/compact":
            self.compact(request, reply)
        elif request.method in ("GET", "DELETE") and request.path.startswith("/v1/responses/"):
            self.stored_response(request, reply)
        elif request.method == "POST" and request.path == "/v1/embeddings":
            self.embeddings(request, reply)
        elif request.method == "GET" and request.path == "/v1/models":
            reply.json(
                {
                    "object": "list",
                    "data": [
                        {"id": name, "object": "model", "created": 1687882411, "owned_by": owner}
                        for name, owner in MODELS
                    ],
                }
            )
        else:
            reply.json(openai_error(f"Invalid URL ({request.method} {request.path})"), 404)

    # -- chat ----------------------------------------------------------------------------
    def _answer(self, body: dict) -> tuple[str | None, dict | None]:
        """(text, tool call) this request gets."""
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        if body.get("tools") and body.get("tool_choice") != "none" and last.get("role") == "user":
            name = body["tools"][0]["function"]["name"]
            return None, {"id": "call_" + uuid.uuid4().hex[:24], "name": name, "arguments": self.tool_arguments}
        if last.get("role") == "tool":
            return f"The tool said: {last.get('content')}", None
        return self.reply, None

    @staticmethod
    def _usage(body: dict, completion_tokens: int) -> dict:
        prompt = max(1, len(json.dumps(body.get("messages"))) // 4)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def chat(self, request: Received, reply: Reply) -> None:
        body = request.json or {}
        if not isinstance(body.get("messages"), list):
            reply.json(
                openai_error(
                    "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
                ),
                400,
            )
            return
        text, call = self._answer(body)
        ident, created, model = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time()), body.get("model")
        if body.get("stream"):
            self._stream(body, reply, ident, created, model, text, call)
            return
        message: dict = {"role": "assistant", "content": text, "refusal": None}
        if call:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ]
        completion = len(_pieces(text or call["arguments"]))
        reply.json(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if call else "stop",
                    }
                ],
                "usage": self._usage(body, completion),
                "system_fingerprint": "fp_test",
            }
        )

    def _stream(self, body, reply: Reply, ident, created, model, text, call) -> None:
        def chunk(delta: dict, finish=None) -> dict:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_test",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if (body.get("stream_options") or {}).get("include_usage"):
                data["usage"] = None
            return data

        events = []
        if call:
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ],
                    }
                )
            )
            pieces = [call["arguments"][i : i + 8] for i in range(0, len(call["arguments"]), 8)]
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
            events.append(chunk({}, "tool_calls"))
        else:
            pieces = _pieces(text)
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events += [chunk({"content": p}) for p in pieces]
            events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_test",
                    "choices": [],
                    "usage": self._usage(body, len(pieces)),
                }
            )
        reply.sse([json.dumps(e, separators=(",", ":")) for e in events])  # compact, as OpenAI sends them

    # -- responses -------------------------------------------------------------------------
    def responses(self, request: Received, reply: Reply) -> None:
        """The Responses API: a ``response`` object, or its typed event sequence, answering
        ``reply`` with the usage in ``responses_usage`` (cached input and reasoning tokens)."""
        body = request.json or {}
        if not body.get("input"):
            reply.json(openai_error("Missing required parameter: 'input'.", param="input"), 400)
            return
        ident, item = "resp_" + uuid.uuid4().hex[:24], "msg_" + uuid.uuid4().hex[:24]
        part = {"type": "output_text", "text": self.reply, "annotations": []}
        message = {"id": item, "type": "message", "status": "completed", "role": "assistant", "content": [part]}

        def response(status: str, output: list, usage: dict | None) -> dict:
            return {
                "id": ident,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": body.get("model"),
                "output": output,
                "usage": usage,
            }

        if body.get("store") is not False:
            self.stored[ident] = response("completed", [message], self.responses_usage)
        if not body.get("stream"):
            reply.json(response("completed", [message], self.responses_usage))
            return
        events = [
            ("response.created", {"response": response("in_progress", [], None)}),
            ("response.in_progress", {"response": response("in_progress", [], None)}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": message | {"status": "in_progress", "content": []}},
            ),
            (
                "response.content_part.added",
                {"item_id": item, "output_index": 0, "content_index": 0, "part": part | {"text": ""}},
            ),
        ]
        events += [
            ("response.output_text.delta", {"item_id": item, "output_index": 0, "content_index": 0, "delta": piece})
            for piece in _pieces(self.reply)
        ]
        events += [
            ("response.output_text.done", {"item_id": item, "output_index": 0, "content_index": 0, "text": self.reply}),
            ("response.content_part.done", {"item_id": item, "output_index": 0, "content_index": 0, "part": part}),
            ("response.output_item.done", {"output_index": 0, "item": message}),
            ("response.completed", {"response": response("completed", [message], self.responses_usage)}),
        ]
        reply.sse(
            [(kind, {"type": kind, "sequence_number": n} | data) for n, (kind, data) in enumerate(events)],
            done=False,
            event_names=True,
        )

    def compact(self, request: Received, reply: Reply) -> None:
        """Remote compaction: the conversation's user messages, then one opaque compaction item."""
        body = request.json or {}
        if not isinstance(body.get("input"), list):
            reply.json(openai_error("Missing required parameter: 'input'.", param="input"), 400)
            return
        users = [item for item in body["input"] if isinstance(item, dict) and item.get("role") == "user"]
        compaction = {"id": "cmp_" + uuid.uuid4().hex[:24], "type": "compaction", "encrypted_content": "gAAAA-opaque"}
        reply.json(
            {
                "id": "resp_" + uuid.uuid4().hex[:24],
                "object": "response.compaction",
                "created_at": int(time.time()),
                "output": [*users, compaction],
                "usage": self.responses_usage,
            }
        )

    def stored_response(self, request: Received, reply: Reply) -> None:
        ident = request.path.rsplit("/", 1)[-1]
        if ident not in self.stored:
            reply.json(openai_error(f"Response with id '{ident}' not found.", param="response_id"), 404)
        elif request.method == "GET":
            reply.json(self.stored[ident])
        else:
            del self.stored[ident]
            reply.json({"id": ident, "object": "response", "deleted": True})

    # -- embeddings ------------------------------------------------------------------------
    def embeddings(self, request: Received, reply: Reply) -> None:
        body = request.json or {}
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        size = body.get("dimensions") or 8
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round(((len(text) + k) % 7) / 7.0, 4) for k in range(size)],
            }
            for i, text in enumerate(inputs)
        ]
        tokens = sum(max(1, len(t) // 4) for t in inputs)
        reply.json(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


if __name__ == "__main__":
    server = OpenAIUpstream().start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
