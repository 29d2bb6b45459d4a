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
    DEFAULT_MAX_RETRY_AFTER_S,
    FullJitterBackoff,
    RetryTransient,
    StopBeforeBudget,
    is_beyond_retry_cap,
    retry_policy,
)
from customer_sync.sdk.settings import (
    ALLOW_PRIVATE_URLS,
    MAX_WEBHOOK_AGE_S,
    Seconds,
    VendorUrl,
    WebhookMaxAge,
    check_vendor_url,
    check_webhook_max_age,
)

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
