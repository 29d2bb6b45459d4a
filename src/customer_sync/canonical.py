"""The canonical customer schema: the one customer the daemon believes in.

Canonical values are flat: each field has a dotted name (`email`, `address.country`,
`social.twitter`, `custom.loyalty_points`) so that merge, conflicts and provenance work field by
field. Every value goes through `normalize_value` on the way in: emails are checked and
lower-cased (email-validator), phones become E.164 (phonenumbers; valid numbers only, a national
number read in the record's own country), social handles lose their `@` and profile-URL wrapping,
names are kept as written (trimmed, NFC), other text is trimmed and NFC, countries are ISO 3166
alpha-2 codes (from codes or names, see `_countries`). An invalid value raises `MappingError`
naming the field, never the value, and the rest of the record goes on.

`CanonicalCustomer` is the same schema as a pydantic model, for export and documentation.
"""

from __future__ import annotations

import functools
import hmac
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from customer_sync._countries import country_code
from customer_sync.errors import MappingError

if TYPE_CHECKING:
    import phonenumbers

# phonenumbers and email-validator are imported by the functions that normalize phones and
# emails, on their first call: a command that reads the store (`status`) never pays for them.

__all__ = [
    "CONSENT_VALUES",
    "CUSTOM_TYPES",
    "FIELDS",
    "LIFECYCLE_STAGES",
    "CanonicalCustomer",
    "FieldSpec",
    "NormalizeContext",
    "field_spec",
    "identity_values",
    "is_set_field",
    "join_full_name",
    "needs_region",
    "normalize_value",
    "parse_datetime",
    "split_full_name",
]

Kind = Literal[
    "str", "name", "handle", "email", "phone", "email_set", "phone_set", "tag_set", "country",
    "locale", "timezone", "lifecycle", "consent", "datetime", "int", "float", "bool", "date",
]

LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketing_qualified_lead", "sales_qualified_lead",
    "opportunity", "customer", "evangelist", "other",
)
CONSENT_VALUES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "unknown", "bounced")
CUSTOM_TYPES: dict[str, Kind] = {
    "str": "str", "int": "int", "float": "float", "bool": "bool", "date": "date",
    "datetime": "datetime", "tags": "tag_set",
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One canonical field: its kind, and whether it holds personal data."""

    name: str
    kind: Kind
    personal: bool = False
    doc: str = ""


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("email", "email", True, "primary email, lower-cased"),
        FieldSpec("other_emails", "email_set", True, "further emails of the customer"),
        FieldSpec("phone", "phone", True, "primary phone, E.164"),
        FieldSpec("other_phones", "phone_set", True, "further phones, E.164"),
        FieldSpec("first_name", "name", True, "as written: trimmed, NFC, nothing folded"),
        FieldSpec("last_name", "name", True, "as written: trimmed, NFC, nothing folded"),
        FieldSpec("company", "str"),
        FieldSpec("job_title", "str"),
        FieldSpec("address.street", "str", True),
        FieldSpec("address.city", "str", True),
        FieldSpec("address.region", "str"),
        FieldSpec("address.postal_code", "str", True),
        FieldSpec("address.country", "country", False, "ISO 3166-1 alpha-2"),
        FieldSpec("locale", "locale", False, "BCP 47, e.g. en-US"),
        FieldSpec("timezone", "timezone", False, "IANA name, e.g. Europe/Berlin"),
        FieldSpec("lifecycle_stage", "lifecycle"),
        FieldSpec("email_consent", "consent", False, "email-marketing consent"),
        FieldSpec("email_consent_at", "datetime", False, "when consent last changed"),
        FieldSpec("tags", "tag_set"),
        FieldSpec("created_at", "datetime", False, "when the customer first appeared"),
    )
}
SOCIAL_PREFIX = "social."
WHATSAPP = "social.whatsapp"  # a phone number, matched as one
CUSTOM_PREFIX = "custom."
_SOCIAL_RE = re.compile(r"^social\.[a-z][a-z0-9_]{0,31}$")
_SET_KINDS = frozenset({"email_set", "phone_set", "tag_set"})
_PHONE_KINDS = frozenset({"phone", "phone_set"})
# Social accounts named by a phone number rather than a handle.
_SOCIAL_PHONES = {"social.whatsapp": FieldSpec("social.whatsapp", "phone", True, "WhatsApp number, E.164")}


def field_spec(name: str, custom_fields: Mapping[str, str] | None = None) -> FieldSpec | None:
    """The spec of a canonical field name, or None when the name is not canonical."""
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if _SOCIAL_RE.match(name):
        return _SOCIAL_PHONES.get(name) or FieldSpec(name, "handle", True, "social handle")
    if name.startswith(CUSTOM_PREFIX) and custom_fields is not None:
        type_name = custom_fields.get(name[len(CUSTOM_PREFIX):])
        if type_name is not None:
            return FieldSpec(name, CUSTOM_TYPES[type_name])
    return None


def is_set_field(spec: FieldSpec) -> bool:
    """Set-valued fields merge element-wise instead of as one value."""
    return spec.kind in _SET_KINDS


@dataclass(frozen=True, slots=True)
class NormalizeContext:
    """What normalization needs besides the value: the region of phones written without an
    international prefix, `region` (the record's own country, or the customer's) before
    `default_region` (the app's or the daemon's setting)."""

    default_region: str | None = None
    region: str | None = None


_NO_CONTEXT = NormalizeContext()


_WS = re.compile(r"\s+")
_SET_SEPARATORS = re.compile(r"[,;]")


@functools.cache
def _countries() -> frozenset[str]:
    """phonenumbers' regions are the ISO 3166-1 alpha-2 codes with a numbering plan of their own
    ("001" is its non-geographic pseudo-region); the seven territories without one are added."""
    import phonenumbers

    return (frozenset(phonenumbers.SUPPORTED_REGIONS) - {"001"}) | {
        "AQ", "BV", "GS", "HM", "PN", "TF", "UM",
    }

_LOCALE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|\d{3}))?$")


def normalize_value(spec: FieldSpec, value: Any, ctx: NormalizeContext = NormalizeContext()) -> Any:
    """Validate and normalize one value for a canonical field; None and "" mean empty (None).

    Sets come back as sorted lists (JSON-friendly and stable for fingerprints).

    Raises:
        MappingError: the value is invalid for the field (the message names the field only).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return [] if spec.kind in _SET_KINDS else None
    try:
        return _NORMALIZERS[spec.kind](value, ctx)
    except MappingError as exc:
        raise MappingError(f"{spec.name}: {exc}", field=spec.name) from None
    except (ValueError, TypeError) as exc:
        raise MappingError(f"{spec.name}: {_safe_reason(exc)}", field=spec.name) from None


def _safe_reason(exc: Exception) -> str:
    # email-validator and phonenumbers messages never echo the input; ours don't either.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _nfc(text: str) -> str:
    # Canonically equivalent spellings (a precomposed letter, or a letter and a combining mark)
    # are one value; ASCII is NFC already, and checking that is cheap.
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _str(value: Any, ctx: NormalizeContext) -> str | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected text, got {type(value).__name__}")
    text = _WS.sub(" ", str(value)).strip()
    return _nfc(text) or None


# --- names --------------------------------------------------------------------------------
# A name is kept as its owner wrote it: only the white space around it goes, and NFC makes
# canonically equivalent spellings one. Nothing is folded: Arabic and Persian yeh and kaf
# (ي/ی, ك/ک), alef maksura and teh marbuta, ZWNJ (U+200C, part of how Persian is spelled) and
# diacritics are letters of the name, and two spellings are two values.


def _name(value: Any, ctx: NormalizeContext) -> str | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return _nfc(str(value).strip()) or None


# Where a one-field full name breaks: white space, but not the no-break spaces, whose whole job
# is to say "not here" (a connector that stores one name writes a space inside a part with one).
_NAME_BREAK = re.compile(r"[^\S\u00a0\u2007\u202f]+")


def split_full_name(
    text: Any, *, existing: tuple[str | None, str | None] | None = None,
) -> tuple[str | None, str | None]:
    """(first_name, last_name) of a one-field full name, each normalized as a name.

    The name splits at its last space ("Juan Carlos García" is "Juan Carlos" / "García"); a
    one-word name is a first name only. When the name is exactly the `existing` parts joined
    (`join_full_name`), those parts are kept, so "Ludwig" / "van Beethoven" written to an app as
    one field reads back as it was written.

    Raises:
        ValueError: the value is not text.
    """
    name = None if text is None else _name(text, _NO_CONTEXT)
    if name is None:
        return None, None
    if existing is not None and name == join_full_name(*existing):
        return existing[0] or None, existing[1] or None
    last_break = None
    for last_break in _NAME_BREAK.finditer(name):  # noqa: B007 - the last one is wanted
        pass
    if last_break is None:
        return name, None
    # Parts keep no white space at their ends (a no-break space beside the break included).
    return name[:last_break.start()].strip() or None, name[last_break.end():].strip() or None


def join_full_name(first: str | None, last: str | None) -> str | None:
    """The one-field full name of two parts: first + " " + last; None when both are empty."""
    return " ".join(part.strip() for part in (first, last) if part and part.strip()) or None


# --- invisible marks ------------------------------------------------------------------------
# Bidi controls (LRM, RLM, ALM, the embeddings, overrides and isolates) come with text copied
# from right-to-left pages, zero-width spaces and BOMs with text copied from anywhere. They are
# never part of an email address, a phone number or a handle.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c\ufeff")
)


