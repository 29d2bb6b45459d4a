"""Operator actions and read models: status, explain, change log, conflicts, rejections,
deletes, resync.

These are what the CLI (and later the admin API) call. Reads return plain dicts; actions run in
one transaction each and plan the writes their decision implies, which the next dispatch sends.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from customer_sync.canonical import field_spec, identity_hash, normalize_value
from customer_sync.errors import ConfigError, SyncError
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
    "NotFound",
    "app_status",
    "approve_delete",
    "customer_log",
    "customer_rejections",
    "explain",
    "find_customer",
    "list_conflicts",
    "list_pending_deletes",
    "list_rejections",
    "reject_delete",
    "resolve_conflict",
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


def list_conflicts(store: Store, *, status: str | None = "parked", limit: int = 200) -> list[dict[str, Any]]:
    """Conflicts, newest first; `status=None` lists all."""
    q = select(conflicts_t).order_by(conflicts_t.c.id.desc()).limit(limit)
    if status is not None:
        q = q.where(conflicts_t.c.status == status)
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
                                  row["field"]: {"app": take, "at": now.isoformat(), "rule": "operator"}}
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
    listing is done, and until when it is paused (a vendor's `Retry-After` longer than the
    daemon will sleep on one request)."""
    now = now or _now()
    out = []
    with store.transaction() as conn:
        states = {r["app"]: dict(r) for r in conn.execute(select(state_t)).mappings()}
        pending = dict(conn.execute(select(outbox_t.c.app, func.count()).where(
            outbox_t.c.state.in_(("pending", "sending"))).group_by(outbox_t.c.app)).all())
        dead = dict(conn.execute(select(dead_t.c.app, func.count()).group_by(dead_t.c.app)).all())
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
            "last_poll_at": st.get("last_poll_at"),
            "lag_s": round((now - last_ok).total_seconds(), 1) if last_ok else None,
            "linked": linked.get(app, 0),
            "inbox": inbox.get(app, 0),
            "pending_writes": pending.get(app, 0),
            "dead_letters": dead.get(app, 0),
            "rejections": rejected.get(app, 0),
            "parked": bool(st.get("parked")),
            "last_error": st.get("last_error"),
        })
    for row in out:
        row["open_conflicts"] = parked
    return out


def summarize_values(values: Mapping[str, Any]) -> str:
    """A short one-line view of a customer for listings: email or phone or id-less name."""
    return str(values.get("email") or values.get("phone") or
               " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v) or "?")
