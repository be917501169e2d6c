"""Graceful shutdown: SIGTERM lets streams finish within GRACEFUL_TIMEOUT, ends the rest
cleanly, writes every usage record and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import threading

import nats
import requests

from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream

STREAMS = 20
GRACE = 4


def _read_stream(url: str, rid: str, results: dict, started: threading.Semaphore) -> None:
    """Read one SSE answer to the end; keep its data frames."""
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    frames: list[str] = []
    try:
        with requests.post(
            url + "/v1/chat/completions", json=body, stream=True, timeout=30, headers={"X-Request-ID": rid}
        ) as response:
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    if not frames:
                        started.release()
                    frames.append(line[6:].decode())
    except requests.RequestException as exc:
        frames.append(f"broken: {exc!r}")
    results[rid] = frames


def _outcome(frames: list[str]) -> str:
    """complete (the whole reply, then [DONE]), ended (an error event, then [DONE]) or broken."""
    if not frames or frames[-1] != "[DONE]":
        return "broken"
    events = [json.loads(f) for f in frames[:-1]]
    if "error" in events[-1]:
        error = events[-1]["error"]
        return "ended" if error["code"] == "server_shutting_down" and error["message"] else "broken"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    return "complete" if text == REPLY else "broken"


def _usage_records(nats_url: str, prefix: str) -> list[dict]:
    async def read() -> list[dict]:
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            info = await js.stream_info(f"{prefix}_usage")
            return [
                json.loads((await js.get_msg(f"{prefix}_usage", seq)).data)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
        finally:
            await client.close()

    return asyncio.run(read())


def test_sigterm_finishes_or_cleanly_ends_every_stream_and_keeps_every_usage_record(server_factory, nats_server):
    with OpenAIUpstream() as upstream:
        for i in range(STREAMS):  # half finish within the grace period, half cannot
            upstream.slow_next(0.05 if i % 2 == 0 else 1.0)
        server = server_factory(
            "nats",
            WEB_CONCURRENCY=2,
            GRACEFUL_TIMEOUT=GRACE,
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=upstream.base_url,
            ENVIRONMENT="production",
        )
        prefix = server.env["NATS_PREFIX"]
        results: dict[str, list[str]] = {}
        started = threading.Semaphore(0)
        clients = [
            threading.Thread(target=_read_stream, args=(server.openai_url, f"drain-{i}", results, started))
            for i in range(STREAMS)
        ]
        for client in clients:
            client.start()
        for _ in range(STREAMS):
            assert started.acquire(timeout=15), "every stream has begun"
        server.proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(30)
        code = server.proc.wait(30)
        logs = server.logs()

    outcomes = {rid: _outcome(frames) for rid, frames in results.items()}
    assert sorted(outcomes) == sorted(f"drain-{i}" for i in range(STREAMS))
    assert "broken" not in outcomes.values(), outcomes
    assert set(outcomes.values()) == {"complete", "ended"}
    assert code == 0, logs[-3000:]
    assert "Traceback" not in logs

    records = {r["request_id"]: r for r in _usage_records(nats_server.url, prefix)}
    assert set(records) == set(outcomes)
    for rid, outcome in outcomes.items():
        assert records[rid]["status"] == ("success" if outcome == "complete" else "interrupted")

    restarted = server_factory("nats", NATS_PREFIX=prefix)
    total = restarted.graphql("{ costAnalytics { total_requests } }")["data"]["costAnalytics"]["total_requests"]
    assert total == STREAMS


def test_sigterm_closes_websockets_with_going_away_and_exits_zero(server_factory):
    from tests.ws_client import WsClient

    server = server_factory()
    client = WsClient(server)
    try:
        assert client.init()["type"] == "connection_ack"
        server.proc.send_signal(signal.SIGTERM)
        assert client.close_code() == 1001
    finally:
        client.close()
    assert server.proc.wait(20) == 0
