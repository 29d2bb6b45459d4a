"""Member <-> app fields: how a Mailchimp member becomes the flat app fields the field map
names, and how app fields become the body of a write.

App fields: `email_address`, `status`, `tags` (a set of names), `language`, `vip`,
`email_type`, and one field per merge tag (`FNAME`, `LNAME`, `PHONE`, `BIRTHDAY`, ...). An
address merge field is split into `TAG.addr1`, `TAG.addr2`, `TAG.city`, `TAG.state`, `TAG.zip`
and `TAG.country`; Mailchimp takes an address only whole (addr1, city, state and zip), so a
write of some parts is completed from the member's current address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from customer_sync_connectors.mailchimp.models import Member

__all__ = [
    "ADDRESS_PARTS",
    "MEMBER_FIELDS",
    "STATUSES",
    "FieldRefused",
    "address_tags_in",
    "record_fields",
    "status_for_write",
    "write_body",
]

STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})
ADDRESS_PARTS = ("addr1", "addr2", "city", "state", "zip", "country")
# Member attributes that are not merge tags; everything else is a merge tag.
MEMBER_FIELDS = frozenset({"email_address", "status", "tags", "language", "vip", "email_type"})
_READ_ONLY = frozenset({"last_changed", "timestamp_opt"})


class FieldRefused(ValueError):
    """A value Mailchimp cannot take; the message names the field, never the value."""


def record_fields(member: Member, *, address_tags: frozenset[str]) -> dict[str, Any]:
    """The app fields of a member. Unset merge fields read as "" (Mailchimp renders them so),
    so that clearing one in Mailchimp is a change like any other."""
    fields: dict[str, Any] = {
        "email_address": member.email_address,
        "status": member.status,
        "tags": sorted(t.name for t in member.tags),
        "language": member.language or "",
        "vip": bool(member.vip),
        "email_type": member.email_type or "html",
        "last_changed": member.last_changed.isoformat() if member.last_changed else None,
        "timestamp_opt": member.timestamp_opt or "",
    }
    for tag, value in member.merge_fields.items():
        if tag == "EMAIL":
            continue  # the address itself, already `email_address`
        if isinstance(value, Mapping) or tag in address_tags:
            parts = value if isinstance(value, Mapping) else {}
            for part in ADDRESS_PARTS:
                fields[f"{tag}.{part}"] = str(parts.get(part) or "")
        else:
            fields[tag] = "" if value is None else value
    return fields


def status_for_write(value: Any) -> str | None:
    """A canonical consent value as a member status: `bounced` is `cleaned`; `unknown` or empty
    says nothing (None: leave the status alone)."""
    if value in (None, "", "unknown"):
        return None
    text = str(value).strip().lower()
    if text == "bounced":
        return "cleaned"
    if text not in STATUSES:
        raise FieldRefused(f"status: not a Mailchimp member status ({', '.join(sorted(STATUSES))})")
    return text


def address_tags_in(fields: Mapping[str, Any]) -> set[str]:
    """The address merge tags some of whose parts are written."""
    return {k.partition(".")[0] for k in fields if "." in k and k.partition(".")[2] in ADDRESS_PARTS}


def write_body(fields: Mapping[str, Any], *, current: Member | None = None) -> dict[str, Any]:
    """The member body for app fields (without `email_address`, `status` and `tags`, which the
    caller places: they differ between create and update).

    Raises:
        FieldRefused: a field that cannot be written (a read-only field, an address part that
            is not one, a value that is not text).
    """
    body: dict[str, Any] = {}
    merges: dict[str, Any] = {}
    for key, value in fields.items():
        if key in MEMBER_FIELDS:
            if key == "language" and value not in (None, ""):
                body["language"] = str(value)
            elif key == "vip" and value is not None:
                body["vip"] = bool(value)
            elif key == "email_type" and value in ("html", "text"):
                body["email_type"] = value
            continue
        if key in _READ_ONLY:
            raise FieldRefused(f"{key}: read-only in Mailchimp")
        tag, dot, part = key.partition(".")
        if dot:
            if part not in ADDRESS_PARTS:
                raise FieldRefused(f"{key}: an address merge field has no part {part!r}")
            continue  # addresses are built whole below
        if isinstance(value, Mapping | list):
            raise FieldRefused(f"{key}: a merge field holds text")
        merges[tag] = "" if value is None else (value if isinstance(value, str) else str(value))
    for tag in sorted(address_tags_in(fields)):
        merges[tag] = _address(tag, fields, current)
    if merges:
        body["merge_fields"] = merges
    return body


def _address(tag: str, fields: Mapping[str, Any], current: Member | None) -> Any:
    now = current.merge_fields.get(tag) if current is not None else None
    parts = {p: str((now or {}).get(p) or "") if isinstance(now, Mapping) else "" for p in ADDRESS_PARTS}
    for part in ADDRESS_PARTS:
        key = f"{tag}.{part}"
        if key in fields:
            value = fields[key]
            parts[part] = "" if value is None else str(value)
    if not any(parts.values()):
        return ""  # cleared
    return parts
