"""Coding agents using our MCP server: Claude Code and Codex, each configured as the README says
(its ``claude mcp add`` command, and its JSON and TOML blocks read from README.md itself),
driven by a scripted local model (tests/upstreams/agent_upstream.py) that calls our tools.

The model asks for ``create_token``, then ``fire_transition`` on the token it got back; the
agent runs both through ``/mcp`` with a client key. Afterwards the token is in
``pending_review``, GraphQL shows it with the agent as the actor, and a GraphQL subscription
saw both events. Nothing leaves the machine: the agents get a temporary HOME (and CODEX_HOME),
their model is the local upstream, and Claude Code's nonessential traffic is off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT
from tests.upstreams.agent_upstream import AgentUpstream, Call, Say
from tests.ws_client import WsClient

BIN = Path(__file__).resolve().parent / "agents" / "node_modules" / ".bin"
CLIENT_KEY = "cb-mcp-agent-key-0123456789"
TOKEN = "query($t: ID!) { token(id: $t) { place data created_by history { transition actor } } }"
EVENTS = 'subscription { workflowEvents(workflow_id: "document_review") { type token_id to_place actor } }'
UUID = re.compile(r'"id":\s*"([0-9a-f-]{36})"')


def readme_block(language: str, after: str) -> str:
    """The first ``language`` code block after ``after`` in the README's "Agents over MCP" section."""
    section = (ROOT / "README.md").read_text().split("## Agents over MCP", 1)[1].split("\n## ", 1)[0]
    return section.split(after, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def agent_binary(name: str) -> Path:
    if shutil.which("node") is None or not (BIN / name).exists():
        pytest.skip(f"node or tests/agents/node_modules/.bin/{name} is absent (make agents-deps)")
    return BIN / name


@pytest.fixture
def server(server_factory):
    """Client keys required: /mcp takes the agent's key (the GraphQL API itself stays open)."""
    return server_factory(OPENAI_API_KEY_REQUIRED="true", CB_API_KEYS=CLIENT_KEY)


@pytest.fixture
def upstream():
    with AgentUpstream() as model:
        model.script(
            Call("create_token", {"workflow_id": "document_review", "data": {"title": "Written by an agent"}}),
            Call("fire_transition", lambda _name: {"token_id": created_token(model), "transition_id": "submit"}),
            Say("Submitted: {result}"),
        )
        yield model


def created_token(model: AgentUpstream) -> str:
    """The token id in the create_token result the agent sent back to the model."""
    found = UUID.search(model.tool_results()[-1])
    assert found, model.tool_results()
    return found.group(1)


def offline_env(home: Path, **extra: str) -> dict:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def run_agent(command: list, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{command[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def watch_events(server) -> WsClient:
    ws = WsClient(server)
    ws.init()
    ws.subscribe("events", EVENTS)
    ws.wait_ready()
    return ws


def assert_token_moved_by(server, ws: WsClient, model: AgentUpstream, actor: str) -> None:
    token_id = UUID.search(model.tool_results()[0]).group(1)
    stored = server.graphql(TOKEN, {"t": token_id})["data"]["token"]
    assert stored == {
        "place": "pending_review",
        "data": {"title": "Written by an agent"},
        "created_by": actor,
        "history": [{"transition": "submit", "actor": actor}],
    }
    seen = [ws.result("events")["data"]["workflowEvents"] for _ in range(2)]
    ws.close()
    assert seen == [
        {"type": "token_created", "token_id": token_id, "to_place": "draft", "actor": actor},
        {"type": "token_transitioned", "token_id": token_id, "to_place": "pending_review", "actor": actor},
    ]
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("setup", ["mcp-config file", "claude mcp add"])
def test_claude_code_creates_and_submits_a_token_through_mcp(server, upstream, tmp_path, setup):
    claude = agent_binary("claude")
    home = tmp_path / "home"
    home.mkdir()
    env = offline_env(
        home,
        ANTHROPIC_BASE_URL=upstream.url,
        ANTHROPIC_API_KEY="sk-ant-local",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        ENABLE_TOOL_SEARCH="false",  # offer the MCP tools to the model directly, not behind ToolSearch
    )
    url, header = server.graphql_url + "/mcp", f"Authorization: Bearer {CLIENT_KEY}"
    if setup == "claude mcp add":  # the README's command
        run_agent([claude, "mcp", "add", "--transport", "http", "cb", url, "--header", header], env, tmp_path)
        servers = []
    else:
        config = tmp_path / "cb.json"  # the README's file, for this server and key
        block = readme_block("json", "--mcp-config cb.json")
        config.write_text(block.replace("http://localhost:4000/mcp", url).replace("<key>", CLIENT_KEY))
        servers = ["--mcp-config", str(config), "--strict-mcp-config"]
    ws = watch_events(server)
    done = run_agent(
        [
            claude,
            "-p",
            "Create a document_review token titled 'Written by an agent' and submit it for review.",
            *servers,
            "--allowedTools",
            "mcp__cb__create_token,mcp__cb__fire_transition",
            "--model",
            "claude-sonnet-4-5",
            "--output-format",
            "json",
        ],
        env,
        tmp_path,
    )
    assert json.loads(done.stdout)["result"].startswith("Submitted:")
    assert "mcp__cb__create_token" in upstream.offered_tools()[0]
    assert_token_moved_by(server, ws, upstream, "mcp:claude-code")


def test_codex_creates_and_submits_a_token_through_mcp(server, upstream, tmp_path):
    codex = agent_binary("codex")
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        f"""
model = "gpt-5.1-codex"
model_provider = "local"
approval_policy = "never"

[model_providers.local]
name = "local model"
base_url = "{upstream.base_url}"
wire_api = "responses"
env_key = "LOCAL_MODEL_KEY"

"""
        + readme_block("toml", "**Codex**").replace("http://localhost:4000/mcp", server.graphql_url + "/mcp")
    )
    ws = watch_events(server)
    env = offline_env(tmp_path, CODEX_HOME=str(codex_home), LOCAL_MODEL_KEY="local", CB_KEY=CLIENT_KEY)
    done = run_agent(
        [codex, "exec", "--skip-git-repo-check", "Create a document_review token and submit it for review."],
        env,
        tmp_path,
    )
    assert "Submitted:" in done.stdout
    assert "create_token" in upstream.offered_tools()[0]
    assert_token_moved_by(server, ws, upstream, "mcp:codex-mcp-client")
