"""Where listing resumes: keyset pagination on (modified, id), encoded as the app's cursor.

The cursor is JSON text `{"m": modified, "id": last id}`. Resuming selects
`modified > m OR (modified = m AND id > last_id)`, so rows that share a timestamp across a page
boundary are never skipped, and each page is one indexed range query (the table is never loaded
whole).

Rows whose modified time is NULL come first, ordered by id, in a phase of their own: the cursor
of that phase has `"m": null`. They are read on a full pass (no cursor yet) and while the cursor
is still in that phase; once a timed row has been read, a row that stays NULL is not seen again
until a resync. Give the column a default to avoid that.

`m` is an ISO time in UTC, except on SQLite, where it is the stored text (or number) itself:
SQLite compares times as text, and only comparing the stored text agrees with its sort order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from customer_sync.sdk import Cursor
from customer_sync_connectors.sql._values import (
    as_utc,
    db_time,
    format_like,
    live_clause,
    parse_clock,
)

if TYPE_CHECKING:
    from sqlalchemy import Select

    from customer_sync_connectors.sql._schema import TableSpec

__all__ = [
    "Position",
    "clock_before",
    "cursor_value",
    "live_ids_query",
    "page_query",
    "record_columns",
]


@dataclass(frozen=True)
class Position:
    """The last row listed: its modified value (`m`) and id; both None before the first row.

    `timed` is False while listing the NULL-modified rows; a position with `m` set is timed.
    """

    m: Any = None
    id: Any = None
    timed: bool = False

    @classmethod
    def decode(cls, cursor: Cursor | None) -> Position:
        """The position a stored cursor names.

        Raises:
            ValueError: the cursor was not written by this connector.
        """
        if cursor is None:
            return cls()
        data = json.loads(cursor.value)
        if not isinstance(data, dict) or set(data) != {"m", "id"}:
            raise ValueError("expected an object with keys m and id")
        return cls(m=data["m"], id=data["id"], timed=data["m"] is not None)

    def encode(self) -> Cursor:
        return Cursor(value=json.dumps({"m": self.m, "id": self.id}, separators=(",", ":")))


def record_columns(spec: TableSpec) -> list[Any]:
    """What listing and reading select, by position: id, clock, [deleted], app fields."""
    cols: list[Any] = [spec.id, spec.clock]
    if spec.deleted is not None:
        cols.append(spec.deleted)
    return cols + [spec.table.c[name] for name in spec.columns]


def page_query(
    spec: TableSpec, position: Position, *, limit: int, lookback_s: float = 0
) -> Select[Any]:
    """The next page after `position`.

    With `lookback_s`, a timed position re-reads every row modified within that many seconds
    before it, to catch rows committed late with an older timestamp.
    """
    query = select(*record_columns(spec)).limit(limit)
    if not position.timed:
        query = query.where(spec.modified.is_(None)).order_by(spec.id)
        if position.id is None:
            return query
        return query.where(spec.id > spec.id_value(position.id))
    clock = spec.clock
    query = query.where(spec.modified.is_not(None)).order_by(clock, spec.id)
    if position.m is None:
        return query
    if lookback_s > 0:
        return query.where(clock >= clock_before(spec, position.m, lookback_s))
    m = _clock_param(spec, position.m)
    return query.where(or_(clock > m, and_(clock == m, spec.id > spec.id_value(position.id))))


def live_ids_query(spec: TableSpec, after: Any, *, limit: int) -> Select[Any]:
    """The next chunk of live ids after `after` (None: from the first)."""
    query = select(spec.id).where(live_clause(spec.deleted)).order_by(spec.id).limit(limit)
    return query if after is None else query.where(spec.id > after)


def cursor_value(spec: TableSpec, raw: Any) -> Any:
    """The `m` of a row's clock value, as the cursor stores it."""
    if spec.text_clock:
        return raw
    return as_utc(raw).isoformat()


def _clock_param(spec: TableSpec, m: Any) -> Any:
    if spec.text_clock:
        return m
    return db_time(spec.modified, datetime.fromisoformat(m), text_clock=False)


def clock_before(spec: TableSpec, m: Any, seconds: float) -> Any:
    """The time `seconds` before `m` (a clock value as the cursor stores it), as the modified
    column compares: a datetime, text spelled like `m`, or epoch seconds."""
    window = timedelta(seconds=seconds)
    if not spec.text_clock:
        return db_time(spec.modified, datetime.fromisoformat(m) - window, text_clock=False)
    if isinstance(m, int | float) and not isinstance(m, bool):
        return m - seconds  # epoch seconds stored as numbers
    stamp = parse_clock(m)
    if stamp is None:
        return m  # not a time we can read: no window, only the strict keyset
    return format_like(m, stamp - window)
