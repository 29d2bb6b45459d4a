"""AcmeCRM contacts for customer-sync: a worked example of a third-party connector plugin."""

from __future__ import annotations

from customer_sync_acmecrm.connector import AcmeCrmConnector, AcmeCrmSettings

__all__ = ["AcmeCrmConnector", "AcmeCrmSettings"]
