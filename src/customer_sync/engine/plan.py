"""Plan writes: for one customer, what each app must be told so it holds the canonical values.

Per target app, only fields that differ from that app's base are written (no blind overwrites,
no echo of what the app already holds), only fields whose direction lets us write, only for
customers that pass the app's filter, and never a field with a parked conflict: until an
operator resolves it, every app keeps the value it has. A customer the app does not hold yet is created there.
One pending outbox row per (customer, app) is kept up to date, so a burst of changes to one
customer becomes one write.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from customer_sync.conflicts.three_way import is_empty, same_value

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime
    from customer_sync.store.uow import UnitOfWork

__all__ = ["desired_fields", "plan_customer", "same_value"]


def desired_fields(rt: AppRuntime, values: Mapping[str, Any], held: set[str]) -> dict[str, Any]:
    """The canonical values an app is to hold: those of its outbound fields, but none `held`
    (a field with a parked conflict)."""
    return {fm.canonical: values[fm.canonical] for fm in rt.mapping.outbound
            if fm.canonical in values and fm.canonical not in held}


def plan_customer(
    uow: UnitOfWork,
    customer_id: str,
    apps: Mapping[str, AppRuntime],
    *,
    now: datetime,
    reason: str,
) -> int:
    """Plan (or cancel) the pending write of `customer_id` to every app; returns how many."""
    customer = uow.customer(customer_id)
    if customer is None or customer["deleted_at"] is not None:
        return 0
    values = customer["values"]
    held = uow.held_fields(customer_id)
    planned = 0
    for name, rt in apps.items():
        if not rt.config.enabled or not rt.mapping.outbound:
            continue
        link = uow.link_for(customer_id, name)
        if link is not None and link["state"] != "active":
            continue
        if rt.filter and not rt.filter.matches(values, now):
            uow.cancel_write(customer_id, name)
            continue
        desired = desired_fields(rt, values, held)
        if link is None:
            fields = {k: v for k, v in desired.items() if not is_empty(v)}
            if not fields:
                uow.cancel_write(customer_id, name)
                continue
            uow.plan_write(customer_id, name, op="create", fields=fields, app_record_id=None, reason=reason)
            planned += 1
            continue
        snapshot = uow.snapshot(customer_id, name)
        base = snapshot["values"] if snapshot else {}
        diff = {k: v for k, v in desired.items() if not same_value(v, base.get(k))}
        if not diff:
            pending = uow.pending(customer_id, name)
            if pending is not None and pending["op"] != "delete":
                uow.cancel_write(customer_id, name)
            continue
        uow.plan_write(
            customer_id, name, op="update", fields=diff, app_record_id=link["app_record_id"], reason=reason
        )
        planned += 1
    return planned
