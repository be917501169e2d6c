"""A raw GraphQL-over-WebSocket test client (websocket-client), for either protocol.

It speaks the messages by hand so tests can send what real libraries never would
(bad JSON, unknown types, duplicate ids) and read close codes. ``wait_ready`` proves
the server has registered earlier subscriptions: it subscribes to a probe workflow
and creates probe tokens until one event arrives (subscriptions on one socket are
registered in order, so the earlier ones are live too).
"""

from __future__ import annotations

import json
import struct
import time
import uuid

import websocket

from tests.harness import Server

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


class SocketClosed(Exception):
    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"closed with {code} {reason}")
        self.code, self.reason = code, reason


class WsClient:
    def __init__(self, server: Server, protocol: str | None = TRANSPORT_WS, timeout: float = 10):
        self.server = server
        self.protocol = protocol
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.graphql_port}/ws", subprotocols=[protocol] if protocol else None, timeout=timeout
        )
        self.pending: list[dict] = []

    @property
    def legacy(self) -> bool:
        return self.protocol == LEGACY_WS

    def send(self, message: dict | str) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def init(self) -> dict:
        self.send({"type": "connection_init", "payload": {}})
        return self.expect("connection_ack")

    def subscribe(self, op_id: str, query: str, variables: dict | None = None) -> None:
        kind = "start" if self.legacy else "subscribe"
        self.send({"type": kind, "id": op_id, "payload": {"query": query, "variables": variables or {}}})

    def stop(self, op_id: str) -> None:
        self.send({"type": "stop" if self.legacy else "complete", "id": op_id})

    def _read(self, timeout: float) -> dict:
        self.ws.settimeout(timeout)
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                raise TimeoutError("no message in time") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise SocketClosed(code, data[2:].decode(errors="replace"))
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)

    def expect(self, kind: str, op_id: str | None = None, timeout: float = 10) -> dict:
        """The next message of this type (and id), skipping keep-alives; others are kept."""
        for i, message in enumerate(self.pending):
            if message["type"] == kind and (op_id is None or message.get("id") == op_id):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} for {op_id}; kept {self.pending}")
            message = self._read(left)
            if message["type"] == kind and (op_id is None or message.get("id") == op_id):
                return message
            if message["type"] != "ka":
                self.pending.append(message)

    def result(self, op_id: str, timeout: float = 10) -> dict:
        return self.expect("data" if self.legacy else "next", op_id, timeout)["payload"]

    def close_code(self, timeout: float = 10) -> int | None:
        try:
            while True:
                self._read(timeout)
        except SocketClosed as closed:
            return closed.code

    def wait_ready(self, timeout: float = 15, via: Server | None = None) -> None:
        """Return once earlier subscriptions are live; probe events are made through ``via``."""
        via = via or self.server
        workflow = "probe_" + uuid.uuid4().hex[:8]
        via.graphql(
            'mutation($w: ID!) { createWorkflow(input: { id: $w, name: "probe", places: ["p"], '
            'initial_place: "p", transitions: [] }) { id } }',
            {"w": workflow},
        )
        probe = "probe-" + workflow
        self.subscribe(probe, "subscription($w: ID!) { workflowEvents(workflow_id: $w) { type } }", {"w": workflow})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            via.graphql("mutation($w: ID!) { createToken(input: { workflow_id: $w }) { id } }", {"w": workflow})
            try:
                self.result(probe, timeout=0.3)
                break
            except TimeoutError:
                continue
        else:
            raise TimeoutError("subscriptions never became live")
        self.stop(probe)
        if self.legacy:
            self.expect("complete", probe)
        self.pending = [m for m in self.pending if m.get("id") != probe]

    def close(self) -> None:
        self.ws.close()
