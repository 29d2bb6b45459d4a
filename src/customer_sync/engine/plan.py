"""Plan writes: for one customer, what each app must be told so it holds the canonical values.

Per target app, only fields that differ from that app's base are written (no blind overwrites,
no echo of what the app already holds), only fields whose direction lets us write, only for
customers that pass the app's filter, and never a field with a parked conflict: until an
operator resolves it, every app keeps the value it has. Consent is the exception: its value
stands on the more restrictive side even while parked, and a restriction reaches every app.
A customer the app does not hold yet is created there.
One pending outbox row per (customer, app) is kept up to date, so a burst of changes to one
customer becomes one write.

An app whose record is an email address (`requires_email`, an email list) gets the primary
email when the customer is created there, and never a customer without one (the change log
says so once); an address it holds is never rewritten, as it is that record's identity and
carries its consent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from customer_sync.conflicts.consent import CONSENT_FIELD
from customer_sync.conflicts.emails import PRIMARY_FIELD
from customer_sync.conflicts.rules import same_consent
from customer_sync.conflicts.three_way import is_empty, same_value

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime
    from customer_sync.store.uow import UnitOfWork

__all__ = ["desired_fields", "differs", "plan_customer", "same_value"]


def desired_fields(rt: AppRuntime, values: Mapping[str, Any], held: set[str]) -> dict[str, Any]:
    """The canonical values an app is to hold: those of its outbound fields, but none `held`
    (a field with a parked conflict) except consent, whose standing value is never the less
    restrictive side of a conflict."""
    return {fm.canonical: values[fm.canonical] for fm in rt.mapping.outbound
            if fm.canonical in values and (fm.canonical not in held or fm.canonical == CONSENT_FIELD)}


def differs(name: str, value: Any, held: Any) -> bool:
    """Whether canonical `value` of field `name` differs from what an app `held` (its base)."""
    if name == CONSENT_FIELD:
        return not same_consent(value, held)
    return not same_value(value, held)


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
            if rt.requires_email and is_empty(values.get(PRIMARY_FIELD)):
                _not_created_without_email(uow, customer, name)
                fields = {}
            if not fields:
                uow.cancel_write(customer_id, name)
                continue
            uow.plan_write(customer_id, name, op="create", fields=fields, app_record_id=None, reason=reason)
            planned += 1
            continue
        snapshot = uow.snapshot(customer_id, name)
        base = snapshot["values"] if snapshot else {}
        diff = {k: v for k, v in desired.items() if differs(k, v, base.get(k))}
        if rt.requires_email:
            diff.pop(PRIMARY_FIELD, None)  # the record's own address: its identity, never rewritten
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


def _not_created_without_email(uow: UnitOfWork, customer: dict[str, Any], app: str) -> None:
    """Say once in the change log that a customer without an email is not created in `app`.

    "Once" is kept with the customer, in the provenance of its (empty) email: the mark goes
    when the customer gets an email, whose provenance replaces it."""
    mark = customer["provenance"].get(PRIMARY_FIELD) or {}
    skipped = list(mark.get("not_created_in") or ())
    if app in skipped:
        return
    customer["provenance"] = {**customer["provenance"],
                              PRIMARY_FIELD: {**mark, "not_created_in": sorted({*skipped, app})}}
    uow.touch_customer(customer["customer_id"])
    uow.log("decided", app=app, customer_id=customer["customer_id"], diff={"fields": [PRIMARY_FIELD]},
            reason=f"not created in {app}: the customer has no email, which every record of {app} needs")
