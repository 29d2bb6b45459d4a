"""The `sql` connector: two-way sync of customers with one table of any SQL database.

Registered as the `sql` entry point of `customer_sync.connectors`; `mapping.toml` beside this
module is its default field map.
"""

from __future__ import annotations

from customer_sync_connectors.sql.connector import SqlConnector, SqlSettings

__all__ = ["SqlConnector", "SqlSettings"]
