"""Dispatch the outbox to one app: claim, check, send, confirm.

1. **claim** a batch: rows go `pending -> sending` in a committed transaction. Rows found in
   `sending` (a crash between send and confirm) are claimed again first.
2. **check** updates against the app (no blind overwrites): the target records are read; a field
   the app itself changed since its base is not overwritten, the record goes back to the inbox
   and the merge decides.
3. **send** through `connector.write_many`. Creates carry an idempotency key derived from
   (customer, app), and a create claimed again from `sending` says so (`uncertain_since`):
   the connector either relies on the app's idempotency or looks for what the first send
   made, so re-sending an uncertain create never makes a second record.
4. **confirm** in one transaction: links for new records, the app's base and the fingerprint of
   what it now holds (how the echo is recognised), the change log, and the outbox row removed.
Transient failures back off and retry; a record the app refuses becomes a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, or_, select, update

from customer_sync.engine.plan import plan_customer, same_value
from customer_sync.engine.process import Counts, app_fingerprint
from customer_sync.errors import AuthError, RecordGone, TransientError
from customer_sync.sdk.connector import AppRecord, WriteOp
from customer_sync.store.tables import DeadLetter, InboxItem, OutboxItem, stored_utc
from customer_sync.store.uow import UnitOfWork

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime
    from customer_sync.sdk.connector import Connector
    from customer_sync.store.db import Store

__all__ = ["DispatchStats", "dispatch_app", "expected_app_fields", "idempotency_key"]

outbox_t = OutboxItem.__table__
inbox_t = InboxItem.__table__
dead_t = DeadLetter.__table__


@dataclass
class DispatchStats(Counts):
    written: int = 0
    created: int = 0
    deleted: int = 0
    deferred: int = 0
    rejected: int = 0
    retried: int = 0


def idempotency_key(customer_id: str, app: str) -> str:
    """The same (customer, app) always creates under the same key."""
    return f"{customer_id}:{app}"


def expected_app_fields(rt: AppRuntime, values: Mapping[str, Any]) -> dict[str, Any]:
    """The app fields a record holds when it holds `values` (for the echo fingerprint)."""
    return {fm.app_field: fm.to_app(values.get(fm.canonical)) for fm in rt.mapping.fields}


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), 300))


async def dispatch_app(
    store: Store,
    rt: AppRuntime,
    connector: Connector,  # type: ignore[type-arg]
    *,
    now: Callable[[], datetime],
    identity_key: bytes,
    run_id: str,
    batch_size: int,
    max_attempts: int,
    faults: Callable[[str], None],
) -> DispatchStats:
    """Send every ready outbox row of one app; returns counts."""
    stats = DispatchStats()
    while True:
        rows = _claim(store, rt.name, now(), batch_size)
        if not rows:
            return stats
        faults("mid_dispatch")
        by_key = {str(r["seq"]): r for r in rows}
        updates = [(r["customer_id"], rt.name) for r in rows if r["op"] == "update"]
        with store.transaction() as conn:
            uow = UnitOfWork(conn, identity_key=identity_key, now=now(), run_id=run_id)
            uow.load_bases(updates)
        ops, rechecks, gone = await _build_ops(rt, connector, rows, uow)
        outcomes = []
        if ops:
            try:
                outcomes = await connector.write_many(ops)
            except TransientError as exc:
                _release(store, rows, now(), max_attempts, f"{type(exc).__name__}: {exc}", rt.name)
                stats.retried += len(rows)
                return stats
            except AuthError:
                _release(store, rows, now(), max_attempts=None, error="auth refused", app=rt.name)
                raise
        faults("before_confirm")
        with store.transaction() as conn:
            uow = UnitOfWork(conn, identity_key=identity_key, now=now(), run_id=run_id)
            uow.load_bases([(r["customer_id"], rt.name) for r in rows])
            done: list[int] = []
            for outcome in outcomes:
                row = by_key[outcome.key]
                if outcome.receipt is not None:
                    _confirm(uow, rt, row, outcome.receipt.app_record_id, stats)
                    done.append(row["seq"])
                elif isinstance(outcome.error, RecordGone) and row["op"] == "delete":
                    _confirm(uow, rt, row, row["app_record_id"], stats)
                    done.append(row["seq"])
                elif isinstance(outcome.error, RecordGone):
                    gone.append(row)
                else:
                    stats.rejected += 1
                    _dead(conn, row, str(outcome.error), uow)
                    done.append(row["seq"])
            for row in gone:
                done.append(row["seq"])
                if rt.config.on_delete == "ignore":
                    # Deletes in this app are ignored: the customer is created there again.
                    uow.drop_link(rt.name, row["app_record_id"])
                    uow.drop_snapshot(row["customer_id"], rt.name)
                    plan_customer(uow, row["customer_id"], {rt.name: rt}, now=uow.now, reason="re-create: record gone")
                    continue
                # The record vanished from the app: handle it as a delete seen there.
                conn.execute(insert(inbox_t), [_inbox_row(rt.name, row["app_record_id"], None, True, uow.now)])
            for row, record in rechecks:
                conn.execute(insert(inbox_t), [_inbox_row(rt.name, record.app_record_id, record, False, uow.now)])
                stats.deferred += 1
                if row["seq"] not in done and not any(o.key == str(row["seq"]) for o in outcomes):
                    done.append(row["seq"])
            uow.flush()
            if done:
                conn.execute(delete(outbox_t).where(outbox_t.c.seq.in_(done)))


def _claim(store: Store, app: str, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Claim up to `limit` rows: uncertain ones (`sending`, left by a crash) first, then ready
    pending ones. Two index searches on (app, state, seq); one OR would sort the whole outbox."""
    with store.transaction() as conn:
        rows = [dict(r) for r in conn.execute(
            select(outbox_t).where(outbox_t.c.app == app, outbox_t.c.state == "sending")
            .order_by(outbox_t.c.seq).limit(limit)
        ).mappings()]
        if len(rows) < limit:
            rows += [dict(r) for r in conn.execute(
                select(outbox_t).where(
                    outbox_t.c.app == app, outbox_t.c.state == "pending",
                    or_(outbox_t.c.next_attempt_at.is_(None), outbox_t.c.next_attempt_at <= now),
                ).order_by(outbox_t.c.seq).limit(limit - len(rows))
            ).mappings()]
        if rows:
            conn.execute(update(outbox_t).where(outbox_t.c.seq.in_([r["seq"] for r in rows]))
                         .values(state="sending", attempts=outbox_t.c.attempts + 1))
        return rows


