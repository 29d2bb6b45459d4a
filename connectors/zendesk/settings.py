"""Settings of the `zendesk` connector: one `[apps.NAME.settings]` block, validated at startup.

Limits and sizes come from shared/specs/CONTRACTS.md (section 2); values it marks UNVERIFIED
are named so in the field docs. Secrets are `SecretStr` and come from the environment.
"""

from __future__ import annotations

import base64

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from customer_sync.sdk import ConnectorSettings, Seconds, VendorUrl, WebhookMaxAge

__all__ = ["ZendeskSettings"]


class ZendeskSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `zendesk` connector.

    Attributes:
        base_url: the account's API root, `https://SUBDOMAIN.zendesk.com`; no link-local or
            metadata address unless the app sets `allow_private_urls`.
        email: the agent (admin) email that API-token auth is sent as.
        api_token: an API token (`{email}/token:{api_token}` Basic auth); or
        oauth_token: an OAuth access token (Bearer). Exactly one of the two.
        webhook_secret: the webhook's signing secret; without it no delivery verifies.
        page_size: users per export page (1000 is the commonly quoted maximum, UNVERIFIED).
        rate_limit, rate_limit_window_s: the account's request limit. Zendesk reports it in
            `X-Rate-Limit`; 200/min is the lowest plan's (UNVERIFIED, third-party), a safe
            default that leaves room for the account's other integrations.
        export_rate_limit, export_rate_limit_window_s: the incremental export's own limit, "up
            to 10 requests per minute", on top of the account's; set one under it, since
            Zendesk counts arrivals and we count departures.
        job_poll_interval_s, job_timeout_s: how often, and how long, a bulk job is polled.
        end_users_only: list, read and search end users only.
        webhook_max_age_s: deliveries signed longer ago (or further ahead) are refused; at most
            an hour (`MAX_WEBHOOK_AGE_S`).
        fetch_identities: read extra emails and phones, one request per live end user listed
            or read, unless Zendesk side-loads them (`sideload_identities`).
        sideload_identities: ask the export and show_many for `include=identities`. The
            endpoints document "Users sideloads", but which those are is not in CONTRACTS.md
            (UNVERIFIED). A page that comes back with an `identities` array needs no request
            per user; one without it falls back to them, and a refused one turns this off.
        identity_concurrency: identity and update requests in flight at once.
        timeout_s: timeout of each HTTP attempt.
    """

    base_url: VendorUrl
    email: str | None = None
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    page_size: int = Field(1000, ge=1, le=1000)
    rate_limit: int = Field(200, ge=1)
    rate_limit_window_s: Seconds = Field(60.0, gt=0)
    export_rate_limit: int = Field(9, ge=1)
    export_rate_limit_window_s: Seconds = Field(60.0, gt=0)
    job_poll_interval_s: Seconds = Field(2.0, ge=0)
    job_timeout_s: Seconds = Field(300.0, gt=0)
    end_users_only: bool = True
    webhook_max_age_s: WebhookMaxAge = 300.0
    fetch_identities: bool = True
    sideload_identities: bool = True
    identity_concurrency: int = Field(8, ge=1, le=64)
    timeout_s: Seconds = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _is_https_root(cls, value: str) -> str:
        url = httpx.URL(value.strip())
        if url.scheme not in ("https", "http") or not url.host:
            raise ValueError("must be the account URL, e.g. https://SUBDOMAIN.zendesk.com")
        if url.path not in ("", "/") or url.query:
            raise ValueError("must be the account root, without a path or query")
        return str(url).rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> ZendeskSettings:
        if (self.api_token is None) == (self.oauth_token is None):
            raise ValueError("set exactly one of api_token and oauth_token")
        if self.api_token is not None and not self.email:
            raise ValueError("api_token needs the agent email it belongs to (email)")
        return self

    def auth_headers(self) -> dict[str, str]:
        if self.oauth_token is not None:
            return {"Authorization": f"Bearer {self.oauth_token.get_secret_value()}"}
        assert self.api_token is not None
        pair = f"{self.email}/token:{self.api_token.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
