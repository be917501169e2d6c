"""The MCP tools: one per thing an agent does with a workflow, each a thin call into the same
services the GraphQL resolvers use (so a mutation emits the events GraphQL subscribers see).

Descriptions are written for a model to read: what the tool is for, what comes back, what to
call next. Arguments are named as in the guide's GraphQL (``workflow_id``, ``token_id``). A
call that fails for a domain reason (an unknown workflow, a transition that is not enabled,
bad arguments) answers ``isError: true`` with a message that says what would work, so the
model can correct itself; only an unknown tool name is a protocol error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cb.agents import public_view
from cb.errors import CircuitBreakerError, NotFound, ValidationError
from cb.llm.analytics import AnalyticsFilter
from cb.mcp.sessions import Session
from cb.workflow import ConditionFailed, Token, TransitionNotEnabled, Workflow, analyse
from cb.workflow.engine import PAGE_LIMIT

DEFAULT_PAGE = 50  # tokens per list_tokens page unless asked: enough to look around, small for a context window

_WORKFLOW_ID = {"type": "string", "description": 'The workflow\'s id, e.g. "document_review" (see list_workflows).'}
_TOKEN_ID = {"type": "string", "description": "The token's id (a UUID, from create_token or list_tokens)."}
_DATA = {
    "type": "object",
    "description": 'A JSON object of the case\'s fields; guards read them, e.g. {"title": "Q3 report"}.',
    "additionalProperties": True,
}


@dataclass(frozen=True)
class Tool:
    """One tool as ``tools/list`` shows it, and the function ``tools/call`` runs."""

    name: str
    title: str
    description: str
    input_schema: dict
    read_only: bool
    run: Callable[[Any, Session, dict], dict]

    def listing(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.read_only,
                "destructiveHint": False,
                "idempotentHint": self.read_only,
                "openWorldHint": False,
            },
        }


def _schema(properties: dict | None = None, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties or {},
        "required": list(required),
        "additionalProperties": False,
    }


# --- views: what a tool answers ----------------------------------------------------


def _transition_view(transition) -> dict:
    view = {"id": transition.id, "from_places": list(transition.from_places), "to_place": transition.to_place}
    if transition.name != transition.id:
        view["name"] = transition.name
    if transition.conditions:
        view["guards"] = list(transition.conditions)
    if transition.description:
        view["description"] = transition.description
    return view


def _token_view(engine, token: Token, history: bool = True) -> dict:
    view = {
        "id": token.id,
        "workflow_id": token.workflow_id,
        "place": token.place,
        "data": token.data,
        "metadata": token.metadata,
        "created_at": token.created_at,
        "updated_at": token.updated_at,
    }
    if token.created_by:
        view["created_by"] = token.created_by
    if history:
        view["history"] = [h.to_dict() for h in token.history]
        view["enabled_transitions"] = [_transition_view(t) for t in engine.available_transitions(token)]
    return view


def _workflow_summary(workflow: Workflow) -> dict:
    return {
        "id": workflow.id,
        "name": workflow.name,
        "description": workflow.description,
        "places": list(workflow.places),
        "initial_place": workflow.initial_place,
        "transitions": [t.id for t in workflow.transitions],
    }


# --- the tools ---------------------------------------------------------------------


def _list_workflows(services, _session: Session, _args: dict) -> dict:
    return {"workflows": [_workflow_summary(w) for w in services.workflows.list_workflows()]}


def _get_workflow(services, _session: Session, args: dict) -> dict:
    engine = services.workflows
    workflow = engine.get_workflow(args["workflow_id"])
    analysis = analyse(workflow)
    return {
        **_workflow_summary(workflow),
        "transitions": [_transition_view(t) for t in workflow.transitions],
        "terminal_places": list(analysis.terminal_places),
        "unreachable_places": list(analysis.unreachable_places),
        "tokens_per_place": engine.place_counts(workflow),
        "resources": [f"cb://workflows/{workflow.id}", f"cb://workflows/{workflow.id}/diagram"],
    }


def _list_tokens(services, _session: Session, args: dict) -> dict:
    engine = services.workflows
    workflow = engine.get_workflow(args["workflow_id"])
    place = args.get("place")
    if place is not None and place not in workflow.places:
        raise ValidationError(f"place {place!r} is not a place of workflow {workflow.id!r}")
    first = args.get("first", DEFAULT_PAGE)
    tokens = engine.list_tokens(workflow.id, place, first, args.get("after"))
    more = len(tokens) == first and first > 0
    return {
        "tokens": [_token_view(engine, t, history=False) for t in tokens],
        "next_after": tokens[-1].id if more else None,
    }


def _get_token(services, _session: Session, args: dict) -> dict:
    engine = services.workflows
    return _token_view(engine, engine.get_token(args["token_id"]))


def _create_token(services, session: Session, args: dict) -> dict:
    engine = services.workflows
    token = engine.create_token(args["workflow_id"], args.get("place"), args.get("data"), actor=session.actor)
    return _token_view(engine, token)


def _fire_transition(services, session: Session, args: dict) -> dict:
    engine = services.workflows
    token = engine.fire(args["token_id"], args["transition_id"], args.get("data"), actor=session.actor)
    return _token_view(engine, token)


def _list_agents(services, _session: Session, _args: dict) -> dict:
    registry = services.agents.registry
    places: dict[str, list[dict]] = {}
    for assignment in registry.place_agents():
        places.setdefault(assignment.agent_id, []).append(
            {"workflow_id": assignment.workflow_id, "place": assignment.place, "output_key": assignment.output_key}
        )
    agents = []
    for agent in registry.list():
        view = public_view(agent)
        agents.append(
            {
                "id": view["id"],
                "name": view["name"],
                "description": view.get("description"),
                "status": view.get("status"),
                "provider": view["llm_provider"]["provider_type"],
                "model": view["llm_provider"]["model"],
                "acts_on": places.get(agent.id, []),
            }
        )
    return {"agents": agents}


def _cost_analytics(services, _session: Session, args: dict) -> dict:
    report = services.analytics.report(AnalyticsFilter.from_input(args))
    return {k: v for k, v in report.items() if not k.startswith("_")}


TOOLS = (
    Tool(
        "list_workflows",
        "List workflows",
        "List every workflow (Petri net) on this server: id, name, places, the place new tokens start in "
        "(initial_place) and the ids of its transitions. Start here to find the workflow_id the other tools take.",
        _schema(),
        True,
        _list_workflows,
    ),
    Tool(
        "get_workflow",
        "Get a workflow",
        "Get one workflow's full definition: its places, its transitions (each moves a token from one of "
        "from_places to to_place, and only when every guard expression holds over the token's data), the "
        "terminal places, and how many tokens sit on each place now.",
        _schema({"workflow_id": _WORKFLOW_ID}, ("workflow_id",)),
        True,
        _get_workflow,
    ),
    Tool(
        "list_tokens",
        "List tokens",
        "List the tokens (cases) of one workflow, oldest first, optionally only those in one place. Pages: at "
        f"most `first` tokens (default {DEFAULT_PAGE}, at most {PAGE_LIMIT}); pass the answer's next_after as "
        "`after` for the next page (next_after is null on the last page). History is left out: use get_token.",
        _schema(
            {
                "workflow_id": _WORKFLOW_ID,
                "place": {"type": "string", "description": 'Only tokens in this place, e.g. "pending_review".'},
                "first": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": PAGE_LIMIT,
                    "description": f"Page size (default {DEFAULT_PAGE}).",
                },
                "after": {
                    "type": "string",
                    "description": "Continue after this token id (next_after of the last page).",
                },
            },
            ("workflow_id",),
        ),
        True,
        _list_tokens,
    ),
    Tool(
        "get_token",
        "Get a token",
        "Get one token: its place, data, its history (every transition fired: when, from where to where, "
        "with what data, and by whom) and the transitions it can fire now (enabled_transitions).",
        _schema({"token_id": _TOKEN_ID}, ("token_id",)),
        True,
        _get_token,
    ),
    Tool(
        "create_token",
        "Create a token",
        "Create a new token (a case, e.g. a document) in a workflow. It starts in `place`, or in the workflow's "
        "initial_place when place is left out. Returns the token with its id and the transitions it can fire. "
        "GraphQL subscribers and place agents see it at once.",
        _schema(
            {
                "workflow_id": _WORKFLOW_ID,
                "place": {
                    "type": "string",
                    "description": "Where the token starts; one of the workflow's places (default: its initial_place).",
                },
                "data": _DATA,
            },
            ("workflow_id",),
        ),
        False,
        _create_token,
    ),
    Tool(
        "fire_transition",
        "Fire a transition",
        "Move a token along one transition of its workflow, e.g. from draft to pending_review. The transition "
        "must leave the token's current place and its guards must hold; `data` is merged into the token's data "
        'first, so it can carry the evidence a guard asks for (e.g. {"tests_passed": true}). Returns the token '
        "in its new place with the transitions enabled there. If it cannot fire, the error names the enabled ones.",
        _schema(
            {
                "token_id": _TOKEN_ID,
                "transition_id": {"type": "string", "description": 'The transition\'s id, e.g. "submit".'},
                "data": {**_DATA, "description": "Fields merged into the token's data before the guards are checked."},
            },
            ("token_id", "transition_id"),
        ),
        False,
        _fire_transition,
    ),
    Tool(
        "list_agents",
        "List AI agents",
        "List the AI agents defined on this server (name, provider, model, status) and the workflow places "
        "each acts on: a token entering such a place starts that agent, which writes its answer into the "
        "token's data under output_key.",
        _schema(),
        True,
        _list_agents,
    ),
    Tool(
        "cost_analytics",
        "LLM cost analytics",
        "Sum the LLM usage recorded by this gateway, in USD and tokens: totals, per day, per month, per "
        "provider and per model, for a period and optionally one user, project or client key. Dates are "
        "YYYY-MM-DD (end_date includes that day) or ISO 8601 datetimes; leave both out for all time.",
        _schema(
            {
                "start_date": {"type": "string", "description": 'First day, e.g. "2026-12-01".'},
                "end_date": {"type": "string", "description": "Last day, inclusive."},
                "user_id": {"type": "string"},
                "project_id": {"type": "string"},
                "api_key_id": {"type": "string"},
            }
        ),
        True,
        _cost_analytics,
    ),
)

BY_NAME = {tool.name: tool for tool in TOOLS}


# --- calling -----------------------------------------------------------------------


def call(services, session: Session, tool: Tool, arguments: Any) -> dict:
    """Run a tool: a ``CallToolResult``, with ``isError`` for a domain failure."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return _error_result(f"The arguments of {tool.name} must be a JSON object (see its inputSchema).")
    try:
        arguments = _lenient(tool.input_schema, arguments)
        _check(tool.input_schema, arguments)
        result = tool.run(services, session, arguments)
    except CircuitBreakerError as exc:
        return _error_result(f"{exc.message}. {_advice(services, tool, arguments, exc)}".rstrip(". ") + ".")
    return {"content": [{"type": "text", "text": json.dumps(result, ensure_ascii=False)}], "structuredContent": result}


