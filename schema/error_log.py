"""How GraphQL errors are logged: expected ones in one line, unexpected ones with a traceback.

Ariadne logs every error at ERROR with its traceback. A NOT_FOUND or a failed guard is
the API working as designed, so domain errors and invalid queries are logged at INFO
without a traceback; anything else is a bug and keeps the traceback.
"""

from __future__ import annotations

import logging

from graphql import GraphQLError

from cb.errors import CircuitBreakerError
from cb.logs import get_logger


class GraphQLErrorLog(logging.LoggerAdapter):
    """The logger handed to Ariadne (it calls ``logger.error(error, exc_info=error)``)."""

    def error(self, msg, *args, exc_info=None, **kwargs):
        error = exc_info if isinstance(exc_info, BaseException) else msg
        if isinstance(error, GraphQLError) and isinstance(error.original_error, CircuitBreakerError):
            error = error.original_error
        if isinstance(error, CircuitBreakerError):
            self.logger.info("graphql %s: %s", error.code, error.message)
        elif isinstance(error, GraphQLError) and error.original_error is None:
            self.logger.info("graphql request refused: %s", error.message)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


error_log = GraphQLErrorLog(get_logger("graphql"), {})
