"""Provider HTTP through our transport adapter: proxies, private CAs, keep-alive, the link-local guard.

Everything is local: a TLS upstream with a CA made for the test (tests/upstreams/certs.py),
an HTTP proxy that tunnels CONNECT and forwards absolute URLs (tests/upstreams/proxy.py),
and the gateway under gunicorn with the official ``openai`` client where a user would see it.
"""

from __future__ import annotations

import base64

import openai
import pytest

from cb.config import ConfigError, Settings
from cb.llm.errors import UpstreamError, UpstreamTimeout
from cb.llm.providers import PROVIDERS
from cb.llm.providers.base import Deployment
from cb.llm.transport import Transport
from cb.llm.types import ChatRequest, Message
from tests.upstreams.certs import TestCA
from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream
from tests.upstreams.proxy import ProxyServer

OPENAI = PROVIDERS["openai"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_upstream(ca):
    upstream = OpenAIUpstream()
    upstream.tls = ca.server_context()
    with upstream:
        yield upstream


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def proxy():
    with ProxyServer() as server:
        yield server


def transport(**env) -> Transport:
    return Transport(Settings.from_env({"UPSTREAM_CONNECT_TIMEOUT": "2", **env}, dotenv=None))


def chat(t: Transport, base_url: str, stream: bool = False) -> str:
    deployment = Deployment("openai", "openai", base_url, API_KEY)
    call = OPENAI.chat_call(
        deployment, ChatRequest(model="gpt-4", messages=[Message("user", "Hi")], stream=stream), "gpt-4"
    )
    if not stream:
        return t.json(deployment, call, OPENAI)["choices"][0]["message"]["content"]
    response = t.open(deployment, call, OPENAI)
    return "".join(c.content or "" for c in OPENAI.parse_stream(t.lines(response, OPENAI), "gpt-4"))


# -- through the gateway, as a user sees it ----------------------------------------------


def test_an_https_provider_signed_by_a_private_ca_is_trusted_through_requests_ca_bundle(
    server_factory, ca, tls_upstream
):
    server = server_factory(
        OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=tls_upstream.base_url, REQUESTS_CA_BUNDLE=str(ca.ca_path)
    )
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused")
    answer = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == REPLY
    stream = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == REPLY


def test_https_to_a_provider_goes_through_the_proxy_tunnel_from_https_proxy(server_factory, ca, tls_upstream, proxy):
    server = server_factory(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=tls_upstream.base_url,
        REQUESTS_CA_BUNDLE=str(ca.ca_path),
        HTTPS_PROXY=proxy.url,
    )
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused")
    for stream in (False, True, False, True, False):
        answer = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hi"}], stream=stream
        )
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == REPLY
        else:
            assert answer.choices[0].message.content == REPLY
    assert len(tls_upstream.chats()) == 5
    # one tunnel carried them all: streams read to their end give their connection back
    assert proxy.tunnels == [f"localhost:{tls_upstream.port}"]


def test_an_untrusted_provider_certificate_is_a_clear_502_not_a_crash(server_factory, tls_upstream):
    server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=tls_upstream.base_url)
    client = openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code in (502, 503)
    assert "could not reach https://localhost" in caught.value.message
    assert tls_upstream.chats() == []


# -- the transport itself ---------------------------------------------------------------


def test_ssl_cert_file_is_trusted_when_requests_ca_bundle_is_not_set(ca, tls_upstream):
    assert chat(transport(SSL_CERT_FILE=str(ca.ca_path)), tls_upstream.base_url) == REPLY


def test_requests_ca_bundle_wins_over_ssl_cert_file(ca, tls_upstream, tmp_path):
    other = TestCA(tmp_path, "another CA")
    with pytest.raises(UpstreamError, match="could not reach"):
        chat(transport(REQUESTS_CA_BUNDLE=str(other.ca_path), SSL_CERT_FILE=str(ca.ca_path)), tls_upstream.base_url)
    assert (
        chat(transport(REQUESTS_CA_BUNDLE=str(ca.ca_path), SSL_CERT_FILE=str(other.ca_path)), tls_upstream.base_url)
        == REPLY
    )