def _error_result(message: str) -> dict:
    return {"content": [{"type": "text", "text": message}], "isError": True}


_TYPES = {"string": str, "object": dict, "integer": int}


def _lenient(schema: dict, arguments: dict) -> dict:
    """What models send that means something clear: null for an optional argument (left out),
    and an object given as a string of JSON (decoded, as GraphQL's JSON scalar does)."""
    found = {}
    for name, value in arguments.items():
        spec = schema["properties"].get(name) or {}
        if value is None and name not in schema["required"]:
            continue
        if spec.get("type") == "object" and isinstance(value, str):
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
            value = decoded if isinstance(decoded, dict) else value
        found[name] = value
    return found


def _check(schema: dict, arguments: dict) -> None:
    """The arguments against the tool's schema (the subset our schemas use)."""
    properties = schema["properties"]
    for name in schema["required"]:
        if name not in arguments:
            raise ValidationError(f"missing argument {name!r}")
    for name, value in arguments.items():
        spec = properties.get(name)
        if spec is None:
            raise ValidationError(f"unknown argument {name!r}; this tool takes {', '.join(properties) or 'none'}")
        kind = _TYPES[spec["type"]]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValidationError(f"argument {name!r} must be a JSON {spec['type']}, got {json.dumps(value)[:80]}")
        if kind is int and not spec.get("minimum", value) <= value <= spec.get("maximum", value):
            raise ValidationError(f"argument {name!r} must be between {spec['minimum']} and {spec['maximum']}")


