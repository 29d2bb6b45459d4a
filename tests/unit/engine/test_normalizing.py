"""Normalizing pages in a worker process gives exactly what normalizing in place gives, and
any failure of the worker falls back to normalizing in place."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from customer_sync.canonical import identity_hash, identity_values
from customer_sync.engine._normalize_worker import fields_fingerprint
from customer_sync.engine.normalizing import PageNormalizer, normalize_fields
from customer_sync.errors import MappingError
from customer_sync.mapping.compile import compile_mapping
from customer_sync.sdk.connector import AppRecord

FIELDS = {
    "email": "email",
    "phone": "phone",
    "first_name": {"field": "first", "transform": "strip"},
    "tags": {"field": "tags", "transform": "csv"},
    "lifecycle_stage": {"field": "stage", "values": {"Lead": "lead", "Customer": "customer"}},
}


@pytest.fixture(scope="module")
def mapping():
    compiled, problems = compile_mapping("crm", FIELDS, custom_fields={})
    assert [] == problems
    return compiled


def records(n: int) -> list[AppRecord]:
    out = []
    for i in range(n):
        fields = {"email": f" Person.{i}@Example.COM ", "phone": f"+1 415 555 {i:04d}", "first": f"  P{i} ",
                  "tags": "b,a", "stage": "Lead" if i % 2 else "Customer"}
        if i % 7 == 3:
            fields["email"] = "not an address"  # a field error, the rest still maps
        out.append(AppRecord(app_record_id=str(i), fields=fields))
    return out


KEY = b"k" * 32


def in_place(mapping, recs):
    """What the engine works out in its own process when no worker result is there."""
    out = []
    for r in recs:
        values, errors = mapping.to_canonical(r.fields)
        hashes = [(kind, value, identity_hash(KEY, kind, value)) for kind, value in identity_values(values)]
        out.append((values, errors, fields_fingerprint(mapping.app_field_order, r.fields), hashes))
    return out


def as_comparable(results):
    return [(values, [(e.field, e.app, str(e), e.raw_value) for e in errors], fp, hashes)
            for values, errors, fp, hashes in results]


def test_normalize_fields_matches_the_mapping(mapping):
    recs = records(20)
    wire = normalize_fields(mapping, [r.fields for r in recs], KEY)
    expected = in_place(mapping, recs)
    assert [(v, [(e.field, str(e), e.raw_value) for e in errs], fp, hashes)
            for v, errs, fp, hashes in expected] == wire
    assert any(errs for _, errs, _, _ in wire), "the sample must hold a bad value"
    assert all(hashes for _, _, _, hashes in wire), "every record has an identity"
    assert all(hashes == [] for *_, hashes in normalize_fields(mapping, [r.fields for r in recs])), \
        "no key, no hashes"


def test_the_fingerprint_is_the_one_the_engine_checks_echoes_with(mapping):
    """The worker's fingerprint and `app_fingerprint` are one function: a record normalized in
    the worker is recognised as an echo exactly as one normalized in place."""
    from types import SimpleNamespace

    from customer_sync.engine.process import app_fingerprint

    rt = SimpleNamespace(mapping=mapping)
    for r in records(10) + [AppRecord(app_record_id="x", fields={"email": "a@b.io", "tags": {"nested": 1}})]:
        assert app_fingerprint(rt, r.fields) == normalize_fields(mapping, [r.fields])[0][2]
    blank = {"email": "a@b.io", "phone": "", "tags": []}
    assert app_fingerprint(rt, blank) == app_fingerprint(rt, {"email": "a@b.io"}), '"" and [] are None'


async def test_a_worker_normalizes_big_pages_exactly_as_in_place(mapping):
    normalizer = PageNormalizer(1, min_records=10, identity_key=KEY)
    try:
        recs = records(40)
        assert normalizer.submit(mapping, recs[:9]) is None, "a small page stays in place"
        await normalizer.start()
        assert normalizer.ready
        pending = normalizer.submit(mapping, recs)
        assert pending is not None
        got = await normalizer.collect("crm", recs, pending)
        assert set(got) == {id(r) for r in recs}
        assert as_comparable(in_place(mapping, recs)) == as_comparable(got[id(r)] for r in recs)
        assert all(isinstance(e, MappingError) for got_one in got.values() for e in got_one.errors)
        refused = [e.raw_value for r in recs for e in got[id(r)].errors]
        assert refused and {"not an address"} == set(refused), "the raw value comes back from the worker"
    finally:
        normalizer.close()


async def test_many_big_pages_in_flight_all_come_back(mapping):
    """Pages whose answers are bigger than a pipe's buffer, sent before any answer is read,
    all come back, each with its own records' results (the worker never waits on a daemon
    that waits on it)."""
    normalizer = PageNormalizer(1, min_records=10, identity_key=KEY)
    try:
        await normalizer.start()
        pages = [records(3000) for _ in range(4)]
        pending = [normalizer.submit(mapping, page) for page in pages]
        assert all(p is not None for p in pending)
        got = [await asyncio.wait_for(normalizer.collect("crm", page, p), timeout=120)
               for page, p in zip(pages, pending, strict=True)]
        assert [len(page) for page in pages] == [len(g) for g in got]
        assert as_comparable(in_place(mapping, pages[3])) == as_comparable(got[3][id(r)] for r in pages[3])
        assert normalizer.ready
    finally:
        normalizer.close()


async def test_before_the_worker_has_started_pages_are_normalized_in_place(mapping):
    normalizer = PageNormalizer(1, min_records=1)
    try:
        assert normalizer.submit(mapping, records(5)) is None  # starts the worker, does not wait
        assert {} == await normalizer.collect("crm", records(5), None)
    finally:
        normalizer.close()


async def test_a_page_the_worker_cannot_take_falls_back_to_in_place(mapping):
    """A value that cannot be sent to the worker (here: a function) fails that page's
    submission; the engine then normalizes in place, and stops using the worker."""
    normalizer = PageNormalizer(1, min_records=1)
    try:
        await normalizer.start()
        odd = [AppRecord(app_record_id="1", fields={"email": "a@b.io", "first": lambda: None})]
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            pickle.dumps(odd[0].fields)
        pending = normalizer.submit(mapping, odd)
        assert {} == await normalizer.collect("crm", odd, pending)
        assert not normalizer.ready
        assert normalizer.submit(mapping, records(5)) is None
    finally:
        normalizer.close()


def test_a_field_error_carries_the_raw_value_and_survives_pickling(mapping):
    """A value the map refuses comes back with the value the app sent (for the operator's
    rejection record), not in the message, and keeps it through pickling."""
    _, errors = mapping.to_canonical({"email": "nobody home", "phone": "call me maybe"})

    assert {"email": "nobody home", "phone": "call me maybe"} == {e.field: e.raw_value for e in errors}
    assert all(e.raw_value not in str(e) for e in errors)
    back = pickle.loads(pickle.dumps(errors))
    assert [(e.field, e.app, str(e), e.raw_value) for e in errors] == [
        (e.field, e.app, str(e), e.raw_value) for e in back]


def test_no_workers_means_in_place(mapping):
    normalizer = PageNormalizer(0, min_records=1)
    assert normalizer.submit(mapping, records(50)) is None
    normalizer.close()
