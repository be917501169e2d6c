"""The workflow API over real HTTP on a real gunicorn: the guide's examples, semantics, errors."""

from __future__ import annotations

import uuid

import pytest
import requests
from graphql import get_introspection_query

from tests.harness import Server

GUIDE_WORKFLOWS = """
query {
  workflows {
    id
    name
    places
    transitions {
      id
      from_places
      to_place
    }
  }
}
"""

GUIDE_CREATE_TOKEN = r"""
mutation {
  createToken(input: {
    workflow_id: "document_review"
    place: "draft"
    data: "{\"title\": \"My Document\"}"
  }) {
    id
    place
    data
  }
}
"""

FIRE = """
mutation($token: ID!, $transition: ID!, $data: JSON) {
  fireTransition(input: { token_id: $token, transition_id: $transition, data: $data }) {
    id place data history { transition from_place to_place data timestamp }
  }
}
"""

CREATE_WORKFLOW = """
mutation($input: CreateWorkflowInput!) {
  createWorkflow(input: $input) {
    id name places initial_place transitions { id name from_places to_place conditions }
    analysis { reachable_places unreachable_places terminal_places dead_transitions }
  }
}
"""


@pytest.fixture(scope="module", params=["memory", "nats"])
def api(request, tmp_path_factory):
    """One server per backend for the whole module; every test makes its own tokens."""
    env = {"WEB_CONCURRENCY": "1"}
    if request.param == "nats":
        env.update(NATS_URL=request.getfixturevalue("nats_server").url, NATS_PREFIX=Server.fresh_namespace())
    server = Server(tmp_path_factory.mktemp("workflows"), backend=request.param, env=env)
    server.start()
    yield server
    server.stop()


def data_of(result: dict) -> dict:
    assert "errors" not in result, result
    return result["data"]


def codes(result: dict) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


def new_token(api: Server, workflow_id: str = "document_review", **fields) -> dict:
    result = api.graphql(
        "mutation($input: CreateTokenInput!) { createToken(input: $input) { id place data metadata } }",
        {"input": {"workflow_id": workflow_id, **fields}},
    )
    return data_of(result)["createToken"]


def fire(api: Server, token: str, transition: str, data=None) -> dict:
    return api.graphql(FIRE, {"token": token, "transition": transition, "data": data})


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


# --- the guide, verbatim ------------------------------------------------------------


def test_guide_list_workflows_returns_the_default_workflows(api):
    workflows = {w["id"]: w for w in data_of(api.graphql(GUIDE_WORKFLOWS))["workflows"]}
    review = workflows["document_review"]
    assert review["name"] == "Document Review Process"
    assert review["places"] == ["draft", "pending_review", "reviewed", "approved", "rejected"]
    assert [(t["id"], t["from_places"], t["to_place"]) for t in review["transitions"]] == [
        ("submit", ["draft"], "pending_review"),
        ("review", ["pending_review"], "reviewed"),
        ("approve", ["reviewed"], "approved"),
        ("reject", ["reviewed"], "rejected"),
        ("revise", ["rejected"], "draft"),
    ]
    deployment = workflows["software_deployment"]
    assert deployment["name"] == "Software Deployment Pipeline"
    assert deployment["places"] == ["development", "staging", "production", "rollback", "hotfix"]
    assert [(t["id"], t["from_places"], t["to_place"]) for t in deployment["transitions"]] == [
        ("deploy_to_staging", ["development"], "staging"),
        ("deploy_to_production", ["staging"], "production"),
        ("rollback_from_production", ["production"], "rollback"),
        ("create_hotfix", ["production"], "hotfix"),
        ("deploy_hotfix", ["rollback"], "staging"),
        ("hotfix_to_staging", ["hotfix"], "staging"),
    ]


def test_guide_create_token_stores_the_decoded_json_object(api):
    token = data_of(api.graphql(GUIDE_CREATE_TOKEN))["createToken"]
    assert token["place"] == "draft"
    assert token["data"] == {"title": "My Document"}
    again = data_of(api.graphql("query($id: ID!) { token(id: $id) { data } }", {"id": token["id"]}))
    assert again["token"]["data"] == {"title": "My Document"}


