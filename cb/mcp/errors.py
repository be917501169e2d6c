"""Protocol failures: each carries its JSON-RPC error code and the HTTP status the transport
answers with. A tool that fails for a domain reason is not one of these: it answers a result
with ``isError: true`` (:mod:`cb.mcp.tools`)."""

from __future__ import annotations

from cb.errors import CircuitBreakerError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002


class McpError(CircuitBreakerError):
    """A JSON-RPC error: ``rpc_code`` in the body, ``http_status`` on the transport (200 when
    it is an answer to one request of a valid exchange)."""

    code = "MCP_ERROR"

    def __init__(self, message: str, rpc_code: int = INVALID_REQUEST, http_status: int = 400, data=None):
        super().__init__(message)
        self.rpc_code = rpc_code
        self.http_status = http_status
        self.data = data

    def to_error(self) -> dict:
        error = {"code": self.rpc_code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class SessionNotFound(McpError):
    """The Mcp-Session-Id is unknown, ended or expired: the client starts a new session (404)."""

    def __init__(self):
        super().__init__(
            "Session not found: it ended or expired. Send initialize (without Mcp-Session-Id) to start a new one.",
            INVALID_REQUEST,
            404,
        )


class TooManySessions(McpError):
    """MCP_MAX_SESSIONS sessions are open (503)."""

    def __init__(self, limit: int):
        super().__init__(
            f"Too many MCP sessions are open (MCP_MAX_SESSIONS={limit}); end one with DELETE or try again later.",
            INVALID_REQUEST,
            503,
        )
