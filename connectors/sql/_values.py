"""Values between SQL rows and app fields: JSON-friendly reads, checked writes, UTC times.

Records leave the connector with JSON-compatible field values (timestamps as ISO strings in UTC)
and come back the same way, so every value written is first fitted to its column's type here.
Naive timestamps from the database are taken to be UTC.

The modified and deleted times the connector writes are made by the database itself
(`server_now`), spelled like the times the column already holds (`ClockStyle`), so that the
only clock in the column the cursor follows is the app's.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import String, false, func, literal_column, or_, true

if TYPE_CHECKING:
    from sqlalchemy import Column
    from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "ClockStyle",
    "Unfit",
    "as_utc",
    "clock_style",
    "clock_text",
    "db_time",
    "deleted_marker",
    "fit_value",
    "format_like",
    "is_deleted_value",
    "live_clause",
    "parse_clock",
    "python_type",
    "server_now",
    "to_json",
]

# Text values of a soft-delete column that still mean "live" (kept in step with `live_clause`).
_LIVE_TEXT = ("", "0", "false")
# How SQLAlchemy stores a datetime in SQLite; the connector writes text clocks the same way.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# What follows the seconds of a stored text time: a fraction, then "Z" or a UTC offset.
_TEXT_TAIL = re.compile(r"^(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:?\d\d)?$")


class Unfit(ValueError):
    """A value does not fit its column; the message names the column and types, not the value."""


def python_type(column: Column[Any]) -> type | None:
    """The Python type of a column's values, or None when the dialect cannot tell (untyped)."""
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_json(value: Any) -> Any:
    """A JSON-compatible form of a value read from a row."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return str(value)


def parse_clock(raw: Any) -> datetime | None:
    """The UTC time of a stored modified value: a datetime, ISO text, or epoch seconds.

    Returns None for NULL and for text that is not a time (the row still sorts by its text).
    """
    if raw is None:
        return None
    if isinstance(raw, datetime):
        return as_utc(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw, UTC)
    if isinstance(raw, str):
        try:
            return as_utc(datetime.fromisoformat(raw.strip()))
        except ValueError:
            return None
    return None


def clock_text(value: datetime) -> str:
    """A UTC time as SQLite text, in the format SQLAlchemy itself uses."""
    return as_utc(value).replace(tzinfo=None).strftime(_SQLITE_FORMAT)


def format_like(sample: str, value: datetime) -> str:
    """`value` written in the style of `sample` (separator, fraction, zone suffix).

    SQLite compares times as text, so a bound computed from a stored time (the lookback window)
    must be spelled like the stored times to compare correctly.
    """
    naive = as_utc(value).replace(tzinfo=None)
    sep = "T" if "T" in sample else " "
    timespec = "microseconds" if "." in sample else "seconds"
    text = naive.isoformat(sep=sep, timespec=timespec)
    tail = sample.strip()[19:]
    if tail.endswith("Z"):
        return text + "Z"
    if tail[-6:-5] in ("+", "-") and tail[-3:-2] == ":":
        return text + "+00:00"
    return text


def db_time(column: Column[Any], value: datetime, *, text_clock: bool) -> Any:
    """`value` as a column of this table stores it.

    A timestamp column gets a datetime (aware only where the column keeps a zone; SQLite and
    `timestamp without time zone` get naive UTC). A SQLite column of another declared type gets
    text in SQLAlchemy's format, so our times sort with the ones SQLAlchemy writes.
    """
    if python_type(column) is datetime:
        keeps_zone = bool(getattr(column.type, "timezone", False)) and not text_clock
        return as_utc(value) if keeps_zone else as_utc(value).replace(tzinfo=None)
    if text_clock:
        return clock_text(value)
    return as_utc(value)


def deleted_marker(column: Column[Any], *, dialect: str, text_clock: bool) -> Any:
    """What a soft delete writes: True for a boolean column, 1 for a number, else the database's
    time now (see `server_now`)."""
    kind = python_type(column)
    if kind is bool:
        return True
    if kind is int:
        return 1
    return server_now(column, clock_style(column, text_clock=text_clock), dialect=dialect)


@dataclass(frozen=True)
class ClockStyle:
    """How a time column spells its values, so that a time the database makes sorts among them.

    Attributes:
        kind: "native" (a timestamp type the database compares as time), "text" (SQLite text,
            compared as text), "epoch" (whole seconds since 1970) or "epoch_real" (seconds
            with a fraction).
        sep: for text, what stands between the date and the time ("T" or " ").
        digits: for text, the digits of the fraction of a second (0: none).
        suffix: for text, the zone written after the time ("Z", "+00:00" or nothing).
    """

    kind: Literal["native", "text", "epoch", "epoch_real"] = "native"
    sep: str = " "
    digits: int = 6
    suffix: str = ""


def clock_style(column: Column[Any], *, text_clock: bool, sample: Any = None) -> ClockStyle:
    """The style of a time column: from `sample`, a value it holds, else from its declared type.

    Only text clocks (SQLite) have a style to follow; a column without a usable sample gets
    epoch seconds when declared as a number, else the text SQLAlchemy writes (`clock_text`).
    """
    if not text_clock:
        return ClockStyle()
    if isinstance(sample, int) and not isinstance(sample, bool):
        return ClockStyle(kind="epoch")
    if isinstance(sample, float):
        return ClockStyle(kind="epoch_real")
    if isinstance(sample, str):
        style = _text_style(sample.strip())
        if style is not None:
            return style
    kind = python_type(column)
    if kind is int:
        return ClockStyle(kind="epoch")
    if kind in (float, Decimal):
        return ClockStyle(kind="epoch_real")
    return ClockStyle(kind="text")


def _text_style(sample: str) -> ClockStyle | None:
    if len(sample) < 19 or parse_clock(sample) is None:
        return None
    tail = _TEXT_TAIL.match(sample[19:])
    if tail is None:
        return None
    zone = tail["zone"] or ""
    suffix = "Z" if zone == "Z" else ("+00:00" if ":" in zone else "+0000") if zone else ""
    sep = "T" if sample[10] == "T" else " "
    return ClockStyle(kind="text", sep=sep, digits=min(len(tail["fraction"] or ""), 9),
                      suffix=suffix)


def server_now(column: Column[Any], style: ClockStyle, *, dialect: str) -> ColumnElement[Any]:
    """SQL that the database evaluates to its own time now, as `column` stores times.

    PostgreSQL: `clock_timestamp()` (the time of the write itself, not of the transaction's
    start: it is closer to the commit, so fewer rows commit behind the cursor), in UTC for a
    column without a zone. SQLite: `strftime(..., 'now')` in the column's text style, or epoch
    seconds; SQLite's clock has milliseconds, padded with zeros to the style's digits. Other
    databases: `CURRENT_TIMESTAMP`.
    """
    if dialect == "postgresql":
        now = func.clock_timestamp()
        return now if getattr(column.type, "timezone", False) else func.timezone("UTC", now)
    if dialect != "sqlite":
        return func.current_timestamp()
    if style.kind == "epoch":
        return literal_column("CAST(strftime('%s', 'now') AS INTEGER)")
    if style.kind == "epoch_real":
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    spec = "%f" if style.digits else "%S"  # %f is seconds with three decimals: SS.SSS
    sql = f"strftime('%Y-%m-%d{style.sep}%H:%M:{spec}', 'now')"
    if 0 < style.digits < 3:
        sql = f"substr({sql}, 1, {20 + style.digits})"
    elif style.digits > 3:
        sql = f"({sql} || '{'0' * (style.digits - 3)}')"
    if style.suffix:
        sql = f"({sql} || '{style.suffix}')"
    return literal_column(sql, String())


def is_deleted_value(value: Any) -> bool:
    """True when a soft-delete column's value says the row is deleted (non-null and truthy)."""
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, str):
        return value.lower() not in _LIVE_TEXT
    return True


