"""Request ids, one structured access-log line per request, and HTTP metrics.

Installed on both Flask apps. The access line is written when the response is closed,
so a streamed response is logged (and timed) when its last byte has gone out. The client
address in it (and the one rate limits use) is :func:`client_address`: the peer, or the
X-Forwarded-For client when the peer is one of TRUSTED_PROXIES.
This is the one place a request gets its id (``g.cb_request_id``, also the usage record's id
on the OpenAI port) and its start time (``g.cb_started``, ``time.monotonic()``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from flask import Flask, Request, Response, current_app, g, request

from cb import metrics
from cb.logs import get_logger, info_line, request_id
from cb.proxies import TrustedProxies

log = get_logger("access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def annotator() -> Callable[..., None]:
    """Adds fields (provider, model, tokens, cost …) to this request's access-log line; usable
    later, outside the request (a stream's end)."""
    access = getattr(g, "cb_access", None)

    def add(**fields) -> None:
        if access is not None:
            access.update({k: v for k, v in fields.items() if v is not None})

    return add


def client_address(req: Request) -> str:
    """The client's address: X-Forwarded-For is believed only from a trusted proxy."""
    proxies: TrustedProxies = current_app.extensions["cb_trusted_proxies"]
    return proxies.client(req.remote_addr or "", req.headers.get("X-Forwarded-For"))


class AccessLog:
    """A request's id, its HTTP metrics and its access-log line, for one app (one port)."""

    def __init__(self, app: Flask, port_name: str):
        app.extensions["cb_trusted_proxies"] = TrustedProxies(
            app.extensions["circuit_breaker"].settings.trusted_proxies
        )
        self.port_name = port_name
        self.in_flight = metrics.in_flight.labels(port_name)
        self.samples: dict[tuple[str, int], tuple] = {}  # (route, status) -> labelled counter and histogram

    def sample(self, route: str, status: int) -> tuple:
        found = self.samples.get((route, status))
        if found is None:
            found = self.samples[(route, status)] = (
                metrics.http_requests.labels(self.port_name, route, str(status)),
                metrics.http_latency.labels(self.port_name, route),
            )
        return found

    def begin(self, req: Request, state) -> None:
        """Before anything else: the request's id and start time (``state`` is the request's ``g``)."""
        given = req.headers.get("X-Request-ID", "")
        rid = given if given and _VALID_ID.match(given) else os.urandom(16).hex()
        state.cb_request_id = rid
        state.cb_started = time.monotonic()
        state.cb_access = {}
        request_id.set(rid)
        self.in_flight.inc()

    def finish(self, response: Response, req: Request, state) -> Response:
        """Name the request id in the answer; log and count the request when the answer is closed."""
        rid = getattr(state, "cb_request_id", None)
        if rid is None:  # the request failed before begin() ran
            return response
        response.headers.add("X-Request-ID", rid)  # nothing else names it: no need to replace one
        started, access = state.cb_started, state.cb_access
        route = req.url_rule.rule if req.url_rule else "unmatched"
        method, path, client = req.method, req.path, client_address(req)
        status = response.status_code  # final here; ``close`` keeps no reference to the response (a cycle)

        def close() -> None:
            duration = time.monotonic() - started
            self.in_flight.dec()
            requests_total, latency = self.sample(route, status)
            requests_total.inc()
            latency.observe(duration)
            fields = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
                "client": client,
                **access,
            }
            info_line(log, f"{method} {path} {status}", rid, fields)

        response.call_on_close(close)
        return response


def install(app: Flask, port_name: str) -> None:
    """Give every request of ``app`` an id, a metrics sample and an access-log line."""
    access = AccessLog(app, port_name)

    @app.before_request
    def begin_request():
        access.begin(request._get_current_object(), g._get_current_object())

    @app.after_request
    def finish_response(response: Response) -> Response:
        return access.finish(response, request._get_current_object(), g._get_current_object())
