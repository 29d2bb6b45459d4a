"""The `zendesk` connector: two-way sync of customers with the users of a Zendesk Support account.

Registered as the `zendesk` entry point of `customer_sync.connectors`; `mapping.toml` beside this
module is its default field map.
"""

from __future__ import annotations

from customer_sync_connectors.zendesk.connector import ZendeskConnector
from customer_sync_connectors.zendesk.settings import ZendeskSettings

__all__ = ["ZendeskConnector", "ZendeskSettings"]
