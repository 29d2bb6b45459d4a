"""Inserting many rows at once with less work per row than `Connection.execute(insert(t), rows)`,
and the portable upsert of one row by its key (`upsert_row`).

A unit of work flushes several thousand rows per batch on the hot path of an initial pull. Given
a list of dicts, SQLAlchemy builds each row's parameters one key at a time through its generic
execution context; that bookkeeping cost more than SQLite's own work. `insert_rows` compiles the
statement once per (table, columns, dialect), asks each column type for its bind processor once
(the same processors SQLAlchemy would apply: JSON serialization, SQLite's date-time text) and
hands the driver ready parameters through `exec_driver_sql`, still in the caller's transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection, DateTime, Table, bindparam, insert, update
from sqlalchemy.dialects.sqlite.base import DATETIME as SQLITE_DATETIME

__all__ = ["insert_rows", "upsert_row"]

_Processor = Callable[[Any], Any] | None


class _Plan(NamedTuple):
    """How to insert rows with these keys into this table on this dialect."""

    sql: str
    positional: bool
    order: tuple[str, ...]  # the statement's parameter order
    processors: tuple[_Processor, ...]
    datetimes: tuple[bool, ...]  # which processors format date-times (worth remembering)


# (dialect, table, keys) -> the plan, or None when a left-out column has a Python-side default
_plans: dict[tuple[str, str, tuple[str, ...]], _Plan | None] = {}


def _plan(conn: Connection, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    dialect = conn.dialect
    cache_key = (dialect.name, table.name, keys)
    if cache_key in _plans:
        return _plans[cache_key]
    plan = None
    if not any(c.default is not None and c.key not in keys for c in table.c):
        compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
        # positional drivers (sqlite3: "?") take tuples in the statement's order; named ones
        # (psycopg: "%(name)s") take dicts. An insert's bind names are its column keys.
        order = tuple(compiled.positiontup or ()) if compiled.positional else keys
        processors = tuple(_bind_processor(table.c[k].type, dialect) for k in order)
        datetimes = tuple(p is not None and isinstance(table.c[k].type, DateTime) for k, p in zip(order, processors, strict=True))
        plan = _Plan(compiled.string, bool(compiled.positional), order, processors, datetimes)
    _plans[cache_key] = plan
    return plan


def _bind_processor(type_: Any, dialect: Any) -> _Processor:
    """The column type's own bind processor, except for SQLite date-times in their default
    text format: those are written by `datetime.isoformat` (one C call) instead of a Python
    %-format over seven fields, giving the same text."""
    impl = type_.dialect_impl(dialect)
    processor = impl.bind_processor(dialect)
    if (processor is not None and isinstance(impl, SQLITE_DATETIME)
            and impl._storage_format == SQLITE_DATETIME._storage_format):
        return _sqlite_datetime(processor)
    return processor


def _sqlite_datetime(general: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def process(value: Any) -> Any:
        if type(value) is datetime:
            # "YYYY-MM-DD HH:MM:SS.ffffff", then any UTC offset, which SQLite's format leaves out
            return value.isoformat(" ", "microseconds")[:26]
        return general(value)  # None, dates, subclasses and errors as SQLAlchemy has them

    return process


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys, each a column of `table`) in one executemany.

    Raises:
        KeyError: a row lacks a key the first row has.
    """
    if not rows:
        return
    plan = _plan(conn, table, tuple(rows[0]))
    if plan is None:
        conn.execute(insert(table), list(rows))  # a Python-side default to fill: SQLAlchemy does it
        return
    # Column by column: itemgetter, zip and map run in C, so Python is entered only for the
    # values that need a processor (JSON, SQLite date-times), not for every value.
    getter = itemgetter(*plan.order)
    columns: list[Any] = list(zip(*map(getter, rows))) if len(plan.order) > 1 else [[getter(r) for r in rows]]
    for i, (processor, is_datetime) in enumerate(zip(plan.processors, plan.datetimes, strict=True)):
        if processor is not None:
            columns[i] = list(map(_memo(processor) if is_datetime else processor, columns[i]))
    tuples = list(zip(*columns))
    params: list[Any] = tuples if plan.positional else [dict(zip(plan.order, t)) for t in tuples]
    conn.exec_driver_sql(plan.sql, params)


def _memo(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The processor, remembering its answers for this call: most date-times of a batch are
    the batch's own `now` (SQLite formats each one into text in Python, ~1 µs apiece)."""
    seen: dict[Any, Any] = {}

    def process(value: Any) -> Any:
        # keyed with the tzinfo too: equal instants in other zones may be written differently
        key = (value, getattr(value, "tzinfo", None))
        out = seen.get(key, _UNSEEN)
        if out is _UNSEEN:
            out = seen[key] = processor(value)
        return out

    return process


_UNSEEN = object()


def upsert_row(conn: Connection, table: Table, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Portable upsert by primary key: update, and insert when nothing was updated.

    Safe without a race only where one writer holds the table's row (SQLite's transactions
    take the write lock when they begin; one daemon per store).
    """
    update_stmt, insert_stmt = _upsert_statements(table, tuple(key), tuple(values))
    params = {**{f"k_{k}": v for k, v in key.items()}, **{f"v_{k}": v for k, v in values.items()}}
    if conn.execute(update_stmt, params).rowcount == 0:
        conn.execute(insert_stmt, params)


@functools.cache
def _upsert_statements(table: Table, key: tuple[str, ...], names: tuple[str, ...]) -> tuple[Any, Any]:
    """`upsert_row`'s statements for these columns, built once: the cursor is upserted with every
    polled transaction, and building them cost more than running them (~0.3 ms a time)."""
    keys = {k: bindparam(f"k_{k}") for k in key}
    values = {k: bindparam(f"v_{k}") for k in names}
    return (update(table).where(*(table.c[k] == p for k, p in keys.items())).values(values),
            insert(table).values({**keys, **values}))
