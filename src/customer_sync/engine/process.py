"""Process inbox items: normalize, match, merge, plan — one batch in one transaction.

For each record received from an app:
1. **echo check**: the app fields we map hash to the fingerprint of what we last wrote (or
   read) there, so nothing changed; done without normalizing.
2. **normalize** through the app's field map; a bad value is an error for that field only.
3. **match** to a canonical customer: an existing link, else by the rules of `engine.match`
   (emails; then phone or handle for records without one). An ambiguous match is parked for
   review, never guessed.
4. **merge** field by field against the app's base (`conflicts.three_way`).
5. **plan** the writes every app needs (`engine.plan`).
Deletes follow the app's delete policy. Everything is recorded in the change log.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_sync.canonical import identity_values
from customer_sync.conflicts.consent import CONSENT_FIELD
from customer_sync.conflicts.rules import more_restrictive, same_consent
from customer_sync.conflicts.three_way import merge_record, same_value
from customer_sync.engine._normalize_worker import fields_fingerprint
from customer_sync.engine.match import (
    Keys,
    Match,
    email_keys,
    is_email_less,
    match_record,
    record_keys,
)
from customer_sync.engine.plan import plan_customer
from customer_sync.errors import MappingError
from customer_sync.sdk.connector import AppRecord, Capability
from customer_sync.store.uow import duplicate_base

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime, ConflictsConfig
    from customer_sync.engine.normalizing import Normalized
    from customer_sync.store.uow import UnitOfWork

__all__ = [
    "Counts",
    "ProcessStats",
    "app_fingerprint",
    "merge_customers",
    "new_customer_id",
    "process_items",
    "process_records",
    "propagate_delete",
    "record_fingerprint",
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

    prepared: list[tuple[AppRecord, AppRuntime, dict[str, Any] | None, str, list[Any]]] = []
    wanted: list[tuple[str, str]] = []
    for _, rec, rt in records:
        done = normalized.get(id(rec)) if normalized else None
        fp = record_fingerprint(rt, rec, done)
        link = uow.link(rt.name, rec.app_record_id)
        if rec.deleted or (rec.merged_into is not None and not rec.fields):
            prepared.append((rec, rt, None, fp, []))
            continue
        if link is not None and link["state"] in ("active", "duplicate"):
            snap = uow.snapshot(link["customer_id"], _base_key(link))
            if snap is not None and snap["app_fingerprint"] == fp:
                stats.echoes += 1
                continue
        if done is not None:
            values, errors = done.values, done.errors
            uow.remember_hashes(done.hashes)
        else:
            values, errors = rt.mapping.to_canonical(rec.fields)
        # every record's identities: a new one is matched by them, and a linked one that
        # brings a phone or handle new to its customer re-decides the records holding it
        wanted += identity_values(values)
        prepared.append((rec, rt, values, fp, list(errors)))
    uow.prefetch(app_records=[(rt.name, rec.app_record_id) for rec, rt, *_ in prepared], identities=wanted)
    uow.load_bases([(lk["customer_id"], _base_key(lk)) for rec, rt, *_ in prepared
                    if (lk := uow.link(rt.name, rec.app_record_id)) is not None and lk["state"] == "duplicate"])

    for rec, rt, values, fp, errors in prepared:
        if rec.merged_into is not None:
            _apply_vendor_merge(uow, rec, rt, apps, now=now, stats=stats)
            if values is None:
                continue
        if values is None:
            _apply_delete(uow, rec, rt, apps, now=now, stats=stats)
            # a record gone from its app holds no refused value any more
            uow.note_rejections(rt.name, rec.app_record_id, [], customer_id=None)
            continue
        _apply_record(uow, rec, rt, values, fp, apps, rules, now=now, stats=stats, errors=errors)
        # after matching: the errors may have changed (phones read in the customer's country),
        # and a record linked now has its rejections attached to its customer
        stats.errors += len(errors)
        link = uow.link(rt.name, rec.app_record_id)
        uow.note_rejections(rt.name, rec.app_record_id, errors, customer_id=link["customer_id"] if link else None)
    return stats


def _base_key(link: Mapping[str, Any]) -> str:
    """The snapshot key of a linked record's base: its app, or its own key for a duplicate."""
    if link["state"] == "duplicate":
        return duplicate_base(link["app"], link["app_record_id"])
    return link["app"]


