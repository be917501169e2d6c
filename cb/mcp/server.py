"""JSON-RPC dispatch of the MCP methods we serve: the lifecycle (``initialize``, ``ping``),
tools and resources.

Versions are negotiated as the handshake revisions of the specification say: ``initialize``
asks for a version; we answer with the same one when we speak it, else with our newest, and
the client decides whether to go on. Later requests carry it in ``MCP-Protocol-Version``; a
version we do not speak there is a 400. The stateless 2026-07-28 revision (``server/discover``
instead of ``initialize``) is not served: its probe gets "method not found", which dual-era
clients (the official SDKs) read as "use initialize", so they connect at 2025-11-25.
"""

from __future__ import annotations

from typing import Any

from cb.errors import CircuitBreakerError
from cb.logs import get_logger
from cb.mcp import resources, tools
from cb.mcp.errors import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, McpError
from cb.mcp.notifications import ResourceChanges
from cb.mcp.sessions import Session, SessionStore

log = get_logger("mcp")

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
INTERNAL_ERROR = -32603

INSTRUCTIONS = (
    "Circuit Breaker runs workflows as Petri nets: a token (a case, e.g. a document) sits in one place of a "
    "workflow and moves along transitions, each allowed only from certain places and only when its guards "
    "hold over the token's data. Find workflows with list_workflows and get_workflow, create cases with "
    "create_token, move them with fire_transition (get_token shows the transitions enabled now). AI agents "
    "configured on places act on tokens that arrive there (list_agents)."
)


def is_request(message: Any) -> bool:
    return isinstance(message, dict) and "method" in message and "id" in message


def check_message(message: Any) -> None:
    """A JSON-RPC 2.0 request, notification or response, or McpError -32600 (HTTP 400)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise McpError('Invalid JSON-RPC message: expected an object with "jsonrpc": "2.0"')
    if "method" in message:
        if not isinstance(message["method"], str):
            raise McpError("Invalid JSON-RPC request: method must be a string")
        if "id" in message and (isinstance(message["id"], bool) or not isinstance(message["id"], str | int)):
            raise McpError("Invalid JSON-RPC request: id must be a string or an integer")
        if "params" in message and not isinstance(message["params"], dict):
            raise McpError("Invalid JSON-RPC request: params must be an object")
    elif "id" not in message or ("result" not in message and "error" not in message):
        raise McpError("Invalid JSON-RPC message: neither a request, a notification nor a response")


def check_version(header: str | None) -> None:
    """The ``MCP-Protocol-Version`` of a request after ``initialize`` (absent: the session's)."""
    if header is not None and header not in SUPPORTED_VERSIONS:
        raise McpError(
            f"Unsupported MCP-Protocol-Version {header!r}: this server speaks {', '.join(SUPPORTED_VERSIONS)} "
            "(negotiated by initialize)",
            INVALID_REQUEST,
            400,
            {"supported": list(SUPPORTED_VERSIONS), "requested": header},
        )


def _printable(value) -> str:
    """A client-chosen name as it may appear in token history and logs: text, no control
    characters (a line break would forge a log line), at most 64 characters."""
    return "".join(c for c in str(value or "") if c.isprintable())[:64]


def result(message: dict, value: dict) -> dict:
    return {"jsonrpc": "2.0", "id": message["id"], "result": value}


def error(message_id, exc: McpError) -> dict:
    return {"jsonrpc": "2.0", "id": message_id, "error": exc.to_error()}


class McpServer:
    """Answers the JSON-RPC messages of MCP sessions over the worker's services."""

    def __init__(self, services):
        self.services = services
        settings = services.settings
        self.sessions = SessionStore(services.storage, settings.mcp_max_sessions, settings.mcp_session_idle_seconds)
        self.max_streams = settings.mcp_max_sessions
        self.feeds: set[ResourceChanges] = set()  # this worker's open GET streams
        self._methods = {
            "ping": lambda _s, _p: {},
            "tools/list": lambda _s, _p: {"tools": [t.listing() for t in tools.TOOLS]},
            "tools/call": self._call_tool,
            "resources/list": lambda _s, _p: {"resources": resources.listing(services.workflows.list_workflows())},
            "resources/templates/list": lambda _s, _p: {"resourceTemplates": resources.TEMPLATES},
            "resources/read": lambda _s, p: resources.read(services.workflows, p.get("uri")),
        }

    def knows(self, method: str) -> bool:
        """Whether ``method`` is one this server answers (requests only)."""
        return method == "initialize" or method in self._methods

    def initialize(self, message: dict) -> tuple[dict, Session]:
        """Start a session: the ``InitializeResult`` answer and the new session."""
        params = message.get("params") or {}
        asked = params.get("protocolVersion")
        if not isinstance(asked, str):
            raise McpError("initialize needs params.protocolVersion (a string)", INVALID_PARAMS, 400)
        version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
        client = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        name, client_version = _printable(client.get("name")) or "unknown", _printable(client.get("version"))
        session = self.sessions.create(version, name, client_version)
        log.info("MCP session started by %s %s (protocol %s)", name, session.client_version, version)
        answer = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}, "resources": {"listChanged": True}},
            "serverInfo": {"name": "circuit-breaker", "title": "Circuit Breaker", "version": self.services.version},
            "instructions": INSTRUCTIONS,
        }
        return result(message, answer), session

    def handle(self, message: dict, session: Session) -> dict | None:
        """The answer to one message of a session (None for notifications and responses)."""
        if not is_request(message):
            return None  # notifications/initialized, cancellations, answers: nothing to say
        method = self._methods.get(message["method"])
        try:
            if method is None:
                raise McpError(f"Method not found: {message['method']}", METHOD_NOT_FOUND, 200)
            return result(message, method(session, message.get("params") or {}))
        except McpError as exc:
            return error(message["id"], exc)
        except CircuitBreakerError as exc:  # storage down while listing or reading
            return error(message["id"], McpError(exc.message, INTERNAL_ERROR, 200))

    def check_stream_room(self) -> None:
        """McpError 503 when this worker has MCP_MAX_SESSIONS GET streams open already."""
        if len(self.feeds) >= self.max_streams:
            raise McpError(
                f"Too many open MCP streams on this worker ({self.max_streams}); close one or try again later.",
                INVALID_REQUEST,
                503,
            )

    def open_feed(self) -> ResourceChanges:
        """The notices of a new GET stream (after :meth:`check_stream_room`)."""
        feed = ResourceChanges(self.services.bus)
        self.feeds.add(feed)
        return feed

    def close_feed(self, feed: ResourceChanges) -> None:
        self.feeds.discard(feed)
        feed.close()

    def _call_tool(self, session: Session, params: dict) -> dict:
        name = params.get("name")
        tool = tools.BY_NAME.get(name) if isinstance(name, str) else None
        if tool is None:
            names = ", ".join(tools.BY_NAME)
            raise McpError(f"Unknown tool {name!r}; the tools are {names}", INVALID_PARAMS, 200)
        return tools.call(self.services, session, tool, params.get("arguments"))
