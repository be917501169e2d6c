"""`make fuzz`, the hostile half: generated bad input against a real gunicorn, both ports.

Each case is one request built by a generator of our own: deep nesting, huge and non-finite
numbers, invalid UTF-8, NUL bytes, very long strings, duplicate keys, a wrong type in a
field, truncated bodies, and (a few) bodies sent slower than REQUEST_BODY_TIMEOUT. Every
answer must be below 500 and JSON (never an HTML page); the server must be healthy at the
end. Prints how many cases ran per API and per generator, and exits non-zero on a finding.

    .venv/bin/python tests/fuzz_hostile.py [cases per API, default 10000]
"""

from __future__ import annotations

import collections
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Server  # noqa: E402
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream  # noqa: E402

OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/messages/count_tokens", "/v1/responses")
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
GRAPHQL = {
    "query": "mutation($i: CreateTokenInput!) { createToken(input: $i) { id data } }",
    "variables": {"i": {"workflow_id": "document_review", "data": {"title": "x"}}},
}
WEIRD = [
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    -(10**400),
    1e308,
    "\x00",
    "\ud800",
    "é" * 10,
    None,
    True,
    [],
    {},
    "x" * 100_000,
    -1,
    0,
    2**63,
    [[[]]],
    {"a": {"b": {}}},
]


def deep(depth: int, rng: random.Random) -> str:
    """JSON text nested ``depth`` levels (written as text: encoders recurse)."""
    opening, closing = ("[", "]") if rng.random() < 0.5 else ('{"k":', "}")
    return opening * depth + "1" + closing * depth


def raw_json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def mutate(base: dict, rng: random.Random) -> tuple[str, bytes]:
    """One hostile body derived from ``base``; returns (generator name, bytes)."""
    kind = rng.choice(
        [
            "deep",
            "weird_value",
            "wrong_type",
            "invalid_utf8",
            "nul",
            "long_string",
            "duplicate_keys",
            "truncated",
            "not_an_object",
            "huge_number",
        ]
    )
    body = json.loads(json.dumps(base))
    keys = list(body)
    if kind == "deep":
        body[rng.choice(keys)] = "DEEP"
        return kind, json.dumps(body).replace('"DEEP"', deep(rng.choice([65, 200, 1000, 5000, 50_000]), rng)).encode()
    if kind in ("weird_value", "wrong_type", "huge_number"):
        target = body
        path = [rng.choice(keys)]
        if isinstance(body[path[0]], dict) and body[path[0]] and rng.random() < 0.5:
            target, path = body[path[0]], [rng.choice(list(body[path[0]]))]
        if kind == "huge_number":  # written as text: Python refuses to print more than 4,300 digits
            target[path[0]] = "HUGE"
            digits = "9" * rng.randint(20, 20_000) + rng.choice(["", ".5", "e999999", "e-999999"])
            return kind, raw_json(body).replace(b'"HUGE"', digits.encode())
        target[path[0]] = rng.choice(WEIRD)
        return kind, raw_json(body)
    if kind == "invalid_utf8":
        data = json.dumps(body).encode()
        cut = rng.randrange(1, len(data))
        return kind, data[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"]) + data[cut:]
    if kind == "nul":
        data = json.dumps(body).encode()
        cut = rng.randrange(1, len(data))
        return kind, data[:cut] + b"\x00" + data[cut:]
    if kind == "long_string":
        body[rng.choice(keys)] = "y" * rng.choice([10_000, 1_000_000, 5_000_000])
        return kind, json.dumps(body).encode()
    if kind == "duplicate_keys":
        data = json.dumps(body)
        key = rng.choice(keys)
        return kind, ("{" + json.dumps(key) + ": 1, " + data[1:]).encode()
    if kind == "truncated":
        data = json.dumps(body).encode()
        return kind, data[: rng.randrange(0, len(data))]
    return kind, rng.choice([b"[]", b"1", b'"x"', b"null", b"", b"{", b"}"])


def check(response: requests.Response) -> str | None:
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]}"
    kind = response.headers.get("Content-Type", "")
    if "html" in kind or not kind.startswith(("application/json", "text/event-stream")):
        return f"content type {kind!r}: {response.text[:200]}"
    if kind.startswith("application/json"):
        try:
            response.json()
        except ValueError:
            return f"not JSON: {response.text[:200]}"
    return None


def slow_body(host: str, port: int, path: str, seconds: float) -> str | None:
    """Send headers and half a body, then nothing for ``seconds``: the server must answer or close."""
    with socket.create_connection((host, port), timeout=seconds + 30) as sock:
        body = json.dumps(CHAT).encode()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return "no answer and no close after the body timeout"
    status = answer.split(b" ", 2)[1:2]
    if status and status[0].isdigit() and int(status[0]) >= 500:
        return f"status {status[0].decode()}"
    if b"<html" in answer.lower():
        return "an HTML page"
    return None


def main() -> int:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = random.Random(12)
    findings: list[str] = []
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:
        server = Server(
            Path(tmp),
            env={
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": upstream.base_url,
                "REQUEST_BODY_TIMEOUT": "2",
                "RUST_LOG": "warn",
            },
        )
        server.start()
        try:
            session = requests.Session()
            headers = {"Content-Type": "application/json"}
            started = time.monotonic()
            for n in range(cases):
                path = OPENAI_PATHS[n % len(OPENAI_PATHS)]
                kind, data = mutate({**CHAT, "input": "Hi", "max_tokens": 5}, rng)
                found = check(session.post(server.openai_url + path, data=data, headers=headers, timeout=60))
                counts["openai", kind] += 1
                if found:
                    findings.append(f"openai {path} {kind}: {found}")
            for _ in range(cases):
                kind, data = mutate(GRAPHQL, rng) if rng.random() < 0.5 else mutate(GRAPHQL["variables"]["i"], rng)
                if not data.startswith(b'{"query'):
                    data = raw_json({"query": GRAPHQL["query"], "variables": {"i": "PLACEHOLDER"}}).replace(
                        b'"PLACEHOLDER"', data or b"null"
                    )
                found = check(session.post(server.graphql_url + "/graphql", data=data, headers=headers, timeout=60))
                counts["graphql", kind] += 1
                if found:
                    findings.append(f"graphql {kind}: {found} body={data[:300]!r}")
            for port, path in (
                (int(server.env["OPENAI_PORT"]), "/v1/chat/completions"),
                (int(server.env["GRAPHQL_PORT"]), "/graphql"),
            ):
                for _ in range(3):
                    found = slow_body("127.0.0.1", port, path, 2.0)
                    counts["openai" if path.startswith("/v1") else "graphql", "slow_body"] += 1
                    if found:
                        findings.append(f"slow body on {path}: {found}")
            healthy = requests.get(server.graphql_url + "/health", timeout=10).status_code == 200
            healthy = healthy and requests.get(server.openai_url + "/health", timeout=10).status_code == 200
            elapsed = time.monotonic() - started
        finally:
            server.stop()
    for api in ("openai", "graphql"):
        total = sum(n for (a, _), n in counts.items() if a == api)
        detail = ", ".join(f"{kind} {n}" for (a, kind), n in sorted(counts.items()) if a == api)
        print(f"{api}: {total} hostile cases ({detail})")
    print(
        f"{len(findings)} findings (5xx or non-JSON answers) in {elapsed:.0f} s; server healthy afterwards: {healthy}"
    )
    for finding in findings[:20]:
        print("  " + finding)
    return 0 if healthy and not findings else 1


if __name__ == "__main__":
    sys.exit(main())
