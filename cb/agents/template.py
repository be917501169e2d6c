"""Safe prompt templates: ``{{data.title}}``, ``{{metadata.author}}``, ``{{place}}``.

A placeholder is a dotted path looked up in a fixed set of roots (``data``, ``metadata``,
``place``, ``token_id``, ``workflow_id``); nothing is evaluated, so a template can never
run code. Strings are inserted as they are, other values as JSON. A path the token does
not have is a :class:`TemplateError` that names it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cb.agents.errors import TemplateError

ROOTS = ("data", "metadata", "place", "token_id", "workflow_id")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$")

DEFAULT_TEMPLATE = "The token is in place {{place}} of workflow {{workflow_id}}.\n\nIts data:\n{{data}}"


def _paths(template: str) -> list[str]:
    paths = []
    for match in _PLACEHOLDER.finditer(template):
        path = match.group(1)
        if not _PATH.match(path):
            raise TemplateError(f"user_template placeholder {match.group(0)!r} is not a dotted field path")
        if path.split(".")[0] not in ROOTS:
            raise TemplateError(f"user_template placeholder {{{{{path}}}}} must start with one of {', '.join(ROOTS)}")
        paths.append(path)
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise TemplateError("user_template has an unbalanced '{{' or '}}'")
    return paths


def check(template: str | None) -> None:
    """Raise TemplateError if ``template`` is malformed (checked when an agent is saved)."""
    if template:
        _paths(template)


def _lookup(root: dict, path: str) -> Any:
    value: Any = root
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            where = ".".join(walked[:-1])
            raise TemplateError(f"user_template needs {{{{{path}}}}}, but the token's {where} has no field {part!r}")
    return value


def render(template: str | None, token: dict) -> str:
    """The prompt for ``token`` (a token as a dict, see cb.workflow.Token.to_dict)."""
    template = template or DEFAULT_TEMPLATE
    _paths(template)
    root = {
        "data": token.get("data") or {},
        "metadata": token.get("metadata") or {},
        "place": token.get("place"),
        "token_id": token.get("id"),
        "workflow_id": token.get("workflow_id"),
    }

    def value(match: re.Match) -> str:
        found = _lookup(root, match.group(1))
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return _PLACEHOLDER.sub(value, template)
