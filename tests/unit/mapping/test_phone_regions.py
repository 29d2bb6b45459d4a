"""The region of a national phone number in a compiled field map: the record's own country
(after its value map and normalization), else the app's default region; and what the engine
needs to read the phones again in the matched customer's country."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import pytest

from customer_sync.canonical import NormalizeContext
from customer_sync.mapping.compile import compile_mapping

if TYPE_CHECKING:
    from collections.abc import Mapping

    from customer_sync.mapping.compile import AppMapping

# The country is listed last on purpose: the record's country is read first whatever the order.
ENTRIES: dict[str, Any] = {
    "email": "email",
    "phone": "mobile",
    "other_phones": "phones",
    "social.whatsapp": "whatsapp",
    "address.country": {"field": "country", "values": {"Misr": "EG", "Dawlat Qatar": "QA"}},
}
EGYPTIAN = "٠١١ ٢٣٤٥ ٦٧٨٩"  # 011 2345 6789 in Arabic-Indic digits: valid in Egypt and in Iran
QATARI = "5512 3456"


def _compile(entries: Mapping[str, Any] = ENTRIES, *, default_region: str | None = "IR") -> AppMapping:
    mapping, problems = compile_mapping(
        "crm", entries, custom_fields={}, ctx=NormalizeContext(default_region=default_region))
    assert [] == problems
    return mapping


@pytest.mark.parametrize(
    ("country", "phone", "expected"),
    [("EG", EGYPTIAN, "+201123456789"), ("Misr", EGYPTIAN, "+201123456789"),
     ("مصر", EGYPTIAN, "+201123456789"), ("Egypt", EGYPTIAN, "+201123456789"),
     ("QA", QATARI, "+97455123456"), ("Dawlat Qatar", QATARI, "+97455123456"),
     ("قطر", QATARI, "+97455123456")],
    ids=["eg-code", "eg-value-map", "eg-arabic-name", "eg-english-name", "qa-code",
         "qa-value-map", "qa-arabic-name"],
)
def test_national_number_is_read_in_the_records_own_country(country: str, phone: str, expected: str) -> None:
    """Defect 1: with default_region IR, an Egyptian record's national number is +20..., not
    a valid Iranian +98...; a Qatari record's is +974... The country counts once it has gone
    through the value map and normalization."""
    values, errors = _compile().to_canonical({"mobile": phone, "country": country})

    assert ([], expected) == (errors, values["phone"])


def test_every_phone_field_of_the_record_uses_its_country() -> None:
    """The primary phone, the other phones and the WhatsApp number all take the record's country."""
    values, _ = _compile().to_canonical(
        {"country": "EG", "mobile": "0100 123 4567", "phones": "0111 234 5678; +98 912 123 4567",
         "whatsapp": "01001234567"})

    assert ("+201001234567", ["+201112345678", "+989121234567"], "+201001234567") == (
        values["phone"], values["other_phones"], values["social.whatsapp"])


@pytest.mark.parametrize("record", [{}, {"country": ""}, {"country": None}],
                         ids=["no-country-field", "empty", "none"])
def test_without_a_country_the_default_region_reads_the_number(record: dict[str, Any]) -> None:
    """A record without a country of its own has its national numbers read in default_region."""
    values, errors = _compile().to_canonical({**record, "mobile": EGYPTIAN})

    assert ([], "+981123456789") == (errors, values["phone"])


def test_a_city_in_the_country_field_fails_that_field_only() -> None:
    """An unmapped country value (a city) is a MappingError of address.country alone; the
    phone is read in the default region and the rest of the record maps."""
    values, errors = _compile().to_canonical(
        {"country": "Cairo", "mobile": "0912 123 4567", "email": "Sara@Example.com"})

    assert [("address.country", "crm")] == [(e.field, e.app) for e in errors]
    assert {"email": "sara@example.com", "phone": "+989121234567"} == values


def test_a_country_read_only_from_the_app_still_gives_the_region() -> None:
    """A `from_app` country is read, so it is the record's region; a `to_app` one is not."""
    read = {**ENTRIES, "address.country": {"field": "country", "direction": "from_app"}}
    unread = {**ENTRIES, "address.country": {"field": "country", "direction": "to_app"}}
    record = {"country": "EG", "mobile": EGYPTIAN}

    assert "+201123456789" == _compile(read).to_canonical(record)[0]["phone"]
    assert "+981123456789" == _compile(unread).to_canonical(record)[0]["phone"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [({"mobile": "0912 123 4567"}, True),
     ({"phones": ["+98 912 123 4567", "0100 123 4567"]}, True),
     ({"whatsapp": "01001234567"}, True),
     ({"mobile": "0912 123 4567", "country": ""}, True),
     ({"mobile": "0912 123 4567", "country": "Cairo"}, True),
     ({"mobile": "0912 123 4567", "country": "EG"}, False),
     ({"mobile": "0912 123 4567", "country": "Misr"}, False),
     ({"mobile": "+98 912 123 4567", "phones": "0098 21 1234 5678"}, False),
     ({"mobile": "989121234567+"}, False),
     ({"email": "sara@example.com"}, False)],
    ids=["national-phone", "national-in-set", "national-whatsapp", "empty-country",
         "country-that-is-no-country", "own-country", "own-country-value-mapped",
         "international-only", "trailing-plus", "no-phone"],
)
def test_needs_customer_region(record: dict[str, Any], expected: bool) -> None:
    """The customer's country is wanted when the record has no country of its own and holds a
    number written without an international prefix."""
    assert expected == _compile().needs_customer_region(record)


def test_a_map_without_phones_never_needs_the_customers_region() -> None:
    """No phone field, no region needed, whatever the record holds."""
    assert not _compile({"email": "email"}).needs_customer_region({"mobile": "0912 123 4567"})


def test_phones_for_region_reads_only_the_phone_fields_in_that_region() -> None:
    """The engine's second reading: the phone fields alone, national numbers in the region
    given (the matched customer's country), with per-field errors naming the app."""
    mapping = _compile()
    record = {"email": "sara@example.com", "mobile": EGYPTIAN, "whatsapp": "0100 123 456",
              "phones": ["+98 912 123 4567"]}

    values, errors = mapping.phones_for_region(record, "EG")

    assert {"phone": "+201123456789", "other_phones": ["+989121234567"]} == values
    assert [("social.whatsapp", "crm")] == [(e.field, e.app) for e in errors]


def test_phones_for_region_none_is_the_default_region() -> None:
    """No region: the app's default region reads the national numbers, as on first reading."""
    assert ({"phone": "+981123456789"}, []) == _compile().phones_for_region({"mobile": EGYPTIAN}, None)


def test_possible_but_invalid_phone_fails_only_its_field() -> None:
    """Defect 2 in a map: a drama-range number is an error of the phone field; the record's
    other values still map and the number is nowhere in the values."""
    values, errors = _compile().to_canonical(
        {"email": "sara@example.com", "mobile": "+44 1632 960123", "country": "GB"})

    assert {"email": "sara@example.com", "address.country": "GB"} == values
    assert ["phone: not a valid phone number"] == [str(e) for e in errors]


def test_the_compiled_map_pickles_with_its_regions() -> None:
    """The map is sent to a normalizing worker process: unpickled, it reads phones the same."""
    mapping = _compile()
    record = {"country": "QA", "mobile": QATARI}

    copy = pickle.loads(pickle.dumps(mapping))

    assert mapping.to_canonical(record) == copy.to_canonical(record)
    assert copy.needs_customer_region({"mobile": QATARI})
    assert ({"phone": "+97455123456"}, []) == copy.phones_for_region({"mobile": QATARI}, "QA")
