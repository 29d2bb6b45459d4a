"""Compiled field maps: the order of value map, transform and normalization each way, the
directions, per-field mapping errors, and the problems `compile_mapping` reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from customer_sync.canonical import NormalizeContext
from customer_sync.errors import MappingError
from customer_sync.mapping.compile import compile_mapping

if TYPE_CHECKING:
    from collections.abc import Mapping

    from customer_sync.mapping.compile import AppMapping, Direction


def _compile(
    entries: Mapping[str, Any],
    *,
    custom_fields: Mapping[str, str] | None = None,
    default_direction: Direction = "both",
    ctx: NormalizeContext = NormalizeContext(),
) -> AppMapping:
    """The compiled map of app `crm`; fails the test when compiling reports a problem."""
    mapping, problems = compile_mapping(
        "crm",
        entries,
        custom_fields=custom_fields or {},
        default_direction=default_direction,
        ctx=ctx,
    )
    assert [] == problems
    return mapping


def _problems(entries: Mapping[str, Any]) -> list[str]:
    return compile_mapping("crm", entries, custom_fields={})[1]


STAGE_MAP = {"field": "stage", "values": {"L": "lead", "O": "opportunity", "C": "customer"}}
KUNDE = {"Kunde": "customer"}
COMPANY = "apps.crm.fields.company"


def test_plain_rename_maps_both_ways() -> None:
    """A string entry renames one app field to one canonical field and back, normalizing inbound."""
    mapping = _compile({"email": "mail", "first_name": "given_name"})

    assert ({"email": "ada@example.com", "first_name": "Ada"}, []) == mapping.to_canonical(
        {"mail": " Ada@Example.COM ", "given_name": "  Ada ", "ignored": 1}
    )
    assert {"mail": "ada@example.com", "given_name": "Ada"} == mapping.to_app(
        {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}
    )


def test_inbound_applies_value_map_then_transform_then_normalization() -> None:
    """Inbound, the app value goes through the value map, then the transform, then normalization."""
    mapping = _compile(
        {"lifecycle_stage": {"field": "stage", "transform": "upper", "values": KUNDE}}
    )

    # value map first ("Kunde" -> "customer"), then upper ("CUSTOMER"), then normalization
    # (lifecycle stages are lower case): had the transform run first, "KUNDE" would be unknown.
    assert ({"lifecycle_stage": "customer"}, []) == mapping.to_canonical({"stage": "Kunde"})


def test_outbound_applies_transform_then_reversed_value_map() -> None:
    """Outbound, the canonical value is transformed and then looked up in the reversed value map."""
    mapping = _compile(
        {"lifecycle_stage": {"field": "stage", "transform": "lower", "values": KUNDE}}
    )

    assert {"stage": "Kunde"} == mapping.to_app({"lifecycle_stage": "customer"})


@pytest.mark.parametrize(
    ("app_value", "canonical"),
    [("L", "lead"), ("O", "opportunity"), ("C", "customer")],
    ids=["lead", "opportunity", "customer"],
)
def test_value_map_round_trips(app_value: str, canonical: str) -> None:
    """An enum value map turns app values into canonical values and back."""
    mapping = _compile({"lifecycle_stage": STAGE_MAP})

    assert ({"lifecycle_stage": canonical}, []) == mapping.to_canonical({"stage": app_value})
    assert {"stage": app_value} == mapping.to_app({"lifecycle_stage": canonical})


def test_value_not_in_value_map_is_normalized_as_it_is() -> None:
    """An app value missing from the value map goes straight to normalization."""
    mapping = _compile({"lifecycle_stage": STAGE_MAP})

    assert ({"lifecycle_stage": "evangelist"}, []) == mapping.to_canonical({"stage": "Evangelist"})
    assert {"stage": "evangelist"} == mapping.to_app({"lifecycle_stage": "evangelist"})


def test_value_map_keys_match_non_text_app_values() -> None:
    """An app that sends numbers is matched against the value map by their text."""
    mapping = _compile(
        {"lifecycle_stage": {"field": "stage", "values": {"1": "lead", "2": "customer"}}}
    )

    assert ({"lifecycle_stage": "customer"}, []) == mapping.to_canonical({"stage": 2})


def test_first_app_value_wins_the_reversed_value_map() -> None:
    """When two app values map to one canonical value, the first one listed is written back."""
    mapping = _compile(
        {"lifecycle_stage": {"field": "stage", "values": {"L": "lead", "Lead": "lead"}}}
    )

    assert ({"lifecycle_stage": "lead"}, []) == mapping.to_canonical({"stage": "Lead"})
    assert {"stage": "L"} == mapping.to_app({"lifecycle_stage": "lead"})


def test_value_map_reverses_non_text_canonical_values() -> None:
    """A bool custom field with a Y/N value map writes Y/N back to the app, not true/false."""
    mapping = _compile(
        {"custom.vip": {"field": "vip", "values": {"Y": "true", "N": "false"}}},
        custom_fields={"vip": "bool"},
    )

    assert ({"custom.vip": True}, []) == mapping.to_canonical({"vip": "Y"})
    assert {"vip": "Y"} == mapping.to_app({"custom.vip": True})


def test_value_map_with_text_changing_transform_writes_the_app_value() -> None:
    """With a value map and an upper transform, the app gets back the app value it sent."""
    mapping = _compile(
        {"lifecycle_stage": {"field": "stage", "transform": "upper", "values": KUNDE}}
    )

    assert {"stage": "Kunde"} == mapping.to_app({"lifecycle_stage": "customer"})


def test_to_app_field_is_not_read() -> None:
    """A `to_app` field is written to the app but never read from it."""
    mapping = _compile({"email": "email", "company": {"field": "org", "direction": "to_app"}})

    assert ({"email": "a@example.com"}, []) == mapping.to_canonical(
        {"email": "a@example.com", "org": "Acme"}
    )
    assert {"email": "a@example.com", "org": "Acme"} == mapping.to_app(
        {"email": "a@example.com", "company": "Acme"}
    )


def test_from_app_field_is_not_written() -> None:
    """A `from_app` field is read from the app but never written to it."""
    mapping = _compile(
        {"email": "email", "created_at": {"field": "created", "direction": "from_app"}}
    )

    assert ({"email": "a@example.com", "created_at": "2024-01-02T03:04:05+00:00"}, []) == (
        mapping.to_canonical({"email": "a@example.com", "created": "2024-01-02T03:04:05Z"})
    )
    assert {"email": "a@example.com"} == mapping.to_app(
        {"email": "a@example.com", "created_at": "2024-01-02T03:04:05+00:00"}
    )


def test_app_direction_is_the_default_and_a_field_overrides_it() -> None:
    """The app's direction applies to every field that does not set its own."""
    mapping = _compile(
        {"email": "email", "company": {"field": "org", "direction": "both"}},
        default_direction="to_app",
    )

    assert ({"company": "Acme"}, []) == mapping.to_canonical(
        {"email": "a@example.com", "org": "Acme"}
    )
    assert {"email": "a@example.com", "org": "Acme"} == mapping.to_app(
        {"email": "a@example.com", "company": "Acme"}
    )