def test_guide_examples_work_over_curl_style_raw_json(api):
    response = requests.post(
        api.graphql_url + "/graphql",
        data='{"query": "{ workflows { id } }"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    assert {"id": "document_review"} in response.json()["data"]["workflows"]


def test_default_workflow_conditions_are_listed(api):
    result = api.graphql('{ workflow(id: "software_deployment") { transitions { id conditions } } }')
    conditions = {t["id"]: t["conditions"] for t in data_of(result)["workflow"]["transitions"]}
    assert conditions == {
        "deploy_to_staging": ["tests_passed"],
        "deploy_to_production": ["qa_approved"],
        "rollback_from_production": [],
        "create_hotfix": ["critical_bug_detected"],
        "deploy_hotfix": [],
        "hotfix_to_staging": ["hotfix_tested"],
    }


# --- semantics ----------------------------------------------------------------------


def test_a_token_starts_in_the_initial_place_by_default(api):
    assert new_token(api)["place"] == "draft"


def test_firing_moves_the_token_merges_data_and_appends_history(api):
    token = new_token(api, data={"title": "T", "version": 1})
    moved = data_of(fire(api, token["id"], "submit", {"version": 2, "author": "ann"}))["fireTransition"]
    assert moved["place"] == "pending_review"
    assert moved["data"] == {"title": "T", "version": 2, "author": "ann"}
    [event] = moved["history"]
    assert (event["transition"], event["from_place"], event["to_place"]) == ("submit", "draft", "pending_review")
    assert event["data"] == {"version": 2, "author": "ann"}
    assert event["timestamp"].endswith("Z")
    moved = data_of(fire(api, token["id"], "review"))["fireTransition"]
    assert [h["transition"] for h in moved["history"]] == ["submit", "review"]


def test_firing_from_the_wrong_place_says_where_the_token_is(api):
    token = new_token(api)
    result = fire(api, token["id"], "approve")
    assert codes(result) == ["TRANSITION_NOT_ENABLED"]
    message = result["errors"][0]["message"]
    assert "'draft'" in message and "'reviewed'" in message
    assert data_of(
        api.graphql("query($id: ID!) { token(id: $id) { place history { transition } } }", {"id": token["id"]})
    )["token"] == {"place": "draft", "history": []}


def test_a_failed_guard_names_the_condition_and_leaves_the_token(api):
    token = new_token(api, "software_deployment", data={"tests_passed": False})
    result = fire(api, token["id"], "deploy_to_staging")
    assert codes(result) == ["CONDITION_FAILED"]
    assert "tests_passed" in result["errors"][0]["message"]
    assert data_of(api.graphql("query($id: ID!) { token(id: $id) { place } }", {"id": token["id"]}))["token"] == {
        "place": "development"
    }


def test_a_guard_sees_the_data_given_with_the_firing(api):
    token = new_token(api, "software_deployment")
    moved = data_of(fire(api, token["id"], "deploy_to_staging", {"tests_passed": True}))["fireTransition"]
    assert moved["place"] == "staging"


def test_a_guard_can_read_metadata(api):
    workflow = unique("guarded")
    data_of(
        api.graphql(
            CREATE_WORKFLOW,
            {
                "input": {
                    "id": workflow,
                    "name": "Guarded",
                    "places": ["a", "b"],
                    "initial_place": "a",
                    "transitions": [
                        {
                            "id": "go",
                            "from_places": ["a"],
                            "to_place": "b",
                            "conditions": ["metadata.owner == 'ops' and priority >= 2"],
                        }
                    ],
                }
            },
        )
    )
    blocked = new_token(api, workflow, data={"priority": 3}, metadata={"owner": "dev"})
    assert codes(fire(api, blocked["id"], "go")) == ["CONDITION_FAILED"]
    allowed = new_token(api, workflow, data={"priority": 3}, metadata={"owner": "ops"})
    assert data_of(fire(api, allowed["id"], "go"))["fireTransition"]["place"] == "b"


def test_available_transitions_follow_place_and_guards(api):
    token = new_token(api, "software_deployment")
    query = (
        "query($id: ID!) { availableTransitions(token_id: $id) { id } token(id: $id) { available_transitions { id } } }"
    )
    result = data_of(api.graphql(query, {"id": token["id"]}))
    assert result == {"availableTransitions": [], "token": {"available_transitions": []}}
    ready = new_token(api, "software_deployment", data={"tests_passed": True})
    result = data_of(api.graphql(query, {"id": ready["id"]}))
    assert result["availableTransitions"] == [{"id": "deploy_to_staging"}]


def test_tokens_can_be_listed_by_workflow_and_place(api):
    workflow = unique("listing")
    data_of(
        api.graphql(
            CREATE_WORKFLOW,
            {
                "input": {
                    "id": workflow,
                    "name": "Listing",
                    "places": ["a", "b"],
                    "initial_place": "a",
                    "transitions": [{"id": "go", "from_places": ["a"], "to_place": "b"}],
                }
            },
        )
    )
    first, second = new_token(api, workflow), new_token(api, workflow)
    fire(api, second["id"], "go")
    query = "query($w: ID, $p: String) { tokens(workflow_id: $w, place: $p) { id place } }"
    assert len(data_of(api.graphql(query, {"w": workflow}))["tokens"]) == 2
    assert data_of(api.graphql(query, {"w": workflow, "p": "a"}))["tokens"] == [{"id": first["id"], "place": "a"}]


def test_a_token_can_start_in_another_place_but_not_an_unknown_one(api):
    assert new_token(api, place="reviewed")["place"] == "reviewed"
    result = api.graphql('mutation { createToken(input: { workflow_id: "document_review", place: "nowhere" }) { id } }')
    assert codes(result) == ["VALIDATION_ERROR"]


def test_token_data_must_be_an_object(api):
    result = api.graphql('mutation { createToken(input: { workflow_id: "document_review", data: 42 }) { id } }')
    assert codes(result) == ["VALIDATION_ERROR"]


def test_deleting_a_token_then_its_workflow(api):
    workflow = unique("doomed")
    data_of(
        api.graphql(
            CREATE_WORKFLOW,
            {"input": {"id": workflow, "name": "Doomed", "places": ["a"], "initial_place": "a", "transitions": []}},
        )
    )
    token = new_token(api, workflow)
    refused = api.graphql("mutation($id: ID!) { deleteWorkflow(id: $id) }", {"id": workflow})
    assert codes(refused) == ["VALIDATION_ERROR"]
    assert data_of(api.graphql("mutation($id: ID!) { deleteToken(id: $id) }", {"id": token["id"]})) == {
        "deleteToken": True
    }
    assert codes(api.graphql("query($id: ID!) { token(id: $id) { id } }", {"id": token["id"]})) == ["NOT_FOUND"]
    assert data_of(api.graphql("mutation($id: ID!) { deleteWorkflow(id: $id) }", {"id": workflow})) == {
        "deleteWorkflow": True
    }
    assert codes(api.graphql("query($id: ID!) { workflow(id: $id) { id } }", {"id": workflow})) == ["NOT_FOUND"]


# --- creating workflows: validation and analysis ------------------------------------


def test_create_workflow_returns_it_with_its_analysis(api):
    workflow = unique("net")
    created = data_of(
        api.graphql(
            CREATE_WORKFLOW,
            {
                "input": {
                    "id": workflow,
                    "name": "Net",
                    "places": ["start", "middle", "end", "island"],
                    "initial_place": "start",
                    "transitions": [
                        {
                            "id": "t1",
                            "name": "First",
                            "from_places": ["start"],
                            "to_place": "middle",
                            "conditions": ["ok"],
                        },
                        {"id": "t2", "from_places": ["middle", "start"], "to_place": "end"},
                        {"id": "stuck", "from_places": ["island"], "to_place": "start"},
                    ],
                }
            },
        )
    )["createWorkflow"]
    assert created["id"] == workflow
    assert created["transitions"][0] == {
        "id": "t1",
        "name": "First",
        "from_places": ["start"],
        "to_place": "middle",
        "conditions": ["ok"],
    }
    assert created["transitions"][1]["name"] == "t2"
    assert created["analysis"] == {
        "reachable_places": ["start", "middle", "end"],
        "unreachable_places": ["island"],
        "terminal_places": ["end"],
        "dead_transitions": ["stuck"],
    }
    listed = data_of(api.graphql("{ workflows { id } }"))["workflows"]
    assert {"id": workflow} in listed


def test_a_workflow_without_id_gets_one(api):
    created = data_of(
        api.graphql(
            CREATE_WORKFLOW, {"input": {"name": "Anonymous", "places": ["a"], "initial_place": "a", "transitions": []}}
        )
    )["createWorkflow"]
    assert len(created["id"]) >= 8


def test_a_taken_workflow_id_conflicts(api):
    result = api.graphql(
        CREATE_WORKFLOW,
        {"input": {"id": "document_review", "name": "Again", "places": ["a"], "initial_place": "a", "transitions": []}},
    )
    assert codes(result) == ["CONFLICT"]


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"places": []}, "at least one place"),
        ({"places": ["a", "a"]}, "listed twice"),
        ({"places": ["a", " "]}, "must not be empty"),
        ({"initial_place": "z"}, "initial_place 'z'"),
        ({"transitions": [{"id": "t", "from_places": ["a"], "to_place": "z"}]}, "unknown place 'z'"),
        ({"transitions": [{"id": "t", "from_places": ["q"], "to_place": "b"}]}, "unknown place 'q'"),
        ({"transitions": [{"id": "t", "from_places": [], "to_place": "b"}]}, "no from_places"),
        ({"transitions": [{"id": "t", "from_places": ["a"], "to_place": "b"}] * 2}, "used twice"),
        (
            {"transitions": [{"id": "t", "from_places": ["a"], "to_place": "b", "conditions": ["ok and"]}]},
            "at position 6",
        ),
        ({"id": "has.dot"}, "workflow id"),
        ({"name": ""}, "name must not be empty"),
    ],
)
def test_invalid_workflows_are_refused_with_the_reason(api, change, phrase):
    definition = {"id": unique("bad"), "name": "Bad", "places": ["a", "b"], "initial_place": "a", "transitions": []}
    result = api.graphql(CREATE_WORKFLOW, {"input": {**definition, **change}})
    assert codes(result) == ["VALIDATION_ERROR"], result
    assert phrase in result["errors"][0]["message"]


