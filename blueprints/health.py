"""/health on both ports: storage connectivity and configured providers."""

from flask import Blueprint, jsonify

from blueprints import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    body, healthy = services().health()
    return jsonify(body), 200 if healthy else 503
