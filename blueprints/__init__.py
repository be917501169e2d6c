"""Flask blueprints: HTTP in, a call into ``cb/``, HTTP out. No business logic here."""

from flask import current_app

from cb.services import Services


def services() -> Services:
    """The worker's shared services, from the current app."""
    return current_app.extensions["circuit_breaker"]
