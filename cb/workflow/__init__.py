"""Petri-net workflows: the model, guard conditions, validation and analysis, the engine."""

from cb.workflow.conditions import Condition, ConditionSyntaxError
from cb.workflow.engine import WorkflowEngine, event_subject
from cb.workflow.errors import ConditionFailed, TransitionNotEnabled
from cb.workflow.model import HistoryEvent, Token, Transition, Workflow
from cb.workflow.validation import Analysis, analyse, validate

__all__ = [
    "Analysis",
    "Condition",
    "ConditionFailed",
    "ConditionSyntaxError",
    "HistoryEvent",
    "Token",
    "Transition",
    "TransitionNotEnabled",
    "Workflow",
    "WorkflowEngine",
    "analyse",
    "event_subject",
    "validate",
]