async def _build_ops(
    rt: AppRuntime, connector: Connector, rows: list[dict[str, Any]], uow: UnitOfWork,  # type: ignore[type-arg]
) -> tuple[list[WriteOp], list[tuple[dict[str, Any], AppRecord]], list[dict[str, Any]]]:
    ops: list[WriteOp] = []
    rechecks: list[tuple[dict[str, Any], AppRecord]] = []
    gone: list[dict[str, Any]] = []
    updates = [r for r in rows if r["op"] == "update"]
    current: dict[str, AppRecord] = {}
    if updates:
        for rec in await connector.read([r["app_record_id"] for r in updates]):
            current[rec.app_record_id] = rec
    for row in rows:
        key = str(row["seq"])
        if row["op"] == "delete":
            ops.append(WriteOp(key=key, op="delete", app_record_id=row["app_record_id"]))
            continue
        if row["op"] == "create":
            ops.append(WriteOp(key=key, op="create", fields=rt.mapping.to_app(row["fields"]),
                               idempotency_key=idempotency_key(row["customer_id"], rt.name),
                               uncertain_since=_uncertain_since(row)))
            continue
        rec = current.get(row["app_record_id"])
        if rec is None:
            gone.append(row)
            continue
        fields_to_write = dict(row["fields"])
        snap = uow.snapshot(row["customer_id"], rt.name)
        if snap is None or snap["app_fingerprint"] != app_fingerprint(rt, rec.fields):
            # The app's record is not what we last saw: a field it changed since the base is
            # a conflict for the merge, never something to overwrite blindly.
            base = snap["values"] if snap else {}
            values, _ = rt.mapping.to_canonical(rec.fields)
            changed = {
                f for f, v in fields_to_write.items()
                if f in values and not same_value(values[f], base.get(f)) and not same_value(values[f], v)
            }
            if changed:
                rechecks.append((row, rec))
                for f in changed:
                    fields_to_write.pop(f)
        if fields_to_write:
            ops.append(WriteOp(key=key, op="update", app_record_id=row["app_record_id"],
                               fields=rt.mapping.to_app(fields_to_write)))
            row["fields"] = fields_to_write
    return ops, rechecks, gone


