"""The operators' command line, run as operators run it: the real ``flask`` executable.

One gunicorn server on a real nats-server, with a local OpenAI upstream, shares its
storage with every ``flask cb …`` run here; assertions are on what the operator sees
(stdout, stderr, the exit status) and on what the server then does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.harness import ROOT, Server, free_port
from tests.security_helpers import client
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

FLASK = str(Path(sys.executable).parent / "flask")
LINKED = ("app.py", "wsgi.py", "cb", "blueprints", "schema", "commands", ".flaskenv")
CREATE_TOKEN = """mutation($data: JSON) {
  createToken(input: { workflow_id: "document_review", data: $data }) { id }
}"""
FIRE = """mutation($token: ID!, $transition: ID!, $data: JSON) {
  fireTransition(input: { token_id: $token, transition_id: $transition, data: $data }) { place }
}"""
REPORT = """{ costAnalytics { total_cost total_requests total_tokens prompt_tokens completion_tokens
  daily_usage provider_breakdown model_breakdown } }"""


def project_dir(base: Path) -> Path:
    """A directory laid out like the project (with .flaskenv) and no .env of the developer's."""
    run = base / "project"
    run.mkdir(exist_ok=True)
    for name in LINKED:
        if not (run / name).exists():
            (run / name).symlink_to(ROOT / name)
    return run


