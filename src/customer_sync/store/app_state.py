"""Per-app state the engine keeps across restarts: health, the first complete listing, the last
reconciliation, and a pause the vendor asked for.

- **health** (`record_ok`, `record_error`): last poll, last success, last error, parked (an
  app whose credentials are refused), consecutive failures; what `status` and `check` show.
- **listed** (`mark_listed`, `listed_apps`): when the app's first complete listing was
  processed. The dispatcher sends no create to an app before: a record the app already holds
  would be created a second time.
- **reconciled** (`mark_reconciled`): when the app was last compared whole against the base.
- **paused** (`pause_until`, `paused_until`): the vendor asked to wait longer than one request
  may sleep (a long `Retry-After`); the app is left alone until then.
- **paused by the operator** (`pause_by_operator`, `resume_by_operator`, `held_apps`): neither
  polled nor dispatched until the operator resumes it, across restarts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from customer_sync.store.bulk import upsert_row
from customer_sync.store.tables import AppState, stored_utc

if TYPE_CHECKING:
    from customer_sync.store.db import Store

__all__ = [
    "held_apps",
    "listed_apps",
    "mark_listed",
    "mark_reconciled",
    "pause_by_operator",
    "pause_until",
    "paused_until",
    "read",
    "record_error",
    "record_ok",
    "resume_by_operator",
]

state_t = AppState.__table__


def read(store: Store) -> dict[str, dict[str, Any]]:
    """Every app's row, by app name (times as aware UTC)."""
    with store.transaction() as conn:
        rows = [dict(r) for r in conn.execute(select(state_t)).mappings()]
    for row in rows:
        for key in ("last_poll_at", "last_success_at", "listed_at", "reconciled_at", "resume_at",
                    "operator_paused_at"):
            if row[key] is not None:
                row[key] = stored_utc(row[key])
    return {row["app"]: row for row in rows}


def record_ok(store: Store, app: str, now: datetime) -> None:
    """A pass over the app succeeded: it is healthy, not parked, not paused."""
    with store.transaction() as conn:
        upsert_row(conn, state_t, {"app": app}, {
            "last_poll_at": now, "last_success_at": now, "last_error": None,
            "parked": False, "consecutive_failures": 0, "resume_at": None})


def record_error(
    store: Store, app: str, error: str, now: datetime, *, parked: bool,
    resume_at: datetime | None = None,
) -> None:
    """A pass over the app failed with `error` (a one-line description, no personal data).

    Args:
        parked: the app cannot go on without an operator (credentials refused).
        resume_at: leave the app alone until then (the vendor asked to wait).
    """
    with store.transaction() as conn:
        row = conn.execute(select(state_t).where(state_t.c.app == app)).mappings().first()
        upsert_row(conn, state_t, {"app": app}, {
            "last_poll_at": now, "last_error": error[:1000], "parked": parked,
            "consecutive_failures": (row["consecutive_failures"] if row else 0) + 1,
            "last_success_at": row["last_success_at"] if row else None,
            "resume_at": resume_at})


def pause_until(store: Store, app: str, resume_at: datetime, error: str, now: datetime) -> None:
    """Leave the app alone until `resume_at`; `status` shows why and until when."""
    record_error(store, app, error, now, parked=False, resume_at=resume_at)


def paused_until(store: Store, now: datetime) -> dict[str, datetime]:
    """Apps paused at `now`, with the time each resumes."""
    with store.transaction() as conn:
        rows = conn.execute(select(state_t.c.app, state_t.c.resume_at)
                            .where(state_t.c.resume_at.is_not(None))).all()
    out = {}
    for app, resume_at in rows:
        at = stored_utc(resume_at)
        if at > now:
            out[app] = at
    return out


def mark_listed(store: Store, app: str, now: datetime) -> None:
    """The app's listing reached its end and everything listed is processed; the first time
    this happens is remembered (a full listing also counts as a reconciliation)."""
    with store.transaction() as conn:
        row = conn.execute(select(state_t.c.listed_at).where(state_t.c.app == app)).first()
        if row is None:
            upsert_row(conn, state_t, {"app": app}, {
                "listed_at": now, "reconciled_at": now, "parked": False, "consecutive_failures": 0})
        elif row[0] is None:
            conn.execute(update(state_t).where(state_t.c.app == app)
                         .values(listed_at=now, reconciled_at=now))


def listed_apps(store: Store, apps: Iterable[str]) -> set[str]:
    """Those of `apps` whose first complete listing has been processed."""
    wanted = list(apps)
    with store.transaction() as conn:
        return set(conn.execute(select(state_t.c.app).where(
            state_t.c.app.in_(wanted), state_t.c.listed_at.is_not(None))).scalars())


def mark_reconciled(store: Store, app: str, now: datetime) -> None:
    """The app was just compared whole against the base."""
    with store.transaction() as conn:
        upsert_row(conn, state_t, {"app": app}, {"reconciled_at": now})


def pause_by_operator(store: Store, app: str, now: datetime) -> bool:
    """Pause the app for the operator: the engine neither polls nor dispatches it until
    `resume_by_operator`. Returns False when it was paused already (the first time stands)."""
    with store.transaction() as conn:
        row = conn.execute(select(state_t.c.operator_paused_at).where(state_t.c.app == app)).first()
        if row is not None and row[0] is not None:
            return False
        if row is None:
            upsert_row(conn, state_t, {"app": app}, {
                "operator_paused_at": now, "parked": False, "consecutive_failures": 0})
        else:
            conn.execute(update(state_t).where(state_t.c.app == app).values(operator_paused_at=now))
        return True


def resume_by_operator(store: Store, app: str) -> bool:
    """Lift the operator's pause; returns False when the app was not paused by the operator."""
    with store.transaction() as conn:
        done = conn.execute(update(state_t).where(state_t.c.app == app,
                                                  state_t.c.operator_paused_at.is_not(None))
                            .values(operator_paused_at=None))
        return bool(done.rowcount)


def held_apps(store: Store, now: datetime) -> set[str]:
    """The apps a round leaves alone at `now`: paused by the operator, or until a time the
    vendor asked for."""
    with store.transaction() as conn:
        rows = conn.execute(select(state_t.c.app, state_t.c.resume_at, state_t.c.operator_paused_at)
                            .where(or_(state_t.c.resume_at.is_not(None),
                                       state_t.c.operator_paused_at.is_not(None)))).all()
    return {app for app, resume_at, by_operator in rows
            if by_operator is not None or (resume_at is not None and stored_utc(resume_at) > now)}
