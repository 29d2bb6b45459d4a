"""The spreadsheet connectors, `csv` and `xlsx`: customers as the rows of one file.

A file is an app and a row is a record; one column holds the row's id. The file has no
modified times, so the daemon keeps them (`_state`): listing reads the whole file, stamps the
rows whose content changed since the last read, and returns the rows stamped after the cursor,
and the rows that vanished as deleted. A row a person added without an id gets one, written
back into the file before the row is listed.

Every write is a merge (`_edits`) onto a fresh read of the file, put in place atomically
(`_replace`): our changes are applied to the rows as the file holds them now, everything else
is kept as it is, and when the file changed during the write the write is read, merged and
tried again. While a spreadsheet program has the file open (its lock file is beside it) the
connector does not write: the program would save its own copy over ours.

All file work runs in a worker thread, one operation at a time per app.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from customer_sync_connectors.sheet._csv import CsvGrid
from customer_sync_connectors.sheet._edits import RowIndex, apply_writes, assign_ids
from customer_sync_connectors.sheet._grid import Grid, UnreadableFile
from customer_sync_connectors.sheet._replace import (
    FileBusy,
    FileChanged,
    FileMissing,
    Snapshot,
    file_lock,
    read_file,
    replace,
)
from customer_sync_connectors.sheet._state import SheetState
from customer_sync_connectors.sheet._xlsx import XlsxGrid
from customer_sync_connectors.sheet.settings import CsvSettings, SheetSettings, XlsxSettings

from customer_sync.sdk import (
    AppRecord,
    Capability,
    ChangePage,
    ConfigError,
    Connector,
    ConnectorError,
    Cursor,
    RateLimited,
    TransientError,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
)

__all__ = ["CsvConnector", "SheetConnector", "XlsxConnector"]

S = TypeVar("S", bound=SheetSettings)
T = TypeVar("T")
_EPOCH = datetime.min.replace(tzinfo=UTC)
#: When a write to a file a spreadsheet program holds open is worth trying again (s).
BUSY_RETRY_S = 60.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SheetConnector(Connector[S], Generic[S]):
    """What the csv and xlsx connectors share; a subclass says how to read its kind of file.

    Args:
        settings: the app's validated settings.
        app: the configured app name.
        clock: the daemon's clock, which stamps the rows' modified times (tests inject one).
    """

    capabilities = (
        Capability.INCREMENTAL | Capability.BATCH_WRITE | Capability.DELETE
        | Capability.DELETES_VISIBLE | Capability.ID_SCAN | Capability.SEARCH_BY_EMAIL
    )
    object_types = ("row",)
    # Every write batch rewrites the whole file: few large batches cost far less than many.
    batch_size = 500

    def __init__(self, settings: S, *, app: str, clock: Callable[[], datetime] | None = None,
                 ) -> None:
        super().__init__(settings, app=app)
        self.clock = clock or _utcnow
        self.path = Path(settings.path)
        self.state_path = (Path(settings.state_path) if settings.state_path
                           else self.path.with_name(f".{self.path.name}.customer-sync.json"))
        self._lock = threading.Lock()
        self._state: SheetState | None = None
        if settings.email_column is None:
            # The SDK declares capabilities per class; this connector's depend on its settings.
            self.capabilities = type(self).capabilities & ~Capability.SEARCH_BY_EMAIL  # type: ignore[misc]

    # -- the kind of file ---------------------------------------------------------------------

    def parse(self, data: bytes) -> Grid:
        """The grid of a file's bytes (empty bytes: a new file with the configured header)."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the state and check the file (creating it when `create_file` is set).

        Raises:
            ConfigError: the file or its folder is missing, or it is not a readable sheet.
        """
        columns = await asyncio.to_thread(self._open)
        self.log.info("app.opened", fields=columns)

    def _open(self) -> list[str]:
        if not self.path.parent.is_dir():
            raise ConfigError(f"apps.{self.app}.settings.path: the folder does not exist")
        self._state = SheetState.load(self.state_path)
        with self._lock:
            snap = read_file(self.path)
            if not snap.exists:
                if not self.settings.create_file:
                    raise ConfigError(f"apps.{self.app}.settings.path: the file does not exist "
                                      "(set create_file = true to start a new one)")
                self._transact(lambda grid: None, operation="open")
                self.log.info("app.file_created")
            try:
                return self._columns(self.parse(read_file(self.path).data))
            except UnreadableFile as exc:
                raise ConfigError(f"apps.{self.app}.settings.path: {exc}") from None

    async def app_fields(self) -> set[str]:
        """The columns the file's header names (but the id column)."""
        grid, _ = await self._run(self._read_grid, operation="check")
        return {c for c in grid.header if c and c != self.settings.id_column}

    async def check(self) -> None:
        """Read the file.

        Raises:
            TransientError: it is missing or cannot be read just now.
            ConnectorError: it is not a readable sheet.
        """
        await self._run(self._read_grid, operation="check")

    # -- reading ------------------------------------------------------------------------------

    async def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:
        """Pages of rows stamped after `since`, in (modified, id) order; all rows when None.

        Rows changed since the last read are stamped now, rows gone are listed as deleted.
        When nothing is new, one empty page carries the cursor back unchanged.
        """
        after = self._resume(since)
        started = time.perf_counter()
        items = await self._run(self._observe_file, operation="list")
        fresh = [item for item in items if (item[0], item[1]) > after]
        size = self.settings.page_size
        self.log.debug("app.file_read", count=len(fresh), duration_ms=_ms_since(started))
        for at in range(0, len(fresh), size):
            page = fresh[at:at + size]
            last = page[-1]
            cursor = Cursor(value=json.dumps({"m": last[0].isoformat(), "id": last[1]}))
            yield ChangePage(records=[record for _, _, record in page], cursor=cursor)
        if not fresh:
            yield ChangePage(records=[], cursor=since or Cursor(value="{}"))

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        """Live rows by id; ids not in the file are absent."""
        wanted = set(app_record_ids)
        _, rows = await self._run(self._read_rows, operation="read")
        return [self._record(rid, fields) for rid, fields in rows.items() if rid in wanted]

    async def list_ids(self) -> AsyncIterator[list[str]]:
        """Every row id in the file, and those missing but not yet confirmed deleted."""
        _, rows = await self._run(self._read_rows, operation="list_ids")
        state = self._state
        ids = list(rows) + [r for r in (state.missing if state else {}) if r not in rows]
        size = self.settings.page_size
        for at in range(0, len(ids), size):
            yield ids[at:at + size]

    async def search_by_email(self, email: str) -> list[AppRecord]:
        """Rows whose email column holds this address, ignoring case."""
        return await self.search_by_emails([email])

    async def search_by_emails(self, emails: Sequence[str]) -> list[AppRecord]:
        """Rows whose email column holds any of these addresses, ignoring case; one read."""
        column = self.settings.email_column
        if column is None:
            raise self.error(ConnectorError, "no email_column is set", operation="search")
        wanted = {e.strip().lower() for e in emails}
        _, rows = await self._run(self._read_rows, operation="search")
        return [self._record(rid, fields) for rid, fields in rows.items()
                if isinstance(fields.get(column), str)
                and fields[column].strip().lower() in wanted]

    # -- writing ------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Add one row; see `create_many`."""
        op = WriteOp(key=idempotency_key, op="create", fields=fields,
                     idempotency_key=idempotency_key)
        return _receipt_or_raise((await self.create_many([op]))[0])

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        """Set only the `changed` cells of one row.

        Raises:
            RecordGone: no row has this id.
            RecordRejected: a field is not a column, or a cell cannot hold the value.
        """
        op = WriteOp(key=app_record_id, op="update", app_record_id=app_record_id, fields=changed)
        return _receipt_or_raise((await self.update_many([op]))[0])

    async def delete(self, app_record_id: str) -> None:
        """Remove the row from the file.

        Raises:
            RecordGone: no row has this id.
        """
        op = WriteOp(key=app_record_id, op="delete", app_record_id=app_record_id)
        _receipt_or_raise((await self.delete_many([op]))[0])

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Add rows in one rewrite of the file, once per idempotency key: a row's id is made
        from the key, so a create sent again finds its row instead of adding one.

        Raises:
            RateLimited: the file is open in a spreadsheet program (its lock file is beside
                it) or the system refuses to replace it; nothing was written.
            TransientError: the file is missing, or kept changing during every attempt;
                nothing was written.
        """
        return await self.write_many(ops)

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update rows in one rewrite of the file (see `update` and `create_many`)."""
        return await self.write_many(ops)

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Remove rows in one rewrite of the file (see `delete`)."""
        return await self.write_many(ops)

    async def write_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Apply a mixed batch in one rewrite of the file, creates, updates and deletes alike."""
        if not ops:
            return []
        started = time.perf_counter()
        outcomes = await self._run(self._write, list(ops), operation="write")
        errors = sum(o.error is not None for o in outcomes)
        self.log.debug("app.batch_written", count=len(outcomes) - errors, errors=errors,
                       duration_ms=_ms_since(started))
        return outcomes

    # -- worker-thread bodies -----------------------------------------------------------------

    def _write(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        state = self._opened()
        results, grid = self._transact(
            lambda g: apply_writes(g, ops, id_column=self.settings.id_column,
                                   allowed=self._allowed(g), gone=state.gone,
                                   make_error=self.error),
            operation="write")
        stamp = self._observe(grid)
        outcomes = []
        for op in ops:
            result = results[op.key]
            if isinstance(result, ConnectorError):
                outcomes.append(WriteOutcome(key=op.key, error=result))
                continue
            outcomes.append(WriteOutcome(key=op.key, receipt=WriteReceipt(
                app_record_id=result, modified_at=state.modified_at(result) or stamp,
                fingerprint=fingerprint(op.fields))))
        return outcomes

    def _observe_file(self) -> list[tuple[datetime, str, AppRecord]]:
        """Read the file (writing ids into rows that lack one), stamp what changed, and return
        every live row and tombstone as (modified, id, record), in that order."""
        state = self._opened()
        grid, rows = self._read_rows()
        if RowIndex(grid, self.settings.id_column).unnamed:
            try:
                count, grid = self._transact(
                    lambda g: assign_ids(g, self.settings.id_column), operation="assign_ids")
                self.log.info("app.ids_assigned", count=count)
            except (FileBusy, FileMissing, FileChanged, TransientError) as exc:
                # The rows are listed once their ids are in the file; never under an id the
                # file does not hold, which the next read could not find again.
                self.log.warning("app.ids_not_written", reason=str(exc))
            rows = RowIndex(grid, self.settings.id_column).fields
        self._observe(grid, rows)
        items = [(state.modified_at(rid) or _EPOCH, rid, self._record(rid, fields))
                 for rid, fields in rows.items()]
        items += [(at, rid, AppRecord(app_record_id=rid, modified_at=at, deleted=True))
                  for rid, at in state.gone.items()]
        return sorted(items, key=lambda item: (item[0], item[1]))

    def _observe(self, grid: Grid, rows: dict[str, dict[str, Any]] | None = None) -> datetime:
        state = self._opened()
        if rows is None:
            rows = RowIndex(grid, self.settings.id_column).fields
        columns = self._columns(grid)
        now = self.clock()
        state.observe({rid: {c: f.get(c) for c in columns} for rid, f in rows.items()}, now,
                      confirm_s=self.settings.delete_confirm_s,
                      keep_gone_s=self.settings.tombstone_days * 86400)
        state.save()
        return state.last

    def _read_rows(self) -> tuple[Grid, dict[str, dict[str, Any]]]:
        grid, _ = self._read_grid()
        return grid, RowIndex(grid, self.settings.id_column).fields

    def _read_grid(self) -> tuple[Grid, Snapshot]:
        snap = read_file(self.path)
        if not snap.exists or not snap.data:
            raise FileMissing("the file is missing or empty (a save may be under way)")
        return self.parse(snap.data), snap

    def _transact(self, edit: Callable[[Grid], T], *, operation: str) -> tuple[T, Grid]:
        """Read, edit and replace the file until nobody changed it in between.

        Raises:
            FileBusy, FileMissing: (as `TransientError` from `_run`) try again later.
            TransientError: it changed under every one of `write_attempts` tries.
        """
        locked = file_lock if self.settings.respect_office_locks else _no_lock
        with locked(self.path):
            return self._transact_locked(edit, operation=operation)

    def _transact_locked(self, edit: Callable[[Grid], T], *, operation: str) -> tuple[T, Grid]:
        for attempt in range(1, self.settings.write_attempts + 1):
            snap = read_file(self.path)
            if snap.exists and not snap.data:
                raise FileMissing("the file is empty (a save may be under way)")
            if not snap.exists and not self.settings.create_file:
                raise FileMissing("the file is missing")
            grid = self.parse(snap.data)
            result = edit(grid)
            if snap.exists and not grid.changed:
                return result, grid
            try:
                replace(self.path, snap, grid.dump())
            except FileChanged as exc:
                if exc.kept is not None:
                    self.log.warning("app.file_conflict_kept", kept=exc.kept, attempt=attempt)
                self.log.info("app.file_changed_during_write", operation=operation,
                              attempt=attempt)
                continue
            return result, grid
        raise self.error(TransientError, f"the file changed during each of "
                         f"{self.settings.write_attempts} attempts to write it",
                         operation=operation)

    # -- helpers ------------------------------------------------------------------------------

    def _opened(self) -> SheetState:
        if self._state is None:
            raise self.error(ConnectorError, "the connector is not open; use it with `async with`")
        return self._state

    def _columns(self, grid: Grid) -> list[str]:
        if self.settings.columns is not None:
            return list(self.settings.columns)
        return [c for c in grid.header if c and c != self.settings.id_column]

    def _allowed(self, grid: Grid) -> Callable[[str], bool]:
        columns = set(self._columns(grid))
        return columns.__contains__

    def _record(self, rid: str, fields: Mapping[str, Any]) -> AppRecord:
        columns = self.settings.columns
        values = ({c: fields.get(c) for c in columns} if columns is not None else
                  {c: v for c, v in fields.items() if c != self.settings.id_column})
        state = self._state
        return AppRecord(app_record_id=rid, fields=values,
                         modified_at=state.modified_at(rid) if state else None)

    def _resume(self, since: Cursor | None) -> tuple[datetime, str]:
        if since is None:
            return (_EPOCH, "")
        try:
            blob = json.loads(since.value)
            if not blob:
                return (_EPOCH, "")
            at = datetime.fromisoformat(blob["m"])
            return (at if at.tzinfo else at.replace(tzinfo=UTC), str(blob["id"]))
        except (ValueError, KeyError, TypeError):
            self.log.warning("app.cursor_rejected")
            return (_EPOCH, "")

    async def _run(self, fn: Callable[..., T], *args: Any, operation: str) -> T:
        """Run file work in a worker thread, one at a time; file trouble becomes SDK errors."""

        def locked() -> T:
            with self._lock:
                return fn(*args)

        try:
            return await asyncio.to_thread(locked)
        except FileBusy as exc:
            # Not a failure of the writes: the file is taken for now. RateLimited spends no
            # write attempt, so writes wait for a file open all afternoon without dying.
            self.log.info("app.file_busy", operation=operation, reason=str(exc))
            raise self.error(RateLimited, str(exc), operation=operation,
                             retry_after_s=BUSY_RETRY_S) from None
        except (FileMissing, FileChanged) as exc:
            self.log.info("app.file_unavailable", operation=operation, reason=str(exc))
            raise self.error(TransientError, str(exc), operation=operation) from None
        except UnreadableFile as exc:
            raise self.error(ConnectorError, f"the file cannot be read: {exc}",
                             operation=operation) from None
        except OSError as exc:
            raise self.error(TransientError, f"the file cannot be reached ({exc.strerror})",
                             operation=operation) from None


class CsvConnector(SheetConnector[CsvSettings]):
    """Customers as the rows of a CSV file (UTF-8, with or without a byte order mark)."""

    name = "csv"
    settings_model = CsvSettings

    def parse(self, data: bytes) -> Grid:
        s = self.settings
        return CsvGrid(data, delimiter=s.delimiter, quotechar=s.quotechar, write_bom=s.write_bom,
                       line_terminator=s.line_terminator, header=self._new_header())

    def _new_header(self) -> list[str]:
        return [self.settings.id_column, *(self.settings.columns or [])]


class XlsxConnector(SheetConnector[XlsxSettings]):
    """Customers as the rows of one worksheet of an Excel workbook (openpyxl)."""

    name = "xlsx"
    settings_model = XlsxSettings

    def parse(self, data: bytes) -> Grid:
        header = [self.settings.id_column, *(self.settings.columns or [])]
        return XlsxGrid(data, sheet=self.settings.sheet, header=header)


@contextmanager
def _no_lock(path: Path) -> Iterator[None]:
    yield


def _receipt_or_raise(outcome: WriteOutcome) -> WriteReceipt:
    if outcome.error is not None:
        raise outcome.error
    assert outcome.receipt is not None
    return outcome.receipt


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