class Operator:
    """Runs ``flask …`` in a project directory with a given environment."""

    def __init__(self, cwd: Path, env: dict):
        self.cwd = cwd
        self.env = env

    def run(self, *args: str, stdin: str | None = None, **env) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL", "_KEYS"))}
        full.update(self.env, **env)
        full.pop("FLASK_APP", None)  # found through .flaskenv, as an operator's would be
        return subprocess.run(
            [FLASK, *args], cwd=self.cwd, env=full, input=stdin, capture_output=True, text=True, timeout=60
        )

    def json(self, *args: str, **env):
        done = self.run(*args, "--json", **env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ")
    for word in words:
        assert word in line
    return line


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, nats_server, upstream):
    server = Server(
        tmp_path_factory.mktemp("cli-server"),
        backend="nats",
        env={
            "NATS_URL": nats_server.url,
            "NATS_PREFIX": Server.fresh_namespace(),
            "OPENAI_API_KEY_REQUIRED": "true",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cli(server, tmp_path_factory) -> Operator:
    """The operator's shell on the server's machine: the same settings as the server."""
    return Operator(project_dir(tmp_path_factory.mktemp("cli")), dict(server.env))


def refused(server, key: str) -> bool:
    try:
        client(server, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError:
        return True
    return False


# -- keys ---------------------------------------------------------------------------------


def test_key_created_on_the_command_line_authenticates_until_revoked(server, cli):
    created = cli.run("cb", "keys", "create", "ci-pipeline", "--rpm", "100", "--models", "gpt-4o-mini")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cb-") and "\n" not in key  # stdout is the key alone: KEY=$(flask cb keys create …)
    assert "shown only this once" in created.stderr

    reply = client(server, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content

    listed = cli.run("cb", "keys", "list")
    assert "ci-pipeline" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout and key[:12] not in listed.stdout

    revoked = cli.run("cb", "keys", "revoke", "ci-pipeline")
    assert revoked.returncode == 0, revoked.stderr
    assert "Revoked API key" in revoked.stdout
    deadline = time.monotonic() + 10
    while not refused(server, key):
        assert time.monotonic() < deadline, "the server still accepts a revoked key"
        time.sleep(0.2)
    assert "revoked" in cli.run("cb", "keys", "list").stdout


def test_keys_list_json_never_holds_a_secret(cli):
    key = cli.run("cb", "keys", "create", "json-check", "--tpm", "5000", "--expires-in", "30").stdout.strip()
    records = cli.json("cb", "keys", "list")
    mine = next(r for r in records if r["name"] == "json-check")
    assert mine["tpm_limit"] == 5000 and mine["expires_at"] and mine["revoked"] is False
    assert key not in json.dumps(records) and "key_hash" not in mine


def test_key_created_by_graphql_is_revoked_by_id_on_the_command_line(server, cli):
    created = server.graphql('mutation { createApiKey(input: {name: "from-graphql"}) { key api_key { id } } }')
    data = created["data"]["createApiKey"]
    assert cli.run("cb", "keys", "revoke", data["api_key"]["id"]).returncode == 0
    deadline = time.monotonic() + 10
    while not refused(server, data["key"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_revoking_an_unknown_or_ambiguous_name_fails_in_one_line(cli):
    assert_one_line_error(cli.run("cb", "keys", "revoke", "no-such-key"), "no-such-key")
    cli.run("cb", "keys", "create", "twin")
    cli.run("cb", "keys", "create", "twin")
    assert_one_line_error(cli.run("cb", "keys", "revoke", "twin"), "2 keys are named 'twin'", "by its id")


def test_bad_option_is_a_usage_error(cli):
    done = cli.run("cb", "keys", "create", "x", "--rpm", "0")
    assert done.returncode == 2 and "--rpm" in done.stderr and "Traceback" not in done.stderr


# -- workflows and tokens -----------------------------------------------------------------


def test_workflows_show_counts_the_tokens_on_each_place(server, cli):
    before = cli.json("cb", "workflows", "show", "document_review")["token_counts"]
    ids = [server.graphql(CREATE_TOKEN)["data"]["createToken"]["id"] for _ in range(3)]
    server.graphql(FIRE, {"token": ids[0], "transition": "submit"})

    counts = cli.json("cb", "workflows", "show", "document_review")["token_counts"]
    assert counts["draft"] == before["draft"] + 2
    assert counts["pending_review"] == before["pending_review"] + 1
    assert set(counts) == {"draft", "pending_review", "reviewed", "approved", "rejected"}

    text = cli.run("cb", "workflows", "show", "document_review").stdout
    assert "Document Review Process" in text and "submit" in text and "draft -> pending_review" in text
    assert any(line.split() == ["pending_review", str(counts["pending_review"])] for line in text.splitlines())
    listed = cli.run("cb", "workflows", "list").stdout
    assert "document_review" in listed and "software_deployment" in listed


def test_tokens_show_gives_place_data_and_history(server, cli):
    token = server.graphql(CREATE_TOKEN, {"data": {"title": "Q3 report"}})["data"]["createToken"]["id"]
    server.graphql(FIRE, {"token": token, "transition": "submit", "data": {"reviewer": "ana"}})

    shown = cli.json("cb", "tokens", "show", token)
    assert shown["place"] == "pending_review"
    assert shown["data"] == {"title": "Q3 report", "reviewer": "ana"}
    assert [(h["transition"], h["from_place"], h["to_place"]) for h in shown["history"]] == [
        ("submit", "draft", "pending_review")
    ]
    assert shown["available_transitions"] == ["review"]

    text = cli.run("cb", "tokens", "show", token).stdout
    assert "Place: pending_review" in text and "draft -> pending_review" in text and "Can fire: review" in text


def test_unknown_token_and_workflow_fail_in_one_line(cli):
    assert assert_one_line_error(cli.run("cb", "tokens", "show", "nope")) == "Error: token 'nope' not found"
    assert_one_line_error(cli.run("cb", "workflows", "show", "nope"), "workflow 'nope' not found")


# -- usage -------------------------------------------------------------------------------


def test_usage_summary_gives_the_figures_of_cost_analytics(server, cli):
    key = cli.run("cb", "keys", "create", "spender").stdout.strip()
    for _ in range(2):
        client(server, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    report = server.graphql(REPORT)["data"]["costAnalytics"]
    summary = cli.json("cb", "usage", "summary")
    for field in (
        "total_cost",
        "total_requests",
        "total_tokens",
        "prompt_tokens",
        "completion_tokens",
        "daily_usage",
        "provider_breakdown",
        "model_breakdown",
    ):
        assert summary[field] == report[field], field
    assert summary["total_requests"] >= 2 and summary["model_breakdown"]["gpt-4o-mini"]["requests"] >= 2

    text = cli.run("cb", "usage", "summary").stdout
    assert f"{summary['total_requests']} request(s)" in text and "gpt-4o-mini" in text and "openai" in text

    client(server, key).chat.completions.create(model="openai/gpt-lab-1", messages=[{"role": "user", "content": "hi"}])
    text = cli.run("cb", "usage", "summary").stdout  # genai-prices knows no gpt-lab-1
    assert "Unpriced: 1 request(s) of models with no known price" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("gpt-lab-1"))
    assert row[1:] == ["1", row[2], "unpriced", "1"]
    future = cli.json("cb", "usage", "summary", "--since", "2999-01-01")
    assert future["total_requests"] == 0


def test_usage_summary_refuses_a_bad_date_naming_the_option(cli):
    assert_one_line_error(cli.run("cb", "usage", "summary", "--since", "yesterday"), "--since", "yesterday")


# -- storage -----------------------------------------------------------------------------


def test_storage_verify_reports_layout_and_counts(cli):
    report = cli.json("cb", "storage", "verify")
    assert report["ok"] and report["layout"]["tokens"] == {"stored": 2, "expected": 2}
    assert report["stores"]["workflows"]["messages"] >= 2 and report["stores"]["workflows"]["replicas"] == 1
    text = cli.run("cb", "storage", "verify").stdout
    assert "tokens layout: v2" in text and "KV_" in text


def test_storage_migrate_brings_an_old_layout_up_to_date_through_the_shell(cli):
    script = 'storage.put("meta", "tokens_layout", {"version": 1})\n'
    assert cli.run("shell", stdin=script).returncode == 0
    assert_one_line_error(cli.run("cb", "storage", "verify"), "tokens layout is v1", "flask cb storage migrate")

    migrated = cli.run("cb", "storage", "migrate")
    assert migrated.returncode == 0 and "Indexed" in migrated.stdout
    assert cli.run("cb", "storage", "verify").returncode == 0
    assert cli.run("cb", "storage", "migrate").returncode == 0  # idempotent


# -- check -------------------------------------------------------------------------------


def test_check_passes_with_nats_the_provider_and_a_running_server(server, cli):
    done = cli.run("cb", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    storage = next(line for line in lines if " storage " in line)
    assert storage.startswith("ok") and "NATS 2." in storage and "JetStream enabled" in storage
    assert any(line.startswith("ok") and "bucket tokens" in line and "1 replica" in line for line in lines)
    openai_line = next(line for line in lines if "provider openai" in line)
    assert openai_line.startswith("ok") and "reachable" in openai_line and "model(s) listed" in openai_line
    ports = [line for line in lines if " port " in line]
    assert len(ports) == 2 and all(line.startswith("ok") and "served by Circuit Breaker" in line for line in ports)

    report = cli.json("cb", "check")
    assert report["ok"] and {c["status"] for c in report["checks"]} <= {"ok", "skip", "warn"}


def test_check_fails_naming_nats_when_it_is_unreachable(cli):
    done = cli.run("cb", "check", NATS_URL=f"nats://127.0.0.1:{free_port()}")
    assert_one_line_error(done, "check(s) failed", "storage")
    storage = next(line for line in done.stdout.splitlines() if " storage " in line)
    assert storage.startswith("fail") and "NATS" in storage


def test_check_fails_when_a_provider_refuses_the_key(cli):
    done = cli.run("cb", "check", OPENAI_API_KEY="sk-wrong-key-0000000000")
    assert_one_line_error(done, "provider openai")
    assert "sk-wrong-key" not in done.stdout + done.stderr


def test_check_fails_when_a_port_is_taken_by_something_else(cli, tmp_path):
    with OpenAIUpstream() as other:  # an HTTP server that is not a Circuit Breaker
        port = other.url.rsplit(":", 1)[1]
        done = cli.run("cb", "check", GRAPHQL_PORT=port)
    assert_one_line_error(done, f"port {port}")


def test_check_reports_bad_settings_in_one_line(cli):
    done = cli.run("cb", "check", GRAPHQL_PORT="four")
    assert_one_line_error(done, "settings")
    assert "GRAPHQL_PORT='four'" in done.stdout


# -- memory storage, help, shell -------------------------------------------------------


def test_memory_storage_commands_say_where_the_state_is(cli):
    for args in (("keys", "list"), ("workflows", "list"), ("usage", "summary"), ("storage", "verify")):
        line = assert_one_line_error(cli.run("cb", *args, STORAGE_BACKEND="memory"))
        assert "inside the server process" in line and "STORAGE_BACKEND=nats" in line and "GraphQL" in line


def test_help_needs_neither_settings_nor_storage(cli):
    done = cli.run("cb", "--help", GRAPHQL_PORT="bad", NATS_URL="nats://127.0.0.1:1")
    assert done.returncode == 0
    for command in ("check", "keys", "workflows", "tokens", "usage", "storage"):
        assert command in done.stdout
    assert "--expires-in" in cli.run("cb", "keys", "create", "--help").stdout


def test_shell_has_the_services_and_starts_no_background_jobs(cli):
    script = (
        "\n".join(
            [
                "print('workflows:', sorted(w.id for w in workflows.list_workflows()))",
                "print('runner:', services.agents.runner._sweeper is None, 'discovery:', all(d._greenlet is None for d in services.discovery))",
                "print('missing:', [n for n in ('app', 'settings', 'gateway', 'router', 'ledger', 'storage') if n not in globals()])",
                "print('backend:', storage.backend, app.name)",
                "print('health:', app.test_client().get('/health').json['storage'])",
            ]
        )
        + "\n"
    )
    done = cli.run("shell", stdin=script)
    assert done.returncode == 0, done.stderr
    assert "workflows: ['document_review', 'software_deployment']" in done.stdout
    assert "runner: True discovery: True" in done.stdout
    assert "missing: []" in done.stdout and "backend: nats circuit_breaker.graphql" in done.stdout
    assert "health: {'backend': 'nats', 'connected': True}" in done.stdout
    banner = done.stderr
    for name in ("services", "settings", "workflows", "gateway", "storage", "router", "ledger"):
        assert name in banner
    assert "not running" in banner and "services.start()" in banner


@pytest.mark.parametrize(
    ("load", "expected"), [("true", "['document_review', 'software_deployment']"), ("false", "[]")]
)
def test_shell_on_memory_storage_has_the_example_workflows_a_server_starts_with(cli, load, expected):
    script = "print('workflows:', sorted(w.id for w in workflows.list_workflows()))\n"
    done = cli.run("shell", stdin=script, STORAGE_BACKEND="memory", CB_LOAD_DEFAULT_WORKFLOWS=load)
    assert done.returncode == 0, done.stderr
    assert f"workflows: {expected}" in done.stdout


def test_flask_reads_the_dotenv_file_of_the_project_directory(tmp_path):
    project = project_dir(tmp_path)
    graphql, openai_port = free_port(), free_port()
    (project / ".env").write_text(f"GRAPHQL_PORT={graphql}\nOPENAI_PORT={openai_port}\nOLLAMA_BASE_URL=\n")
    report = Operator(project, {}).json("cb", "check")
    assert any(c["name"] == f"port {graphql} (GRAPHQL_PORT)" for c in report["checks"])
    assert next(c for c in report["checks"] if c["name"] == "provider ollama")["status"] == "skip"


def test_shell_fails_in_one_line_when_nats_is_away(cli):
    done = cli.run("shell", stdin="print(1)\n", NATS_URL=f"nats://127.0.0.1:{free_port()}")
    assert_one_line_error(done, "NATS")


def test_the_cli_app_serves_no_requests_by_mistake(cli):
    port = free_port()
    proc = subprocess.Popen(
        [FLASK, "run", "--port", str(port)],
        cwd=cli.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **cli.env},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 503 and "gunicorn" in response.json()["error"]
    finally:
        proc.terminate()
        proc.wait(10)
