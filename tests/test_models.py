"""Today's models, end to end: names in each vendor's style reach that vendor through the real
server (before, and whatever, its listing says), served by the local upstreams."""

from __future__ import annotations

import anthropic
import pytest

from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.exchange import serving
from tests.upstreams.gemini_server import KEY as GEMINI_KEY
from tests.upstreams.gemini_server import GeminiUpstream
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream


@pytest.fixture(scope="module")
def upstreams():
    with OpenAIUpstream() as openai_up, AnthropicUpstream() as anthropic_up, GeminiUpstream() as gemini_up:
        yield openai_up, anthropic_up, gemini_up


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory):
    openai_up, anthropic_up, gemini_up = upstreams
    env = {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": openai_up.base_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": anthropic_up.url,
        "GOOGLE_API_KEY": GEMINI_KEY,
        "GOOGLE_BASE_URL": gemini_up.url,
    }
    with serving(tmp_path_factory.mktemp("models"), **env) as (server, client):
        yield server, client


@pytest.mark.parametrize(
    "model, vendor",
    [
        ("gpt-5", 0),
        ("o3", 0),
        ("claude-opus-4-8", 1),
        ("claude-sonnet-4-5-20250929", 1),
        ("gemini-2.5-pro", 2),
        ("gemini-3-pro-preview", 2),
    ],
)
def test_todays_bare_names_reach_their_vendor(gateway, upstreams, model, vendor):
    _, client = gateway
    before = len(upstreams[vendor].received)
    answer = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    assert answer.headers["x-cb-provider"] == ("openai", "anthropic", "google")[vendor]
    sent = [r for r in upstreams[vendor].received[before:] if r.method == "POST"]
    assert len(sent) == 1
    assert model in sent[0].path or (sent[0].json or {}).get("model") == model


def test_claude_code_default_model_on_the_messages_api(gateway):
    server, _ = gateway
    client = anthropic.Anthropic(base_url=server.openai_url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.model == "claude-opus-4-8" and message.content[0].text
