"""Domain errors.

Raised inside ``cb/`` and mapped once at the edge: to an HTTP status and the OpenAI
error envelope on the OpenAI port, to a GraphQL error with ``extensions.code`` on the
GraphQL port.
"""


class CircuitBreakerError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "INTERNAL"
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(CircuitBreakerError):
    code = "NOT_FOUND"
    http_status = 404


class ValidationError(CircuitBreakerError):
    code = "VALIDATION_ERROR"
    http_status = 400


class Conflict(CircuitBreakerError):
    """A compare-and-set lost: somebody else changed the entity first."""

    code = "CONFLICT"
    http_status = 409


class StorageUnavailable(CircuitBreakerError):
    code = "STORAGE_UNAVAILABLE"
    http_status = 503


class Unauthenticated(CircuitBreakerError):
    code = "UNAUTHENTICATED"
    http_status = 401
