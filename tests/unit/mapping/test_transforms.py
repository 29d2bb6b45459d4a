"""Named transforms: each one round-trips between the app's form and the canonical value, lets
None through both ways, and reads the looser input apps send."""

from __future__ import annotations

from typing import Any

import pytest

from customer_sync.canonical import field_spec, normalize_value
from customer_sync.mapping.compile import compile_mapping
from customer_sync.mapping.transforms import TRANSFORMS

CUSTOM_FIELDS = {"vip": "bool"}

# (transform, canonical field, value as the app holds it, canonical value)
ROUND_TRIPS = [
    ("csv", "tags", "b2b,vip", ["b2b", "vip"]),
    ("json_list", "tags", '["b2b", "vip"]', ["b2b", "vip"]),
    ("epoch_s", "created_at", 1704164645, "2024-01-02T03:04:05+00:00"),
    ("epoch_ms", "created_at", 1704164645123, "2024-01-02T03:04:05.123000+00:00"),
    ("yes_no", "custom.vip", "yes", True),
    ("yes_no", "custom.vip", "no", False),
    ("lower", "company", "acme gmbh", "acme gmbh"),
    ("upper", "company", "ACME GMBH", "ACME GMBH"),
    ("strip", "company", "Acme GmbH", "Acme GmbH"),
    ("title", "company", "Acme Gmbh", "Acme Gmbh"),
]
ROUND_TRIP_IDS = [
    "csv", "json_list", "epoch_s", "epoch_ms", "yes_no yes", "yes_no no",
    "lower", "upper", "strip", "title",
]
round_trips = pytest.mark.parametrize(
    ("name", "field", "app_value", "canonical"), ROUND_TRIPS, ids=ROUND_TRIP_IDS
)


def _to_canonical(name: str, field: str, app_value: Any) -> Any:
    """The canonical value of `app_value` through the transform and the field's normalization."""
    mapping, problems = compile_mapping(
        "crm", {field: {"field": "x", "transform": name}}, custom_fields=CUSTOM_FIELDS
    )
    assert [] == problems
    values, errors = mapping.to_canonical({"x": app_value})
    assert [] == errors
    return values[field]


@round_trips
def test_transform_reads_the_app_value(
    name: str, field: str, app_value: Any, canonical: Any
) -> None:
    """Inbound, the transform and normalization turn the app's form into the canonical value."""
    assert canonical == _to_canonical(name, field, app_value)


@round_trips
def test_transform_writes_the_app_value(
    name: str, field: str, app_value: Any, canonical: Any
) -> None:
    """Outbound, the transform turns the canonical value into the app's form."""
    assert app_value == TRANSFORMS[name].to_app(canonical)


@round_trips
def test_transform_round_trips(name: str, field: str, app_value: Any, canonical: Any) -> None:
    """A canonical value written to the app and read back is the same canonical value."""
    written = TRANSFORMS[name].to_app(canonical)

    assert canonical == _to_canonical(name, field, written)


@pytest.mark.parametrize("name", sorted(TRANSFORMS), ids=sorted(TRANSFORMS))
def test_none_passes_through_both_ways(name: str) -> None:
    """An empty value stays empty (None) in both directions, whatever the transform."""
    transform = TRANSFORMS[name]

    assert (None, None) == (transform.to_canonical(None), transform.to_app(None))


@pytest.mark.parametrize(
    ("name", "field", "app_value", "canonical"),
    [
        ("csv", "tags", " vip, b2b ,,vip ", ["b2b", "vip"]),
        ("csv", "tags", ["vip", "b2b"], ["b2b", "vip"]),
        ("json_list", "tags", '["vip", "b2b", "vip"]', ["b2b", "vip"]),
        ("json_list", "tags", "  ", []),
        ("epoch_s", "created_at", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
        ("epoch_s", "created_at", 1704164645.5, "2024-01-02T03:04:05.500000+00:00"),
        ("epoch_ms", "created_at", 5000, "1970-01-01T00:00:05+00:00"),
        ("yes_no", "custom.vip", "Yes", True),
        ("yes_no", "custom.vip", False, False),
        ("strip", "company", "  Acme GmbH\t", "Acme GmbH"),
        ("lower", "company", "ACME", "acme"),
        ("upper", "company", "acme", "ACME"),
        ("title", "company", "ACME GMBH", "Acme Gmbh"),
    ],
    ids=[
        "csv spaces, blanks and repeats",
        "csv already a list",
        "json_list repeats",
        "json_list blank text",
        "epoch_s given ISO text",
        "epoch_s fractional",
        "epoch_ms small",
        "yes_no capitalized",
        "yes_no already bool",
        "strip",
        "lower",
        "upper",
        "title",
    ],
)
def test_transform_reads_looser_app_input(
    name: str, field: str, app_value: Any, canonical: Any
) -> None:
    """Inbound, a transform accepts the variants apps send and lands on one canonical value."""
    assert canonical == _to_canonical(name, field, app_value)


@pytest.mark.parametrize(
    ("name", "canonical", "app_value"),
    [
        ("csv", ["vip", "b2b"], "b2b,vip"),
        ("json_list", ("vip", "b2b"), '["b2b", "vip"]'),
        ("epoch_s", "2024-01-02T04:04:05+01:00", 1704164645),
        ("epoch_ms", "2024-01-02T03:04:05Z", 1704164645000),
        ("yes_no", 0, "no"),
        ("lower", 42, 42),
    ],
    ids=[
        "csv sorts",
        "json_list sorts",
        "epoch_s other offset",
        "epoch_ms Z",
        "yes_no falsy",
        "text transform ignores numbers",
    ],
)
def test_transform_writes_a_stable_app_form(name: str, canonical: Any, app_value: Any) -> None:
    """Outbound, equal canonical values always give the same app value (stable fingerprints)."""
    assert app_value == TRANSFORMS[name].to_app(canonical)


@pytest.mark.parametrize(
    ("name", "app_value"),
    [("json_list", "not json"), ("json_list", '{"vip": true}'), ("json_list", "3")],
    ids=["not json", "json object", "json number"],
)
def test_transform_refuses_what_it_cannot_read(name: str, app_value: str) -> None:
    """A transform raises ValueError on input it cannot read (the map makes it a MappingError)."""
    with pytest.raises(ValueError):
        TRANSFORMS[name].to_canonical(app_value)


def test_epoch_ms_round_trips_every_millisecond() -> None:
    """Each millisecond of one second survives app -> canonical -> app unchanged."""
    transform, spec = TRANSFORMS["epoch_ms"], field_spec("created_at")
    assert spec is not None
    start = 1094683741000  # 2004-09-08T22:49:01Z

    changed = [
        ms
        for ms in range(start, start + 1000)
        if transform.to_app(normalize_value(spec, transform.to_canonical(ms))) != ms
    ]

    assert [] == changed


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_pickles_by_name(name: str) -> None:
    """Field maps are sent to the normalizing worker process: a transform travels by name and
    arrives as the very same transform."""
    import pickle

    assert pickle.loads(pickle.dumps(TRANSFORMS[name])) is TRANSFORMS[name]
