"""Settings of the `hubspot` connector: one `[apps.NAME.settings]` block, validated at startup.

The default `properties` are the HubSpot properties the app's field map names (the
connector's `settings_for_fields`), or, for settings made without a config, those the default
field map (`mapping.toml` beside this module) names, so the two never drift apart.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from pydantic import Field, SecretStr, field_validator

from customer_sync.sdk import ConnectorSettings, Seconds, VendorUrl, WebhookMaxAge

__all__ = ["DEFAULT_PROPERTIES", "HubSpotSettings"]


def _default_properties() -> list[str]:
    """The HubSpot properties named by the default field map beside this module."""
    text = (resources.files(__package__) / "mapping.toml").read_text(encoding="utf-8")
    entries = tomllib.loads(text).get("fields", {})
    names = [e if isinstance(e, str) else e["field"] for e in entries.values()]
    return list(dict.fromkeys(names))


DEFAULT_PROPERTIES = tuple(_default_properties())
_NOT_AN_ID_PROPERTY = frozenset(
    {"email", "hs_object_id", "createdate", "lastmodifieddate", "hs_merged_object_ids"}
)


class HubSpotSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `hubspot` connector.

    Attributes:
        base_url: HubSpot's API root (the spec's `servers` URL); http(s), and no link-local or
            metadata address unless the app sets `allow_private_urls`.
        access_token: a private app's access token (`${HUBSPOT_TOKEN}`), sent as a Bearer token.
        app_secret: the app's client secret, which signs webhooks (v3); without it every
            webhook delivery is refused.
        properties: the contact properties read and written (default: those the app's field map
            names, or mapping.toml's for settings made without a config).
        page_size: contacts per list or search page (the list endpoint takes at most 100;
            UNVERIFIED in CONTRACTS.md).
        history_page_size: contacts per request when property history is asked for. The spec
            says history "will reduce the maximum number of contacts that can be read by a
            single request" without saying to what; 50 is the figure third parties report.
        rate_limit_calls, rate_limit_window_s: the app's documented limit (Free/Starter: 100
            per 10 s). The connector stays a little under it.
        search_per_s: the search endpoint's own limit, on top (4/s in HubSpot's changelog;
            the current value is UNVERIFIED).
        field_history: read per-property modified times (`propertiesWithHistory`).
        lookback_s: every incremental listing re-reads this many seconds before its cursor,
            for contacts that reach the search index late with an older modified time.
        webhook_max_age_s: deliveries signed longer ago than this are refused (HubSpot's SDK
            uses 300 s; at most an hour, `MAX_WEBHOOK_AGE_S`).
        id_property: the internal name of a custom contact property with unique values that
            the operator created in HubSpot for customer-sync (e.g. `customer_sync_id`). When
            set, a contact without an email is created by batch/upsert keyed by that property,
            holding the engine's idempotency key, so a create sent again updates the contact
            it made (exactly-once). Unset, such creates go to batch/create and a re-sent one is
            looked for through search (best effort). See docs/connectors.md, "HubSpot".
    """

    base_url: VendorUrl = "https://api.hubapi.com"
    access_token: SecretStr
    app_secret: SecretStr | None = None
    properties: list[str] = Field(default_factory=lambda: list(DEFAULT_PROPERTIES), min_length=1)
    page_size: int = Field(100, ge=1, le=100)
    history_page_size: int = Field(50, ge=1, le=100)
    rate_limit_calls: int = Field(100, ge=1)
    rate_limit_window_s: Seconds = Field(10.0, gt=0)
    search_per_s: float = Field(4, gt=0)
    field_history: bool = True
    lookback_s: Seconds = Field(2, ge=0)
    webhook_max_age_s: WebhookMaxAge = 300.0
    id_property: str | None = None

    @field_validator("properties")
    @classmethod
    def _unique_properties(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("property names must not be empty")
        return list(dict.fromkeys(value))

    @field_validator("id_property")
    @classmethod
    def _custom_unique_property(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if not name or any(c.isspace() for c in name):
            raise ValueError("must be a property's internal name, e.g. customer_sync_id")
        if name in _NOT_AN_ID_PROPERTY:
            # email keys creates already; the others are HubSpot's and cannot hold our key.
            raise ValueError(f"{name} is not a custom property; create one with unique values")
        return name
