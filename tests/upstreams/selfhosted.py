"""Local self-hosted model servers that speak OpenAI's protocol, each with its own accent.

:class:`VLLMUpstream` answers like vLLM's OpenAI server (``vllm serve``): ``GET /v1/models``
lists model cards with ``owned_by: "vllm"``, ``root``, ``parent``, ``max_model_len`` and
``permission``; a model it does not serve gets a 404 ``NotFoundError`` ("The model `x` does
not exist."); with ``--enable-prompt-tokens-details`` its usage carries
``prompt_tokens_details.cached_tokens``, the prompt prefix its automatic prefix caching
reused, in whole blocks of 16 tokens.

:class:`LlamaCppUpstream` answers like llama.cpp's ``llama-server`` with one model loaded:
``GET /v1/models`` lists it (id: its ``--alias``) with ``owned_by: "llamacpp"`` and a
``meta`` object holding ``n_ctx_train`` (next to an Ollama-style ``models`` list),
``GET /props`` reports the context it runs with (``default_generation_settings.n_ctx``),
model names in requests are ignored (the answer echoes the name asked), and usage carries
``prompt_tokens_details.cached_tokens``: the prefix of the prompt its slot still held from
the previous request.

Tokens are counted as the other fakes count them: four characters of the JSON of the
messages per token.
"""

from __future__ import annotations

import json
import time

from tests.upstreams.base import Received, Reply
from tests.upstreams.openai_server import OpenAIUpstream


def _prompt(body: dict) -> str:
    return json.dumps(body.get("messages"))


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _SelfHosted(OpenAIUpstream):
    """What the two servers share: no key unless started with ``--api-key``, prompt caching."""

    listing_paths = frozenset({"/v1/models", "/props"})

    def __init__(self, api_key: str | None = None, reply: str = "Hello from a self-hosted model."):
        super().__init__(api_key or "", reply)
        self.requires_key = api_key is not None
        self.listing_down = False  # GET /v1/models answers 503 (a server restarting)
        self._last_prompt = ""

    def handle(self, request: Received, reply: Reply) -> None:
        if self.requires_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            reply.json({"error": "Unauthorized"}, 401)
            return
        if request.method == "GET" and request.path == "/v1/models":
            if self.listing_down:
                reply.json(
                    {
                        "error": {
                            "message": "Service Unavailable",
                            "type": "ServiceUnavailableError",
                            "param": None,
                            "code": 503,
                        }
                    },
                    503,
                )
            else:
                reply.json(self.model_list())
        elif request.method == "POST" and request.path == "/v1/chat/completions":
            refusal = self.refuse(request.json or {})
            if refusal:
                reply.json(*refusal)
            else:
                self.chat(request, reply)
        elif request.method == "POST" and request.path == "/v1/embeddings":
            refusal = self.refuse(request.json or {})
            if refusal:
                reply.json(*refusal)
            else:
                self.embeddings(request, reply)
        else:
            self.other(request, reply)

    def model_list(self) -> dict:
        raise NotImplementedError

    def refuse(self, body: dict) -> tuple[dict, int] | None:
        return None

    def other(self, request: Received, reply: Reply) -> None:
        reply.json({"detail": "Not Found"}, 404)

    def cached(self, prompt: str) -> int:
        """Prompt tokens this server reports as read from its cache."""
        raise NotImplementedError

    def _usage(self, body: dict, completion_tokens: int) -> dict:
        prompt = _prompt(body)
        tokens = max(1, len(prompt) // 4)
        cached = min(self.cached(prompt), tokens)
        self._last_prompt = prompt
        return {
            "prompt_tokens": tokens,
            "total_tokens": tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }


class VLLMUpstream(_SelfHosted):
    """vLLM's OpenAI-compatible server (``vllm serve <model> --enable-prompt-tokens-details``)."""

    def __init__(self, models: dict[str, int] | None = None, **kw):
        super().__init__(**kw)
        #: model id -> max_model_len, as ``vllm serve`` (and ``--lora-modules``) loaded them
        self.models = dict(models or {"meta-llama/Llama-3.1-8B-Instruct": 32768})
        self._prompts: list[str] = []

    def model_list(self) -> dict:
        created = int(time.time())
        cards = []
        for ident, length in self.models.items():
            cards.append(
                {
                    "id": ident,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": ident,
                    "parent": None,
                    "max_model_len": length,
                    "permission": [
                        {
                            "id": f"modelperm-{abs(hash(ident)) % 10**12:012d}",
                            "object": "model_permission",
                            "created": created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
            )
        return {"object": "list", "data": cards}

    def refuse(self, body: dict) -> tuple[dict, int] | None:
        model = body.get("model")
        if model not in self.models:
            return {
                "error": {
                    "message": f"The model `{model}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            }, 404
        return None

    def cached(self, prompt: str) -> int:
        longest = max((_common_prefix(prompt, seen) for seen in self._prompts), default=0)
        self._prompts.append(prompt)
        return (longest // 4) // 16 * 16


class LlamaCppUpstream(_SelfHosted):
    """llama.cpp's ``llama-server -m <file>.gguf --alias <name> -c <n_ctx>`` with one slot."""

    def __init__(self, alias: str = "SmolLM2-135M-Instruct-Q8_0", n_ctx: int = 4096, n_ctx_train: int = 8192, **kw):
        super().__init__(**kw)
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_ctx_train = n_ctx_train

    def model_list(self) -> dict:
        return {
            "models": [
                {
                    "name": self.alias,
                    "model": self.alias,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
            "object": "list",
            "data": [
                {
                    "id": self.alias,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 2,
                        "n_vocab": 49152,
                        "n_ctx_train": self.n_ctx_train,
                        "n_embd": 576,
                        "n_params": 134515008,
                        "size": 143835136,
                    },
                }
            ],
        }

    def other(self, request: Received, reply: Reply) -> None:
        if request.method == "GET" and request.path == "/props":
            reply.json(
                {
                    "default_generation_settings": {
                        "id": 0,
                        "id_task": -1,
                        "n_ctx": self.n_ctx,
                        "speculative": False,
                        "is_processing": False,
                        "params": {"n_predict": -1, "seed": 4294967295, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
                        "prompt": "",
                        "next_token": {"has_next_token": True, "n_remain": -1, "n_decoded": 0},
                    },
                    "total_slots": 1,
                    "model_alias": self.alias,
                    "model_path": f"/models/{self.alias}.gguf",
                    "modalities": {"vision": False, "audio": False},
                    "chat_template": "{{ messages }}",
                    "bos_token": "<|im_start|>",
                    "eos_token": "<|im_end|>",
                    "build_info": "b6123-4d3a2b1c",
                }
            )
        elif request.method == "GET" and request.path == "/health":
            reply.json({"status": "ok"})
        else:
            reply.json({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, 404)

    def cached(self, prompt: str) -> int:
        return _common_prefix(prompt, self._last_prompt) // 4
