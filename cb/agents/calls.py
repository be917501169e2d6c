"""One agent call: the prompt as a chat request, streamed through the gateway.

The call goes through the worker's :class:`~cb.llm.gateway.Gateway`, so routing,
failover, breakers, budgets and the usage ledger apply as they do on the OpenAI port;
the usage record's ``project`` is the workflow id. The agent's own key, when it has
one, replaces the server's key for its calls (``RequestContext.provider_key``). An
agent with its own ``base_url`` is served by a deployment of its own at that address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cb.agents.model import Agent
from cb.llm.deployments import RouterConfig, normalize_type
from cb.llm.gateway import Gateway
from cb.llm.providers.base import Deployment
from cb.llm.router import Router
from cb.llm.routing import RequestContext
from cb.llm.types import ChatRequest, Message


@dataclass
class CallResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost_usd: float
    model: str
    provider: str

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "estimated": self.estimated,
            "model": self.model,
            "provider": self.provider,
        }


def chat_request(agent: Agent, model: str, prompt: str) -> ChatRequest:
    messages = [Message("system", agent.system_prompt)] if agent.system_prompt else []
    messages.append(Message("user", prompt))
    config = agent.llm_config
    return ChatRequest(
        model=model,
        messages=messages,
        stream=True,
        include_usage=True,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        top_p=config.top_p,
        stop=list(config.stop) if config.stop else None,
    )


class AgentCaller:
    """Calls the model of an agent through the worker's gateway (or the agent's own endpoint)."""

    def __init__(self, gateway: Gateway, budgets=None):
        self.gateway = gateway
        self.budgets = budgets
        self._own: dict[tuple, Gateway] = {}

    def model_name(self, agent: Agent) -> str:
        """What the router is asked for: the bare model when the catalog knows it for that provider."""
        spec = agent.llm_provider
        provider_type = normalize_type(spec.provider_type)
        if spec.base_url:
            return f"{self._deployment_id(agent)}/{spec.model}"
        info = self.gateway.catalog.get(spec.model)
        if "/" in spec.model or (info is not None and info.provider == provider_type):
            return spec.model
        return f"{provider_type}/{spec.model}"

    @staticmethod
    def _deployment_id(agent: Agent) -> str:
        return f"agent-{agent.id}"

    def _gateway(self, agent: Agent) -> Gateway:
        spec = agent.llm_provider
        if not spec.base_url:
            return self.gateway
        key = (agent.id, spec.provider_type, spec.base_url)
        gateway = self._own.get(key)
        if gateway is None:
            base = self.gateway
            deployment = Deployment(
                self._deployment_id(agent),
                normalize_type(spec.provider_type),
                spec.base_url,
                None,
                None,
                f"agent {agent.name}",
                models=[spec.model],
            )
            router = Router(base.settings, base.catalog, [deployment], RouterConfig())
            gateway = self._own[key] = Gateway(base.settings, router, base.ledger, base.transport, base.catalog)
        return gateway

    def call(
        self, agent: Agent, prompt: str, api_key: str | None, project: str, on_text: Callable[[str], None]
    ) -> CallResult:
        """Stream the answer, handing each piece of text to ``on_text``; raises LLMError."""
        gateway = self._gateway(agent)
        request = chat_request(agent, self.model_name(agent), prompt)
        ctx = RequestContext(project=project, user=f"agent:{agent.id}", provider_key=api_key)
        if self.budgets is not None:
            self.budgets.check(ctx)
        stream = gateway.stream(request, ctx)
        pieces: list[str] = []
        try:
            for chunk in stream:
                if chunk.content:
                    pieces.append(chunk.content)
                    on_text(chunk.content)
        finally:
            stream.close()
        usage = stream.final_usage()
        info = stream.route.model
        return CallResult(
            "".join(pieces),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.estimated,
            info.cost(usage, time.time()),
            info.id,
            stream.route.deployment.provider_type,
        )
