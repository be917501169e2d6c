"""What a request costs: prices from the ``genai-prices`` package's bundled data, or configured.

genai-prices (by Pydantic) keeps the published prices of the providers' models: per 1M
tokens of input, cache reads, cache writes (5-minute and 1-hour), output and reasoning,
long-context tiers (a prompt above a threshold pays the tier's rate for every token), and
the date each price came into force. We read only the data bundled in the installed wheel
(our own :class:`~genai_prices.data_snapshot.DataSnapshot` over ``genai_prices.data``, so
nothing can swap in a downloaded one; its ``UpdatePrices`` fetcher is never started).

Speed: genai-prices' ``calc_price`` decomposes usage through its unit registry in
``Decimal`` on every call. We call it only when a model is first priced, to learn the
rate of each kind of token in each tier (it is linear within a tier), and keep those
rates as floats per model (:class:`RateCard`), so pricing a request is a handful of
multiplications, as it was with the hand-written table.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import Usage as _GenaiUsage
from genai_prices import data as _bundled
from genai_prices import types as _genai_types
from genai_prices.data_snapshot import DataSnapshot

#: the bundled data only: our snapshot, never the package's swappable current one
SOURCE = DataSnapshot(providers=_bundled.providers, from_auto_update=False)

#: our provider type -> the genai-prices provider whose prices apply (Ollama: free, none)
VENDORS = {"openai": "openai", "openai_compatible": "openai", "anthropic": "anthropic", "google": "google"}


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind, in one tier."""

    input: float
    cached_input: float  # a cache read
    cache_write: float  # a 5-minute cache write
    cache_write_1h: float
    output: float
    reasoning: float  # of the output, spent thinking
    per_request: float = 0.0

    def per_million(self) -> dict:
        return {
            "input": self.input * 1e6,
            "cached_input": self.cached_input * 1e6,
            "cache_write": self.cache_write * 1e6,
            "cache_write_1h": self.cache_write_1h * 1e6,
            "output": self.output * 1e6,
        }


@dataclass(frozen=True, slots=True)
class RateCard:
    """The prices in force at one time: base rates, and tiers ``(start, rates)`` that apply to
    every token of a request whose prompt is larger than ``start`` tokens."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()

    def cost_of(self, usage) -> float:
        """USD for a :class:`~cb.llm.types.Usage`: its ``cached_tokens`` and ``cache_write_tokens``
        (of which ``cache_write_1h_tokens``) are within ``prompt_tokens``, ``reasoning_tokens``
        within ``completion_tokens``. Runs for every request: the details are read once, no
        property or helper is called."""
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        rates = self.base
        for start, tier in self.tiers:  # a cliff: above the start, every token at the tier's rates
            if prompt > start:
                rates = tier
        details, out = usage.prompt_details, usage.completion_details
        if not details and not out:  # the common plain answer
            return prompt * rates.input + completion * rates.output + rates.per_request
        get = (details or _NONE).get
        cached = get("cached_tokens") or 0
        cached = cached if cached < prompt else prompt
        written = get("cache_write_tokens") or 0
        written = written if written < prompt - cached else prompt - cached
        hour = get("cache_write_1h_tokens") or 0
        hour = hour if hour < written else written
        reasoning = (out or _NONE).get("reasoning_tokens") or 0
        reasoning = reasoning if reasoning < completion else completion
        return (
            (prompt - cached - written) * rates.input
            + cached * rates.cached_input
            + (written - hour) * rates.cache_write
            + hour * rates.cache_write_1h
            + (completion - reasoning) * rates.output
            + reasoning * rates.reasoning
            + rates.per_request
        )


_NONE: dict = {}


def flat_card(
    inp: float, out: float, cached: float | None = None, write: float | None = None, write_1h: float | None = None
) -> RateCard:
    """A configured price (USD per 1M): cache reads and writes at the input rate unless given,
    1-hour writes at the (5-minute) write rate unless given, reasoning as output."""
    m = 1e-6
    write = inp if write is None else write
    write_1h = write if write_1h is None else write_1h
    rates = Rates(inp * m, (inp if cached is None else cached) * m, write * m, write_1h * m, out * m, out * m)
    return RateCard(rates)


FREE = flat_card(0.0, 0.0)


class ModelPrices:
    """One model's prices over time: the :class:`RateCard` in force at a moment."""

    __slots__ = ("_cards", "_starts", "_model", "source", "only")

    def __init__(self, cards: list[tuple[float, RateCard]], model=None, source: str = "config"):
        self._starts = [start for start, _ in cards]  # epoch seconds, ascending; the first is -inf
        self._cards = [card for _, card in cards]
        self._model = model  # genai-prices' ModelInfo when a price depends on the time of day
        self.source = source  # genai-prices | config | free
        #: the one card of a model whose price never changed (most): no look-up by date per request
        self.only = self._cards[0] if len(self._cards) == 1 and model is None else None

    @classmethod
    def fixed(cls, card: RateCard, source: str = "config") -> ModelPrices:
        return cls([(float("-inf"), card)], source=source)

    def at(self, timestamp: float) -> RateCard:
        """The rates in force at ``timestamp`` (epoch seconds)."""
        if self._model is not None:
            return _card(self._model.get_prices(datetime.fromtimestamp(timestamp, UTC)))
        if len(self._cards) == 1:
            return self._cards[0]
        return self._cards[bisect.bisect_right(self._starts, timestamp) - 1]


