"""GET /metrics on the GraphQL port: Prometheus text format, all workers folded."""

from flask import Blueprint

from cb import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}
