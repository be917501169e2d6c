"""Agents and place agents over storage: create, update, delete, look up, validate.

An agent's own ``api_key`` is sealed with :class:`cb.secrets.SecretBox` before it is
stored (encrypted when CB_SECRET_KEY is set) and opened only when a call needs it;
:func:`public_view` is the only shape the API ever shows, with ``has_api_key`` instead.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from cb.agents import template
from cb.agents.model import AGENT_STATUSES, Agent, LlmConfig, LlmProvider, PlaceAgent, RetryPolicy, place_agent_id
from cb.errors import Conflict, NotFound, ValidationError
from cb.llm.deployments import PROVIDER_TYPES
from cb.logs import get_logger
from cb.network import check_base_url
from cb.secrets import SecretBox
from cb.storage import Storage
from cb.workflow import WorkflowEngine
from cb.workflow.model import now

log = get_logger("agents")

AGENTS = "agents"
PLACE_AGENTS = "place_agents"
_PROVIDER_TYPES = (*PROVIDER_TYPES, "gemini")


def _text(value, name: str, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{name} must not be empty")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    return value


def _provider(spec: dict, old: LlmProvider | None, box: SecretBox) -> LlmProvider:
    merged = {
        **({} if old is None else {k: getattr(old, k) for k in ("provider_type", "model", "base_url")}),
        **{k: v for k, v in spec.items() if k != "api_key" and v is not None},
    }
    provider_type = _text(merged.get("provider_type"), "llm_provider.provider_type", True).strip().lower()
    if provider_type not in _PROVIDER_TYPES:
        raise ValidationError(f"llm_provider.provider_type {provider_type!r} is not one of {', '.join(PROVIDER_TYPES)}")
    model = _text(merged.get("model"), "llm_provider.model", True).strip()
    base_url = _text(merged.get("base_url"), "llm_provider.base_url")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ValidationError("llm_provider.base_url must be an http:// or https:// URL")
    if base_url:
        check_base_url(base_url, "llm_provider.base_url")
    key = old.api_key if old is not None else None
    if "api_key" in spec and spec["api_key"] is not None:
        key = box.seal(spec["api_key"]) if spec["api_key"] else None  # "" removes the agent's key
    return LlmProvider(provider_type, model, base_url.rstrip("/") if base_url else None, key)


def _config(spec: dict | None, old: LlmConfig | None = None) -> LlmConfig:
    config = replace(old) if old else LlmConfig()
    for name, value in (spec or {}).items():
        if hasattr(config, name):
            setattr(config, name, value)
    if config.temperature is not None and not 0 <= config.temperature <= 2:
        raise ValidationError("llm_config.temperature must be between 0 and 2")
    if config.top_p is not None and not 0 <= config.top_p <= 1:
        raise ValidationError("llm_config.top_p must be between 0 and 1")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise ValidationError("llm_config.max_tokens must be at least 1")
    return config


def _status(value: str | None, default: str) -> str:
    status = (value or default).upper()
    if status not in AGENT_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(AGENT_STATUSES)}")
    return status


def public_view(agent: Agent) -> dict:
    """The agent as the API shows it: never the key, only whether there is one."""
    view = agent.to_dict()
    provider = view["llm_provider"]
    provider["has_api_key"] = bool(provider.pop("api_key"))
    return view


class AgentRegistry:
    """Stored agents and place agents."""

    def __init__(self, storage: Storage, workflows: WorkflowEngine, box: SecretBox):
        self.storage = storage
        self.workflows = workflows
        self.box = box

    # -- agents -------------------------------------------------------------------------

    def list(self) -> list[Agent]:
        agents = [Agent.from_dict(e.value) for e in self.storage.list(AGENTS)]
        return sorted(agents, key=lambda a: (a.created_at, a.id))

    def get(self, agent_id: str) -> Agent:
        entry = self.storage.get(AGENTS, agent_id)
        if entry is None:
            raise NotFound(f"agent {agent_id!r} not found")
        return Agent.from_dict(entry.value)

    def api_key(self, agent: Agent) -> str | None:
        """The agent's own key in plain text (registered with the log redactor)."""
        return self.box.open(agent.llm_provider.api_key)

    def create(self, spec: dict) -> Agent:
        template.check(spec.get("user_template"))
        agent = Agent(
            id=str(uuid.uuid4()),
            name=_text(spec.get("name"), "name", True),
            description=_text(spec.get("description"), "description"),
            status=_status(spec.get("status"), "ACTIVE"),
            llm_provider=_provider(spec.get("llm_provider") or {}, None, self.box),
            system_prompt=spec.get("system_prompt") or "",
            user_template=_text(spec.get("user_template"), "user_template"),
            llm_config=_config(spec.get("llm_config")),
        )
        self.storage.create(AGENTS, agent.id, agent.to_dict())
        log.info("agent %s created (%s/%s)", agent.id, agent.llm_provider.provider_type, agent.llm_provider.model)
        return agent

    def update(self, agent_id: str, spec: dict) -> Agent:
        for _ in range(3):
            entry = self.storage.get(AGENTS, agent_id)
            if entry is None:
                raise NotFound(f"agent {agent_id!r} not found")
            agent = Agent.from_dict(entry.value)
            if "user_template" in spec:
                template.check(spec["user_template"])
                agent.user_template = _text(spec["user_template"], "user_template")
            if spec.get("name") is not None:
                agent.name = _text(spec["name"], "name", True)
            if "description" in spec:
                agent.description = _text(spec["description"], "description")
            if spec.get("status") is not None:
                agent.status = _status(spec["status"], agent.status)
            if spec.get("system_prompt") is not None:
                agent.system_prompt = spec["system_prompt"]
            if spec.get("llm_provider") is not None:
                agent.llm_provider = _provider(spec["llm_provider"], agent.llm_provider, self.box)
            if spec.get("llm_config") is not None:
                agent.llm_config = _config(spec["llm_config"], agent.llm_config)
            agent.updated_at = now()
            try:
                self.storage.update(AGENTS, agent_id, agent.to_dict(), entry.revision)
            except Conflict:
                continue
            return agent
        raise Conflict(f"agent {agent_id!r} kept changing; try again")

    def delete(self, agent_id: str) -> bool:
        self.get(agent_id)
        users = [p for p in self.place_agents() if p.agent_id == agent_id]
        if users:
            places = ", ".join(f"{p.workflow_id}/{p.place}" for p in users)
            raise ValidationError(f"agent {agent_id!r} is configured on {places}; remove those place agents first")
        try:
            self.storage.delete(AGENTS, agent_id)
        except NotFound:
            raise NotFound(f"agent {agent_id!r} not found") from None
        return True

    # -- place agents -------------------------------------------------------------------

    def place_agents(self, workflow_id: str | None = None) -> list[PlaceAgent]:
        found = [PlaceAgent.from_dict(e.value) for e in self.storage.list(PLACE_AGENTS)]
        found = [p for p in found if workflow_id is None or p.workflow_id == workflow_id]
        return sorted(found, key=lambda p: (p.workflow_id, p.place))

    def place_agent(self, workflow_id: str, place: str) -> PlaceAgent | None:
        entry = self.storage.get(PLACE_AGENTS, place_agent_id(workflow_id, place))
        return PlaceAgent.from_dict(entry.value) if entry else None

    def configure_place_agent(self, spec: dict) -> PlaceAgent:
        """Put an agent on a place (replacing the one there); every name is checked."""
        workflow = self.workflows.get_workflow(spec["workflow_id"])
        place = spec["place"]
        if place not in workflow.places:
            raise ValidationError(f"place {place!r} is not a place of workflow {workflow.id!r}")
        self.get(spec["agent_id"])
        for kind in ("auto_transition", "failure_transition"):
            name = spec.get(kind)
            if not name:
                continue
            transition = workflow.transition(name)
            if transition is None:
                raise ValidationError(f"{kind} {name!r} is not a transition of workflow {workflow.id!r}")
            if place not in transition.from_places:
                raise ValidationError(f"{kind} {name!r} does not start from place {place!r}")
        old = self.place_agent(workflow.id, place)
        retry = RetryPolicy(**{k: v for k, v in (spec.get("retry") or {}).items() if v is not None})
        if retry.max_attempts < 1 or retry.max_attempts > 20:
            raise ValidationError("retry.max_attempts must be between 1 and 20")
        if retry.backoff_seconds < 0:
            raise ValidationError("retry.backoff_seconds must be 0 or more")
        timeout = spec.get("timeout_seconds")
        if timeout is not None and timeout <= 0:
            raise ValidationError("timeout_seconds must be more than 0")
        output_key = _text(spec.get("output_key"), "output_key") or "agent_output"
        place_agent = PlaceAgent(
            workflow_id=workflow.id,
            place=place,
            agent_id=spec["agent_id"],
            output_key=output_key,
            parse_json=bool(spec.get("parse_json")),
            auto_transition=spec.get("auto_transition") or None,
            failure_transition=spec.get("failure_transition") or None,
            retry=retry,
            timeout_seconds=float(timeout) if timeout is not None else 120.0,
            enabled=spec.get("enabled") is not False,
            created_at=old.created_at if old else now(),
        )
        self.storage.put(PLACE_AGENTS, place_agent.id, place_agent.to_dict())
        return place_agent

    def remove_place_agent(self, workflow_id: str, place: str) -> bool:
        try:
            self.storage.delete(PLACE_AGENTS, place_agent_id(workflow_id, place))
        except NotFound:
            raise NotFound(f"no agent is configured on {workflow_id}/{place}") from None
        return True