def lookup(provider_type: str, model_id: str) -> tuple[ModelPrices, int | None] | None:
    """genai-prices' prices of ``model_id`` at the vendor behind ``provider_type``, and its context
    window; None when it has none (the model is then unpriced unless configured)."""
    vendor = VENDORS.get(provider_type)
    if vendor is None:
        return None
    try:
        _, model = SOURCE.find_provider_model(model_id, None, vendor, None)
    except LookupError:
        return None
    return _prices_of(model), model.context_window


def _prices_of(model) -> ModelPrices:
    if isinstance(model.prices, _genai_types.ModelPrice):
        return ModelPrices.fixed(_card(model.prices), "genai-prices")
    starts: list[tuple[float, RateCard]] = []
    for conditional in model.prices:
        constraint = conditional.constraint
        if constraint is None:
            starts.append((float("-inf"), _card(conditional.prices)))
        elif isinstance(constraint, _genai_types.StartDateConstraint):
            day = datetime(
                constraint.start_date.year, constraint.start_date.month, constraint.start_date.day, tzinfo=UTC
            )
            starts.append((day.timestamp(), _card(conditional.prices)))
        else:  # a time-of-day price: asked per request
            return ModelPrices([(float("-inf"), _card(model.prices[0].prices))], model, "genai-prices")
    if starts and starts[0][0] != float("-inf"):
        starts.insert(0, (float("-inf"), _card(model.prices[0].prices)))  # genai-prices' rule: else the first
    starts.sort(key=lambda s: s[0])
    return ModelPrices(starts, source="genai-prices")


def _card(price) -> RateCard:
    """The rates of a genai-prices ModelPrice, learned from its own calc_price (linear within a tier)."""
    starts = sorted(
        {
            tier.start
            for value in price.__dict__.values()
            if isinstance(value, _genai_types.TieredPrices)
            for tier in value.tiers
        }
    )
    base = _rates(price, 0)
    return RateCard(base, tuple((start, _rates(price, start + 1)) for start in starts))


def _rates(price, prompt: int) -> Rates:
    """Rates with a prompt of ``prompt`` tokens selecting the tier (0: the base)."""
    n = prompt or 1  # within the tier the prompt selects: one token, or one past the tier's start

    def total(**usage: int) -> Decimal:
        return price.calc_price(_GenaiUsage(**usage))["total_price"]

    fee = total()
    inputs = total(input_tokens=n)
    per = Decimal(n)

    def rate(value: Decimal) -> float:
        return float(value / per)

    return Rates(
        input=rate(inputs - fee),
        cached_input=rate(total(input_tokens=n, cache_read_tokens=n) - fee),
        cache_write=rate(total(input_tokens=n, cache_write_tokens=n) - fee),
        cache_write_1h=rate(total(input_tokens=n, cache_write_tokens=n, cache_write_1h_tokens=n) - fee),
        output=rate(total(input_tokens=n, output_tokens=n) - inputs),
        reasoning=rate(total(input_tokens=n, output_tokens=n, output_reasoning_tokens=n) - inputs),
        per_request=float(fee),
    )
