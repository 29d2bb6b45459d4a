"""The shapes of Mailchimp payloads the connector reads: members, member pages and batches,
keeping only the fields we touch (webhook events are in `_webhooks`).

Field names follow the Marketing API's OpenAPI description (`List_Members`, `Batch`; see
shared/specs/CONTRACTS.md, section 3). Models ignore keys they do not name, so a new vendor
field never breaks a sync.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Batch", "BatchResult", "Member", "MembersPage"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Tag(_Payload):
    id: int | None = None
    name: str


class Member(_Payload):
    """A list member as `GET /lists/{list_id}/members/{subscriber_hash}` renders it."""

    id: str  # the subscriber hash: MD5 of the lower-cased address
    email_address: str
    status: str  # subscribed, unsubscribed, cleaned, pending, transactional; "archived" on read
    merge_fields: dict[str, Any] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list)
    language: str | None = None
    vip: bool | None = None
    email_type: str | None = None
    last_changed: datetime | None = None
    timestamp_opt: str | None = None

    @field_validator("last_changed", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("last_changed", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def is_archived(self) -> bool:
        return self.status == "archived"


class MembersPage(_Payload):
    """One page of `GET /lists/{list_id}/members`."""

    members: list[Member]
    total_items: int | None = None


class Batch(_Payload):
    """A batch operation (`POST /batches`, `GET /batches/{batch_id}`)."""

    id: str
    status: str  # pending, preprocessing, started, finalizing, finished
    total_operations: int | None = None
    errored_operations: int | None = None
    response_body_url: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status == "finished"


class BatchResult(_Payload):
    """One operation's result in the archive: `response` is the answer's JSON as a string."""

    status_code: int
    operation_id: str | None = None
    response: str | None = None
