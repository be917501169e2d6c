"""Agents, place agents and executions, as stored (plain JSON dicts, snake_case like the API).

An :class:`Agent` is an LLM with a system prompt and a prompt template. A
:class:`PlaceAgent` puts an agent on one place of a workflow: a token entering that place
starts an :class:`Execution`. The execution carries a copy of the place agent's settings
(its ``plan``), so changing the place agent later does not change a running execution.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from cb.workflow.model import now

AGENT_STATUSES = ("ACTIVE", "DISABLED")
PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED = (
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
)
FINAL_STATUSES = (COMPLETED, FAILED, TIMEOUT, CANCELLED)


def _known(cls, value: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in value.items() if k in names}


@dataclass
class LlmProvider:
    """Which model an agent uses; ``api_key`` is the agent's own key, stored sealed."""

    provider_type: str
    model: str
    base_url: str | None = None
    api_key: str | None = None  # sealed (cb.secrets.SecretBox) when stored


@dataclass
class LlmConfig:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None


@dataclass
class Agent:
    id: str
    name: str
    llm_provider: LlmProvider
    description: str | None = None
    status: str = "ACTIVE"
    system_prompt: str = ""
    user_template: str | None = None
    llm_config: LlmConfig = field(default_factory=LlmConfig)
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)

    @classmethod
    def from_dict(cls, value: dict) -> Agent:
        value = _known(cls, value)
        value["llm_provider"] = LlmProvider(**_known(LlmProvider, value["llm_provider"]))
        value["llm_config"] = LlmConfig(**_known(LlmConfig, value.get("llm_config") or {}))
        return cls(**value)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_seconds: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling backoff."""
        return self.backoff_seconds * 2 ** (attempt - 1)


@dataclass
class PlaceAgent:
    """An agent on a place: what to do with a token that arrives there."""

    workflow_id: str
    place: str
    agent_id: str
    output_key: str = "agent_output"
    parse_json: bool = False
    auto_transition: str | None = None
    failure_transition: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = 120.0
    enabled: bool = True
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)

    @property
    def id(self) -> str:
        return place_agent_id(self.workflow_id, self.place)

    @classmethod
    def from_dict(cls, value: dict) -> PlaceAgent:
        value = _known(cls, value)
        value["retry"] = RetryPolicy(**_known(RetryPolicy, value.get("retry") or {}))
        return cls(**value)

    def to_dict(self) -> dict:
        return asdict(self)


def place_agent_id(workflow_id: str, place: str) -> str:
    return f"{workflow_id}:{place}"


@dataclass
class Plan:
    """What an execution does with its output: the place agent's settings when it started."""

    output_key: str | None = None
    parse_json: bool = False
    auto_transition: str | None = None
    failure_transition: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = 120.0

    @classmethod
    def of(cls, place_agent: PlaceAgent) -> Plan:
        return cls(
            place_agent.output_key,
            place_agent.parse_json,
            place_agent.auto_transition,
            place_agent.failure_transition,
            place_agent.retry,
            place_agent.timeout_seconds,
        )

    @classmethod
    def from_dict(cls, value: dict) -> Plan:
        value = _known(cls, value)
        value["retry"] = RetryPolicy(**_known(RetryPolicy, value.get("retry") or {}))
        return cls(**value)


@dataclass
class Execution:
    """One run of an agent on one token.

    ``owner`` and ``lease_until`` (epoch seconds) say which worker runs it and until when
    its claim holds; ``entry`` is the token's history length when it entered the place,
    which tells whether the auto transition already moved it. ``outcome`` is set once
    the result is known but before its effects on the token are applied, so a worker
    taking over applies them without calling the model again.
    """

    id: str
    agent_id: str
    token_id: str
    workflow_id: str
    place: str
    plan: Plan = field(default_factory=Plan)
    trigger: str = "place"  # place | manual
    entry: int = 0
    status: str = PENDING
    input: dict | None = None
    output: object = None
    error: str | None = None
    attempts: int = 0
    takeovers: int = 0
    owner: str | None = None
    lease_until: float = 0.0
    outcome: str | None = None
    usage: dict | None = None
    cost_usd: float = 0.0
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    started_ts: float | None = None
    completed_at: str | None = None
    duration_ms: float | None = None
    revision: int = 0  # the storage revision it was read at (not stored)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def claimable(self, at: float | None = None) -> bool:
        """Waiting for a worker, or running under a lease that ran out."""
        at = time.time() if at is None else at
        return self.status == PENDING or (self.status == RUNNING and self.lease_until < at)

    @classmethod
    def from_dict(cls, value: dict, revision: int = 0) -> Execution:
        value = _known(cls, value)
        value["plan"] = Plan.from_dict(value.get("plan") or {})
        value["revision"] = revision
        return cls(**value)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("revision")
        return data