# The shape of nearly every address: an ASCII dot-atom (RFC 5322 3.2.3, email-validator's
# `DOT_ATOM_TEXT`) before the @ and hostname characters after it. For such an address,
# email-validator's answer depends on the part before the @ only through that dot-atom check and
# the 254-octet length limit; the rest is its check of the domain, which is most of its cost
# (IDNA) and the same for every address at that domain. So a domain it accepted is remembered
# with its normalized form, and later addresses at it only get the checks that depend on them.
# A test checks the answers are email-validator's, valid or not, on generated addresses.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.\-]+)\Z")
_EMAIL_MAX_OCTETS = 254  # email-validator's EMAIL_MAX_LENGTH (RFC 3696 errata 1690)
_KNOWN_DOMAINS: dict[str, tuple[str, int]] = {}  # as given -> (normalized, longest form in octets)
_KNOWN_DOMAINS_MAX = 10_000


def _email(value: Any, ctx: NormalizeContext) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an email address, got {type(value).__name__}")
    text = value.strip()
    if not text.isascii():
        text = text.translate(_INVISIBLE).strip()
    plain = _PLAIN_EMAIL.match(text)
    if plain is not None:
        local, domain = plain.groups()
        known = _KNOWN_DOMAINS.get(domain)
        if known is not None and len(local) + 1 + known[1] <= _EMAIL_MAX_OCTETS:
            return (local + "@" + known[0]).lower()
    from email_validator import EmailNotValidError, validate_email

    try:
        # email-validator gives an IDN domain in Unicode, punycode or not, so that
        # user@xn--mller-kva.de and user@müller.de are one address.
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError("not a valid email address") from exc
    if plain is not None and len(_KNOWN_DOMAINS) < _KNOWN_DOMAINS_MAX:
        forms = (domain, info.domain, info.ascii_domain or "")
        _KNOWN_DOMAINS[domain] = (info.domain, max(len(f.encode()) for f in forms))
    # The local part is case-sensitive by RFC, but no mailbox provider treats it so, and
    # every CRM matches emails case-insensitively: lower-case the whole address.
    return _nfc(info.normalized.lower())


# --- phones ---------------------------------------------------------------------------------
# What phones are typed with, made into what phonenumbers reads: Persian (U+06F0-06F9) and
# Arabic-Indic (U+0660-0669) digits, any Unicode space or dash, and no invisible marks.
_PHONE_CHARS: dict[int, str | None] = {
    **{0x06F0 + d: str(d) for d in range(10)},
    **{0x0660 + d: str(d) for d in range(10)},
    **{c: " " for c in (0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000)},
    **{c: "-" for c in (*range(0x2010, 0x2016), 0x2212, 0xFE63, 0xFF0D)},
    **_INVISIBLE,
}
_TRUNK = re.compile(r"\(\s*0\s*\)")  # "+44 (0)20 ...": the trunk 0, dialled only nationally
# Digits that may be an international number without its "+" ("989121234567"): 8 to 15 digits,
# no leading 0 (a trunk prefix), no parentheses (an area code written nationally).
_MISSING_PLUS = re.compile(r"[1-9](?:[ .\-]?[0-9]){7,14}\Z")


