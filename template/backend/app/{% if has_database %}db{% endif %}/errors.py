"""Database faults answered as 503 Service Unavailable with a JSON `detail`.

A database that is down, frozen or overloaded is a failing dependency, not a bug: the
client learns that it may retry, and the service recovers by itself once the database
answers again, because the pool replaces broken connections.
"""

import logging

from fastapi import FastAPI, Request, Response, status
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)

# PostgreSQL SQLSTATE classes meaning the server cannot serve now: connection
# exception, insufficient resources, operator intervention (shutdown, statement
# timeout) and system error.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
# Seconds a client is told to wait before retrying.
RETRY_AFTER = "1"
NO_FREE_CONNECTION = "database busy: no connection became free in time"


class DatabaseUnavailable(Exception):
    """The database could not serve this request in time; the message says why."""


def unavailable_reason(exc: BaseException) -> str | None:
    """What to tell the client when `exc` means that the database is unavailable,
    or None when it does not. Driver details stay in the log."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "database did not answer in time"
    if isinstance(exc, PoolTimeoutError):
        return NO_FREE_CONNECTION
    if isinstance(exc, DBAPIError):
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if (
            isinstance(exc, OperationalError | InterfaceError)
            or exc.connection_invalidated
            or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
        ):
            return "database unavailable"
    if isinstance(exc, OSError):
        return "database unavailable"
    return None


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


async def _unavailable(request: Request, exc: Exception) -> Response:
    reason = unavailable_reason(exc)
    if reason is None:
        # Any other database error is a bug: the server-error path reports it.
        raise exc
    # The driver's own exception says what happened; statements and their
    # parameters are left out of the log.
    logger.warning("503 %s (%s)", reason, type(_root_cause(exc)).__name__)
    error = HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=reason,
        headers={"Retry-After": RETRY_AFTER},
    )
    # The app's own HTTPException handler renders it, like every other error.
    handlers = request.app.exception_handlers
    handler = next(handlers[cls] for cls in type(error).__mro__ if cls in handlers)
    response: Response = await handler(request, error)
    return response


def add_database_error_handlers(app: FastAPI) -> None:
    """Answer database faults with 503 instead of a 500."""
    for exc_class in (DatabaseUnavailable, DBAPIError, PoolTimeoutError):
        app.add_exception_handler(exc_class, _unavailable)
