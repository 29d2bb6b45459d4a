"""The `hubspot` connector: two-way sync of HubSpot CRM contacts (API v3).

Registered as the `hubspot` entry point of `customer_sync.connectors`; `mapping.toml` beside this
module is its default field map.
"""

from __future__ import annotations

from customer_sync_connectors.hubspot.connector import HubSpotConnector
from customer_sync_connectors.hubspot.settings import HubSpotSettings

__all__ = ["HubSpotConnector", "HubSpotSettings"]
