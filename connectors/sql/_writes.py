"""Batch writes to the synced table: one transaction per batch, and a record the database
refuses rejects only itself.

**Times.** Every write sets the modified column to the database's own time now (`server_now`:
`clock_timestamp()` on PostgreSQL, `strftime(..., 'now')` spelled like the stored times on
SQLite), never to the daemon's clock: the cursor follows that column, and a daemon whose
clock runs ahead of the app's would carry the cursor past the app's own later edits. A
receipt's `modified_at` is the stamp read back in the same transaction.

**Exactly-once creates.** The engine may send a create twice: after a crash while it was being
sent, or after a connection error that lost the answer to a create the database had committed
(that failure reaches the engine as a `TransientError`; the engine re-sends with
`WriteOp.uncertain_since` set). Per id kind:

- *text or uuid id*: the id is uuid5 of the idempotency key. Every create first looks the id
  up (deleted rows included) and answers with the row it finds; the primary key refuses a
  second row in any case.
- *integer id with `key_column`*: the key is written into that column. Every create first
  looks the key up (deleted rows included) and answers with the row it finds; a unique index
  on the column (`create_table` makes one) refuses a second row in any case.
- *integer id without `key_column`*: the database makes the id, so nothing ties a row to its
  create. A create with `uncertain_since` first looks for the row the first send would have
  made: a live row stamped since the create was decided (less `UNCERTAIN_SLACK_S` for clock
  steps), holding every value the create sends and NULL in every other app column that has no
  default; the newest such row is taken. This is a good guess, not a guarantee: a row the app
  edits or deletes between the lost answer and the re-send is not recognised (a second row is
  made), values the database changes on the way in (a trigger, float rounding) are not
  recognised either, and a different row with the same content made in that window (by the
  app, or by the daemon for another customer with the same fields) can be taken for it. Set
  `key_column` when that is not good enough.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError

from customer_sync.sdk import (
    ConnectorError,
    RecordGone,
    RecordRejected,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
)
from customer_sync_connectors.sql._errors import describe_rejection
from customer_sync_connectors.sql._keyset import clock_before, cursor_value
from customer_sync_connectors.sql._schema import in_chunks
from customer_sync_connectors.sql._values import (
    Unfit,
    fit_value,
    live_clause,
    parse_clock,
)

if TYPE_CHECKING:
    import structlog
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.elements import ColumnElement

    from customer_sync_connectors.sql._schema import TableSpec

__all__ = ["ID_NAMESPACE", "UNCERTAIN_SLACK_S", "BatchWriter", "Operation"]

Operation = Literal["create", "update", "delete"]

# New text ids are uuid5(ID_NAMESPACE, idempotency key): the same key always makes the same id.
ID_NAMESPACE = uuid.UUID("af5aae03-645d-54fd-be49-51478eaed33f")
# How much earlier than "decided" an uncertain create's row may be stamped and still be taken
# for it. The two clocks only measure the time elapsed since then; this covers a step of
# either clock (or replicas whose clocks differ) in between.
UNCERTAIN_SLACK_S = 600.0


@dataclass(frozen=True)
class _Item:
    """One write, checked and ready: its op, the column values to set, the row's id (when
    known before writing) and, for a create, its idempotency key."""

    op: WriteOp
    values: Mapping[str, Any]
    row_id: Any = None
    key: str | None = None


@dataclass(frozen=True)
class _Found:
    """A row an earlier send of a create already made: its id and stored modified value."""

    row_id: Any
    clock: Any


class BatchWriter:
    """Applies batches of one kind of write to the table; blocking, run it in a worker thread.

    Args:
        engine: the app's engine.
        spec: the synced table.
        clock: the daemon's clock, the one `WriteOp.uncertain_since` is read on; it measures
            only how long ago an uncertain create was decided, and never reaches the table.
        error: the connector's error factory (names the app and connector).
        log: the connector's logger.
    """

    def __init__(
        self,
        engine: Engine,
        spec: TableSpec,
        *,
        clock: Callable[[], datetime],
        error: Callable[..., ConnectorError],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.clock = clock
        self.error = error
        self.log = log

    def write(self, operation: Operation, ops: list[WriteOp]) -> list[WriteOutcome]:
        """Apply `ops`, all of kind `operation`; one outcome per op, in any order.

        Raises:
            SQLAlchemyError: a failure that is not about one record (connection, SQL). A
                connection lost while committing may leave the batch written: re-sent creates
                find their rows (see the module docstring).
        """
        outcomes: list[WriteOutcome] = []
        items: list[_Item] = []
        for op in ops:
            try:
                items.append(self._prepare(operation, op))
            except (RecordRejected, RecordGone) as exc:
                outcomes.append(WriteOutcome(key=op.key, error=exc))
        if items:
            outcomes += self._in_transactions(operation, items)
        return outcomes

    # -- checking -----------------------------------------------------------------------------

    def _prepare(self, operation: Operation, op: WriteOp) -> _Item:
        spec = self.spec
        if operation == "create":
            key = op.idempotency_key or op.key
            row_id = None
            if spec.id_kind != "integer":
                new_id = uuid.uuid5(ID_NAMESPACE, key)
                row_id = new_id if spec.id_kind == "uuid" else str(new_id)
            return _Item(op=op, values=self._fit(operation, op), row_id=row_id, key=key)
        row_id = spec.id_or_none(op.app_record_id)
        if row_id is None:
            raise self.error(RecordGone, "no row has this id", operation=operation,
                             app_record_id=op.app_record_id)
        return _Item(op=op, values=self._fit(operation, op), row_id=row_id)

    def _fit(self, operation: Operation, op: WriteOp) -> dict[str, Any]:
        spec = self.spec
        unknown = sorted(set(op.fields) - set(spec.columns))
        if unknown:
            raise self.error(
                RecordRejected,
                f"not app fields of table {spec.table.name!r}: {', '.join(map(repr, unknown))}",
                operation=operation, app_record_id=op.app_record_id,
            )
        try:
            return {
                name: fit_value(spec.table.c[name], value, text_clock=spec.text_clock)
                for name, value in op.fields.items()
            }
        except Unfit as exc:
            raise self.error(RecordRejected, str(exc), operation=operation,
                             app_record_id=op.app_record_id) from None

    # -- transactions -------------------------------------------------------------------------

    def _in_transactions(self, operation: Operation, items: list[_Item]) -> list[WriteOutcome]:
        """The whole batch in one transaction; when the database refuses a value, each item in
        a transaction of its own, so one bad record rejects only itself."""
        apply = {"create": self._insert, "update": self._update, "delete": self._delete}[operation]
        try:
            with self.engine.begin() as conn:
                return apply(conn, items)
        except (IntegrityError, DataError) as exc:
            if len(items) == 1:
                return [self._rejected(operation, items[0], exc)]
            self.log.info("app.batch_split", operation=operation, count=len(items),
                          error=type(exc.orig).__name__)
        outcomes: list[WriteOutcome] = []
        for item in items:
            try:
                with self.engine.begin() as conn:
                    outcomes += apply(conn, [item])
            except (IntegrityError, DataError) as exc:
                outcomes.append(self._rejected(operation, item, exc))
        return outcomes

    def _insert(self, conn: Connection, items: list[_Item]) -> list[WriteOutcome]:
        """Answer the creates an earlier send already made with their rows; insert the rest,
        one row per idempotency key."""
        spec = self.spec
        firsts: dict[str | None, _Item] = {}
        for item in items:
            firsts.setdefault(item.key, item)
        found = self._made_earlier(conn, list(firsts.values()))
        for group in _by_columns([item for item in firsts.values() if item.key not in found]):
            rows = [self._row(item) for item in group]
            if spec.id_kind == "integer":
                made = self._insert_returning(conn, rows)
            else:
                conn.execute(insert(spec.table).values(self._stamp()), rows)
                clocks = self._clocks(conn, [item.row_id for item in group])
                made = [_Found(item.row_id, clocks.get(item.row_id)) for item in group]
            found.update((item.key, row) for item, row in zip(group, made, strict=True))
        return [
            _outcome(item, str(found[item.key].row_id), parse_clock(found[item.key].clock))
            for item in items
        ]

    def _update(self, conn: Connection, items: list[_Item]) -> list[WriteOutcome]:
        spec = self.spec
        live = self._lock_live(conn, [item.row_id for item in items])
        outcomes = [self._gone("update", item) for item in items if item.row_id not in live]
        written = [item for item in items if item.row_id in live]
        for group in _by_columns(written):
            names = sorted(group[0].values)
            # Bind names that cannot clash with column names (SQLAlchemy reserves those in SET).
            sets: dict[str, Any] = {
                name: bindparam(f"_cs_{i}", type_=spec.table.c[name].type)
                for i, name in enumerate(names)
            }
            sets[spec.modified.name] = spec.modified_now()
            stmt = update(spec.table).where(spec.id == bindparam("_cs_id", type_=spec.id.type))
            conn.execute(stmt.values(sets), [
                {"_cs_id": item.row_id,
                 **{f"_cs_{i}": item.values[name] for i, name in enumerate(names)}}
                for item in group
            ])
        clocks = self._clocks(conn, [item.row_id for item in written])
        outcomes += [_outcome(item, str(item.row_id), parse_clock(clocks.get(item.row_id)))
                     for item in written]
        return outcomes

    def _delete(self, conn: Connection, items: list[_Item]) -> list[WriteOutcome]:
        """Soft delete (stamp the deleted and modified columns) when the table has a deleted
        column, else DELETE."""
        spec = self.spec
        live = self._lock_live(conn, [item.row_id for item in items])
        outcomes = [self._gone("delete", item) for item in items if item.row_id not in live]
        written = [item for item in items if item.row_id in live]
        for chunk in in_chunks(list(dict.fromkeys(item.row_id for item in written))):
            if spec.deleted is not None:
                conn.execute(update(spec.table).where(spec.id.in_(chunk)).values(
                    {spec.deleted.name: spec.deleted_now(), spec.modified.name: spec.modified_now()}
                ))
            else:
                conn.execute(delete(spec.table).where(spec.id.in_(chunk)))
        clocks = {}
        if spec.deleted is not None:
            clocks = self._clocks(conn, [item.row_id for item in written])
        outcomes += [_outcome(item, str(item.row_id), parse_clock(clocks.get(item.row_id)))
                     for item in written]
        return outcomes

    # -- rows made by an earlier send ---------------------------------------------------------

    def _made_earlier(self, conn: Connection, items: list[_Item]) -> dict[str | None, _Found]:
        """Idempotency key -> the row an earlier send of that create made (see the module
        docstring); `items` have distinct keys."""
        spec = self.spec
        if spec.id_kind != "integer":
            by_id = self._find(conn, spec.id, [item.row_id for item in items])
            return {i.key: by_id[i.row_id] for i in items if i.row_id in by_id}
        if spec.key is not None:
            by_key = self._find(conn, spec.key, [item.key for item in items])
            return {i.key: by_key[i.key] for i in items if i.key in by_key}
        return self._look_alike(conn, [item for item in items if item.op.uncertain_since])

    def _find(self, conn: Connection, column: Any, values: list[Any]) -> dict[Any, _Found]:
        """value of `column` -> the first row (by id) holding it, deleted or not."""
        spec = self.spec
        found: dict[Any, _Found] = {}
        for chunk in in_chunks(list(dict.fromkeys(values))):
            query = (select(column, spec.id, spec.clock).where(column.in_(chunk))
                     .order_by(spec.id))
            for value, row_id, clock in conn.execute(query):
                found.setdefault(value, _Found(row_id, clock))
        return found

    def _look_alike(self, conn: Connection, uncertain: list[_Item]) -> dict[str | None, _Found]:
        """For uncertain creates into a table whose integer id nothing ties to the create: the
        newest live rows, stamped since the create was decided, that hold what it sends and
        nothing else; one row per create."""
        if not uncertain:
            return {}
        spec = self.spec
        # Both clocks only measure how long ago the create was decided: their offset cancels.
        db_now = cursor_value(spec, conn.execute(select(spec.modified_now())).scalar_one())
        daemon_now = self.clock()
        alike: dict[str, list[_Item]] = {}
        for item in uncertain:
            alike.setdefault(fingerprint(item.op.fields), []).append(item)
        found: dict[str | None, _Found] = {}
        ambiguous = 0
        for group in alike.values():
            decided = min(item.op.uncertain_since for item in group if item.op.uncertain_since)
            elapsed_s = max((daemon_now - decided).total_seconds(), 0.0)
            since = clock_before(spec, db_now, elapsed_s + UNCERTAIN_SLACK_S)
            rows = self._rows_holding(conn, group[0].values, since, want=len(group) + 1)
            ambiguous += len(rows) > len(group)
            found.update((item.key, row) for item, row in zip(group, rows, strict=False))
        if found:
            self.log.info("app.uncertain_creates_found", count=len(found), ambiguous=ambiguous)
        return found

    def _rows_holding(
        self, conn: Connection, values: Mapping[str, Any], since: Any, *, want: int
    ) -> list[_Found]:
        """Up to `want` live rows stamped at or after `since` that hold `values` and NULL in
        every other app column without a default, newest first."""
        spec = self.spec
        conditions: list[ColumnElement[bool]] = [live_clause(spec.deleted), spec.clock >= since]
        for name in spec.columns:
            column = spec.table.c[name]
            if name in values and values[name] is not None:
                conditions.append(column == values[name])
            elif name in values or (column.server_default is None and column.identity is None):
                conditions.append(column.is_(None))
        query = (select(spec.id, spec.clock).where(*conditions)
                 .order_by(spec.id.desc()).limit(want))
        return [_Found(row_id, clock) for row_id, clock in conn.execute(query)]

    # -- statements ---------------------------------------------------------------------------

    def _stamp(self) -> dict[str, Any]:
        return {self.spec.modified.name: self.spec.modified_now()}

    def _row(self, item: _Item) -> dict[str, Any]:
        spec = self.spec
        row = dict(item.values)
        if item.row_id is not None:
            row[spec.id.name] = item.row_id
        if spec.key is not None:
            row[spec.key.name] = item.key
        return row

    def _insert_returning(self, conn: Connection, rows: list[dict[str, Any]]) -> list[_Found]:
        """Insert rows whose ids the database makes; their ids and stamps, in the order of
        `rows`.

        SQLAlchemy matches the returned ids to the rows sent (`sort_by_parameter_order`): on
        PostgreSQL in one `INSERT ... SELECT ... ORDER BY` per page of rows, on SQLite one row
        per statement, as SQLite does not promise RETURNING's order.
        """
        spec = self.spec
        stmt = insert(spec.table).values(self._stamp())
        if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
            returning = stmt.returning(spec.id, spec.clock, sort_by_parameter_order=True)
            made = [_Found(row[0], row[1]) for row in conn.execute(returning, rows)]
        else:
            ids = [conn.execute(stmt, row).inserted_primary_key[0] for row in rows]  # type: ignore[index]
            clocks = self._clocks(conn, ids)
            made = [_Found(i, clocks.get(i)) for i in ids]
        if any(row.row_id is None for row in made):
            raise self.error(
                ConnectorError,
                f"the database made no id for a new row of table {spec.table.name!r}: an "
                "integer id_column must be generated by the database (autoincrement, identity, "
                "serial), or be text and made by the connector",
                operation="create",
            )
        return made

    def _clocks(self, conn: Connection, ids: list[Any]) -> dict[Any, Any]:
        """id -> stored modified value of the rows (deleted or not) that have one of these ids."""
        spec = self.spec
        found: dict[Any, Any] = {}
        for chunk in in_chunks(list(dict.fromkeys(ids))):
            query = select(spec.id, spec.clock).where(spec.id.in_(chunk))
            found.update((row[0], row[1]) for row in conn.execute(query))
        return found

    def _lock_live(self, conn: Connection, ids: list[Any]) -> set[Any]:
        """The live rows among `ids`, locked until the transaction ends (where the database
        locks rows), so that a concurrent delete cannot slip between this check and the write."""
        spec = self.spec
        found: set[Any] = set()
        for chunk in in_chunks(sorted(set(ids))):  # one lock order everywhere: no deadlocks
            query = (select(spec.id).where(spec.id.in_(chunk), live_clause(spec.deleted))
                     .order_by(spec.id).with_for_update())
            found.update(conn.execute(query).scalars())
        return found

    # -- outcomes -----------------------------------------------------------------------------

    def _rejected(
        self, operation: Operation, item: _Item, exc: IntegrityError | DataError
    ) -> WriteOutcome:
        # Built from the driver's diagnostics only, with no cause attached: the driver's own
        # message can quote the record's values.
        error = self.error(RecordRejected, describe_rejection(exc), operation=operation,
                           app_record_id=item.op.app_record_id)
        return WriteOutcome(key=item.op.key, error=error)

    def _gone(self, operation: Operation, item: _Item) -> WriteOutcome:
        error = self.error(RecordGone, "no live row has this id", operation=operation,
                           app_record_id=item.op.app_record_id)
        return WriteOutcome(key=item.op.key, error=error)


def _outcome(item: _Item, app_record_id: str, written_at: datetime | None) -> WriteOutcome:
    receipt = WriteReceipt(app_record_id=app_record_id, modified_at=written_at,
                           fingerprint=fingerprint(item.op.fields))
    return WriteOutcome(key=item.op.key, receipt=receipt)


def _by_columns(items: list[_Item]) -> list[list[_Item]]:
    """Items grouped by the set of columns they write: one executemany per group."""
    groups: dict[tuple[str, ...], list[_Item]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(item.values)), []).append(item)
    return list(groups.values())
