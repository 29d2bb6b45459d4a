"""The shapes of Chatwoot payloads the connector reads: contacts, their contact inboxes, list
and search pages, inboxes; only the fields we touch (webhook events are in `_webhooks`).

Field names follow the contact partial of Chatwoot's views and `contacts_list_response`
(CONTRACTS.md section 4). Models ignore keys they do not name, so a new vendor field never breaks
a sync. Where Chatwoot is looser than its swagger it is modelled as it behaves: `email`,
`phone_number` and `identifier` are null when unset, and the attribute hashes may be null on
contacts older versions stored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Contact", "ContactInbox", "ContactPage", "Inbox"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Inbox(_Payload):
    """An inbox as a contact inbox or the inbox list renders it."""

    id: int
    name: str | None = None
    channel_type: str | None = None  # Channel::Api, Channel::Whatsapp, Channel::Instagram...


class ContactInbox(_Payload):
    """The contact's identity in one inbox: `source_id` is the channel's id of the person (a
    WhatsApp number's digits, an Instagram-scoped id, a random id in an API inbox)."""

    source_id: str | None = None
    inbox: Inbox | None = None


class Contact(_Payload):
    """A contact as `GET /contacts/{id}`, the list and the search render it (no updated_at)."""

    id: int
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    blocked: bool = False
    custom_attributes: dict[str, Any] = Field(default_factory=dict)
    additional_attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: int | None = None  # Unix seconds
    last_activity_at: int | None = None
    contact_inboxes: list[ContactInbox] = Field(default_factory=list)

    @field_validator("custom_attributes", "additional_attributes", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("contact_inboxes", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return [] if value is None else value


class Meta(_Payload):
    count: int | None = None
    current_page: int | str | None = None


class ContactPage(_Payload):
    """One page of `GET /contacts` or `GET /contacts/search` (`contacts_list_response`)."""

    meta: Meta = Field(default_factory=Meta)
    payload: list[Contact]
