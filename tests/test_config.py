"""Settings, logging set-up and the deployment files agree with each other."""

import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from cb.config import ConfigError, Settings, describe_variables
from cb.logs import parse_filter
from tests.harness import ROOT, free_port, wait_for_port


def test_guide_defaults():
    s = Settings.from_env({}, dotenv=None)
    assert (s.graphql_host, s.graphql_port, s.openai_host, s.openai_port) == ("localhost", 4000, "0.0.0.0", 3000)
    assert s.openai_cors_enabled and s.openai_enable_streaming and not s.openai_api_key_required
    assert (s.rust_log, s.environment, s.storage_backend) == ("info", "development", "memory")
    assert s.nats_url == "nats://localhost:4222"
    assert s.ollama_base_url == "http://localhost:11434"


def test_dotenv_is_loaded_and_real_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nGRAPHQL_PORT=4100\nexport OPENAI_PORT="3100"\nRUST_LOG=debug  # inline\n')
    s = Settings.from_env({"GRAPHQL_PORT": "4200"}, dotenv=env_file)
    assert (s.graphql_port, s.openai_port, s.rust_log) == (4200, 3100, "debug")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"GRAPHQL_PORT": "abc"}, "GRAPHQL_PORT='abc' is invalid: expected a port number"),
        ({"STORAGE_BACKEND": "redis"}, "STORAGE_BACKEND='redis' is invalid: expected one of memory, nats"),
        ({"OPENAI_CORS_ENABLED": "maybe"}, "OPENAI_CORS_ENABLED='maybe' is invalid: expected true or false"),
        ({"RUST_LOG": "loud"}, "RUST_LOG='loud' is invalid"),
        ({"GRAPHQL_PORT": "5000", "OPENAI_PORT": "5000"}, "GRAPHQL_PORT and OPENAI_PORT are both 5000"),
        ({"NATS_URL": "nats://a:4222,b:4222"}, "NATS_URL='nats://a:4222,b:4222' is invalid"),
        ({"NATS_REPLICAS": "9"}, "NATS_REPLICAS='9' is invalid: expected an integer from 1 to 5"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env, dotenv=None)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_nats_url_lists_the_servers_of_a_cluster_and_replicas_default_to_one():
    s = Settings.from_env({"NATS_URL": " nats://n1:4222, nats://n2:4222/ ,nats://n3:4222"}, dotenv=None)
    assert s.nats_url == "nats://n1:4222,nats://n2:4222,nats://n3:4222"
    assert s.nats_replicas == 1
    assert Settings.from_env({"NATS_REPLICAS": "3"}, dotenv=None).nats_replicas == 3


def test_rust_log_per_module_maps_onto_logger_names():
    default, modules = parse_filter("circuit_breaker=info,circuit_breaker::api=debug")
    assert default == logging.INFO
    assert modules == {"circuit_breaker": logging.INFO, "circuit_breaker.api": logging.DEBUG}
    assert parse_filter("warn", "debug")[0] == logging.DEBUG


def test_production_logs_are_json_lines(server_factory):
    server = server_factory(ENVIRONMENT="production")
    lines = [line for line in server.logs().splitlines() if line.startswith("{")]
    assert lines, server.logs()
    entries = [json.loads(line) for line in lines]
    assert any("No Anthropic API key found" in e["message"] for e in entries)
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)


def test_every_variable_is_documented():
    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name, _, _ in describe_variables():
        assert f"\n{name}=" in env_example, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from README"


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _k8s():
    return list(yaml.safe_load_all((ROOT / "deploy/kubernetes.yaml").read_text()))


def test_compose_runs_the_server_with_nats():
    services = _compose()["services"]
    env = dict(item.split("=", 1) for item in services["circuit-breaker"]["environment"])
    assert env["STORAGE_BACKEND"] == "nats"
    assert env["NATS_URL"] == "nats://nats:4222"
    assert set(services["circuit-breaker"]["ports"]) == {"3000:3000", "4000:4000"}
    assert "--jetstream" in services["nats"]["command"]
    assert services["nats"]["volumes"]
    Settings.from_env(env, dotenv=None)  # every value is one the server accepts


def test_cluster_compose_lists_three_routed_jetstream_nodes_with_three_replicas():
    services = yaml.safe_load((ROOT / "deploy/nats-cluster.yml").read_text())["services"]
    env = dict(item.split("=", 1) for item in services["circuit-breaker"]["environment"])
    settings = Settings.from_env(env, dotenv=None)
    nodes = [name for name in services if name.startswith("nats-")]
    assert settings.nats_replicas == 3 and settings.nats_url.split(",") == [f"nats://{n}:4222" for n in nodes]
    for node in nodes:
        command = services[node]["command"]
        routes = command[command.index("--routes") + 1].split(",")
        assert "--jetstream" in command and command[command.index("--name") + 1] == node
        assert sorted(routes) == sorted(f"nats://{other}:6222" for other in nodes if other != node)


def test_kubernetes_probes_ports_and_variables_agree_with_settings():
    deployment = next(d for d in _k8s() if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None}, dotenv=None)
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {settings.openai_port, settings.graphql_port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    # the pod outlives gunicorn's own graceful stop (GRACEFUL_TIMEOUT + its margin)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.graceful_timeout + 5
    secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= secrets
    assert settings.storage_backend == "nats" and settings.nats_url.startswith("nats://")
    service = next(d for d in _k8s() if d["kind"] == "Service" and d["metadata"]["name"] == "circuit-breaker-service")
    assert {p["port"] for p in service["spec"]["ports"]} == ports


def test_dockerfile_matches_the_guide():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11-slim" in text
    assert "EXPOSE 3000 4000" in text and "HEALTHCHECK" in text and "/health" in text
    assert "USER " in text
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]' in text


def test_make_run_serves_health_on_both_ports(tmp_path):
    """`make run`, as the README gives it, serves /health on both ports with memory storage."""
    graphql_port, openai_port = free_port(), free_port()
    env = dict(
        os.environ,
        GRAPHQL_PORT=str(graphql_port),
        OPENAI_PORT=str(openai_port),
        GRAPHQL_HOST="127.0.0.1",
        OPENAI_HOST="127.0.0.1",
        OLLAMA_BASE_URL="",
    )
    env.pop("STORAGE_BACKEND", None)
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(openai_port, 30)
        wait_for_port(graphql_port, 30)
        for port in (graphql_port, openai_port):
            body = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            assert body["status"] == "healthy" and body["storage"]["backend"] == "memory"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert Path(ROOT / ".ci/run").read_text().strip().endswith("make test")


def test_health_is_json_on_both_ports(server):
    for url in (server.graphql_url, server.openai_url):
        assert requests.get(url + "/health", timeout=5).headers["Content-Type"].startswith("application/json")
