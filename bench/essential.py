"""The essential gateway: the least any gateway on this stack must do per request, measured beside us.

The ceiling (:mod:`ceiling`) relays bytes. A gateway also has to read the request, send it
with the stack's HTTP client, know what the answer cost and say so: this view does exactly
that and nothing more, on the same gunicorn worker class as our server. Per request it
parses the JSON body, sends the upstream body through ``requests`` (a prepared request copied
from a template and handed to a minimal transport adapter on urllib3's pool: the cheapest
documented way to use requests), parses the answer (JSON) or the event carrying usage (SSE) for its
usage, prices it, renders the answer under the client's model name (JSON) or relays the
events, counts one Prometheus sample and writes one log line. No routing, failover, limits,
keys, budgets, ledger or request id. ``ESSENTIAL_UPSTREAM`` is the upstream's base URL (/v1).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import requests
import urllib3
from flask import Flask, Response, request
from prometheus_client import Counter, Histogram

_upstream = os.environ["ESSENTIAL_UPSTREAM"].rstrip("/") + "/chat/completions"
_path = urllib3.util.parse_url(_upstream).request_uri
_pool = urllib3.connection_from_url(_upstream, maxsize=512, block=False, retries=False)
_PRICE_IN, _PRICE_OUT = 0.15 / 1e6, 0.60 / 1e6

requests_total = Counter("essential_requests_total", "requests", ["model"])
latency = Histogram("essential_latency_seconds", "latency")
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("essential")


class _PoolAdapter(requests.adapters.BaseAdapter):
    def send(self, prepared, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        raw = _pool.urlopen(
            prepared.method,
            _path,
            body=prepared.body,
            headers=prepared.headers,
            preload_content=False,
            retries=False,
            redirect=False,
        )
        response = requests.Response()
        response.status_code, response.headers, response.raw, response.url = raw.status, raw.headers, raw, prepared.url
        return response

    def close(self):
        _pool.close()


_adapter = _PoolAdapter()
_template = requests.Request("POST", _upstream, headers={"Content-Type": "application/json"}).prepare()

app = Flask(__name__)


def _send(body: dict, key: str) -> requests.Response:
    prepared = _template.copy()
    prepared.headers["Authorization"] = key
    prepared.prepare_body(data=json.dumps(body, separators=(",", ":")).encode(), files=None)
    return _adapter.send(prepared, stream=True)


def _record(model: str, usage: dict, started: float, streamed: bool) -> None:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cost = prompt * _PRICE_IN + completion * _PRICE_OUT
    requests_total.labels(model).inc()
    latency.observe(time.monotonic() - started)
    log.info(
        "POST /v1/chat/completions 200 model=%s prompt_tokens=%d completion_tokens=%d cost_usd=%.8f streamed=%s",
        model,
        prompt,
        completion,
        cost,
        streamed,
    )


@app.post("/v1/chat/completions")
def chat_completions():
    started = time.monotonic()
    body = request.get_json()
    model = body["model"]
    answer = _send(body, request.headers.get("Authorization", ""))
    if not body.get("stream"):
        data = json.loads(answer.raw.read())
        answer.raw.release_conn()
        data["model"] = model
        _record(model, data.get("usage") or {}, started, False)
        return Response(json.dumps(data, separators=(",", ":")), answer.status_code, content_type="application/json")

    def relay():
        usage, pending = {}, b""
        try:
            while data := answer.raw.read1(65536):
                *events, pending = (pending + data).split(b"\n\n")
                for event in events:
                    if event.startswith(b"data: {") and b'"usage":{' in event:  # only the event with usage
                        usage = json.loads(event[6:]).get("usage") or usage
                yield data
        finally:
            answer.raw.release_conn()
            _record(model, usage, started, True)

    return Response(
        relay(), answer.status_code, content_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
