"""Canonical chat types: what every provider adapter speaks.

Requests are parsed into these at the edge (OpenAI chat completions in :mod:`cb.llm.wire`,
Anthropic Messages in :mod:`cb.llm.messages_api`, OpenAI Responses in
:mod:`cb.llm.responses_api`), each provider translates them to its wire format and back,
and responses are rendered back to the client's API at the edge again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ContentPart:
    """One part of a message: text, or an image given by URL or data: URL."""

    type: str  # "text" | "image_url"
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None


@dataclass
class ToolCall:
    """A function call the assistant asked for; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    #: Anthropic's thinking / redacted_thinking blocks of this assistant turn, exactly as it sent
    #: them: they go back only to Anthropic, which wants them in a tool loop
    reasoning: list[dict] = field(default_factory=list)

    def text(self) -> str:
        """The message's text, image parts left out."""
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


@dataclass
class Tool:
    """A function the model may call (OpenAI's ``tools[].function``)."""

    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class ClientTool:
    """How the client knows a tool whose canonical name was made for the target (see
    :mod:`cb.llm.tools`): its own name, its Responses ``namespace``, and its kind (``custom``:
    a freeform tool, called with one string)."""

    name: str
    namespace: str | None = None
    kind: str = "function"  # "function" | "custom" | "tool_search" (Codex's, run by Codex)


@dataclass
class ChatRequest:
    """A chat completion request, provider-neutral."""

    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # Anthropic, Gemini and Ollama have it; OpenAI does not
    max_tokens: int | None = None
    stop: list[str] | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict | None = None  # "auto" | "none" | "required" | {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None  # {"type": "json_object"} | {"type": "json_schema", "json_schema": {...}}
    logprobs: bool | None = None
    top_logprobs: int | None = None
    routing: dict = field(default_factory=dict)  # the body's ``circuit_breaker`` object
    #: the client's own Anthropic Messages body: Anthropic deployments send it upstream as it is
    #: (cache_control, thinking, ... kept) instead of rebuilding it from the fields above
    anthropic_body: dict | None = None
    #: how much to think: "minimal" | "low" | "medium" | "high" (or a token budget the client named)
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    cache_key: str | None = None  # OpenAI's prompt_cache_key: which requests share a prompt prefix
    server_tools: list[str] = field(default_factory=list)  # vendor-run tools asked for: "web_search"
    server_tools_required: bool = False  # the request cannot be answered without them (forced, or all it offers)
    #: canonical tool name -> the tool as the client knows it, where the two differ
    client_tools: dict[str, ClientTool] = field(default_factory=dict)
    #: what could not cross to the target (fields, blocks, tools), named in x-cb-dropped
    dropped: list[str] = field(default_factory=list)

    def drop(self, feature: str) -> None:
        """Note that ``feature`` did not reach the upstream."""
        if feature not in self.dropped:
            self.dropped.append(feature)

    def set_fields(self) -> list[str]:
        """Names of the optional fields the client actually set (for 'unsupported' checks)."""
        skip = {
            "model",
            "messages",
            "stream",
            "include_usage",
            "routing",
            "anthropic_body",
            "server_tools",
            "server_tools_required",
            "client_tools",
            "dropped",
        }
        return [k for k, v in self.__dict__.items() if k not in skip and v is not None]


@dataclass
class Usage:
    """Token counts. The details are OpenAI's ``prompt_tokens_details`` / ``completion_tokens_details``
    (``cached_tokens``, ``audio_tokens``, ``reasoning_tokens`` …), passed through to the client;
    ``cache_write_tokens`` (Anthropic's cache creation, 5-minute and 1-hour together) is ours, counted
    within ``prompt_tokens``, and ``cache_write_1h_tokens`` its 1-hour part (priced higher)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    prompt_details: dict | None = None
    completion_details: dict | None = None

    @property
    def cached_tokens(self) -> int:
        return int((self.prompt_details or {}).get("cached_tokens") or 0)

    @property
    def cache_write_tokens(self) -> int:
        return int((self.prompt_details or {}).get("cache_write_tokens") or 0)

    @property
    def cache_write_1h_tokens(self) -> int:
        """The part of :attr:`cache_write_tokens` written for an hour (Anthropic's ``ttl: "1h"``)."""
        return int((self.prompt_details or {}).get("cache_write_1h_tokens") or 0)

    @property
    def reasoning_tokens(self) -> int:
        """Of ``completion_tokens``, the ones spent thinking (already within the output count)."""
        return int((self.completion_details or {}).get("reasoning_tokens") or 0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    message: Message
    finish_reason: str | None  # "stop" | "length" | "tool_calls" | "content_filter"
    logprobs: Any = None
    stop_sequence: str | None = None  # which of the request's stop sequences ended it, when known


@dataclass
class ChatResponse:
    """A complete (non-streamed) answer."""

    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    created: int = 0


@dataclass
class ToolCallDelta:
    """A streamed piece of a tool call: the first carries id and name, later ones arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class WireEvent:
    """An upstream event already in OpenAI's ``chat.completion.chunk`` shape, as it came."""

    data: bytes  # the event's JSON, as the upstream serialised it
    id: str
    created: int
    model: str


@dataclass
class StreamChunk:
    """One streamed event, already canonical. ``usage`` arrives on (usually) the last.

    ``wire`` is set by providers speaking OpenAI's format when this chunk was the whole
    event: the edge may then relay the upstream's bytes instead of rendering the chunk.
    ``raw`` is set on pass-through (:mod:`cb.llm.passthrough`): the upstream's own SSE
    event(s), relayed unchanged; such a chunk carries nothing canonical but its usage."""

    index: int = 0
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: Any = None
    wire: WireEvent | None = None
    raw: bytes | None = None
    reasoning: list[dict] = field(default_factory=list)  # whole thinking blocks (see Message.reasoning)


@dataclass
class EmbeddingRequest:
    model: str
    input: list[str]
    dimensions: int | None = None
    user: str | None = None


@dataclass
class EmbeddingResponse:
    model: str
    vectors: list[list[float]]
    usage: Usage
