"""The coding agents through the gateway, unmodified: the real Claude Code and Codex CLIs (pinned in
tests/agents), the Python Agents SDK and Vercel's ``ai`` SDK, each finishing a whole tool loop.

One scripted model (:mod:`tests.upstreams.agent_upstream`) serves every deployment, each on its
own wire: Anthropic Messages, OpenAI Responses, chat completions and Gemini. Turn 1 it asks for
the agent's file-reading tool on a file holding a random secret; turn 2 it answers with what the
tool returned. The agent's final output holding the secret proves the loop ran through the
gateway both ways. Each CLI runs natively (its vendor's own API) and translated (another
vendor's model behind it). The CLIs run offline: a temporary HOME, telemetry, updates and
nonessential traffic off. Tests skip only when node or the pinned binaries are absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest
import requests

from tests.harness import ROOT, Server
from tests.upstreams.agent_upstream import AgentUpstream, Call, Say

BIN = ROOT / "tests" / "agents" / "node_modules" / ".bin"
CLAUDE, CODEX = BIN / "claude", BIN / "codex"
KEY = "sk-agent-upstream-key"
CLIENT_KEY = "sk-cb-agents-client-key"

CONFIG = """
[[deployments]]
id = "claude"
type = "anthropic"
base_url = "{url}"
key_variable = "AGENT_UPSTREAM_KEY"
models = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5.5"]

[[deployments]]
id = "gpt"
type = "openai"
base_url = "{url}/v1"
key_variable = "AGENT_UPSTREAM_KEY"
models = ["gpt-5", "claude-opus-5-5"]

[[deployments]]
id = "gemini"
type = "google"
base_url = "{url}"
key_variable = "AGENT_UPSTREAM_KEY"
models = ["gemini-2.5-pro", "claude-opus-5-5", "gpt-5.5"]
"""


def _needs(binary: Path) -> None:
    if shutil.which("node") is None or not binary.exists():
        pytest.skip(f"node or {binary.name} is not installed (make agents-deps)")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with AgentUpstream(tmp_path_factory.mktemp("agent-log") / "requests.jsonl") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("agents-gateway")
    config = workdir / "cb.toml"
    config.write_text(CONFIG.format(url=upstream.url))
    # one worker: "logged once" is per worker;
    # keep-alives every 0.3 s: the clients meet them mid-stream, as they would on a slow model
    env = {"CB_CONFIG": str(config), "AGENT_UPSTREAM_KEY": KEY, "WEB_CONCURRENCY": "1", "SSE_KEEPALIVE_SECONDS": "0.3"}
    server = Server(workdir, env=env)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def secret_file(tmp_path, upstream):
    """A file holding a random secret, in the directory the agent runs in."""
    upstream.reset()
    secret = "cb-secret-" + uuid.uuid4().hex
    path = tmp_path / "secret.txt"
    path.write_text(secret + "\n")
    return path, secret


def _offline_env(home: Path, **extra: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # Claude Code: no telemetry, error reports, update checks or other nonessential traffic
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
        # Codex: analytics and update checks are off in its config.toml (readme_codex_config)
        "NO_COLOR": "1",
    }
    env.update(extra)
    return env


def _run(command: list[str], workdir: Path, env: dict) -> subprocess.CompletedProcess:
    """Run an agent to its end, no terminal, no input; it must exit 0."""
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    name = Path(command[0]).name
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def refused(gateway: Server, since: int) -> list[str]:
    """Access-log lines after line ``since`` of requests the gateway answered with an error: none
    may come from what an agent sends, background requests (titles, quota checks) included."""
    lines = gateway.logs().splitlines()[since:]
    return [line for line in lines if "circuit_breaker.access" in line and re.search(r" status=[45]\d\d ", line)]


def run_claude(gateway: Server, workdir: Path, model: str, prompt: str, tools: str = "Read") -> dict:
    """``claude -p`` through the gateway on ``model`` (also its background model); its JSON result."""
    _needs(CLAUDE)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = _offline_env(home, **readme_claude_env(gateway, model))
    since = len(gateway.logs().splitlines())
    done = _run([str(CLAUDE), "-p", prompt, "--output-format", "json", "--allowedTools", tools], workdir, env)
    assert not refused(gateway, since)
    return json.loads(done.stdout)


def readme_claude_env(gateway: Server, model: str) -> dict:
    """Claude Code's environment as the README's Coding agents section sets it, pointed at this
    gateway, with ``model`` as its model and background model."""
    exports = dict(re.findall(r"^export (\w+)=(\S+)", _readme_block("bash"), re.M))
    assert {"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_DEFAULT_HAIKU_MODEL"} <= set(exports)
    models = {"ANTHROPIC_MODEL": model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_AUTH_TOKEN": CLIENT_KEY}
    return exports | {"ANTHROPIC_BASE_URL": gateway.openai_url} | models


def readme_codex_config(gateway: Server, model: str) -> str:
    """Codex's config.toml as the README gives it, on this gateway and ``model``, analytics and
    update checks off."""
    config = _readme_block("toml").replace("http://localhost:3000", gateway.openai_url)
    config = re.sub(r'^model = "[^"]*"', f'model = "{model}"', config, count=1, flags=re.M)
    assert tomllib.loads(config)["model_providers"]["cb"]["wire_api"] == "responses"
    return f"check_for_update_on_startup = false\n{config}\n[analytics]\nenabled = false\n"


def _readme_block(language: str) -> str:
    section = (ROOT / "README.md").read_text().split("\n## Coding agents\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def run_codex(gateway: Server, workdir: Path, model: str, prompt: str, *options: str) -> str:
    """``codex exec`` through the gateway on ``model``; the agent's last message (``-o``)."""
    _needs(CODEX)
    home = workdir / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(readme_codex_config(gateway, model))
    out = workdir / "last-message.txt"
    env = _offline_env(workdir, CODEX_HOME=str(home), CB_API_KEY=CLIENT_KEY)
    since = len(gateway.logs().splitlines())
    _run([str(CODEX), "exec", "--skip-git-repo-check", *options, "-o", str(out), prompt], workdir, env)
    assert not refused(gateway, since)
    return out.read_text()


