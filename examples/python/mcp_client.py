"""Circuit Breaker as an agent sees it, over MCP with the official `mcp` package: list the tools,
create a token, try a transition that is not enabled (the answer says which are), fire the right
one, and read the workflow's diagram.

    pip install mcp
    python examples/python/mcp_client.py

CB_MCP_URL (default http://localhost:4000/mcp) is the server's MCP endpoint. When the server
requires a key (GRAPHQL_API_KEY, or client keys with OPENAI_API_KEY_REQUIRED=true), put it in
CB_API_KEY: it is sent as ``Authorization: Bearer <key>``.
"""

import asyncio
import os
import sys

import httpx2
from mcp import Client, Implementation
from mcp.client.streamable_http import streamable_http_client

MCP_URL = os.environ.get("CB_MCP_URL", "http://localhost:4000/mcp")
API_KEY = os.environ.get("CB_API_KEY")


async def main() -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    transport = streamable_http_client(MCP_URL, http_client=httpx2.AsyncClient(headers=headers))
    # the server records clientInfo's name as the actor: token history shows "mcp:cb-example"
    async with Client(transport, client_info=Implementation(name="cb-example", version="1.0")) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(tool.name for tool in tools))

        created = await client.call_tool(
            "create_token", {"workflow_id": "document_review", "data": {"title": "Quarterly report"}}
        )
        token = created.structured_content
        print(f"token {token['id']} in {token['place']}")

        refused = await client.call_tool("fire_transition", {"token_id": token["id"], "transition_id": "approve"})
        print("approve refused:", refused.content[0].text)

        fired = await client.call_tool("fire_transition", {"token_id": token["id"], "transition_id": "submit"})
        print("after submit:", fired.structured_content["place"])

        diagram = await client.read_resource("cb://workflows/document_review/diagram")
        print(diagram.contents[0].text, end="")


def unreachable(exc: BaseException) -> bool:
    """Whether the failure (possibly inside an exception group) is a refused connection."""
    if isinstance(exc, BaseExceptionGroup):
        return any(unreachable(inner) for inner in exc.exceptions)
    return isinstance(exc, httpx2.ConnectError | ConnectionError) or (
        exc.__cause__ is not None and unreachable(exc.__cause__)
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as exc:
        if unreachable(exc):
            sys.exit(f"Cannot reach {MCP_URL}: is the server running (make run)?")
        raise
