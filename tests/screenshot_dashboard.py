"""Take the README's screenshot of the dashboard: ``.venv/bin/python -m tests.screenshot_dashboard [out.png]``.

Starts the server under gunicorn with local OpenAI and Anthropic upstreams (nothing
leaves the machine), makes some traffic with the official ``openai`` client, sets two
budgets, puts tokens in the example workflows, fires a few transitions, and photographs
``/dashboard`` in headless Chromium that can reach nothing but 127.0.0.1.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import openai

from tests.browser import Browser, chromium_binary
from tests.harness import ROOT, Server
from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

OUT = ROOT / "docs" / "dashboard.png"
TRAFFIC = [("gpt-4o-mini", 6), ("gpt-4o", 3), ("claude-3-5-haiku", 4), ("claude-3-5-sonnet", 2)]
# per workflow, the transitions each new token fires
TOKENS = {
    "document_review": [
        (),
        (),
        ("submit",),
        ("submit",),
        ("submit", "review"),
        ("submit", "review", "approve"),
        ("submit", "review", "reject"),
    ],
    "software_deployment": [(), (), ()],
}


def make_traffic(server: Server) -> None:
    with openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for model, count in TRAFFIC:
            for i in range(count):
                client.chat.completions.create(
                    model=model, max_tokens=64, messages=[{"role": "user", "content": f"Summarise report {i}."}]
                )
    server.graphql("mutation { setBudget(input: {scope: GLOBAL, limit_usd: 0.05, period: DAILY}) { scope } }")
    server.graphql('mutation { setBudget(input: {scope: USER, scope_id: "alice", limit_usd: 10}) { scope } }')
    for workflow, paths in TOKENS.items():
        for path in paths:
            token = server.graphql(
                "mutation($w: ID!) { createToken(input: {workflow_id: $w}) { id } }", {"w": workflow}
            )["data"]["createToken"]["id"]
            for transition in path:
                server.graphql(
                    "mutation($t: ID!, $x: ID!) { fireTransition(input: {token_id: $t, transition_id: $x}) { id } }",
                    {"t": token, "x": transition},
                )


def main(out: Path = OUT) -> Path:
    binary = chromium_binary()
    if binary is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with OpenAIUpstream() as gpt, AnthropicUpstream() as claude, tempfile.TemporaryDirectory() as work:
        server = Server(
            Path(work),
            env={
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": gpt.base_url,
                "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                "ANTHROPIC_BASE_URL": claude.url,
            },
        )
        server.start()
        browser = Browser(binary, width=1400, height=1000)
        try:
            make_traffic(server)
            page = browser.new_page()
            page.navigate(server.graphql_url + "/dashboard")
            page.wait_for("document.body.dataset.loads >= 1", what="the dashboard's data")
            page.wait_for("document.getElementById('live').dataset.state === 'connected'", what="the live subscription")
            server.graphql(  # one event arrives live, so "Latest transitions" is not empty
                'mutation { createToken(input: {workflow_id: "document_review"}) { id } }'
            )
            page.wait_for(
                "document.querySelectorAll('#transitions tr').length > 1 "
                "&& !document.querySelector('#transitions .empty')",
                what="a live event",
            )
            height = page.evaluate("document.documentElement.scrollHeight")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(out, width=1400, height=height)
            page.close()
        finally:
            browser.close()
            server.stop()
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
