"""Turn database failures into the SDK's errors, named by what the engine does next.

Driver messages can carry record values (PostgreSQL's `DETAIL: Key (email)=(...)`) or, for
connection failures, parts of the URL. So a rejected record is described from the driver's
structured diagnostics (constraint, column, table) only, and other messages keep their first
line with the password masked.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from customer_sync.sdk import (
    AuthError,
    ConnectorError,
    RecordRejected,
    TransientError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["classify", "describe_rejection", "is_record_fault"]

# SQLSTATEs that mean the credentials or grants are wrong: retrying will not help.
_AUTH_STATES = frozenset({"28000", "28P01", "42501"})
# SQLite's constraint messages name the constraint and the column, never the value.
_SQLITE_SAFE = re.compile(
    r"^((NOT NULL|UNIQUE|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed\b.*|datatype mismatch)$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_MAX_DETAIL = 200


def is_record_fault(exc: BaseException) -> bool:
    """True when the database refused the values of a record, not the connection or the SQL."""
    return isinstance(exc, IntegrityError | DataError)


def describe_rejection(exc: DBAPIError) -> str:
    """Why the database refused a record, naming the constraint and column, never the values."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg: structured diagnostics, no values in these fields
        kind = _CAMEL.sub(" ", type(orig).__name__).lower()
        where = [
            f"{label} {value}"
            for label, value in (
                ("constraint", getattr(diag, "constraint_name", None)),
                ("column", getattr(diag, "column_name", None)),
                ("table", getattr(diag, "table_name", None)),
            )
            if value
        ]
        return f"{kind} ({', '.join(where)})" if where else kind
    first = _first_line(orig)
    if _SQLITE_SAFE.match(first):
        return first
    kind = "constraint violated" if isinstance(exc, IntegrityError) else "value refused"
    return f"{kind} ({type(orig).__name__})"


def classify(
    exc: SQLAlchemyError,
    *,
    make: Callable[..., ConnectorError],
    operation: str,
    secrets: tuple[str, ...] = (),
    where: str | None = None,
) -> ConnectorError:
    """The SDK error for a failed database call.

    Args:
        exc: what SQLAlchemy raised.
        make: the connector's `error` factory (names the app and connector).
        operation: the connector operation that failed (`list`, `create`, ...).
        secrets: strings masked out of the message (the password).
        where: the database's URL without password or query, for connection failures.
    """
    if isinstance(exc, DBAPIError) and is_record_fault(exc):
        return make(RecordRejected, describe_rejection(exc), operation=operation)
    orig: Any = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    detail = _mask(_first_line(orig if orig is not None else exc), secrets)
    if where:
        detail = f"{detail} [{_mask(where, secrets)}]"
    if state in _AUTH_STATES or "authentication failed" in detail:
        message = f"database refused the credentials or grants: {detail}"
        return make(AuthError, message, operation=operation)
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        if not _is_schema_problem(detail):
            return make(TransientError, f"database unavailable: {detail}", operation=operation)
    return make(ConnectorError, f"database refused the statement: {detail}", operation=operation)


def _is_schema_problem(detail: str) -> bool:
    # SQLite reports a dropped table or column as an OperationalError; retrying will not help.
    return detail.startswith(("no such table", "no such column")) or "has no column" in detail


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:_MAX_DETAIL]


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
