"""Workflows over plain GraphQL-over-HTTP with `requests`: define a Petri net, put a token in
it, fire transitions (one refused by its guard), and print the token's history.

    python examples/python/workflow.py

CB_GRAPHQL_URL (default http://localhost:4000/graphql) is the server's GraphQL endpoint.
"""

import os
import sys

import requests

GRAPHQL_URL = os.environ.get("CB_GRAPHQL_URL", "http://localhost:4000/graphql")

EXPENSE_CLAIM = {
    "name": "Expense claim",
    "description": "A claim is approved (up to 1000) or rejected; approved claims are paid once a receipt is in.",
    "places": ["submitted", "approved", "rejected", "paid"],
    "initial_place": "submitted",
    "transitions": [
        {"id": "approve", "from_places": ["submitted"], "to_place": "approved", "conditions": ["amount <= 1000"]},
        {"id": "reject", "from_places": ["submitted"], "to_place": "rejected"},
        {"id": "pay", "from_places": ["approved"], "to_place": "paid", "conditions": ["receipt_attached"]},
    ],
}

TOKEN_FIELDS = "id place data available_transitions { id } history { transition from_place to_place timestamp }"


class GraphQLError(Exception):
    """The server answered with errors; ``code`` is the first error's extensions.code."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(e["message"] for e in errors))
        self.code = (errors[0].get("extensions") or {}).get("code")


def graphql(query: str, **variables) -> dict:
    """POST one operation and return its data, raising GraphQLError if it failed."""
    response = requests.post(GRAPHQL_URL, json={"query": query, "variables": variables}, timeout=30)
    body = response.json()
    if body.get("errors"):
        raise GraphQLError(body["errors"])
    return body["data"]


def fire(token_id: str, transition: str, data: dict | None = None) -> dict:
    """Fire one transition; the token as it is afterwards."""
    return graphql(
        f"mutation($input: FireTransitionInput!) {{ fireTransition(input: $input) {{ {TOKEN_FIELDS} }} }}",
        input={"token_id": token_id, "transition_id": transition, "data": data},
    )["fireTransition"]


def main() -> None:
    workflow = graphql(
        "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) "
        "{ id name places analysis { terminal_places } } }",
        input=EXPENSE_CLAIM,
    )["createWorkflow"]
    print(
        f"workflow {workflow['id']} ({workflow['name']}): places {', '.join(workflow['places'])}; "
        f"terminal: {', '.join(workflow['analysis']['terminal_places'])}"
    )

    token = graphql(
        f"mutation($input: CreateTokenInput!) {{ createToken(input: $input) {{ {TOKEN_FIELDS} }} }}",
        input={"workflow_id": workflow["id"], "data": {"employee": "Ada", "amount": 420}},
    )["createToken"]
    print(
        f"token {token['id']} in {token['place']}, can fire: "
        f"{', '.join(t['id'] for t in token['available_transitions'])}"
    )

    token = fire(token["id"], "approve")
    print(f"fired approve -> {token['place']}")
    try:
        fire(token["id"], "pay")
    except GraphQLError as refused:
        print(f"pay refused ({refused.code}): {refused}")
    token = fire(token["id"], "pay", {"receipt_attached": True})
    print(f"fired pay with a receipt -> {token['place']}")

    print("history:")
    for event in token["history"]:
        print(f"  {event['timestamp']}  {event['transition']}: {event['from_place']} -> {event['to_place']}")
    print(f"final place: {token['place']}")


if __name__ == "__main__":
    try:
        main()
    except requests.ConnectionError:
        sys.exit(f"Cannot reach {GRAPHQL_URL}: is the server running (make run)?")
