"""Process inbox items: normalize, match, merge, plan — one batch in one transaction.

For each record received from an app:
1. **echo check**: the app fields we map hash to the fingerprint of what we last wrote (or
   read) there, so nothing changed; done without normalizing.
2. **normalize** through the app's field map; a bad value is an error for that field only.
3. **match** to a canonical customer: existing link, then normalized email, then phone. Two or
   more candidates is an ambiguous match, parked for review, never guessed.
4. **merge** field by field against the app's base (`conflicts.three_way`).
5. **plan** the writes every app needs (`engine.plan`).
Deletes follow the app's delete policy. Everything is recorded in the change log.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from customer_sync.canonical import identity_values
from customer_sync.conflicts.three_way import merge_record, same_value
from customer_sync.engine._normalize_worker import fields_fingerprint
from customer_sync.engine.plan import plan_customer
from customer_sync.sdk.connector import AppRecord, Capability

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime, ConflictsConfig
    from customer_sync.engine.normalizing import Normalized
    from customer_sync.store.uow import UnitOfWork

__all__ = [
    "Counts", "ProcessStats", "new_customer_id", "app_fingerprint", "merge_customers", "process_items", "process_records", "record_fingerprint",
    "propagate_delete",
]


class Counts:
    """Integer counters of a stage: add another set, or turn into a dict for a log line."""

    def add(self, other: Counts) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class ProcessStats(Counts):
    """Counts for the canonical log line of a pass."""

    read: int = 0
    echoes: int = 0
    unchanged: int = 0
    created: int = 0
    matched: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0
    conflicts: int = 0
    parked: int = 0
    deleted: int = 0
    planned: int = 0


def app_fingerprint(rt: AppRuntime, app_fields: Mapping[str, Any]) -> str:
    """Fingerprint of the app fields this app's map covers ("" and None alike); see
    `fields_fingerprint`."""
    return fields_fingerprint(rt.mapping.app_field_order, app_fields)


def record_fingerprint(rt: AppRuntime, rec: AppRecord, done: Normalized | None) -> str:
    """The record's app fingerprint: the normalizing worker's when it made one, else made here."""
    return done.fingerprint if done is not None else app_fingerprint(rt, rec.fields)


def new_customer_id() -> str:
    """A time-ordered UUID (the version 7 layout: 48-bit Unix milliseconds, then random bits).

    Customer ids key the links, bases, identities, outbox and change-log indexes; ids that grow
    with time land new rows at the end of those indexes instead of on a random page each.
    """
    ms = time.time_ns() // 1_000_000
    # random.getrandbits, not os.urandom: ids need uniqueness, not secrecy, and os.urandom is a
    # system call that hands the interpreter lock to the poll's reading thread on every record
    # (the random module reseeds itself in a forked child, so forks do not share a sequence).
    rand = random.getrandbits(80)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the UUID
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def process_items(
    uow: UnitOfWork,
    items: list[Mapping[str, Any]],
    apps: Mapping[str, AppRuntime],
    rules: ConflictsConfig,
    *,
    now: datetime,
) -> ProcessStats:
    """Process inbox rows (with payloads) into the unit of work; the caller commits."""
    records: list[tuple[str, AppRecord]] = []
    skipped = 0
    for item in items:
        if item["app"] not in apps or item["payload"] is None:
            skipped += 1
            continue
        records.append((item["app"], AppRecord.model_validate(item["payload"])))
    stats = process_records(uow, records, apps, rules, now=now)
    stats.skipped += skipped
    return stats


def process_records(
    uow: UnitOfWork,
    received: list[tuple[str, AppRecord]],
    apps: Mapping[str, AppRuntime],
    rules: ConflictsConfig,
    *,
    now: datetime,
    normalized: Mapping[int, Normalized] | None = None,
) -> ProcessStats:
    """Process (app, record) pairs into the unit of work, in order; the caller commits.

    `normalized` holds canonical values and errors already worked out for some records, keyed
    by `id(record)` (see `engine.normalizing`); the others are normalized here.
    """
    stats = ProcessStats()
    records = [(app, rec, apps[app]) for app, rec in received]
    stats.read = len(records)
    keys = [(app, rec.app_record_id) for app, rec, _ in records]
    uow.prefetch_links(keys)
    # The echo check needs only the bases of linked records; whole customers are loaded below
    # for the records that really changed.
    uow.load_bases([(lk["customer_id"], lk["app"]) for k in keys if (lk := uow.link(*k)) is not None])

    prepared: list[tuple[AppRecord, AppRuntime, dict[str, Any] | None, str]] = []
    wanted: list[tuple[str, str]] = []
    for _, rec, rt in records:
        done = normalized.get(id(rec)) if normalized else None
        fp = record_fingerprint(rt, rec, done)
        link = uow.link(rt.name, rec.app_record_id)
        if rec.deleted or (rec.merged_into is not None and not rec.fields):
            prepared.append((rec, rt, None, fp))
            continue
        if link is not None and link["state"] == "active":
            snap = uow.snapshot(link["customer_id"], rt.name)
            if snap is not None and snap["app_fingerprint"] == fp:
                stats.echoes += 1
                continue
        if done is not None:
            values, errors = done.values, done.errors
            uow.remember_hashes(done.hashes)
        else:
            values, errors = rt.mapping.to_canonical(rec.fields)
        stats.errors += len(errors)
        uow.note_rejections(rt.name, rec.app_record_id, errors,
                            customer_id=link["customer_id"] if link else None)
        if link is None:
            wanted += identity_values(values)
        prepared.append((rec, rt, values, fp))
    uow.prefetch(app_records=[(rt.name, rec.app_record_id) for rec, rt, _, _ in prepared], identities=wanted)

    for rec, rt, values, fp in prepared:
        if rec.merged_into is not None:
            _apply_vendor_merge(uow, rec, rt, apps, now=now, stats=stats)
            if values is None:
                continue
        if values is None:
            _apply_delete(uow, rec, rt, apps, now=now, stats=stats)
        else:
            _apply_record(uow, rec, rt, values, fp, apps, rules, now=now, stats=stats)
    return stats


def _match(uow: UnitOfWork, app: str, values: Mapping[str, Any]) -> tuple[str | None, str, set[str]]:
    """(customer id or None, how, ambiguous candidates)."""
    identities = identity_values(values)
    for kind in ("email", "phone"):
        found: set[str] = set()
        for k, value in identities:
            if k == kind:
                found |= uow.candidates(kind, value)
        # A customer already holding another live record of this app is not this record.
        free = {c for c in found if (lk := uow.link_for(c, app)) is None or lk["state"] != "active"}
        if len(found) > 1 or (found and not free):
            return None, f"ambiguous_{kind}", found
        if free:
            return free.pop(), f"matched_by_{kind}", set()
    return None, "new", set()


def _apply_record(
    uow: UnitOfWork, rec: AppRecord, rt: AppRuntime, values: dict[str, Any], fp: str,
    apps: Mapping[str, AppRuntime], rules: ConflictsConfig, *, now: datetime, stats: ProcessStats,
) -> None:
    app, rid = rt.name, rec.app_record_id
    link = uow.link(app, rid)
    if link is not None and link["state"] != "active":
        stats.skipped += 1  # unlinked or deleted: this record is no longer synced
        return
    how = "linked"
    if link is None:
        if rt.filter and not rt.filter.matches(values, now):
            stats.skipped += 1
            return
        cid, how, ambiguous = _match(uow, app, values)
        if ambiguous:
            stats.parked += 1
            if not uow.is_match_parked(app, rid):  # read again (a reconciliation): parked once
                uow.add_conflict(kind="match", status="parked", app=app, app_record_id=rid,
                                 detail={"candidates": sorted(ambiguous), "reason": how})
                uow.log("conflict", app=app, app_record_id=rid,
                        reason=f"{how}: {len(ambiguous)} candidates; parked for review")
            return
        if cid is None:
            cid = _made_by_our_create(uow, app, values)
            how = "made_by_our_create" if cid is not None else how
        if cid is None:
            cid = new_customer_id()
            uow.new_customer(cid)
            stats.created += 1
        else:
            stats.matched += 1
        uow.add_link(app, rid, cid)
    else:
        cid = link["customer_id"]
    customer = uow.customer(cid)
    assert customer is not None
    snapshot = uow.snapshot(cid, app)
    base = snapshot["values"] if snapshot else None
    if base is None and how != "new":
        # A create that may have reached the app without our hearing back (a crash, a lost
        # answer) made what it sent: the record holding those values holds ours, not an edit
        # of the app's user, and must not win over newer edits elsewhere by its modified time.
        sent = uow.uncertain_creates(app).get(cid)
        if sent is not None:
            base = {f: v for f, v in sent["fields"].items() if f in values and same_value(values[f], v)}
    result = merge_record(
        app=app, incoming=values, base=base, current=customer["values"],
        provenance=customer["provenance"], modified_at=rec.modified_at,
        field_modified_at=rec.field_modified_at,
        set_fields=rt.mapping.set_fields,
        rules=rules,
    )
    if not result.observed and how == "linked":
        stats.unchanged += 1
    if result.observed or how != "linked":  # a record first linked is logged, even if empty
        uow.log("observed", app=app, app_record_id=rid, customer_id=cid, diff=result.observed,
                source_modified_at=rec.modified_at, reason="new customer" if how == "new" else how)
    if result.changes:
        stats.updated += int(how != "new")
        before = customer["values"]
        customer["values"] = {**before, **result.changes}
        customer["provenance"] = {**customer["provenance"], **result.provenance}
        uow.touch_customer(cid)
        if how == "new":  # the observation holds the values; the decision just says so
            uow.log("decided", app=app, app_record_id=rid, customer_id=cid,
                    diff={"fields": sorted(result.changes)}, reason=f"new customer: every field from {app}")
        else:
            uow.log("decided", app=app, app_record_id=rid, customer_id=cid,
                    diff={f: [before.get(f), v] for f, v in result.changes.items()},
                    reason=", ".join(f"{f}: {result.provenance[f]['rule']}" for f in result.changes))
    if result.provenance and not result.changes:  # agreed values now stand on a stronger claim
        customer["provenance"] = {**customer["provenance"], **result.provenance}
        uow.touch_customer(cid)
    for conflict in result.conflicts:
        d = conflict.decision
        stats.conflicts += 1
        stats.parked += int(d.parked)
        uow.add_conflict(kind="field", status="parked" if d.parked else "decided", customer_id=cid,
                         field=conflict.field, rule=d.rule, winner_app=d.winner.app,
                         winner_value=d.winner.value, loser_app=d.loser.app, loser_value=d.loser.value)
        uow.log("conflict", app=app, app_record_id=rid, customer_id=cid,
                diff={conflict.field: [d.loser.value, d.winner.value]},
                reason=f"{conflict.field}: {d.rule} {'parked' if d.parked else f'-> {d.winner.app}'}")
    new_base = {**(base or {}), **values}
    uow.set_snapshot(cid, app, new_base, app_fingerprint=fp, source_modified_at=rec.modified_at)
    uow.set_identities(cid, identity_values(customer["values"]))
    stats.planned += plan_customer(uow, cid, apps, now=now, reason=f"{how} via {app}")


def _made_by_our_create(uow: UnitOfWork, app: str, values: Mapping[str, Any]) -> str | None:
    """The customer whose unanswered create made this record, when it can only be that one.

    A record with no identity that matches (no email, no phone: a name, a company) cannot be
    matched to a customer; but a create we sent without hearing back makes exactly such a
    record. When one unanswered create to this app, of a customer not linked there yet, sent
    exactly the values the record holds, the record is taken for what that create made, rather
    than a new customer (who would be created again in every other app).
    """
    sent = uow.uncertain_creates(app)
    if not sent:
        return None
    uow.load_customers(sent)  # their links, to leave out customers linked there since
    made = [
        cid for cid, row in sent.items()
        if uow.link_for(cid, app) is None and row["fields"]
        and all(same_value(values.get(f), v) for f, v in row["fields"].items())
    ]
    return made[0] if len(made) == 1 else None


def _apply_delete(
    uow: UnitOfWork, rec: AppRecord, rt: AppRuntime, apps: Mapping[str, AppRuntime], *,
    now: datetime, stats: ProcessStats,
) -> None:
    app, rid = rt.name, rec.app_record_id
    link = uow.link(app, rid)
    if link is None or link["state"] != "active":
        return
    cid = link["customer_id"]
    policy = rt.config.on_delete
    stats.deleted += 1
    uow.log("deleted", app=app, app_record_id=rid, customer_id=cid, source_modified_at=rec.modified_at,
            reason=f"deleted in {app}; on_delete = {policy}")
    if policy == "ignore":
        return  # the link stays; the next write re-creates the record in this app
    uow.cancel_write(cid, app)
    if policy == "unlink":
        uow.set_link_state(app, rid, "unlinked")
        uow.drop_snapshot(cid, app)
    elif policy == "approve":
        uow.set_link_state(app, rid, "gone")
        uow.request_delete(cid, app, rid)
    else:
        uow.set_link_state(app, rid, "deleted")
        uow.drop_snapshot(cid, app)
        propagate_delete(uow, cid, apps, origin=app, now=now)


def propagate_delete(
    uow: UnitOfWork, customer_id: str, apps: Mapping[str, AppRuntime], *, origin: str, now: datetime
) -> None:
    """Delete the customer everywhere: plan deletes to every app that holds it and can delete,
    unlink where it cannot, and tombstone the canonical customer."""
    for name, rt in apps.items():
        link = uow.link_for(customer_id, name)
        if name == origin or link is None or link["state"] not in ("active", "gone"):
            continue
        if Capability.DELETE in rt.connector_cls.capabilities and rt.mapping.outbound:
            uow.plan_write(customer_id, name, op="delete", fields={},
                           app_record_id=link["app_record_id"], reason=f"deleted in {origin}")
        else:
            uow.cancel_write(customer_id, name)
            uow.set_link_state(name, link["app_record_id"], "unlinked")
    customer = uow.customer(customer_id)
    if customer is not None:
        customer["deleted_at"] = now
        uow.touch_customer(customer_id)
    uow.drop_identities(customer_id)


def _apply_vendor_merge(
    uow: UnitOfWork, rec: AppRecord, rt: AppRuntime, apps: Mapping[str, AppRuntime], *,
    now: datetime, stats: ProcessStats,
) -> None:
    """The app merged record `rec` into `rec.merged_into`: the link follows the surviving
    record, and two canonical customers linked to the two records become one."""
    app, old_id, new_id = rt.name, rec.app_record_id, rec.merged_into
    assert new_id is not None
    uow.prefetch(app_records=[(app, old_id), (app, new_id)], identities=[])
    old = uow.link(app, old_id)
    new = uow.link(app, new_id)
    if old is None:
        return
    loser = old["customer_id"]
    if new is None:
        uow.drop_link(app, old_id)
        uow.add_link(app, new_id, loser)
        uow.log("observed", app=app, app_record_id=new_id, customer_id=loser,
                reason=f"{app} merged record {old_id} into {new_id}; link follows")
        return
    winner = new["customer_id"]
    uow.drop_link(app, old_id)
    if winner == loser:
        return
    merge_customers(uow, loser=loser, winner=winner, now=now, reason=f"{app} merged {old_id} into {new_id}")
    stats.updated += 1
    stats.planned += plan_customer(uow, winner, apps, now=now, reason=f"merged in {app}")


def merge_customers(uow: UnitOfWork, *, loser: str, winner: str, now: datetime, reason: str) -> None:
    """Fold canonical customer `loser` into `winner`: links and bases move where the winner
    has none; where both hold a record of one app, the loser's is unlinked and parked for
    review (that app now has a duplicate). Empty winner fields take the loser's values."""
    lose, win = uow.customer(loser), uow.customer(winner)
    assert lose is not None and win is not None
    for app, link in list(uow.links_by_customer.get(loser, {}).items()):
        rid = link["app_record_id"]
        snap = uow.snapshot(loser, app)
        if link["state"] == "active" and uow.link_for(winner, app) is None:
            uow.drop_link(app, rid)
            uow.add_link(app, rid, winner)
            if snap is not None:
                uow.set_snapshot(winner, app, snap["values"], app_fingerprint=snap["app_fingerprint"],
                                 source_modified_at=snap["source_modified_at"])
        elif link["state"] == "active":
            uow.set_link_state(app, rid, "unlinked")
            uow.add_conflict(kind="match", status="parked", customer_id=winner, app=app, app_record_id=rid,
                             detail={"reason": "duplicate_after_merge", "merged_customer": loser})
        uow.cancel_write(loser, app)
        if snap is not None:
            uow.drop_snapshot(loser, app)
    values = dict(win["values"])
    for name, value in lose["values"].items():
        if isinstance(value, list):
            values[name] = sorted(set(values.get(name) or []) | set(value))
        elif values.get(name) in (None, "") and value not in (None, ""):
            values[name] = value
            win["provenance"] = {**win["provenance"], name: lose["provenance"].get(name, {})}
    win["values"] = values
    uow.touch_customer(winner)
    uow.set_identities(winner, identity_values(lose["values"]) + identity_values(values))
    lose["deleted_at"] = now
    uow.touch_customer(loser)
    uow.drop_identities(loser)
    uow.log("decided", customer_id=winner, reason=f"customer {loser} merged into this one: {reason}")
    uow.log("deleted", customer_id=loser, reason=f"merged into {winner}: {reason}")
