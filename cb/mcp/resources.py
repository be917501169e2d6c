"""Workflow definitions as MCP resources: each workflow's Petri net as JSON, and as a diagram.

``cb://workflows/<id>`` is the definition exactly as GraphQL's ``workflow(id)`` holds it;
``cb://workflows/<id>/diagram`` is the same net as Mermaid flowchart text (places as nodes,
one arrow per transition and place it leaves, guards in the label): the picture the
dashboard draws, as text a model or a Markdown viewer can read.
"""

from __future__ import annotations

import json

from cb.errors import NotFound
from cb.mcp.errors import INVALID_PARAMS, RESOURCE_NOT_FOUND, McpError
from cb.workflow import Workflow

PREFIX = "cb://workflows/"
DIAGRAM = "/diagram"
JSON_TYPE = "application/json"
MERMAID_TYPE = "text/vnd.mermaid"

TEMPLATES = [
    {
        "uriTemplate": PREFIX + "{workflow_id}",
        "name": "workflow",
        "title": "Workflow definition (Petri net JSON)",
        "mimeType": JSON_TYPE,
    },
    {
        "uriTemplate": PREFIX + "{workflow_id}" + DIAGRAM,
        "name": "workflow-diagram",
        "title": "Workflow diagram (Mermaid)",
        "mimeType": MERMAID_TYPE,
    },
]


def listing(workflows: list[Workflow]) -> list[dict]:
    """Two resources per workflow: its definition and its diagram."""
    found = []
    for workflow in workflows:
        about = f": {workflow.description}" if workflow.description else ""
        found.append(
            {
                "uri": PREFIX + workflow.id,
                "name": workflow.id,
                "title": f"{workflow.name} (definition)",
                "description": f"Places, transitions and guards of workflow {workflow.id!r}{about}",
                "mimeType": JSON_TYPE,
            }
        )
        found.append(
            {
                "uri": PREFIX + workflow.id + DIAGRAM,
                "name": f"{workflow.id}-diagram",
                "title": f"{workflow.name} (diagram)",
                "description": f"Workflow {workflow.id!r} as a Mermaid flowchart",
                "mimeType": MERMAID_TYPE,
            }
        )
    return found


def read(engine, uri: str) -> dict:
    """A ``ReadResourceResult`` for ``uri``; McpError -32002 when there is no such resource."""
    if not isinstance(uri, str) or not uri.startswith(PREFIX):
        raise McpError(f"Unknown resource {uri!r}: resources are {PREFIX}<workflow_id>[{DIAGRAM}]", INVALID_PARAMS, 200)
    name = uri[len(PREFIX) :]
    diagram = name.endswith(DIAGRAM)
    workflow_id = name[: -len(DIAGRAM)] if diagram else name
    try:
        workflow = engine.get_workflow(workflow_id)
    except NotFound:
        raise McpError(
            f"Resource not found: no workflow {workflow_id!r} (resources/list shows every workflow)",
            RESOURCE_NOT_FOUND,
            200,
            {"uri": uri},
        ) from None
    if diagram:
        return {"contents": [{"uri": uri, "mimeType": MERMAID_TYPE, "text": mermaid(workflow)}]}
    text = json.dumps(workflow.to_dict(), ensure_ascii=False, indent=2)
    return {"contents": [{"uri": uri, "mimeType": JSON_TYPE, "text": text}]}


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(workflow: Workflow) -> str:
    """The net as a Mermaid flowchart: ``start`` points at the initial place, arrows are transitions."""
    node = {place: f"p{i}" for i, place in enumerate(workflow.places)}
    lines = ["flowchart LR", "  start((start))"]
    lines += [f'  {node[place]}(["{_label(place)}"])' for place in workflow.places]
    lines.append(f"  start --> {node[workflow.initial_place]}")
    for transition in workflow.transitions:
        label = transition.id + (f" [{' and '.join(transition.conditions)}]" if transition.conditions else "")
        for source in transition.from_places:
            if source in node and transition.to_place in node:
                lines.append(f'  {node[source]} -- "{_label(label)}" --> {node[transition.to_place]}')
    return "\n".join(lines) + "\n"
