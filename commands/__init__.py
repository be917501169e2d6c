"""The operators' command line: ``flask shell`` with the services at hand, and ``flask cb …``.

The third edge beside the two HTTP APIs: a command parses its arguments, calls ``cb/``
and prints; it holds no business logic. It builds the services exactly as a worker
does but starts none of them (no agent runner, sweeper or discovery loop), so it never
competes with a running server, and closes them when it ends.

With STORAGE_BACKEND=nats a command acts on the state every server shares. With memory
storage each process has its own, so the commands that read or change a server's state
refuse in one line rather than show an empty store of their own.

Exit status 0 on success; 1 with one ``Error: …`` line on stderr when the command
failed; 2 for a usage mistake (click's own). Never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from cb.config import ConfigError, Settings
from cb.errors import CircuitBreakerError
from cb.security.redaction import scrub
from cb.services import Services

META_KEY = "circuit_breaker.operator"


class Failure(click.ClickException):
    """A command failed: ``Error: <message>`` on stderr, exit status 1."""

    def __init__(self, message: str):
        super().__init__(scrub(message))


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn what a command can raise into a :class:`Failure` (click's own exceptions pass)."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except CircuitBreakerError as exc:
        raise Failure(exc.message) from None
    except ConfigError as exc:
        raise Failure(f"Configuration error: {exc}") from None
    except Exception as exc:  # an operator gets one line, never a traceback
        raise Failure(f"{type(exc).__name__}: {exc}") from None


def memory_refusal(settings: Settings) -> str:
    return (
        "STORAGE_BACKEND=memory: a server's state lives inside the server process, out of this command's reach; "
        f"use STORAGE_BACKEND=nats (shared by every process) or the GraphQL API on port {settings.graphql_port}"
    )


class Operator:
    """What a command works with: settings and services, built on first use, closed at the end."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._services: Services | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from cb.logs import setup_logging

            try:
                self._settings = Settings.from_env()
            except ConfigError as exc:
                raise Failure(f"Configuration error: {exc}") from None
            # warnings and errors only (LOG_LEVEL may say otherwise): a command's output is its answer
            setup_logging("warn", self._settings.log_level, False, self._settings.secrets)
        return self._settings

    def services(self, shared: bool = True) -> Services:
        """The services, unstarted. ``shared``: the command needs the servers' state (not memory)."""
        if shared and self.settings.storage_backend == "memory":
            raise Failure(memory_refusal(self.settings))
        if self._services is None:
            from cb.services import build_services

            self._services = build_services(self.settings)
        return self._services

    def close(self) -> None:
        services, self._services = self._services, None
        if services is not None:
            services.close()


def operator() -> Operator:
    """The current command's :class:`Operator` (one per ``flask`` invocation)."""
    root = click.get_current_context().find_root()
    found = root.meta.get(META_KEY)
    if found is None:
        found = root.meta[META_KEY] = Operator()
        root.call_on_close(found.close)
    return found


class OperatorGroup(click.Group):
    """A command group whose commands fail in one line."""

    def invoke(self, ctx: click.Context):
        with one_line_errors():
            return super().invoke(ctx)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[list], headers: list[str]) -> list[str]:
    """Rows as aligned text columns under ``headers``."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def iso(moment: float | str | None) -> str | None:
    """A unix time as ISO 8601 UTC (strings pass through)."""
    if moment is None or isinstance(moment, str):
        return moment
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@click.group("cb", cls=OperatorGroup)
def cb() -> None:
    """Circuit Breaker operations on the server's own storage (see the README, "Operating it")."""


def install(app) -> None:
    """Add the ``cb`` commands and the shell's namespace to ``app`` (the CLI app of app.py)."""
    from commands import check, keys, storage, usage, workflows
    from commands.shell import shell_namespace

    for module in (check, keys, workflows, usage, storage):
        module.register(cb)
    app.cli.add_command(cb)
    app.shell_context_processor(shell_namespace)
