"""The dashboard names the MCP client that moved a token (headless Chromium, live over /ws)."""

from __future__ import annotations

from tests.test_mcp import run, sdk
from tests.test_pages import browser, open_dashboard, page, stop_refreshing, until_seen  # noqa: F401 (fixtures)


def test_latest_transitions_on_the_dashboard_name_the_mcp_client(server, page):  # noqa: F811
    open_dashboard(page, server)
    stop_refreshing(page)
    page.wait_for(
        "document.getElementById('live').dataset.state === 'connected'", what="the workflowEvents subscription"
    )

    async def agent():
        async with sdk(server.graphql_url + "/mcp", name="dashboard-test") as client:
            token = (await client.call_tool("create_token", {"workflow_id": "document_review"})).structured_content
            await client.call_tool("fire_transition", {"token_id": token["id"], "transition_id": "submit"})

    until_seen(
        page,
        lambda: run(agent()),
        "[...document.querySelectorAll('#transitions tr')].some(tr => "
        "[...tr.cells].map(td => td.textContent).join('|').includes('submit|draft → pending_review|mcp:dashboard-test'))",
        what="the MCP client's firing in Latest transitions",
    )
    assert page.problems == []
