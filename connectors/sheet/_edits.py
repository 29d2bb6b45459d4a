"""The engine's writes, applied to a grid freshly read from the file: the merge.

Each write changes only its own row, and in it only the cells it sends; every other row and
cell keeps what the file holds at the moment of the write. A person's edit saved while the
daemon was running is therefore never overwritten by a stale copy: the connector never keeps
one.

Creates are exactly-once: a new row's id is uuid5 of the engine's idempotency key, so a create
sent again finds the row the first send made (or its tombstone, when a person deleted it since)
and adds no second one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from customer_sync_connectors.sheet._grid import Grid, Unwritable

from customer_sync.sdk import ConnectorError, RecordGone, RecordRejected, WriteOp

__all__ = ["ID_NAMESPACE", "RowIndex", "apply_writes", "assign_ids", "new_row_id"]

# New row ids are uuid5(ID_NAMESPACE, idempotency key): the same key always makes the same id.
ID_NAMESPACE = uuid.UUID("5c1c0ad2-6b0e-5c55-9f0a-8c2e3f6f51a7")

MakeError = Callable[..., ConnectorError]


def new_row_id(idempotency_key: str) -> str:
    """The id a create with this key gives its row."""
    return str(uuid.uuid5(ID_NAMESPACE, idempotency_key))


class RowIndex:
    """Row id -> handle in one grid; the first row holding an id owns it."""

    def __init__(self, grid: Grid, id_column: str) -> None:
        self.handles: dict[str, int] = {}
        self.unnamed: list[int] = []  # rows without an id, or repeating an earlier row's
        self.fields: dict[str, dict[str, Any]] = {}
        for handle, cells in grid.rows():
            rid = _id_text(cells.get(id_column))
            if rid is None or rid in self.handles:
                self.unnamed.append(handle)
                continue
            self.handles[rid] = handle
            self.fields[rid] = cells


def assign_ids(grid: Grid, id_column: str) -> int:
    """Give every row without an id (or with a copy of another row's) a fresh uuid; how many."""
    index = RowIndex(grid, id_column)
    for handle in index.unnamed:
        grid.set(handle, {id_column: str(uuid.uuid4())})
    return len(index.unnamed)


def apply_writes(grid: Grid, ops: Sequence[WriteOp], *, id_column: str,
                 allowed: Callable[[str], bool], gone: Mapping[str, Any],
                 make_error: MakeError) -> dict[str, str | ConnectorError]:
    """Apply writes to the grid; op key -> the row id it wrote, or the error it ended with."""
    index = RowIndex(grid, id_column)
    result: dict[str, str | ConnectorError] = {}
    for op in ops:
        try:
            result[op.key] = _apply(grid, index, op, id_column=id_column, allowed=allowed,
                                    gone=gone, make_error=make_error)
        except (RecordRejected, RecordGone) as exc:
            result[op.key] = exc
    return result


def _apply(grid: Grid, index: RowIndex, op: WriteOp, *, id_column: str,
           allowed: Callable[[str], bool], gone: Mapping[str, Any],
           make_error: MakeError) -> str:
    unknown = sorted(k for k in op.fields if k == id_column or not allowed(k))
    if unknown:
        raise make_error(RecordRejected, "not app fields of this sheet: "
                         + ", ".join(map(repr, unknown)), operation=op.op)
    try:
        if op.op == "create":
            rid = new_row_id(op.idempotency_key or op.key)
            if rid in index.handles or rid in gone:
                return rid  # made by an earlier send: answered as it stands
            grid.append({id_column: rid, **op.fields})
            index.handles[rid] = -1  # a second create with this key in the batch finds it
            return rid
        rid = op.app_record_id or ""
        handle = index.handles.get(rid)
        if handle is None or handle < 0:
            raise make_error(RecordGone, "no row has this id", operation=op.op,
                             app_record_id=rid)
        if op.op == "update":
            grid.set(handle, op.fields)
        else:
            grid.remove(handle)
            del index.handles[rid]
        return rid
    except Unwritable as exc:
        raise make_error(RecordRejected, str(exc), operation=op.op) from None


def _id_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id a spreadsheet turned into a number
    text = str(value).strip()
    return text or None
