"""Bounded fuzzing of both APIs, inside the suite.

REST: schemathesis generates requests from GET /openapi.json (valid and invalid ones)
and checks that no answer is a 5xx, every status and content type is documented and
every body (errors included, in the OpenAI envelope) matches its schema.

GraphQL: schemathesis generates queries and mutations from the introspected schema
(destructive mutations excluded), then a workflows query must return every workflow
that existed before, unchanged, and every workflow must still resolve.
"""

from __future__ import annotations

import collections
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import Server
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

MAX_EXAMPLES = int(os.environ.get("CB_FUZZ_EXAMPLES", "30"))  # raise for a deeper local run
TRIED: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
WORKFLOWS = (
    "{ workflows { id name description places initial_place created_at updated_at "
    "transitions { id name from_places to_place conditions } } }"
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    with OpenAIUpstream() as upstream:
        server = Server(
            tmp_path_factory.mktemp("fuzz"),
            env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.base_url, "MAX_REQUEST_BYTES": "65536"},
        )
        server.start()
        yield server
        server.stop()
    print(f"\nfuzz cases tried: {dict(TRIED)}")


@pytest.fixture(scope="module")
def rest_schema(fuzzed_server):
    return schemathesis.openapi.from_url(fuzzed_server.openai_url + "/openapi.json")


@pytest.fixture(scope="module")
def graphql_schema(fuzzed_server):
    schema = schemathesis.graphql.from_url(fuzzed_server.graphql_url + "/graphql")
    return schema.exclude(name_regex=r"(?i)delete|revoke")


REST_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode: GenerationMode, test) -> None:
    """Run ``test(case)`` on MAX_EXAMPLES generated cases of one operation."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        test(case)

    try:
        run()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE  # an operation without inputs has nothing to get wrong


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_rest_api_never_5xx_and_matches_its_description(rest_schema, mode):
    def check(case):
        TRIED[f"rest {mode}"] += 1
        case.call_and_validate(checks=REST_CHECKS)

    for operation in _operations(rest_schema):
        _fuzz(operation, mode, check)


@pytest.fixture(scope="module")
def workflows_before(fuzzed_server):
    result = fuzzed_server.graphql(WORKFLOWS)
    assert result["data"]["workflows"], "the default workflows are loaded"
    return result["data"]["workflows"]


def test_graphql_never_500(graphql_schema, workflows_before):
    def check(case):
        TRIED["graphql"] += 1
        response = case.call()
        assert response.status_code < 500, response.text
        for error in response.json().get("errors") or []:
            assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", error

    for operation in _operations(graphql_schema):
        _fuzz(operation, GenerationMode.POSITIVE, check)


def test_storage_is_intact_after_fuzzing(fuzzed_server, workflows_before):
    result = fuzzed_server.graphql(WORKFLOWS)
    assert "errors" not in result, result
    after = {w["id"]: w for w in result["data"]["workflows"]}
    for workflow in workflows_before:
        assert after[workflow["id"]] == workflow
    for workflow in after.values():
        assert workflow["initial_place"] in workflow["places"]
        detail = fuzzed_server.graphql("query($id: ID!) { workflow(id: $id) { id } }", {"id": workflow["id"]})
        assert detail["data"]["workflow"]["id"] == workflow["id"]
    assert requests.get(fuzzed_server.openai_url + "/health", timeout=5).status_code == 200
