"""The ceiling: the most a proxy on this stack does on this machine, measured beside us.

One Flask view, on the same gunicorn worker class as our server (``wsgi.Worker``, gevent),
forwarding the chat completion body to the upstream with urllib3's connection pool (what
``requests`` sends through) and relaying the answer: JSON read whole, SSE relayed as it
arrives. No routing, accounting, logging, limits, metrics or error mapping: what is left
between it and us is our own work. ``CEILING_UPSTREAM`` is the upstream's base URL (with /v1).
"""

from __future__ import annotations

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

    def relay():
        try:
            while data := answer.read1(65536):
                yield data
        finally:
            answer.release_conn()

    return Response(relay(), answer.status, content_type=kind, headers={"Cache-Control": "no-cache"})
