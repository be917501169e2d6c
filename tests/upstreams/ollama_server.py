"""A fake Ollama server: ``/api/chat`` (NDJSON streaming by default), ``/api/embed``, ``/api/tags``, ``/api/show``.

Shaped after Ollama's API documentation: it streams unless ``"stream": false``, reports
``prompt_eval_count``/``eval_count`` on the final ``done`` object, answers tool calls with
argument objects, and refuses an unknown model with 404 ``{"error": "model ... not found"}``.
``models`` is what ``ollama pull`` would have fetched; tests change it at run time.
"""

from __future__ import annotations

import base64
import binascii
import time

from tests.upstreams.base import Received, Reply, UpstreamServer
from tests.upstreams.script import Answer, Scripted


def _tag(name: str) -> dict:
    return {
        "name": name,
        "model": name,
        "modified_at": "2024-10-01T12:00:00.000000000Z",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


#: what ``/api/show`` says of a model: (architecture, context length, capabilities)
SHOWN = {
    "llama3.2": ("llama", 131072, ["completion", "tools"]),
    "nomic-embed-text": ("nomic-bert", 2048, ["embedding"]),
    "qwen2.5:7b": ("qwen2", 32768, ["completion", "tools"]),
}


class OllamaUpstream(Scripted, UpstreamServer):
    """Answers like a local ``ollama serve``."""

    listing_paths = frozenset({"/api/tags", "/api/show"})

    def __init__(self, models: list[str] | None = None):
        super().__init__()
        self.models = list(models or ["llama3.2:latest", "nomic-embed-text:latest"])

    def chats(self) -> list[Received]:
        """The /api/chat requests, without the /api/tags polls of model discovery."""
        return [r for r in self.received if r.path == "/api/chat"]

    def has(self, model: str) -> bool:
        return model in self.models or f"{model}:latest" in self.models

    def handle(self, request: Received, reply: Reply) -> None:
        route = (request.method, request.path)
        if route == ("GET", "/api/tags"):
            return reply.json({"models": [_tag(name) for name in list(self.models)]})
        if route == ("POST", "/api/show"):
            return self.show((request.json or {}).get("model", ""), reply)
        if route not in (("POST", "/api/chat"), ("POST", "/api/embed")):
            return reply.json({"error": "404 page not found"}, 404)
        body = request.json if isinstance(request.json, dict) else {}
        model = body.get("model", "")
        if not self.has(model):
            return reply.json({"error": f'model "{model}" not found, try pulling it first'}, 404)
        if request.path == "/api/embed":
            return self.embed(body, reply)
        problem = validate(body)
        if problem:
            return reply.json({"error": problem}, 400)
        answer = self.next_answer()
        if body.get("stream", True):
            return reply.ndjson(stream_objects(model, answer))
        reply.json(final(model, answer, answer.text, answer.tool_calls))

    def show(self, model: str, reply: Reply) -> None:
        """``/api/show``: the model's details, ``model_info`` (with ``<arch>.context_length``) and capabilities."""
        if not self.has(model):
            return reply.json({"error": f"model '{model}' not found"}, 404)
        arch, context, capabilities = SHOWN.get(model.removesuffix(":latest"), ("llama", 8192, ["completion"]))
        reply.json(
            {
                "modelfile": f"FROM {model}",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": _tag(model)["details"],
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": 3212749888,
                    f"{arch}.context_length": context,
                    f"{arch}.embedding_length": 3072,
                },
                "capabilities": capabilities,
                "modified_at": "2024-10-01T12:00:00.000000000Z",
            }
        )

    def embed(self, body: dict, reply: Reply) -> None:
        texts = body["input"] if isinstance(body.get("input"), list) else [body.get("input", "")]
        size = body.get("dimensions") or 6
        vectors = [[round((len(t) + d) / 50, 4) for d in range(size)] for t in texts]
        reply.json(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )


def validate(body: dict) -> str | None:
    for message in body.get("messages") or []:
        if message.get("role") not in ("system", "user", "assistant", "tool"):
            return f"invalid role: {message.get('role')}"
        for image in message.get("images") or []:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                return "illegal base64 data in image"
        for call in message.get("tool_calls") or []:
            if not isinstance((call.get("function") or {}).get("arguments"), dict):
                return "json: cannot unmarshal string into Go struct field .arguments of type api.ToolCallFunctionArguments"
    return None


def _calls(tool_calls: list[tuple[str, dict]]) -> list[dict]:
    return [{"function": {"name": name, "arguments": args}} for name, args in tool_calls]


def final(model: str, answer: Answer, content: str, tool_calls: list) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = _calls(tool_calls)
    return {
        "model": model,
        "created_at": _now(),
        "message": message,
        "done": True,
        "done_reason": answer.finish or "stop",
        "total_duration": 5191566416,
        "load_duration": 2154458,
        "prompt_eval_count": answer.prompt_tokens,
        "prompt_eval_duration": 383809000,
        "eval_count": answer.completion_tokens,
        "eval_duration": 4799921000,
    }


def stream_objects(model: str, answer: Answer):
    for sent, piece in enumerate(answer.text_pieces()):
        if answer.error_after is not None and sent == answer.error_after:
            yield {"error": "an error was encountered while running the model: unexpected EOF"}
            return
        yield {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece}, "done": False}
    if answer.tool_calls:
        yield {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": "", "tool_calls": _calls(answer.tool_calls)},
            "done": False,
        }
    yield final(model, answer, "", [])
