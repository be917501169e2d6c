"""SSE from an upstream speaking OpenAI's format: relayed as its own bytes where nothing changes.

What the client receives must be what rendering would give (its model name, one id, usage
only when asked for, a role on each choice's first delta), and the usage recorded must be
the upstream's own; only the work differs. The first tests read the renderer's output as a
client would; the last ones go through gunicorn with the official client.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from cb.llm.providers import PROVIDERS
from cb.llm.wire import ChunkRenderer
from tests.harness import Server
from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream

ID = "chatcmpl-abc123"


def upstream_events(
    model: str = "gpt-4o-mini-2024-07-18", usage_null: bool = True, compact: bool = True
) -> list[bytes]:
    """An OpenAI stream as OpenAI sends it when asked for include_usage."""

    def event(choices, **extra):
        body = {
            "id": ID,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "system_fingerprint": "fp_1",
            "choices": choices,
        }
        if usage_null:
            body["usage"] = None
        body.update(extra)
        return json.dumps(body, separators=(",", ":") if compact else None, ensure_ascii=False).encode()

    def delta(d, finish=None):
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    return [
        event(delta({"role": "assistant", "content": "", "refusal": None})),
        event(delta({"content": "Grüße"})),
        event(delta({"content": ' "model":"x"'})),
        event(delta({}, "stop")),
        event([], usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
    ]


def client_sees(model: str, include_usage: bool, events: list[bytes]) -> tuple[list[dict], list[bytes], object]:
    """(chunks the client parses, raw frames, final usage) for ``events`` rendered for ``model``."""
    provider = PROVIDERS["openai"]
    renderer = ChunkRenderer(model, include_usage)
    frames, usage = [], None
    for chunk in provider.parse_stream([b"data: " + e for e in events] + [b"data: [DONE]"], "gpt-4o-mini"):
        usage = chunk.usage or usage
        frame = renderer.frame(chunk)
        if frame:
            frames.append(frame)
    if include_usage:
        frames.append(b"data: " + json.dumps(renderer.usage(usage)).encode() + b"\n\n")
    parsed = [json.loads(f.removeprefix(b"data: ").rstrip(b"\n")) for f in frames]
    return parsed, frames, usage


def test_chunks_that_need_no_change_go_out_as_the_upstream_sent_them():
    events = upstream_events(model="gpt-4o-mini")
    _, frames, _ = client_sees("gpt-4o-mini", True, events)
    assert frames[:4] == [b"data: " + e + b"\n\n" for e in events[:4]]


def test_the_model_the_client_named_replaces_the_upstream_model_and_nothing_else():
    chunks, frames, _ = client_sees("openai/gpt-4o-mini", True, upstream_events())
    assert {c["model"] for c in chunks} == {"openai/gpt-4o-mini"}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:3]] == ["", "Grüße", ' "model":"x"']
    assert chunks[0]["system_fingerprint"] == "fp_1"  # the upstream's other members pass through
    assert b"gpt-4o-mini-2024-07-18" not in b"".join(frames)


def test_one_id_and_created_across_relayed_chunks_and_the_final_usage_chunk():
    chunks, _, _ = client_sees("gpt-4", True, upstream_events())
    assert {c["id"] for c in chunks} == {ID} and {c["created"] for c in chunks} == {1700000000}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12


def test_without_include_usage_no_chunk_carries_usage():
    chunks, _, usage = client_sees("gpt-4", False, upstream_events())
    assert all("usage" not in c for c in chunks)
    assert len(chunks) == 4
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 3)  # still counted exactly


@pytest.mark.parametrize("events", [upstream_events(compact=False), upstream_events(usage_null=False)])
def test_an_upstream_that_serialises_differently_gets_the_same_chunks_by_rendering(events):
    rendered, _, _ = client_sees("openai/gpt-4", True, events)
    assert [c["choices"][0]["delta"].get("content") for c in rendered[:3]] == ["", "Grüße", ' "model":"x"']
    assert (
        rendered[0]["choices"][0]["delta"]["role"] == "assistant"
        and rendered[3]["choices"][0]["finish_reason"] == "stop"
    )
    assert {c["model"] for c in rendered} == {"openai/gpt-4"}
    assert all(c["usage"] is None for c in rendered[:-1]) and rendered[-1]["usage"]["total_tokens"] == 12


def test_usage_null_is_added_for_a_client_that_asked_when_the_upstream_left_it_out():
    events = upstream_events(model="gpt-4", usage_null=False)
    chunks, frames, _ = client_sees("gpt-4", True, events)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert frames[1] == b"data: " + events[1][:-1] + b',"usage":null}\n\n'


def test_a_first_chunk_without_a_role_gets_one():
    events = upstream_events()[1:]  # starts with content, no role
    chunks, _, _ = client_sees("gpt-4", True, events)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"


# -- end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def api(upstream, tmp_path_factory):
    server = Server(
        tmp_path_factory.mktemp("relay"), env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.base_url}
    )
    server.start()
    yield server
    server.stop()


def test_a_relayed_stream_reads_as_the_model_the_client_named(api, upstream):
    client = openai.OpenAI(base_url=api.openai_url + "/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-4",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert upstream.chats()[-1].json["model"] == "gpt-4"
    assert {c.model for c in chunks} == {"openai/gpt-4"}
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens == len(REPLY.split(" "))


def test_a_relayed_stream_is_billed_with_the_upstreams_usage(api, upstream):
    response = requests.post(
        api.openai_url + "/v1/chat/completions",
        timeout=10,
        stream=True,
        headers={"X-Request-ID": "relay-usage-1"},
        json={"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
    )
    body = response.content
    assert b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")
    line = access_line(api, "relay-usage-1")
    assert "estimated=False" in line and f"completion_tokens={len(REPLY.split(' '))}" in line


def access_line(api: Server, request_id: str) -> str:
    """The request's access line: written when the server closes the response, which may be
    just after the client read the stream's last bytes."""
    deadline = time.monotonic() + 10
    while True:
        found = [x for x in api.logs().splitlines() if "usage_status=" in x and request_id in x]
        if found or time.monotonic() > deadline:
            return found[0]
        time.sleep(0.05)
