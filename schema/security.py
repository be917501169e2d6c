"""Bindings of ``security.graphql``: client API keys (create, list, revoke)."""

from __future__ import annotations

from datetime import UTC, datetime

from ariadne import MutationType, ObjectType, QueryType

from cb.errors import ValidationError
from cb.security import ApiKey

query = QueryType()
mutation = MutationType()
api_key = ObjectType("ApiKey")


def _security(info):
    return info.context["services"].security


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"expires_at {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@query.field("apiKeys")
def resolve_api_keys(_, info) -> list[ApiKey]:
    return _security(info).keys.list()


@mutation.field("createApiKey")
def resolve_create_api_key(_, info, input: dict) -> dict:
    record, plaintext = _security(info).keys.create(
        input["name"],
        input.get("rpm_limit"),
        input.get("tpm_limit"),
        input.get("allowed_models"),
        parse_iso(input.get("expires_at")),
    )
    return {"key": plaintext, "api_key": record}


@mutation.field("revokeApiKey")
def resolve_revoke_api_key(_, info, id: str) -> ApiKey:
    return _security(info).keys.revoke(id)


for _name in ("created_at", "last_used_at", "expires_at"):
    api_key.set_field(_name, lambda record, _info, _name=_name: iso(getattr(record, _name)))

bindables = [query, mutation, api_key]