def test_field_absent_from_the_record_is_absent_from_the_result() -> None:
    """A mapped app field the record does not carry produces no canonical value (not a change)."""
    mapping = _compile({"email": "email", "company": "org"})

    assert ({"company": None}, []) == mapping.to_canonical({"org": ""})


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"email": "not-an-email", "phone": "+49 30 1234567", "org": "Acme"}, "email"),
        ({"email": "a@example.com", "phone": "12", "org": "Acme"}, "phone"),
        ({"email": "a@example.com", "phone": "+49 30 1234567", "org": {"x": 1}}, "company"),
    ],
    ids=["bad email", "impossible phone", "table for text"],
)
def test_bad_value_fails_only_its_field(record: dict[str, Any], field: str) -> None:
    """A value that does not validate is a MappingError for its field; the others still map."""
    mapping = _compile({"email": "email", "phone": "phone", "company": "org"})
    good = {"email": "a@example.com", "phone": "+49301234567", "company": "Acme"}

    values, errors = mapping.to_canonical(record)

    assert {k: v for k, v in good.items() if k != field} == values
    assert [(field, "crm")] == [(e.field, e.app) for e in errors]
    assert all(isinstance(e, MappingError) for e in errors)


def test_mapping_error_names_the_field_not_the_value() -> None:
    """The message of a mapping error names the field and never carries the personal value."""
    mapping = _compile({"email": "email"})

    _, errors = mapping.to_canonical({"email": "ada.lovelace(at)example"})

    assert ["email: not a valid email address"] == [str(e) for e in errors]


@pytest.mark.parametrize("kind", ["int", "float"], ids=["int", "float"])
def test_mapping_error_of_a_number_field_does_not_quote_the_value(kind: str) -> None:
    """A bad number in a custom number field is reported without the value the record held."""
    mapping = _compile({"custom.points": "points"}, custom_fields={"points": kind})

    _, errors = mapping.to_canonical({"points": "ada@example.com"})

    assert ["custom.points"] == [e.field for e in errors]
    assert "ada@example.com" not in str(errors[0])


def test_transform_failure_is_a_mapping_error_for_its_field() -> None:
    """A transform that cannot read the app value fails that field, naming the transform."""
    mapping = _compile({"email": "email", "tags": {"field": "labels", "transform": "json_list"}})

    values, errors = mapping.to_canonical({"email": "a@example.com", "labels": '{"vip": true}'})

    assert {"email": "a@example.com"} == values
    assert ["tags: transform 'json_list' failed (ValueError)"] == [str(e) for e in errors]
    assert [("tags", "crm")] == [(e.field, e.app) for e in errors]


