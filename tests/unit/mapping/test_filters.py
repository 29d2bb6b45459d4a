"""Per-app filters: each op over canonical values, durations against a fixed `now`, and the
problems `compile_filter` reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from customer_sync.mapping.filters import compile_filter, parse_duration

if TYPE_CHECKING:
    from customer_sync.mapping.filters import Filter

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _ago(**delta: float) -> str:
    """A canonical date-time `delta` before NOW."""
    return (NOW - timedelta(**delta)).isoformat()


def _filter(field: str, op: str, value: Any = None) -> Filter:
    """One compiled condition; fails the test when compiling reports a problem."""
    flt, problems = compile_filter(
        "crm", [{"field": field, "op": op, "value": value}], custom_fields={"tier": "int"}
    )
    assert [] == problems
    return flt


@pytest.mark.parametrize(
    ("op", "value", "values", "expected"),
    [
        ("eq", "Acme", {"company": "Acme"}, True),
        ("eq", "Acme", {"company": "Other"}, False),
        ("eq", "Acme", {}, False),
        ("ne", "Acme", {"company": "Other"}, True),
        ("ne", "Acme", {"company": "Acme"}, False),
        ("ne", "Acme", {}, True),
    ],
    ids=["eq same", "eq different", "eq missing", "ne different", "ne same", "ne missing"],
)
def test_eq_and_ne_compare_the_value(
    op: str, value: Any, values: dict[str, Any], expected: bool
) -> None:
    """`eq` holds when the field equals the value, `ne` when it does not (missing included)."""
    assert expected is _filter("company", op, value).matches(values, NOW)


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("email", " Ada@Example.COM", "ada@example.com"),
        ("address.country", "de", "DE"),
        ("custom.tier", "3", 3),
        ("company", "  Acme   GmbH ", "Acme GmbH"),
    ],
    ids=["email case", "country code case", "custom int from text", "white space"],
)
def test_eq_normalizes_the_configured_value(field: str, value: Any, stored: Any) -> None:
    """The value in the filter is normalized like the field, so it matches the canonical value."""
    assert _filter(field, "eq", value).matches({field: stored}, NOW)


@pytest.mark.parametrize(
    ("op", "country", "expected"),
    [
        ("in", "DE", True),
        ("in", "AT", True),
        ("in", "FR", False),
        ("in", None, False),
        ("not_in", "DE", False),
        ("not_in", "FR", True),
        ("not_in", None, True),
    ],
    ids=[
        "in first",
        "in second",
        "in other",
        "in missing",
        "not_in listed",
        "not_in other",
        "not_in missing",
    ],
)
def test_in_and_not_in_normalize_the_list(op: str, country: str | None, expected: bool) -> None:
    """`in`/`not_in` compare against the normalized list: "de" in the config matches "DE"."""
    flt = _filter("address.country", op, ["de", " at "])

    assert expected is flt.matches({"address.country": country}, NOW)


@pytest.mark.parametrize(
    ("field", "values", "expected"),
    [
        ("company", {"company": "Acme"}, True),
        ("company", {"company": None}, False),
        ("company", {"company": ""}, False),
        ("tags", {"tags": ["vip"]}, True),
        ("tags", {"tags": []}, False),
        ("company", {}, False),
    ],
    ids=["text", "none", "empty text", "set", "empty set", "missing"],
)
def test_exists_and_not_exists_treat_empty_values_as_absent(
    field: str, values: dict[str, Any], expected: bool
) -> None:
    """`exists` holds for a value that is not None, "" or []; `not_exists` is its opposite."""
    assert expected is _filter(field, "exists").matches(values, NOW)
    assert (not expected) is _filter(field, "not_exists").matches(values, NOW)


@pytest.mark.parametrize(
    ("field", "needle", "value", "expected"),
    [
        ("company", "acme", "The ACME Corp", True),
        ("company", "ACME", "the acme corp", True),
        ("company", "acme", "Initech", False),
        ("company", "acme", None, False),
        ("tags", "VIP", ["b2b", "vip"], True),
        ("tags", "vip", ["vipers"], False),
        ("tags", "vip", [], False),
    ],
    ids=[
        "text substring",
        "text any case",
        "text without",
        "text missing",
        "set element any case",
        "set needs a whole element",
        "set empty",
    ],
)
def test_contains_searches_text_and_sets(
    field: str, needle: str, value: Any, expected: bool
) -> None:
    """On text `contains` is a case-blind substring test; on a set it looks for a whole element."""
    assert expected is _filter(field, "contains", needle).matches({field: value}, NOW)


@pytest.mark.parametrize(
    ("created_at", "newer", "older"),
    [
        (_ago(days=1), True, False),
        (_ago(days=7), True, False),
        ("2026-01-03T00:00:00+00:00", True, False),
        ("2026-01-03T23:59:59+00:00", True, False),
        ("2026-01-02T23:59:59+00:00", False, True),
        ("2026-01-10T23:00:00+00:00", True, False),
        ("2026-01-03T01:00:00+05:00", False, True),
        (_ago(days=400), False, True),
        (None, False, False),
    ],
    ids=["a day ago", "exactly the age", "first second of the 7th day before",
         "last second of the 7th day before", "last second of the 8th day before",
         "later today", "the 7th day before in UTC+5 is the 8th in UTC", "long ago", "missing"],
)
def test_newer_than_and_older_than_in_days_compare_whole_utc_days(
    created_at: str | None, newer: bool, older: bool
) -> None:
    """`newer_than 7d` holds for a UTC date from 7 days before today's UTC date on, whatever
    the time of day; `older_than 7d` before that; neither without a date."""
    values = {"created_at": created_at}

    assert newer is _filter("created_at", "newer_than", "7d").matches(values, NOW)
    assert older is _filter("created_at", "older_than", "7d").matches(values, NOW)


def test_a_signup_exactly_n_days_ago_is_in_the_last_n_days_at_any_time_of_day() -> None:
    """A signup on the UTC day N days before today is inside `newer_than Nd` and outside
    `older_than Nd` for every time of day of the signup and of now (defect 8a)."""
    signup_day = datetime(2026, 1, 3, tzinfo=UTC)
    newer, older = _filter("created_at", "newer_than", "7d"), _filter("created_at", "older_than", "7d")
    seen = set()
    for signup_hour in (0, 11, 23):
        for now_hour in (0, 12, 23):
            values = {"created_at": (signup_day + timedelta(hours=signup_hour, minutes=59)).isoformat()}
            now = datetime(2026, 1, 10, now_hour, 30, tzinfo=UTC)
            seen.add((newer.matches(values, now), older.matches(values, now)))

    assert {(True, False)} == seen


def test_newer_than_in_weeks_counts_whole_days() -> None:
    """`2w` is 14 whole UTC days: a value on the 14th day before today is inside."""
    flt = _filter("created_at", "newer_than", "2w")

    assert (True, False) == (
        flt.matches({"created_at": "2025-12-27T00:00:00+00:00"}, NOW),
        flt.matches({"created_at": "2025-12-26T23:59:59+00:00"}, NOW),
    )


@pytest.mark.parametrize(
    ("signup", "newer", "older"),
    [
        ("2026-01-10", True, False),
        ("2026-01-03", True, False),
        ("2026-01-02", False, True),
        (None, False, False),
    ],
    ids=["today", "exactly 7 days ago", "8 days ago", "missing"],
)
def test_date_fields_take_newer_than_and_older_than_in_days(
    signup: str | None, newer: bool, older: bool
) -> None:
    """A custom date field is accepted by `newer_than` / `older_than`, and compares whole days."""
    values = {"custom.signup": signup}

    for op, expected in (("newer_than", newer), ("older_than", older)):
        flt, problems = compile_filter(
            "crm", [{"field": "custom.signup", "op": op, "value": "7d"}], custom_fields={"signup": "date"})
        assert [] == problems
        assert expected is flt.matches(values, NOW), op


def test_a_custom_datetime_field_compares_whole_days_too() -> None:
    """A custom date-time field takes an age in days like `created_at` does."""
    flt, problems = compile_filter(
        "crm", [{"field": "custom.seen", "op": "newer_than", "value": "7d"}], custom_fields={"seen": "datetime"})

    assert [] == problems
    assert flt.matches({"custom.seen": "2026-01-03T00:00:01+00:00"}, NOW)


@pytest.mark.parametrize("age", ["12h", "30m", "1.5d"], ids=["hours", "minutes", "part of a day"])
def test_an_age_below_a_day_on_a_date_field_is_refused(age: str) -> None:
    """A date has no time of day: an age in hours or minutes, or not a whole number of days,
    is a config problem naming the key and saying what to write instead."""
    _, problems = compile_filter(
        "crm", [{"field": "custom.signup", "op": "newer_than", "value": age}], custom_fields={"signup": "date"})

    assert [
        f"apps.crm.filters[0].value: newer_than on the date field custom.signup needs an age in "
        f"whole days or weeks (like '7d' or '2w'), not {age!r}"
    ] == problems


def test_newer_than_in_hours_compares_instants() -> None:
    """An age in hours keeps comparing instants: `newer_than 12h` fails a second past it."""
    flt = _filter("created_at", "newer_than", "12h")

    assert (True, False) == (
        flt.matches({"created_at": _ago(hours=12)}, NOW),
        flt.matches({"created_at": _ago(hours=12, seconds=1)}, NOW),
    )


def test_newer_than_moves_with_now() -> None:
    """The same record passes `newer_than` today and fails it once `now` is later."""
    flt = _filter("created_at", "newer_than", "12h")
    values = {"created_at": _ago(hours=6)}

    assert (True, False) == (
        flt.matches(values, NOW),
        flt.matches(values, NOW + timedelta(hours=7)),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("180d", timedelta(days=180)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 3 d ", timedelta(days=3)),
    ],
    ids=["seconds", "minutes", "hours", "days", "weeks", "fraction", "spaces"],
)
def test_duration_units(text: str, expected: timedelta) -> None:
    """Durations are a number and one unit of s, m, h, d or w."""
    assert expected == parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["3", "3y", "-1d", "", "d", "1d2h", 7],
    ids=["no unit", "unknown unit", "negative", "empty", "no number", "two units", "not text"],
)
def test_bad_duration_is_refused(text: Any) -> None:
    """Anything but a number and one unit is not a duration."""
    with pytest.raises(ValueError, match="not a duration like '180d' or '12h'"):
        parse_duration(text)


def test_every_condition_must_hold() -> None:
    """A filter with several conditions matches only when all of them hold."""
    flt, problems = compile_filter(
        "crm",
        [
            {"field": "address.country", "op": "eq", "value": "de"},
            {"field": "tags", "op": "contains", "value": "vip"},
        ],
        custom_fields={},
    )

    assert [] == problems
    assert frozenset({"address.country", "tags"}) == flt.fields
    assert flt.matches({"address.country": "DE", "tags": ["vip"]}, NOW)
    assert not flt.matches({"address.country": "DE", "tags": ["b2b"]}, NOW)
    assert not flt.matches({"address.country": "FR", "tags": ["vip"]}, NOW)


def test_empty_filter_matches_everything() -> None:
    """An app without filters takes part with every customer, and its filter is falsy."""
    flt, problems = compile_filter("crm", [], custom_fields={})

    assert ([], False, True) == (problems, bool(flt), flt.matches({}, NOW))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            {"field": "email", "op": "like", "value": "x"},
            "apps.crm.filters[1].op: unknown op 'like' (one of eq, ne, in, not_in, exists, "
            "not_exists, contains, newer_than, older_than)",
        ),
        (
            {"field": "signup", "op": "exists"},
            "apps.crm.filters[1].field: unknown canonical field 'signup'",
        ),
        (
            {"field": "custom.tier", "op": "exists"},
            "apps.crm.filters[1].field: unknown canonical field 'custom.tier'",
        ),
        (
            {"field": "created_at", "op": "older_than", "value": "6mo"},
            "apps.crm.filters[1].value: not a duration like '180d' or '12h': '6mo'",
        ),
        (
            {"field": "company", "op": "newer_than", "value": "1d"},
            "apps.crm.filters[1].value: newer_than needs a date or date-time field; company is str",
        ),
        (
            {"field": "address.country", "op": "in", "value": "de"},
            "apps.crm.filters[1].value: in needs a list value",
        ),
        (
            {"field": "company", "op": "contains", "value": 3},
            "apps.crm.filters[1].value: contains needs a text value",
        ),
        (
            {"field": "address.country", "op": "eq", "value": "Atlantis"},
            "apps.crm.filters[1].value: address.country: not a country (an ISO 3166-1 code, or a country's name)",
        ),
    ],
    ids=[
        "unknown op",
        "unknown field",
        "undeclared custom field",
        "bad duration",
        "newer_than on text",
        "in without a list",
        "contains without text",
        "value invalid for the field",
    ],
)
def test_bad_condition_is_reported_and_the_others_compile(
    condition: dict[str, Any], expected: str
) -> None:
    """A bad condition is one problem naming filters[i].KEY; the good conditions still apply."""
    flt, problems = compile_filter(
        "crm",
        [{"field": "company", "op": "exists"}, condition],
        custom_fields={},
    )

    assert [expected] == problems
    assert frozenset({"company"}) == flt.fields
    assert (True, False) == (flt.matches({"company": "Acme"}, NOW), flt.matches({}, NOW))


def test_in_on_a_set_field_matches_any_element() -> None:
    """`in` on tags holds when one of the customer's tags is in the list."""
    flt = _filter("tags", "in", ["vip", "gold"])

    assert (True, False) == (
        flt.matches({"tags": ["b2b", "vip"]}, NOW),
        flt.matches({"tags": ["b2b"]}, NOW),
    )


def test_eq_on_a_set_field_matches_the_same_set() -> None:
    """`eq` on tags holds when the customer has exactly the configured tags."""
    flt = _filter("tags", "eq", ["vip", "b2b"])

    assert flt.matches({"tags": ["b2b", "vip"]}, NOW)
