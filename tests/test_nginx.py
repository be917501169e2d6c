"""Behind Debian's nginx with deploy/nginx.conf: streams unbuffered, subscriptions upgraded,
the client address taken from X-Forwarded-For only from a trusted proxy."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests

from cb.proxies import TrustedProxies
from tests.harness import ROOT, free_port, wait_for_port
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream
from tests.ws_client import WsClient

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROXY_ADDRESS = "127.0.0.2"  # nginx connects from here; the test client from 127.0.0.1


def _nginx_conf(workdir, openai_port: int, graphql_port: int, listen_openai: int, listen_graphql: int) -> str:
    """deploy/nginx.conf with test ports, files in ``workdir`` and a distinct source address."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    swaps = {
        "server 127.0.0.1:3000;": f"server 127.0.0.1:{openai_port};",
        "server 127.0.0.1:4000;": f"server 127.0.0.1:{graphql_port};",
        "listen 8000;": f"listen 127.0.0.1:{listen_openai};",
        "listen 8400;": f"listen 127.0.0.1:{listen_graphql};",
        "pid /run/nginx-circuit-breaker.pid;": f"pid {workdir}/nginx.pid;",
        "/var/log/nginx/": f"{workdir}/",
        "worker_processes auto;": "worker_processes 1;" + (" user root;" if os.geteuid() == 0 else ""),
        "http {\n": "http {\n"
        + "".join(
            f"    {kind}_temp_path {workdir}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    proxy_bind {PROXY_ADDRESS};\n",
    }
    for old, new in swaps.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def proxied(server_factory, tmp_path):
    """A server (trusting only the proxy's address), a slow-capable upstream and nginx in front."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (make test installs it)")
    with OpenAIUpstream() as upstream:
        server = server_factory(
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=upstream.base_url,
            TRUSTED_PROXIES=PROXY_ADDRESS,
            ENVIRONMENT="production",
        )
        listen_openai, listen_graphql = free_port(), free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(_nginx_conf(tmp_path, server.openai_port, server.graphql_port, listen_openai, listen_graphql))
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(listen_openai)
            wait_for_port(listen_graphql)
            yield SimpleNamespace(
                server=server,
                upstream=upstream,
                openai_url=f"http://127.0.0.1:{listen_openai}",
                graphql_url=f"http://127.0.0.1:{listen_graphql}",
                graphql_port=listen_graphql,
            )
        finally:
            nginx.terminate()
            nginx.wait(10)


def test_stream_chunks_pass_nginx_one_by_one(proxied):
    proxied.upstream.slow_next(0.25)
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    arrivals = []
    with requests.post(proxied.openai_url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        for line in response.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line))
    assert arrivals[-1][1] == b"data: [DONE]"
    gaps = [later[0] - earlier[0] for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # the upstream paces its chunks 0.25 s apart; buffered, they would arrive together at the end
    assert sum(1 for gap in gaps if gap > 0.1) >= len(gaps) // 2, gaps


def test_subscription_works_through_nginx(proxied):
    server = proxied.server
    token = server.graphql('mutation { createToken(input: {workflow_id: "document_review"}) { id } }')
    token_id = token["data"]["createToken"]["id"]
    client = WsClient(SimpleNamespace(graphql_port=proxied.graphql_port))
    try:
        assert client.init()["type"] == "connection_ack"
        client.subscribe("1", "subscription($t: ID!) { tokenUpdates(token_id: $t) { place } }", {"t": token_id})
        client.wait_ready(via=server)  # a probe event made the round trip: the subscription is live
        server.graphql(
            'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }',
            {"t": token_id},
        )
        fired = client.result("1", timeout=10)
        assert fired["data"]["tokenUpdates"]["place"] == "pending_review"
    finally:
        client.close()


def _client_logged(server, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in server.logs().splitlines():
            if line.startswith("{") and f'"request_id": "{request_id}"' in line:
                entry = json.loads(line)
                if entry["logger"] == "circuit_breaker.access":
                    return entry["client"]
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


def _get_from(address: str, url: str, headers: dict) -> int:
    """GET ``url`` from a chosen local source address."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5, source_address=(address, 0))
    try:
        connection.request("GET", parts.path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_client_address_comes_from_x_forwarded_for_only_via_a_trusted_proxy(proxied):
    client = "127.0.0.3"  # neither the proxy (127.0.0.2) nor anything trusted
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    assert _get_from(client, proxied.openai_url + "/health/live", {**spoof, "X-Request-ID": "via-nginx"}) == 200
    assert _get_from(client, proxied.server.openai_url + "/health/live", {**spoof, "X-Request-ID": "direct"}) == 200
    # through nginx the server's peer is 127.0.0.2: it learns 127.0.0.3 only from the header nginx
    # appended to, and ignores what the client itself claimed to the left of it
    assert _client_logged(proxied.server, "via-nginx") == client
    # straight from an untrusted peer the header is not believed at all
    assert _client_logged(proxied.server, "direct") == client


def test_nginx_keeps_the_clients_request_id(proxied):
    answer = requests.get(proxied.openai_url + "/health", headers={"X-Request-ID": "kept-1"}, timeout=5)
    assert answer.headers["X-Request-ID"] == "kept-1"
    made_up = requests.get(proxied.openai_url + "/health", timeout=5).headers["X-Request-ID"]
    assert len(made_up) == 32  # nginx's $request_id, accepted by the server


# -- TrustedProxies itself -------------------------------------------------------------------


def test_forwarded_for_is_read_from_the_right_skipping_trusted_hops():
    proxies = TrustedProxies(("10.0.0.0/8", "127.0.0.1"))
    assert proxies.client("10.1.2.3", "198.51.100.7, 203.0.113.9, 10.9.9.9") == "203.0.113.9"
    assert proxies.client("127.0.0.1", "2001:db8::1") == "2001:db8::1"
    assert proxies.client("192.0.2.1", "203.0.113.9") == "192.0.2.1"  # untrusted peer: header ignored
    assert proxies.client("10.1.2.3", "not-an-address") == "10.1.2.3"
    assert proxies.client("10.1.2.3", None) == "10.1.2.3"


def test_a_bad_trusted_proxies_entry_stops_start_up():
    from cb.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"}, dotenv=None)
