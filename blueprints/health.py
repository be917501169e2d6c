"""/health on both ports, and the Kubernetes forms:

* ``/health/live``: the process answers (nothing else is checked, so a NATS outage
  never gets pods restarted);
* ``/health/ready``: storage is connected, at least one provider deployment is
  configured with its breaker not open, and the worker is not shutting down.
"""

from flask import Blueprint, jsonify

from blueprints import services
from cb import lifecycle

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    body, healthy = services().health()
    return jsonify(body), 200 if healthy else 503


@bp.get("/health/live")
def live():
    return jsonify({"status": "alive"})


@bp.get("/health/ready")
def ready():
    svc = services()
    storage = svc.storage.is_connected()
    deployments = svc.router.health_summary() if svc.router is not None else {}
    usable = [name for name, state in deployments.items() if state["circuit_state"] != "open"]
    checks = {"storage": storage, "providers": bool(usable), "accepting": not lifecycle.draining()}
    ok = all(checks.values())
    body = {"status": "ready" if ok else "not_ready", "checks": checks, "deployments": usable}
    return jsonify(body), 200 if ok else 503
