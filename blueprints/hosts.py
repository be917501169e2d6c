"""Requests a browser must not be able to make on the operator's behalf.

* Host check (ALLOWED_HOSTS): a Host header the port does not serve gets 421, so a
  DNS-rebinding name pointed at 127.0.0.1 reaches nothing.
* The OpenAI port reads bodies only as ``application/json`` (415 otherwise): ``text/plain``
  and form posts are "simple" cross-site requests that need no CORS preflight.
* GraphQL over GET runs queries only: a mutation or subscription answers 405 with
  ``Allow: POST`` (the GraphQL-over-HTTP spec), so an ``<img src>`` cannot change state.

Each answer is in the port's own error format.
"""

from __future__ import annotations

from flask import Flask, Request, request
from graphql import GraphQLError, OperationType, get_operation_ast, parse

from blueprints.limits import _abandon_body, graphql_error
from blueprints.openai import error_response
from cb.config import Settings
from cb.network import HostCheck

CLOSE = {"Connection": "close"}  # the body is left unread, so the connection cannot be reused


def _misdirected(hosts: HostCheck, req: Request) -> bool:
    if hosts.allows(req.host):
        return False
    _abandon_body(req)
    return True


def openai_guard(settings: Settings):
    """The OpenAI port's check of Host and body type: a 421 or 415 answer, or None to go on."""
    hosts = HostCheck(settings.allowed_hosts_for(settings.openai_api_key_required))

    def guard(req: Request):
        if _misdirected(hosts, req):
            return error_response(
                421,
                f"Host {req.host!r} is not served here (see ALLOWED_HOSTS).",
                "misdirected_request",
                headers=CLOSE,
            )
        # only a request some route takes: a wrong method or path keeps its 405 or 404
        takes_body = req.method in ("POST", "PUT", "PATCH") and req.path.startswith("/v1/")
        if takes_body and req.url_rule is not None and not req.is_json:
            _abandon_body(req)
            return error_response(
                415,
                "Request bodies must be JSON: send Content-Type: application/json.",
                "unsupported_media_type",
                headers=CLOSE,
            )
        return None

    return guard


def install_graphql(app: Flask, settings: Settings) -> None:
    hosts = HostCheck(settings.allowed_hosts_for(bool(settings.graphql_api_key)))

    @app.before_request
    def graphql_request_guard():
        if _misdirected(hosts, request):
            return graphql_error(
                421, f"Host {request.host!r} is not served here (see ALLOWED_HOSTS).", "MISDIRECTED_REQUEST", CLOSE
            )
        if request.method == "GET" and request.path == "/graphql" and _changes_state():
            return graphql_error(
                405, "Mutations and subscriptions must be sent with POST.", "METHOD_NOT_ALLOWED", {"Allow": "POST"}
            )
        return None


def _changes_state() -> bool:
    """True when the GET request's operation is a mutation or subscription (a document that does
    not parse is left to the endpoint, which reports the syntax error)."""
    query = request.args.get("query")
    if not query:
        return False
    try:
        document = parse(query)
    except GraphQLError:
        return False
    operation = get_operation_ast(document, request.args.get("operationName") or None)
    if operation is None:
        return any(
            getattr(d, "operation", None) in (OperationType.MUTATION, OperationType.SUBSCRIPTION)
            for d in document.definitions
        )
    return operation.operation != OperationType.QUERY
