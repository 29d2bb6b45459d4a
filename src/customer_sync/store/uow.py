"""Unit of work: one batch's view of the store, loaded in a few queries, written back in bulk.

Processing a batch of inbox items touches customers, links, identities, bases, the change log
and the outbox. Doing that row by row costs a round trip per row; the unit of work prefetches
what the batch needs (`prefetch`), serves reads from memory so later items in the batch see the
effects of earlier ones, and flushes every change with executemany in the caller's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update

from customer_sync.canonical import identity_hash
from customer_sync.logs import REDACTED
from customer_sync.store.bulk import insert_rows
from customer_sync.store.rejections import RejectionBook, storable_raw_value
from customer_sync.store.tables import (
    ChangeLogEntry,
    ConflictRow,
    CustomerRow,
    IdentityRow,
    LinkRow,
    OutboxItem,
    PendingDelete,
    SnapshotRow,
)

__all__ = ["UnitOfWork", "duplicate_base"]

log = structlog.get_logger("customer_sync.engine")

customers_t = CustomerRow.__table__
identities_t = IdentityRow.__table__
links_t = LinkRow.__table__
snapshots_t = SnapshotRow.__table__
changelog_t = ChangeLogEntry.__table__
outbox_t = OutboxItem.__table__
conflicts_t = ConflictRow.__table__
pending_deletes_t = PendingDelete.__table__

_CHUNK = 400  # keeps IN lists under SQLite's variable limit


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _in(column: Any) -> Any:
    """`column IN :values`, the list expanded at execution."""
    return column.in_(bindparam("values", expanding=True))


# The batch's reads, built once. A statement built for every query cost ~0.15 ms of SQLAlchemy
# construction and cache-key work more than running a prebuilt one: on an initial HubSpot pull
# (a transaction per page or two) that was a tenth of deciding each batch. The IN lists expand
# at execution (chunks of `_CHUNK`); compiled forms stay in the engine's cache.
_LINKS_OF_RECORDS = select(links_t).where(links_t.c.app == bindparam("key"), _in(links_t.c.app_record_id))
# (kind, value_hash) is the primary key's prefix: an IN on the pair is an index search, where
# an IN on value_hash alone scans the whole table.
_IDENTITIES_BY_HASH = select(identities_t).where(
    identities_t.c.kind == bindparam("key"), _in(identities_t.c.value_hash))
_SNAPSHOT_PAIRS = (snapshots_t.c.app == bindparam("key"), _in(snapshots_t.c.customer_id))
_SNAPSHOTS_OF_PAIRS = select(snapshots_t).where(*_SNAPSHOT_PAIRS)
_DELETE_SNAPSHOTS_OF_PAIRS = delete(snapshots_t).where(*_SNAPSHOT_PAIRS)
_CUSTOMERS = select(customers_t).where(_in(customers_t.c.customer_id))
_LINKS_OF_CUSTOMERS = select(links_t).where(_in(links_t.c.customer_id))
_SNAPSHOTS_OF_CUSTOMERS = select(snapshots_t).where(_in(snapshots_t.c.customer_id))
_HELD_FIELDS = select(conflicts_t.c.customer_id, conflicts_t.c.field).where(
    _in(conflicts_t.c.customer_id), conflicts_t.c.status == "parked", conflicts_t.c.kind == "field")
_IDENTITIES_OF_CUSTOMERS = select(identities_t).where(_in(identities_t.c.customer_id))
_PENDING_OUTBOX = select(outbox_t).where(_in(outbox_t.c.customer_id), outbox_t.c.state == "pending")
_CREATES_LEFT_SENDING = select(outbox_t).where(  # ix_outbox_app_state
    outbox_t.c.app == bindparam("app"), outbox_t.c.state == "sending", outbox_t.c.op == "create")
_CREATES_SENT_UNANSWERED = select(outbox_t).where(  # ix_outbox_uncertain, partial
    outbox_t.c.app == bindparam("app"), outbox_t.c.sent_at.is_not(None),
    outbox_t.c.state == "pending", outbox_t.c.op == "create")


def _pair_params(pairs: Iterable[tuple[Any, Any]], *, group_first: bool) -> Iterable[dict[str, Any]]:
    """Parameters of a statement matching (a, b) pairs as `group = :key AND other IN :values`,
    chunked.

    SQLite (3.40 here) answers a row-value `(a, b) IN (VALUES ...)` with a full table scan;
    one equality and a plain IN use the primary-key index.
    """
    groups: dict[Any, list[Any]] = {}
    for a, b in pairs:
        key, value = (a, b) if group_first else (b, a)
        groups.setdefault(key, []).append(value)
    for key, values in groups.items():
        for chunk in _chunks(sorted(set(values))):
            yield {"key": key, "values": chunk}


def duplicate_base(app: str, app_record_id: str) -> str:
    """Where the base of a `duplicate` record of `app` is kept (snapshots are keyed by customer
    and app, and the customer's active record of that app holds the app's own key)."""
    return f"{app}#{hashlib.sha256(app_record_id.encode()).hexdigest()[:16]}"


class UnitOfWork:
    """The batch's in-memory view of the store; `flush()` writes it back."""

    def __init__(self, conn: Connection, *, identity_key: bytes, now: datetime, run_id: str) -> None:
        self.conn = conn
        self.key = identity_key
        self.now = now
        self.run_id = run_id
        self.links: dict[tuple[str, str], dict[str, Any]] = {}  # (app, rid) -> row
        self._links_asked: set[tuple[str, str]] = set()  # (app, rid) looked up, found or not
        self.links_by_customer: dict[str, dict[str, dict[str, Any]]] = {}  # cid -> app -> row
        # cid -> (app, rid) -> row, of the customer's records in state `duplicate`
        self.duplicates_by_customer: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.customers: dict[str, dict[str, Any] | None] = {}
        self.snapshots: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.identities: dict[tuple[str, bytes], set[str]] = {}  # (kind, hash) -> cids
        self.pending_outbox: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.held: dict[str, set[str]] = {}  # customer -> fields with a parked conflict
        self._snap_in_db: set[tuple[str, str]] = set()  # bases that have a row to replace
        self._hashes: dict[tuple[str, str], bytes] = {}  # identity -> keyed hash, per batch
        self._uncertain_creates: dict[str, dict[str, dict[str, Any]]] = {}  # app -> cid -> row
        # write sets
        self._new_customers: set[str] = set()
        self._dirty_customers: set[str] = set()
        self._new_links: dict[tuple[str, str], dict[str, Any]] = {}
        self._dirty_links: set[tuple[str, str]] = set()
        self._dropped_links: set[tuple[str, str]] = set()
        self._dirty_snapshots: set[tuple[str, str]] = set()
        self._dropped_snapshots: set[tuple[str, str]] = set()
        self._new_identities: list[dict[str, Any]] = []
        self._dropped_identities: set[str] = set()
        self._log: list[dict[str, Any]] = []
        self._conflicts: list[dict[str, Any]] = []
        self._outbox_new: list[dict[str, Any]] = []
        self._outbox_update: dict[int, dict[str, Any]] = {}
        self._outbox_drop: set[int] = set()
        self._delete_requests: list[dict[str, Any]] = []
        self._resolved_matches: set[tuple[str, str]] = set()
        self.rejections = RejectionBook(now)
        # change-log `error` entries of records not linked yet: given the customer on link
        self._errors_unlinked: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def _hash(self, kind: str, value: str) -> bytes:
        """The keyed hash of an identity, computed once per batch (it is asked for 3+ times)."""
        h = self._hashes.get((kind, value))
        if h is None:
            h = self._hashes[(kind, value)] = identity_hash(self.key, kind, value)
        return h

    def remember_hashes(self, hashes: Iterable[tuple[str, str, bytes]]) -> None:
        """Take (kind, value, hash) triples already worked out with this unit's identity key
        (by the normalizing worker), so they are not hashed again here."""
        for kind, value, h in hashes:
            self._hashes[(kind, value)] = h

    # -- loading ---------------------------------------------------------------------------------

    def prefetch_links(self, app_records: list[tuple[str, str]]) -> None:
        """Load the links of these records, and nothing else. A record asked for before is not
        asked for again, found or not (the echo check and the processing both ask)."""
        want = [k for k in app_records if k not in self.links and k not in self._links_asked]
        self._links_asked.update(want)
        for params in _pair_params(want, group_first=True):
            for row in self.conn.execute(_LINKS_OF_RECORDS, params).mappings():
                self._remember_stored_link(dict(row))

    def prefetch(self, *, app_records: list[tuple[str, str]], identities: list[tuple[str, str]]) -> None:
        """Load links for the batch's records, the customers matching its identities, and
        everything those customers have (links, bases, pending writes)."""
        self.prefetch_links(app_records)
        hashes = {(kind, self._hash(kind, value)) for kind, value in identities}
        want_h = [h for h in hashes if h not in self.identities]
        for h in want_h:
            self.identities[h] = set()
        for params in _pair_params(want_h, group_first=True):
            for row in self.conn.execute(_IDENTITIES_BY_HASH, params).mappings():
                self.identities.setdefault((row["kind"], row["value_hash"]), set()).add(row["customer_id"])
        cids = {self.links[k]["customer_id"] for k in app_records if k in self.links}
        for h in hashes:
            cids |= self.identities.get(h, set())
        self.load_customers(cids)

    def load_customers(self, cids: Iterable[str]) -> None:
        """Load customers, their links, bases and pending outbox rows."""
        want = [c for c in cids if c not in self.customers]
        if not want:
            return
        for cid in want:
            self.customers[cid] = None
            self.links_by_customer.setdefault(cid, {})
        for chunk in _chunks(want):
            ids = {"values": chunk}
            for row in self.conn.execute(_CUSTOMERS, ids).mappings():
                self.customers[row["customer_id"]] = dict(row)
            for row in self.conn.execute(_LINKS_OF_CUSTOMERS, ids).mappings():
                self._remember_stored_link(dict(row))
            for row in self.conn.execute(_SNAPSHOTS_OF_CUSTOMERS, ids).mappings():
                key = (row["customer_id"], row["app"])
                if key in self._dirty_snapshots or key in self._dropped_snapshots:
                    continue  # what this batch did wins over what the store still says
                self.snapshots[key] = dict(row)
                self._snap_in_db.add(key)
            for row in self.conn.execute(_HELD_FIELDS, ids).mappings():
                self.held.setdefault(row["customer_id"], set()).add(row["field"])
            for row in self.conn.execute(_IDENTITIES_OF_CUSTOMERS, ids).mappings():
                self.identities.setdefault((row["kind"], row["value_hash"]), set()).add(row["customer_id"])
            for row in self.conn.execute(_PENDING_OUTBOX, ids).mappings():
                self.pending_outbox[(row["customer_id"], row["app"])] = dict(row)

    def load_bases(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Load only what confirming writes needs: the links of these customers and the bases
        of these (customer, app) pairs. Much cheaper than `load_customers` on the hot path;
        `customer()` still loads a whole customer lazily when asked."""
        pairs = [p for p in set(pairs) if p not in self.snapshots]
        cids = sorted({cid for cid, _ in pairs} - set(self.links_by_customer))
        for cid in cids:
            self.links_by_customer.setdefault(cid, {})
        for chunk in _chunks(cids):
            for row in self.conn.execute(_LINKS_OF_CUSTOMERS, {"values": chunk}).mappings():
                self._remember_stored_link(dict(row))
        for pair in pairs:
            self.snapshots[pair] = None
        for params in _pair_params(pairs, group_first=False):
            for row in self.conn.execute(_SNAPSHOTS_OF_PAIRS, params).mappings():
                self.snapshots[(row["customer_id"], row["app"])] = dict(row)
                self._snap_in_db.add((row["customer_id"], row["app"]))

    def _remember_stored_link(self, row: dict[str, Any]) -> None:
        """Remember a link read from the store, unless this batch already added, changed or
        dropped it: what the batch did wins over what the store still says."""
        key = (row["app"], row["app_record_id"])
        if key in self._new_links or key in self._dirty_links or key in self._dropped_links:
            return
        self._remember_link(row)

    def _remember_link(self, row: dict[str, Any]) -> None:
        key = (row["app"], row["app_record_id"])
        self.links[key] = row
        if row["state"] == "duplicate":
            self.duplicates_by_customer.setdefault(row["customer_id"], {})[key] = row
        else:
            self.links_by_customer.setdefault(row["customer_id"], {})[row["app"]] = row

    # -- reads -------------------------------------------------------------------------------------

    def link(self, app: str, app_record_id: str) -> dict[str, Any] | None:
        return self.links.get((app, app_record_id))

    def link_for(self, customer_id: str, app: str) -> dict[str, Any] | None:
        return self.links_by_customer.get(customer_id, {}).get(app)

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        if customer_id not in self.customers:
            self.load_customers([customer_id])
        return self.customers.get(customer_id)

    def snapshot(self, customer_id: str, app: str) -> dict[str, Any] | None:
        return self.snapshots.get((customer_id, app))

    def candidates(self, kind: str, value: str) -> set[str]:
        """Live customers holding this identity."""
        cids = self.identities.get((kind, self._hash(kind, value)), set())
        return {c for c in cids if (row := self.customers.get(c)) is not None and row["deleted_at"] is None}

    def pending(self, customer_id: str, app: str) -> dict[str, Any] | None:
        return self.pending_outbox.get((customer_id, app))

    # -- writes ------------------------------------------------------------------------------------

    def new_customer(self, customer_id: str) -> dict[str, Any]:
        row = {
            "customer_id": customer_id, "values": {}, "provenance": {},
            "created_at": self.now, "updated_at": self.now, "deleted_at": None,
        }
        self.customers[customer_id] = row
        self.links_by_customer.setdefault(customer_id, {})
        self._new_customers.add(customer_id)
        return row

    def touch_customer(self, customer_id: str) -> None:
        row = self.customers[customer_id]
        assert row is not None
        row["updated_at"] = self.now
        if customer_id not in self._new_customers:
            self._dirty_customers.add(customer_id)

    def set_identities(self, customer_id: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Add identities the customer does not have yet (old ones stay matchable)."""
        for kind, value in pairs:
            h = (kind, self._hash(kind, value))
            holders = self.identities.setdefault(h, set())
            if customer_id not in holders:
                holders.add(customer_id)
                self._new_identities.append({"kind": kind, "value_hash": h[1], "customer_id": customer_id})

    def drop_identities(self, customer_id: str) -> None:
        for holders in self.identities.values():
            holders.discard(customer_id)
        self._dropped_identities.add(customer_id)

    def add_duplicate_link(self, app: str, app_record_id: str, customer_id: str) -> None:
        """Link a further record of an app to a customer that already holds one there (a
        double import): it is read and merged, never written to."""
        row = {"app": app, "app_record_id": app_record_id, "customer_id": customer_id,
               "state": "duplicate", "linked_at": self.now}
        self._attach_rejections(app, app_record_id, customer_id)
        self._remember_link(row)
        # a link dropped by this batch stays dropped: the flush deletes it before inserting this
        self._new_links[(app, app_record_id)] = row

    def promote_duplicate(self, customer_id: str, app: str) -> dict[str, Any] | None:
        """The customer's record in `app` went: its first duplicate there (if any) becomes the
        record it is written to, its base moving with it."""
        if self.link_for(customer_id, app) is not None:
            return None
        dups = sorted(k for k in self.duplicates_by_customer.get(customer_id, {}) if k[0] == app)
        if not dups:
            return None
        key = dups[0]
        row = self.duplicates_by_customer[customer_id].pop(key)
        row["state"] = "active"
        self.links_by_customer.setdefault(customer_id, {})[app] = row
        if key not in self._new_links:
            self._dirty_links.add(key)
        snap = self.snapshots.get((customer_id, duplicate_base(*key)))
        if snap is not None:
            self.set_snapshot(customer_id, app, snap["values"], app_fingerprint=snap["app_fingerprint"],
                              source_modified_at=snap["source_modified_at"])
            self.drop_snapshot(customer_id, duplicate_base(*key))
        return row

    def add_link(self, app: str, app_record_id: str, customer_id: str) -> None:
        self._attach_rejections(app, app_record_id, customer_id)
        old = self.link_for(customer_id, app)
        if old is not None and old["app_record_id"] == app_record_id:
            # Already linked (e.g. the echo of an unconfirmed create was matched first).
            if old["state"] != "active":
                self.set_link_state(app, app_record_id, "active")
            return
        if old is not None:  # an unlinked or gone record is replaced by the new one
            self.drop_link(app, old["app_record_id"])
        row = {"app": app, "app_record_id": app_record_id, "customer_id": customer_id,
               "state": "active", "linked_at": self.now}
        self._remember_link(row)
        # a link dropped by this batch stays dropped: the flush deletes it before inserting this
        self._new_links[(app, app_record_id)] = row

    def set_link_state(self, app: str, app_record_id: str, state: str) -> None:
        row = self.links[(app, app_record_id)]
        row["state"] = state
        if (app, app_record_id) not in self._new_links:
            self._dirty_links.add((app, app_record_id))

    def drop_link(self, app: str, app_record_id: str) -> None:
        row = self.links.pop((app, app_record_id), None)
        if row is not None and row["state"] == "duplicate":
            self.duplicates_by_customer.get(row["customer_id"], {}).pop((app, app_record_id), None)
        elif row is not None:
            self.links_by_customer.get(row["customer_id"], {}).pop(app, None)
        if self._new_links.pop((app, app_record_id), None) is None:
            self._dropped_links.add((app, app_record_id))
        self._dirty_links.discard((app, app_record_id))

    def set_snapshot(
        self, customer_id: str, app: str, values: Mapping[str, Any], *,
        app_fingerprint: str | None, source_modified_at: datetime | None = None,
    ) -> None:
        self.snapshots[(customer_id, app)] = {
            "customer_id": customer_id, "app": app, "values": dict(values),
            "app_fingerprint": app_fingerprint, "source_modified_at": source_modified_at,
            "updated_at": self.now,
        }
        self._dirty_snapshots.add((customer_id, app))
        self._dropped_snapshots.discard((customer_id, app))

    def drop_snapshot(self, customer_id: str, app: str) -> None:
        self.snapshots[(customer_id, app)] = None
        self._dirty_snapshots.discard((customer_id, app))
        self._dropped_snapshots.add((customer_id, app))

    def log(self, kind: str, *, app: str | None = None, app_record_id: str | None = None,
            customer_id: str | None = None, diff: Any = None, reason: str | None = None,
            source_modified_at: datetime | None = None) -> None:
        """Append to the change log (flushed with the batch)."""
        self._log.append({
            "at": self.now, "kind": kind, "app": app, "app_record_id": app_record_id,
            "customer_id": customer_id, "diff": diff, "source_modified_at": source_modified_at,
            "reason": reason[:1000] if reason else None, "run_id": self.run_id,
        })

    def note_rejections(self, app: str, app_record_id: str, errors: Iterable[Any], *,
                        customer_id: str | None) -> None:
        """Record what normalizing this record refused (`MappingError`s, often none): an
        `error` entry in the change log and a warning line per refused field, and the
        rejections, written with the batch. Call it for every record normalized: a field
        refused before and valid (or absent) now is resolved.

        The raw value goes to the rejection only; the warning names the field and the reason.
        """
        refused: dict[str, tuple[str, Any]] = {}
        for err in errors:
            field, reason = err.field or "?", str(err)[:1000]
            refused[field] = (reason, storable_raw_value(err.raw_value))
            self.log("error", app=app, app_record_id=app_record_id, customer_id=customer_id,
                     diff={"fields": [err.field]}, reason=reason)
            if customer_id is None:
                self._errors_unlinked.setdefault((app, app_record_id), []).append(self._log[-1])
            log.warning("record.value_rejected", app=app, app_record_id=app_record_id,
                        customer_id=customer_id, field=field, reason=reason, value=REDACTED)
        self.rejections.observe(app, app_record_id, refused, customer_id=customer_id)

    def note_written(self, app: str, app_record_id: str, fields: Iterable[str]) -> None:
        """The app confirmed our write of these canonical fields to this record: values it
        held there that were refused are gone, so their rejections are resolved."""
        self.rejections.written(app, app_record_id, fields)

    def _attach_rejections(self, app: str, app_record_id: str, customer_id: str) -> None:
        """The record is linked: its rejections and this batch's error entries are this
        customer's."""
        self.rejections.linked(app, app_record_id, customer_id)
        for entry in self._errors_unlinked.pop((app, app_record_id), ()):
            entry["customer_id"] = customer_id

    def held_fields(self, customer_id: str) -> set[str]:
        """Fields of this customer with a parked conflict: written nowhere until resolved."""
        return self.held.get(customer_id, set())

    def release_field(self, customer_id: str, field: str) -> None:
        self.held.get(customer_id, set()).discard(field)

    def uncertain_creates(self, app: str) -> dict[str, dict[str, Any]]:
        """Creates in this app that may have reached it unanswered (left `sending` by a crash,
        or sent without a clear answer), by customer id.

        Read once per batch and app, with two index searches: there are none unless a send went
        wrong, and they are asked for only when a record is first linked or is new."""
        found = self._uncertain_creates.get(app)
        if found is None:
            found = self._uncertain_creates[app] = {}
            for query in (_CREATES_LEFT_SENDING, _CREATES_SENT_UNANSWERED):
                for row in self.conn.execute(query, {"app": app}).mappings():
                    found[row["customer_id"]] = dict(row)
        return found

    def is_match_parked(self, app: str, app_record_id: str) -> bool:
        """This record already waits for review as an ambiguous match (in the store, or added
        by this batch)."""
        if any(c["kind"] == "match" and c["app"] == app and c["app_record_id"] == app_record_id
               for c in self._conflicts):
            return True
        return self.conn.execute(select(conflicts_t.c.id).where(
            conflicts_t.c.kind == "match", conflicts_t.c.status == "parked",
            conflicts_t.c.app == app, conflicts_t.c.app_record_id == app_record_id).limit(1)).first() is not None

    def parked_matches(self, candidates: set[str]) -> list[dict[str, Any]]:
        """Records parked for review as an ambiguous match that could be one of `candidates`
        (in the store or added by this batch, not resolved since)."""
        stored = [dict(r) for r in self.conn.execute(select(conflicts_t).where(
            conflicts_t.c.status == "parked", conflicts_t.c.kind == "match")).mappings()]
        # a stored row this batch resolved is done with; one this batch added is not
        rows = [r for r in stored if (r["app"], r["app_record_id"]) not in self._resolved_matches]
        rows += [c for c in self._conflicts if c["kind"] == "match" and c["status"] == "parked"]
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            if set((row.get("detail") or {}).get("candidates") or ()) & candidates:
                out[(row["app"], row["app_record_id"])] = row
        return [out[k] for k in sorted(out)]

    def resolve_parked_match(self, app: str, app_record_id: str) -> None:
        """The record is linked now: its review item as an ambiguous match is resolved."""
        self._conflicts = [c for c in self._conflicts if not (
            c["kind"] == "match" and c["status"] == "parked" and c["app"] == app
            and c["app_record_id"] == app_record_id)]
        self._resolved_matches.add((app, app_record_id))

    def add_conflict(self, **row: Any) -> None:
        if row.get("kind") == "field" and row.get("status") == "parked" and row.get("customer_id"):
            self.held.setdefault(row["customer_id"], set()).add(row["field"])
        row.setdefault("created_at", self.now)
        for key in ("customer_id", "field", "rule", "winner_app", "winner_value", "loser_app",
                    "loser_value", "app", "app_record_id", "detail", "resolved_at"):
            row.setdefault(key, None)
        self._conflicts.append(row)

    def request_delete(self, customer_id: str, app: str, app_record_id: str) -> None:
        """Queue a delete for an operator's approval (delete policy `approve`)."""
        self._delete_requests.append({
            "customer_id": customer_id, "app": app, "app_record_id": app_record_id,
            "status": "pending", "requested_at": self.now, "decided_at": None,
        })

    def plan_write(self, customer_id: str, app: str, *, op: str, fields: Mapping[str, Any],
                   app_record_id: str | None, reason: str) -> None:
        """Upsert the pending write of this customer to this app (one pending row per pair)."""
        current = self.pending_outbox.get((customer_id, app))
        if current is not None:
            current.update(op=op, fields=dict(fields), app_record_id=app_record_id, reason=reason)
            if current.get("seq") is not None:
                self._outbox_update[current["seq"]] = current
            return
        row = {"customer_id": customer_id, "app": app, "op": op, "app_record_id": app_record_id,
               "fields": dict(fields), "reason": reason, "state": "pending", "attempts": 0,
               "next_attempt_at": None, "created_at": self.now, "error": None}
        self.pending_outbox[(customer_id, app)] = row
        self._outbox_new.append(row)

    def cancel_write(self, customer_id: str, app: str) -> None:
        current = self.pending_outbox.pop((customer_id, app), None)
        if current is None:
            return
        if current.get("seq") is not None:
            self._outbox_update.pop(current["seq"], None)
            self._outbox_drop.add(current["seq"])
        else:
            self._outbox_new.remove(current)

    # -- flushing ----------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything back in the caller's transaction; returns the outbox rows planned."""
        c = self.conn
        self._insert_decided_conflicts()
        if self._dropped_identities:
            for chunk in _chunks(sorted(self._dropped_identities)):
                c.execute(delete(identities_t).where(identities_t.c.customer_id.in_(chunk)))
        if self._new_customers:
            insert_rows(c, customers_t, [self.customers[k] for k in self._new_customers])
        if self._dirty_customers:
            c.execute(
                update(customers_t).where(customers_t.c.customer_id == bindparam("k")),
                [_rekey(self.customers[k], "customer_id") for k in self._dirty_customers],
            )
        new_ids = [r for r in self._new_identities if r["customer_id"] not in self._dropped_identities]
        if new_ids:
            insert_rows(c, identities_t, new_ids)
        if self._dropped_links:
            for app, rid in self._dropped_links:
                c.execute(delete(links_t).where(and_(links_t.c.app == app, links_t.c.app_record_id == rid)))
        if self._new_links:
            insert_rows(c, links_t, list(self._new_links.values()))
        for app, rid in self._dirty_links:
            c.execute(update(links_t).where(and_(links_t.c.app == app, links_t.c.app_record_id == rid))
                      .values(state=self.links[(app, rid)]["state"]))
        self._flush_snapshots()
        if self._log:
            insert_rows(c, changelog_t, self._log)
        by_app: dict[str, list[str]] = {}
        for app, rid in self._resolved_matches:
            by_app.setdefault(app, []).append(rid)
        for app, rids in sorted(by_app.items()):
            # a search of the few parked rows (ix_conflicts_status), once per app and batch
            for chunk in _chunks(sorted(rids)):
                c.execute(update(conflicts_t).where(
                    conflicts_t.c.status == "parked", conflicts_t.c.kind == "match",
                    conflicts_t.c.app == app, conflicts_t.c.app_record_id.in_(chunk),
                ).values(status="resolved", resolved_at=self.now, rule="matched"))
        if self._conflicts:
            insert_rows(c, conflicts_t, self._conflicts)
        if self._delete_requests:
            insert_rows(c, pending_deletes_t, self._delete_requests)
        if self._outbox_drop:
            c.execute(delete(outbox_t).where(outbox_t.c.seq.in_(sorted(self._outbox_drop))))
        for seq, row in self._outbox_update.items():
            c.execute(update(outbox_t).where(outbox_t.c.seq == seq).values(
                op=row["op"], fields=row["fields"], app_record_id=row["app_record_id"], reason=row["reason"]))
        if self._outbox_new:
            insert_rows(c, outbox_t, self._outbox_new)
        self.rejections.flush(c)
        return len(self._outbox_new) + len(self._outbox_update)

    def _insert_decided_conflicts(self) -> None:
        """Insert the field conflicts a rule decided, first, and name each in the provenance of
        the field it decided (`conflict_id`, what `explain` shows), before customers are written."""
        decided = [r for r in self._conflicts
                   if r["kind"] == "field" and r["status"] == "decided" and r["customer_id"]]
        if not decided:
            return
        taken = {id(r) for r in decided}
        self._conflicts = [r for r in self._conflicts if id(r) not in taken]
        ids = self.conn.execute(insert(conflicts_t).returning(conflicts_t.c.id, sort_by_parameter_order=True),
                                decided).scalars().all()
        for row, conflict_id in zip(decided, ids, strict=True):
            customer = self.customers.get(row["customer_id"])
            if customer is None:
                continue
            held = customer["provenance"].get(row["field"])
            if held and held.get("rule") == row["rule"] and held.get("app") == row["winner_app"]:
                customer["provenance"] = {**customer["provenance"],
                                          row["field"]: {**held, "conflict_id": conflict_id}}
                self.touch_customer(row["customer_id"])

    def _flush_snapshots(self) -> None:
        c = self.conn
        # Only bases that exist in the database need deleting before the new ones go in.
        keys = sorted((self._dirty_snapshots | self._dropped_snapshots) & self._snap_in_db)
        for params in _pair_params(keys, group_first=False):
            c.execute(_DELETE_SNAPSHOTS_OF_PAIRS, params)
        rows = [self.snapshots[k] for k in self._dirty_snapshots if self.snapshots.get(k) is not None]
        if rows:
            insert_rows(c, snapshots_t, rows)


def _rekey(row: Mapping[str, Any], key: str) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != key}
    out["k"] = row[key]
    return out
