"""Why a transition could not fire. Both map to a GraphQL error with ``extensions.code``."""

from cb.errors import CircuitBreakerError


class TransitionNotEnabled(CircuitBreakerError):
    """The token is not in one of the transition's from_places."""

    code = "TRANSITION_NOT_ENABLED"
    http_status = 409


class ConditionFailed(CircuitBreakerError):
    """The token is in the right place but a guard condition does not hold."""

    code = "CONDITION_FAILED"
    http_status = 409

    def __init__(self, message: str, condition: str):
        super().__init__(message)
        self.condition = condition
