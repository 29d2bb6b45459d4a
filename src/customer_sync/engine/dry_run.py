"""The dry run: read every app and decide, in one transaction that is rolled back.

Nothing is written, to the apps or to the store. What the decisions would send is read from the
outbox before the rollback: one entry per write (customer, app, operation, fields old -> new,
and why), for `customer-sync run --dry-run`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from customer_sync.store.tables import CustomerRow, OutboxItem, SnapshotRow

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine

__all__ = ["dry_run"]

outbox_t = OutboxItem.__table__
customers_t = CustomerRow.__table__
snapshots_t = SnapshotRow.__table__


async def dry_run(engine: Engine) -> list[dict[str, Any]]:
    """Poll every app and process the inbox inside one transaction, read the plan, roll back."""
    from customer_sync.engine.runner import RunSummary

    real = engine.store
    with real.engine.connect() as conn:
        outer = conn.begin()
        engine.store = _OneTransaction(conn)  # type: ignore[assignment]
        engine._offload = False
        try:
            summary = RunSummary()
            for app in engine.live_apps():
                await engine._guarded(app, summary, engine.poll(app), record=False)
            await engine.process_inbox()
            plan = _read_plan(conn)
            for app, error in {**engine.unopened, **summary.failed_apps}.items():
                plan.append({"app": app, "op": "error", "reason": error})
            return plan
        finally:
            outer.rollback()
            engine.store = real
            engine._offload = True


class _OneTransaction:
    """A store stand-in whose every transaction is one outer transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.engine = conn.engine

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        yield self.conn


def _read_plan(conn: Connection) -> list[dict[str, Any]]:
    out = []
    rows = conn.execute(select(outbox_t).where(outbox_t.c.state == "pending").order_by(outbox_t.c.seq)).mappings()
    for row in rows:
        values = conn.execute(select(customers_t.c["values"]).where(
            customers_t.c.customer_id == row["customer_id"])).scalar() or {}
        base = conn.execute(select(snapshots_t.c["values"]).where(
            snapshots_t.c.customer_id == row["customer_id"], snapshots_t.c.app == row["app"])).scalar() or {}
        out.append({
            "customer_id": row["customer_id"], "customer": values.get("email") or values.get("phone"),
            "app": row["app"], "op": row["op"], "app_record_id": row["app_record_id"],
            "fields": {f: [base.get(f), v] for f, v in row["fields"].items()}, "reason": row["reason"],
        })
    return out
