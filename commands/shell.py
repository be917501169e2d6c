"""``flask shell``: the services built as a worker builds them, named in a banner, not started.

With memory storage the shell's store is its own, so it is given the example workflows a
server's memory store starts with (unless CB_LOAD_DEFAULT_WORKFLOWS=false): the guide's
queries find what they find on a server. With NATS the servers' stored state is used as it is.
"""

from __future__ import annotations

import atexit

import click

from commands import Operator, one_line_errors

NAMES = ("app", "services", "settings", "workflows", "gateway", "storage", "router", "ledger")


def shell_namespace() -> dict:
    """The shell's names (Flask calls this before the interpreter starts); prints the banner to stderr."""
    with one_line_errors():
        op = Operator()
        settings = op.settings
        services = op.services(shared=False)
        atexit.register(op.close)  # pending usage written, NATS connection closed
        if settings.storage_backend == "memory" and settings.load_default_workflows:
            services.workflows.load_defaults()  # what a server's own memory store starts with
        from app import create_app

        namespace = {
            "app": create_app(settings, services),
            "services": services,
            "settings": settings,
            "workflows": services.workflows,
            "gateway": services.gateway,
            "storage": services.storage,
            "router": services.router,
            "ledger": services.ledger,
        }
    if settings.storage_backend == "nats":
        where = f"storage: NATS at {settings.nats_url}, prefix {settings.nats_prefix} (shared with running servers)"
    else:
        where = "storage: memory, this shell's own (a server's state is in its process; STORAGE_BACKEND=nats shares it)"
    click.echo(
        f"Circuit Breaker shell. Names: {', '.join(NAMES)}.\n{where}\n"
        "Background jobs (agent runner, sweepers, model discovery) are not running; services.start() starts them.",
        err=True,
    )
    return namespace
