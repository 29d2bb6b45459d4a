"""Chatwoot webhook deliveries: signature check, freshness, and contact events as changes.

Signature (CONTRACTS.md section 4, "Signature", from Chatwoot's webhook-verification page):
`X-Chatwoot-Signature` is `sha256=` + hex(HMAC-SHA256(secret, TIMESTAMP + "." + BODY)), where
TIMESTAMP is the `X-Chatwoot-Timestamp` header (Unix seconds) and BODY the raw body. The secret
is the account webhook's. `X-Chatwoot-Delivery` is not signed and not a dedupe key, so it is
ignored. Versions before the signing (self-hosted servers older than the doc) send no signature:
their deliveries are refused, and the scheduled scan is then the only path.

A delivery is one JSON object: the contact's `webhook_data` with `event` (and
`changed_attributes` for `contact_updated`). It is read with the SDK's bounded reader; the
contact in it lacks the contact inboxes, so a contact event becomes a `Change` naming the contact
only, and the engine reads it. `contact_deleted` is dispatched inside newer Chatwoot versions,
but no listener was seen delivering it (CONTRACTS.md); if it arrives, it is a delete. Conversation
and message events are not customer changes here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from customer_sync.sdk import Change, PositiveId, WebhookRefused, read_webhook

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "ChatwootEvent", "changes_of",
           "signature_problem"]

SIGNATURE_HEADER = "x-chatwoot-signature"
TIMESTAMP_HEADER = "x-chatwoot-timestamp"
_PREFIX = "sha256="
_UPSERTS = frozenset({"contact_created", "contact_updated"})
_DELETES = frozenset({"contact_deleted"})


class ChatwootEvent(BaseModel):
    """A Chatwoot webhook body; keys other than these are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: str = Field(max_length=100)
    id: PositiveId | None = None


def signature_problem(headers: Mapping[str, str], body: bytes, *, secret: str, now: datetime,
                      max_age_s: float, future_skew_s: float) -> str | None:
    """Why a delivery is refused, or None when it is authentic and fresh.

    Header names are matched case-insensitively; signatures are compared in constant time.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = (lowered.get(SIGNATURE_HEADER) or "").strip()
    timestamp = (lowered.get(TIMESTAMP_HEADER) or "").strip()
    if not signature or not timestamp:
        return "missing_signature"
    if not signature.startswith(_PREFIX):
        return "bad_signature"
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest(signature[len(_PREFIX):].lower().encode(),
                               expected.hexdigest().encode()):
        return "bad_signature"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "unreadable_timestamp"
    age_s = now.timestamp() - int(timestamp)
    if age_s > max_age_s:
        return "stale"
    if -age_s > future_skew_s:
        return "from_the_future"
    return None


def changes_of(body: bytes) -> list[Change]:
    """The changes a verified delivery reports: one for a contact event, none for others.

    Raises:
        WebhookRefused: the body is not one bounded Chatwoot event, or a contact event names
            no contact id; the message names what is wrong, never a value.
    """
    event = read_webhook(body, ChatwootEvent)
    if event.event not in _UPSERTS | _DELETES:
        return []
    if event.id is None:
        raise WebhookRefused("a contact event names no contact id")
    kind = "delete" if event.event in _DELETES else "upsert"
    return [Change(app_record_id=str(event.id), kind=kind)]