def _read_secret(path: Path):
    return Call("Read", {"file_path": str(path)})


def _cat_secret(path: Path):
    def arguments(name: str) -> dict:
        return {"command": ["cat", str(path)]} if name == "shell" else {"cmd": f"cat {path}"}

    return Call(("exec_command", "shell_command", "shell"), arguments)


# -- Claude Code --------------------------------------------------------------------------------


def test_claude_code_finishes_a_tool_loop_on_claude_with_its_thinking_kept(gateway, upstream, secret_file):
    path, secret = secret_file
    upstream.script(_read_secret(path), Say("The file says: {result}"))
    result = run_claude(gateway, path.parent, "claude-sonnet-4-5", "What does secret.txt say?")
    assert secret in result["result"], result
    last = upstream.chat_requests()[-1].json
    assert last["messages"][-2]["content"][0]["type"] == "thinking"  # signed, as Anthropic wants it back
    assert {r.path for r in upstream.chat_requests()} == {"/v1/messages"}


# a Claude model name pinned to another vendor's deployment: Claude Code then sends all it sends
# its own models (adaptive thinking, effort, system turns mid-conversation, context management)
@pytest.mark.parametrize("model", ["gpt-5", "gemini-2.5-pro", "gpt/claude-opus-5-5", "gemini/claude-opus-5-5"])
def test_claude_code_finishes_a_tool_loop_on_another_vendors_model(gateway, upstream, secret_file, model):
    path, secret = secret_file
    upstream.script(_read_secret(path), Say("The file says: {result}"))
    result = run_claude(gateway, path.parent, model, "What does secret.txt say?")
    assert secret in result["result"], result
    assert any(secret in r for r in upstream.tool_results())


# -- Codex --------------------------------------------------------------------------------------


