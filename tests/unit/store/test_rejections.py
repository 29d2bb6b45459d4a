"""Rejections in the store: one row per (app, record, field), brought up to date, resolved,
attached to the customer once the record is linked, and read in a few queries per batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from customer_sync.errors import MappingError
from customer_sync.store.db import Store, open_store
from customer_sync.store.rejections import storable_raw_value
from customer_sync.store.tables import ChangeLogEntry, RejectionRow, stored_utc
from customer_sync.store.uow import UnitOfWork

rejections_t = RejectionRow.__table__
changelog_t = ChangeLogEntry.__table__
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = b"k" * 32


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as store:
        yield store


def _phone_error(raw: Any) -> MappingError:
    return MappingError("phone: not a phone number", field="phone", app="crm", raw_value=raw)


def _batch(store: Store, now: datetime, work: Any) -> None:
    """Run `work(uow)` in one unit of work and flush it, as the engine does per batch."""
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=KEY, now=now, run_id="r")
        work(uow)
        uow.flush()


def _rows(store: Store) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(select(rejections_t).order_by(
            rejections_t.c.app, rejections_t.c.app_record_id, rejections_t.c.field)).mappings()]


def test_a_rejection_is_attached_when_its_record_is_linked_in_a_later_batch(store: Store) -> None:
    """A record refused while unlinked (parked, filtered out) gets its customer on the rejection
    when a later batch links it, without the record being read again (an adopted record, a
    link moved by a merge)."""
    _batch(store, T0, lambda uow: uow.note_rejections("crm", "r1", [_phone_error("x1")], customer_id=None))
    assert [None] == [r["customer_id"] for r in _rows(store)]

    _batch(store, T0 + timedelta(minutes=1), lambda uow: uow.add_link("crm", "r1", "c1"))

    [row] = _rows(store)
    assert ("c1", "open", "x1") == (row["customer_id"], row["status"], row["raw_value"])


def test_the_error_entry_of_a_record_linked_in_the_same_batch_carries_the_customer(store: Store) -> None:
    """The change-log `error` entry of a record refused and then linked in one batch names the
    customer, so the customer's log shows it."""
    def work(uow: UnitOfWork) -> None:
        uow.note_rejections("crm", "r1", [_phone_error("x1")], customer_id=None)
        uow.add_link("crm", "r1", "c1")

    _batch(store, T0, work)

    with store.transaction() as conn:
        entries = conn.execute(select(changelog_t.c.kind, changelog_t.c.customer_id)).all()
    assert [("error", "c1")] == [tuple(e) for e in entries]
    assert ["c1"] == [r["customer_id"] for r in _rows(store)]


def test_a_resolved_rejection_refused_again_is_reopened_as_new(store: Store) -> None:
    """Refused, then fixed (resolved: the value forgotten), then refused again: the one row is
    open again, first seen at the new refusal."""
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    _batch(store, T0, lambda uow: uow.note_rejections("crm", "r1", [_phone_error("x1")], customer_id="c1"))
    _batch(store, t1, lambda uow: uow.note_rejections("crm", "r1", [], customer_id="c1"))
    [resolved] = _rows(store)

    _batch(store, t2, lambda uow: uow.note_rejections("crm", "r1", [_phone_error("x2")], customer_id="c1"))

    [reopened] = _rows(store)
    assert ("resolved", None, t1) == (resolved["status"], resolved["raw_value"], stored_utc(resolved["resolved_at"]))
    assert ("open", "x2", None) == (reopened["status"], reopened["raw_value"], reopened["resolved_at"])
    assert (t2, t2) == (stored_utc(reopened["first_seen_at"]), stored_utc(reopened["last_seen_at"]))


def test_each_field_of_a_record_is_its_own_rejection(store: Store) -> None:
    """Two fields refused, then one fixed: one rejection resolved, the other still open."""
    country = MappingError("address.country: not a country", field="address.country", raw_value="Tehran")
    _batch(store, T0, lambda uow: uow.note_rejections("crm", "r1", [_phone_error("x"), country], customer_id="c1"))

    _batch(store, T0 + timedelta(minutes=1),
           lambda uow: uow.note_rejections("crm", "r1", [country], customer_id="c1"))

    assert [("address.country", "open", "Tehran"), ("phone", "resolved", None)] == [
        (r["field"], r["status"], r["raw_value"]) for r in _rows(store)]


def test_a_batch_reads_rejections_in_a_few_queries_whatever_its_size(store: Store) -> None:
    """Observing 1,000 records, 3 of them refused, costs one query per 400 records and one
    insert: no statement per record."""
    statements: list[str] = []

    def work(uow: UnitOfWork) -> None:
        event.listen(uow.conn, "before_cursor_execute",
                     lambda _c, _cur, statement, *_a: statements.append(statement))
        for i in range(1000):
            errors = [_phone_error(f"x{i}")] if i % 400 == 7 else []
            uow.note_rejections("crm", f"r{i:04d}", errors, customer_id=f"c{i}")

    _batch(store, T0, work)

    touching = [s for s in statements if "rejections" in s]
    assert 3 == sum(s.lstrip().upper().startswith("SELECT") for s in touching)
    assert 1 == sum(s.lstrip().upper().startswith("INSERT") for s in touching)
    assert len(touching) == 4
    assert 3 == len(_rows(store))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0912 345", "0912 345"),
        (["a", 1], ["a", 1]),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01 00:00:00+00:00"),
        ("x" * 5000, "x" * 2000 + "…"),
    ],
    ids=["text", "json list", "not json", "very long"],
)
def test_raw_values_are_stored_as_json_the_column_can_hold(raw: Any, expected: Any) -> None:
    """A raw value is kept as the app sent it when it is JSON, as text otherwise, and cut when
    very long."""
    assert expected == storable_raw_value(raw)


def test_a_very_long_reason_is_cut_to_fit_its_column(store: Store) -> None:
    """A reason longer than its column (a transform's long message) is stored cut, on
    PostgreSQL too, where an over-long value would fail the whole batch."""
    long_error = MappingError("phone: " + "why " * 400, field="phone", raw_value="x")

    _batch(store, T0, lambda uow: uow.note_rejections("crm", "r1", [long_error], customer_id=None))

    [row] = _rows(store)
    assert str(long_error)[:1000] == row["reason"]


def test_records_linked_in_an_app_without_rejections_are_not_looked_up(store: Store) -> None:
    """Linking 1,000 records of an app that has no rejection (the records we create on an
    initial pull) costs one small query, not a lookup of every record."""
    _batch(store, T0, lambda uow: uow.note_rejections("crm", "r1", [_phone_error("x")], customer_id=None))
    statements: list[str] = []

    def work(uow: UnitOfWork) -> None:
        event.listen(uow.conn, "before_cursor_execute",
                     lambda _c, _cur, statement, *_a: statements.append(statement))
        for i in range(1000):
            uow.add_link("shop", f"s{i}", f"c{i}")
        uow.add_link("crm", "r1", "c1")

    _batch(store, T0 + timedelta(minutes=1), work)

    touching = [s for s in statements if "rejections" in s]
    assert 1 == sum("IN (" in s.upper() for s in touching), touching  # crm's one record
    assert ["c1"] == [r["customer_id"] for r in _rows(store)]