def _apply_record(
    uow: UnitOfWork, rec: AppRecord, rt: AppRuntime, values: dict[str, Any], fp: str,
    apps: Mapping[str, AppRuntime], rules: ConflictsConfig, *, now: datetime, stats: ProcessStats,
    errors: list[Any] | None = None,
) -> None:
    app, rid = rt.name, rec.app_record_id
    link = uow.link(app, rid)
    if link is not None and link["state"] not in ("active", "duplicate"):
        stats.skipped += 1  # unlinked or deleted: this record is no longer synced
        return
    how = "linked"
    keys = record_keys(values)
    if link is None:
        if rt.filter and not rt.filter.matches(values, now):
            stats.skipped += 1
            return
        found = match_record(uow, keys)
        if found.parked:
            stats.parked += 1
            if not uow.is_match_parked(app, rid):  # read again (a reconciliation): parked once
                _park(uow, app, rid, found, values, rec.modified_at)
                uow.log("conflict", app=app, app_record_id=rid,
                        reason=f"{found.how}: {len(found.parked)} candidates; parked for review")
            return
        cid, how = found.customer_id, found.how
        if cid is None:
            cid = _made_by_our_create(uow, app, values)
            how = "made_by_our_create" if cid is not None else how
        if cid is None:
            cid = new_customer_id()
            uow.new_customer(cid)
            stats.created += 1
        else:
            stats.matched += 1
        for other in found.join:
            merge_customers(uow, loser=other, winner=cid, now=now,
                            reason=f"{app} record {rid} holds what both hold ({how})")
        link = _link_record(uow, app, rid, cid, how=how)
        if found.join:
            _place_parked(uow, {cid, *found.join}, apps, rules, now=now, stats=stats)
    else:
        cid = link["customer_id"]
    base_key = _base_key(link)
    customer = uow.customer(cid)
    assert customer is not None
    _read_in_customer_terms(rt, rec, values, customer["values"], errors)
    snapshot = uow.snapshot(cid, base_key)
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
        address_apps=frozenset(name for name, other in apps.items() if other.requires_email),
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
    if rt.config.normalize_in_apps and link["state"] == "active":
        # the base holds what the app holds as typed: the plan sees it differ from the
        # normalized value and writes that (with anything else the record needs)
        new_base.update(_typed_otherwise(uow, rt, rec, values, cid))
    brings = (keys.phones or keys.handles) and not is_email_less(new_base)
    before = email_keys(uow, cid) if brings else None
    uow.set_snapshot(cid, base_key, new_base, app_fingerprint=fp, source_modified_at=rec.modified_at)
    uow.set_identities(cid, identity_values(customer["values"]) + keys.pairs())
    stats.planned += plan_customer(uow, cid, apps, now=now, reason=f"{how} via {app}")
    if before is not None:
        new_keys = Keys(phones=keys.phones - before.phones, handles=keys.handles - before.handles)
        if new_keys.phones or new_keys.handles:
            _settle_email_less(uow, cid, new_keys, apps, rules, now=now, stats=stats)


def _read_in_customer_terms(
    rt: AppRuntime, rec: AppRecord, values: dict[str, Any], known: Mapping[str, Any], errors: list[Any] | None,
) -> None:
    """What the record says, read knowing whose it is (in place):

    - a phone written without an international prefix, in a record with no country of its own,
      is read in the customer's known country (before the app's default region);
    - a one-field full name that equals the customer's first + " " + last keeps that split
      (a surname with a space stays whole).
    """
    mapping = rt.mapping
    country = known.get("address.country")
    if country and mapping.needs_customer_region(rec.fields):
        phones, phone_errors = mapping.phones_for_region(rec.fields, country)
        values.update(phones)
        reread = set(phones) | {e.field for e in phone_errors}
        for e in phone_errors:
            values.pop(e.field, None)
        if errors is not None:
            errors[:] = [e for e in errors if e.field not in reread] + phone_errors
    name_field = mapping.full_name_field
    if name_field is not None and name_field in rec.fields and (known.get("first_name") or known.get("last_name")):
        try:
            values["first_name"], values["last_name"] = mapping.by_canonical["first_name"].split_name(
                rec.fields[name_field], existing=(known.get("first_name"), known.get("last_name")))
        except MappingError:
            pass  # already refused by the first reading, which stands


