"""Zendesk webhook deliveries: signature check, freshness, and user events as changes.

Signature (CONTRACTS.md, "Webhooks"): `X-Zendesk-Webhook-Signature` is
`base64(HMAC-SHA256(signing secret, TIMESTAMP + BODY))`, where TIMESTAMP is the exact
`X-Zendesk-Webhook-Signature-Timestamp` header value. The header's format is UNVERIFIED (a
third-party sample shows ISO 8601); it is signed as opaque text, and for the freshness check
ISO 8601 and Unix seconds are both read. A timestamp that is neither is refused: without it a
captured delivery could be replayed forever.

A delivery is one event, a JSON object (same section). It is read with the SDK's bounded reader
into a `ZendeskEvent`: ids positive 64-bit integers (sent as text inside `detail`), the time
within the SDK's event range; anything else is a `WebhookRefused`, never a crash. Event bodies
are thin (`detail` holds ids and a few attributes), so every user event becomes a `Change`
naming the user only, and the engine reads the user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from customer_sync.sdk import Change, EventTime, PositiveId, WebhookRefused, read_webhook

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ZendeskEvent",
    "changes_of",
    "signature_problem",
]

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
_USER_EVENT = "zen:event-type:user."
_USER_SUBJECT = "zen:user:"
# Events after which the user is gone: Zendesk's delete is a soft delete, seen as
# `user.deleted` and as `user.active_changed` to false (Webhook event types page).
_DELETED = "deleted"
_ACTIVE_CHANGED = "active_changed"
_MAX_ID = 2**63 - 1  # PositiveId's bound
_MAX_ID_DIGITS = len(str(_MAX_ID))


def _id_text(value: Any) -> Any:
    """Zendesk sends ids as text inside `detail` ("6596848315901"; "0" when unset): ASCII
    digits become the integer, which `PositiveId` then bounds. Integers pass as they are."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS):
            raise ValueError("not an id")
        return int(text)
    return value


ZendeskId = Annotated[PositiveId, BeforeValidator(_id_text)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EventDetail(_Shape):
    """`detail`: the object the event is about, as ids and a few attributes."""

    id: ZendeskId | None = None
    role: str | None = Field(None, max_length=64)


class EventTransition(_Shape):
    """`event`: what changed, e.g. `{"current": false, "previous": true}` for active_changed."""

    current: JsonValue = None
    previous: JsonValue = None


class ZendeskEvent(_Shape):
    """A Zendesk event webhook body, e.g. `zen:event-type:user.created` (CONTRACTS.md,
    "Webhooks"); other keys are ignored."""

    type: str = Field(max_length=200)
    subject: str | None = Field(None, max_length=200)
    time: EventTime | None = None
    detail: EventDetail = Field(default_factory=EventDetail)
    event: EventTransition = Field(default_factory=EventTransition)


def _parse_timestamp(value: str) -> datetime | None:
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return at.astimezone(UTC) if at.tzinfo is not None else None


def signature_problem(headers: Mapping[str, str], body: bytes, *, secret: str,
                      now: datetime, max_age_s: float) -> str | None:
    """Why a delivery is refused, or None when it is authentic and fresh.

    Header names are matched case-insensitively; the signatures are compared in constant time.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER)
    timestamp = lowered.get(TIMESTAMP_HEADER)
    if not signature or timestamp is None:
        return "missing_signature"
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "bad_signature"
    expected = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return "bad_signature"
    signed_at = _parse_timestamp(timestamp)
    if signed_at is None:
        return "unreadable_timestamp"
    age_s = (now - signed_at).total_seconds()
    if age_s > max_age_s:
        return "stale"
    if -age_s > max_age_s:
        return "from_the_future"
    return None


def changes_of(body: bytes, *, end_users_only: bool) -> list[Change]:
    """The changes a verified delivery reports: one per user event, none for other events.

    Raises:
        WebhookRefused: the body is not one bounded Zendesk event, or a user event names no
            user id; the message names what is wrong, never a value.
    """
    event = read_webhook(body, ZendeskEvent)
    if not event.type.startswith(_USER_EVENT):
        return []  # an organization or ticket event: not a customer change
    user_id = _user_id(event)
    if user_id is None:
        raise WebhookRefused("a user event names no user id")
    role = event.detail.role
    if end_users_only and role is not None and role != "end-user":
        return []
    kind = event.type[len(_USER_EVENT):]
    deleted = kind == _DELETED or (kind == _ACTIVE_CHANGED and event.event.current is False)
    return [Change(app_record_id=str(user_id), kind="delete" if deleted else "upsert",
                   occurred_at=event.time)]


def _user_id(event: ZendeskEvent) -> int | None:
    """`detail.id`, else the id in `subject` (`zen:user:<id>`); None when neither is one."""
    if event.detail.id is not None:
        return event.detail.id
    if event.subject and event.subject.startswith(_USER_SUBJECT):
        text = event.subject[len(_USER_SUBJECT):]
        if text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS:
            number = int(text)
            return number if 0 < number <= _MAX_ID else None
    return None
