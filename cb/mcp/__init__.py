"""The Model Context Protocol server's domain: JSON-RPC dispatch, tools, resources, sessions.

MCP clients (Claude Code, Codex, the official SDKs) reach it over HTTP at ``/mcp`` on the
GraphQL port; :mod:`blueprints.mcp` speaks the Streamable HTTP transport and hands each
JSON-RPC message to :class:`McpServer`. Everything here is HTTP-free: the tools call the
same services as the GraphQL resolvers, and sessions live in storage, so with NATS any
worker serves any session.
"""

from cb.mcp.errors import McpError
from cb.mcp.server import SUPPORTED_VERSIONS, McpServer
from cb.mcp.sessions import Session, SessionStore

__all__ = ["SUPPORTED_VERSIONS", "McpError", "McpServer", "Session", "SessionStore"]
