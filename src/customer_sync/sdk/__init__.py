"""The connector SDK: the only import surface for connector authors.

A connector declares its name, settings model and capabilities, and implements a handful of
coroutines against one vendor API (see `Connector`). Everything a connector needs is re-exported
here; anything not listed in `__all__` is private to customer-sync and may change.
"""

from __future__ import annotations

from customer_sync.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    RateLimited,
    RecordGone,
    RecordRejected,
    TransientError,
)
from customer_sync.sdk.connector import (
    AppRecord,
    Capability,
    Change,
    ChangePage,
    Connector,
    ConnectorSettings,
    Cursor,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
)

__all__ = [
    "AppRecord",
    "AuthError",
    "Capability",
    "Change",
    "ChangePage",
    "ConfigError",
    "Connector",
    "ConnectorError",
    "ConnectorSettings",
    "Cursor",
    "RateLimited",
    "RecordGone",
    "RecordRejected",
    "TransientError",
    "WriteOp",
    "WriteOutcome",
    "WriteReceipt",
    "fingerprint",
]
