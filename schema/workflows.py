"""Bindings for schema/workflows.graphql: thin calls into cb.workflow.WorkflowEngine."""

from __future__ import annotations

import uuid

from ariadne import MutationType, ObjectType, QueryType

from cb.workflow import Token, Transition, Workflow, WorkflowEngine, analyse, event_subject
from cb.workflow.validation import check_id
from schema.subscriptions import register

query = QueryType()
mutation = MutationType()
workflow_type = ObjectType("Workflow")
token_type = ObjectType("Token")


def _engine(info) -> WorkflowEngine:
    return info.context["services"].workflows


@query.field("workflows")
def resolve_workflows(_, info):
    return _engine(info).list_workflows()


@query.field("workflow")
def resolve_workflow(_, info, id):
    return _engine(info).get_workflow(id)


@query.field("tokens")
def resolve_tokens(_, info, workflow_id=None, place=None, first=None, after=None):
    return _engine(info).list_tokens(workflow_id, place, first, after)


@query.field("token")
def resolve_token(_, info, id):
    return _engine(info).get_token(id)


@query.field("availableTransitions")
def resolve_available_transitions(_, info, token_id):
    engine = _engine(info)
    return engine.available_transitions(engine.get_token(token_id))


@mutation.field("createWorkflow")
def resolve_create_workflow(_, info, input):
    workflow = Workflow(
        id=input.get("id") or str(uuid.uuid4()),
        name=input["name"],
        description=input.get("description"),
        places=tuple(input["places"]),
        initial_place=input["initial_place"],
        transitions=tuple(
            Transition(
                id=t["id"],
                name=t.get("name") or t["id"],
                from_places=tuple(t["from_places"]),
                to_place=t["to_place"],
                conditions=tuple(t.get("conditions") or ()),
                description=t.get("description"),
            )
            for t in input["transitions"]
        ),
    )
    return _engine(info).create_workflow(workflow)


@mutation.field("createToken")
def resolve_create_token(_, info, input):
    return _engine(info).create_token(
        input["workflow_id"], input.get("place"), input.get("data"), input.get("metadata")
    )


@mutation.field("fireTransition")
def resolve_fire_transition(_, info, input):
    return _engine(info).fire(input["token_id"], input["transition_id"], input.get("data"))


@mutation.field("deleteWorkflow")
def resolve_delete_workflow(_, info, id):
    return _engine(info).delete_workflow(id)


@mutation.field("deleteToken")
def resolve_delete_token(_, info, id):
    return _engine(info).delete_token(id)


@workflow_type.field("analysis")
def resolve_analysis(workflow: Workflow, _info):
    return analyse(workflow)


@workflow_type.field("place_counts")
def resolve_place_counts(workflow: Workflow, info):
    return [{"place": place, "tokens": count} for place, count in _engine(info).place_counts(workflow).items()]


@token_type.field("available_transitions")
def resolve_token_transitions(token: Token, info):
    return _engine(info).available_transitions(token)


def _token_subject(args: dict) -> str:
    check_id("token_id", args["token_id"])
    return event_subject("*", args["token_id"])


def _workflow_subject(args: dict) -> str:
    check_id("workflow_id", args["workflow_id"])
    return event_subject(args["workflow_id"], "*")


def _token_after(event: dict, _services):
    if event.get("type") == "token_deleted" or not event.get("token"):
        return None
    return Token.from_dict(event["token"])


register("tokenUpdates", _token_subject, _token_after)
register("workflowEvents", _workflow_subject, lambda event, _services: event)

bindables = [query, mutation, workflow_type, token_type]
