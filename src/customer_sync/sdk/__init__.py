"""The connector SDK: the only import surface for connector authors.

A connector declares its name, settings model and capabilities, and implements a handful of
coroutines against one vendor API (see `Connector`). Everything a connector needs is re-exported
here; anything not listed in `__all__` is private to customer-sync and may change.

The HTTP parts (`ApiClient`, `HttpConnector`, the paginators, the rate limiters, the retry policy) are imported on
first use (PEP 562's module `__getattr__`): `from customer_sync.sdk import ApiClient` works as
ever, and a command that only loads the config (`customer-sync status`) never imports httpx,
tenacity or asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from customer_sync.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    RateLimited,
    RecordGone,
    RecordRejected,
    TransientError,
    WebhookRefused,
)
from customer_sync.sdk._bounded_json import (
    EARLIEST_EVENT_AT,
    LATEST_EVENT_AT,
    EventTime,
    JsonLimits,
    PositiveId,
    read_json,
    read_webhook,
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
from customer_sync.sdk.settings import (
    ALLOW_PRIVATE_URLS,
    DEFAULT_MAX_RETRY_AFTER_S,
    MAX_WEBHOOK_AGE_S,
    Seconds,
    VendorUrl,
    WebhookMaxAge,
    check_vendor_url,
    check_webhook_max_age,
)

if TYPE_CHECKING:
    from customer_sync.sdk.http_connector import HttpConnector, Sleep
    from customer_sync.sdk.http import (
        DEFAULT_ERROR_TABLE,
        ApiClient,
        ErrorTable,
        classify_response,
        classify_transport_error,
        json_body,
        parse_retry_after,
        redact_text,
    )
    from customer_sync.sdk.pagination import (
        BasePaginator,
        CursorPaginator,
        LinkPaginator,
        OffsetPaginator,
    )
    from customer_sync.sdk.ratelimit import Limiter, LimiterGate, MultiLimiter, RateLimiter, collecting, defer_to
    from customer_sync.sdk.retry import (
        FullJitterBackoff,
        RetryTransient,
        StopBeforeBudget,
        is_beyond_retry_cap,
        retry_policy,
    )

# Name -> the module that defines it, for the names imported on first use.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("DEFAULT_ERROR_TABLE", "ApiClient", "ErrorTable", "classify_response", "classify_transport_error",
         "json_body", "parse_retry_after", "redact_text"),
        "customer_sync.sdk.http",
    ),
    **dict.fromkeys(("HttpConnector", "Sleep"), "customer_sync.sdk.http_connector"),
    **dict.fromkeys(
        ("BasePaginator", "CursorPaginator", "LinkPaginator", "OffsetPaginator"),
        "customer_sync.sdk.pagination",
    ),
    **dict.fromkeys(
        ("Limiter", "LimiterGate", "MultiLimiter", "RateLimiter", "collecting", "defer_to"),
        "customer_sync.sdk.ratelimit",
    ),
    **dict.fromkeys(
        ("FullJitterBackoff", "RetryTransient", "StopBeforeBudget",
         "is_beyond_retry_cap", "retry_policy"),
        "customer_sync.sdk.retry",
    ),
}

__all__ = [
    "ALLOW_PRIVATE_URLS",
    "DEFAULT_ERROR_TABLE",
    "EARLIEST_EVENT_AT",
    "LATEST_EVENT_AT",
    "DEFAULT_MAX_RETRY_AFTER_S",
    "MAX_WEBHOOK_AGE_S",
    "ApiClient",
    "AppRecord",
    "AuthError",
    "BasePaginator",
    "Capability",
    "Change",
    "ChangePage",
    "ConfigError",
    "Connector",
    "ConnectorError",
    "ConnectorSettings",
    "Cursor",
    "CursorPaginator",
    "ErrorTable",
    "EventTime",
    "FullJitterBackoff",
    "HttpConnector",
    "JsonLimits",
    "Limiter",
    "LimiterGate",
    "LinkPaginator",
    "MultiLimiter",
    "OffsetPaginator",
    "PositiveId",
    "RateLimited",
    "RateLimiter",
    "RecordGone",
    "RecordRejected",
    "RetryTransient",
    "Seconds",
    "Sleep",
    "StopBeforeBudget",
    "TransientError",
    "WebhookRefused",
    "VendorUrl",
    "WebhookMaxAge",
    "WriteOp",
    "WriteOutcome",
    "WriteReceipt",
    "check_vendor_url",
    "check_webhook_max_age",
    "classify_response",
    "classify_transport_error",
    "collecting",
    "defer_to",
    "fingerprint",
    "is_beyond_retry_cap",
    "json_body",
    "parse_retry_after",
    "read_json",
    "read_webhook",
    "redact_text",
    "retry_policy",
]


# Defined for the interpreter only: type checkers read the names from the TYPE_CHECKING imports
# above, and without a module `__getattr__` in sight they still flag a misspelt name.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """Imports the module that defines `name` (see `_LAZY`) and keeps the name here."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # the next read is a plain module attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