_NORMALIZED_KINDS = frozenset({"email", "phone", "handle"})


def _typed_otherwise(uow: UnitOfWork, rt: AppRuntime, rec: AppRecord, values: Mapping[str, Any],
                     cid: str) -> dict[str, Any]:
    """`normalize_in_apps`: the valid emails, phones and handles this record holds written
    otherwise than their normalized form (`+98 912 …` for `+98912…`, `@Ann` for `ann`), as
    typed. An app whose records are addresses keeps its own spelling of its address, and a
    field with a parked conflict is written nowhere."""
    typed: dict[str, Any] = {}
    for fm in rt.mapping.outbound:
        if fm.spec.kind not in _NORMALIZED_KINDS or fm.part is not None or fm.app_field not in rec.fields:
            continue
        if (fm.canonical == "email" and rt.requires_email) or fm.canonical in uow.held_fields(cid):
            continue
        value = values.get(fm.canonical)
        raw = rec.fields[fm.app_field]
        if value is not None and isinstance(raw, str) and raw != fm.to_app(value):
            typed[fm.canonical] = raw
    return typed


def _link_record(uow: UnitOfWork, app: str, rid: str, cid: str, *, how: str) -> dict[str, Any]:
    """Link a record to its customer: as the customer's record in that app, or, when the
    customer already holds another live record there (a double import), as a duplicate,
    read and merged but never written, and listed for review."""
    held = uow.link_for(cid, app)
    if held is not None and held["state"] == "active" and held["app_record_id"] != rid:
        uow.add_duplicate_link(app, rid, cid)
        uow.add_conflict(kind="match", status="decided", customer_id=cid, app=app, app_record_id=rid,
                         detail={"reason": "duplicate_in_app", "duplicate_of": held["app_record_id"],
                                 "matched": how})
        uow.log("conflict", app=app, app_record_id=rid, customer_id=cid,
                reason=f"duplicate in {app} of record {held['app_record_id']} ({how}): joined, not written")
    else:
        uow.add_link(app, rid, cid)
    uow.resolve_parked_match(app, rid)
    link = uow.link(app, rid)
    assert link is not None
    return link


def _settle_email_less(
    uow: UnitOfWork, cid: str, new_keys: Keys, apps: Mapping[str, AppRuntime], rules: ConflictsConfig,
    *, now: datetime, stats: ProcessStats,
) -> None:
    """A record with an email gave customer `cid` phones or handles it did not hold: re-decide
    the email-less records of other customers that hold them (engine.match, rule 2). A record
    that now attaches to `cid` moves to it; one whose attachment has become ambiguous is parked.
    A customer left with no record is retired."""
    holders: set[str] = set()
    for kind, value in new_keys.pairs():
        holders |= uow.candidates(kind, value)
    holders.discard(cid)
    for holder in sorted(holders):
        for link, key in _records_of(uow, holder):
            snap = uow.snapshot(holder, key)
            if snap is None or not is_email_less(snap["values"]):
                continue
            keys = record_keys(snap["values"])
            if not (keys.phones & new_keys.phones or keys.handles & new_keys.handles):
                continue
            found = match_record(uow, keys)
            if found.customer_id == holder and not found.parked:
                continue
            if not found.parked and found.how.startswith("grouped"):
                continue  # still attaches to no customer with an email: its group stays
            app, rid = link["app"], link["app_record_id"]
            uow.drop_link(app, rid)
            uow.drop_snapshot(holder, key)
            if key == app:
                uow.cancel_write(holder, app)
                uow.promote_duplicate(holder, app)
            if found.parked:
                stats.parked += 1
                _park(uow, app, rid, found, snap["values"], _aware(snap["source_modified_at"]))
                uow.log("conflict", app=app, app_record_id=rid, customer_id=holder,
                        reason=f"{found.how}: {len(found.parked)} candidates; unlinked and parked for review")
                continue
            target = found.customer_id
            assert target is not None
            moved = _link_record(uow, app, rid, target, how=found.how)
            record = AppRecord(app_record_id=rid, fields={}, modified_at=_aware(snap["source_modified_at"]))
            uow.log("observed", app=app, app_record_id=rid, customer_id=target,
                    reason=f"{found.how}: moved from customer {holder}")
            _merge_moved(uow, record, moved, snap, apps, rules, now=now, stats=stats)
        _retire_if_empty(uow, holder, now=now)
        # a customer that lost its record in an app is created there (or its duplicate, now
        # promoted, written to) like any customer the app does not hold
        stats.planned += plan_customer(uow, holder, apps, now=now, reason="a record of it was parked or moved")


