"""Settings of the `mailchimp` connector: one `[apps.NAME.settings]` block, validated at startup.

Limits and sizes come from shared/specs/CONTRACTS.md (section 3). Secrets are `SecretStr` and
come from the environment.
"""

from __future__ import annotations

import base64
from typing import Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from customer_sync.sdk import ConnectorSettings, Seconds, VendorUrl, WebhookMaxAge

__all__ = ["MailchimpSettings"]

MAX_CONNECTIONS = 10  # "10 simultaneous connections per user" (CONTRACTS.md)


class MailchimpSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `mailchimp` connector.

    Attributes:
        list_id: the audience (list) whose members are synced.
        api_key: an API key (Basic auth, the key as password); its `-usNN` suffix names the
            data center, so `base_url` may be left out. Or
        oauth_token: an OAuth access token (Bearer); then `base_url` is required.
        base_url: the API root, `https://usNN.api.mailchimp.com/3.0`.
        webhook_signing_secret: the audience webhook's signing secret (`X-Mailchimp-Signature`).
        webhook_url_secret: for an unsigned webhook: a secret put in the callback URL as
            `?secret=...`; deliveries whose URL does not carry it are refused. When both are
            set, the signature is required.
        webhook_max_age_s: signed deliveries older than this are refused (Mailchimp: 5 min).
        page_size: members per page (`count`, at most 1000).
        max_connections: requests in flight at once; Mailchimp allows 10 per *user*, so leave
            room when other integrations share the user.
        batch_threshold: writes of one kind at or above which the batch endpoint is used;
            fewer are sent as single calls (a batch is polled, so it is slower for a handful).
        batch_poll_interval_s, batch_timeout_s: how often, and how long, a batch is polled.
        late_arrival_s: how far before the newest `last_changed` already listed an incremental
            listing starts again, for members that show up late; they are listed once.
        status_if_new: the status a member created without an `email_consent` gets;
            `transactional` claims no marketing consent.
        delete_mode: `archive` (DELETE: the member can come back) or `permanent` (the
            delete-permanent action: the address can never be re-imported by the API).
        address_merge_fields: merge tags of the audience's address fields; an unset address
            reads as "" from Mailchimp, which only these tags turn into empty parts.
        timeout_s: timeout of each HTTP attempt (Mailchimp cuts calls at 120 s).
    """

    list_id: str = Field(min_length=1, max_length=64)
    api_key: SecretStr | None = None
    oauth_token: SecretStr | None = None
    base_url: VendorUrl | None = None
    webhook_signing_secret: SecretStr | None = None
    webhook_url_secret: SecretStr | None = None
    webhook_max_age_s: WebhookMaxAge = 300.0
    page_size: int = Field(1000, ge=1, le=1000)
    max_connections: int = Field(MAX_CONNECTIONS, ge=1, le=MAX_CONNECTIONS)
    batch_threshold: int = Field(10, ge=1)
    batch_poll_interval_s: Seconds = Field(2.0, ge=0)
    batch_timeout_s: Seconds = Field(600.0, gt=0)
    late_arrival_s: Seconds = Field(300.0, ge=1)
    status_if_new: Literal["subscribed", "unsubscribed", "pending", "transactional"] = "transactional"
    delete_mode: Literal["archive", "permanent"] = "archive"
    address_merge_fields: tuple[str, ...] = ("ADDRESS",)
    timeout_s: Seconds = Field(120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _is_api_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = httpx.URL(value.strip())
        if url.query:
            raise ValueError("must be the API root, e.g. https://us21.api.mailchimp.com/3.0")
        return str(url).rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> MailchimpSettings:
        if (self.api_key is None) == (self.oauth_token is None):
            raise ValueError("set exactly one of api_key and oauth_token")
        if self.base_url is None and self.data_center() is None:
            raise ValueError("set base_url (https://usNN.api.mailchimp.com/3.0): it cannot be "
                             "read from the credential")
        return self

    def data_center(self) -> str | None:
        """The `usNN` suffix of the API key, or None."""
        if self.api_key is None:
            return None
        _, dash, dc = self.api_key.get_secret_value().rpartition("-")
        return dc if dash and dc.isalnum() else None

    def api_root(self) -> str:
        return self.base_url or f"https://{self.data_center()}.api.mailchimp.com/3.0"

    def auth_headers(self) -> dict[str, str]:
        if self.oauth_token is not None:
            return {"Authorization": f"Bearer {self.oauth_token.get_secret_value()}"}
        assert self.api_key is not None
        pair = f"customer-sync:{self.api_key.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
