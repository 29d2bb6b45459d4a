"""Operator actions and read models: status, explain, change log, conflicts, rejections,
deletes, dead letters, pause and resume, resync.

These are what the CLI and the admin API (`api/admin.py`) call. Reads return plain dicts; actions run in
one transaction each and plan the writes their decision implies, which the next dispatch sends.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from customer_sync.canonical import field_spec, identity_hash, normalize_value
from customer_sync.errors import ConfigError, SyncError
from customer_sync.store import app_state as app_state_store
from customer_sync.store.rejections import OPEN
from customer_sync.store.tables import (
    AppState,
    ChangeLogEntry,
    ConflictRow,
    CursorRow,
    CustomerRow,
    DeadLetter,
    IdentityRow,
    InboxItem,
    LinkRow,
    OutboxItem,
    PendingDelete,
    RejectionRow,
    stored_utc,
)

if TYPE_CHECKING:
    from customer_sync.config import Config
    from customer_sync.store.db import Store

__all__ = [
    "ACTIVITY_MAX_ROWS",
    "NotFound",
    "activity",
    "app_health",
    "app_status",
    "approve_delete",
    "customer_log",
    "customer_rejections",
    "customer_summaries",
    "explain",
    "find_customer",
    "list_conflicts",
    "list_dead_letters",
    "list_pending_deletes",
    "list_rejections",
    "pause_app",
    "reject_delete",
    "replay_dead_letter",
    "resolve_conflict",
    "resume_app",
    "resync",
    "summarize_values",
]

customers_t = CustomerRow.__table__
changelog_t = ChangeLogEntry.__table__
conflicts_t = ConflictRow.__table__
pending_t = PendingDelete.__table__
cursors_t = CursorRow.__table__
links_t = LinkRow.__table__
outbox_t = OutboxItem.__table__
inbox_t = InboxItem.__table__
state_t = AppState.__table__
dead_t = DeadLetter.__table__
identities_t = IdentityRow.__table__
rejections_t = RejectionRow.__table__


class NotFound(SyncError):
    """The customer, conflict or request named does not exist."""


def _now() -> datetime:
    return datetime.now(UTC)


def find_customer(store: Store, who: str, *, identity_key: bytes, apps: Collection[str] = ()) -> str:
    """A customer id from a customer id, an app's record (`APP:RECORD_ID`), an email or a
    phone.

    `APP:RECORD_ID` finds the customer the app's record is linked to. `apps` are the configured
    apps: for one of them, a record linked to nobody is not found, rather than read as an email
    or a phone.

    Raises:
        NotFound: nobody matches.
    """
    app, colon, record_id = who.partition(":")
    with store.transaction() as conn:
        if conn.execute(select(customers_t.c.customer_id).where(customers_t.c.customer_id == who)).first():
            return who
        if colon and app and record_id:
            linked = conn.execute(
                select(links_t.c.customer_id)
                .where(links_t.c.app == app, links_t.c.app_record_id == record_id)
            ).scalars().first()
            if linked is not None:
                return str(linked)
            if app in apps:
                raise NotFound(f"no customer is linked to record {record_id!r} of {app}")
        for kind in ("email", "phone"):
            spec = field_spec(kind)
            assert spec is not None
            try:
                value = normalize_value(spec, who)
            except SyncError:
                continue
            found = conn.execute(
                select(customers_t.c.customer_id)
                .join(identities_t, customers_t.c.customer_id == identities_t.c.customer_id)
                .where(identities_t.c.kind == kind,
                       identities_t.c.value_hash == identity_hash(identity_key, kind, value))
                .order_by(customers_t.c.deleted_at.is_not(None), customers_t.c.created_at)
            ).scalars().all()
            if found:
                return found[0]
    raise NotFound(f"no customer matches {who!r}")


def explain(store: Store, customer_id: str) -> dict[str, Any]:
    """For each canonical field: value, the app it came from, when, and by which rule; plus
    the customer's links."""
    with store.transaction() as conn:
        row = conn.execute(select(customers_t).where(customers_t.c.customer_id == customer_id)).mappings().first()
        if row is None:
            raise NotFound(f"no customer {customer_id}")
        links = [dict(r) for r in conn.execute(
            select(links_t).where(links_t.c.customer_id == customer_id).order_by(links_t.c.app)).mappings()]
    fields = {
        name: {"value": value, **row["provenance"].get(name, {})}
        for name, value in sorted(row["values"].items())
    }
    return {
        "customer_id": customer_id, "created_at": row["created_at"], "updated_at": row["updated_at"],
        "deleted_at": row["deleted_at"], "fields": fields,
        "links": [{"app": lk["app"], "app_record_id": lk["app_record_id"], "state": lk["state"]} for lk in links],
    }