def _aware(at: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives them back naive)."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _park(uow: UnitOfWork, app: str, rid: str, found: Match, values: Mapping[str, Any],
          modified_at: datetime | None) -> None:
    """Park a record that could be several customers' for review. What it holds is kept with
    the review item (`loser_value`), so that it can be placed without being read again when
    the customers it could be turn out to be one."""
    uow.add_conflict(kind="match", status="parked", app=app, app_record_id=rid,
                     detail={"candidates": sorted(found.parked), "reason": found.how},
                     loser_app=app, loser_value={
                         "values": dict(values),
                         "modified_at": modified_at.isoformat() if modified_at else None})


def _place_parked(uow: UnitOfWork, customers: set[str], apps: Mapping[str, AppRuntime],
                  rules: ConflictsConfig, *, now: datetime, stats: ProcessStats) -> None:
    """Customers became one (one email shared): records parked because they could be either
    are decided again, and placed where they now belong."""
    for row in uow.parked_matches(customers):
        held = row.get("loser_value") or {}
        values = held.get("values")
        if not values or row["app"] not in apps:
            continue
        keys = record_keys(values)
        uow.prefetch(app_records=[(row["app"], row["app_record_id"])], identities=keys.pairs())
        found = match_record(uow, keys)
        if found.parked or found.customer_id is None or not found.how.startswith("matched"):
            continue
        at = held.get("modified_at")
        link = _link_record(uow, row["app"], row["app_record_id"], found.customer_id, how=found.how)
        uow.log("observed", app=row["app"], app_record_id=row["app_record_id"], customer_id=found.customer_id,
                reason=f"{found.how}: placed once the customers it could be were found to be one")
        record = AppRecord(app_record_id=row["app_record_id"], fields={},
                           modified_at=datetime.fromisoformat(at) if at else None)
        _merge_moved(uow, record, link, {"values": values, "app_fingerprint": None,
                                         "source_modified_at": record.modified_at}, apps, rules, now=now, stats=stats)


def _records_of(uow: UnitOfWork, cid: str) -> Iterator[tuple[dict[str, Any], str]]:
    """The customer's active and duplicate links with their base keys, each once, read afresh
    after each (a record moving away promotes a duplicate, whose base key then changes)."""
    seen: set[tuple[str, str]] = set()
    while True:
        links = [*uow.links_by_customer.get(cid, {}).values(), *uow.duplicates_by_customer.get(cid, {}).values()]
        todo = [lk for lk in links if lk["state"] in ("active", "duplicate")
                and (lk["app"], lk["app_record_id"]) not in seen]
        if not todo:
            return
        link = min(todo, key=lambda lk: (lk["app"], lk["app_record_id"]))
        seen.add((link["app"], link["app_record_id"]))
        yield link, _base_key(link)


def _merge_moved(
    uow: UnitOfWork, rec: AppRecord, link: Mapping[str, Any], snap: Mapping[str, Any],
    apps: Mapping[str, AppRuntime], rules: ConflictsConfig, *, now: datetime, stats: ProcessStats,
) -> None:
    """Merge the values of a record that moved to another customer as if it had been read."""
    app, cid = link["app"], link["customer_id"]
    customer = uow.customer(cid)
    assert customer is not None
    values = snap["values"]
    result = merge_record(
        app=app, incoming=values, base=None, current=customer["values"],
        provenance=customer["provenance"], modified_at=rec.modified_at, field_modified_at={},
        set_fields=apps[app].mapping.set_fields if app in apps else frozenset(), rules=rules,
    )
    if result.changes:
        customer["values"] = {**customer["values"], **result.changes}
        customer["provenance"] = {**customer["provenance"], **result.provenance}
        uow.touch_customer(cid)
    for conflict in result.conflicts:
        d = conflict.decision
        stats.conflicts += 1
        uow.add_conflict(kind="field", status="parked" if d.parked else "decided", customer_id=cid,
                         field=conflict.field, rule=d.rule, winner_app=d.winner.app,
                         winner_value=d.winner.value, loser_app=d.loser.app, loser_value=d.loser.value)
    uow.set_snapshot(cid, _base_key(link), values, app_fingerprint=snap["app_fingerprint"],
                     source_modified_at=snap["source_modified_at"])
    uow.set_identities(cid, identity_values(customer["values"]) + record_keys(values).pairs())
    stats.planned += plan_customer(uow, cid, apps, now=now, reason=f"record of {app} joined")


