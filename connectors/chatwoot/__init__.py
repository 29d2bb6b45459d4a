"""The `chatwoot` connector: two-way sync of customers with the contacts of one Chatwoot account.

Registered as the `chatwoot` entry point of `customer_sync.connectors`; `mapping.toml` beside this
module is its default field map.
"""

from __future__ import annotations

from customer_sync_connectors.chatwoot.connector import ChatwootConnector
from customer_sync_connectors.chatwoot.settings import ChatwootSettings

__all__ = ["ChatwootConnector", "ChatwootSettings"]
