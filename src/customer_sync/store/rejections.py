"""Rejections: what a unit of work learnt about refused values, written back once per batch.

A value normalization refuses (an invalid phone, an unmapped country) is recorded against its
(app, record, field), with the raw value for the operator and the customer once the record is
linked. The batch's records are observed in memory as they are normalized, whether they carry
a refused value or not, and `flush` reads the stored rejections of just those records in a few
queries (one per app and chunk of records, never one per record): it opens new ones, brings
repeated ones up to date, resolves those the record no longer holds (or that a write of ours
overwrote), and attaches the customer to those whose record was linked in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from customer_sync.store.bulk import insert_rows
from customer_sync.store.tables import RejectionRow

__all__ = ["OPEN", "RESOLVED", "RejectionBook", "storable_raw_value"]

OPEN = "open"
RESOLVED = "resolved"

rejections_t = RejectionRow.__table__

_CHUNK = 400  # keeps IN lists under SQLite's variable limit
_Rows = dict[str, dict[str, Any]]  # field -> stored row
_MAX_RAW_CHARS = 2000  # a refused value is shown, not archived: a huge one is cut

_OF_RECORDS = select(rejections_t).where(
    rejections_t.c.app == bindparam("app"),
    rejections_t.c.app_record_id.in_(bindparam("ids", expanding=True)),
)
_ANY_OF_APP = select(rejections_t.c.field).where(rejections_t.c.app == bindparam("app")).limit(1)
# Bind names differ from the column names: the SET columns are given under their own names.
_UPDATE = update(rejections_t).where(
    rejections_t.c.app == bindparam("k_app"),
    rejections_t.c.app_record_id == bindparam("k_rid"),
    rejections_t.c.field == bindparam("k_field"),
)


def storable_raw_value(value: Any) -> Any:
    """The raw value as the JSON column can hold it: JSON values as they are, anything else
    (a date-time a connector handed over, bytes) as text; cut when its JSON is very long."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        value = str(value)
        text = json.dumps(value, ensure_ascii=False)
    if len(text) <= _MAX_RAW_CHARS:
        return value
    return (value if isinstance(value, str) else text)[:_MAX_RAW_CHARS] + "…"


class RejectionBook:
    """The batch's observations of refused values; `flush` writes them in the caller's
    transaction."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        # (app, record) -> field -> (reason, raw value): what the record's last read refused
        self._seen: dict[tuple[str, str], Mapping[str, tuple[str, Any]]] = {}
        self._customers: dict[tuple[str, str], str] = {}  # (app, record) -> its customer
        self._written: dict[tuple[str, str], set[str]] = {}  # (app, record) -> fields we wrote

    def __bool__(self) -> bool:
        return bool(self._seen or self._customers or self._written)

    def observe(self, app: str, app_record_id: str, refused: Mapping[str, tuple[str, Any]],
                *, customer_id: str | None) -> None:
        """The record was normalized and these fields refused (field -> reason, raw value);
        any other field it was refused before is resolved. The last read in a batch wins."""
        self._seen[(app, app_record_id)] = refused
        if customer_id is not None:
            self._customers[(app, app_record_id)] = customer_id

    def linked(self, app: str, app_record_id: str, customer_id: str) -> None:
        """The record is linked to this customer: its rejections, earlier ones included, are
        this customer's."""
        self._customers[(app, app_record_id)] = customer_id

    def written(self, app: str, app_record_id: str, fields: Iterable[str]) -> None:
        """The app confirmed our write of these fields to the record: a value refused there
        before is overwritten (and the record, read back, is an echo that is not normalized
        again, so this is the only time the fix is seen)."""
        self._written.setdefault((app, app_record_id), set()).update(fields)

    def flush(self, conn: Connection) -> None:
        if not self:
            return
        keys = set(self._seen) | set(self._written)
        linked_only = [key for key in self._customers if key not in keys]
        if linked_only:
            # Records linked without being read in this batch are mostly ones we just created
            # in an app, which hold nothing refused: looked up only in apps with rejections.
            apps = {app for app in {app for app, _ in linked_only}
                    if conn.execute(_ANY_OF_APP, {"app": app}).first() is not None}
            keys.update(key for key in linked_only if key[0] in apps)
        stored = self._stored(conn, keys)
        now = self.now
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for key in keys:
            held = stored.get(key, {})
            refused = self._seen.get(key)  # None: the record was not read in this batch
            if not held and not refused:  # nearly every record: nothing refused, then or now
                continue
            cid = self._customers.get(key)
            overwritten = self._written.get(key, set())
            for field, row in held.items():
                cid_now = cid or row["customer_id"]
                if refused is not None and field in refused:  # refused again
                    reason, raw = refused[field]
                    reopened = row["status"] != OPEN
                    changed.append(_changes(row, raw_value=raw, reason=reason, status=OPEN,
                                            customer_id=cid_now, last_seen_at=now, resolved_at=None,
                                            first_seen_at=now if reopened else row["first_seen_at"]))
                elif row["status"] == OPEN and (refused is not None or field in overwritten):
                    # valid or absent in the record now, or overwritten by our write
                    changed.append(_changes(row, raw_value=None, status=RESOLVED, resolved_at=now,
                                            customer_id=cid_now))
                elif cid_now != row["customer_id"]:
                    changed.append(_changes(row, customer_id=cid_now))
            for field, (reason, raw) in (refused or {}).items():
                if field not in held:
                    new.append({"app": key[0], "app_record_id": key[1], "field": field, "raw_value": raw,
                                "reason": reason, "status": OPEN, "customer_id": cid,
                                "first_seen_at": now, "last_seen_at": now, "resolved_at": None})
        if new:
            insert_rows(conn, rejections_t, new)
        if changed:
            conn.execute(_UPDATE, changed)
        self._seen.clear()
        self._customers.clear()
        self._written.clear()

    @staticmethod
    def _stored(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], _Rows]:
        """The stored rejections of these records: (app, record) -> field -> row."""
        by_app: dict[str, list[str]] = {}
        for app, rid in keys:
            by_app.setdefault(app, []).append(rid)
        found: dict[tuple[str, str], _Rows] = {}
        for app, ids in by_app.items():
            ids.sort()
            for i in range(0, len(ids), _CHUNK):
                params = {"app": app, "ids": ids[i : i + _CHUNK]}
                for row in conn.execute(_OF_RECORDS, params).mappings():
                    found.setdefault((app, row["app_record_id"]), {})[row["field"]] = dict(row)
        return found


def _changes(row: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """Parameters of `_UPDATE` for one stored row: every column, as it is unless given."""
    out = {k: v for k, v in row.items() if k not in ("app", "app_record_id", "field")}
    out.update(values)
    out.update(k_app=row["app"], k_rid=row["app_record_id"], k_field=row["field"])
    return out