def _retire_if_empty(uow: UnitOfWork, cid: str, *, now: datetime) -> None:
    """A customer whose every record moved to others or was parked is no longer anyone."""
    customer = uow.customer(cid)
    if customer is None or customer["deleted_at"] is not None:
        return
    if uow.duplicates_by_customer.get(cid) or any(
            lk["state"] == "active" for lk in uow.links_by_customer.get(cid, {}).values()):
        return
    for _, app in [k for k in uow.pending_outbox if k[0] == cid]:
        uow.cancel_write(cid, app)
    customer["deleted_at"] = now
    uow.touch_customer(cid)
    uow.drop_identities(cid)
    uow.log("deleted", customer_id=cid, reason="every record of this customer joined another or was parked")


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
    if link is not None and link["state"] == "duplicate":
        # a duplicate is never written to: its going leaves the customer's record in place
        uow.drop_link(app, rid)
        uow.drop_snapshot(link["customer_id"], _base_key(link))
        uow.log("deleted", app=app, app_record_id=rid, customer_id=link["customer_id"],
                source_modified_at=rec.modified_at, reason=f"duplicate deleted in {app}")
        return
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
    # what the loser's records hold stays matchable as the winner's: its values alone may not
    # say it (a phone a record brought, since replaced by a newer one)
    carried: list[tuple[str, str]] = []
    for link in [*uow.links_by_customer.get(loser, {}).values(), *uow.duplicates_by_customer.get(loser, {}).values()]:
        app, rid = link["app"], link["app_record_id"]
        key = _base_key(link)
        snap = uow.snapshot(loser, key)
        if snap is not None and link["state"] in ("active", "duplicate"):
            carried += record_keys(snap["values"]).pairs()
        if link["state"] in ("active", "duplicate"):
            # Where the winner holds a record of that app already, the loser's is a duplicate
            # of it: it joins the winner, read but not written, and is listed for review.
            uow.drop_link(app, rid)
            moved = _link_record(uow, app, rid, winner, how=f"merged customer {loser}")
            if snap is not None:
                uow.set_snapshot(winner, _base_key(moved), snap["values"], app_fingerprint=snap["app_fingerprint"],
                                 source_modified_at=snap["source_modified_at"])
        if key == app:
            uow.cancel_write(loser, app)
        if snap is not None:
            uow.drop_snapshot(loser, key)
    values = dict(win["values"])
    for name, value in lose["values"].items():
        if isinstance(value, list):
            values[name] = sorted(set(values.get(name) or []) | set(value))
        elif values.get(name) in (None, "") and value not in (None, ""):
            values[name] = value
            win["provenance"] = {**win["provenance"], name: lose["provenance"].get(name, {})}
        elif name == CONSENT_FIELD and value not in (None, "") and not same_consent(value, values[name]) \
                and more_restrictive(value, values[name]) == value:
            # consent is a legal fact: the more restrictive of the two stands
            values[name] = value
            win["provenance"] = {**win["provenance"], name: lose["provenance"].get(name, {})}
    # no address is lost: the loser's primary joins the winner's other emails
    if lose["values"].get("email") and lose["values"]["email"] != values.get("email"):
        values["other_emails"] = sorted(set(values.get("other_emails") or []) | {lose["values"]["email"]})
    win["values"] = values
    uow.touch_customer(winner)
    uow.set_identities(winner, identity_values(lose["values"]) + identity_values(values) + carried)
    lose["deleted_at"] = now
    uow.touch_customer(loser)
    uow.drop_identities(loser)
    uow.log("decided", customer_id=winner, reason=f"customer {loser} merged into this one: {reason}")
    uow.log("deleted", customer_id=loser, reason=f"merged into {winner}: {reason}")
