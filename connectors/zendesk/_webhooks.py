"""Zendesk webhook deliveries: signature check, freshness, and user events as changes.

Signature (CONTRACTS.md, "Webhooks"): `X-Zendesk-Webhook-Signature` is
`base64(HMAC-SHA256(signing secret, TIMESTAMP + BODY))`, where TIMESTAMP is the exact
`X-Zendesk-Webhook-Signature-Timestamp` header value. The header's format is UNVERIFIED (a
third-party sample shows ISO 8601); it is signed as opaque text, and for the freshness check
ISO 8601 and Unix seconds are both read. A timestamp that is neither is refused: without it a
captured delivery could be replayed forever.

Event bodies are thin (`detail` holds ids and a few attributes), so every event becomes a
`Change` naming the user only, and the engine reads the user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import ValidationError

from customer_sync.sdk import Change
from customer_sync_connectors.zendesk.models import WebhookEvent

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookMalformed",
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


class WebhookMalformed(ValueError):
    """The body is not a Zendesk event; the message never quotes the body."""


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
        WebhookMalformed: the body is not a JSON object with an event type and a user id.
    """
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookMalformed("the body is not JSON") from exc
    if not isinstance(raw, dict):
        raise WebhookMalformed("the body is not a JSON object")
    try:
        event = WebhookEvent.model_validate(raw)
    except ValidationError as exc:
        names = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
        raise WebhookMalformed(f"the event lacks or mistypes: {', '.join(names)}") from None
    if not event.type.startswith(_USER_EVENT):
        return []  # an organization or ticket event: not a customer change
    user_id = _user_id(event)
    if user_id is None:
        raise WebhookMalformed("a user event names no user id")
    role = event.detail.get("role")
    if end_users_only and isinstance(role, str) and role != "end-user":
        return []
    kind = event.type[len(_USER_EVENT):]
    deleted = kind == _DELETED or (kind == _ACTIVE_CHANGED and event.event.get("current") is False)
    return [Change(app_record_id=user_id, kind="delete" if deleted else "upsert",
                   occurred_at=event.time)]


def _user_id(event: WebhookEvent) -> str | None:
    raw = event.detail.get("id")
    if raw is None and event.subject and event.subject.startswith(_USER_SUBJECT):
        raw = event.subject[len(_USER_SUBJECT):]
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    return text if text.isdigit() and text != "0" else None
