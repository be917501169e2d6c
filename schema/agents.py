"""Bindings for schema/agents.graphql: thin calls into cb.agents."""

from __future__ import annotations

from ariadne import MutationType, ObjectType, QueryType

from cb.agents import Agents, execution_subject, public_view
from cb.agents.model import Execution, PlaceAgent
from cb.errors import NotFound
from cb.workflow.validation import check_id
from schema.subscriptions import register

query = QueryType()
mutation = MutationType()
place_agent_type = ObjectType("PlaceAgent")
execution_type = ObjectType("AgentExecution")


def _agents(info) -> Agents:
    return info.context["services"].agents


def _place_agent(place_agent: PlaceAgent) -> dict:
    return {**place_agent.to_dict(), "id": place_agent.id}


@query.field("agents")
def resolve_agents(_, info):
    return [public_view(a) for a in _agents(info).registry.list()]


@query.field("agent")
def resolve_agent(_, info, id):
    return public_view(_agents(info).registry.get(id))


@query.field("placeAgents")
def resolve_place_agents(_, info, workflow_id=None):
    return [_place_agent(p) for p in _agents(info).registry.place_agents(workflow_id)]


@query.field("agentExecution")
def resolve_agent_execution(_, info, id):
    return _agents(info).executions.get(id)


@query.field("agentExecutions")
def resolve_agent_executions(_, info, token_id=None, agent_id=None, first=None, after=None, last=None):
    return _agents(info).executions.list(token_id, agent_id, first, after, last)


@mutation.field("createAgent")
def resolve_create_agent(_, info, input):
    return public_view(_agents(info).registry.create(input))


@mutation.field("updateAgent")
def resolve_update_agent(_, info, id, input):
    return public_view(_agents(info).registry.update(id, input))


@mutation.field("deleteAgent")
def resolve_delete_agent(_, info, id):
    return _agents(info).registry.delete(id)


@mutation.field("configurePlaceAgent")
def resolve_configure_place_agent(_, info, input):
    return _place_agent(_agents(info).registry.configure_place_agent(input))


@mutation.field("removePlaceAgent")
def resolve_remove_place_agent(_, info, workflow_id, place):
    return _agents(info).registry.remove_place_agent(workflow_id, place)


@mutation.field("runAgent")
def resolve_run_agent(_, info, input):
    return _agents(info).runner.run_manual(
        input["agent_id"], input["token_id"], input.get("output_key"), bool(input.get("parse_json"))
    )


@mutation.field("cancelExecution")
def resolve_cancel_execution(_, info, id):
    return _agents(info).executions.cancel(id)


@place_agent_type.field("agent")
def resolve_place_agent_agent(place_agent: dict, info):
    try:
        return public_view(_agents(info).registry.get(place_agent["agent_id"]))
    except NotFound:
        return None


@execution_type.field("worker")
def resolve_execution_worker(execution: Execution, _info):
    return execution.owner if execution.status == "RUNNING" else None


def _execution_subject(args: dict) -> str:
    check_id("execution_id", args["execution_id"])
    return execution_subject(args["execution_id"])


register("agentExecutionStream", _execution_subject, lambda event, _services: event)

bindables = [query, mutation, place_agent_type, execution_type]
