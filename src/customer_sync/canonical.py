"""The canonical customer schema: the one customer the daemon believes in.

Canonical values are flat: each field has a dotted name (`email`, `address.country`,
`social.twitter`, `custom.loyalty_points`) so that merge, conflicts and provenance work field by
field. Every value goes through `normalize_value` on the way in: emails are checked and
lower-cased (email-validator), phones become E.164 (phonenumbers), strings are trimmed, countries
are ISO 3166 alpha-2 codes. An invalid value raises `MappingError` naming the field, never the
value, and the rest of the record goes on.

`CanonicalCustomer` is the same schema as a pydantic model, for export and documentation.
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field

from customer_sync.errors import MappingError

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
    "normalize_value",
    "parse_datetime",
]

Kind = Literal[
    "str", "email", "phone", "email_set", "phone_set", "tag_set", "country", "locale",
    "timezone", "lifecycle", "consent", "datetime", "int", "float", "bool", "date",
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
        FieldSpec("first_name", "str", True),
        FieldSpec("last_name", "str", True),
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
CUSTOM_PREFIX = "custom."
_SOCIAL_RE = re.compile(r"^social\.[a-z][a-z0-9_]{0,31}$")
_SET_KINDS = frozenset({"email_set", "phone_set", "tag_set"})


def field_spec(name: str, custom_fields: Mapping[str, str] | None = None) -> FieldSpec | None:
    """The spec of a canonical field name, or None when the name is not canonical."""
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if _SOCIAL_RE.match(name):
        return FieldSpec(name, "str", True, "social handle")
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
    """What normalization needs besides the value: the region for phones without a prefix."""

    default_region: str | None = None


_WS = re.compile(r"\s+")
# phonenumbers' regions are the ISO 3166-1 alpha-2 codes with a numbering plan of their own
# ("001" is its non-geographic pseudo-region); the seven territories without one are added.
_COUNTRIES = (frozenset(phonenumbers.SUPPORTED_REGIONS) - {"001"}) | {
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


def _str(value: Any, ctx: NormalizeContext) -> str | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected text, got {type(value).__name__}")
    text = _WS.sub(" ", str(value)).strip()
    return text or None


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
    plain = _PLAIN_EMAIL.match(text)
    if plain is not None:
        local, domain = plain.groups()
        known = _KNOWN_DOMAINS.get(domain)
        if known is not None and len(local) + 1 + known[1] <= _EMAIL_MAX_OCTETS:
            return (local + "@" + known[0]).lower()
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError("not a valid email address") from exc
    if plain is not None and len(_KNOWN_DOMAINS) < _KNOWN_DOMAINS_MAX:
        forms = (domain, info.domain, info.ascii_domain or "")
        _KNOWN_DOMAINS[domain] = (info.domain, max(len(f.encode()) for f in forms))
    # The local part is case-sensitive by RFC, but no mailbox provider treats it so, and
    # every CRM matches emails case-insensitively: lower-case the whole address.
    return info.normalized.lower()


def _phone(value: Any, ctx: NormalizeContext) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"+{value}"
    if not isinstance(value, str):
        raise ValueError(f"expected a phone number, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else ctx.default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number (give +country code or set default_region)") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _set_of(item: Any) -> Any:
    def normalize(value: Any, ctx: NormalizeContext) -> list[str]:
        if isinstance(value, str):
            items: Iterable[Any] = [part for part in re.split(r"[,;]", value)]
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
    text = _str(value, ctx)
    code = (text or "").upper()
    if code not in _COUNTRIES:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
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
    """The (kind, normalized value) pairs a customer can be matched by: emails, then phones."""
    out: list[tuple[str, str]] = []
    if values.get("email"):
        out.append(("email", values["email"]))
    out += [("email", e) for e in values.get("other_emails") or () if e != values.get("email")]
    if values.get("phone"):
        out.append(("phone", values["phone"]))
    out += [("phone", p) for p in values.get("other_phones") or () if p != values.get("phone")]
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
