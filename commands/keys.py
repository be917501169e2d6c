"""``flask cb keys …``: client API keys of the OpenAI port (the key store the servers read)."""

from __future__ import annotations

import time

import click

from cb.security import ApiKey, protect
from commands import Failure, OperatorGroup, iso, json_option, operator, print_json, table

DAY = 86400.0


def public(record: ApiKey) -> dict:
    """A key's record as shown: never the key, nor its hash."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "rpm_limit": record.rpm_limit,
        "tpm_limit": record.tpm_limit,
        "allowed_models": record.allowed_models,
        "created_at": iso(record.created_at),
        "last_used_at": iso(record.last_used_at),
        "expires_at": iso(record.expires_at),
        "revoked": record.revoked,
    }


def _status(record: ApiKey, now: float) -> str:
    if record.revoked:
        return "revoked"
    return "active" if record.is_usable(now) else "expired"


@click.group("keys", cls=OperatorGroup)
def keys() -> None:
    """Client API keys: stored as hashes; a key is shown once, when it is created."""


@keys.command("create")
@click.argument("name")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute (default: RATE_LIMIT_RPM).")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute (default: RATE_LIMIT_TPM).")
@click.option("--models", metavar="A,B", help="Models the key may use, comma-separated (default: every model).")
@click.option(
    "--expires-in",
    type=click.FloatRange(min=0, min_open=True),
    metavar="DAYS",
    help="The key stops working after this many days.",
)
@json_option
def create(
    name: str, rpm: int | None, tpm: int | None, models: str | None, expires_in: float | None, as_json: bool
) -> None:
    """Create a key named NAME and print it (on stdout, alone: KEY=$(flask cb keys create ci))."""
    store = operator().services().security.keys
    expires_at = time.time() + expires_in * DAY if expires_in else None
    allowed = [m for m in (models or "").split(",") if m.strip()] or None
    record, plaintext = store.create(name, rpm, tpm, allowed, expires_at)
    protect(plaintext)  # from here on no log line can carry it
    if as_json:
        print_json({"key": plaintext, "api_key": public(record)})
        return
    click.echo(plaintext)
    click.echo(
        f"Created API key {record.id} ({record.name}). It is shown only this once: the server keeps its hash.", err=True
    )


@keys.command("list")
@json_option
def list_keys(as_json: bool) -> None:
    """The stored keys, oldest first (never the keys themselves)."""
    op = operator()
    records = op.services().security.keys.list()
    from_settings = len(op.settings.api_keys)
    if as_json:
        print_json([public(r) for r in records])
        return
    now = time.time()
    rows = [
        [
            r.id,
            r.name,
            r.prefix + "…",
            r.rpm_limit,
            r.tpm_limit,
            ",".join(r.allowed_models or []) or "all",
            iso(r.created_at),
            iso(r.last_used_at),
            iso(r.expires_at),
            _status(r, now),
        ]
        for r in records
    ]
    if rows:
        for line in table(
            rows, ["ID", "NAME", "PREFIX", "RPM", "TPM", "MODELS", "CREATED", "LAST USED", "EXPIRES", "STATUS"]
        ):
            click.echo(line)
    else:
        click.echo("No API keys stored.")
    if from_settings:
        click.echo(f"(and {from_settings} key(s) from CB_API_KEYS, which live in the settings)")


@keys.command("revoke")
@click.argument("name_or_id")
def revoke(name_or_id: str) -> None:
    """Revoke the key with this id (or this name, if only one key has it); every server refuses it within a second."""
    if name_or_id.startswith("env-"):
        raise Failure("keys from CB_API_KEYS are revoked by removing them from that setting and restarting")
    store = operator().services().security.keys
    records = store.list()
    found = [r for r in records if r.id == name_or_id]
    if not found:
        named = [r for r in records if r.name == name_or_id]
        found = [r for r in named if not r.revoked] or named
        if len(found) > 1:
            ids = ", ".join(r.id for r in found)
            raise Failure(f"{len(found)} keys are named {name_or_id!r} ({ids}); revoke one by its id")
    if not found:
        raise Failure(f"no API key has the id or name {name_or_id!r} (flask cb keys list shows them)")
    record = found[0]
    if record.revoked:
        click.echo(f"API key {record.id} ({record.name}) was already revoked.")
        return
    store.migrate()  # keys stored by an older version, before any server of this one indexed them (else one get)
    store.revoke(record.id)
    click.echo(f"Revoked API key {record.id} ({record.name}); every server refuses it within a second.")


def register(group: click.Group) -> None:
    group.add_command(keys)
