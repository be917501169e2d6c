"""A live subscription over WebSocket (graphql-transport-ws) with `gql`: print every event of
a workflow while another part of this script moves a token through it.

    python examples/python/subscribe.py [N]

It subscribes to ``workflowEvents`` of CB_WORKFLOW (default document_review), then creates a
token and fires submit, review and approve over HTTP, and exits after N events (default 4:
the token's creation and its three transitions). CB_WS_URL (default ws://localhost:4000/ws)
is the subscription endpoint, CB_GRAPHQL_URL the HTTP one (see workflow.py).
"""

import asyncio
import os
import sys

from gql import Client, gql
from gql.transport.exceptions import TransportConnectionFailed
from gql.transport.websockets import WebsocketsTransport
from workflow import fire, graphql

WS_URL = os.environ.get("CB_WS_URL", "ws://localhost:4000/ws")
WORKFLOW = os.environ.get("CB_WORKFLOW", "document_review")
TIMEOUT = float(os.environ.get("CB_TIMEOUT", "30"))

WORKFLOW_EVENTS = (
    "subscription($workflow: ID!) { workflowEvents(workflow_id: $workflow) "
    "{ type token_id transition from_place to_place timestamp } }"
)


def move_a_token() -> None:
    """The other part: create a token and fire three transitions (blocking HTTP calls)."""
    token = graphql(
        "mutation($input: CreateTokenInput!) { createToken(input: $input) { id } }",
        input={"workflow_id": WORKFLOW, "data": {"title": "My Document"}},
    )["createToken"]
    for transition in ("submit", "review", "approve"):
        fire(token["id"], transition)


async def subscribed(transport: WebsocketsTransport) -> None:
    """Return once the server holds our subscription.

    graphql-transport-ws has no "subscribed" message, but the server reads a socket's
    messages in order: once our subscribe message is out, its answer to a ping proves
    the subscription is registered, so no event fired after this can be missed.
    """
    while not transport.listeners:  # gql registers the listener right after sending subscribe
        await asyncio.sleep(0.01)
    transport.pong_received.clear()
    await transport.send_ping()
    await transport.pong_received.wait()


async def main(count: int) -> None:
    transport = WebsocketsTransport(url=WS_URL)  # speaks graphql-transport-ws
    request = gql(WORKFLOW_EVENTS)
    request.variable_values = {"workflow": WORKFLOW}
    async with Client(transport=transport) as session:
        received = 0

        async def listen() -> None:
            nonlocal received
            async for result in session.subscribe(request):
                event = result["workflowEvents"]
                received += 1
                step = (
                    f"{event['transition']}: {event['from_place']} -> {event['to_place']}"
                    if event["transition"]
                    else f"in {event['to_place']}"
                )
                print(f"event {received}: {event['type']} token {event['token_id']} {step}", flush=True)
                if received == count:
                    return

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(subscribed(transport), TIMEOUT)
        await asyncio.to_thread(move_a_token)
        await asyncio.wait_for(listener, TIMEOUT)
    print(f"received {received} events")


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4))
    except (OSError, TransportConnectionFailed):  # refused by the HTTP or the WebSocket endpoint
        sys.exit(f"Cannot reach {WS_URL}: is the server running (make run)?")
