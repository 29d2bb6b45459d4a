"""`full_name`, the pseudo field that maps one app field to first_name and last_name: split at
the last space on the way in, first + " " + last on the way out, and the problems it can have."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import pytest

from customer_sync.config import load_config
from customer_sync.mapping.compile import compile_mapping
from customer_sync.testing.fake_connector import FakeConnector

if TYPE_CHECKING:
    from collections.abc import Mapping

    from customer_sync.mapping.compile import AppMapping

ENTRIES: dict[str, Any] = {"email": "email", "full_name": "name", "company": "org"}


def _compile(entries: Mapping[str, Any] = ENTRIES) -> AppMapping:
    mapping, problems = compile_mapping("helpdesk", entries, custom_fields={})
    assert [] == problems
    return mapping


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [("Juan Carlos García", "Juan Carlos", "García"), ("Madonna", "Madonna", None),
     ("  Sara   Ahmadi ", "Sara", "Ahmadi"), ("علی‌رضا احمدی", "علی‌رضا", "احمدی"),
     ("", None, None), (None, None, None)],
    ids=["last-space", "one-word", "spaces", "persian-with-zwnj", "empty", "none"],
)
def test_full_name_is_read_as_first_and_last_name(name: Any, first: Any, last: Any) -> None:
    """Inbound, the app field splits at its last space; a one-word name is a first name only."""
    values, errors = _compile().to_canonical({"name": name})

    assert ({"first_name": first, "last_name": last}, []) == (values, errors)


def test_full_name_is_written_as_first_space_last() -> None:
    """Outbound, the two parts are joined with one space into the app field."""
    mapping = _compile()

    assert {"name": "Juan Carlos García", "email": "jc@example.com"} == mapping.to_app(
        {"first_name": "Juan Carlos", "last_name": "García", "email": "jc@example.com"})
    assert {"name": "Madonna"} == mapping.to_app({"first_name": "Madonna", "last_name": None})
    assert {"name": None} == mapping.to_app({"first_name": None, "last_name": None})


def test_a_surname_with_a_space_survives_the_round_trip_with_the_existing_split() -> None:
    """Defect 8 (full-name half): "Ludwig" / "van Beethoven" is written as one field; read back,
    the last-space rule alone gives "Ludwig van" / "Beethoven", and the customer's existing
    parts keep their split (the rule the engine applies after matching)."""
    mapping = _compile()
    written = mapping.to_app({"first_name": "Ludwig", "last_name": "van Beethoven"})
    fm = mapping.by_canonical["first_name"]

    assert {"name": "Ludwig van Beethoven"} == written
    assert ({"first_name": "Ludwig van", "last_name": "Beethoven"}, []) == mapping.to_canonical(written)
    assert ("Ludwig", "van Beethoven") == fm.split_name(
        written["name"], existing=("Ludwig", "van Beethoven"))


def test_one_part_alone_is_joined_with_the_customers_other_part() -> None:
    """A write that changes the last name only takes the first name from the customer's values;
    without them the full name is left out rather than written half."""
    mapping = _compile()
    customer = {"first_name": "Juan Carlos", "last_name": "García", "company": "Acme"}

    assert {"name": "Juan Carlos García-Márquez"} == mapping.to_app(
        {"last_name": "García-Márquez"}, customer=customer)
    assert {"org": "Acme Ltd"} == mapping.to_app({"last_name": "García-Márquez", "company": "Acme Ltd"})


def test_expected_app_fields_hold_the_joined_name() -> None:
    """The app fields a record holds for some canonical values (the echo fingerprint) have the
    full name joined, and every other mapped field as `to_app` writes it."""
    assert {"email": None, "name": "Sara Ahmadi", "org": None} == _compile().expected_app_fields(
        {"first_name": "Sara", "last_name": "Ahmadi"})


def test_full_name_field_and_the_parts_are_exposed() -> None:
    """`full_name_field` names the app field; by_canonical has both parts; the app field is in
    the fingerprint order once."""
    mapping = _compile()

    assert "name" == mapping.full_name_field
    assert {"first_name", "last_name"} <= set(mapping.by_canonical)
    assert ("email", "name", "org") == mapping.app_field_order
    assert _compile({"email": "email", "first_name": "fn"}).full_name_field is None


@pytest.mark.parametrize(
    ("direction", "read", "written"),
    [("from_app", {"first_name": "Sara", "last_name": "Ahmadi"}, {}),
     ("to_app", {}, {"name": "Sara Ahmadi"})],
    ids=["from_app", "to_app"],
)
def test_full_name_direction(direction: str, read: dict[str, Any], written: dict[str, Any]) -> None:
    """A full name mapped one way is only read or only written."""
    mapping = _compile({"full_name": {"field": "name", "direction": direction}})

    assert (read, []) == mapping.to_canonical({"name": "Sara Ahmadi"})
    assert written == mapping.to_app({"first_name": "Sara", "last_name": "Ahmadi"})


def test_a_transform_applies_to_the_whole_name() -> None:
    """A named transform works on the full name, before the split and after the join."""
    mapping = _compile({"full_name": {"field": "name", "transform": "upper"}})

    assert ({"first_name": "SARA", "last_name": "AHMADI"}, []) == mapping.to_canonical({"name": "sara ahmadi"})
    assert {"name": "SARA AHMADI"} == mapping.to_app({"first_name": "Sara", "last_name": "Ahmadi"})


def test_a_full_name_that_is_not_text_fails_only_itself() -> None:
    """A number or a table in the name field is a MappingError of full_name; the rest maps."""
    values, errors = _compile().to_canonical({"name": {"given": "Sara"}, "email": "sara@example.com"})

    assert {"email": "sara@example.com"} == values
    assert [("full_name", "helpdesk", "full_name: expected text, got dict")] == [
        (e.field, e.app, str(e)) for e in errors]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [({"full_name": "name", "first_name": "fn"},
      "apps.helpdesk.fields.full_name: maps first_name and last_name from one app field, and "
      "first_name is mapped too; map one or the other"),
     ({"last_name": "ln", "full_name": "name", "first_name": "fn"},
      "apps.helpdesk.fields.full_name: maps first_name and last_name from one app field, and "
      "first_name and last_name are mapped too; map one or the other"),
     ({"full_name": {"field": "name", "values": {"X": "Y"}}},
      "apps.helpdesk.fields.full_name.values: a value map needs a single field; full_name is two")],
    ids=["with-first-name", "with-both-parts", "value-map"],
)
def test_full_name_problems(entries: dict[str, Any], expected: str) -> None:
    """full_name together with first_name or last_name, or with a value map, is a problem."""
    assert [expected] == compile_mapping("helpdesk", entries, custom_fields={})[1]


def test_any_app_can_map_a_full_name_in_its_config() -> None:
    """`full_name = "name"` under [apps.X.fields] compiles for any connector."""
    data = {"apps": {"crm": {"connector": "fake", "fields": {"email": "email"}},
                     "helpdesk": {"connector": "fake", "fields": {"email": "email", "full_name": "name"}}}}

    config = load_config("config.toml", data=data, env={}, connectors={"fake": FakeConnector})

    assert "name" == config.apps["helpdesk"].mapping.full_name_field


def test_the_compiled_full_name_pickles() -> None:
    """The map is sent to a normalizing worker: unpickled, it splits and joins the same."""
    copy = pickle.loads(pickle.dumps(_compile()))

    assert ({"first_name": "Juan Carlos", "last_name": "García"}, []) == copy.to_canonical(
        {"name": "Juan Carlos García"})
    assert "name" == copy.full_name_field
