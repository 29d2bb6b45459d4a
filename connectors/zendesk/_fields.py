"""App fields of a Zendesk user: how a user (and its identities) becomes app fields on read,
and how app fields become a `{"user": ...}` write body.

Zendesk keeps one `name`; the sync's canonical customer has a first and a last name. On read
the name is split as every one-field full name is (`customer_sync.canonical.split_full_name`):
at its last ordinary space (`"Juan Carlos García"` is first name `Juan Carlos`, last name
`García`; a one-word name is a first name only). On write the parts are joined with one space,
and any space *inside* the last name is written as a no-break space (U+00A0), which Zendesk
displays the same, so `Ludwig` / `van Beethoven` comes back as exactly what was written instead
of turning into `Ludwig van` / `Beethoven` and spreading that to every other app. (Names written
by earlier versions hold the no-break space inside the first name, and read back the same.)
Zendesk requires a name, so a customer without one is written with its email (or phone) as the
name, and a name equal to the user's email or phone reads back as no name at all.

`other_emails` / `other_phones` are the user's email and phone_number identities other than
the primary ones, sorted so that equal sets give equal fingerprints. They are read-only here:
removing an identity needs calls the connector does not make.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from customer_sync.canonical import split_full_name

if TYPE_CHECKING:
    from customer_sync_connectors.zendesk.models import Identity, User

__all__ = [
    "READ_ONLY_FIELDS",
    "USER_FIELD_PREFIX",
    "WRITABLE_FIELDS",
    "FieldRefused",
    "join_name",
    "record_fields",
    "split_name",
    "write_body",
]

NBSP = "\u00a0"
USER_FIELD_PREFIX = "user_fields."
# App field -> the Zendesk user attribute written for it (`UserForAdmin`, not read-only).
_DIRECT = ("phone", "locale", "external_id", "organization_id", "notes", "details", "alias")
WRITABLE_FIELDS = frozenset({"name", "first_name", "last_name", "email", "tags", *_DIRECT})
# Exposed on read, never written: identities (see the module docstring), attributes the OAS
# marks read-only (iana_time_zone, created_at), and role, which a sync must never change.
READ_ONLY_FIELDS = frozenset(
    {"other_emails", "other_phones", "iana_time_zone", "time_zone", "role", "created_at"}
)
_NOT_DIGITS = re.compile(r"[^\d+]")


class FieldRefused(ValueError):
    """App fields that cannot be written to Zendesk; names the fields, never the values."""

    def __init__(self, reason: str, fields: Iterable[str]) -> None:
        self.fields = sorted(fields)
        super().__init__(f"{reason}: {', '.join(self.fields)}")


def split_name(name: str | None, *, email: str | None = None,
               phone: str | None = None) -> tuple[str | None, str | None]:
    """(first, last) of a Zendesk name, by the rule in the module docstring."""
    text = (name or "").strip()
    if not text or _is_placeholder(text, email=email, phone=phone):
        return None, None
    first, last = split_full_name(text)  # a no-break space is no place to split
    return _unbreak(first), _unbreak(last)


def _unbreak(part: str | None) -> str | None:
    return (part or "").replace(NBSP, " ").strip() or None


def join_name(first: str | None, last: str | None) -> str | None:
    """The Zendesk name for two parts, None when both are empty."""
    first_text = " ".join((first or "").split())
    last_text = " ".join((last or "").split()).replace(" ", NBSP)
    return " ".join(part for part in (first_text, last_text) if part) or None


def _is_placeholder(name: str, *, email: str | None, phone: str | None) -> bool:
    lowered = name.lower()
    if email and lowered == email.strip().lower():
        return True
    return bool(phone) and _digits(name) == _digits(phone or "") and any(c.isdigit() for c in name)


def _digits(value: str) -> str:
    return _NOT_DIGITS.sub("", value)


def _placeholder_name(email: str | None, phone: str | None) -> str | None:
    return (email or "").strip() or (phone or "").strip() or None


def record_fields(user: User, identities: Iterable[Identity] | None) -> dict[str, Any]:
    """The app fields of a live user; identities None leaves other_emails/other_phones out
    (absent means "not known", which the engine never reads as a change)."""
    first, last = split_name(user.name, email=user.email, phone=user.phone)
    fields: dict[str, Any] = {
        "email": user.email,
        "phone": user.phone,
        "name": user.name,
        "first_name": first,
        "last_name": last,
        "tags": sorted(user.tags),
        "locale": user.locale,
        "time_zone": user.time_zone,
        "iana_time_zone": user.iana_time_zone,
        "external_id": user.external_id,
        "organization_id": user.organization_id,
        "notes": user.notes,
        "details": user.details,
        "alias": user.alias,
        "role": user.role,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }
    for key, value in user.user_fields.items():
        fields[USER_FIELD_PREFIX + key] = value
    if identities is not None:
        primary_email = (user.email or "").lower()
        primary_phone = _digits(user.phone or "")
        emails, phones = set(), set()
        for identity in identities:
            if not identity.value:
                continue
            if identity.type == "email" and identity.value.lower() != primary_email:
                emails.add(identity.value)
            elif identity.type == "phone_number" and _digits(identity.value) != primary_phone:
                phones.add(identity.value)
        fields["other_emails"] = sorted(emails, key=str.lower)
        fields["other_phones"] = sorted(phones)
    return fields


def needs_current_name(fields: Mapping[str, Any]) -> bool:
    """Whether writing these fields needs the user's current name: one name part alone cannot
    be written, because Zendesk stores the two together."""
    if "name" in fields:
        return False
    has_first, has_last = "first_name" in fields, "last_name" in fields
    if has_first != has_last:
        return True
    return has_first and join_name(fields["first_name"], fields["last_name"]) is None


def check_writable(fields: Mapping[str, Any]) -> None:
    """Raise FieldRefused for fields that are read-only or unknown here."""
    read_only = [k for k in fields if k in READ_ONLY_FIELDS]
    if read_only:
        raise FieldRefused('read-only in Zendesk here (map them with direction = "from_app")',
                           read_only)
    unknown = [k for k in fields if k not in WRITABLE_FIELDS and not _is_user_field(k)]
    if unknown:
        raise FieldRefused("not Zendesk user fields", unknown)


def _is_user_field(name: str) -> bool:
    return name.startswith(USER_FIELD_PREFIX) and len(name) > len(USER_FIELD_PREFIX)


def write_body(fields: Mapping[str, Any], *, current: User | None = None,
               on_create: bool = False) -> dict[str, Any]:
    """The Zendesk user attributes for app fields (the caller has already removed `email` from
    updates: Zendesk adds a second address instead of changing the primary one).

    Args:
        fields: app fields to write.
        current: the user as it is now, when a single name part is written (see
            `needs_current_name`); its other part is kept.
        on_create: the user may be new, so it needs a name even when none is given.

    Raises:
        FieldRefused: a field is read-only or unknown, tags are not a list, or the user would
            end up without a name, an email and a phone.
    """
    check_writable(fields)
    body: dict[str, Any] = {}
    for key in _DIRECT:
        if key in fields:
            body[key] = fields[key]
    if "email" in fields and fields["email"] not in (None, ""):
        body["email"] = fields["email"]
    if "tags" in fields:
        tags = fields["tags"]
        if tags is not None and not isinstance(tags, list | tuple | set | frozenset):
            raise FieldRefused("tags must be a list", ["tags"])
        body["tags"] = sorted(str(t) for t in tags or ())
    user_fields = {k[len(USER_FIELD_PREFIX):]: v for k, v in fields.items() if _is_user_field(k)}
    if user_fields:
        body["user_fields"] = user_fields

    name: str | None
    if "name" in fields:
        name = (fields["name"] or "").strip() or None
    elif "first_name" in fields or "last_name" in fields:
        first_now, last_now = (None, None)
        if current is not None:
            first_now, last_now = split_name(current.name, email=current.email,
                                             phone=current.phone)
        name = join_name(fields.get("first_name", first_now), fields.get("last_name", last_now))
    elif on_create:
        name = None
    else:
        return body
    if name is None:
        email = fields.get("email") or (current.email if current else None)
        phone = fields.get("phone") or (current.phone if current else None)
        name = _placeholder_name(email, phone)
        if name is None:
            raise FieldRefused("Zendesk needs a name, an email or a phone",
                               ["first_name", "last_name"])
    body["name"] = name
    return body
