"""Helpers shared by the security tests: a server in front of a local OpenAI upstream."""

from __future__ import annotations

import openai
import requests

from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

CREATE = """mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { key api_key { id name prefix rpm_limit tpm_limit allowed_models created_at revoked } }
}"""


def start_with_upstream(server_factory, upstream: OpenAIUpstream, backend: str = "memory", **env):
    """A gunicorn server whose OpenAI provider is the local upstream."""
    return server_factory(backend, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url, **env)


def client(server, key: str | None, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url + "/v1", api_key=key or "unused", max_retries=retries)


def chat(server, key: str | None = None, header: str = "authorization", **body) -> requests.Response:
    headers = {}
    if key and header == "authorization":
        headers["Authorization"] = f"Bearer {key}"
    elif key:
        headers["api-key"] = key
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], **body}
    return requests.post(server.openai_url + "/v1/chat/completions", json=payload, headers=headers, timeout=30)


def create_key(server, headers: dict | None = None, **fields) -> tuple[str, dict]:
    """createApiKey over GraphQL: (plaintext, record)."""
    fields.setdefault("name", "test key")
    result = server.graphql(CREATE, {"input": fields}, headers=headers)
    assert "errors" not in result, result
    created = result["data"]["createApiKey"]
    return created["key"], created["api_key"]
