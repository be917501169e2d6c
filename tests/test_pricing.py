"""Prices from genai-prices' bundled data: equal to its calc_price, by the request's date, with
configuration overriding it, and never fetched from the network."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from genai_prices import Usage as PricedUsage
from genai_prices import calc_price

from cb.llm import pricing
from cb.llm.catalog import Catalog, describe
from cb.llm.types import Usage


def at(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def test_pricing_never_reaches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("genai-prices tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    model = describe("claude-sonnet-4-5-20250929", "anthropic")  # a fresh look-up and rate card
    assert model.priced and model.cost(Usage(1000, 100), at("2026-12-06")) > 0
    assert pricing.SOURCE.from_auto_update is False


def test_the_price_in_force_on_the_requests_day_applies():
    o3 = describe("o3", "openai")  # $10/$40 per 1M until 2025-06-10, then $2/$8
    usage = Usage(1_000_000, 1_000_000)
    for day, expected in (("2025-06-09", 50.0), ("2025-06-10", 10.0)):
        assert o3.cost(usage, at(day)) == pytest.approx(expected)
        when = datetime.fromisoformat(day).replace(tzinfo=UTC)
        priced = calc_price(
            PricedUsage(input_tokens=10**6, output_tokens=10**6),
            "o3",
            provider_id="openai",
            genai_request_timestamp=when,
        )
        assert float(priced.total_price) == pytest.approx(expected)


def test_a_configured_price_overrides_genai_prices():
    catalog = Catalog.default()
    catalog.discovered("anthropic", "claude-sonnet-4-5-20250929")
    catalog.override_price("claude-sonnet-4-5-20250929", [1.0, 2.0, None, 1.5, 3.0])
    model = catalog.get("claude-sonnet-4-5")
    usage = Usage(
        300_000,
        1000,
        prompt_details={"cached_tokens": 100_000, "cache_write_tokens": 20_000, "cache_write_1h_tokens": 5_000},
    )
    # no tier; cache reads keep genai-prices' $0.30; 15k 5-minute writes at $1.5, 5k 1-hour at $3
    expected = (180_000 * 1.0 + 100_000 * 0.3 + 15_000 * 1.5 + 5_000 * 3.0 + 1000 * 2.0) / 1e6
    assert model.cost(usage, at("2026-12-06")) == pytest.approx(expected)


def test_unpriced_and_free_models():
    unknown = describe("claude-lab-preview-1", "anthropic")
    assert (unknown.priced, unknown.cost(Usage(5000, 500), at("2026-12-06"))) == (False, 0.0)
    assert unknown.price_view()["cached_input_price_per_million"] is None
    local = describe("qwen2.5:7b", "ollama")
    assert (local.priced, local.cost(Usage(5000, 500), at("2026-12-06"))) == (True, 0.0)


def test_listed_models_that_cannot_chat_are_known_by_name_or_by_the_listing():
    assert not describe("text-embedding-3-small", "openai").chat
    assert describe("text-embedding-3-small", "openai").embeddings
    assert not describe("gpt-image-1", "openai").chat and not describe("tts-1", "openai").chat
    assert describe("gemini-2.5-flash-image", "google", chat=True).chat  # Gemini's listing said so
    assert describe("gpt-5-mini", "openai").tags == ("chat", "fast", "coding")
