"""The `mailchimp` connector: two-way sync of customers with the members of one Mailchimp audience.

Registered as the `mailchimp` entry point of `customer_sync.connectors`; `mapping.toml` beside
this module is its default field map.
"""

from __future__ import annotations

from customer_sync_connectors.mailchimp.connector import MailchimpConnector
from customer_sync_connectors.mailchimp.settings import MailchimpSettings

__all__ = ["MailchimpConnector", "MailchimpSettings"]