# --- errors and limits --------------------------------------------------------------


def test_unknown_things_are_not_found(api):
    assert codes(api.graphql('{ workflow(id: "nope") { id } }')) == ["NOT_FOUND"]
    assert codes(api.graphql('{ token(id: "nope") { id } }')) == ["NOT_FOUND"]
    assert codes(fire(api, "nope", "submit")) == ["NOT_FOUND"]
    token = new_token(api)
    result = fire(api, token["id"], "teleport")
    assert codes(result) == ["NOT_FOUND"] and "teleport" in result["errors"][0]["message"]
    assert codes(api.graphql('mutation { createToken(input: { workflow_id: "nope" }) { id } }')) == ["NOT_FOUND"]


def test_expected_errors_are_logged_in_one_line_without_a_traceback(api):
    assert codes(api.graphql('{ workflow(id: "absent_from_logs") { id } }')) == ["NOT_FOUND"]
    assert "graphql NOT_FOUND: workflow 'absent_from_logs' not found" in api.logs()
    assert "Traceback" not in api.logs()


def test_invalid_graphql_has_a_code(api):
    result = api.graphql("{ workflows { nonsense } }")
    assert codes(result) == ["GRAPHQL_VALIDATION_FAILED"]


def test_a_too_deep_query_is_refused(api):
    # the schema has no cycles yet, so the deep part names fields that do not exist; depth is
    # still refused on its own, with its own code and message
    deep = "{ workflows { transitions { " + "x { " * 20 + "y" + " }" * 20 + " } } }"
    result = api.graphql(deep)
    assert "QUERY_TOO_COMPLEX" in codes(result)
    message = next(e["message"] for e in result["errors"] if e["extensions"]["code"] == "QUERY_TOO_COMPLEX")
    assert message == "Query is too deep: depth 23 exceeds the maximum of 12."


