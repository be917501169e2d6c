"""GraphQL over WebSocket at /ws: graphql-transport-ws and the legacy graphql-ws protocol.

The protocol is the one the client names in Sec-WebSocket-Protocol (our gunicorn
handler echoes it back, see wsgi.py); without the header we speak graphql-transport-ws.
Operations are parsed, validated and run by schema/subscriptions.py; this module only
speaks the wire protocols:

* graphql-transport-ws: connection_init/ack, ping/pong, subscribe/next/error/complete,
  close codes 4400 (bad message), 4401 (subscribe before ack), 4408 (init timeout),
  4409 (duplicate id), 4429 (second connection_init).
* graphql-ws (subscriptions-transport-ws): connection_init/ack, ka keep-alives,
  start/data/error/complete/stop, connection_terminate; bad messages get an ``error``
  message and the socket stays open.

An invalid document or an unknown id concerns one operation only; the others on the
socket keep running. When the socket closes every bus subscription is released.

Limits: a message nested deeper than MAX_JSON_DEPTH is a bad message (4400, or an
``error`` on graphql-ws); a subscribe past GRAPHQL_WS_MAX_SUBSCRIPTIONS gets an error for
its id; the reader yields after every message, so a connection sending subscribe after
subscribe takes its turn with every other greenlet. Frame size and the number of
connections are bounded before a message is read (wsgi.py).
"""

from __future__ import annotations

import json
import socket
import struct

import gevent
from flask import Blueprint, g, jsonify, request
from gevent.lock import Semaphore

from blueprints import services
from blueprints.auth import graphql_key_from_payload
from cb import lifecycle
from cb.jsondepth import NestingTooDeep, check_graphql, json_too_deep
from cb.logs import get_logger
from schema.subscriptions import LiveSubscription, OperationRefused, execute_once, prepare

bp = Blueprint("subscriptions", __name__)
log = get_logger("subscriptions")

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
SUBPROTOCOLS = (TRANSPORT_WS, LEGACY_WS)


def choose_subprotocol(requested: str) -> str | None:
    """The protocol to answer with for a Sec-WebSocket-Protocol header (ours in our order)."""
    offered = {p.strip() for p in requested.split(",") if p.strip()}
    return next((p for p in SUBPROTOCOLS if p in offered), None)


@bp.route("/ws", websocket=True)
def websocket_endpoint():
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        body = {"errors": [{"message": "/ws expects a WebSocket upgrade", "extensions": {"code": "BAD_REQUEST"}}]}
        return jsonify(body), 400
    requested = request.headers.get("Sec-WebSocket-Protocol", "")
    protocol = request.environ.get("wsgi.websocket_protocol") or choose_subprotocol(requested)
    if requested.strip() and protocol is None:
        send_close(ws, 4406, "Subprotocol not acceptable")
        return ""
    connection = Connection(ws, protocol or TRANSPORT_WS, services())
    connection.header_authenticated = g.get("graphql_authenticated", False)
    connection.run()
    return ""


def send_close(ws, code: int, reason: str) -> None:
    """A close frame with a status code (gevent-websocket's own close() drops the code)."""
    try:
        ws.send_frame(struct.pack("!H", code) + reason.encode()[:120], opcode=ws.OPCODE_CLOSE)
    finally:
        ws.closed = True


