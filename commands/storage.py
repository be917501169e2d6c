"""``flask cb storage verify`` and ``flask cb storage migrate``: the stored layout and its size."""

from __future__ import annotations

import click

from commands import Failure, OperatorGroup, json_option, operator, print_json, table


def layout_problems(layout: dict, stores: dict) -> list[str]:
    """What keeps the stored layout from being the one this version expects ([] if nothing)."""
    problems = []
    for kind, versions in layout.items():
        stored, expected = versions["stored"], versions["expected"]
        holds_data = bool((stores.get(kind) or {}).get("messages"))
        if stored is None and holds_data or stored is not None and stored < expected:
            problems.append(f"{kind} layout is v{stored or 1}, this version expects v{expected}")
        elif stored is not None and stored > expected:
            problems.append(f"{kind} layout is v{stored}, written by a newer version (this one knows v{expected})")
    return problems


@click.group("storage", cls=OperatorGroup)
def storage() -> None:
    """The stored layout: check it, bring it up to this version."""


@storage.command("verify")
@json_option
def verify(as_json: bool) -> None:
    """Check that the layout is the one this version expects; count what each bucket holds."""
    services = operator().services()
    status = services.storage.status()
    layout = services.layout()
    problems = layout_problems(layout, status["stores"])
    if as_json:
        print_json({**status, "layout": layout, "ok": not problems, "problems": problems})
    else:
        click.echo(f"NATS {status.get('server_version')} at {status.get('url')}, prefix {status.get('prefix')}")
        for kind, versions in layout.items():
            stored = versions["stored"]
            click.echo(
                f"{kind} layout: {'v' + str(stored) if stored else 'not written yet'} "
                f"(this version: v{versions['expected']})"
            )
        click.echo("")
        rows = [
            [name, *(("-", "not created yet", "-") if s is None else (s["stream"], s["messages"], s["replicas"]))]
            for name, s in status["stores"].items()
        ]
        for line in table(rows, ["STORE", "STREAM", "MESSAGES", "REPLICAS"]):
            click.echo(line)
    if problems:
        raise Failure("; ".join(problems) + " (flask cb storage migrate brings it up to date)")


@storage.command("migrate")
@json_option
def migrate(as_json: bool) -> None:
    """Bring the layout up to this version: idempotent, safe while servers run."""
    services = operator().services()
    indexed = services.migrate()
    if as_json:
        print_json({"indexed": indexed, "layout": services.layout()})
        return
    click.echo(
        f"Indexed {indexed['tokens']} token(s), {indexed['executions']} agent execution(s) "
        f"and {indexed['api_keys']} API key(s); "
        "the layout is the one this version expects."
    )


def register(group: click.Group) -> None:
    group.add_command(storage)
