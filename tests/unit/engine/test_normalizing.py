"""Normalizing pages in a worker process gives exactly what normalizing in place gives, and
any failure of the worker falls back to normalizing in place."""

from __future__ import annotations

import pickle

import pytest

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


def in_place(mapping, recs):
    return [mapping.to_canonical(r.fields) for r in recs]


def as_comparable(results):
    return [(values, [(e.field, e.app, str(e)) for e in errors]) for values, errors in results]


def test_normalize_fields_matches_the_mapping(mapping):
    recs = records(20)
    wire = normalize_fields(mapping, [r.fields for r in recs])
    expected = in_place(mapping, recs)
    assert [(v, [(e.field, str(e)) for e in errs]) for v, errs in expected] == wire
    assert any(errs for _, errs in wire), "the sample must hold a bad value"


async def test_a_worker_normalizes_big_pages_exactly_as_in_place(mapping):
    normalizer = PageNormalizer(1, min_records=10)
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
        assert all(isinstance(e, MappingError) for _, errs in got.values() for e in errs)
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


def test_no_workers_means_in_place(mapping):
    normalizer = PageNormalizer(0, min_records=1)
    assert normalizer.submit(mapping, records(50)) is None
    normalizer.close()
