"""The unified server: two ports, dispatch by listener, health, start-up failures."""

import socket
import subprocess
import sys

import requests

from tests.harness import ROOT, Server, free_port


def test_health_on_both_ports(server):
    for url in (server.graphql_url, server.openai_url):
        response = requests.get(url + "/health", timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["storage"] == {"backend": "memory", "connected": True}
        assert body["providers"]["openai"] is False
        assert "version" in body


def test_openai_route_on_graphql_port_is_404(server):
    response = requests.post(server.graphql_url + "/v1/chat/completions", json={}, timeout=5)
    assert response.status_code == 404


def test_graphql_on_openai_port_is_404_in_openai_envelope(server):
    response = requests.post(server.openai_url + "/graphql", json={"query": "{ version }"}, timeout=5)
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_host_header_does_not_change_the_api(server):
    response = requests.post(
        server.openai_url + "/graphql",
        json={"query": "{ version }"},
        headers={"Host": f"127.0.0.1:{server.graphql_port}", "X-Forwarded-Port": str(server.graphql_port)},
        timeout=5,
    )
    assert response.status_code == 404
    ok = requests.post(server.graphql_url + "/graphql", json={"query": "{ version }"}, timeout=5)
    assert ok.json() == {"data": {"version": ok.json()["data"]["version"]}}


def _start_and_wait(tmp_path, env: dict, timeout: float = 30) -> tuple[int, str]:
    server = Server(tmp_path, env=env)
    server.start(wait=False)
    try:
        code = server.proc.wait(timeout)
    finally:
        server.stop()
    return code, server.logs()


def test_bad_port_stops_start_up_with_one_line(tmp_path):
    code, output = _start_and_wait(tmp_path, {"GRAPHQL_PORT": "abc"})
    assert code != 0
    assert "GRAPHQL_PORT='abc' is invalid" in output
    assert "Traceback" not in output


def test_unknown_storage_backend_is_refused(tmp_path):
    code, output = _start_and_wait(tmp_path, {"STORAGE_BACKEND": "redis"})
    assert code != 0
    assert "STORAGE_BACKEND='redis' is invalid: expected one of memory, nats" in output
    assert "Traceback" not in output


def test_equal_ports_are_refused(tmp_path):
    port = free_port()
    code, output = _start_and_wait(tmp_path, {"GRAPHQL_PORT": port, "OPENAI_PORT": port})
    assert code != 0
    assert "GRAPHQL_PORT and OPENAI_PORT are both" in output


def test_port_in_use_names_the_variable(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = _start_and_wait(tmp_path, {"OPENAI_PORT": port})
    assert code != 0
    assert f"Address already in use: {port} (OPENAI_PORT)" in output
    assert "Traceback" not in output


def test_start_up_names_each_provider_without_its_key(tmp_path, server_factory):
    secret = "sk-test-" + "x" * 24
    server = server_factory(OPENAI_API_KEY=secret)
    logs = server.logs()
    assert "OpenAI provider configured" in logs
    assert "Warning: No Anthropic API key found" in logs
    assert secret not in logs


def test_flask_shell_has_settings_and_services(tmp_path):
    env = {"STORAGE_BACKEND": "memory", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "shell"],
        input="print(type(settings).__name__, services.storage.backend)\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert "Settings memory" in result.stdout