def test_codex_finishes_a_tool_loop_on_an_openai_model(gateway, upstream, secret_file):
    path, secret = secret_file
    upstream.script(_cat_secret(path), Say("The file says: {result}"))
    assert secret in run_codex(gateway, path.parent, "gpt-5", "What does secret.txt say?")
    assert {r.path for r in upstream.chat_requests()} == {"/v1/responses"}  # its own API, passed through


@pytest.mark.parametrize("model", ["gpt-5", "gemini-2.5-pro"])
def test_claude_code_runs_two_tools_in_one_loop_on_another_vendors_model(gateway, upstream, secret_file, model):
    path, secret = secret_file
    upstream.script(
        _read_secret(path), Call("Bash", {"command": f"echo second-{secret}", "description": "Echo"}), Say("{result}")
    )
    result = run_claude(gateway, path.parent, model, "Read secret.txt, then echo it", "Read,Bash")
    assert f"second-{secret}" in result["result"], result
    assert len(upstream.tool_results()) >= 2


# an OpenAI model name pinned to another vendor's deployment: Codex then sends what it sends its own
# models (reasoning effort, verbosity, freeform apply_patch, tool_search)
@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-pro", "claude/gpt-5.5", "gemini/gpt-5.5"])
def test_codex_finishes_a_tool_loop_on_another_vendors_model(gateway, upstream, secret_file, model):
    path, secret = secret_file
    upstream.script(_cat_secret(path), Say("The file says: {result}"))
    answer = run_codex(gateway, path.parent, model, "What does secret.txt say?")
    assert secret in answer
    assert any(secret in r for r in upstream.tool_results())


def test_codex_on_claude_thinks_through_its_tool_loop(gateway, upstream, secret_file):
    path, secret = secret_file
    upstream.script(_cat_secret(path), Say("The file says: {result}"))
    assert secret in run_codex(gateway, path.parent, "claude-sonnet-4-5", "What does secret.txt say?")
    last = upstream.chat_requests()[-1].json
    # Claude's signed thinking went to Codex as an encrypted reasoning item and came back with the call
    assert last["thinking"]["type"] == "enabled"
    assert [block["type"] for block in last["messages"][1]["content"]] == ["thinking", "tool_use"]


@pytest.mark.parametrize("model", ["claude/gpt-5.5", "gemini/gpt-5.5"])
def test_codex_searches_its_deferred_tools_on_another_vendors_model(gateway, upstream, secret_file, model):
    path, _ = secret_file
    upstream.script(Call("tool_search", {"query": "goal"}), Say("Search said: {result}"))
    answer = run_codex(gateway, path.parent, model, "Which tools can manage goals?")
    assert "Search said:" in answer and "tools found" in answer.lower()  # Codex ran it and answered


@pytest.mark.parametrize("model", ["claude/gpt-5.5", "gemini/gpt-5.5"])
def test_codex_applies_a_patch_through_its_freeform_tool_on_another_vendors_model(
    gateway, upstream, secret_file, model
):
    path, secret = secret_file
    patch = f"*** Begin Patch\n*** Add File: note.txt\n+{secret}\n*** End Patch\n"
    upstream.script(Call("apply_patch", patch), Say("Patched: {result}"))
    run_codex(gateway, path.parent, model, "Write the secret into note.txt", "--sandbox", "workspace-write")
    assert (path.parent / "note.txt").read_text().strip() == secret
    assert upstream.tool_results(), "the patch's result went back to the model"


# -- agent SDKs ---------------------------------------------------------------------------------


def _read_file(path: Path):
    return Call("read_file", {"path": str(path)})