def _advice(services, tool: Tool, arguments: dict, exc: CircuitBreakerError) -> str:
    """What would work instead, in words a model can act on."""
    engine = services.workflows
    try:
        if isinstance(exc, TransitionNotEnabled | ConditionFailed) or (
            isinstance(exc, NotFound) and "has no transition" in exc.message
        ):
            token = engine.get_token(arguments["token_id"])
            enabled = engine.available_transitions(token)
            if not enabled:
                return f"No transition is enabled for this token in place {token.place!r}"
            names = ", ".join(f"{t.id!r} (to {t.to_place!r})" for t in enabled)
            return f"Enabled transitions for this token in place {token.place!r}: {names}"
        if isinstance(exc, NotFound) and exc.message.startswith("workflow "):
            ids = ", ".join(repr(w.id) for w in engine.list_workflows())
            return f"Known workflow ids: {ids or 'none'} (list_workflows shows them)"
        if isinstance(exc, NotFound) and exc.message.startswith("token "):
            return "Find token ids with list_tokens(workflow_id), or create one with create_token"
        if isinstance(exc, ValidationError) and "is not a place of workflow" in exc.message:
            workflow = engine.get_workflow(arguments["workflow_id"])
            return f"Places of {workflow.id!r}: {', '.join(workflow.places)} (new tokens start in {workflow.initial_place!r})"
    except CircuitBreakerError:
        pass
    if isinstance(exc, ValidationError):
        return f"See the input schema of {tool.name} (tools/list)"
    return ""
