"""The model catalog: what we know of a model beyond its name: provider, context window,
abilities, the tags virtual models choose by, and its prices.

Which models exist comes from the providers' own listings (:mod:`cb.llm.discovery`); what
they cost from genai-prices' bundled data (:mod:`cb.llm.pricing`), or from configuration,
which overrides it. Written here by hand is only what no source knows: the user's guide's
names (``gpt-4``, ``claude-3-opus``), the tags of today's models that virtual models choose
by (:func:`tags_for`), and the virtual models themselves. A model no source prices is
*unpriced*: it is served, costs nothing in the ledger, and is recorded as unpriced (never
as $0 spent). Ollama's models are free unless configured. The catalog answers "what is
this model" only; which deployments serve it, and which are healthy, is the router's business.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from cb.llm.pricing import FREE, ModelPrices, flat_card, lookup

CREATED = 1677652288  # the guide's fixed "created" stamp for catalog models
DEFAULT_CONTEXT = 8192  # a model whose context window no source gives
NAMED_LIMIT = 4096  # vendor-style names described and kept
DATED = re.compile(r"^(?P<name>.+)-(?P<date>20\d{6})$")  # a snapshot id: claude-sonnet-4-5-20250929


@dataclass(frozen=True)
class ModelInfo:
    """One model as the catalog knows it. The ``*_price`` fields are the base rates in force
    now, USD per 1M tokens (for display and for ranking by cost); :meth:`cost` uses ``prices``,
    with tiers and the price history."""

    id: str
    provider: str  # provider type: openai | anthropic | google | ollama | openai_compatible
    context_window: int
    input_price: float = 0.0
    output_price: float = 0.0
    supports_streaming: bool = True
    supports_tools: bool = True
    supports_vision: bool = False
    embeddings: bool = False
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # chat, coding, analysis, creative, fast, smart
    cached_input_price: float | None = None  # USD per 1M prompt tokens read from the provider's cache
    cache_write_price: float | None = None  # USD per 1M prompt tokens written to it (5 minutes)
    priced: bool = True  # False: no source prices it, so it costs 0 and is recorded as unpriced
    catalogued: bool = True  # False: an endpoint or a vendor's naming told us of it, not this table
    chat: bool = True  # False: a listed model that cannot chat (embeddings, speech, images)
    upstream_id: str | None = None  # the name the provider knows it by, when not ``id``
    prices: ModelPrices | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.prices is None:  # a flat price given in the fields
            card = flat_card(self.input_price, self.output_price, self.cached_input_price, self.cache_write_price)
            object.__setattr__(self, "prices", ModelPrices.fixed(card))

    def at_price(self, price: list) -> ModelInfo:
        """This model at a configured price ``[input, output, cached_input, cache_write, cache_write_1h]``
        (USD per 1M; the last three may be None or missing: the model's own cache rates then apply)."""
        inp, out, cached, written, written_1h = (list(price) + [None, None, None])[:5]
        now = self.prices.at(time.time()).base.per_million()
        cached = now["cached_input"] if cached is None and self.priced else cached
        if written is None and self.priced:
            written, written_1h = now["cache_write"], now["cache_write_1h"] if written_1h is None else written_1h
        card = flat_card(float(inp), float(out), cached, written, written_1h)
        return replace(
            self,
            input_price=float(inp),
            output_price=float(out),
            priced=True,
            cached_input_price=None if cached is None else float(cached),
            cache_write_price=None if written is None else float(written),
            prices=ModelPrices.fixed(card),
        )

    def cost(self, usage, timestamp: float) -> float:
        """USD for a request's :class:`~cb.llm.types.Usage` at the price in force at ``timestamp``."""
        return (self.prices.only or self.prices.at(timestamp)).cost_of(usage)

    def price_view(self, now: float | None = None) -> dict:
        """Prices per 1M tokens in force now, as /v1/models shows them (None when unpriced)."""
        card = self.prices.at(time.time() if now is None else now)
        base = card.base.per_million()
        view = {
            "input_price_per_million": _round(base["input"]),
            "output_price_per_million": _round(base["output"]),
            "cached_input_price_per_million": _round(base["cached_input"]),
            "cache_write_price_per_million": _round(base["cache_write"]),
            "cache_write_1h_price_per_million": _round(base["cache_write_1h"]),
            "long_context": None,
        }
        if card.tiers:
            start, rates = card.tiers[0]
            tier = rates.per_million()
            view["long_context"] = {
                "above_prompt_tokens": start,
                "input_price_per_million": _round(tier["input"]),
                "output_price_per_million": _round(tier["output"]),
                "cached_input_price_per_million": _round(tier["cached_input"]),
                "cache_write_price_per_million": _round(tier["cache_write"]),
            }
        if not self.priced:
            view = dict.fromkeys(view) | {"input_price_per_million": 0.0, "output_price_per_million": 0.0}
        return view


def _round(value: float) -> float:
    return round(value, 9)  # 0.19999999999999998 -> 0.2: rates come from Decimal / 1M


#: tags of today's models, by name (virtual models choose by tag); every chat model is "chat"
TAG_RULES: tuple[tuple[re.Pattern, tuple[str, ...]], ...] = (
    (
        re.compile(r"claude-(opus|sonnet)|claude-3-opus|claude-3-[57]-sonnet"),
        ("smart", "coding", "analysis", "creative"),
    ),
    (re.compile(r"haiku|flash|mini|nano|lite"), ("fast",)),
    (
        re.compile(r"^(gpt-5(\.\d)?|gpt-5(\.\d)?-(pro|codex)|gpt-4\.1|o[134](-pro)?)(-\d{4}-\d{2}-\d{2})?$"),
        ("smart", "coding", "analysis"),
    ),
    (re.compile(r"^gpt-5|^gpt-4\.1|^gpt-4o|^o[34]-mini|codex"), ("coding",)),
    (re.compile(r"^gpt-5(\.\d)?(-\d{4}-\d{2}-\d{2})?$|^gpt-4o(-\d{4}-\d{2}-\d{2})?$|^chatgpt"), ("creative",)),
    (re.compile(r"gemini-[\d.]+-pro"), ("smart", "coding", "analysis", "creative")),
    (re.compile(r"^gpt-4(-\d+)?$|^gpt-4-turbo"), ("analysis", "smart")),
)


def tags_for(name: str) -> tuple[str, ...]:
    """The virtual-model tags of a chat model called ``name``."""
    tags = ["chat"]
    for pattern, more in TAG_RULES:
        if pattern.search(name):
            tags += [t for t in more if t not in tags]
    return tuple(tags)


def _m(id, provider, ctx, **kw) -> ModelInfo:
    return ModelInfo(id=id, provider=provider, context_window=ctx, **kw)


#: what no source knows: the guide's names (its /v1/models example lists ``gpt-4`` and
#: ``claude-3-opus`` as they are here) and Ollama's common defaults, served by their vendor's
#: deployments whatever its listing says. Prices: genai-prices'; Ollama's: free.
MODELS: tuple[ModelInfo, ...] = (
    _m("gpt-4", "openai", 8192),
    _m(
        "claude-3-opus",
        "anthropic",
        200000,
        supports_vision=True,
        upstream_id="claude-3-opus-20240229",
        aliases=("claude-3-opus-20240229", "claude-3-opus-latest"),
    ),
    _m("llama3.2", "ollama", 131072, tags=("chat", "fast")),
    _m("nomic-embed-text", "ollama", 8192, embeddings=True, supports_streaming=False, supports_tools=False, tags=()),
)

#: each vendor's naming of its models: a name following it goes to that vendor's deployments
#: while their listing has not succeeded (the provider's own 404 then answers a name it lacks)
VENDOR_NAMING: tuple[tuple[str, re.Pattern], ...] = (
    ("anthropic", re.compile(r"claude-[a-z0-9][a-z0-9.\-]*")),
    (
        "openai",
        re.compile(r"(gpt-|chatgpt-)[a-z0-9][a-z0-9.\-]*|o[1-9](-[a-z0-9.\-]+)?|text-embedding-(3-[a-z]+|ada-002)"),
    ),
    ("google", re.compile(r"gemini-[a-z0-9][a-z0-9.\-]*|text-embedding-00[4-9]")),
)
#: parts of a name that mark a model that cannot chat (embeddings, speech, images, completions only)
NOT_CHAT = re.compile(
    r"embed|tts|transcribe|whisper|dall-e|image|moderation|realtime|imagen|veo|-audio-only|davinci|babbage|"
    r"-instruct|sora|computer-use"
)


def vendor_of(name: str) -> str | None:
    """The provider type whose naming ``name`` follows (``claude-*``: anthropic; ``gpt-*``,
    ``o3``-style, ``chatgpt-*`` and ``text-embedding-3-*``: openai; ``gemini-*``: google), or None.
    A name marking a model that cannot chat (``gpt-image-1``, ``gemini-embedding-001``) still
    follows its vendor: the model is described as unable to chat, and refused for chat."""
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


def describe(
    model_id: str,
    provider: str,
    context_window: int | None = None,
    catalogued: bool = False,
    configured_context: int | None = None,
    **kw,
) -> ModelInfo:
    """A model as the sources tell it: prices from genai-prices (Ollama's free, an unknown one's
    unpriced), its context window from the listing, else genai-prices, else the configuration
    (``configured_context``), else :data:`DEFAULT_CONTEXT`; tags and abilities from its name."""
    found = lookup(provider, kw.get("upstream_id") or model_id)
    if provider == "ollama":
        prices, known_context, priced = ModelPrices.fixed(FREE, "free"), None, True
    elif found is None:
        prices, known_context, priced = ModelPrices.fixed(FREE), None, False
    else:
        (prices, known_context), priced = found, True
    chat = kw.pop("chat", None)
    embeds = kw.pop("embeddings", None)
    cannot_chat = NOT_CHAT.search(model_id) is not None
    embeds = ("embed" in model_id) if embeds is None else embeds
    chat = (not cannot_chat and not embeds) if chat is None else chat
    base = prices.at(time.time()).base.per_million()
    kw.setdefault("tags", tags_for(model_id) if chat else ())
    return ModelInfo(
        id=model_id,
        provider=provider,
        context_window=context_window or known_context or configured_context or DEFAULT_CONTEXT,
        input_price=base["input"] if priced else 0.0,
        output_price=base["output"] if priced else 0.0,
        cached_input_price=base["cached_input"] if priced else None,
        cache_write_price=base["cache_write"] if priced else None,
        priced=priced,
        catalogued=catalogued,
        chat=chat,
        embeddings=embeds,
        supports_streaming=kw.pop("supports_streaming", not embeds),
        supports_tools=kw.pop("supports_tools", chat),
        prices=prices,
        **kw,
    )


@dataclass
class Catalog:
    """Lookup of models by id or alias: the hand-written ones, the ones endpoints listed, and
    (cached per name) the ones named in a vendor's style; prices overridable by configuration."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    #: (provider type, name) -> the model a vendor-style name stands for: priced once, not per request
    named: dict[tuple[str, str], ModelInfo] = field(default_factory=dict)
    #: CB_CONFIG [context_windows]: model id -> tokens, for a model neither its listing nor
    #: genai-prices gives one
    context_windows: dict[str, int] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Catalog:
        catalog = cls()
        for model in MODELS:
            fields = {k: getattr(model, k) for k in ("supports_vision", "aliases", "upstream_id", "embeddings")}
            if model.tags:
                fields["tags"] = model.tags
            if model.embeddings:
                fields |= {"supports_streaming": False, "supports_tools": False}
            catalog.add(describe(model.id, model.provider, model.context_window, catalogued=True, **fields))
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
        self.named = {k: v.at_price(price) if k[1] == model_id else v for k, v in self.named.items()}

    def by_vendor_name(self, provider: str, name: str) -> ModelInfo:
        """The model ``name`` stands for at ``provider`` when only its naming says it exists
        (described once per name, so a request prices it with a dictionary look-up)."""
        key = (provider, name)
        model = self.named.get(key)
        if model is None:
            if len(self.named) >= NAMED_LIMIT:  # names come from clients: bounded
                self.named.clear()
            model = self.named[key] = describe(name, provider, configured_context=self.context_windows.get(name))
        return model

    def discovered(
        self,
        provider: str,
        model_id: str,
        context_window: int | None = None,
        chat: bool | None = None,
        embeddings: bool | None = None,
    ) -> ModelInfo:
        """Register (or return) a model an endpoint listed, with the context length it reported;
        ``chat`` False: it cannot chat (the listing said so)."""
        known = self.models.get(model_id) or self.get(model_id)
        if known:
            if context_window and known.context_window != context_window:
                known = replace(known, context_window=context_window)  # the listing knows best
                self.models[known.id] = known
            return known
        model = describe(
            model_id,
            provider,
            context_window,
            configured_context=self.context_windows.get(model_id),
            chat=chat,
            embeddings=embeddings,
        )
        self.add(model)
        dated = DATED.match(model_id)
        if dated:  # Anthropic lists claude-3-haiku-20240307 and answers claude-3-haiku(-latest): the newest
            for alias in (dated["name"], dated["name"] + "-latest"):
                current = self.aliases.get(alias, "")
                if alias not in self.models and model_id[-8:] > current[-8:]:
                    self.aliases[alias] = model_id
        return model
