"""HubSpot webhook deliveries: checking the v3 signature, and turning events into changes.

Signature v3 (CONTRACTS.md §1 "Webhooks", from HubSpot's request-validation page and its official
Python SDK): `X-HubSpot-Signature-v3` is base64(HMAC-SHA256(app secret, method + URI + body +
timestamp)), where the timestamp is the `X-HubSpot-Request-Timestamp` header in epoch
milliseconds. Deliveries older than the allowed age are refused, so a captured request cannot be
replayed later. The docs' rule about URL-decoding some characters of the URI first is UNVERIFIED
and not applied: the URI is hashed exactly as the delivery was addressed.

A delivery is a JSON array of events (same section). It is read with the SDK's bounded reader
into `HubSpotEvent`s: at most `MAX_EVENTS` of them, ids positive 64-bit integers, times within
the SDK's event range; anything else is a `WebhookRefused`, never a crash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from customer_sync.sdk import (
    LATEST_EVENT_AT,
    AppRecord,
    Change,
    EventTime,
    PositiveId,
    read_webhook,
)
from customer_sync_connectors.hubspot.models import ms_of, time_of_ms

__all__ = ["MAX_EVENTS", "HubSpotEvent", "is_authentic", "parse_events"]

SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"

_UPSERTS = frozenset({"contact.creation", "contact.propertyChange", "contact.restore"})
_DELETES = frozenset({"contact.deletion", "contact.privacyDeletion"})
_MERGE = "contact.merge"

#: Events in one delivery. HubSpot batches events into one request; 100 per request is the
#: commonly quoted batch size (UNVERIFIED: not in CONTRACTS.md; the sandbox simulator batches
#: 100). A longer array is refused; if HubSpot ever sends one, the poll still picks the changes up.
MAX_EVENTS = 100
#: Ids one merge event may name as merged away. The merge fields are UNVERIFIED (CONTRACTS.md);
#: a merge joins two contacts, and a survivor of earlier merges may list those ids too.
MAX_MERGED_IDS = 100
_LATEST_MS = ms_of(LATEST_EVENT_AT)


def _epoch_ms(value: Any) -> Any:
    """`occurredAt` is epoch milliseconds (CONTRACTS.md example); bounds-checked before it
    becomes a datetime, where a huge value would overflow. Other values go on to pydantic's
    datetime parsing (ISO text), then the SDK's range check."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < _LATEST_MS:
            raise ValueError("epoch milliseconds out of range")
        return time_of_ms(value)
    return value


class HubSpotEvent(BaseModel):
    """One event of a delivery (CONTRACTS.md §1 "Webhooks"); other keys are ignored.

    `propertyName` and the merge fields (`primaryObjectId`, `mergedObjectIds`, `newObjectId`)
    are UNVERIFIED there; they are optional here and used only when present.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    subscription_type: str = Field(alias="subscriptionType", max_length=100)
    object_id: PositiveId = Field(alias="objectId")
    occurred_at: Annotated[EventTime, BeforeValidator(_epoch_ms)] | None = Field(
        None, alias="occurredAt"
    )
    property_name: str | None = Field(None, alias="propertyName", max_length=1000)
    primary_object_id: PositiveId | None = Field(None, alias="primaryObjectId")
    merged_object_ids: list[PositiveId] = Field(
        default_factory=list, alias="mergedObjectIds", max_length=MAX_MERGED_IDS
    )
    new_object_id: PositiveId | None = Field(None, alias="newObjectId")


_DELIVERY = TypeAdapter(Annotated[list[HubSpotEvent], Field(max_length=MAX_EVENTS)])


def is_authentic(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    url: str,
    method: str,
    now: datetime,
    max_age_s: float,
) -> bool:
    """True when the v3 signature matches and the timestamp is within `max_age_s` of `now`.

    Header names are matched case-insensitively. A timestamp further in the future than
    `max_age_s` is refused as well: it would keep a captured request valid for longer.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER, "").strip()
    timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    if not secret or not signature or not timestamp.isdigit():
        return False
    age_ms = ms_of(now) - int(timestamp)
    if abs(age_ms) > max_age_s * 1000:
        return False
    message = method.upper().encode() + url.encode() + body + timestamp.encode()
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.encode())


def parse_events(body: bytes, *, properties: frozenset[str]) -> list[Change]:
    """The changes a delivery reports, in delivery order, exact repeats dropped.

    - creation, propertyChange, restore: an upsert with no record, so the engine reads it. A
      propertyChange naming a property this app does not read is dropped.
    - deletion, privacyDeletion: a delete.
    - merge: for each merged-away id, an upsert carrying `AppRecord(deleted=True,
      merged_into=survivor)`, then an upsert of the survivor (its values changed).
    - other event types (associations, other objects): ignored.

    Raises:
        WebhookRefused: the body is not a bounded JSON array of events; the message names what
            is wrong, never a value.
    """
    changes: list[Change] = []
    for event in read_webhook(body, _DELIVERY):
        changes.extend(_changes_of(event, properties))
    # Keep the last of identical changes: a later event may undo an earlier one.
    last = {_key(c): i for i, c in enumerate(changes)}
    return [c for i, c in enumerate(changes) if last[_key(c)] == i]


def _changes_of(event: HubSpotEvent, properties: frozenset[str]) -> list[Change]:
    kind, at = event.subscription_type, event.occurred_at
    object_id = str(event.object_id)
    if kind in _UPSERTS:
        if event.property_name is not None and event.property_name not in properties:
            return []
        return [Change(app_record_id=object_id, kind="upsert", occurred_at=at)]
    if kind in _DELETES:
        return [Change(app_record_id=object_id, kind="delete", occurred_at=at)]
    if kind == _MERGE:
        survivor = str(event.new_object_id or event.primary_object_id or event.object_id)
        merged = [str(i) for i in event.merged_object_ids if str(i) != survivor]
        changes = [
            Change(
                app_record_id=old,
                kind="upsert",
                record=AppRecord(app_record_id=old, deleted=True, merged_into=survivor),
                occurred_at=at,
            )
            for old in merged
        ]
        return [*changes, Change(app_record_id=survivor, kind="upsert", occurred_at=at)]
    return []


def _key(change: Change) -> tuple[str, str, str | None]:
    merged_into = change.record.merged_into if change.record else None
    return (change.app_record_id, change.kind, merged_into)
