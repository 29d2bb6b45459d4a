"""The shapes of AcmeCRM's answers and webhook bodies, as `fake.py` documents them.

Only the keys the connector reads are declared; a contact's other keys are its app fields,
kept as they come (`extra="allow"`), so a field the vendor adds syncs without a code change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from customer_sync.sdk import EventTime

__all__ = ["BatchAnswer", "Contact", "ContactPage", "ItemError", "WebhookBody"]


class Contact(BaseModel):
    """One contact; `app_fields` are the keys that are not bookkeeping."""

    model_config = ConfigDict(extra="allow")

    id: str
    updated_at: datetime
    version: int
    deleted: bool = False

    @property
    def app_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ContactPage(BaseModel):
    data: list[Contact]
    next_page_token: str | None = None


class ItemError(BaseModel):
    code: str
    message: str = ""


class BatchItem(BaseModel):
    ref: str
    status: int
    contact: Contact | None = None
    error: ItemError | None = None


class BatchAnswer(BaseModel):
    results: list[BatchItem]


class WebhookEvent(BaseModel):
    type: str = Field(max_length=100)
    contact_id: str = Field(min_length=1, max_length=64)
    occurred_at: EventTime  # aware UTC, 1970 to 2099: a far-off date would overflow later


class WebhookBody(BaseModel):
    # AcmeCRM documents no batch size; a delivery longer than this is refused, not stored.
    events: list[WebhookEvent] = Field(max_length=100)
