"""What crosses vendors with a request's tools: names every target accepts, freeform tools, schemas, effort.

OpenAI and Gemini take function names of at most 64 characters of ``[a-zA-Z0-9_-]``;
Responses tools may sit in a ``namespace`` and may be ``custom`` (freeform: the model writes
one string, such as a patch). At the edge each client tool gets a canonical name that every
target takes (:func:`canonical_name`: the namespace flattened in, other characters replaced,
a long name cut and suffixed with a digest, so it stays unique), and the request remembers
the tool as the client knows it (:class:`~cb.llm.types.ClientTool`) so calls go back under
the client's own name. A freeform tool becomes a function with one string parameter,
``input`` (:data:`FREEFORM_PARAMETERS`). Schemas lose the keywords targets refuse
(:func:`clean_schema`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from cb.llm.types import ChatRequest, ClientTool, Tool

NAME_LIMIT = 64
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_-]")

#: JSON Schema keywords that describe the document rather than the value; Gemini and strict
#: OpenAI refuse them, no target needs them
SCHEMA_ANNOTATIONS = ("$schema", "$id", "$comment")

FREEFORM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's whole input, as raw text (not JSON)."}},
    "required": ["input"],
}

#: the text before images a tool returned, which other vendors take only in a user turn, after the results
TOOL_IMAGES = "The tool results above returned these images:"

#: effort names -> thinking budgets in tokens (Anthropic's budget_tokens, Gemini's thinkingBudget)
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def canonical_name(name: str, namespace: str | None = None) -> str:
    """A name every target takes for the tool ``name`` (in ``namespace``), the same each time."""
    full = f"{namespace.rstrip('_')}__{name}" if namespace else name
    safe = _NOT_NAME.sub("_", full)
    if len(safe) <= NAME_LIMIT:
        return safe
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{safe[: NAME_LIMIT - 9]}_{digest}"


class Crossing:
    """What an edge parser gathers about a request besides its messages: the client's tools under
    their canonical names, the vendor-run tools it asked for (``web_search``), and what cannot
    cross to another vendor (named in x-cb-dropped)."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []
        self.client_tools: dict[str, ClientTool] = {}
        self.server_tools: list[str] = []
        self.server_names: set[str] = set()  # names the client gave its vendor-run tools
        self.dropped: list[str] = []

    def drop(self, feature: str) -> None:
        if feature not in self.dropped:
            self.dropped.append(feature)

    def add_tool(
        self,
        name: str,
        description: str | None,
        parameters: dict | None,
        strict: bool | None = None,
        namespace: str | None = None,
        kind: str = "function",
    ) -> None:
        """Add a client tool under its canonical name, remembering its own where they differ."""
        canonical = canonical_name(name, namespace)
        if any(tool.name == canonical for tool in self.tools):
            return  # listed twice (a tool search found one already offered): targets want names unique
        if canonical != name or namespace or kind != "function":
            self.client_tools[canonical] = ClientTool(name, namespace, kind)
        self.tools.append(Tool(canonical, description, clean_schema(parameters), strict))


def client_name(request: ChatRequest, name: str) -> ClientTool:
    """The tool the model called, as the client knows it."""
    return request.client_tools.get(name) or ClientTool(name)


def arguments_object(arguments: str) -> dict:
    """A function call's arguments as the object the client's API shows (``input`` in Messages,
    parsed ``arguments`` in Responses): the model's JSON, or an empty object when it wrote none
    or something that is not one."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def custom_input(arguments: str) -> str:
    """A freeform tool's input from the function call the model made (its ``input`` string)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def clean_schema(schema: Any) -> Any:
    """``schema`` without :data:`SCHEMA_ANNOTATIONS`, at any depth (property names left alone)."""
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned = {}
    for key, value in schema.items():
        if key in SCHEMA_ANNOTATIONS:
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            cleaned[key] = {name: clean_schema(sub) for name, sub in value.items()}
        else:
            cleaned[key] = clean_schema(value)
    return cleaned


def thinking_budget(request: ChatRequest, max_tokens: int) -> int | None:
    """The thinking budget for a target that counts tokens (at least 1024, below ``max_tokens``),
    or None when the request asks for no thinking or leaves no room for it."""
    budget = request.reasoning_budget or EFFORT_BUDGETS.get(normal_effort(request.reasoning_effort) or "")
    if not budget:
        return None
    budget = min(budget, max_tokens - 1024)
    return budget if budget >= 1024 else None


def normal_effort(effort: str | None) -> str | None:
    """One of minimal / low / medium / high (``xhigh``, ``max`` are ``high``; ``none``: no thinking)."""
    if effort is None or effort == "none":
        return None
    if effort in EFFORT_BUDGETS:
        return effort
    return "high" if effort in ("xhigh", "max", "maximum") else "medium"


def effort_of(request: ChatRequest) -> str | None:
    """The request's effort for a target that takes a level: named, or from its token budget."""
    if request.reasoning_effort:
        return normal_effort(request.reasoning_effort)
    budget = request.reasoning_budget
    if not budget:
        return None
    return "low" if budget <= 2048 else "medium" if budget <= 12000 else "high"
