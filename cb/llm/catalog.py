"""The model catalog: known models, their aliases, context windows, prices, abilities.

Prices are USD per million tokens (input, output, and where the provider has them cached
input and cache writes), as providers publish them. A model an endpoint reported that the
catalog does not know is *unpriced*: it costs 0 unless the configuration prices it. The
catalog answers "what is this model" only; which deployments can serve it, and which
are healthy, is the router's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

CREATED = 1677652288  # the guide's fixed "created" stamp for catalog models


@dataclass(frozen=True)
class ModelInfo:
    """One model as the catalog knows it."""

    id: str
    provider: str  # provider type: openai | anthropic | google | ollama
    context_window: int
    input_price: float  # USD per 1M prompt tokens
    output_price: float  # USD per 1M completion tokens
    supports_streaming: bool = True
    supports_tools: bool = True
    supports_vision: bool = False
    embeddings: bool = False
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # chat, coding, analysis, creative, fast, smart
    cached_input_price: float | None = None  # USD per 1M prompt tokens read from the provider's cache
    cache_write_price: float | None = None  # USD per 1M prompt tokens written to it (Anthropic)
    priced: bool = True  # False: nobody priced it (a discovered model), so it costs 0
    catalogued: bool = True  # False: an endpoint reported it, so its abilities are unknown (it may embed)

    def at_price(self, price: list) -> ModelInfo:
        """This model at a configured price ``[input, output, cached_input, cache_write]`` (the
        last two may be None or missing: the catalog's cached rates then apply)."""
        inp, out, cached, written = (list(price) + [None, None])[:4]
        return replace(
            self,
            input_price=float(inp),
            output_price=float(out),
            priced=True,
            cached_input_price=self.cached_input_price if cached is None else float(cached),
            cache_write_price=self.cache_write_price if written is None else float(written),
        )

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """USD for a request; ``cached_tokens`` and ``cache_write_tokens`` are part of ``prompt_tokens``."""
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        read_price = self.input_price if self.cached_input_price is None else self.cached_input_price
        write_price = self.input_price if self.cache_write_price is None else self.cache_write_price
        total = (
            (prompt_tokens - cached - written) * self.input_price
            + cached * read_price
            + written * write_price
            + completion_tokens * self.output_price
        )
        return total / 1_000_000


def _m(id, provider, ctx, inp, out, **kw) -> ModelInfo:
    return ModelInfo(id=id, provider=provider, context_window=ctx, input_price=inp, output_price=out, **kw)


MODELS: tuple[ModelInfo, ...] = (
    # OpenAI
    _m("gpt-4", "openai", 8192, 30.0, 60.0, tags=("chat", "analysis", "smart")),
    _m("gpt-4-turbo", "openai", 128000, 10.0, 30.0, supports_vision=True, tags=("chat", "coding", "analysis", "smart")),
    _m(
        "gpt-4o",
        "openai",
        128000,
        2.5,
        10.0,
        supports_vision=True,
        cached_input_price=1.25,
        tags=("chat", "coding", "analysis", "creative", "smart"),
    ),
    _m(
        "gpt-4o-mini",
        "openai",
        128000,
        0.15,
        0.6,
        supports_vision=True,
        cached_input_price=0.075,
        tags=("chat", "coding", "fast"),
    ),
    _m("gpt-3.5-turbo", "openai", 16385, 0.5, 1.5, tags=("chat", "fast")),
    _m(
        "o1-mini",
        "openai",
        128000,
        3.0,
        12.0,
        supports_tools=False,
        cached_input_price=1.5,
        tags=("coding", "analysis"),
    ),
    _m(
        "text-embedding-3-small",
        "openai",
        8191,
        0.02,
        0.0,
        embeddings=True,
        supports_streaming=False,
        supports_tools=False,
    ),
    _m(
        "text-embedding-3-large",
        "openai",
        8191,
        0.13,
        0.0,
        embeddings=True,
        supports_streaming=False,
        supports_tools=False,
    ),
    _m(
        "text-embedding-ada-002",
        "openai",
        8191,
        0.1,
        0.0,
        embeddings=True,
        supports_streaming=False,
        supports_tools=False,
    ),
    # Anthropic
    _m(
        "claude-3-opus-20240229",
        "anthropic",
        200000,
        15.0,
        75.0,
        supports_vision=True,
        cached_input_price=1.5,
        cache_write_price=18.75,
        aliases=("claude-3-opus", "claude-3-opus-latest"),
        tags=("chat", "analysis", "creative", "smart"),
    ),
    _m(
        "claude-3-5-sonnet-20241022",
        "anthropic",
        200000,
        3.0,
        15.0,
        supports_vision=True,
        cached_input_price=0.3,
        cache_write_price=3.75,
        aliases=("claude-3-5-sonnet", "claude-3-5-sonnet-latest"),
        tags=("chat", "coding", "analysis", "creative", "smart"),
    ),
    _m(
        "claude-3-sonnet-20240229",
        "anthropic",
        200000,
        3.0,
        15.0,
        supports_vision=True,
        aliases=("claude-3-sonnet",),
        tags=("chat", "analysis"),
    ),
    _m(
        "claude-3-5-haiku-20241022",
        "anthropic",
        200000,
        0.8,
        4.0,
        aliases=("claude-3-5-haiku",),
        cached_input_price=0.08,
        cache_write_price=1.0,
        tags=("chat", "coding", "fast"),
    ),
    _m(
        "claude-3-haiku-20240307",
        "anthropic",
        200000,
        0.25,
        1.25,
        supports_vision=True,
        cached_input_price=0.03,
        cache_write_price=0.3,
        aliases=("claude-3-haiku",),
        tags=("chat", "fast"),
    ),
    # Google
    _m(
        "gemini-1.5-pro",
        "google",
        2097152,
        1.25,
        5.0,
        supports_vision=True,
        cached_input_price=0.3125,
        tags=("chat", "coding", "analysis", "creative", "smart"),
    ),
    _m(
        "gemini-1.5-flash",
        "google",
        1048576,
        0.075,
        0.3,
        supports_vision=True,
        cached_input_price=0.01875,
        tags=("chat", "fast"),
    ),
    _m(
        "gemini-2.0-flash",
        "google",
        1048576,
        0.1,
        0.4,
        supports_vision=True,
        cached_input_price=0.025,
        tags=("chat", "coding", "fast"),
    ),
    _m("text-embedding-004", "google", 2048, 0.0, 0.0, embeddings=True, supports_streaming=False, supports_tools=False),
    # Ollama (local, free); more are discovered from the server's /api/tags
    _m("llama3.2", "ollama", 131072, 0.0, 0.0, tags=("chat", "fast")),
    _m("nomic-embed-text", "ollama", 8192, 0.0, 0.0, embeddings=True, supports_streaming=False, supports_tools=False),
)

#: each vendor's naming of its chat models: a name following it goes to that vendor's deployments
#: while their listing has not succeeded (the provider's own 404 then answers a name it lacks)
VENDOR_NAMING: tuple[tuple[str, re.Pattern], ...] = (
    ("anthropic", re.compile(r"claude-[a-z0-9][a-z0-9.\-]*")),
    ("openai", re.compile(r"(gpt-|chatgpt-)[a-z0-9][a-z0-9.\-]*|o[1-9](-[a-z0-9.\-]+)?")),
    ("google", re.compile(r"gemini-[a-z0-9][a-z0-9.\-]*")),
)
#: parts of a vendor-style name that mark a model that cannot chat (embeddings, speech, images)
NOT_CHAT = re.compile(r"embed|tts|transcribe|whisper|dall-e|image|moderation|realtime|imagen|veo|-audio-only")


def vendor_of(name: str) -> str | None:
    """The provider type whose naming ``name`` follows (``claude-*``: anthropic; ``gpt-*``,
    ``o3``-style and ``chatgpt-*``: openai; ``gemini-*``: google), or None; a name that marks
    a model unable to chat (``gpt-image-1``, ``gemini-embedding-001`` …) follows none."""
    if NOT_CHAT.search(name):
        return None
    for vendor, pattern in VENDOR_NAMING:
        if pattern.fullmatch(name):
            return vendor
    return None


#: virtual models: resolved by the router with a strategy, among configured healthy models
VIRTUAL_MODELS: dict[str, dict] = {
    "auto": {"strategy": None, "tag": "chat", "description": "the server's default strategy"},
    "cb:cost-optimal": {"strategy": "cost_optimized", "tag": "chat", "description": "cheapest capable model"},
    "cb:fastest": {"strategy": "performance_first", "tag": "chat", "description": "lowest measured latency"},
    "cb:smart-chat": {"strategy": "balanced", "tag": "smart", "description": "strong general chat model"},
    "cb:coding": {"strategy": "balanced", "tag": "coding", "description": "models good at code"},
    "cb:analysis": {"strategy": "balanced", "tag": "analysis", "description": "long-context analysis"},
    "cb:creative": {"strategy": "balanced", "tag": "creative", "description": "creative writing"},
}


@dataclass
class Catalog:
    """Lookup of models by id or alias; extensible with discovered models and price overrides."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Catalog:
        catalog = cls()
        for model in MODELS:
            catalog.add(model)
        return catalog

    def add(self, model: ModelInfo) -> None:
        self.models[model.id] = model
        for alias in model.aliases:
            self.aliases[alias] = model.id

    def get(self, name: str) -> ModelInfo | None:
        """The model named ``name`` (id or alias), or None."""
        return self.models.get(name) or self.models.get(self.aliases.get(name, ""))

    def for_provider(self, provider: str) -> list[ModelInfo]:
        """The catalog's own models of ``provider`` (not the ones some endpoint reported)."""
        return [m for m in self.models.values() if m.provider == provider and m.catalogued]

    def override_price(self, model_id: str, price: list) -> None:
        """Price ``model_id`` as configured (:func:`cb.llm.deployments.parse_prices`' list)."""
        model = self.get(model_id)
        if model:
            self.models[model.id] = model.at_price(price)

    def discovered(self, provider: str, model_id: str, context_window: int | None = None) -> ModelInfo:
        """Register (or return) a model an endpoint reported (Ollama's /api/tags, a /v1/models):
        unknown ones are unpriced, with the context length the endpoint reported (else 8192)."""
        known = self.get(model_id)
        if known and (known.priced or not context_window or known.context_window == context_window):
            return known
        model = ModelInfo(
            model_id, provider, context_window or 8192, 0.0, 0.0, tags=("chat",), priced=False, catalogued=False
        )
        self.add(model)
        return model
