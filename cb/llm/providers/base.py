"""The one interface every provider implements, and the HTTP transport they share.

A provider only translates: canonical request -> upstream HTTP call, upstream body or
stream -> canonical response or chunks, upstream error -> :class:`UpstreamError`. It
never sends anything itself, never retries, never knows about other providers; the
router does that through :class:`Transport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cb.llm.errors import InvalidRequest, UpstreamError
from cb.llm.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk, Usage


@dataclass
class Deployment:
    """One endpoint serving models: which protocol, where, with which key."""

    id: str
    provider_type: str  # a key of cb.llm.providers.PROVIDERS
    base_url: str
    api_key: str | None = None
    key_variable: str | None = None  # named in "not configured" errors
    name: str | None = None
    models: list[str] = field(default_factory=list)  # empty: what its endpoint lists, else the catalog's
    weight: float = 1.0
    priority: int = 0
    enabled: bool = True
    prices: dict[str, list[float]] = field(default_factory=dict)  # model -> [input, output] USD per 1M, this endpoint


MAX_PAGES = 100  # pages of a model listing followed at most (a listing that never ends is an error)


@dataclass(frozen=True)
class ListedModel:
    """A model an endpoint says it serves, with its context length and abilities when it reports
    them (None: not said; its name then tells, :func:`cb.llm.catalog.describe`)."""

    id: str
    context_window: int | None = None
    chat: bool | None = None
    embeddings: bool | None = None


@dataclass
class UpstreamCall:
    """An HTTP request to a provider, fully built."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any = None
    stream: bool = False
    data: bytes | None = None  # a body already encoded (a relayed client body), sent instead of ``json``


class Provider:
    """Translate between canonical types and one provider's wire protocol."""

    type: ClassVar[str]
    #: the request fields this provider cannot express; a request setting one gets a 400
    unsupported: ClassVar[frozenset[str]] = frozenset()
    #: a failed model listing keeps the last one (True), or means the endpoint serves nothing now (False)
    keeps_listing_on_failure: ClassVar[bool] = False
    #: the client APIs this provider's upstream speaks itself ("messages", "responses"): requests in
    #: them are relayed as they came (:mod:`cb.llm.passthrough`) through the three ``relay_*`` methods
    relays: ClassVar[frozenset[str]] = frozenset()

    def check(self, request: ChatRequest) -> None:
        """Refuse request fields with no equivalent here, naming the field."""
        from cb.llm.errors import UnsupportedParameter

        for name in request.set_fields():
            if name in self.unsupported:
                raise UnsupportedParameter(self.type, name)

    def chat_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        raise NotImplementedError

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        raise NotImplementedError

    def parse_stream(self, lines: Iterable[bytes], model: str) -> Iterator[StreamChunk]:
        """Turn the upstream's stream, line by line, into canonical chunks."""
        raise NotImplementedError

    def error(self, status: int, body: bytes, headers: dict[str, str]) -> UpstreamError:
        """Map an upstream error response once: client mistakes keep their status."""
        from cb.llm.providers.errors import map_http_error

        return map_http_error(self.type, status, body, headers)

    def relay_call(self, deployment: Deployment, request: Any, model: str) -> UpstreamCall:
        """The client's own request (a :class:`~cb.llm.passthrough.NativeRequest`), to this deployment."""
        raise NotImplementedError

    def relay_usage(self, body: dict) -> Usage | None:
        """The usage of a relayed JSON answer."""
        return None

    def relay_stream(self, lines: Iterable[bytes]) -> Iterator[StreamChunk]:
        """A relayed stream's events as chunks carrying their own bytes (``StreamChunk.raw``) and the usage."""
        raise NotImplementedError

    def stored_call(self, deployment: Deployment, method: str, path: str) -> UpstreamCall | None:
        """``GET`` or ``DELETE`` of what the deployment stored for a relayed request, if it stores any."""
        return None

    def count_tokens_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall | None:
        """The provider's own count of a request's input tokens, if it has an endpoint for it."""
        return None

    def parse_count(self, body: dict) -> int | None:
        return None

    def embeddings_call(self, deployment: Deployment, request: EmbeddingRequest, model: str) -> UpstreamCall:
        raise InvalidRequest(f"The {self.type} provider has no embeddings endpoint", "model")

    def parse_embeddings(self, body: dict, model: str) -> EmbeddingResponse:
        raise NotImplementedError

    def models_call(self, deployment: Deployment) -> UpstreamCall | None:
        """The cheapest authenticated call (listing models), to check that an endpoint answers."""
        return None

    def discover_models(self, deployment: Deployment, transport: Any) -> list[str | ListedModel] | None:
        """Models the endpoint reports (every page of its listing); None if it does not list them."""
        return None
