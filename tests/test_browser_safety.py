"""Safe by default (issue 19): what a web page, a rebinding name or a configured base URL
cannot make the server do, against real gunicorn, a local upstream and headless Chromium."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading

import openai
import pytest
import requests

from tests.harness import free_port
from tests.upstreams.base import UpstreamServer
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
CONFIGURE = 'mutation { configureLlmProvider(input: {id: "evil", provider_type: "openai", base_url: "%s"}) { id } }'


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def gateway(server_factory, upstream):
    return server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)


def test_get_mutation_is_405_with_allow_post(server):
    response = requests.get(server.graphql_url + "/graphql", params={"query": CONFIGURE % "http://x"}, timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    providers = server.graphql("{ llmProviders { id } }")["data"]["llmProviders"]
    assert "evil" not in [p["id"] for p in providers]


def test_get_query_still_works(server):
    response = requests.get(server.graphql_url + "/graphql", params={"query": "{ version }"}, timeout=5)
    assert response.status_code == 200 and response.json()["data"]["version"]


def test_openai_port_refuses_non_json_bodies_with_415(gateway, upstream):
    response = requests.post(
        gateway.openai_url + "/v1/chat/completions",
        data='{"model": "gpt-4"}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert upstream.chats() == []


def test_the_openai_sdk_is_unaffected(gateway):
    with openai.OpenAI(base_url=gateway.openai_url + "/v1", api_key="x", max_retries=0, timeout=20) as client:
        answer = client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content


def test_cors_allows_only_loopback_origins_without_client_keys(gateway):
    url = gateway.openai_url + "/v1/models"
    assert (
        requests.get(url, headers={"Origin": "http://localhost:5173"}, timeout=5).headers["Access-Control-Allow-Origin"]
        == "http://localhost:5173"
    )
    assert (
        "Access-Control-Allow-Origin"
        not in requests.get(url, headers={"Origin": "https://evil.example"}, timeout=5).headers
    )


def test_cors_is_open_where_client_keys_are_required(server_factory):
    server = server_factory(OPENAI_API_KEY_REQUIRED="true", CB_API_KEYS="client-key-0123456789")
    response = requests.options(
        server.openai_url + "/v1/models",
        timeout=5,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_foreign_host_header_gets_421_in_each_ports_format(server):
    openai_answer = requests.get(server.openai_url + "/v1/models", headers={"Host": "evil.example"}, timeout=5)
    assert openai_answer.status_code == 421 and openai_answer.json()["error"]["code"] == "misdirected_request"
    graphql_answer = requests.post(
        server.graphql_url + "/graphql", json={"query": "{ version }"}, headers={"Host": "evil.example:4000"}, timeout=5
    )
    assert graphql_answer.status_code == 421
    assert graphql_answer.json()["errors"][0]["extensions"]["code"] == "MISDIRECTED_REQUEST"
    for host in ("localhost", "127.0.0.1", "[::1]:3000"):
        assert requests.get(server.openai_url + "/health", headers={"Host": host}, timeout=5).status_code == 200


def test_allowed_hosts_opens_named_hosts(server_factory):
    server = server_factory(ALLOWED_HOSTS="gateway.internal")
    ok = requests.get(server.openai_url + "/health", headers={"Host": "gateway.internal:3000"}, timeout=5)
    assert ok.status_code == 200
    assert requests.get(server.openai_url + "/health", headers={"Host": "x.example"}, timeout=5).status_code == 421


def test_a_warning_at_start_names_the_exposed_port(server_factory):
    server = server_factory(
        OPENAI_API_KEY="sk-some-provider-key-0123",
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",  # it lists its models at start: nothing there
        OPENAI_HOST="0.0.0.0",
        GRAPHQL_HOST="0.0.0.0",
    )
    warnings = [line for line in server.logs().splitlines() if "to close it" in line]
    assert len(warnings) == 2
    assert "OPENAI_API_KEY_REQUIRED=true" in warnings[0] and "GRAPHQL_API_KEY" in warnings[1]
    assert "sk-some-provider-key" not in server.logs()


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://[fe80::1]:80", "http://[::ffff:169.254.1.1]"])
def test_link_local_base_urls_are_refused(server, url):
    result = server.graphql(CONFIGURE % url)
    assert result["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"
    assert "link-local" in result["errors"][0]["message"]


def test_names_resolving_to_link_local_are_refused_and_private_ones_allowed(monkeypatch):
    import socket

    from cb.errors import ValidationError
    from cb.network import check_base_url

    answers = {"metadata.internal": "169.254.169.254", "gpu.lan": "10.0.0.7"}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [(0, 0, 0, "", (answers[host], 0))])
    with pytest.raises(ValidationError, match="link-local"):
        check_base_url("http://metadata.internal/v1")
    assert check_base_url("http://gpu.lan:8000/v1")
    assert check_base_url("http://127.0.0.1:11434")


def test_create_agent_refuses_a_metadata_base_url(server):
    result = server.graphql(
        'mutation { createAgent(input: {name: "a", llm_provider: {provider_type: "openai", model: "gpt-4", '
        'base_url: "http://169.254.169.254/v1"}}) { id } }'
    )
    assert "link-local" in result["errors"][0]["message"]


def test_cb_config_with_a_metadata_base_url_stops_start_up(tmp_path):
    from cb.config import ConfigError, Settings

    config = tmp_path / "cb.toml"
    config.write_text('[[deployments]]\nid = "m"\ntype = "openai"\nbase_url = "http://169.254.169.254/v1"\n')
    with pytest.raises(ConfigError, match="link-local"):
        Settings.from_env({"CB_CONFIG": str(config)}, dotenv=None)


def test_connect_time_check_refuses_a_link_local_peer():
    from cb.config import Settings
    from cb.llm.errors import UpstreamError
    from cb.llm.providers import PROVIDERS
    from cb.llm.providers.base import Deployment, UpstreamCall
    from cb.llm.transport import Transport

    settings = Settings.from_env({"UPSTREAM_CONNECT_TIMEOUT": "0.5"}, dotenv=None)
    deployment = Deployment("d", "openai", "http://169.254.169.254", None)
    call = UpstreamCall("GET", "http://169.254.169.254/", {}, None, False)
    with pytest.raises(UpstreamError):
        Transport(settings).open(deployment, call, PROVIDERS["openai"])


class HtmlErrors(UpstreamServer):
    """An upstream behind a proxy that answers an HTML error page."""

    def handle(self, request, reply):
        reply.start_stream("text/html", 502)
        reply.chunk(b"<html><body>nginx secret internal page</body></html>")
        reply.end_stream()


def test_upstream_html_errors_never_reach_the_client(server_factory):
    with HtmlErrors() as upstream:
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url + "/v1")
        response = requests.post(server.openai_url + "/v1/chat/completions", json=CHAT, timeout=20)
    assert response.status_code == 502
    assert "nginx" not in response.text and "<html" not in response.text


def test_openai_compatible_deployments_work(server, upstream):
    spec = {
        "id": "vllm",
        "provider_type": "openai_compatible",
        "base_url": upstream.base_url,
        "api_key": API_KEY,
        "models": ["llama3.2"],
    }
    result = server.graphql(
        "mutation($in: LlmProviderInput!) { configureLlmProvider(input: $in) { id } }", {"in": spec}
    )
    assert result["data"]["configureLlmProvider"]["id"] == "vllm"
    response = requests.post(
        server.openai_url + "/v1/chat/completions", timeout=20, json={**CHAT, "model": "vllm/llama3.2"}
    )
    assert response.status_code == 200, response.text
    assert upstream.chats()[-1].json["model"] == "llama3.2"


# -- a page from another origin in headless Chromium ---------------------------------------

PAGE = """<!doctype html><html><body><pre id="out">running</pre><script>
const results = {};
const gql = "%(graphql)s", oa = "%(openai)s";
function img(src) { return new Promise(r => { const i = new Image(); i.onload = i.onerror = () => r("sent"); i.src = src; }); }
async function attempt(name, f) { try { results[name] = await f(); } catch (e) { results[name] = "blocked"; } }
(async () => {
  await attempt("get_mutation", () => img(gql + "/graphql?query=" + encodeURIComponent(%(mutation)s)));
  await attempt("text_plain_chat", () => fetch(oa + "/v1/chat/completions", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify(%(chat)s)}).then(() => "sent"));
  await attempt("json_chat", () => fetch(oa + "/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(%(chat)s)}).then(r => r.text()));
  await attempt("read_models", () => fetch(oa + "/v1/models").then(r => r.text()));
  await attempt("graphql_post", () => fetch(gql + "/graphql", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({query: %(mutation)s})}).then(() => "sent"));
  document.getElementById("out").textContent = "done " + JSON.stringify(results);
})();
</script></body></html>"""


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed")
def test_a_page_from_another_origin_is_refused(gateway, upstream, tmp_path):
    import json

    page = PAGE % {
        "graphql": gateway.graphql_url,
        "openai": gateway.openai_url,
        "mutation": json.dumps(CONFIGURE % "http://attacker.example"),
        "chat": json.dumps(CHAT),
    }

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        dom = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--host-resolver-rules=MAP evil.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"http://evil.test:{site.server_port}/",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        ).stdout
    finally:
        site.shutdown()
    assert "done " in dom, dom
    results = json.loads(dom.split("done ", 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    assert results["json_chat"] == "blocked" and results["read_models"] == "blocked"
    assert upstream.chats() == []  # neither the text/plain nor the JSON chat reached the provider
    providers = gateway.graphql("{ llmProviders { id } }")["data"]["llmProviders"]
    assert "evil" not in [p["id"] for p in providers]


def test_a_refused_request_does_not_wait_for_its_body(server):
    import socket

    slow = socket.create_connection(("127.0.0.1", server.openai_port), timeout=5)
    slow.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 500\r\n\r\n{"
    )
    answer = b""
    while chunk := slow.recv(4096):  # closed right after the answer, the body left unread
        answer += chunk
    slow.close()
    assert answer.startswith(b"HTTP/1.1 421")
