"""Property: matching does not depend on the order records arrive in, nor on their pages.

The same records from three apps, fed to the engine's process stage in any order and any split
into pages (one transaction each, as a poll takes them) on the real SQLite store, give the same
customers (which records belong together), the same duplicates inside an app, and the same
records parked for review. The records are drawn from a small pool of emails, phones and
handles, so that shared phones, shared handles, people with two addresses, email-less records
and double imports inside one app all come up often. See docs/matching.md for the rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from customer_sync.config import load_config
from customer_sync.engine.process import process_records
from customer_sync.engine.runner import default_identity_key
from customer_sync.sdk.connector import AppRecord
from customer_sync.store.db import open_store
from customer_sync.store.tables import ConflictRow, CustomerRow, LinkRow
from customer_sync.store.uow import UnitOfWork
from customer_sync.testing.fake_connector import FakeConnector

APPS = ("crm", "desk", "inbox")
FIELDS = {
    "email": "email",
    "other_emails": {"field": "emails", "transform": "csv"},
    "first_name": "first",
    "phone": "phone",
    "social.instagram": "ig",
}
EMAILS = ("ann@x.io", "bob@x.io", "cy@x.io")
PHONES = ("+14155550101", "+14155550102")
HANDLES = ("@ann.k", "bobby")

record_st = st.fixed_dictionaries({
    "app": st.sampled_from(APPS),
    "email": st.sampled_from((None, None, *EMAILS)),
    "emails": st.sampled_from(("", "", *EMAILS)),
    "phone": st.sampled_from((None, *PHONES)),
    "ig": st.sampled_from((None, None, *HANDLES)),
    "first": st.sampled_from(("Ann", "Bob", None)),
})


@pytest.fixture(scope="module")
def config() -> Any:
    data = {
        "daemon": {"store_url": "sqlite://", "default_region": "US"},
        "apps": {a: {"connector": "fake", "fields": FIELDS} for a in APPS},
    }
    return load_config(data=data, connectors={"fake": FakeConnector})


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Iterator[Path]]:
    def fresh() -> Iterator[Path]:
        n = 0
        while True:
            n += 1
            yield tmp_path / f"store-{n}.db"
    yield fresh()


def feed(path: Path, config: Any, records: list[tuple[str, AppRecord]], order: list[int], pages: list[int]) -> dict[str, Any]:
    """Process the records in `order`, cut into pages of the given sizes; what the store holds."""
    store = open_store(f"sqlite:///{path}")
    key = default_identity_key()
    now = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        queue = [records[i] for i in order]
        sizes = iter(pages)
        while queue:
            size = next(sizes, len(queue))
            page, queue = queue[:size], queue[size:]
            now += timedelta(seconds=1)
            with store.transaction() as conn:
                uow = UnitOfWork(conn, identity_key=key, now=now, run_id="property")
                process_records(uow, page, config.apps, config.conflicts, now=now)
                uow.flush()
        with store.transaction() as conn:
            live = {r.customer_id for r in conn.execute(
                select(CustomerRow.__table__.c.customer_id).where(CustomerRow.__table__.c.deleted_at.is_(None)))}
            groups: dict[str, set[tuple[str, str, str]]] = {}
            for r in conn.execute(select(LinkRow.__table__)):
                assert r.customer_id in live, "a record is linked to a retired customer"
                groups.setdefault(r.customer_id, set()).add((r.app, r.app_record_id, r.state))
            parked = {(r.app, r.app_record_id) for r in conn.execute(
                select(ConflictRow.__table__).where(ConflictRow.__table__.c.kind == "match",
                                                    ConflictRow.__table__.c.status == "parked"))}
        # which records belong together, and how many of each app each customer holds (which
        # of two duplicates is the one written to depends on which came first: not compared)
        customers = frozenset(frozenset((a, rid) for a, rid, _ in g) for g in groups.values())
        linked = {(a, rid) for g in groups.values() for a, rid, _ in g}
        assert not linked & parked, "a record is both linked and parked"
        assert all(sum(s == "active" for _, _, s in g) == len({a for a, _, _ in g}) for g in groups.values())
        return {"customers": customers, "parked": parked, "empty": live - set(groups)}
    finally:
        store.close()


def as_records(drawn: list[dict[str, Any]]) -> list[tuple[str, AppRecord]]:
    at = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        (d["app"], AppRecord(app_record_id=f"{d['app']}-{i}", modified_at=at + timedelta(minutes=i),
                             fields={k: v for k, v in d.items() if k != "app"}))
        for i, d in enumerate(drawn)
    ]


FAMILY = [  # two people with a shared landline, and a WhatsApp-only contact of that number
    {"app": "crm", "email": "ann@x.io", "emails": "", "phone": PHONES[0], "ig": None, "first": "Ann"},
    {"app": "desk", "email": "bob@x.io", "emails": "", "phone": PHONES[0], "ig": None, "first": "Bob"},
    {"app": "inbox", "email": None, "emails": "", "phone": PHONES[0], "ig": None, "first": None},
]
DOUBLE_IMPORT = [  # an email-less double import in one app, and the customer it belongs to
    {"app": "inbox", "email": None, "emails": "", "phone": PHONES[1], "ig": "bobby", "first": "Bob"},
    {"app": "inbox", "email": None, "emails": "", "phone": PHONES[1], "ig": None, "first": "Bob"},
    {"app": "crm", "email": "bob@x.io", "emails": "", "phone": PHONES[1], "ig": None, "first": "Bob"},
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(drawn=FAMILY, perm=[2, 0, 1], pages=[1, 1, 1])
@example(drawn=DOUBLE_IMPORT, perm=[0, 1, 2], pages=[1, 1, 1])
@example(drawn=DOUBLE_IMPORT, perm=[2, 1, 0], pages=[3])
@given(
    drawn=st.lists(record_st, min_size=1, max_size=9),
    perm=st.permutations(range(9)),
    pages=st.lists(st.integers(1, 4), max_size=9),
)
def test_the_same_records_in_any_order_and_pages_give_the_same_customers(config, folder, drawn, perm, pages):
    records = as_records(drawn)
    order = [i for i in perm if i < len(records)] + [i for i in range(9, len(records))]
    expected = feed(next(folder), config, records, list(range(len(records))), [len(records)])
    got = feed(next(folder), config, records, order, pages)
    assert got["customers"] == expected["customers"]
    assert got["parked"] == expected["parked"]
    assert not got["empty"], "a customer without any record is still live"


def test_a_family_sharing_a_landline_stays_two_customers_and_the_number_alone_is_parked(config, folder):
    records = as_records(FAMILY)
    for order in ([0, 1, 2], [2, 0, 1], [0, 2, 1]):
        got = feed(next(folder), config, records, order, [1, 1, 1])
        assert {frozenset({("crm", "crm-0")}), frozenset({("desk", "desk-1")})} == got["customers"]
        assert {("inbox", "inbox-2")} == got["parked"]


def test_an_email_less_double_import_joins_one_customer(config, folder):
    records = as_records(DOUBLE_IMPORT)
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        got = feed(next(folder), config, records, order, [1, 1, 1])
        assert {frozenset({("inbox", "inbox-0"), ("inbox", "inbox-1"), ("crm", "crm-2")})} == got["customers"]
        assert set() == got["parked"]


# Two customers joined by a record holding both their emails, where the phone one of them held
# through a record (not its values: a newer record replaced it) must stay matchable. Customers
# made in one millisecond are ordered by random bits, so which one survives the join was left
# to chance, and half the time the phone was lost and the email-less record holding it became
# a customer of its own. Found by the property above (a flaky failure).
JOINED = [
    {"app": "crm", "email": None, "emails": "bob@x.io", "phone": PHONES[0], "ig": None, "first": "Ann"},
    {"app": "crm", "email": None, "emails": "ann@x.io", "phone": None, "ig": None, "first": None},
    {"app": "desk", "email": "bob@x.io", "emails": "", "phone": PHONES[1], "ig": "@ann.k", "first": None},
    {"app": "desk", "email": "cy@x.io", "emails": "ann@x.io", "phone": PHONES[1], "ig": "bobby", "first": None},
    {"app": "crm", "email": "ann@x.io", "emails": "bob@x.io", "phone": PHONES[1], "ig": "bobby", "first": "Bob"},
    {"app": "inbox", "email": None, "emails": "", "phone": PHONES[0], "ig": None, "first": None},
]


@pytest.mark.parametrize("newest_first", [False, True], ids=["older-survives", "newer-survives"])
def test_a_join_keeps_what_the_losing_customers_records_hold_matchable(config, folder, monkeypatch, newest_first):
    ids = iter(range(10_000, 0, -1) if newest_first else range(1, 10_000))
    monkeypatch.setattr("customer_sync.engine.process.new_customer_id",
                        lambda: f"00000000-0000-7000-8000-{next(ids):012d}")
    records = as_records(JOINED)
    got = feed(next(folder), config, records, list(range(len(records))), [len(records)])
    assert 1 == len(got["customers"]), "the email-less record holding a joined customer's phone stayed apart"
