"""Parsed and validated documents are cached per worker; answers are those of an uncached run."""

from __future__ import annotations

import requests
from graphql import build_schema, specified_rules

from schema.documents import DocumentCache

SCHEMA = build_schema("type Query { hello(name: String): String }")


def test_the_cache_holds_at_most_its_size_and_forgets_the_oldest():
    cache = DocumentCache(size=3)
    first = cache.parse("{ hello }")
    for name in ("a", "b", "c"):
        cache.parse(f'{{ hello(name: "{name}") }}')
    assert cache.parse("{ hello }") is not first  # evicted, parsed again
    assert len(cache._parsed) == 3


def test_a_repeated_document_is_parsed_and_validated_once():
    cache = DocumentCache()
    document = cache.parse("{ hello }")
    assert cache.parse("{ hello }") is document
    errors = cache.validate(SCHEMA, document, specified_rules)
    assert errors == [] and cache.validate(SCHEMA, document, specified_rules) is errors


def test_syntax_and_validation_errors_are_the_same_every_time(server):
    for _ in range(3):
        bad = requests.post(server.graphql_url + "/graphql", json={"query": "{ workflows { id "}, timeout=10)
        assert bad.status_code == 400
        assert "Syntax Error" in bad.json()["errors"][0]["message"]
        unknown = requests.get(server.graphql_url + "/graphql", params={"query": "{ nope }"}, timeout=10)
        assert unknown.status_code == 400
        error = unknown.json()["errors"][0]
        assert "Cannot query field 'nope'" in error["message"]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_a_cached_document_runs_with_each_request_s_own_variables(server):
    query = "query($id: ID!) { workflow(id: $id) { id } }"
    for workflow_id in ("document_review", "nope", "document_review"):
        body = requests.post(
            server.graphql_url + "/graphql", json={"query": query, "variables": {"id": workflow_id}}, timeout=10
        ).json()
        if workflow_id == "nope":
            assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        else:
            assert body["data"]["workflow"]["id"] == workflow_id