def test_fragments_count_towards_depth(api):
    query = (
        "query Q { workflows { ...W } } fragment W on Workflow { transitions { ...T } } fragment T on Transition { id }"
    )
    assert "errors" not in api.graphql(query)
    deep = (
        "query Q { workflows { ...W } } fragment W on Workflow { transitions { "
        + "x { " * 11
        + "y"
        + " }" * 11
        + " } }"
    )
    assert "QUERY_TOO_COMPLEX" in codes(api.graphql(deep))


def test_a_query_selecting_too_many_fields_is_refused(api):
    fields = " ".join(f"w{i}: workflows {{ id }}" for i in range(1100))
    result = api.graphql("{ " + fields + " }")
    assert codes(result) == ["QUERY_TOO_COMPLEX"]


def test_graphiql_introspection_is_not_limited(api):
    result = api.graphql(get_introspection_query(descriptions=True, input_value_deprecation=True))
    assert "errors" not in result
    assert any(t["name"] == "Workflow" for t in result["data"]["__schema"]["types"])


def test_malformed_json_and_missing_query_get_400_graphql_errors(api):
    for body in ("{not json", '{"variables": {}}', "[]"):
        response = requests.post(
            api.graphql_url + "/graphql", data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert error["message"] and error["extensions"]["code"]


def test_graphiql_is_served_at_root_and_to_browsers_at_graphql(api):
    root = requests.get(api.graphql_url + "/", timeout=10)
    assert root.status_code == 200 and "text/html" in root.headers["Content-Type"]
    assert "graphiql" in root.text.lower()
    browser = requests.get(
        api.graphql_url + "/graphql", headers={"Accept": "text/html,application/xhtml+xml"}, timeout=10
    )
    assert browser.status_code == 200 and "graphiql" in browser.text.lower()
    query = requests.get(api.graphql_url + "/graphql", params={"query": "{ workflows { id } }"}, timeout=10)
    assert query.json()["data"]["workflows"]


def test_no_default_workflows_when_turned_off(server_factory):
    server = server_factory(CB_LOAD_DEFAULT_WORKFLOWS="false")
    assert data_of(server.graphql("{ workflows { id } }")) == {"workflows": []}