def test_http_is_forwarded_by_http_proxy_with_its_credentials(upstream):
    with ProxyServer(credentials=("gw", "p@ss")) as proxy:
        t = transport(HTTP_PROXY=proxy.url_with("gw", "p%40ss"))
        assert chat(t, upstream.base_url) == REPLY
        assert chat(t, upstream.base_url, stream=True) == REPLY
    assert proxy.forwarded == [upstream.base_url + "/chat/completions"] * 2
    assert set(proxy.auth) == {"Basic " + base64.b64encode(b"gw:p@ss").decode()}
    assert "Proxy-Authorization" not in upstream.chats()[0].headers


def test_lowercase_proxy_variables_are_read_too(upstream, proxy):
    assert chat(transport(http_proxy=proxy.url), upstream.base_url) == REPLY
    assert proxy.forwarded


def test_no_proxy_exempts_matching_hosts(upstream, proxy):
    for exempt in ("127.0.0.1", "127.0.0.0/8", "*", f"127.0.0.1:{upstream.port}"):
        assert chat(transport(HTTP_PROXY=proxy.url, NO_PROXY=f"example.com, {exempt}"), upstream.base_url) == REPLY
    assert proxy.forwarded == []
    assert chat(transport(HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1:1"), upstream.base_url) == REPLY
    assert len(proxy.forwarded) == 1


def test_proxies_come_from_settings_not_from_the_environment_of_each_call(upstream, monkeypatch):
    t = transport()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a closed port: any lookup would fail the call
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert chat(t, upstream.base_url) == REPLY


def test_connections_are_kept_alive_between_calls(ca, tls_upstream, proxy):
    t = transport(HTTPS_PROXY=proxy.url, REQUESTS_CA_BUNDLE=str(ca.ca_path))
    for _ in range(5):
        assert chat(t, tls_upstream.base_url) == REPLY
    assert len(proxy.tunnels) == 1  # one connection carried all five calls
    assert proxy.connections == 1


def test_a_stream_closed_early_does_not_return_its_connection_half_read(upstream):
    t = transport()
    deployment = Deployment("openai", "openai", upstream.base_url, API_KEY)
    call = OPENAI.chat_call(
        deployment, ChatRequest(model="gpt-4", messages=[Message("user", "Hi")], stream=True), "gpt-4"
    )
    response = t.open(deployment, call, OPENAI)
    lines = t.lines(response, OPENAI)
    next(lines)
    lines.close()  # the client left after the first line
    assert chat(t, upstream.base_url) == REPLY  # a fresh or clean connection, never the rest of that stream


def test_read_timeout_still_applies(upstream):
    upstream.hang_next(3)
    with pytest.raises(UpstreamTimeout):
        chat(transport(UPSTREAM_READ_TIMEOUT="0.3"), upstream.base_url)


def test_a_link_local_target_is_refused_before_the_proxy_is_asked(proxy):
    t = transport(HTTP_PROXY=proxy.url)
    with pytest.raises(UpstreamError, match="could not reach"):
        chat(t, "http://169.254.169.254/v1")
    assert proxy.connections == 0


def test_the_connect_time_guard_checks_the_address_actually_reached(upstream, monkeypatch):
    import cb.llm.adapter

    monkeypatch.setattr(cb.llm.adapter, "forbidden_address", lambda address: address == "127.0.0.1")
    with pytest.raises(UpstreamError, match="could not reach"):
        chat(transport(), upstream.base_url)  # as if 127.0.0.1 were a metadata address
    assert upstream.received == []


@pytest.mark.parametrize(
    "env, named",
    [
        ({"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, "HTTPS_PROXY"),
        ({"http_proxy": "http://"}, "http_proxy"),
        ({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, "REQUESTS_CA_BUNDLE"),
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE"),
    ],
)
def test_bad_proxy_or_ca_settings_stop_start_up_with_one_line(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env, dotenv=None)