@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_the_openai_agents_sdk_finishes_a_tool_loop(gateway, upstream, secret_file, model):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # traces would go to OpenAI
    path, secret = secret_file
    upstream.script(_read_file(path), Say("The file says: {result}"))

    @agents.function_tool
    def read_file(path: str) -> str:
        """Read a text file and return its content."""
        return Path(path).read_text()

    client = AsyncOpenAI(base_url=gateway.openai_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    model_ = agents.OpenAIResponsesModel(model=model, openai_client=client)
    agent = agents.Agent(name="reader", instructions="Answer from files.", tools=[read_file], model=model_)
    result = agents.Runner.run_sync(agent, "What does secret.txt say?")
    assert secret in result.final_output


@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_vercel_ai_sdk_finishes_a_streamed_tool_loop(gateway, upstream, secret_file, model):
    _needs(ROOT / "tests" / "agents" / "node_modules" / "ai" / "package.json")
    path, secret = secret_file
    upstream.script(_read_file(path), Say("The file says: {result}"))
    script = ROOT / "tests" / "agents" / "read_file_loop.mjs"
    command = ["node", str(script), gateway.openai_url + "/v1", CLIENT_KEY, model, "What does secret.txt say?"]
    assert secret in _run(command, path.parent, _offline_env(path.parent)).stdout


# -- what does not cross ------------------------------------------------------------------------


def test_what_a_translation_drops_is_named_in_a_header_and_logged_once_per_client(gateway, upstream):
    body = {
        "model": "gpt-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
    }
    headers = {"anthropic-version": "2023-06-01", "User-Agent": "some-agent/1.0 (linux)"}
    for stream in (False, True, False):
        answer = requests.post(
            gateway.openai_url + "/v1/messages", json=dict(body, stream=stream), headers=headers, timeout=20
        )
        assert answer.status_code == 200 and answer.headers["x-cb-dropped"] == "context_management"
    logged = [line for line in gateway.logs().splitlines() if "client=some-agent feature=context_management" in line]
    assert len(logged) == 1


def test_a_request_to_its_own_vendor_drops_nothing(gateway, upstream):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    body["context_management"] = {"edits": [{"type": "clear_thinking_20251015"}]}
    answer = requests.post(
        gateway.openai_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=20
    )
    assert answer.status_code == 200 and "x-cb-dropped" not in answer.headers
    assert upstream.chat_requests()[-1].json["context_management"] == body["context_management"]


def test_a_prompt_too_long_for_another_vendor_is_said_in_each_clients_words(gateway, upstream):
    too_long = {
        "error": {
            "message": "This model's maximum context length is 400000 tokens. However, your messages resulted in "
            "412345 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    gemini_too_long = {
        "error": {
            "code": 400,
            "message": "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
            "status": "INVALID_ARGUMENT",
        }
    }
    upstream.fail_next(400, too_long)
    upstream.fail_next(400, gemini_too_long)
    claude = requests.post(
        gateway.openai_url + "/v1/messages",
        json={"model": "gpt-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert claude.status_code == 400
    assert claude.json()["error"]["message"].startswith("prompt is too long")  # Claude Code compacts on this
    codex = requests.post(
        gateway.openai_url + "/v1/responses",
        json={"model": "gemini-2.5-pro", "input": "Hi"},
        timeout=20,
    )
    assert codex.status_code == 400 and codex.json()["error"]["code"] == "context_length_exceeded"


def test_a_translated_anthropic_stream_pings_while_the_model_is_silent(gateway, upstream):
    upstream.slow_next(0.0, first_chunk_delay=1.2)
    body = {"model": "gpt-5", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with requests.post(
        gateway.openai_url + "/v1/messages",
        json=body,
        headers={"anthropic-version": "2023-06-01"},
        stream=True,
        timeout=20,
    ) as answer:
        names = [line[7:] for line in answer.iter_lines(decode_unicode=True) if line.startswith("event: ")]
    first_block = names.index("content_block_start")
    assert names[0] == "message_start" and names[1:first_block].count("ping") >= 2
    assert names[-2:] == ["message_delta", "message_stop"]


def test_a_passed_through_responses_stream_that_breaks_ends_with_response_failed(gateway, upstream):
    upstream.slow_next(0.0, fail_after_chunks=4)  # the connection drops after the first words
    body = {"model": "gpt-5", "input": "Hi", "stream": True}
    with requests.post(gateway.openai_url + "/v1/responses", json=body, stream=True, timeout=20) as answer:
        events = [json.loads(line[6:]) for line in answer.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert upstream.chat_requests()[-1].path == "/v1/responses"  # relayed, not translated
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
