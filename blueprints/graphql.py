"""The GraphQL endpoint (port 4000): GraphiQL, queries and mutations over HTTP."""

from __future__ import annotations

import json

from ariadne import graphql_sync
from flask import Blueprint, jsonify, render_template, request

from blueprints import services
from schema import format_error, get_schema
from schema.documents import documents
from schema.error_log import error_log
from schema.limits import VALIDATION_RULES

bp = Blueprint("graphql", __name__, template_folder="templates")


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.method == "GET" and best == "text/html" and "query" not in request.args


def _bad_request(message: str):
    return jsonify({"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}), 400


@bp.get("/")
def graphiql():
    """GraphiQL from files we serve ourselves (blueprints/static/vendor), no CDN."""
    return render_template("graphiql.html")


@bp.route("/graphql", methods=["GET", "POST"])
def graphql_endpoint():
    if _wants_html():
        return graphiql()
    if request.method == "GET":
        data = {"query": request.args.get("query"), "operationName": request.args.get("operationName")}
        if request.args.get("variables"):
            try:
                data["variables"] = json.loads(request.args["variables"])
            except ValueError:
                return _bad_request("variables is not valid JSON")
    else:
        data = request.get_json(silent=True)
        if data is None:
            return _bad_request("Request body must be a JSON object with a 'query' string.")
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return _bad_request("Request body must be a JSON object with a 'query' string.")
    success, result = graphql_sync(
        get_schema(),
        data,
        context_value={"services": services(), "request": request},
        error_formatter=format_error,
        validation_rules=VALIDATION_RULES,
        query_parser=documents.query_parser,
        query_validator=documents.query_validator,
        logger=error_log,
        debug=False,
    )
    return jsonify(result), _status(success, result)


def _status(success: bool, result: dict) -> int:
    """503 while storage is unreachable; otherwise Ariadne's 200, or 400 when there were errors."""
    codes = {(e.get("extensions") or {}).get("code") for e in result.get("errors") or ()}
    if "STORAGE_UNAVAILABLE" in codes:
        return 503
    return 200 if success else 400