def _phone_text(value: str) -> str:
    """A phone as typed, with the ways of writing an international prefix made one: "+"."""
    text = value.strip() if value.isascii() else value.translate(_PHONE_CHARS).strip()
    if text[:4].lower() == "tel:":
        text = text[4:].lstrip()
    if text.endswith("+") and not text.startswith("+"):
        text = "+" + text[:-1].rstrip()  # typed in right-to-left text: "989121234567+"
    if text.startswith("00"):
        text = "+" + text[2:]
    return text


def _parse_phone(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    import phonenumbers

    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


# Most phones arrive in E.164 already. For "+" and digits, `phonenumbers.parse` takes the
# country code (the 1 to 3 leading digits that are one: calling codes are prefix-free), and
# keeps the rest as the national number unless it starts with a 0 (an "Italian leading zero")
# or with what the country's `national_prefix_for_parsing` matches (a trunk prefix it may
# strip). Outside those two cases the number is built directly: half the cost of a phone, which
# paying for `is_valid_number` on top of parsing needs. A test checks it agrees with parse.
_E164 = re.compile(r"\+([1-9][0-9]{6,14})\Z")  # ASCII digits: `\d` would take any script's
_TRUNK_PREFIXES: dict[int, re.Pattern[str] | None] = {}


def _e164_number(digits: str) -> phonenumbers.PhoneNumber | None:
    """What `phonenumbers.parse("+" + digits)` gives, or None when it is not this simple."""
    import phonenumbers

    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if national[:1] == "0":
        return None
    if country_code not in _TRUNK_PREFIXES:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            country_code, phonenumbers.region_code_for_country_code(country_code))
        pattern = metadata.national_prefix_for_parsing if metadata is not None else None
        _TRUNK_PREFIXES[country_code] = re.compile(pattern) if pattern else None
    trunk = _TRUNK_PREFIXES[country_code]
    if trunk is not None and trunk.match(national):
        return None
    return phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))


def _phone(value: Any, ctx: NormalizeContext) -> str:
    import phonenumbers

    if isinstance(value, int) and not isinstance(value, bool):
        value = f"+{value}"
    if not isinstance(value, str):
        raise ValueError(f"expected a phone number, got {type(value).__name__}")
    text = _phone_text(value)
    e164 = _E164.match(text)
    if e164 is not None:
        number = _e164_number(e164.group(1))
        if number is not None and phonenumbers.is_valid_number(number):
            return text
    if text.startswith("+"):
        number = _parse_phone(_TRUNK.sub("", text, count=1) if "(" in text else text, None)
        if number is None:
            raise ValueError("not a phone number")
    else:
        region = ctx.region if ctx.region in phonenumbers.SUPPORTED_REGIONS else ctx.default_region
        number = _parse_phone(text, region) if region else None
        if (number is None or not phonenumbers.is_valid_number(number)) and _MISSING_PLUS.match(text):
            international = _parse_phone("+" + text, None)
            if international is not None and phonenumbers.is_valid_number(international):
                number = international
        if number is None:
            raise ValueError("not a phone number (give +country code or set default_region)")
    # Possible is not enough: a number in an unallocated or fictional range, or one cut short,
    # is a typo, and written to other apps it would replace a number that works.
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def needs_region(spec: FieldSpec, value: Any) -> bool:
    """Whether a value of a phone-kind field holds a number written without an international
    prefix, whose meaning depends on the region it is read in."""
    if spec.kind not in _PHONE_KINDS:
        return False
    if isinstance(value, str):
        items: Iterable[Any] = _SET_SEPARATORS.split(value) if spec.kind == "phone_set" else (value,)
    elif spec.kind == "phone_set" and isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return False  # empty, or an int (read as +<digits>), or not a phone at all
    for item in items:
        if isinstance(item, str):
            text = _phone_text(item)
            if text and not text.startswith("+") and any(c.isdigit() for c in text):
                return True
    return False