def customer_summaries(store: Store, customer_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The name and email of each customer named (for listings): {customer_id: {"name",
    "email"}}; customers that no longer exist are left out."""
    ids = sorted({c for c in customer_ids if c})
    out: dict[str, dict[str, Any]] = {}
    with store.transaction() as conn:
        for start in range(0, len(ids), 500):
            for cid, values in conn.execute(select(customers_t.c.customer_id, customers_t.c["values"])
                                            .where(customers_t.c.customer_id.in_(ids[start:start + 500]))):
                name = " ".join(str(v) for v in (values.get("first_name"), values.get("last_name")) if v)
                out[cid] = {"name": name or None, "email": values.get("email")}
    return out


def customer_log(store: Store, customer_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The change log of one customer, oldest first."""
    with store.transaction() as conn:
        rows = conn.execute(
            select(changelog_t).where(changelog_t.c.customer_id == customer_id)
            .order_by(changelog_t.c.seq.desc()).limit(limit)
        ).mappings().all()
    return [dict(r) for r in reversed(rows)]


def customer_rejections(store: Store, customer_id: str) -> list[dict[str, Any]]:
    """The values refused in this customer's records: open ones first, then resolved ones
    (without their value), each most recently seen first."""
    with store.transaction() as conn:
        rows = conn.execute(
            select(rejections_t).where(rejections_t.c.customer_id == customer_id)
            .order_by(rejections_t.c.status, rejections_t.c.last_seen_at.desc(),
                      rejections_t.c.app, rejections_t.c.app_record_id, rejections_t.c.field)
        ).mappings().all()
    return [dict(r) for r in rows]


def list_rejections(
    store: Store, config: Config, *, app: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Open rejections (values an app sent that normalization refused, still held there), most
    recently seen first; `app` keeps one app's.

    Raises:
        ConfigError: `app` is not a configured app.
    """
    if app is not None and app not in config.apps:
        raise ConfigError(f"unknown app {app!r} (configured: {', '.join(config.apps)})")
    q = (select(rejections_t).where(rejections_t.c.status == OPEN)
         .order_by(rejections_t.c.last_seen_at.desc(), rejections_t.c.app,
                   rejections_t.c.app_record_id, rejections_t.c.field)
         .limit(limit))
    if app is not None:
        q = q.where(rejections_t.c.app == app)
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def list_conflicts(store: Store, *, status: str | None = "parked", limit: int = 200,
                   customer_id: str | None = None) -> list[dict[str, Any]]:
    """Conflicts, newest first; `status=None` lists all, `customer_id` one customer's."""
    q = select(conflicts_t).order_by(conflicts_t.c.id.desc()).limit(limit)
    if status is not None:
        q = q.where(conflicts_t.c.status == status)
    if customer_id is not None:
        q = q.where(conflicts_t.c.customer_id == customer_id)
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def resolve_conflict(
    store: Store, config: Config, conflict_id: int, *, take: str, identity_key: bytes,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Resolve a field conflict by taking the value `take` (an app name) held; the value is
    then written to every app that differs.

    Raises:
        NotFound: no such conflict.
        ConfigError: `take` is not one of the conflict's two apps.
    """
    from customer_sync.engine.plan import plan_customer
    from customer_sync.store.uow import UnitOfWork

    now = now or _now()
    with store.transaction() as conn:
        row = conn.execute(select(conflicts_t).where(conflicts_t.c.id == conflict_id)).mappings().first()
        if row is None:
            raise NotFound(f"no conflict {conflict_id}")
        if row["kind"] == "merge":
            raise ConfigError(f"conflict {conflict_id}: {row['app']} refused to merge a duplicate; "
                              "merge the two records in the app")
        if row["kind"] != "field":
            raise ConfigError(f"conflict {conflict_id} is an ambiguous match; link or merge the records in the app")
        if row["status"] == "resolved":
            raise ConfigError(f"conflict {conflict_id} is already resolved")
        sides = {row["winner_app"]: row["winner_value"], row["loser_app"]: row["loser_value"]}
        if take not in sides:
            raise ConfigError(f"--take must be one of {', '.join(str(a) for a in sides)}")
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id="operator")
        cid = row["customer_id"]
        customer = uow.customer(cid)
        if customer is None:
            raise NotFound(f"customer {cid} of conflict {conflict_id} no longer exists")
        old = customer["values"].get(row["field"])
        customer["values"] = {**customer["values"], row["field"]: sides[take]}
        customer["provenance"] = {**customer["provenance"],
                                  row["field"]: {"app": take, "at": now.isoformat(), "rule": "operator",
                                                 "conflict_id": conflict_id}}
        uow.touch_customer(cid)
        uow.log("decided", customer_id=cid, diff={row["field"]: [old, sides[take]]},
                reason=f"conflict {conflict_id} resolved by operator: took {take}")
        # Every parked conflict on this field is settled by the decision.
        conn.execute(update(conflicts_t).where(
            conflicts_t.c.customer_id == cid, conflicts_t.c.field == row["field"],
            conflicts_t.c.status == "parked", conflicts_t.c.id != conflict_id,
        ).values(status="resolved", resolved_at=now))
        uow.release_field(cid, row["field"])
        planned = plan_customer(uow, cid, config.apps, now=now, reason=f"operator resolved conflict {conflict_id}")
        uow.flush()
        other = row["loser_app"] if take == row["winner_app"] else row["winner_app"]
        conn.execute(update(conflicts_t).where(conflicts_t.c.id == conflict_id).values(
            status="resolved", resolved_at=now, rule="operator",
            winner_app=take, winner_value=sides[take], loser_app=other, loser_value=sides[other]))
    return {"customer_id": cid, "field": row["field"], "planned": planned}


def list_pending_deletes(store: Store) -> list[dict[str, Any]]:
    """Deletes waiting for approval (apps with `on_delete = "approve"`)."""
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(
            select(pending_t).where(pending_t.c.status == "pending").order_by(pending_t.c.id)).mappings()]


def approve_delete(store: Store, config: Config, request_id: int, *, identity_key: bytes,
                   now: datetime | None = None) -> dict[str, Any]:
    """Approve a held delete: the customer is deleted from every app that holds it."""
    return _decide_delete(store, config, request_id, approve=True, identity_key=identity_key, now=now or _now())


def reject_delete(store: Store, config: Config, request_id: int, *, identity_key: bytes,
                  now: datetime | None = None) -> dict[str, Any]:
    """Reject a held delete: the other apps keep the customer; the app that deleted it is unlinked."""
    return _decide_delete(store, config, request_id, approve=False, identity_key=identity_key, now=now or _now())


def _decide_delete(store: Store, config: Config, request_id: int, *, approve: bool,
                   identity_key: bytes, now: datetime) -> dict[str, Any]:
    from customer_sync.engine.process import propagate_delete
    from customer_sync.store.uow import UnitOfWork

    with store.transaction() as conn:
        row = conn.execute(select(pending_t).where(pending_t.c.id == request_id)).mappings().first()
        if row is None or row["status"] != "pending":
            raise NotFound(f"no pending delete {request_id}")
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id="operator")
        cid, app = row["customer_id"], row["app"]
        uow.load_customers([cid])
        if approve:
            link = uow.link(app, row["app_record_id"])
            if link is not None:
                uow.set_link_state(app, row["app_record_id"], "deleted")
            uow.drop_snapshot(cid, app)
            propagate_delete(uow, cid, config.apps, origin=app, now=now)
        else:
            if uow.link(app, row["app_record_id"]) is not None:
                uow.set_link_state(app, row["app_record_id"], "unlinked")
            uow.drop_snapshot(cid, app)
        uow.log("decided", app=app, app_record_id=row["app_record_id"], customer_id=cid,
                reason=f"delete request {request_id} {'approved' if approve else 'rejected'} by operator")
        uow.flush()
        conn.execute(update(pending_t).where(pending_t.c.id == request_id)
                     .values(status="approved" if approve else "rejected", decided_at=now))
    return {"customer_id": cid, "app": app, "approved": approve}


def resync(store: Store, config: Config, app: str) -> None:
    """Forget an app's cursor so the next poll re-reads everything. Unchanged records are
    recognised by their base fingerprints and cost nothing; real differences merge as usual."""
    if app not in config.apps:
        raise ConfigError(f"unknown app {app!r} (configured: {', '.join(config.apps)})")
    with store.transaction() as conn:
        conn.execute(delete(cursors_t).where(cursors_t.c.app == app))


def app_status(store: Store, config: Config, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per app: last poll, lag since the last successful poll, pending writes, errors, open
    rejections (values refused that the app still holds), conflicts, whether its first complete
    listing is done, until when it is paused (a vendor's `Retry-After` longer than the
    daemon will sleep on one request), and since when an operator paused it."""
    now = now or _now()
    out = []
    with store.transaction() as conn:
        states = {r["app"]: dict(r) for r in conn.execute(select(state_t)).mappings()}
        pending = dict(conn.execute(select(outbox_t.c.app, func.count()).where(
            outbox_t.c.state.in_(("pending", "sending"))).group_by(outbox_t.c.app)).all())
        dead = dict(conn.execute(select(dead_t.c.app, func.count()).where(dead_t.c.replayed_at.is_(None))
                                 .group_by(dead_t.c.app)).all())  # a replayed one is back in the outbox
        inbox = dict(conn.execute(select(inbox_t.c.app, func.count()).group_by(inbox_t.c.app)).all())
        parked = conn.execute(select(func.count()).select_from(conflicts_t)
                              .where(conflicts_t.c.status == "parked")).scalar_one()
        linked = dict(conn.execute(select(links_t.c.app, func.count()).where(links_t.c.state == "active")
                                   .group_by(links_t.c.app)).all())
        rejected = dict(conn.execute(select(rejections_t.c.app, func.count()).where(
            rejections_t.c.status == OPEN).group_by(rejections_t.c.app)).all())
    for app in config.apps:
        st = states.get(app, {})
        last_ok = st.get("last_success_at")
        if last_ok is not None:
            last_ok = stored_utc(last_ok)
        resume_at = st.get("resume_at")
        if resume_at is not None:
            resume_at = stored_utc(resume_at)
        out.append({
            "app": app,
            "connector": config.apps[app].config.connector,
            "enabled": config.apps[app].config.enabled,
            "listed": st.get("listed_at") is not None,
            "paused_until": resume_at if resume_at is not None and resume_at > now else None,
            "paused_by_operator_at": (stored_utc(st["operator_paused_at"])
                                      if st.get("operator_paused_at") is not None else None),
            "last_poll_at": st.get("last_poll_at"),
            "lag_s": round((now - last_ok).total_seconds(), 1) if last_ok else None,
            "linked": linked.get(app, 0),
            "inbox": inbox.get(app, 0),
            "pending_writes": pending.get(app, 0),
            "dead_letters": dead.get(app, 0),
            "rejections": rejected.get(app, 0),
            "parked": bool(st.get("parked")),
            "consecutive_failures": st.get("consecutive_failures") or 0,
            "last_error": st.get("last_error"),
        })
    for row in out:
        row["open_conflicts"] = parked
    return out


def _known_app(config: Config, app: str) -> None:
    if app not in config.apps:
        raise ConfigError(f"unknown app {app!r} (configured: {', '.join(config.apps)})")


def _note(store: Store, app: str, reason: str, now: datetime) -> None:
    """An operator's decision about a whole app, in the change log."""
    from customer_sync.store.uow import UnitOfWork

    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=b"", now=now, run_id="operator")
        uow.log("decided", app=app, reason=reason)
        uow.flush()


def pause_app(store: Store, config: Config, app: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Pause an app for the operator: the engine neither polls it, nor decides what its
    webhooks bring (that waits in the inbox), nor sends it writes (they wait in the outbox)
    until `resume_app`, across restarts. Pausing a paused app changes
    nothing.

    Raises:
        ConfigError: `app` is not a configured app.
    """
    _known_app(config, app)
    now = now or _now()
    changed = app_state_store.pause_by_operator(store, app, now)
    if changed:
        _note(store, app, f"{app} paused by operator", now)
    return {"app": app, "paused": True, "changed": changed}


def resume_app(store: Store, config: Config, app: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Lift the operator's pause of an app: the next round polls it and sends what waited.

    Raises:
        ConfigError: `app` is not a configured app.
    """
    _known_app(config, app)
    now = now or _now()
    changed = app_state_store.resume_by_operator(store, app)
    if changed:
        _note(store, app, f"{app} resumed by operator", now)
    return {"app": app, "paused": False, "changed": changed}


def list_dead_letters(store: Store, *, app: str | None = None, include_replayed: bool = False,
                      limit: int = 200) -> list[dict[str, Any]]:
    """Dead letters (writes an app refused, or that ran out of attempts), newest first; the
    replayed ones only with `include_replayed`."""
    q = select(dead_t).order_by(dead_t.c.id.desc()).limit(limit)
    if app is not None:
        q = q.where(dead_t.c.app == app)
    if not include_replayed:
        q = q.where(dead_t.c.replayed_at.is_(None))
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def replay_dead_letter(store: Store, config: Config, dead_letter_id: int, *, identity_key: bytes,
                       now: datetime | None = None) -> dict[str, Any]:
    """Put a dead letter's write back in the outbox, as pending with its attempts reset, for the
    next dispatch; the change log records the operator's decision.

    The write is planned again from what the customer holds now (the values it was refused
    with may have changed since), through the same planning as any change: only fields that
    differ from the app's base, as one pending write per customer and app. A delete is planned
    again while the customer stays deleted. Replaying a dead letter a second time plans
    nothing (`replayed` is False).

    Raises:
        NotFound: no such dead letter.
        ConfigError: it is not a write (`source` inbox), or its app is not configured.
    """
    from customer_sync.engine.plan import plan_customer
    from customer_sync.store.uow import UnitOfWork

    now = now or _now()
    with store.transaction() as conn:
        row = conn.execute(select(dead_t).where(dead_t.c.id == dead_letter_id)).mappings().first()
        if row is None:
            raise NotFound(f"no dead letter {dead_letter_id}")
        base = {"dead_letter_id": dead_letter_id, "app": row["app"], "customer_id": row["customer_id"]}
        if row["replayed_at"] is not None:
            return {**base, "replayed": False, "planned": 0, "replayed_at": stored_utc(row["replayed_at"])}
        if row["source"] != "outbox" or row["customer_id"] is None:
            raise ConfigError(f"dead letter {dead_letter_id} is not a write: only writes can be replayed")
        app, cid = row["app"], row["customer_id"]
        if app not in config.apps:
            raise ConfigError(f"dead letter {dead_letter_id}: app {app!r} is no longer configured")
        _revive_dead_rows(conn, cid, app)
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id="operator")
        customer = uow.customer(cid)
        reason = f"dead letter {dead_letter_id} replayed by operator"
        op = (row["payload"] or {}).get("op")
        planned = 0
        if customer is not None and customer["deleted_at"] is not None:
            link = uow.link_for(cid, app)
            if op == "delete" and link is not None and link["state"] in ("active", "gone"):
                uow.plan_write(cid, app, op="delete", fields={}, app_record_id=link["app_record_id"],
                               reason=reason)
                planned = 1
        elif customer is not None:
            planned = plan_customer(uow, cid, {app: config.apps[app]}, now=now, reason=reason)
        uow.log("decided", app=app, app_record_id=row["app_record_id"], customer_id=cid,
                diff={"fields": list((row["payload"] or {}).get("fields") or [])},
                reason=f"{reason}: {planned} write(s) planned")
        uow.flush()
        # Planned writes start afresh: no attempts spent, ready now.
        conn.execute(update(outbox_t).where(outbox_t.c.customer_id == cid, outbox_t.c.app == app,
                                            outbox_t.c.state == "pending")
                     .values(attempts=0, next_attempt_at=None, error=None))
        conn.execute(update(dead_t).where(dead_t.c.id == dead_letter_id).values(replayed_at=now))
    return {**base, "replayed": True, "planned": planned, "replayed_at": now}


def _revive_dead_rows(conn: Any, cid: str, app: str) -> None:
    """A write out of attempts stays in the outbox as `dead`: put it back as the pair's pending
    write (or fold it into the pending one), before the replay plans it up to date. A create
    sent without a clear answer keeps `sent_at`, so that dispatch looks for what it may have
    made before creating again (never a second record)."""
    dead = [dict(r) for r in conn.execute(select(outbox_t).where(
        outbox_t.c.customer_id == cid, outbox_t.c.app == app, outbox_t.c.state == "dead")
        .order_by(outbox_t.c.seq.desc())).mappings()]
    if not dead:
        return
    pending = conn.execute(select(outbox_t).where(
        outbox_t.c.customer_id == cid, outbox_t.c.app == app, outbox_t.c.state == "pending")
        .order_by(outbox_t.c.seq)).mappings().first()
    sent_at = next((r["sent_at"] for r in dead if r["op"] == "create" and r["sent_at"] is not None), None)
    drop = [r["seq"] for r in dead]
    if pending is None:
        keep = dead[0]
        drop.remove(keep["seq"])
        conn.execute(update(outbox_t).where(outbox_t.c.seq == keep["seq"]).values(
            state="pending", sent_at=keep["sent_at"] or sent_at))
    elif sent_at is not None and pending["op"] == "create" and pending["sent_at"] is None:
        conn.execute(update(outbox_t).where(outbox_t.c.seq == pending["seq"]).values(sent_at=sent_at))
    if drop:
        conn.execute(delete(outbox_t).where(outbox_t.c.seq.in_(drop)))


def summarize_values(values: Mapping[str, Any]) -> str:
    """A short one-line view of a customer for listings: email or phone or id-less name."""
    return str(values.get("email") or values.get("phone") or
               " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v) or "?")


#: The most change-log rows `activity` reads: a window busier than this is counted up to it (the
#: oldest buckets then read low, and `activity` says so with `truncated`).
ACTIVITY_MAX_ROWS = 500_000
_ACTIVITY_CHUNK = 5000


def activity(store: Store, *, until: datetime, buckets: int = 24,
             bucket: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Changes written, errors and conflicts per app and per time bucket, oldest bucket first:
    what the dashboard's charts and error rates are drawn from.

    The change log is read newest first by its sequence (the order it was appended in), in
    chunks of short transactions, and the read stops at the first entry older than the window,
    so a long history costs nothing (the change log has no index on its time) and writers never
    wait long behind it.

    Returns:
        `starts` (each bucket's start), `written` and `errors` ({app: [count per bucket]}),
        `conflicts` ([count per bucket], every kind and outcome), and `truncated`.
    """
    since = until - bucket * buckets

    def index(at: datetime) -> int | None:
        at = stored_utc(at)
        if at < since or at >= until:
            return None
        return min(int((at - since) / bucket), buckets - 1)

    written: dict[str, list[int]] = {}
    errors: dict[str, list[int]] = {}
    conflicts = [0] * buckets
    truncated, seen, before = False, 0, None
    while True:
        # A short transaction per chunk: on SQLite every transaction holds the write lock, and
        # webhook intake must not wait behind a long read.
        q = (select(changelog_t.c.seq, changelog_t.c.at, changelog_t.c.kind, changelog_t.c.app)
             .order_by(changelog_t.c.seq.desc()).limit(_ACTIVITY_CHUNK))
        if before is not None:
            q = q.where(changelog_t.c.seq < before)
        with store.transaction() as conn:
            chunk = conn.execute(q).all()
        for seq, at, kind, app in chunk:
            if stored_utc(at) < since:
                break
            if kind in ("written", "error") and app is not None and (i := index(at)) is not None:
                (written if kind == "written" else errors).setdefault(app, [0] * buckets)[i] += 1
            before = seq
        else:
            seen += len(chunk)
            if len(chunk) == _ACTIVITY_CHUNK and seen < ACTIVITY_MAX_ROWS:
                continue
            truncated = len(chunk) == _ACTIVITY_CHUNK
        break
    with store.transaction() as conn:
        for (at,) in conn.execute(select(conflicts_t.c.created_at).where(conflicts_t.c.created_at >= since)):
            if (i := index(at)) is not None:
                conflicts[i] += 1
    return {"starts": [since + bucket * i for i in range(buckets)], "written": written,
            "errors": errors, "conflicts": conflicts, "truncated": truncated}


#: How far back an app's error rate looks: this hour's bucket of `activity` and the one before.
HEALTH_BUCKETS = 2


def health_by_app(rows: Sequence[Mapping[str, Any]], act: Mapping[str, Any],
                  config: Config) -> dict[str, dict[str, Any]]:
    """Each app's health (`app_health`) from its `app_status` row and the last
    `HEALTH_BUCKETS` hourly buckets of `activity`: `health`, `health_reason`, and the
    `recent_written` and `recent_errors` the error rate is drawn from. The dashboard and the
    admin API say the same through it."""
    recent = max(len(act["starts"]) - HEALTH_BUCKETS, 0)
    out = {}
    for row in rows:
        app = row["app"]
        written = sum(act["written"].get(app, [])[recent:])
        errors = sum(act["errors"].get(app, [])[recent:])
        state, why = app_health(row, poll_interval_s=config.poll_interval_s(app),
                                written=written, errors=errors)
        out[app] = {"health": state, "health_reason": why,
                    "recent_written": written, "recent_errors": errors}
    return out


def hour_after(now: datetime) -> datetime:
    """The end of `now`'s hour: `activity`'s `until` for buckets aligned on the clock's hours."""
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def run_state(row: Mapping[str, Any]) -> tuple[str, datetime | None]:
    """Whether the daemon runs an app, from one row of `app_status`, as `status`, the admin
    API and the dashboard say it: `parked` (its credentials were refused), `paused by
    operator`, `paused until` (the time comes second: the vendor asked to wait), `not listed
    yet` (no create goes to it before its first complete listing), or `ok`."""
    if row["parked"]:
        return "parked", None
    if row.get("paused_by_operator_at") is not None:
        return "paused by operator", None
    if row["paused_until"] is not None:
        return "paused until", row["paused_until"]
    if not row["listed"]:
        return "not listed yet", None
    return "ok", None


def app_health(status: Mapping[str, Any], *, poll_interval_s: float, written: int = 0,
               errors: int = 0) -> tuple[str, str]:
    """An app's health in one word, and why: `paused`, `failing`, `lagging` or `in sync`.

    Checked in that order, from one row of `app_status` and the app's recent change-log counts
    (`written`, `errors`: e.g. the last hour of `activity`):

    - **paused**: the app is disabled in the config, an operator paused it
      (`paused_by_operator_at`, when the status carries it), or its vendor asked the daemon to
      wait (a `Retry-After` longer than one request may sleep) and the wait is not over;
    - **failing**: its credentials were refused (the app is parked until they are fixed), its
      last poll or dispatch failed, or at least half of its recent changes ended in an error
      (and there were at least 5);
    - **lagging**: its first complete listing is not done, it has never been polled
      successfully, its last successful poll is older than three poll intervals (and at least
      2 minutes), or 100 writes or more wait to be sent to it;
    - **in sync**: none of these.
    """
    if not status.get("enabled", True):
        return "paused", "disabled in the config"
    if status.get("paused_by_operator_at") is not None:
        return "paused", f"paused by an operator since {status['paused_by_operator_at']:%Y-%m-%d %H:%M:%S} UTC"
    if status.get("paused_until") is not None:
        return "paused", f"the app asked to wait until {status['paused_until']:%Y-%m-%d %H:%M:%S} UTC"
    if status.get("parked"):
        return "failing", "credentials refused: parked until they are fixed"
    if status.get("consecutive_failures"):
        return "failing", f"{status['consecutive_failures']} failed passes in a row"
    if errors >= 5 and errors * 2 >= errors + written:
        return "failing", f"{errors} of {errors + written} recent changes failed"
    lag = status.get("lag_s")
    if lag is None:
        return "lagging", "never polled successfully yet"
    if not status.get("listed", True):
        return "lagging", "initial listing under way"
    if lag > max(3 * poll_interval_s, 120):
        return "lagging", f"last successful poll {lag:.0f} s ago"
    if status.get("pending_writes", 0) >= 100:
        return "lagging", f"{status['pending_writes']} writes waiting"
    return "in sync", "polled recently, nothing waiting"
