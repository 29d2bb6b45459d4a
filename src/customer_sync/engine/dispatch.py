"""Dispatch the outbox to one app: claim, check, send, confirm.

1. **claim** a batch: rows go `pending -> sending` in a committed transaction. Rows found in
   `sending` (a crash between send and confirm) are claimed again first, and brought up to
   date with what happened since they were decided (`_recheck_left_sending`). No create is claimed
   for an app whose first complete listing has not been processed (`app_state.listed_at`): a
   record the app already holds would be created a second time.
2. **check** against the app:
   - updates (no blind overwrites): the target records are read; a field the app itself
     changed since its base is not overwritten, the record goes back to the inbox and the
     merge decides;
   - creates (no duplicates): the emails they carry are looked up in the app
     (`search_by_emails`, for connectors with `SEARCH_BY_EMAIL`). A record the app already
     holds and no customer is linked to is **adopted** instead of created: linked to the
     customer and sent to the inbox, so the merge decides its fields against ours by the
     conflict rules. A record linked to another customer is not created twice: the write is
     refused as a dead letter for an operator.
3. **send** through `connector.write_many`. Creates carry an idempotency key derived from
   (customer, app), and a create that may already have reached the app says so
   (`uncertain_since`: it was being sent when the daemon stopped, or its send failed without a
   clear answer): the connector either relies on the app's idempotency or looks for what the
   first send made, so re-sending an uncertain create never makes a second record.
4. **confirm** in one transaction: links for new records, the app's base and the fingerprint of
   what it now holds (how the echo is recognised), the change log, and the outbox row removed.
Transient failures back off and retry; a record the app refuses becomes a dead letter.
5. **merge** duplicates inside the app, once its writes are out, where the operator asked for it
   (`merge_in_app`, see `engine.merge_in_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, or_, select, update

from customer_sync.canonical import identity_values
from customer_sync.conflicts.three_way import is_empty
from customer_sync.engine.merge_in_app import merge_duplicates
from customer_sync.engine.plan import desired_fields, plan_customer, same_value
from customer_sync.engine.process import Counts, app_fingerprint
from customer_sync.errors import AuthError, MappingError, RateLimited, RecordGone, TransientError
from customer_sync.sdk.connector import AppRecord, Capability, Connector, WriteOp, WriteOutcome
from customer_sync.store import app_state
from customer_sync.store.inbox import inbox_row
from customer_sync.store.tables import DeadLetter, InboxItem, LinkRow, OutboxItem, stored_utc
from customer_sync.store.uow import UnitOfWork

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime
    from customer_sync.store.db import Store

__all__ = [
    "DispatchStats", "creating_apps", "dispatch_app", "expected_app_fields", "idempotency_key",
    "ready_writes", "settle_uncertain_updates",
]

outbox_t = OutboxItem.__table__
inbox_t = InboxItem.__table__
dead_t = DeadLetter.__table__
links_t = LinkRow.__table__


@dataclass
class DispatchStats(Counts):
    written: int = 0
    created: int = 0
    deleted: int = 0
    deferred: int = 0
    rejected: int = 0
    retried: int = 0
    adopted: int = 0  # creates answered by linking a record the app already held
    merged: int = 0  # duplicates merged in the app (`merge_in_app`)


def idempotency_key(customer_id: str, app: str) -> str:
    """The same (customer, app) always creates under the same key."""
    return f"{customer_id}:{app}"


def expected_app_fields(rt: AppRuntime, values: Mapping[str, Any]) -> dict[str, Any]:
    """The app fields a record holds when it holds `values` (for the echo fingerprint)."""
    return rt.mapping.expected_app_fields(values)


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
    creates: bool = True,
) -> DispatchStats:
    """Send every ready outbox row of one app; returns counts.

    Creates are held back unless `creates` (the caller has just read the app) and the app's
    first complete listing has been processed.
    """
    stats = DispatchStats()
    # Every store call runs in a thread: a busy store must never stall the event loop (and
    # with it webhook intake and /healthz).
    creates = creates and bool(await asyncio.to_thread(app_state.listed_apps, store, [rt.name]))
    await settle_uncertain_updates(store, rt, connector, now=now(), identity_key=identity_key, run_id=run_id)
    while True:
        rows = await asyncio.to_thread(_claim, store, rt.name, now(), batch_size, creates=creates)
        if not rows:
            # duplicates inside the app, merged there once its writes are out (`merge_in_app`)
            merged = await merge_duplicates(store, rt, connector, now=now, identity_key=identity_key,
                                            run_id=run_id, limit=batch_size)
            stats.merged += merged.merged
            stats.rejected += merged.refused
            stats.retried += merged.retried
            return stats
        faults("mid_dispatch")
        updates = [(r["customer_id"], rt.name) for r in rows if r["op"] == "update"]
        bases, overtaken = await asyncio.to_thread(
            _bases, store, rt, rows, updates, identity_key=identity_key, now=now(), run_id=run_id)
        current = [r for r in rows if r["seq"] not in overtaken]
        adopted, refused = await _look_up_creates(store, rt, connector, current)
        sending = [r for r in current if r["seq"] not in adopted and r["seq"] not in refused]
        ops, rechecks, gone = await _build_ops(rt, connector, sending, bases)
        outcomes: list[WriteOutcome] = []
        if ops:
            try:
                outcomes = await connector.write_many(ops)
            except TransientError as exc:
                # A 429 was refused before the app did anything; any other failure may have
                # come after the app made the records (a timeout, a dropped connection).
                maybe_sent = set() if isinstance(exc, RateLimited) else {op.key for op in ops if op.op == "create"}
                # Nor is a refusal to take writes yet (a quota, a file open in a spreadsheet
                # program for an afternoon) a failure of these writes: it spends no attempt,
                # so it never turns them into dead letters; the backoff still grows to 5 min.
                limit = None if isinstance(exc, RateLimited) else max_attempts
                await asyncio.to_thread(_release_in_store, store, rows, now(), limit,
                                        f"{type(exc).__name__}: {exc}", rt.name, maybe_sent=maybe_sent)
                stats.retried += len(rows)
                return stats
            except AuthError:
                await asyncio.to_thread(_release_in_store, store, rows, now(), None, "auth refused", rt.name)
                raise
        faults("before_confirm")
        settled = _Settled(outcomes=outcomes, adopted=adopted, refused=refused, overtaken=overtaken,
                           gone=gone, rechecks=rechecks)
        await asyncio.to_thread(_settle, store, rt, rows, settled, stats, identity_key=identity_key,
                                now=now(), run_id=run_id, max_attempts=max_attempts)


@dataclass
class _Settled:
    """What became of a claimed batch, for `_settle` to commit."""

    outcomes: list[WriteOutcome]
    adopted: dict[int, AppRecord]  # seq -> the record the app holds, linked instead of created
    refused: dict[int, str]  # seq -> why it is not created
    overtaken: dict[int, str]  # seq -> why a row left `sending` is not sent again
    gone: list[dict[str, Any]]  # updates whose record vanished from the app
    rechecks: list[tuple[dict[str, Any], AppRecord]]  # rows whose record changed in the app


def _bases(store: Store, rt: AppRuntime, rows: list[dict[str, Any]], pairs: list[tuple[str, str]], *,
           identity_key: bytes, now: datetime, run_id: str) -> tuple[UnitOfWork, dict[int, str]]:
    """A unit of work holding these (customer, app) bases, and the rows left `sending` that
    what happened since overtook (`_recheck_left_sending`), read in one transaction."""
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id=run_id)
        uow.load_bases(pairs)
        if rt.mapping.full_name_field is not None:
            # an update of one name part writes the app's one name field whole: the other part
            # comes from the customer (read here: the unit of work is used after this closes)
            uow.load_customers({cid for cid, _ in pairs})
        overtaken = _recheck_left_sending(uow, rt, rows)
    return uow, overtaken


def _settle(store: Store, rt: AppRuntime, rows: list[dict[str, Any]], settled: _Settled,
            stats: DispatchStats, *, identity_key: bytes, now: datetime, run_id: str,
            max_attempts: int) -> None:
    """Commit what became of a claimed batch, in one transaction: confirmed writes (links,
    bases, change log), adopted records, refusals, retries, vanished records and rechecks."""
    by_key = {str(r["seq"]): r for r in rows}
    gone = list(settled.gone)
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id=run_id)
        uow.load_bases([(r["customer_id"], rt.name) for r in rows])
        uow.prefetch_links([(rt.name, o.receipt.app_record_id) for o in settled.outcomes
                            if o.receipt is not None])
        done: list[int] = []
        for outcome in settled.outcomes:
            row = by_key[outcome.key]
            if outcome.receipt is not None:
                _confirm(uow, rt, row, outcome.receipt.app_record_id, stats)
                done.append(row["seq"])
            elif isinstance(outcome.error, RecordGone) and row["op"] == "delete":
                _confirm(uow, rt, row, row["app_record_id"], stats)
                done.append(row["seq"])
            elif isinstance(outcome.error, RecordGone):
                gone.append(row)
            elif isinstance(outcome.error, TransientError):
                # this write alone had no clear answer: retried later, a create as uncertain
                stats.retried += 1
                maybe = set() if isinstance(outcome.error, RateLimited) else {outcome.key}
                _release(conn, [row], now, max_attempts, str(outcome.error), rt.name,
                         maybe_sent=maybe if row["op"] == "create" else set())
            else:
                stats.rejected += 1
                _dead(conn, row, str(outcome.error), uow)
                done.append(row["seq"])
        for seq, record in settled.adopted.items():
            _adopt(conn, uow, rt, by_key[str(seq)], record)
            stats.adopted += 1
            done.append(seq)
        for seq, reason in settled.refused.items():
            stats.rejected += 1
            _dead(conn, by_key[str(seq)], reason, uow)
            done.append(seq)
        for seq, reason in settled.overtaken.items():
            row = by_key[str(seq)]
            uow.log("decided", app=rt.name, app_record_id=row["app_record_id"],
                    customer_id=row["customer_id"], reason=f"{row['op']} not sent again: {reason}")
            done.append(seq)
        for row in gone:
            done.append(row["seq"])
            if rt.config.on_delete == "ignore":
                # Deletes in this app are ignored: the customer is created there again.
                uow.drop_link(rt.name, row["app_record_id"])
                uow.drop_snapshot(row["customer_id"], rt.name)
                plan_customer(uow, row["customer_id"], {rt.name: rt}, now=uow.now, reason="re-create: record gone")
                continue
            # The record vanished from the app: handle it as a delete seen there.
            conn.execute(insert(inbox_t), [inbox_row(
                rt.name, AppRecord(app_record_id=row["app_record_id"], deleted=True), "recheck", uow.now)])
        answered = {o.key for o in settled.outcomes}
        for row, record in settled.rechecks:
            conn.execute(insert(inbox_t), [inbox_row(rt.name, record, "recheck", uow.now)])
            stats.deferred += 1
            if row["seq"] not in done and str(row["seq"]) not in answered:
                done.append(row["seq"])
        uow.flush()
        if done:
            conn.execute(delete(outbox_t).where(outbox_t.c.seq.in_(done)))


async def settle_uncertain_updates(
    store: Store, rt: AppRuntime, connector: Connector, *,  # type: ignore[type-arg]
    now: datetime, identity_key: bytes, run_id: str,
) -> int:
    """Find out whether updates that may have reached the app unanswered did, before the app is
    read or written again; returns how many fields were found written.

    Such an update (left `sending` by a crash, or sent without a clear answer) may or may not be
    in the app. Read before settling, the app's record would show our own value as a change
    made there, and win over newer edits elsewhere by its modified time; the check before the
    next update would take it for one too. So the records are read first: a field that holds
    what the update sent was written, and joins the base as if confirmed; what is left of the
    update is sent as before (a row left `sending` is brought up to date first).
    """
    rows = await asyncio.to_thread(_uncertain_updates, store, rt.name)
    if not rows:
        return 0
    held = {rec.app_record_id: rec for rec in await connector.read(sorted({r["app_record_id"] for r in rows}))}
    return await asyncio.to_thread(_fold_landed, store, rt, rows, held, now=now,
                                   identity_key=identity_key, run_id=run_id)


def _uncertain_updates(store: Store, app: str) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(select(outbox_t).where(
            outbox_t.c.app == app, outbox_t.c.op == "update", outbox_t.c.state.in_(("pending", "sending")),
            or_(outbox_t.c.state == "sending", outbox_t.c.sent_at.is_not(None)),
        )).mappings()]


def _fold_landed(store: Store, rt: AppRuntime, rows: list[dict[str, Any]], held: dict[str, AppRecord], *,
                 now: datetime, identity_key: bytes, run_id: str) -> int:
    landed_fields = 0
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id=run_id)
        uow.load_bases([(r["customer_id"], rt.name) for r in rows])
        for row in rows:
            rec = held.get(row["app_record_id"])
            if rec is None:
                continue  # gone from the app: the dispatch handles it as a delete seen there
            values, _ = rt.mapping.to_canonical(rec.fields)
            name_field = rt.mapping.full_name_field
            if name_field is not None and name_field in rec.fields:
                # a full name holding what we sent keeps our split (a surname with a space)
                base = (uow.snapshot(row["customer_id"], rt.name) or {}).get("values") or {}
                sent = (row["fields"].get("first_name", base.get("first_name")),
                        row["fields"].get("last_name", base.get("last_name")))
                with contextlib.suppress(MappingError):
                    values["first_name"], values["last_name"] = rt.mapping.by_canonical["first_name"].split_name(
                        rec.fields[name_field], existing=sent)
            landed = {f: v for f, v in row["fields"].items() if f in values and same_value(values[f], v)}
            rest = {f: v for f, v in row["fields"].items() if f not in landed}
            if landed:
                cid = row["customer_id"]
                snap = uow.snapshot(cid, rt.name)
                old = snap["values"] if snap else {}
                new_base = {**old, **landed}
                uow.set_snapshot(cid, rt.name, new_base,
                                 app_fingerprint=app_fingerprint(rt, expected_app_fields(rt, new_base)))
                uow.log("written", app=rt.name, app_record_id=row["app_record_id"], customer_id=cid,
                        diff={f: [old.get(f), v] for f, v in landed.items()},
                        reason=f"update found written: {row['reason']}")
                landed_fields += len(landed)
            if not rest:
                conn.execute(delete(outbox_t).where(outbox_t.c.seq == row["seq"]))
            elif landed:
                # What did not land stays to send. A row left `sending` stays so: it is brought
                # up to date before it is sent (`_recheck_left_sending`), so a value overtaken
                # since is never written; a pending one is kept up to date by the merge anyway.
                conn.execute(update(outbox_t).where(outbox_t.c.seq == row["seq"]).values(fields=rest))
        uow.flush()
    return landed_fields


def ready_writes(store: Store, apps: list[str], now: datetime, *, ready_only: bool = True) -> int:
    """Outbox rows of these apps waiting to be sent: with `ready_only`, those that a dispatch
    would send now (due, and no create to an app not listed yet); else all of them."""
    if not apps:
        return 0
    waiting = (outbox_t.c.state.in_(("pending", "sending")), outbox_t.c.app.in_(apps))
    if not ready_only:
        with store.transaction() as conn:
            return conn.execute(select(func.count()).select_from(outbox_t).where(*waiting)).scalar_one()
    listed = list(app_state.listed_apps(store, apps))
    with store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(outbox_t).where(
            *waiting,
            or_(outbox_t.c.next_attempt_at.is_(None), outbox_t.c.next_attempt_at <= now),
            or_(outbox_t.c.op != "create", outbox_t.c.app.in_(listed)),
        )).scalar_one()


def _claim(store: Store, app: str, now: datetime, limit: int, *, creates: bool) -> list[dict[str, Any]]:
    """Claim up to `limit` rows: uncertain ones (`sending`, left by a crash) first, then ready
    pending ones; creates only when `creates` (the app has been listed). Two index searches on
    (app, state, seq); one OR would sort the whole outbox."""
    kinds = () if creates else (outbox_t.c.op != "create",)
    with store.transaction() as conn:
        rows = [dict(r) for r in conn.execute(
            select(outbox_t).where(outbox_t.c.app == app, outbox_t.c.state == "sending", *kinds)
            .order_by(outbox_t.c.seq).limit(limit)
        ).mappings()]
        if len(rows) < limit:
            rows += [dict(r) for r in conn.execute(
                select(outbox_t).where(
                    outbox_t.c.app == app, outbox_t.c.state == "pending", *kinds,
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
            # a create holds every value the record is to have: a name part it lacks is empty
            ops.append(WriteOp(key=key, op="create", fields=rt.mapping.to_app(row["fields"], customer={}),
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
            # a one-field full name is written whole: the other part comes from the customer
            customer = uow.customers.get(row["customer_id"]) if rt.mapping.full_name_field else None
            ops.append(WriteOp(key=key, op="update", app_record_id=row["app_record_id"],
                               fields=rt.mapping.to_app(fields_to_write,
                                                        customer=customer["values"] if customer else None)))
            row["fields"] = fields_to_write
    return ops, rechecks, gone


def _recheck_left_sending(
    uow: UnitOfWork, rt: AppRuntime, rows: list[dict[str, Any]],
) -> dict[int, str]:
    """Bring rows left `sending` by a daemon that stopped up to date: returns those that what
    happened since has overtaken (seq -> why), and sets the fields of the others to send.

    Such a row was decided on what the daemon knew before it stopped. Since then a poll may
    have linked the record its create made, a user may have deleted that record or changed a
    value, and the merge decided again (planning what that needs). Sent as it was decided, the
    row would make a record its user deleted, overwrite a newer value with an older one, or
    make a record with old values at a time that makes them look newest. So a create is not
    sent again once the customer has a link to the app (the record is linked, or no longer
    synced there), and otherwise carries the customer's values of now; an update to the record
    still linked carries only the values that are still the customer's; nothing is sent for a
    customer deleted since.
    """
    uncertain = [r for r in rows if r["state"] == "sending" and r["op"] != "delete"]
    if not uncertain:
        return {}
    uow.load_customers({r["customer_id"] for r in uncertain})
    overtaken: dict[int, str] = {}
    for row in uncertain:
        cid = row["customer_id"]
        customer = uow.customer(cid)
        link = uow.link_for(cid, rt.name)
        if customer is None or customer["deleted_at"] is not None:
            overtaken[row["seq"]] = "the customer was deleted since"
            continue
        desired = desired_fields(rt, customer["values"], uow.held_fields(cid))
        if row["op"] == "create":
            if link is not None:
                overtaken[row["seq"]] = (f"the customer is linked to record "
                                         f"{link['app_record_id']} ({link['state']}) since")
            elif rt.filter and not rt.filter.matches(customer["values"], uow.now):
                overtaken[row["seq"]] = "the customer no longer passes the app's filter"
            else:
                row["fields"] = {f: v for f, v in desired.items() if not is_empty(v)}
        elif (link is None or link["state"] != "active"
              or link["app_record_id"] != row["app_record_id"]):
            overtaken[row["seq"]] = "the record is no longer linked"
        else:
            row["fields"] = {f: v for f, v in row["fields"].items()
                             if f in desired and same_value(v, desired[f])}
        if row["seq"] not in overtaken and not row["fields"]:
            overtaken[row["seq"]] = "no value it carried is still to be written"
    return overtaken


def _uncertain_since(row: Mapping[str, Any]) -> datetime | None:
    """When a row that may already have reached the app was decided (claimed again from
    `sending` after a crash, or sent before without a clear answer): the app cannot hold its
    effect from before then. None for a row never sent."""
    if row["state"] == "sending" or row["sent_at"] is not None:
        return stored_utc(row["created_at"])
    return None


async def _look_up_creates(
    store: Store, rt: AppRuntime, connector: Connector, rows: list[dict[str, Any]],  # type: ignore[type-arg]
) -> tuple[dict[int, AppRecord], dict[int, str]]:
    """Look the emails of the batch's creates up in the app before creating anything.

    Returns the rows to answer by adopting a record the app holds (seq -> that record), and the
    rows refused because the app holds the email on a record linked to another customer
    (seq -> why). A create whose email the app does not hold is in neither.
    """
    creates = {r["seq"]: r["fields"].get("email") for r in rows if r["op"] == "create"}
    emails = sorted({e for e in creates.values() if isinstance(e, str) and e})
    if not emails or not _looks_up(connector):
        return {}, {}
    holders: dict[str, list[AppRecord]] = {}
    for rec in await connector.search_by_emails(emails):
        if rec.deleted:
            continue
        values, _ = rt.mapping.to_canonical(rec.fields)
        for kind, value in identity_values(values):
            if kind == "email":
                holders.setdefault(value, []).append(rec)
    if not holders:
        return {}, {}
    found_ids = sorted({rec.app_record_id for recs in holders.values() for rec in recs})
    linked = await asyncio.to_thread(_linked, store, rt.name, found_ids)
    adopted: dict[int, AppRecord] = {}
    refused: dict[int, str] = {}
    taken: set[str] = set()
    for seq, email in creates.items():
        recs = sorted(holders.get(email, []), key=lambda r: r.app_record_id) if email else []
        free = [r for r in recs if r.app_record_id not in linked and r.app_record_id not in taken]
        if free:
            adopted[seq] = free[0]
            taken.add(free[0].app_record_id)
        elif recs:
            refused[seq] = (f"not created: {rt.name} already holds this email on record "
                            f"{recs[0].app_record_id}, which is linked to another customer")
    return adopted, refused


def _linked(store: Store, app: str, app_record_ids: list[str]) -> dict[str, str]:
    """app record id -> customer id, for those of these records that have a link (any state)."""
    with store.transaction() as conn:
        return dict(conn.execute(select(links_t.c.app_record_id, links_t.c.customer_id).where(
            links_t.c.app == app, links_t.c.app_record_id.in_(app_record_ids))).all())


def _looks_up(connector: Connector) -> bool:  # type: ignore[type-arg]
    """Whether creates to this app are looked up first: when it can search by email, except
    for an app whose creates are upserts by email (`UPSERT`) and that can only look emails up
    one request at a time. Its create already finds the record it holds, and a lookup would
    double the requests of an initial sync; the daemon polls such an app right before it
    creates there, which leaves only the seconds between that poll and the create."""
    caps = connector.capabilities
    if Capability.SEARCH_BY_EMAIL not in caps:
        return False
    batched = type(connector).search_by_emails is not Connector.search_by_emails
    return batched or Capability.UPSERT not in caps


def creating_apps(store: Store, apps: list[str], now: datetime) -> set[str]:
    """Those of `apps` with creates ready to send: the daemon polls them first in the same
    round, so a record added there since the last poll is linked, not created again."""
    if not apps:
        return set()
    with store.transaction() as conn:
        return set(conn.execute(select(outbox_t.c.app).where(
            outbox_t.c.app.in_(apps), outbox_t.c.op == "create",
            outbox_t.c.state.in_(("pending", "sending")),
            or_(outbox_t.c.next_attempt_at.is_(None), outbox_t.c.next_attempt_at <= now),
        ).distinct()).scalars())


def _adopt(conn: Any, uow: UnitOfWork, rt: AppRuntime, row: dict[str, Any], record: AppRecord) -> None:
    """Answer a create with the record the app already holds: link it to the customer (with no
    base yet) and queue it for the merge, which decides each field against ours by the rules
    and plans whatever the app still needs."""
    cid = row["customer_id"]
    uow.add_link(rt.name, record.app_record_id, cid)
    uow.drop_snapshot(cid, rt.name)
    conn.execute(insert(inbox_t), [inbox_row(rt.name, record, "adopt", uow.now)])
    uow.log("decided", app=rt.name, app_record_id=record.app_record_id, customer_id=cid,
            reason=f"linked to the record {rt.name} already holds (same email) instead of creating one")


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
        holder = uow.link(app, app_record_id)
        if holder is not None and holder["customer_id"] != cid:
            # The app answered with a record another customer is linked to (a re-sent create
            # found what the first send made, after a poll had taken it for a new customer).
            # Linking it twice is impossible; leave it to an operator rather than guess.
            uow.add_conflict(kind="match", status="parked", app=app, app_record_id=app_record_id,
                             customer_id=cid, detail={"candidates": sorted({cid, holder["customer_id"]}),
                                                      "reason": "create answered with a linked record"})
            uow.log("conflict", app=app, app_record_id=app_record_id, customer_id=cid,
                    reason="the app answered the create with a record linked to another customer; parked")
            return
        uow.add_link(app, app_record_id, cid)
        stats.created += 1
    snap = uow.snapshot(cid, app)
    old = snap["values"] if snap else {}
    new_base = {**old, **row["fields"]}
    uow.set_snapshot(cid, app, new_base,
                     app_fingerprint=app_fingerprint(rt, expected_app_fields(rt, new_base)))
    uow.log("written", app=app, app_record_id=app_record_id, customer_id=cid,
            diff={f: [old.get(f), v] for f, v in row["fields"].items()}, reason=f"{row['op']}: {row['reason']}")
    if row["op"] == "update":  # a record we created holds only what we sent: nothing refused
        uow.note_written(app, app_record_id, row["fields"])
    stats.written += 1


def _dead(conn: Any, row: dict[str, Any], error: str, uow: UnitOfWork) -> None:
    conn.execute(insert(dead_t), [{
        "source": "outbox", "app": row["app"], "app_record_id": row["app_record_id"],
        "customer_id": row["customer_id"], "payload": {"op": row["op"], "fields": sorted(row["fields"])},
        "error": error[:1000], "at": uow.now,
    }])
    uow.log("error", app=row["app"], app_record_id=row["app_record_id"], customer_id=row["customer_id"],
            diff={"fields": sorted(row["fields"])}, reason=f"write rejected: {error}")


def _release_in_store(store: Store, rows: list[dict[str, Any]], now: datetime, max_attempts: int | None,
                      error: str, app: str, *, maybe_sent: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """`_release` in a transaction of its own."""
    with store.transaction() as conn:
        _release(conn, rows, now, max_attempts, error, app, maybe_sent=maybe_sent)


def _release(conn: Any, rows: list[dict[str, Any]], now: datetime, max_attempts: int | None,
             error: str, app: str, *, maybe_sent: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Put claimed rows back with a backoff (in the caller's transaction); rows out of attempts
    become dead letters.

    `maybe_sent` are the keys of creates whose send ended without a clear answer: the app may
    hold what they made, so they are re-sent as uncertain (`sent_at`), never as fresh creates.
    """
    for row in rows:
        if str(row["seq"]) in maybe_sent and row["sent_at"] is None:
            conn.execute(update(outbox_t).where(outbox_t.c.seq == row["seq"]).values(sent_at=now))
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
