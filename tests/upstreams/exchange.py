"""Drive a provider adapter against a fake upstream: alone, or through the real server.

Alone: the adapter builds the call, plain ``requests`` sends it (as the transport would),
and the adapter parses what comes back, so translation tests see real wire bytes both
ways. Through the server: :func:`serving` starts gunicorn pointed at the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import requests

from cb.llm.providers.base import Deployment, Provider, UpstreamCall
from cb.llm.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk
from tests.harness import Server


def send(call: UpstreamCall) -> requests.Response:
    return requests.request(call.method, call.url, headers=call.headers, json=call.json, stream=call.stream, timeout=10)


def _checked(provider: Provider, response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        raise provider.error(response.status_code, response.content, dict(response.headers))
    return response


def chat(provider: Provider, deployment: Deployment, request: ChatRequest, model: str | None = None) -> ChatResponse:
    model = model or request.model
    response = _checked(provider, send(provider.chat_call(deployment, request, model)))
    return provider.parse_chat(response.json(), model)


def stream(
    provider: Provider, deployment: Deployment, request: ChatRequest, model: str | None = None
) -> list[StreamChunk]:
    model = model or request.model
    request.stream = True
    with send(provider.chat_call(deployment, request, model)) as response:
        _checked(provider, response)
        return list(provider.parse_stream(response.iter_lines(), model))


def embed(provider: Provider, deployment: Deployment, request: EmbeddingRequest) -> EmbeddingResponse:
    response = _checked(provider, send(provider.embeddings_call(deployment, request, request.model)))
    return provider.parse_embeddings(response.json(), request.model)


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(c.content or "" for c in chunks)


def arguments_of(chunks: list[StreamChunk]) -> dict[int, dict]:
    """Streamed tool calls reassembled by index: {index: {id, name, arguments}}."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or delta.id
            call["name"] = call["name"] or delta.name
            call["arguments"] += delta.arguments
    return calls


@contextmanager
def serving(workdir: Path, **env) -> Iterator[tuple[Server, openai.OpenAI]]:
    """The real server under gunicorn with ``env``, and an official OpenAI client pointed at it."""
    server = Server(workdir, env=env)
    server.start()
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    try:
        yield server, client
    finally:
        client.close()  # an idle keep-alive connection would hold up the server's graceful stop
        server.stop()
