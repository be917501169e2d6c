"""Client API keys on the OpenAI port: required keys, GraphQL-managed keys, revocation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
import requests

from cb.security.keys import BUCKET, ApiKey, hash_key
from cb.storage.nats import NatsStorage
from tests.harness import Server
from tests.security_helpers import chat, client, create_key, start_with_upstream
from tests.upstreams.openai_server import OpenAIUpstream

ENV_KEY = "cb-env-key-for-tests-0123456789"


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def guarded(server_factory, upstream):
    return start_with_upstream(server_factory, upstream, OPENAI_API_KEY_REQUIRED="true", CB_API_KEYS=ENV_KEY)


def _envelope_code(response: requests.Response) -> str:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["code"]


def test_missing_key_is_401_invalid_api_key(guarded):
    response = chat(guarded)
    assert response.status_code == 401
    assert _envelope_code(response) == "invalid_api_key"


def test_unknown_key_is_401_and_never_reaches_the_upstream(guarded, upstream):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(guarded, "cb-not-a-real-key-000000000000").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "invalid_api_key"
    assert upstream.chats() == []


def test_key_from_cb_api_keys_works_with_the_openai_client(guarded):
    reply = client(guarded, ENV_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


def test_azure_style_api_key_header_is_accepted(guarded):
    assert chat(guarded, ENV_KEY, header="api-key").status_code == 200


def test_health_never_needs_a_key(guarded):
    assert requests.get(guarded.openai_url + "/health", timeout=5).status_code == 200


def test_without_the_flag_requests_without_a_key_are_served(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream)
    assert chat(server).status_code == 200
    assert chat(server, "whatever-the-client-sends").status_code == 200


def test_created_key_is_returned_once_and_listed_without_secret(guarded):
    plaintext, record = create_key(guarded, name="ci", rpm_limit=100, allowed_models=["gpt-4o-mini"])
    assert plaintext.startswith("cb-") and len(plaintext) > 40
    assert plaintext.startswith(record["prefix"]) and len(record["prefix"]) < 12
    listed = guarded.graphql("{ apiKeys { id name prefix rpm_limit allowed_models created_at last_used_at revoked } }")
    assert listed["data"]["apiKeys"][0]["id"] == record["id"]
    assert plaintext not in str(listed)
    assert chat(guarded, plaintext).status_code == 200


def test_revoked_key_is_refused(guarded):
    plaintext, record = create_key(guarded)
    assert chat(guarded, plaintext).status_code == 200
    revoked = guarded.graphql("mutation($id: ID!) { revokeApiKey(id: $id) { id revoked } }", {"id": record["id"]})
    assert revoked["data"]["revokeApiKey"]["revoked"] is True
    time.sleep(0.6)
    response = chat(guarded, plaintext)
    assert response.status_code == 401
    assert _envelope_code(response) == "invalid_api_key"


def test_revoking_an_unknown_key_is_not_found(guarded):
    result = guarded.graphql('mutation { revokeApiKey(id: "key_nope") { id } }')
    assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_expired_key_is_refused(guarded):
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    plaintext, _ = create_key(guarded, expires_at=soon)
    assert chat(guarded, plaintext).status_code == 200
    time.sleep(1.2)
    response = chat(guarded, plaintext)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_expiry_in_the_past_is_a_validation_error(guarded):
    result = guarded.graphql(
        'mutation { createApiKey(input: {name: "x", expires_at: "2001-01-01T00:00:00Z"}) { key } }'
    )
    assert result["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


def test_model_outside_allowed_models_is_403(guarded, upstream):
    plaintext, _ = create_key(guarded, allowed_models=["gpt-4o"])
    response = chat(guarded, plaintext, model="gpt-4o-mini")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert upstream.chats() == []


def test_revocation_reaches_every_worker_within_a_second(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, "nats", OPENAI_API_KEY_REQUIRED="true", WEB_CONCURRENCY="3")
    plaintext, record = create_key(server)
    for _ in range(12):  # warm every worker's cache with "valid"
        assert requests.get(server.openai_url + "/v1/models", headers={"api-key": plaintext}, timeout=5).ok
    server.graphql("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", {"id": record["id"]})
    revoked_at = time.monotonic()
    time.sleep(1.0 - (time.monotonic() - revoked_at))
    statuses = {
        requests.get(server.openai_url + "/v1/models", headers={"api-key": plaintext}, timeout=5).status_code
        for _ in range(24)
    }
    assert statuses == {401}


def test_a_key_stored_by_a_version_without_the_id_index_is_revocable(server_factory, upstream, nats_server):
    prefix, plaintext = Server.fresh_namespace(), "cb-stored-before-the-index-0123456789abcdefghijk"
    older = NatsStorage(nats_server.url, prefix=prefix)  # what an older version left in NATS
    older.connect()
    key = ApiKey(id="key_00000000000000aa", name="old", prefix=plaintext[:10], key_hash=hash_key(plaintext))
    older.create(BUCKET, key.key_hash, key.to_dict())
    older.close()
    server = start_with_upstream(server_factory, upstream, "nats", OPENAI_API_KEY_REQUIRED="true", NATS_PREFIX=prefix)
    assert chat(server, plaintext).status_code == 200
    revoked = server.graphql("mutation($id: ID!) { revokeApiKey(id: $id) { id revoked } }", {"id": key.id})
    assert revoked["data"]["revokeApiKey"] == {"id": key.id, "revoked": True}
    time.sleep(0.6)  # longer than the workers' cache of a key
    assert chat(server, plaintext).status_code == 401
