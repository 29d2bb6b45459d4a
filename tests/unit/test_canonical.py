"""Tests for the canonical schema: how each kind of field is normalized, and what is rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_sync.canonical import (
    CONSENT_VALUES,
    FIELDS,
    LIFECYCLE_STAGES,
    CanonicalCustomer,
    FieldSpec,
    NormalizeContext,
    field_spec,
    identity_values,
    is_set_field,
    normalize_value,
    parse_datetime,
)
from customer_sync.errors import MappingError

CUSTOM = {
    "loyalty_points": "int",
    "lifetime_value": "float",
    "vip": "bool",
    "birthday": "date",
    "last_order_at": "datetime",
    "interests": "tags",
    "nickname": "str",
}


def norm(name: str, value: Any, *, region: str | None = None) -> Any:
    spec = field_spec(name, CUSTOM)
    assert spec is not None, name
    return normalize_value(spec, value, NormalizeContext(default_region=region))


def cases(*pairs: tuple[Any, Any]) -> Any:
    """parametrize arguments for (given, expected) pairs, each id showing the given value."""
    return pytest.mark.parametrize(("given", "expected"), pairs, ids=[repr(p[0]) for p in pairs])


def rejects(name: str, value: Any, *, region: str | None = None) -> MappingError:
    with pytest.raises(MappingError) as caught:
        norm(name, value, region=region)
    return caught.value


# --- empty values ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "], ids=["none", "empty", "blank"])
@pytest.mark.parametrize("name", ["email", "phone", "first_name", "created_at", "custom.vip"])
def test_empty_scalar_is_none(name: str, value: Any) -> None:
    """None, "" and blank text normalize to None for scalar fields."""
    assert norm(name, value) is None


@pytest.mark.parametrize("value", [None, "", " ", [], [None, " "]], ids=repr)
@pytest.mark.parametrize("name", ["other_emails", "other_phones", "tags", "custom.interests"])
def test_empty_set_is_empty_list(name: str, value: Any) -> None:
    """Empty input, or a list of only empty items, normalizes to [] for set fields."""
    assert [] == norm(name, value)


# --- emails ---------------------------------------------------------------------------------


@cases(
    (" Jane@Example.COM ", "jane@example.com"),
    ("JANE.DOE+news@EXAMPLE.co.uk", "jane.doe+news@example.co.uk"),
    ("jörg@Bücher.example", "jörg@bücher.example"),
)
def test_email_is_trimmed_and_lower_cased(given: str, expected: str) -> None:
    """Emails are trimmed and lower-cased as a whole, local part included."""
    assert expected == norm("email", given)


@pytest.mark.parametrize(
    "given",
    ["jane.doe@", "@example.com", "jane@@example.com", "jane doe@example.com", "jane@localhost",
     "Jane <jane@example.com>"],
)
def test_invalid_email_is_rejected(given: str) -> None:
    """A malformed email address raises MappingError for the email field."""
    error = rejects("email", given)

    assert "email" == error.field


# Addresses near the shapes `_email` remembers domains for, and just outside them: quoting,
# display names, non-ASCII, punycode, special-use and numeric domains, bad dots and hyphens,
# and lengths around the 254-octet limit.
_LOCAL_CHARS = "aZ09._+-!#$%&'*/=?^`{|}~\"<> @éÄ"
_DOMAINS = ["example.com", "Example.COM", "mail.example.co.uk", "xn--bcher-kva.example",
            "bücher.example", "localhost", "example.test", "x.invalid", "example.local",
            "1.2.3.4", "[127.0.0.1]", "example..com", "-example.com", "example-.com",
            "ex_ample.com", "example.com.", "a" * 64 + ".com", "a" * 63 + ".com",
            ".".join(["b" * 60] * 3) + ".com", "example", "xn--a.com", "EXAMPLE.123"]


@settings(max_examples=500, deadline=None)
@given(st.text(_LOCAL_CHARS, min_size=0, max_size=80) | st.sampled_from(["jane", "a" * 70, "a" * 200]),
       st.sampled_from(_DOMAINS) | st.from_regex(r"[a-zA-Z0-9.\-]{1,20}", fullmatch=True),
       st.sampled_from(["", " "]))
def test_email_answers_as_email_validator_does(local: str, domain: str, pad: str) -> None:
    """`_email` gives email-validator's normalized address (lower-cased) and rejects what it
    rejects, whether or not the domain was already remembered."""
    from email_validator import EmailNotValidError, validate_email

    text = local + "@" + domain
    try:  # `_email` trims, as it always did
        expected: Any = validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        expected = MappingError
    for _ in range(2):  # the second time, the domain is known if the first one was accepted
        try:
            got: Any = norm("email", pad + text + pad)
        except MappingError:
            got = MappingError
        assert expected == got, text


def test_addresses_at_a_known_domain_skip_email_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    """After one address at a domain, others of the plain shape there are checked without
    email-validator (its domain check is most of the cost); any other shape still goes to it."""
    import email_validator

    from customer_sync import canonical

    calls: list[str] = []
    real = email_validator.validate_email
    monkeypatch.setattr(email_validator, "validate_email",
                        lambda text, **kw: calls.append(text) or real(text, **kw))
    monkeypatch.setattr(canonical, "_KNOWN_DOMAINS", {})
    assert "a@known.example" == norm("email", "A@Known.Example")
    assert "b.c+d@known.example" == norm("email", "B.C+d@Known.Example")
    assert "jörg@known.example" == norm("email", "Jörg@Known.Example")
    assert "a@other.example" == norm("email", "a@other.example")
    assert ["A@Known.Example", "Jörg@Known.Example", "a@other.example"] == calls


@pytest.mark.parametrize("given", [42, True, ["jane@example.com"]], ids=repr)
def test_email_of_wrong_type_is_rejected(given: Any) -> None:
    """An email given as a number, bool or list is rejected, naming the type only."""
    assert str(rejects("email", given)).startswith("email: expected an email address, got ")


# --- phones ---------------------------------------------------------------------------------


@cases(
    ("+14155552671", "+14155552671"),
    ("+1 (415) 555-2671", "+14155552671"),
    ("+49 (0)30 1234567", "+49301234567"),
    ("0049 30 1234567", "+49301234567"),
    ("00 1 415 555 2671", "+14155552671"),
    ("tel:+1-415-555-2671", "+14155552671"),
    (14155552671, "+14155552671"),
)
def test_international_phone_becomes_e164(given: Any, expected: str) -> None:
    """A phone with a country code (+, 00 or an int) becomes E.164 without a default region."""
    assert expected == norm("phone", given)


@cases(
    (("(415) 555-2671", "US"), "+14155552671"),
    (("030 1234567", "DE"), "+49301234567"),
    (("+44 20 7946 0958", "DE"), "+442079460958"),
    (("0044 20 7946 0958", "US"), "+442079460958"),
)
def test_national_phone_uses_default_region(given: tuple[str, str], expected: str) -> None:
    """A national number takes the default region; a +/00 prefix still wins over it."""
    value, region = given

    assert expected == norm("phone", value, region=region)


@pytest.mark.parametrize(
    ("value", "region"),
    [("(415) 555-2671", None), ("call me maybe", "US"), ("+1", None), ("+1 555", None),
     (4155552671, "US")],
    ids=["no-region", "text", "country-code-only", "too-short", "int-without-country-code"],
)
def test_invalid_phone_is_rejected(value: Any, region: str | None) -> None:
    """A phone that cannot be read as a possible number raises MappingError for the field."""
    assert "phone" == rejects("phone", value, region=region).field


# --- sets -----------------------------------------------------------------------------------


@cases(
    ("b@example.com, A@example.com; a@example.com", ["a@example.com", "b@example.com"]),
    (["B@example.com", "b@example.com", None, ""], ["b@example.com"]),
    (("c@example.com", "a@example.com"), ["a@example.com", "c@example.com"]),
    ({"x@example.com"}, ["x@example.com"]),
)
def test_email_set_is_normalized_sorted_and_deduped(given: Any, expected: list[str]) -> None:
    """Email sets accept CSV text or collections, skip empties, dedupe after normalizing, sort."""
    assert expected == norm("other_emails", given)


def test_phone_set_is_normalized_sorted_and_deduped() -> None:
    """Phone sets normalize each item to E.164 with the region, then dedupe and sort."""
    given = "+1 415 555 2671; 030 1234567, 001 415 555 2671"

    assert ["+14155552671", "+49301234567"] == norm("other_phones", given, region="DE")


@cases(
    ("vip, new  customer ;vip", ["new customer", "vip"]),
    (["b", " a ", "b"], ["a", "b"]),
    (["VIP", "vip"], ["VIP", "vip"]),
)
def test_tag_set_is_trimmed_sorted_and_deduped(given: Any, expected: list[str]) -> None:
    """Tags are whitespace-collapsed, deduped and sorted, keeping their case."""
    assert expected == norm("tags", given)


def test_set_with_one_invalid_item_is_rejected() -> None:
    """One bad email in a set rejects the whole value for that field."""
    assert "other_emails" == rejects("other_emails", "a@example.com, nope").field


def test_set_of_wrong_type_is_rejected() -> None:
    """A set field given a mapping is rejected."""
    assert "expected a list, got dict" in str(rejects("tags", {"vip": True}))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("other_emails", True), ("other_phones", True), ("tags", True), ("email", False),
     ("custom.interests", True), ("custom.nickname", False)],
)
def test_is_set_field(name: str, expected: bool) -> None:
    """Only email, phone and tag sets merge element-wise."""
    spec = field_spec(name, CUSTOM)
    assert spec is not None

    assert expected == is_set_field(spec)


# --- countries, locales, time zones ---------------------------------------------------------


@cases(("de", "DE"), (" us ", "US"), ("Gb", "GB"), ("AQ", "AQ"), ("pn", "PN"), ("UM", "UM"))
def test_country_is_upper_cased(given: str, expected: str) -> None:
    """ISO 3166-1 alpha-2 codes are trimmed and upper-cased, uninhabited territories included."""
    assert expected == norm("address.country", given)


@pytest.mark.parametrize("given", ["XX", "Berlin", "Korea", 49], ids=repr)
def test_invalid_country_is_rejected(given: Any) -> None:
    """Cities, names of more than one country, dialling codes and unassigned codes are rejected
    (names and alpha-3 codes are accepted: tests/unit/test_canonical_values.py)."""
    assert "address.country" == rejects("address.country", given).field


@cases(
    ("en_us", "en-US"),
    ("EN", "en"),
    ("zh-hant-tw", "zh-Hant-TW"),
    ("sr_LATN", "sr-Latn"),
    ("es-419", "es-419"),
    ("fil_PH", "fil-PH"),
)
def test_locale_is_normalized_to_bcp47_case(given: str, expected: str) -> None:
    """Locales use hyphens, a lower-case language, a title-case script and an upper-case region."""
    assert expected == norm("locale", given)


@pytest.mark.parametrize("given", ["english", "en-US-x-private", "e", "en_USA"])
def test_invalid_locale_is_rejected(given: str) -> None:
    """Anything but language[-Script][-REGION] is rejected."""
    assert "locale" == rejects("locale", given).field


@pytest.mark.parametrize("given", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC"])
def test_timezone_accepts_iana_names(given: str) -> None:
    """IANA zone names are kept as given."""
    assert given == norm("timezone", given)


@pytest.mark.parametrize(
    "given", ["Europe", "Mars/Olympus", "../../etc/passwd", "CEST", "Europe/Berlin\x00"], ids=repr
)
def test_invalid_timezone_is_rejected(given: str) -> None:
    """Region folders, unknown names, paths and abbreviations are rejected."""
    assert "timezone" == rejects("timezone", given).field


# --- choices --------------------------------------------------------------------------------


@cases(
    ("Customer", "customer"),
    ("Marketing Qualified Lead", "marketing_qualified_lead"),
    ("sales-qualified-lead", "sales_qualified_lead"),
)
def test_lifecycle_stage_is_normalized(given: str, expected: str) -> None:
    """Lifecycle stages are matched case-insensitively, with spaces and hyphens as underscores."""
    assert expected == norm("lifecycle_stage", given)


@pytest.mark.parametrize("given", CONSENT_VALUES)
def test_every_consent_value_is_accepted(given: str) -> None:
    """Each listed consent value, in any case, normalizes to itself."""
    assert given == norm("email_consent", given.upper())


@pytest.mark.parametrize(
    ("name", "given"),
    [("lifecycle_stage", "prospect"), ("email_consent", "opted_in")],
)
def test_unknown_choice_is_rejected_listing_the_choices(name: str, given: str) -> None:
    """An unknown choice is rejected with the allowed values in the message."""
    allowed = LIFECYCLE_STAGES if name == "lifecycle_stage" else CONSENT_VALUES

    assert all(choice in str(rejects(name, given)) for choice in allowed)


# --- date-times -----------------------------------------------------------------------------

NOON = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@cases(
    ("2024-05-01T12:00:00Z", NOON),
    ("2024-05-01T14:00:00+02:00", NOON),
    ("2024-05-01T12:00:00", NOON),
    (" 2024-05-01 12:00:00 ", NOON),
    (1714564800, NOON),
    (1714564800000, NOON),
    ("1714564800", NOON),
    ("1714564800000", NOON),
    (1714564800.5, NOON + timedelta(milliseconds=500)),
    (datetime(2024, 5, 1, 12), NOON),
    (datetime(2024, 5, 1, 7, tzinfo=timezone(timedelta(hours=-5))), NOON),
)
def test_parse_datetime_returns_aware_utc(given: Any, expected: datetime) -> None:
    """ISO text (Z, offset or naive), epoch seconds or milliseconds and datetimes become UTC."""
    parsed = parse_datetime(given)

    assert (expected, UTC) == (parsed, parsed.tzinfo)


@pytest.mark.parametrize("given", ["yesterday", True, None, [2024, 5, 1]], ids=repr)
def test_parse_datetime_rejects_other_input(given: Any) -> None:
    """Text that is not ISO 8601, bools, None and lists raise ValueError."""
    with pytest.raises(ValueError):
        parse_datetime(given)


@cases(
    ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00+00:00"),
    (1714564800123, "2024-05-01T12:00:00.123000+00:00"),
    ("2024-05-01", "2024-05-01T00:00:00+00:00"),
)
def test_datetime_field_is_iso_utc_text(given: Any, expected: str) -> None:
    """Date-time fields store ISO 8601 UTC text, with microseconds only when there are some."""
    assert expected == norm("created_at", given)


@pytest.mark.parametrize("given", ["yesterday", 10**20, True], ids=repr)
def test_invalid_datetime_is_rejected(given: Any) -> None:
    """Unparseable text, out-of-range epochs and bools are rejected for the field."""
    assert "created_at" == rejects("created_at", given).field


# --- custom types ---------------------------------------------------------------------------


@cases((42, 42), ("  42 ", 42), (42.0, 42), ("-7", -7))
def test_custom_int(given: Any, expected: int) -> None:
    """Int custom fields take ints, integral floats and integer text."""
    assert expected == norm("custom.loyalty_points", given)


@pytest.mark.parametrize("given", [4.5, "4.5", "forty", True, float("inf")], ids=repr)
def test_custom_int_rejects_non_integers(given: Any) -> None:
    """Fractions, words, bools and infinity are not integers."""
    assert "custom.loyalty_points" == rejects("custom.loyalty_points", given).field


@cases((1.5, 1.5), ("2.25", 2.25), (3, 3.0), (" 1e3 ", 1000.0))
def test_custom_float(given: Any, expected: float) -> None:
    """Float custom fields take numbers and numeric text."""
    assert expected == norm("custom.lifetime_value", given)


@pytest.mark.parametrize(
    "given",
    ["lots", False, "nan", float("inf"), "-inf", 10**400],
    ids=["word", "bool", "nan", "inf", "-inf", "huge"],
)
def test_custom_float_rejects_non_finite_and_non_numbers(given: Any) -> None:
    """Words, bools, NaN, infinities and ints too large for a float are rejected for the field."""
    assert "custom.lifetime_value" == rejects("custom.lifetime_value", given).field


@cases(
    (True, True), (False, False), ("yes", True), ("Y", True), (" on ", True), (1, True),
    ("false", False), ("NO", False), ("off", False), (0, False),
)
def test_custom_bool(given: Any, expected: bool) -> None:
    """Bool custom fields take bools, 0/1 and the usual yes/no words."""
    assert expected is norm("custom.vip", given)


@pytest.mark.parametrize("given", ["maybe", 2, "ja"], ids=repr)
def test_custom_bool_rejects_other_values(given: Any) -> None:
    """Anything but a recognised true/false value is rejected."""
    assert "custom.vip" == rejects("custom.vip", given).field


@cases(
    ("2024-05-01", "2024-05-01"),
    ("2024-05-01T23:00:00-05:00", "2024-05-01"),
    (datetime(2024, 5, 1, 12, tzinfo=UTC), "2024-05-01"),
)
def test_custom_date(given: Any, expected: str) -> None:
    """Date custom fields keep the calendar date as written."""
    assert expected == norm("custom.birthday", given)


@cases(("  Ace  of   spades ", "Ace of spades"), (7, "7"))
def test_custom_str_collapses_whitespace(given: Any, expected: str) -> None:
    """Text is trimmed with inner whitespace collapsed; numbers become text."""
    assert expected == norm("custom.nickname", given)


def test_str_rejects_bool() -> None:
    """A bool is not text."""
    assert "first_name: expected text, got bool" == str(rejects("first_name", True))


# --- errors never carry the value ---------------------------------------------------------

SENTINEL = "jane.sentinel@example.com"


@pytest.mark.parametrize(
    "name",
    ["phone", "other_phones", "address.country", "locale", "timezone", "lifecycle_stage",
     "email_consent", "created_at", "custom.loyalty_points", "custom.lifetime_value",
     "custom.vip", "custom.birthday"],
)
def test_mapping_error_names_the_field_not_the_value(name: str) -> None:
    """The error names the field and carries the value nowhere, not even in a chained cause."""
    error = rejects(name, SENTINEL)

    assert (name, True) == (error.field, str(error).startswith(f"{name}: "))
    assert "sentinel" not in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_invalid_email_message_does_not_echo_it() -> None:
    """A rejected email is not repeated in the message."""
    error = rejects("email", "jane.sentinel@@example.com")

    assert "email: not a valid email address" == str(error)


# --- field names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_builtin_fields_have_specs(name: str) -> None:
    """Every built-in field name resolves to its own spec."""
    assert FIELDS[name] is field_spec(name)


@pytest.mark.parametrize("name", ["social.twitter", "social.x", "social.linked_in2"])
def test_social_handles_are_personal_handles(name: str) -> None:
    """Any well-formed social.* name is a personal handle field, no declaration needed."""
    assert FieldSpec(name, "handle", True, "social handle") == field_spec(name)


@pytest.mark.parametrize(
    "name", ["social.", "social.Twitter", "social.1st", "social.a.b", "social." + "x" * 33]
)
def test_malformed_social_names_are_not_canonical(name: str) -> None:
    """social.* names must be lower-case identifiers of at most 32 characters."""
    assert field_spec(name) is None


@pytest.mark.parametrize(
    ("declared", "kind"),
    [("int", "int"), ("float", "float"), ("bool", "bool"), ("date", "date"),
     ("datetime", "datetime"), ("tags", "tag_set"), ("str", "str")],
)
def test_declared_custom_field_has_its_type(declared: str, kind: str) -> None:
    """A declared custom.* field gets the kind of its declared type and is not personal."""
    expected = FieldSpec("custom.x", kind)  # type: ignore[arg-type]

    assert expected == field_spec("custom.x", {"x": declared})


@pytest.mark.parametrize(
    ("name", "custom_fields"),
    [("custom.undeclared", CUSTOM), ("custom.vip", None), ("custom.vip", {}), ("nickname", CUSTOM),
     ("address.planet", CUSTOM), ("Email", None)],
    ids=["undeclared", "no-declarations", "empty-declarations", "missing-prefix", "unknown-nested",
         "wrong-case"],
)
def test_unknown_names_are_not_canonical(name: str, custom_fields: dict[str, str] | None) -> None:
    """Undeclared custom fields and unknown names have no spec."""
    assert field_spec(name, custom_fields) is None


# --- identity and the nested model -----------------------------------------------------------


def test_identity_values_lists_emails_then_phones_without_repeats() -> None:
    """Identity values are the primary email, other emails, the primary phone, other phones."""
    values = {
        "email": "a@example.com",
        "other_emails": ["a@example.com", "b@example.com"],
        "phone": "+14155552671",
        "other_phones": ["+14155552671", "+49301234567"],
        "first_name": "Jane",
    }

    assert [
        ("email", "a@example.com"),
        ("email", "b@example.com"),
        ("phone", "+14155552671"),
        ("phone", "+49301234567"),
    ] == identity_values(values)


@pytest.mark.parametrize(
    "values",
    [{}, {"email": None, "other_emails": [], "phone": "", "other_phones": None}],
    ids=["missing", "empty"],
)
def test_identity_values_of_anonymous_customer_is_empty(values: dict[str, Any]) -> None:
    """A customer without emails or phones has no identity values."""
    assert [] == identity_values(values)


def test_identity_values_without_primary_uses_the_others() -> None:
    """Other emails and phones count even when the primary one is missing."""
    assert [("email", "b@example.com"), ("phone", "+49301234567")] == identity_values(
        {"other_emails": ["b@example.com"], "other_phones": ["+49301234567"]}
    )


def test_from_values_nests_dotted_names() -> None:
    """address.*, social.* and custom.* values become nested objects; the rest stay top-level."""
    customer = CanonicalCustomer.from_values(
        "c1",
        {
            "email": "jane@example.com",
            "address.city": "Berlin",
            "address.country": "DE",
            "social.twitter": "@jane",
            "custom.loyalty_points": 42,
            "tags": ["vip"],
        },
    )

    assert {
        "customer_id": "c1",
        "email": "jane@example.com",
        "address": {"city": "Berlin", "country": "DE"},
        "social": {"twitter": "@jane"},
        "custom": {"loyalty_points": 42},
        "tags": ["vip"],
    } == customer.model_dump(exclude_defaults=True)


def test_from_values_of_nothing_is_an_empty_customer() -> None:
    """No values give a customer with only its id, empty nested objects and empty sets."""
    customer = CanonicalCustomer.from_values("c1", {})

    assert ("c1", None, [], {}, {}) == (
        customer.customer_id, customer.address.city, customer.tags, customer.social,
        customer.custom,
    )


def test_from_values_rejects_unknown_fields() -> None:
    """A value for a name outside the schema fails validation instead of being dropped."""
    with pytest.raises(ValueError, match="nickname"):
        CanonicalCustomer.from_values("c1", {"nickname": "Ace"})
