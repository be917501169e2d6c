"""The ceiling: the most a proxy on this stack does on this machine, measured beside us.

One Flask view, on the same gunicorn worker class as our server (``wsgi.Worker``, gevent),
forwarding the chat completion body to the upstream with urllib3's connection pool (what
``requests`` sends through) and relaying the answer: JSON read whole, SSE relayed as it
arrives. No routing, accounting, logging, limits, metrics or error mapping: what is left
between it and us is our own work. ``CEILING_UPSTREAM`` is the upstream's base URL (with /v1).

``POST /v1/messages`` (with ``CEILING_ANTHROPIC``, the Anthropic upstream's base URL) is the
ceiling of a pass-through: the body decoded once (what any gateway must do to learn the model
and whether to stream), sent up as it came with the vendor's headers, the stream relayed.
"""

from __future__ import annotations

import json
import os

import urllib3
from flask import Flask, Response, request

_upstream = urllib3.util.parse_url(os.environ["CEILING_UPSTREAM"])
_path = (_upstream.path or "").rstrip("/") + "/chat/completions"
_pool = urllib3.HTTPConnectionPool(_upstream.host, _upstream.port, maxsize=512, block=False, retries=False)

app = Flask(__name__)


@app.post("/v1/chat/completions")
def chat_completions():
    headers = {"Content-Type": "application/json", "Authorization": request.headers.get("Authorization", "")}
    answer = _pool.urlopen(
        "POST", _path, body=request.get_data(), headers=headers, preload_content=False, retries=False, redirect=False
    )
    kind = answer.headers.get("Content-Type", "application/json")
    if not kind.startswith("text/event-stream"):
        body = answer.read()
        answer.release_conn()
        return Response(body, answer.status, content_type=kind)
    return Response(_relay(answer), answer.status, content_type=kind, headers={"Cache-Control": "no-cache"})


def _relay(answer):
    """The upstream's stream, as it arrives."""
    try:
        while data := answer.read1(65536):
            yield data
    finally:
        answer.release_conn()


_anthropic = urllib3.util.parse_url(os.environ.get("CEILING_ANTHROPIC") or os.environ["CEILING_UPSTREAM"])
_anthropic_pool = urllib3.HTTPConnectionPool(_anthropic.host, _anthropic.port, maxsize=512, block=False, retries=False)


@app.post("/v1/messages")
def messages():
    body = request.get_data()
    json.loads(body)  # the one decode a gateway needs (model, stream)
    headers = {k: v for k, v in request.headers.items() if k.lower().startswith("anthropic-")}
    headers |= {"Content-Type": "application/json", "x-api-key": request.headers.get("x-api-key", "")}
    answer = _anthropic_pool.urlopen(
        "POST", "/v1/messages", body=body, headers=headers, preload_content=False, retries=False, redirect=False
    )
    kind = answer.headers.get("Content-Type", "text/event-stream")
    return Response(_relay(answer), answer.status, content_type=kind, headers={"Cache-Control": "no-cache"})