def _uncertain_since(row: Mapping[str, Any]) -> datetime | None:
    """When a row claimed again from `sending` was decided: its write may have reached the app
    before the daemon stopped, and not before this time. None for a row never sent."""
    return stored_utc(row["created_at"]) if row["state"] == "sending" else None


def _confirm(uow: UnitOfWork, rt: AppRuntime, row: dict[str, Any], app_record_id: str, stats: DispatchStats) -> None:
    cid, app = row["customer_id"], rt.name
    if row["op"] == "delete":
        link = uow.link_for(cid, app)
        if link is not None:
            uow.set_link_state(app, link["app_record_id"], "deleted")
        uow.drop_snapshot(cid, app)
        uow.log("written", app=app, app_record_id=app_record_id, customer_id=cid, reason=f"deleted: {row['reason']}")
        stats.deleted += 1
        return
    if row["op"] == "create":
        uow.add_link(app, app_record_id, cid)
        stats.created += 1
    snap = uow.snapshot(cid, app)
    old = snap["values"] if snap else {}
    new_base = {**old, **row["fields"]}
    uow.set_snapshot(cid, app, new_base,
                     app_fingerprint=app_fingerprint(rt, expected_app_fields(rt, new_base)))
    uow.log("written", app=app, app_record_id=app_record_id, customer_id=cid,
            diff={f: [old.get(f), v] for f, v in row["fields"].items()}, reason=f"{row['op']}: {row['reason']}")
    stats.written += 1


def _dead(conn: Any, row: dict[str, Any], error: str, uow: UnitOfWork) -> None:
    conn.execute(insert(dead_t), [{
        "source": "outbox", "app": row["app"], "app_record_id": row["app_record_id"],
        "customer_id": row["customer_id"], "payload": {"op": row["op"], "fields": sorted(row["fields"])},
        "error": error[:1000], "at": uow.now,
    }])
    uow.log("error", app=row["app"], app_record_id=row["app_record_id"], customer_id=row["customer_id"],
            diff={"fields": sorted(row["fields"])}, reason=f"write rejected: {error}")


def _release(store: Store, rows: list[dict[str, Any]], now: datetime, max_attempts: int | None,
             error: str, app: str) -> None:
    """Put claimed rows back with a backoff; rows out of attempts become dead letters."""
    with store.transaction() as conn:
        for row in rows:
            attempts = row["attempts"] + 1
            if max_attempts is not None and attempts >= max_attempts:
                conn.execute(update(outbox_t).where(outbox_t.c.seq == row["seq"]).values(state="dead", error=error[:1000]))
                conn.execute(insert(dead_t), [{
                    "source": "outbox", "app": app, "app_record_id": row["app_record_id"],
                    "customer_id": row["customer_id"], "payload": {"op": row["op"], "fields": sorted(row["fields"])},
                    "error": f"gave up after {attempts} attempts: {error}"[:1000], "at": now,
                }])
                continue
            conn.execute(update(outbox_t).where(outbox_t.c.seq == row["seq"]).values(
                state="pending", error=error[:1000], next_attempt_at=now + _backoff(attempts)))


def _inbox_row(app: str, app_record_id: str, record: AppRecord | None, deleted: bool, now: datetime) -> dict[str, Any]:
    payload = record.model_dump(mode="json") if record is not None else (
        AppRecord(app_record_id=app_record_id, deleted=True).model_dump(mode="json") if deleted else None)
    return {"app": app, "app_record_id": app_record_id, "payload": payload, "deleted": deleted,
            "source": "recheck", "received_at": now, "state": "pending", "error": None}
