"""AI agents on workflows: agent definitions, place agents, executions and their runner.

:func:`build_agents` builds them for one worker; :meth:`Agents.start` starts its runner
(which listens to token events and sweeps for abandoned executions).
"""

from __future__ import annotations

from dataclasses import dataclass

from cb.agents.calls import AgentCaller
from cb.agents.executions import ExecutionStore, execution_subject
from cb.agents.model import Agent, Execution, PlaceAgent
from cb.agents.registry import AgentRegistry, public_view
from cb.agents.runner import AgentRunner
from cb.secrets import SecretBox

__all__ = [
    "Agent",
    "AgentRegistry",
    "AgentRunner",
    "Agents",
    "Execution",
    "ExecutionStore",
    "PlaceAgent",
    "build_agents",
    "execution_subject",
    "public_view",
]


@dataclass
class Agents:
    """One worker's agent services."""

    registry: AgentRegistry
    executions: ExecutionStore
    runner: AgentRunner

    def start(self) -> None:
        """Start taking work: listen to token events, sweep for abandoned executions."""
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()


def build_agents(services) -> Agents:
    """The agent services over a worker's :class:`cb.services.Services`; nothing runs yet."""
    settings = services.settings
    registry = AgentRegistry(services.storage, services.workflows, SecretBox(settings.secret_key))
    executions = ExecutionStore(services.storage, services.bus)
    caller = AgentCaller(services.gateway, services.budgets)
    runner = AgentRunner(
        registry,
        executions,
        services.workflows,
        caller,
        settings.agent_lease_seconds,
        settings.agent_sweep_seconds,
        settings.agent_execution_retention_seconds,
    )
    return Agents(registry, executions, runner)