def live_clause(column: Column[Any] | None) -> ColumnElement[bool]:
    """SQL condition of a live (not soft-deleted) row; agrees with `is_deleted_value`."""
    if column is None:
        return true()
    kind = python_type(column)
    if kind is bool:
        return or_(column.is_(None), column == false())
    if kind in (int, float, Decimal):
        return or_(column.is_(None), column == 0)
    if kind is str:
        return or_(column.is_(None), func.lower(column).in_(_LIVE_TEXT))
    return column.is_(None)


def fit_value(column: Column[Any], value: Any, *, text_clock: bool) -> Any:
    """An app field value converted for its column.

    Raises:
        Unfit: the value's type does not fit the column (the message names both types only).
    """
    if value is None:
        return None
    kind = python_type(column)
    try:
        return _fit(kind, column, value, text_clock=text_clock)
    except (ValueError, TypeError, InvalidOperation, OverflowError):
        pass
    wanted = kind.__name__ if kind is not None else "scalar"
    raise Unfit(f"column {column.name!r} takes {wanted} values, not this {type(value).__name__}")


def _fit(kind: type | None, column: Column[Any], value: Any, *, text_clock: bool) -> Any:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if is_number and value in (0, 1):
            return bool(value)
    elif kind is int:
        if is_number and float(value).is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind in (float, Decimal):
        if is_number or isinstance(value, str):
            return Decimal(str(value)) if kind is Decimal else float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
        if is_number or isinstance(value, bool):
            return str(value)
    elif kind is datetime:
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return db_time(column, stamp, text_clock=text_clock)
    elif kind is date:
        return value if isinstance(value, date) else date.fromisoformat(value)
    elif kind is uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    elif kind in (dict, list):
        if isinstance(value, dict | list):
            return value
    elif kind is None:
        # An untyped column (SQLite without a declared type) takes any scalar as it is.
        if is_number or isinstance(value, str | bool):
            return value
    raise TypeError(type(value).__name__)
