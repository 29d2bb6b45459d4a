"""The `sql` connector: customers as the rows of one table in any SQL database.

It talks to the database through SQLAlchemy's synchronous engine and runs every blocking call in
a worker thread (`asyncio.to_thread`), so one slow database never stalls the other apps. Listing
is keyset-paginated on (modified, id) (see `_keyset`). Writes set the modified column to the
database's own time now, never the daemon's clock, so the only clock in the column the cursor
follows is the app's; the engine recognises the echo of its own writes by their content.

How a create sent twice is kept from making a second row, per kind of id (see `_writes` for
the details and the limits):

- text or uuid id: exactly once. The id is uuid5 of the engine's idempotency key, looked up
  before inserting.
- autoincrement integer id with `key_column`: exactly once. The key is written to that column
  and looked up before inserting.
- autoincrement integer id without `key_column`: best effort. A create the engine re-sends
  with `uncertain_since` (it may have reached the table) first looks for a live row the first
  send would have made: stamped since then, and holding exactly what the create sends.

Capabilities depend on the settings: DELETES_VISIBLE needs `deleted_column`, ID_SCAN can be
switched off with `id_scan = false`, and SEARCH_BY_EMAIL needs an email column. The class
declares every capability the connector can have; each instance narrows `capabilities` to what
its settings and table allow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, SecretStr, model_validator
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from customer_sync.sdk import (
    AppRecord,
    Capability,
    ChangePage,
    Connector,
    ConnectorError,
    ConnectorSettings,
    Cursor,
    Seconds,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
)
from customer_sync_connectors.sql._errors import classify, is_record_fault
from customer_sync_connectors.sql._keyset import (
    Position,
    cursor_value,
    live_ids_query,
    page_query,
    record_columns,
)
from customer_sync_connectors.sql._schema import build_engine, describe_table, in_chunks, safe_url
from customer_sync_connectors.sql._values import is_deleted_value, live_clause, parse_clock, to_json
from customer_sync_connectors.sql._writes import BatchWriter, Operation

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from customer_sync_connectors.sql._schema import TableSpec

__all__ = ["ColumnType", "SqlConnector", "SqlSettings"]

T = TypeVar("T")
ColumnType = Literal["text", "integer", "real", "boolean", "timestamp"]


class SqlSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `sql` connector.

    Attributes:
        url: any SQLAlchemy URL; `postgresql://` uses psycopg 3, `sqlite:///data/crm.db` a file
            (its folder is created).
        password: injected into the URL; set it from the environment (`${CRM_DB_PASSWORD}`),
            never in `url`. It is never logged and is masked out of error messages.
        table: the table of customers.
        id_column: its primary id (text, uuid or an autoincrement integer).
        key_column: a text column the connector fills, on every row it creates, with the
            engine's idempotency key, and looks up before creating: what makes creates
            exactly-once when the id is an autoincrement integer (a text or uuid id is made
            from the key already). Give it a unique index; `create_table` does.
        modified_column: the last-modified timestamp, which listing resumes from. Writes set
            it to the database's own time now, never the daemon's clock.
        deleted_column: a soft-delete column; a non-null, truthy value (a time, true, 1) means
            deleted. Without it, deletes are hard DELETEs, seen by the id scan.
        columns: the columns exposed as app fields (default: all but the id, key, modified and
            deleted columns).
        email_column: the column `search_by_email` matches, when the table has it.
        create_table: create the table when it is missing (the quickstart): id TEXT primary key,
            the modified (and deleted) column as timestamps, the key column (text, unique
            index) when `key_column` is set, and `column_types`.
        column_types: column name -> "text", "integer", "real", "boolean" or "timestamp".
        page_size: rows per listed page and ids per `list_ids` chunk.
        lookback_s: re-read rows modified this many seconds before the cursor on every poll, to
            catch rows committed late with an older timestamp (re-reads cost nothing: the
            engine compares content).
        id_scan: offer `list_ids`, so hard deletes are found by comparing ids.
    """

    url: str
    password: SecretStr | None = None
    table: str = Field(min_length=1)
    id_column: str = "id"
    key_column: str | None = None
    modified_column: str = "updated_at"
    deleted_column: str | None = None
    columns: list[str] | None = None
    email_column: str | None = "email"
    create_table: bool = False
    column_types: dict[str, ColumnType] = Field(default_factory=dict)
    page_size: int = Field(1000, ge=1, le=100_000)
    lookback_s: Seconds = Field(0, ge=0)
    id_scan: bool = True

    @model_validator(mode="after")
    def _roles_are_distinct(self) -> SqlSettings:
        managed = [self.id_column, self.modified_column]
        managed += [c for c in (self.deleted_column, self.key_column) if c]
        if len(set(managed)) != len(managed):
            raise ValueError(
                "id_column, modified_column, deleted_column and key_column must name "
                "different columns"
            )
        overlap = set(managed) & (set(self.columns or ()) | set(self.column_types))
        if overlap:
            raise ValueError(
                f"{', '.join(sorted(overlap))}: the connector manages this column; "
                "leave it out of columns and column_types"
            )
        return self


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlConnector(Connector[SqlSettings]):
    """Customers in one SQL table (SQLAlchemy; tested on SQLite and PostgreSQL).

    Args:
        settings: the app's validated settings.
        app: the configured app name.
        clock: the daemon's clock, the one `WriteOp.uncertain_since` is stated in (tests inject
            one). It only measures how long ago an uncertain create was decided; no time it
            tells is ever written to the table.
    """

    name = "sql"
    settings_model = SqlSettings
    capabilities = (
        Capability.INCREMENTAL | Capability.BATCH_WRITE | Capability.DELETE
        | Capability.DELETES_VISIBLE | Capability.ID_SCAN | Capability.SEARCH_BY_EMAIL
    )
    object_types = ("row",)
    batch_size = 500
    # The modified column is set by whoever writes the table, on their own clock, and hard
    # deletes leave no row to list: compare the whole table with the store every 10 minutes.
    reconcile_interval_s = 600.0

    def __init__(
        self, settings: SqlSettings, *, app: str, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(settings, app=app)
        self.clock = clock or _utcnow
        self._engine: Engine | None = None
        self._spec: TableSpec | None = None
        self._writer: BatchWriter | None = None
        self._secrets = _secrets_of(settings)
        caps = type(self).capabilities
        if settings.deleted_column is None:
            caps &= ~Capability.DELETES_VISIBLE
        if not settings.id_scan:
            caps &= ~Capability.ID_SCAN
        if settings.email_column is None:
            caps &= ~Capability.SEARCH_BY_EMAIL
        # The SDK declares capabilities per class; this connector's depend on its settings.
        self.capabilities = caps  # type: ignore[misc]

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the engine and reflect the table (creating it when `create_table` is set).

        Raises:
            ConfigError: bad URL or driver, or the table or a configured column is missing.
            TransientError: the database cannot be reached.
            AuthError: the database refuses the credentials.
        """
        started = time.perf_counter()
        engine = build_engine(self.settings, app=self.app)
        try:
            spec = await asyncio.to_thread(describe_table, engine, self.settings, app=self.app)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise self._failure(exc, "open", at=True) from exc
        except BaseException:
            engine.dispose()
            raise
        self._engine, self._spec = engine, spec
        self._writer = BatchWriter(engine, spec, clock=self.clock, error=self.error, log=self.log)
        if spec.email is None:
            self.capabilities &= ~Capability.SEARCH_BY_EMAIL  # type: ignore[misc]
        if spec.created:
            self.log.info("app.table_created", table=spec.table.name, fields=list(spec.columns))
        if spec.key is not None and not spec.key_unique:
            # Creates still look the key up first; only a unique index stops a second row
            # when two writers race (another replica, a restore) or a lookup is skipped.
            self.log.warning("app.key_column_not_unique", table=spec.table.name,
                             column=spec.key.name)
        self.log.info(
            "app.opened", dialect=engine.dialect.name, table=spec.table.name,
            fields=list(spec.columns), duration_ms=_ms_since(started),
        )

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        engine, self._engine, self._spec, self._writer = self._engine, None, None, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)

    async def app_fields(self) -> set[str]:
        """The table's columns a field map may name (the columns records expose)."""
        return set(self._opened()[1].columns)

    async def check(self) -> None:
        """Read one id from the table.

        Raises:
            TransientError: the database cannot be reached.
            AuthError: the credentials or grants are refused.
        """
        engine, spec = self._opened()

        def probe() -> None:
            with engine.connect() as conn:
                conn.execute(select(spec.id).limit(1)).first()

        await self._run(probe, operation="check", at=True)

    # -- reading ------------------------------------------------------------------------------

    async def list_changes(
        self, since: Cursor | None
    ) -> AsyncIterator[ChangePage]:
        """Pages of rows modified after `since`, in (modified, id) order; all rows when None.

        NULL-modified rows come first on a full pass (see `_keyset`). When nothing is new, one
        empty page carries the cursor back unchanged.
        """
        _, spec = self._opened()
        position, cursor = self._resume(since, spec)
        lookback = self.settings.lookback_s if position.timed else 0.0
        size = self.settings.page_size
        yielded = False
        while True:
            started = time.perf_counter()
            rows = await self._run(self._fetch_page, position, lookback, operation="list")
            lookback = 0.0  # the window is re-read once per poll, not once per page
            if rows:
                last = rows[-1]
                m = cursor_value(spec, last[1]) if position.timed else None
                position = Position(m=m, id=_json_id(last[0]), timed=position.timed)
                cursor = position.encode()
                self.log.debug("app.page_fetched", count=len(rows), duration_ms=_ms_since(started))
                yield ChangePage(records=[self._record(r) for r in rows], cursor=cursor)
                yielded = True
            if len(rows) == size:
                continue
            if position.timed:
                break
            # The NULL-modified rows are done: go on with the timed rows, from the first.
            position = Position(timed=True)
        if not yielded:
            yield ChangePage(records=[], cursor=cursor)

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        """Live records by id, in chunks; missing and soft-deleted ids are absent."""
        _, spec = self._opened()
        ids = [v for v in dict.fromkeys(map(spec.id_or_none, app_record_ids)) if v is not None]
        rows = await self._run(self._read_rows, ids, operation="read")
        return [self._record(r) for r in rows]

    async def list_ids(self) -> AsyncIterator[list[str]]:
        """Every live id, in chunks of `page_size`, in id order."""
        self._opened()
        after: Any = None
        while True:
            ids = await self._run(self._fetch_ids, after, operation="list_ids")
            if ids:
                yield [str(i) for i in ids]
            if len(ids) < self.settings.page_size:
                return
            after = ids[-1]

    async def search_by_email(self, email: str) -> list[AppRecord]:
        """Live records whose email column matches, ignoring case."""
        return await self.search_by_emails([email])

    async def search_by_emails(self, emails: Sequence[str]) -> list[AppRecord]:
        """Live records whose email column matches any of `emails`, ignoring case: one
        `lower(email) IN (...)` query per chunk of emails. A record is returned once.

        An index on `lower(email)` keeps this cheap on a large table.
        """
        _, spec = self._opened()
        if spec.email is None:
            raise self.error(ConnectorError, "the table has no email column", operation="search")
        wanted = list(dict.fromkeys(email.lower() for email in emails))
        if not wanted:
            return []
        rows = await self._run(self._search_rows, wanted, operation="search")
        return [self._record(r) for r in rows]

    # -- writing ------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Insert one row; see `create_many`."""
        op = WriteOp(key=idempotency_key, op="create", fields=fields,
                     idempotency_key=idempotency_key)
        return _receipt_or_raise((await self.create_many([op]))[0])

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        """Set only the `changed` columns of one row, and its modified time (the database's).

        Raises:
            RecordGone: no live row has this id.
            RecordRejected: a column is unknown or the database refuses a value.
        """
        op = WriteOp(key=app_record_id, op="update", app_record_id=app_record_id, fields=changed)
        return _receipt_or_raise((await self.update_many([op]))[0])

    async def delete(self, app_record_id: str) -> None:
        """Soft-delete the row when `deleted_column` is set, else DELETE it.

        Raises:
            RecordGone: no live row has this id.
        """
        op = WriteOp(key=app_record_id, op="delete", app_record_id=app_record_id)
        _receipt_or_raise((await self.delete_many([op]))[0])

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Insert rows in one transaction, once per idempotency key.

        A create that an earlier send already made is answered with that row instead of a new
        one (how it is found depends on the id: see the module docstring). When the batch
        fails on a constraint or a bad value, the rows are retried one by one so that only the
        bad ones are rejected.

        Raises:
            TransientError: the connection failed. When it failed while committing, the rows
                may have been written; re-sent (`uncertain_since` set), the creates find them.
        """
        return await self._write("create", ops)

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update rows in one transaction (see `update` and `create_many`)."""
        return await self._write("update", ops)

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Delete rows in one transaction (see `delete`)."""
        return await self._write("delete", ops)

    # -- worker-thread bodies -----------------------------------------------------------------

    def _fetch_page(self, position: Position, lookback_s: float) -> list[Sequence[Any]]:
        engine, spec = self._opened()
        query = page_query(spec, position, limit=self.settings.page_size, lookback_s=lookback_s)
        with engine.connect() as conn:
            return list(conn.execute(query).all())

    def _read_rows(self, ids: list[Any]) -> list[Sequence[Any]]:
        engine, spec = self._opened()
        rows: list[Sequence[Any]] = []
        with engine.connect() as conn:
            for chunk in in_chunks(ids):
                query = select(*record_columns(spec)).where(
                    spec.id.in_(chunk), live_clause(spec.deleted)
                )
                rows += conn.execute(query).all()
        return rows

    def _fetch_ids(self, after: Any) -> list[Any]:
        engine, spec = self._opened()
        query = live_ids_query(spec, after, limit=self.settings.page_size)
        with engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def _search_rows(self, emails: list[str]) -> list[Sequence[Any]]:
        engine, spec = self._opened()
        assert spec.email is not None
        rows: dict[Any, Sequence[Any]] = {}
        with engine.connect() as conn:
            for chunk in in_chunks(emails):
                query = select(*record_columns(spec)).where(
                    func.lower(spec.email).in_(chunk), live_clause(spec.deleted)
                ).order_by(spec.id)
                rows.update((row[0], row) for row in conn.execute(query))
        return list(rows.values())

    # -- helpers ------------------------------------------------------------------------------

    def _opened(self) -> tuple[Engine, TableSpec]:
        if self._engine is None or self._spec is None:
            raise self.error(ConnectorError, "the connector is not open; use it with `async with`")
        return self._engine, self._spec

    def _resume(self, since: Cursor | None, spec: TableSpec) -> tuple[Position, Cursor]:
        """The position a stored cursor names; a cursor this table cannot use means a full
        pass (re-reading is safe: the engine compares content)."""
        try:
            position = Position.decode(since)
            if position.id is not None:
                spec.id_value(position.id)
            elif position.timed:
                raise ValueError("a timed cursor names a row")
            if position.timed and not spec.text_clock:
                datetime.fromisoformat(position.m)
        except (ValueError, TypeError) as exc:
            self.log.warning("app.cursor_rejected", reason=type(exc).__name__)
            position = Position()
            return position, position.encode()
        return position, since or position.encode()

    def _record(self, row: Sequence[Any]) -> AppRecord:
        _, spec = self._opened()
        offset = 2 if spec.deleted is None else 3
        deleted = spec.deleted is not None and is_deleted_value(row[2])
        # A deleted record carries no field values: the engine needs only its id.
        values = zip(spec.columns, row[offset:], strict=True)
        fields = {} if deleted else {name: to_json(value) for name, value in values}
        return AppRecord(app_record_id=str(row[0]), fields=fields,
                         modified_at=parse_clock(row[1]), deleted=deleted)

    async def _write(self, operation: Operation, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        self._opened()
        assert self._writer is not None
        started = time.perf_counter()
        outcomes = await self._run(self._writer.write, operation, list(ops), operation=operation)
        errors = sum(o.error is not None for o in outcomes)
        self.log.debug("app.batch_written", operation=operation, count=len(outcomes) - errors,
                       errors=errors, duration_ms=_ms_since(started))
        return outcomes

    async def _run(self, fn: Callable[..., T], *args: Any, operation: str, at: bool = False) -> T:
        """Run a blocking call in a worker thread; database failures become SDK errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            error = self._failure(exc, operation, at=at)
            if is_record_fault(exc):
                # The driver's message can quote the record's values; keep it out of tracebacks.
                raise error from None
            raise error from exc

    def _failure(
        self, exc: SQLAlchemyError, operation: str, *, at: bool = False
    ) -> ConnectorError:
        self.log.warning("app.query_failed", operation=operation, error=type(exc).__name__)
        where = self._where() if at else None
        return classify(exc, make=self.error, operation=operation, secrets=self._secrets,
                        where=where)

    def _where(self) -> str | None:
        """Where the database is, for connection errors: no password, no query string."""
        try:
            return safe_url(make_url(self.settings.url))
        except ArgumentError:
            return None


def _secrets_of(settings: SqlSettings) -> tuple[str, ...]:
    secrets = [settings.password.get_secret_value()] if settings.password is not None else []
    try:
        inline = make_url(settings.url).password
    except ArgumentError:
        inline = None
    if inline:
        secrets.append(str(inline))
    return tuple(secrets)


def _receipt_or_raise(outcome: WriteOutcome) -> WriteReceipt:
    if outcome.error is not None:
        raise outcome.error
    assert outcome.receipt is not None
    return outcome.receipt


def _json_id(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