@pytest.mark.parametrize("epoch", [10**20, 1e300], ids=["huge int", "huge float"])
def test_out_of_range_epoch_fails_only_its_field(epoch: float) -> None:
    """An epoch far outside the calendar is a MappingError for its field; the rest still maps."""
    mapping = _compile(
        {"email": "email", "created_at": {"field": "created", "transform": "epoch_s"}}
    )

    values, errors = mapping.to_canonical({"email": "a@example.com", "created": epoch})

    assert {"email": "a@example.com"} == values
    assert ["created_at"] == [e.field for e in errors]


def test_declared_custom_field_normalizes_to_its_type() -> None:
    """custom.NAME declared in custom_fields compiles with that type and normalizes to it."""
    mapping = _compile(
        {"custom.points": "points", "custom.vip": "vip"},
        custom_fields={"points": "int", "vip": "bool"},
    )

    assert ({"custom.points": 42, "custom.vip": True}, []) == mapping.to_canonical(
        {"points": "42", "vip": "yes"}
    )


def test_normalize_context_reaches_normalization() -> None:
    """The app's default region reads phone numbers written without a country code."""
    mapping = _compile({"phone": "phone"}, ctx=NormalizeContext(default_region="DE"))

    assert ({"phone": "+49301234567"}, []) == mapping.to_canonical({"phone": "030 1234567"})


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            {"company": {"field": "org", "colour": "red"}},
            ["apps.crm.fields.company: unknown key(s) colour"],
        ),
        ({"company": {"direction": "both"}}, [f"{COMPANY}.field: required, the app field name"]),
        ({"company": {"field": ""}}, [f"{COMPANY}.field: required, the app field name"]),
        ({"company": 7}, [f"{COMPANY}: expected an app field name or a table, got int"]),
        (
            {"company": {"field": "org", "values": ["a", "b"]}},
            ["apps.crm.fields.company.values: expected a table of app value = canonical value"],
        ),
        (
            {"company": "org", "job_title": "org"},
            [
                "apps.crm.fields.job_title.field: app field 'org' is already mapped from "
                "'company'; map each app field from one canonical field"
            ],
        ),
        (
            {"address.country": {"field": "country", "values": {"Deutschland": "XX"}}},
            [
                'apps.crm.fields."address.country".values.Deutschland: address.country: '
                "not a country (an ISO 3166-1 code, or a country's name)"
            ],
        ),
    ],
    ids=[
        "unknown key in entry",
        "no app field",
        "empty app field",
        "neither name nor table",
        "values not a table",
        "app field mapped twice",
        "invalid value map target",
    ],
)
def test_compile_problems_name_the_key_path(entries: dict[str, Any], expected: list[str]) -> None:
    """Each problem in a field map is one line naming apps.APP.fields.KEY and what is wrong."""
    assert expected == _problems(entries)


@pytest.mark.parametrize(
    ("first", "second"),
    [("both", "to_app"), ("to_app", "to_app"), ("both", "from_app"), ("from_app", "from_app")],
    ids=["both then to_app", "two writers", "both then from_app", "two readers"],
)
def test_app_field_mapped_by_two_canonical_fields_is_refused_whatever_the_directions(
    first: str, second: str
) -> None:
    """An app field named by two entries is a problem on the second one, in any direction."""
    mapping, problems = compile_mapping(
        "crm",
        {
            "email": {"field": "contact", "direction": first},
            "other_emails": {"field": "contact", "direction": second},
        },
        custom_fields={},
    )

    assert [
        "apps.crm.fields.other_emails.field: app field 'contact' is already mapped from "
        "'email'; map each app field from one canonical field"
    ] == problems
    assert ["email"] == [f.canonical for f in mapping.fields]


def test_bad_entry_does_not_stop_the_others_compiling() -> None:
    """A broken entry is reported while the good entries around it are compiled."""
    mapping, problems = compile_mapping(
        "crm", {"email": "email", "nickname": "nick", "company": "org"}, custom_fields={}
    )

    assert ["email", "company"] == [f.canonical for f in mapping.fields]
    assert [
        "apps.crm.fields.nickname: unknown canonical field 'nickname' "
        "(see the canonical fields in docs/configuration.md)"
    ] == problems


def test_set_fields_are_the_inbound_list_fields():
    """`set_fields` (merged element by element) is worked out once per map, from its inbound
    fields' specs."""
    mapping = _compile({"email": "email", "tags": {"field": "labels", "transform": "json_list"}, "phone": "phone"})
    assert frozenset({"tags"}) == mapping.set_fields
    assert frozenset() == _compile({"email": "email"}).set_fields