class Connection:
    """One client socket and the operations running on it."""

    def __init__(self, ws, protocol: str, services):
        self.ws = ws
        self.legacy = protocol == LEGACY_WS
        self.services = services
        self.settings = services.settings
        self.init_received = False
        self.acknowledged = False
        self.closed = False
        self.operations: dict[str, LiveSubscription | gevent.Greenlet] = {}
        self._send_lock = Semaphore()
        self._helpers: list[gevent.Greenlet] = []
        self._keepalive_started = False
        self.header_authenticated = False

    # --- socket ------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if self.closed:
            return
        with self._send_lock:
            try:
                self.ws.send(json.dumps(message))
            except Exception:  # the client went away; the reader notices and cleans up
                self.closed = True

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and wake the reader, which then releases everything."""
        if self.closed:
            return
        self.closed = True
        handler_socket = getattr(self.ws.handler, "socket", None)
        with self._send_lock:
            try:
                send_close(self.ws, code, reason)
            except Exception:
                pass
        if handler_socket is not None:
            try:
                handler_socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def run(self) -> None:
        self._helpers.append(gevent.spawn_later(self.settings.ws_init_timeout, self._init_timeout))
        # on shutdown, "going away": clients reconnect to another replica
        stop_on_drain = lifecycle.on_drain(lambda: self.close(1001, "Server shutting down"))
        try:
            while not self.closed:
                raw = self.ws.receive()
                if raw is None:
                    break
                self.handle(raw)
                gevent.sleep(0)  # one message at a time: other connections and requests run in between
        except Exception as exc:  # a broken socket or protocol violation ends only this connection
            if not self.closed:
                log.debug("websocket ended: %s", exc)
        finally:
            stop_on_drain()
            self.closed = True
            for helper in self._helpers:
                helper.kill(block=False)
            for operation_id in list(self.operations):
                self._stop(operation_id)

    def _init_timeout(self) -> None:
        if not self.init_received:
            self.close(4408, "Connection initialisation timeout")

    def _keepalive(self) -> None:
        while not self.closed:
            self.send({"type": "ka"})
            gevent.sleep(self.settings.ws_keepalive_seconds)

    # --- messages ----------------------------------------------------------------

    def handle(self, raw: str | bytes) -> None:
        limit = self.settings.max_json_depth
        if json_too_deep(raw, limit):
            reason = f"Invalid message received: nested deeper than MAX_JSON_DEPTH ({limit})"
            if self.legacy:
                self.send({"type": "error", "payload": {"message": reason}})
            else:
                self.close(4400, reason)
            return
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            if self.legacy:
                self.send({"type": "error", "payload": {"message": "Message must be JSON-parseable."}})
            else:
                self.close(4400, "Invalid message received")
            return
        kind = message["type"]
        handler = getattr(self, ("legacy_" if self.legacy else "on_") + kind, None)
        if handler is None:
            if self.legacy:
                self.send({"type": "error", "id": message.get("id"), "payload": {"message": "Invalid message type!"}})
            else:
                self.close(4400, f"Invalid message received: unknown type {kind!r}")
            return
        handler(message)

    # graphql-transport-ws

    def authorized(self, message: dict) -> bool:
        """GRAPHQL_API_KEY, from the upgrade's Authorization header or the connection_init payload."""
        if self.header_authenticated:
            return True
        return self.services.security.graphql_authorized(graphql_key_from_payload(message.get("payload")))

    def on_connection_init(self, message: dict) -> None:
        if self.init_received:
            self.close(4429, "Too many initialisation requests")
            return
        if not self.authorized(message):
            self.close(4403, "Forbidden")
            return
        self.init_received = self.acknowledged = True
        self.send({"type": "connection_ack"})

    def on_ping(self, message: dict) -> None:
        self.send({"type": "pong", **({"payload": message["payload"]} if "payload" in message else {})})

    def on_pong(self, _message: dict) -> None:
        pass

    def on_subscribe(self, message: dict) -> None:
        if not self.acknowledged:
            self.close(4401, "Unauthorized")
            return
        operation_id = message.get("id")
        if not isinstance(operation_id, str) or not operation_id:
            self.close(4400, "Invalid message received: subscribe needs an id")
            return
        if operation_id in self.operations:
            self.close(4409, f"Subscriber for {operation_id} already exists")
            return
        self._start(operation_id, message.get("payload"))

    def on_complete(self, message: dict) -> None:
        self._stop(message.get("id"))  # an unknown id is fine: it may have just finished

    # graphql-ws (subscriptions-transport-ws)

    def legacy_connection_init(self, message: dict) -> None:
        if not self.authorized(message):
            error = {"message": "Missing or invalid GraphQL API key", "extensions": {"code": "UNAUTHENTICATED"}}
            self.send({"type": "connection_error", "payload": error})
            self.close(4403, "Forbidden")
            return
        self.init_received = self.acknowledged = True
        self.send({"type": "connection_ack"})
        if not self._keepalive_started:
            self._keepalive_started = True
            self._helpers.append(gevent.spawn(self._keepalive))

    def legacy_start(self, message: dict) -> None:
        operation_id = message.get("id")
        if not isinstance(operation_id, str) or not operation_id:
            self.send({"type": "error", "id": operation_id, "payload": {"message": "start needs an id"}})
            return
        if not self.acknowledged:
            self.send({"type": "error", "id": operation_id, "payload": {"message": "send connection_init first"}})
            return
        self._stop(operation_id, notify=False)  # a restarted id replaces the old operation
        self._start(operation_id, message.get("payload"))

    def legacy_stop(self, message: dict) -> None:
        operation_id = message.get("id")
        if operation_id in self.operations:
            self._stop(operation_id)
            self.send({"type": "complete", "id": operation_id})

    def legacy_connection_terminate(self, _message: dict) -> None:
        self.close(1000, "Normal closure")

    legacy_ping = on_ping

    # --- operations --------------------------------------------------------------

    def _result(self, operation_id: str, body: dict) -> None:
        self.send({"type": "data" if self.legacy else "next", "id": operation_id, "payload": body})

    def _complete(self, operation_id: str) -> None:
        self.send({"type": "complete", "id": operation_id})

    def _refuse(self, operation_id: str, errors: list[dict]) -> None:
        payload = errors[0] if self.legacy else errors
        self.send({"type": "error", "id": operation_id, "payload": payload})

    def _fail(self, operation_id: str, errors: list[dict]) -> None:
        """A running subscription ended with errors (it fell behind): the client hears it, then it is gone."""
        self.operations.pop(operation_id, None)
        self._refuse(operation_id, errors)
        if self.legacy:
            self._complete(operation_id)

    def _start(self, operation_id: str, payload) -> None:
        most = self.settings.ws_max_subscriptions
        if len(self.operations) >= most:
            message = (
                f"Too many operations on this connection (GRAPHQL_WS_MAX_SUBSCRIPTIONS={most}); complete one first"
            )
            self._refuse(operation_id, [{"message": message, "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"}}])
            return
        try:
            query = payload.get("query") if isinstance(payload, dict) else None
            if isinstance(query, str):
                check_graphql(query, self.settings.max_json_depth)
        except NestingTooDeep as exc:
            self._refuse(operation_id, [{"message": exc.message, "extensions": {"code": exc.code}}])
            return
        try:
            operation = prepare(payload)
            if operation.field is None:
                self.operations[operation_id] = gevent.spawn(self._run_once, operation_id, operation)
                return
            live = LiveSubscription(
                operation,
                self.services,
                lambda body: self._result(operation_id, body),
                lambda errors: self._fail(operation_id, errors),
            )
            live.start()
        except OperationRefused as exc:
            self._refuse(operation_id, exc.errors)
            return
        self.operations[operation_id] = live

    def _run_once(self, operation_id: str, operation) -> None:
        try:
            self._result(operation_id, execute_once(operation, self.services))
            self._complete(operation_id)
        finally:
            self.operations.pop(operation_id, None)

    def _stop(self, operation_id, notify: bool = False) -> None:
        running = self.operations.pop(operation_id, None) if isinstance(operation_id, str) else None
        if isinstance(running, LiveSubscription):
            running.close()
        elif running is not None:
            running.kill(block=False)
        if running is not None and notify:
            self._complete(operation_id)
