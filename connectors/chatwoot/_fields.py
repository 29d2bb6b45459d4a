"""App fields of a Chatwoot contact: how a contact becomes app fields on read, and how app fields
become a create or update body.

A contact's own attributes are app fields by name (`name`, `email`, `phone_number`,
`identifier`). Its two attribute hashes are flattened one level: `custom_attributes.KEY` and
`additional_attributes.KEY` (`company_name`, `city`, `country_code`, `description`...).

Social profiles get their own fields, `social_profiles.NETWORK`, read from
`additional_attributes.social_profiles` (`{"instagram": "ann.k", "twitter": ...}`, where the
contact form keeps them). A contact an Instagram inbox made carries its handle there and, in
newer versions, in `additional_attributes.social_instagram_user_name`; the latter is the
fallback for `social_profiles.instagram`. Chatwoot merges `additional_attributes` into the stored
hash one level deep, so writing one network sends the whole `social_profiles` hash: the current
one with that network changed.

`whatsapp` is the number of the contact's WhatsApp inbox identity: the `source_id` of a
`Channel::Whatsapp` contact inbox is the number's digits (the WhatsApp id). It is read-only (an
identity cannot be written through the contacts API), and with `phone_number` it is what a
contact reached only on WhatsApp is matched by.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_sync_connectors.chatwoot.models import Contact

__all__ = [
    "ADDITIONAL_PREFIX",
    "CUSTOM_PREFIX",
    "READ_ONLY_FIELDS",
    "SOCIAL_PREFIX",
    "FieldRefused",
    "check_writable",
    "needs_current",
    "record_fields",
    "write_body",
]

CUSTOM_PREFIX = "custom_attributes."
ADDITIONAL_PREFIX = "additional_attributes."
SOCIAL_PREFIX = "social_profiles."
_DIRECT = ("name", "email", "phone_number", "identifier")
READ_ONLY_FIELDS = frozenset({"whatsapp", "blocked", "created_at"})
_SOCIAL = "social_profiles"
# Channel inboxes whose source id is the person's phone number (digits of the WhatsApp id).
_WHATSAPP_CHANNELS = frozenset({"Channel::Whatsapp"})
# Where a channel put the handle when social_profiles lacks it (Instagram inbox builder).
_HANDLE_FALLBACKS = {"instagram": "social_instagram_user_name"}


class FieldRefused(ValueError):
    """App fields that cannot be written to Chatwoot; names the fields, never the values."""

    def __init__(self, reason: str, fields: Iterable[str]) -> None:
        self.fields = sorted(fields)
        super().__init__(f"{reason}: {', '.join(self.fields)}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def record_fields(contact: Contact) -> dict[str, Any]:
    """The app fields of a contact (see the module docstring)."""
    fields: dict[str, Any] = {key: _text(getattr(contact, key)) for key in _DIRECT}
    fields["blocked"] = contact.blocked
    fields["created_at"] = (datetime.fromtimestamp(contact.created_at, UTC).isoformat()
                            if contact.created_at else None)
    for key, value in contact.custom_attributes.items():
        fields[CUSTOM_PREFIX + key] = value
    extra = contact.additional_attributes
    for key, value in extra.items():
        if not isinstance(value, dict | list):
            fields[ADDITIONAL_PREFIX + key] = value
    profiles = extra.get(_SOCIAL)
    profiles = profiles if isinstance(profiles, dict) else {}
    for network in {*profiles, *_HANDLE_FALLBACKS}:
        handle = _text(profiles.get(network))
        if handle is None and network in _HANDLE_FALLBACKS:
            handle = _text(extra.get(_HANDLE_FALLBACKS[network]))
        fields[SOCIAL_PREFIX + network] = handle
    fields["whatsapp"] = _whatsapp_number(contact)
    return fields


def _whatsapp_number(contact: Contact) -> str | None:
    for identity in contact.contact_inboxes:
        inbox = identity.inbox
        source = (identity.source_id or "").strip()
        if inbox is not None and inbox.channel_type in _WHATSAPP_CHANNELS and source:
            return source if source.startswith("+") else "+" + source
    return None


def check_writable(fields: Mapping[str, Any]) -> None:
    """Raise FieldRefused for fields that are read-only or unknown here."""
    read_only = [k for k in fields if k in READ_ONLY_FIELDS]
    if read_only:
        raise FieldRefused('read-only in Chatwoot (map them with direction = "from_app")',
                           read_only)
    unknown = [k for k in fields if k not in _DIRECT and not _prefixed(k)]
    if unknown:
        raise FieldRefused("not Chatwoot contact fields", unknown)
    if ADDITIONAL_PREFIX + _SOCIAL in fields:
        raise FieldRefused("write social profiles one network at a time (social_profiles.NAME)",
                           [ADDITIONAL_PREFIX + _SOCIAL])


def _prefixed(name: str) -> bool:
    return any(name.startswith(p) and len(name) > len(p)
               for p in (CUSTOM_PREFIX, ADDITIONAL_PREFIX, SOCIAL_PREFIX))


def needs_current(fields: Mapping[str, Any]) -> bool:
    """Whether writing these fields needs the contact's current `social_profiles`."""
    return any(k.startswith(SOCIAL_PREFIX) for k in fields)


def write_body(fields: Mapping[str, Any], *, current: Contact | None = None) -> dict[str, Any]:
    """The contact attributes for app fields.

    Args:
        fields: app fields to write.
        current: the contact as it is now, when a social profile is written (`needs_current`):
            its other networks are kept.

    Raises:
        FieldRefused: a field is read-only or unknown.
    """
    check_writable(fields)
    body: dict[str, Any] = {}
    for key in _DIRECT:
        if key in fields:
            body[key] = _text(fields[key])
    custom = {k[len(CUSTOM_PREFIX):]: v for k, v in fields.items() if k.startswith(CUSTOM_PREFIX)}
    if custom:
        body["custom_attributes"] = custom
    extra = {k[len(ADDITIONAL_PREFIX):]: v for k, v in fields.items()
             if k.startswith(ADDITIONAL_PREFIX)}
    social = {k[len(SOCIAL_PREFIX):]: _text(v) for k, v in fields.items()
              if k.startswith(SOCIAL_PREFIX)}
    if social:
        now = current.additional_attributes.get(_SOCIAL) if current is not None else None
        profiles = dict(now) if isinstance(now, dict) else {}
        for network, handle in social.items():
            if handle is None:
                profiles.pop(network, None)
            else:
                profiles[network] = handle
        extra[_SOCIAL] = profiles
        # The fallback must not bring back a handle removed or changed here.
        for network, source in _HANDLE_FALLBACKS.items():
            if network in social and current is not None and current.additional_attributes.get(
                    source) not in (None, "", social[network]):
                extra[source] = social[network]
    if extra:
        body["additional_attributes"] = extra
    return body