# --- handles --------------------------------------------------------------------------------
# A profile URL of a site whose URLs name the handle: (site, path, query). The first part of
# the path is the handle, except on the pages that are not anyone's profile (a post, a search).
_PROFILE_URL = re.compile(
    r"(?:https?://)?(?:(?:www|m|mobile|web)\.)?"
    r"(instagram\.com|twitter\.com|x\.com|t\.me|telegram\.me|facebook\.com|fb\.com|tiktok\.com"
    r"|linkedin\.com)/([^?#]*)(?:\?([^#]*))?(?:#.*)?\Z",
    re.IGNORECASE,
)
_NOT_IN_HANDLE = re.compile(r"[\s/]")
_NOT_PROFILES = frozenset({
    "p", "reel", "reels", "tv", "explore", "stories", "i", "intent", "home", "search", "hashtag",
    "share", "sharer.php", "groups", "pages", "events", "watch", "login", "s", "c", "joinchat",
})


def _handle_of_url(site: str, path: str, query: str | None) -> str:
    parts = [unquote(p) for p in path.split("/") if p]
    site = site.lower()
    if site == "linkedin.com":  # linkedin.com/in/HANDLE
        return parts[1] if len(parts) > 1 and parts[0].lower() == "in" else ""
    if site in ("facebook.com", "fb.com") and parts[:1] == ["profile.php"]:
        return (parse_qs(query or "").get("id") or [""])[0]  # facebook.com/profile.php?id=NUMBER
    return parts[0] if parts and parts[0].lower() not in _NOT_PROFILES else ""


def _handle(value: Any, ctx: NormalizeContext) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a handle, got {type(value).__name__}")
    text = value.strip() if value.isascii() else value.translate(_INVISIBLE).strip()
    url = _PROFILE_URL.match(text.lstrip("@"))
    if url is not None:
        text = _handle_of_url(*url.groups())
    text = _nfc(text.lstrip("@").lower())
    if not text or _NOT_IN_HANDLE.search(text):
        raise ValueError("not a handle (a name without spaces, or a profile URL that names one)")
    return text


def _set_of(item: Any) -> Any:
    def normalize(value: Any, ctx: NormalizeContext) -> list[str]:
        if isinstance(value, str):
            items: Iterable[Any] = _SET_SEPARATORS.split(value)
        elif isinstance(value, list | tuple | set | frozenset):
            items = value
        else:
            raise ValueError(f"expected a list, got {type(value).__name__}")
        out = set()
        for one in items:
            if one is None or (isinstance(one, str) and not one.strip()):
                continue
            out.add(item(one, ctx))
        return sorted(out)

    return normalize


def _tag(value: Any, ctx: NormalizeContext) -> str:
    text = _str(value, ctx)
    if text is None:
        raise ValueError("empty tag")
    return text


def _country(value: Any, ctx: NormalizeContext) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a country code or name, got {type(value).__name__}")
    text = value.strip()
    code = text.upper()
    countries = _countries()
    if code in countries:
        return code
    code = country_code(text) or ""
    if code not in countries:
        raise ValueError("not a country (an ISO 3166-1 code, or a country's name)")
    return code


