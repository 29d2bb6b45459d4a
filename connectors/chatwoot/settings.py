"""Settings of the `chatwoot` connector: one `[apps.NAME.settings]` block, validated at startup.

Limits come from shared/specs/CONTRACTS.md (section 4) and the rack-attack settings of Chatwoot
it cites; values it marks UNVERIFIED are named so. Secrets are `SecretStr` from the environment.
"""

from __future__ import annotations

import httpx
from pydantic import Field, SecretStr, field_validator

from customer_sync.sdk import ConnectorSettings, Seconds, VendorUrl, WebhookMaxAge

__all__ = ["ChatwootSettings"]


class ChatwootSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `chatwoot` connector.

    Attributes:
        base_url: the installation's root, `https://app.chatwoot.com` or a self-hosted server.
        account_id: the account whose contacts are synced (the number in the dashboard URL).
        api_access_token: an agent's or admin's access token (profile settings), sent in the
            `api_access_token` header.
        inbox_id: the inbox a contact the sync creates joins (an API inbox); None creates
            contacts without one. The 2024 swagger marks `inbox_id` required, the current
            source does not.
        webhook_secret: the account webhook's `secret`; without it no delivery verifies.
        webhook_max_age_s: deliveries signed longer ago are refused (Chatwoot's example policy
            accepts 300 s); at most an hour.
        webhook_future_skew_s: how far ahead of our clock a timestamp may be (the example
            policy: 30 s).
        rate_limit, rate_limit_window_s: requests per window. A self-hosted server allows 3000
            a minute per client IP (RACK_ATTACK_LIMIT); Chatwoot Cloud's limit is unknown. The
            default stays under it, leaving room for the account's other integrations.
        search_rate_limit, search_rate_limit_window_s: the contact search's own throttle, 100 a
            minute per account (RATE_LIMIT_CONTACT_SEARCH), shared with every agent's search.
        read_concurrency: contact reads and writes in flight at once (no batch endpoints).
        timeout_s: timeout of each HTTP attempt.
    """

    base_url: VendorUrl
    account_id: int = Field(ge=1)
    api_access_token: SecretStr
    inbox_id: int | None = Field(None, ge=1)
    webhook_secret: SecretStr | None = None
    webhook_max_age_s: WebhookMaxAge = 300.0
    webhook_future_skew_s: Seconds = Field(30.0, ge=0, le=300)
    rate_limit: int = Field(2400, ge=1)
    rate_limit_window_s: Seconds = Field(60.0, gt=0)
    search_rate_limit: int = Field(60, ge=1)
    search_rate_limit_window_s: Seconds = Field(60.0, gt=0)
    read_concurrency: int = Field(8, ge=1, le=64)
    timeout_s: Seconds = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _is_root(cls, value: str) -> str:
        url = httpx.URL(value.strip())
        if url.path not in ("", "/") or url.query:
            raise ValueError("must be the installation root without a path, "
                             "e.g. https://app.chatwoot.com")
        return str(url).rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        return {"api_access_token": self.api_access_token.get_secret_value()}
