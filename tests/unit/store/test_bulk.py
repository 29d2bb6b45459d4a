"""`insert_rows` stores exactly what SQLAlchemy's own executemany stores, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from customer_sync.store.bulk import insert_rows
from customer_sync.store.db import open_store
from customer_sync.store.tables import ChangeLogEntry, CustomerRow, OutboxItem

customers_t = CustomerRow.__table__
changelog_t = ChangeLogEntry.__table__
outbox_t = OutboxItem.__table__

AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def customer(cid: str, **values: object) -> dict:
    return {"customer_id": cid, "values": dict(values), "provenance": {"email": {"app": "crm", "at": None}},
            "created_at": AT, "updated_at": AT + timedelta(seconds=1), "deleted_at": None}


def log_row(kind: str, diff: object) -> dict:
    return {"at": AT, "kind": kind, "app": "crm", "app_record_id": "7", "customer_id": "c1", "diff": diff,
            "source_modified_at": datetime(2026, 2, 1, 9, 0, tzinfo=timezone(timedelta(hours=2))),
            "reason": "why", "run_id": "r"}


def read(store, table, order) -> list[dict]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(order)).mappings()]


def test_rows_read_back_as_sqlalchemy_would_have_stored_them(store_url):
    """JSON (dicts, lists, None and text), aware datetimes, NULLs and unicode: the fast path and
    SQLAlchemy's executemany store the same thing."""
    store = open_store(store_url)
    try:
        rows = [customer("a", email="zoë@example.com", tags=["b", "a"]), customer("b"),
                customer("c", phone=None, custom={"n": 1.5, "ok": True})]
        with store.transaction() as conn:
            insert_rows(conn, customers_t, rows[:2])
            conn.execute(insert(customers_t), [dict(rows[2], customer_id="c-sa")])
            insert_rows(conn, customers_t, [dict(rows[2])])
            conn.execute(insert(customers_t), [dict(rows[0], customer_id="a-sa")])
        got = {r["customer_id"]: r for r in read(store, customers_t, customers_t.c.customer_id)}
        assert {k: v for k, v in got["a"].items() if k != "customer_id"} == {
            k: v for k, v in got["a-sa"].items() if k != "customer_id"}
        assert {k: v for k, v in got["c"].items() if k != "customer_id"} == {
            k: v for k, v in got["c-sa"].items() if k != "customer_id"}
        assert {"email": "zoë@example.com", "tags": ["b", "a"]} == got["a"]["values"]
        assert got["b"]["deleted_at"] is None

        with store.transaction() as conn:
            insert_rows(conn, changelog_t, [log_row("observed", {"email": [None, "x"]}), log_row("note", None)])
            conn.execute(insert(changelog_t), [log_row("observed", {"email": [None, "x"]}), log_row("note", None)])
        mine, theirs = (lambda rs: (rs[:2], rs[2:]))(read(store, changelog_t, changelog_t.c.seq))
        strip = lambda r: {k: v for k, v in r.items() if k != "seq"}  # noqa: E731
        assert [strip(r) for r in mine] == [strip(r) for r in theirs]
    finally:
        store.close()


def test_equal_instants_in_other_zones_are_stored_as_sqlalchemy_stores_each(store_url):
    """Date-time text is remembered within a call; an equal instant in another zone is not
    taken for the one seen before."""
    store = open_store(store_url)
    try:
        utc = datetime(2026, 2, 1, 7, 0, tzinfo=UTC)
        plus2 = utc.astimezone(timezone(timedelta(hours=2)))
        assert utc == plus2
        rows = [log_row("a", None) | {"source_modified_at": utc}, log_row("b", None) | {"source_modified_at": plus2}]
        with store.transaction() as conn:
            insert_rows(conn, changelog_t, rows)
            conn.execute(insert(changelog_t), rows)
        got = [r["source_modified_at"] for r in read(store, changelog_t, changelog_t.c.seq)]
        assert got[:2] == got[2:]
    finally:
        store.close()


def test_a_column_default_the_rows_leave_out_is_still_filled(sqlite_url):
    """`attempts` has a Python-side default: rows without it get it, as with SQLAlchemy."""
    store = open_store(sqlite_url)
    try:
        row = {"customer_id": "c", "app": "crm", "op": "create", "app_record_id": None, "fields": {"a": 1},
               "reason": "r", "state": "pending", "next_attempt_at": None, "created_at": AT, "error": None}
        with store.transaction() as conn:
            insert_rows(conn, outbox_t, [row])
        assert [0] == [r["attempts"] for r in read(store, outbox_t, outbox_t.c.seq)]
    finally:
        store.close()


def test_a_row_missing_a_key_of_the_first_is_refused(sqlite_url):
    store = open_store(sqlite_url)
    try:
        first = customer("a")
        second = {k: v for k, v in customer("b").items() if k != "values"}
        with pytest.raises(KeyError, match="values"), store.transaction() as conn:
            insert_rows(conn, customers_t, [first, second])
        assert [] == read(store, customers_t, customers_t.c.customer_id)
    finally:
        store.close()


def test_sqlite_date_time_text_is_exactly_sqlalchemys(sqlite_url):
    """The date-time fast path writes the very text SQLAlchemy's SQLite type writes: early
    years, whole seconds, offsets (left out of the text), naive values and None."""
    store = open_store(sqlite_url)
    try:
        values = [
            datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59, 999999), datetime(2026, 3, 1, 12, 0),
            datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 0, 0, 120000, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
            None,
        ]
        rows = [log_row(f"k{i}", None) | {"source_modified_at": v} for i, v in enumerate(values)]
        with store.transaction() as conn:
            insert_rows(conn, changelog_t, rows)
            conn.execute(insert(changelog_t), rows)
            text = conn.exec_driver_sql(
                "SELECT source_modified_at, typeof(source_modified_at) FROM changelog ORDER BY seq").all()
        assert text[: len(values)] == text[len(values):]
        assert ("0999-12-31 23:59:59.999999", "text") == tuple(text[1])
        assert ("2026-03-01 12:00:00.120000", "text") == tuple(text[4])
    finally:
        store.close()