def _locale(value: Any, ctx: NormalizeContext) -> str:
    text = _str(value, ctx) or ""
    m = _LOCALE_RE.match(text)
    if not m:
        raise ValueError("not a BCP 47 locale such as en-US")
    lang, script, region = m.groups()
    parts = [lang.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def _timezone(value: Any, ctx: NormalizeContext) -> str:
    text = _str(value, ctx) or ""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone name") from exc
    return text


def _choice(allowed: tuple[str, ...], what: str) -> Any:
    def normalize(value: Any, ctx: NormalizeContext) -> str:
        text = (_str(value, ctx) or "").lower().replace(" ", "_").replace("-", "_")
        if text not in allowed:
            raise ValueError(f"not a known {what} (one of {', '.join(allowed)})")
        return text

    return normalize


def parse_datetime(value: Any) -> datetime:
    """A timezone-aware UTC datetime from ISO text, epoch seconds/milliseconds or a datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_datetime(int(text))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        raise ValueError(f"expected a date-time, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _datetime(value: Any, ctx: NormalizeContext) -> str:
    try:
        dt = parse_datetime(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError("not an ISO 8601 date-time") from exc
    return dt.isoformat(timespec="seconds" if dt.microsecond == 0 else "microseconds")


def _date(value: Any, ctx: NormalizeContext) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = _str(value, ctx) or ""
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError as exc:
        raise ValueError("not an ISO 8601 date") from exc


def _int(value: Any, ctx: NormalizeContext) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got bool")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("expected an integer")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except ValueError:  # int()'s own message quotes the value
        raise ValueError("expected an integer") from None


def _float(value: Any, ctx: NormalizeContext) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got bool")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # float()'s own message quotes the value
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        # NaN never equals itself, so every merge would see a change; strict JSON has neither.
        raise ValueError("expected a finite number")
    return number


def _bool(value: Any, ctx: NormalizeContext) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "on"}:
        return True
    if text in {"0", "false", "no", "n", "off"}:
        return False
    raise ValueError("expected true or false")


_NORMALIZERS: dict[str, Any] = {
    "str": _str,
    "name": _name,
    "handle": _handle,
    "email": _email,
    "phone": _phone,
    "email_set": _set_of(_email),
    "phone_set": _set_of(_phone),
    "tag_set": _set_of(_tag),
    "country": _country,
    "locale": _locale,
    "timezone": _timezone,
    "lifecycle": _choice(LIFECYCLE_STAGES, "lifecycle stage"),
    "consent": _choice(CONSENT_VALUES, "consent value"),
    "datetime": _datetime,
    "date": _date,
    "int": _int,
    "float": _float,
    "bool": _bool,
}


def identity_hash(key: bytes, kind: str, value: str) -> bytes:
    """Keyed hash of one identity (HMAC-SHA256, raw bytes): matching works without storing raw
    emails or phones."""
    return hmac.digest(key, f"{kind}:{value}".encode(), "sha256")  # one C call


def identity_values(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (kind, normalized value) pairs a customer can be matched by: emails, then phones
    (WhatsApp numbers are phones), then social handles as `network:handle` (kind `handle`)."""
    out: list[tuple[str, str]] = []
    if values.get("email"):
        out.append(("email", values["email"]))
    out += [("email", e) for e in values.get("other_emails") or () if e != values.get("email")]
    if values.get("phone"):
        out.append(("phone", values["phone"]))
    out += [("phone", p) for p in values.get("other_phones") or () if p != values.get("phone")]
    for name, value in values.items():
        if not value or not name.startswith(SOCIAL_PREFIX):
            continue
        if name == WHATSAPP:
            if value != values.get("phone") and value not in (values.get("other_phones") or ()):
                out.append(("phone", value))
        else:
            out.append(("handle", f"{name[len(SOCIAL_PREFIX):]}:{value}"))
    return out


class Address(BaseModel):
    """A postal address; `country` is ISO 3166-1 alpha-2."""

    model_config = ConfigDict(extra="forbid")
    street: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


class CanonicalCustomer(BaseModel):
    """The canonical customer as a nested model; `from_values` builds it from flat values."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str
    email: str | None = None
    other_emails: list[str] = Field(default_factory=list)
    phone: str | None = None
    other_phones: list[str] = Field(default_factory=list)
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    address: Address = Field(default_factory=Address)
    locale: str | None = None
    timezone: str | None = None
    lifecycle_stage: str | None = None
    email_consent: str | None = None
    email_consent_at: str | None = None
    tags: list[str] = Field(default_factory=list)
    social: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_values(cls, customer_id: str, values: Mapping[str, Any]) -> CanonicalCustomer:
        """Nest flat canonical values (`address.city`, `social.x`, `custom.y`)."""
        top: dict[str, Any] = {"customer_id": customer_id, "address": {}, "social": {}, "custom": {}}
        for name, value in values.items():
            head, _, rest = name.partition(".")
            if rest:
                top[head][rest] = value
            else:
                top[name] = value
        return cls.model_validate(top)
