"""``flask cb check``: can this configuration serve? Settings, storage, providers, ports."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass

import click
import requests

from cb.config import Settings
from cb.errors import CircuitBreakerError
from cb.llm.deployments import KEY_VARIABLES, is_configured
from cb.security.redaction import scrub
from commands import Failure, json_option, operator, print_json

DEFAULT_OLLAMA = "http://localhost:11434"


@dataclass
class Check:
    """One line of the report: ``ok``, ``warn`` (not a failure), ``skip`` or ``fail``."""

    name: str
    status: str
    detail: str


def check_settings() -> tuple[Settings | None, list[Check]]:
    try:
        settings = operator().settings
    except Failure as exc:
        return None, [Check("settings", "fail", exc.message)]
    detail = f"valid (STORAGE_BACKEND={settings.storage_backend}, ENVIRONMENT={settings.environment}"
    detail += f", CB_CONFIG={settings.config_file})" if settings.config_file else ")"
    return settings, [Check("settings", "ok", detail)]


def check_storage(settings: Settings) -> tuple[object | None, list[Check]]:
    """The services (None if storage cannot be reached) and what was found."""
    if settings.storage_backend == "memory":
        return operator().services(shared=False), [
            Check("storage", "ok", "memory: each process keeps its own state (nothing shared to reach)")
        ]
    try:
        services = operator().services()
        status = services.storage.status()
    except CircuitBreakerError as exc:
        return None, [Check("storage", "fail", exc.message)]
    found = [
        Check(
            "storage",
            "ok",
            f"NATS {status['server_version']} at {status['url']}, JetStream enabled, prefix {status['prefix']}",
        )
    ]
    for name, store in status["stores"].items():
        if store is None:
            found.append(Check(f"bucket {name}", "ok", "not created yet (created on first use)"))
        else:
            found.append(
                Check(
                    f"bucket {name}",
                    "ok",
                    f"{store['stream']}, {store['replicas']} replica(s), {store['messages']} message(s)",
                )
            )
    return services, found


def check_providers(settings: Settings, services) -> list[Check]:
    if services is not None:
        gateway = services.gateway
    else:  # storage is away: the deployments of the environment and CB_CONFIG still can be checked
        from cb.llm.gateway import build_gateway

        gateway = build_gateway(settings, None)
    found = []
    for deployment in gateway.router.deployments:
        name = f"provider {deployment.id}"
        if not is_configured(deployment):
            variable = deployment.key_variable or KEY_VARIABLES.get(deployment.provider_type, "its key")
            usable = deployment.enabled or not deployment.base_url
            found.append(Check(name, "skip", f"not configured (set {variable})" if usable else "disabled"))
            continue
        try:
            listed = gateway.probe(deployment)
        except CircuitBreakerError as exc:
            status = "fail"
            if deployment.provider_type == "ollama" and deployment.base_url == DEFAULT_OLLAMA:
                status = "warn"  # on by default: an operator without Ollama should not see a failure
            hint = " (set OLLAMA_BASE_URL= to turn it off)" if status == "warn" else ""
            where = "" if deployment.base_url.split("://")[-1] in exc.message else f"{deployment.base_url}: "
            found.append(Check(name, status, f"{where}{exc.message}{hint}"))
            continue
        counted = f", {listed} model(s) listed" if listed is not None else ""
        found.append(Check(name, "ok", f"reachable at {deployment.base_url}{counted}"))
    return found


def check_port(host: str, port: int, variable: str) -> Check:
    """Free, or served by a Circuit Breaker (its /health answers); anything else fails."""
    name = f"port {port} ({variable})"
    address = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else "::1" if host == "::" else host
    try:
        socket.create_connection((address, port), timeout=1.0).close()
    except OSError:
        return Check(name, "ok", f"free on {host}")
    url = f"http://{address if ':' not in address else f'[{address}]'}:{port}/health"
    try:
        body = requests.get(url, timeout=3).json()
    except (requests.RequestException, ValueError):
        return Check(name, "fail", f"in use on {host} by something that is not a Circuit Breaker")
    if not isinstance(body, dict) or "storage" not in body:
        return Check(name, "fail", f"in use on {host} by something that is not a Circuit Breaker")
    return Check(name, "ok", f"served by Circuit Breaker {body.get('version')} ({body.get('status')})")


def run_checks() -> list[Check]:
    settings, found = check_settings()
    if settings is None:
        return found
    services, checked = check_storage(settings)
    found += checked
    found += check_providers(settings, services)
    found.append(check_port(settings.graphql_host, settings.graphql_port, "GRAPHQL_PORT"))
    found.append(check_port(settings.openai_host, settings.openai_port, "OPENAI_PORT"))
    return found


@click.command("check")
@json_option
def check(as_json: bool) -> None:
    """Check that this configuration can serve.

    Checks the settings, the storage (with NATS: server version, JetStream, each bucket and
    its replicas), each configured provider (by listing its models) and the two ports (free,
    or served by a Circuit Breaker); exit status 1 if anything fails."""
    found = run_checks()
    failed = [c.name for c in found if c.status == "fail"]
    if as_json:
        print_json({"ok": not failed, "checks": [{**asdict(c), "detail": scrub(c.detail)} for c in found]})
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            click.echo(scrub(f"{c.status:<4}  {c.name:<{width}}  {c.detail}"))
    if failed:
        raise Failure(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    if not as_json:
        click.echo("All checks passed.")


def register(group: click.Group) -> None:
    group.add_command(check)
