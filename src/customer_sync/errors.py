"""The exception tree of customer-sync, named by what happens next.

```
SyncError
├── ConfigError            bad settings, mapping or plugin; fail at startup, exit non-zero
├── StoreError             the store cannot be reached or migrated
│   ├── StoreBusy          the store's write lock was not had in time; try again later
│   └── StoreLocked        another daemon works this store; stop it or use another store
├── ConnectorError         carries app, connector, operation, status_code (never a payload)
│   ├── TransientError     network, timeouts, 5xx; retried by the policy
│   │   └── RateLimited    429 / quota; carries retry_after_s
│   ├── AuthError          401/403; park this app, keep the others running
│   ├── RecordRejected     4xx for one record; skip it, write the reason to the change log
│   ├── WebhookRefused     a webhook body is malformed or out of bounds; answer 400, store nothing
│   └── RecordGone         404 on a linked record; treat as a remote delete
├── MappingError           a transform or validation failed for one record; skip that field
└── ConflictParked         the rules could not decide; recorded for review
```
Messages never carry record values, secrets or full URLs with query strings.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictParked",
    "ConnectorError",
    "MappingError",
    "RateLimited",
    "RecordGone",
    "RecordRejected",
    "StoreBusy",
    "StoreError",
    "StoreLocked",
    "SyncError",
    "TransientError",
    "WebhookRefused",
]


class SyncError(Exception):
    """Root of every error customer-sync raises on purpose."""


class ConfigError(SyncError):
    """Settings, mapping or a plugin are wrong; the daemon refuses to start.

    `problems` holds one line per problem, each naming the file, the key path and what is wrong.
    """

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [message])
        super().__init__(message if problems is None else "\n".join(self.problems))


class StoreError(SyncError):
    """The store cannot be opened, reached or migrated."""


class StoreBusy(StoreError):
    """Another writer held the store's lock for longer than the caller could wait.

    Nothing was written; the same work succeeds once the lock is free (a webhook delivery is
    answered 503 with `Retry-After`, so the vendor delivers it again later).
    """


class StoreLocked(StoreError):
    """Another daemon already works this store: two would send every write twice."""


class ConnectorError(SyncError):
    """A vendor API call failed; says which app, which operation and what the API answered."""

    def __init__(
        self,
        message: str,
        *,
        app: str | None = None,
        connector: str | None = None,
        operation: str | None = None,
        status_code: int | None = None,
        app_record_id: str | None = None,
    ) -> None:
        self.app = app
        self.connector = connector
        self.operation = operation
        self.status_code = status_code
        self.app_record_id = app_record_id
        super().__init__(message)

    def __str__(self) -> str:
        where = [
            f"{k}={v}"
            for k, v in (
                ("app", self.app),
                ("connector", self.connector),
                ("operation", self.operation),
                ("status", self.status_code),
                ("record", self.app_record_id),
            )
            if v is not None
        ]
        base = super().__str__()
        return f"{base} ({', '.join(where)})" if where else base


class TransientError(ConnectorError):
    """Network failure, timeout or 5xx: the retry policy tries again."""


class RateLimited(TransientError):
    """429 or an exhausted quota; `retry_after_s` says when the vendor allows the next call."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class AuthError(ConnectorError):
    """401/403: the app is parked until its credentials are fixed; other apps keep syncing."""


class RecordRejected(ConnectorError):
    """The app refused one record (4xx); it is skipped and the reason is logged."""


class WebhookRefused(ConnectorError):
    """A verified webhook delivery whose body is malformed or out of bounds: answered 400.

    The message is a short reason naming what is wrong (a key, a bound), never a value.
    """


class RecordGone(ConnectorError):
    """A linked record no longer exists in the app; treated as a remote delete."""


class MappingError(SyncError):
    """A field could not be mapped, transformed or validated; names the field, never the value.

    `raw_value` is the value the app sent (set where the app's field is read, in the field
    map), so the rejection can be recorded for the operator. It is personal data: it is kept
    out of the message, and only the store's `rejections.raw_value` column holds it. It survives
    pickling, and the normalizing worker sends it back with the field and the message.
    """

    def __init__(
        self, message: str, *, field: str | None = None, app: str | None = None, raw_value: Any = None
    ) -> None:
        self.field = field
        self.app = app
        self.raw_value = raw_value
        super().__init__(message)


class ConflictParked(SyncError):
    """The conflict rules could not decide; the conflict waits for an operator."""
