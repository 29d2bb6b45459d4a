"""Batch writes to the synced table: one transaction per batch, and a record the database
refuses rejects only itself.

**Times.** Every write sets the modified column to the database's own time now (`server_now`:
`clock_timestamp()` on PostgreSQL, `strftime(..., 'now')` spelled like the stored times on
SQLite), never to the daemon's clock: the cursor follows that column, and a daemon whose
clock runs ahead of the app's would carry the cursor past the app's own later edits. A
receipt's `modified_at` is the stamp read back in the same transaction.

Creates are exactly-once for text and uuid ids: the id is uuid5 of the idempotency key, so a
create the engine re-sends after a crash finds its row and inserts nothing. An autoincrement
integer id cannot be derived from the key; such a re-sent create can insert a second row.
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

    from customer_sync_connectors.sql._schema import TableSpec

__all__ = ["ID_NAMESPACE", "BatchWriter", "Operation"]

Operation = Literal["create", "update", "delete"]

# New text ids are uuid5(ID_NAMESPACE, idempotency key): the same key always makes the same id.
ID_NAMESPACE = uuid.UUID("af5aae03-645d-54fd-be49-51478eaed33f")


@dataclass(frozen=True)
class _Item:
    """One write, checked and ready: its op, the column values to set, and the row's id."""

    op: WriteOp
    values: Mapping[str, Any]
    row_id: Any = None


@dataclass(frozen=True)
class _Found:
    """A row written or found: its id and stored modified value."""

    row_id: Any
    clock: Any


class BatchWriter:
    """Applies batches of one kind of write to the table; blocking, run it in a worker thread.

    Args:
        engine: the app's engine.
        spec: the synced table.
        error: the connector's error factory (names the app and connector).
        log: the connector's logger.
    """

    def __init__(
        self,
        engine: Engine,
        spec: TableSpec,
        *,
        error: Callable[..., ConnectorError],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.error = error
        self.log = log

    def write(self, operation: Operation, ops: list[WriteOp]) -> list[WriteOutcome]:
        """Apply `ops`, all of kind `operation`; one outcome per op, in any order.

        Raises:
            SQLAlchemyError: a failure that is not about one record (connection, SQL).
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
        row_id = None
        if operation == "create":
            if spec.id_kind != "integer":
                new_id = uuid.uuid5(ID_NAMESPACE, op.idempotency_key or op.key)
                row_id = new_id if spec.id_kind == "uuid" else str(new_id)
        else:
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
        spec = self.spec
        outcomes: list[WriteOutcome] = []
        if spec.id_kind == "integer":
            for group in _by_columns(items):
                made = self._insert_returning(conn, [dict(item.values) for item in group])
                outcomes += [_outcome(item, str(row.row_id), parse_clock(row.clock))
                             for item, row in zip(group, made, strict=True)]
            return outcomes
        # A row whose id exists was made by an earlier attempt of this same create: it is not
        # inserted twice.
        existing = self._clocks(conn, [item.row_id for item in items])
        todo: dict[Any, _Item] = {}
        for item in items:
            if item.row_id not in existing:
                todo.setdefault(item.row_id, item)
        for group in _by_columns(list(todo.values())):
            conn.execute(insert(spec.table).values(self._stamp()), [
                {**item.values, spec.id.name: item.row_id} for item in group
            ])
        clocks = {**existing, **self._clocks(conn, list(todo))}
        return [_outcome(item, str(item.row_id), parse_clock(clocks.get(item.row_id)))
                for item in items]

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

    # -- statements ---------------------------------------------------------------------------

    def _stamp(self) -> dict[str, Any]:
        return {self.spec.modified.name: self.spec.modified_now()}

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
