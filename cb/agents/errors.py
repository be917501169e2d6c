"""Why an agent or one of its executions could not do what was asked."""

from cb.errors import CircuitBreakerError


class TemplateError(CircuitBreakerError):
    """A user_template is malformed, or names a field the token does not have."""

    code = "TEMPLATE_ERROR"
    http_status = 400


class OutputNotJSON(CircuitBreakerError):
    """parse_json is set but the model's output is not valid JSON."""

    code = "OUTPUT_NOT_JSON"
    http_status = 502


class ExecutionFinished(CircuitBreakerError):
    """The execution already ended; it cannot be cancelled any more."""

    code = "EXECUTION_FINISHED"
    http_status = 409


class Cancelled(Exception):
    """Raised inside a running execution when it was cancelled (not a domain error: control flow)."""


class LeaseLost(Exception):
    """This worker no longer owns the execution (its lease ran out and another worker took it)."""
