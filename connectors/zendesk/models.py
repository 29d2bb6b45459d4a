"""The shapes of Zendesk Support payloads the connector reads: users, identities, export pages
and bulk job statuses, keeping only the fields we touch (webhook events are in `_webhooks`).

Field names and types follow Zendesk's OpenAPI description (`UserForAdmin`, `UserIdentity`,
`CursorBasedExportIncrementalUsersResponse`, `JobStatusObject`; see shared/specs/CONTRACTS.md,
section 2). Models ignore keys they do not name, so a new vendor field never breaks a sync.
Where Zendesk is looser than its OAS it is modelled as it behaves: `email` is null for a user
without one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ExportPage",
    "Identity",
    "JobResult",
    "JobStatus",
    "User",
]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Payload):
    """A user as `GET /api/v2/users/{id}`, show_many, search and the export render it."""

    id: int
    name: str | None = None
    email: str | None = None  # the primary email; null for a user without one
    phone: str | None = None
    role: str | None = None  # "end-user", "agent" or "admin"
    active: bool = True  # false once deleted
    created_at: datetime | None = None
    updated_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    locale: str | None = None
    time_zone: str | None = None
    iana_time_zone: str | None = None  # read-only in the OAS
    external_id: str | None = None
    organization_id: int | None = None
    notes: str | None = None
    details: str | None = None
    alias: str | None = None
    user_fields: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_end_user(self) -> bool:
        return self.role == "end-user"


class Identity(_Payload):
    """One of a user's identities (`GET /api/v2/users/{id}/identities`)."""

    id: int
    user_id: int
    type: str  # email, phone_number, twitter, facebook, google, agent_forwarding, ...
    value: str | None = None
    primary: bool = False


class ExportPage(_Payload):
    """One page of `GET /api/v2/incremental/users/cursor`; `identities` only when Zendesk
    side-loaded them (`include=identities`)."""

    users: list[User]
    after_cursor: str | None = None
    end_of_stream: bool = False
    identities: list[Identity] | None = None


class JobResult(_Payload):
    """One row of a bulk job's `results`.

    Created rows carry `index`; Updated rows (the OAS's UpdateResourceResult) may not, and
    Zendesk keeps rows in request order, so position is the fallback. Failed rows carry
    `error` and `details` (which may quote the refused value: never log them unredacted).
    """

    id: int | None = None
    index: int | None = None
    status: str | None = None  # Created, Updated, Failed
    success: bool | None = None
    error: str | None = None
    details: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "Failed" or self.success is False or self.error is not None


class JobStatus(_Payload):
    """A background job (`job_status`): queued, working, failed or completed."""

    id: str
    status: str  # queued, working, failed or completed (CONTRACTS.md)
    total: int | None = None
    message: str | None = None
    results: list[JobResult] | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in ("completed", "failed")

