"""``flask cb workflows …`` and ``flask cb tokens …``: workflow state as the servers see it."""

from __future__ import annotations

import json

import click

from commands import OperatorGroup, json_option, operator, print_json, table


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


@click.group("workflows", cls=OperatorGroup)
def workflows() -> None:
    """Workflows (Petri nets) stored on the server."""


@workflows.command("list")
@json_option
def list_workflows(as_json: bool) -> None:
    """Every workflow, oldest first."""
    found = operator().services().workflows.list_workflows()
    if as_json:
        print_json([w.to_dict() for w in found])
        return
    if not found:
        click.echo("No workflows stored.")
        return
    rows = [[w.id, w.name, len(w.places), len(w.transitions), w.initial_place, w.created_at] for w in found]
    for line in table(rows, ["ID", "NAME", "PLACES", "TRANSITIONS", "INITIAL PLACE", "CREATED"]):
        click.echo(line)


@workflows.command("show")
@click.argument("workflow_id")
@json_option
def show_workflow(workflow_id: str, as_json: bool) -> None:
    """A workflow's places (with how many tokens are on each) and transitions."""
    engine = operator().services().workflows
    workflow = engine.get_workflow(workflow_id)
    counts = engine.place_counts(workflow)
    if as_json:
        print_json({**workflow.to_dict(), "token_counts": counts})
        return
    click.echo(f"Workflow {workflow.id}: {workflow.name}")
    if workflow.description:
        click.echo(workflow.description)
    click.echo(
        f"Created {workflow.created_at}, initial place {workflow.initial_place}, {sum(counts.values())} token(s)"
    )
    click.echo("")
    for line in table([[p, counts.get(p, 0)] for p in workflow.places], ["PLACE", "TOKENS"]):
        click.echo(line)
    click.echo("")
    rows = [
        [t.id, " | ".join(t.from_places) + " -> " + t.to_place, "; ".join(t.conditions) or "-"]
        for t in workflow.transitions
    ]
    for line in table(rows, ["TRANSITION", "ARC", "CONDITIONS"]):
        click.echo(line)


@click.group("tokens", cls=OperatorGroup)
def tokens() -> None:
    """Tokens: where a case is in its workflow, its data and its history."""


@tokens.command("show")
@click.argument("token_id")
@json_option
def show_token(token_id: str, as_json: bool) -> None:
    """A token's place, data, metadata, history, and the transitions it could fire now."""
    engine = operator().services().workflows
    token = engine.get_token(token_id)
    enabled = [t.id for t in engine.available_transitions(token)]
    if as_json:
        print_json({**token.to_dict(), "available_transitions": enabled})
        return
    click.echo(f"Token {token.id} of workflow {token.workflow_id}")
    click.echo(f"Place: {token.place}")
    click.echo(f"Created {token.created_at}, updated {token.updated_at}")
    click.echo(f"Data: {_compact(token.data)}")
    click.echo(f"Metadata: {_compact(token.metadata)}")
    click.echo(f"Can fire: {', '.join(enabled) or 'nothing'}")
    if not token.history:
        click.echo("History: none (still where it was created)")
        return
    click.echo("History:")
    rows = [
        [h.timestamp, h.transition, f"{h.from_place} -> {h.to_place}", _compact(h.data) if h.data else ""]
        for h in token.history
    ]
    for line in table(rows, ["TIME", "TRANSITION", "MOVE", "DATA"]):
        click.echo("  " + line)


def register(group: click.Group) -> None:
    group.add_command(workflows)
    group.add_command(tokens)
