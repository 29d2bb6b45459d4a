"""The store's tables (SQLModel). Alembic migrations under `migrations/` create them.

Personal values live in few, well-known columns so that retention, erasure and encryption at
rest can find them: `customers.values`, `snapshots.values`, `inbox.payload`, `outbox.fields`,
`changelog.diff`, `conflicts.*_value`, `dead_letters.payload` and `rejections.raw_value`. Everything else is ids,
times, field names and fingerprints. Identities are keyed hashes, never raw emails or phones.

The SQL is portable: SQLite (embedded default, WAL) and PostgreSQL (several replicas).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, LargeBinary, String, text
from sqlmodel import Field, SQLModel

__all__ = [
    "AppState",
    "ChangeLogEntry",
    "ConflictRow",
    "CursorRow",
    "CustomerRow",
    "DeadLetter",
    "IdentityRow",
    "InboxItem",
    "LinkRow",
    "OutboxItem",
    "PendingDelete",
    "RejectionRow",
    "SnapshotRow",
    "metadata",
    "stored_utc",
]

metadata = SQLModel.metadata

# BigInteger autoincrement keys that SQLite still treats as ROWID aliases.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


def stored_utc(value: datetime) -> datetime:
    """A time read back from a `_ts` column, as aware UTC: every time we store is UTC, and
    SQLite hands these columns back naive (PostgreSQL aware, in the session's zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, **kw))


class CustomerRow(SQLModel, table=True):
    """A canonical customer: its values and where each value came from."""

    __tablename__ = "customers"
    customer_id: str = Field(sa_column=Column(String(36), primary_key=True))
    values: dict[str, Any] = _json(nullable=False)
    # field -> {"app": ..., "at": iso time, "rule": ...}: what `explain` prints.
    provenance: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    deleted_at: datetime | None = _ts(nullable=True)


class IdentityRow(SQLModel, table=True):
    """A keyed hash of one email or phone of a customer: how records are matched."""

    __tablename__ = "identities"
    # Without rowid on SQLite: the key index is the table (hashes are random: every insert
    # lands on a random page, once rather than twice).
    __table_args__ = (Index("ix_identities_customer", "customer_id"), {"sqlite_with_rowid": False})
    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    # HMAC-SHA256 of "kind:value", its 32 raw bytes
    value_hash: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    customer_id: str = Field(sa_column=Column(String(36), primary_key=True))


class LinkRow(SQLModel, table=True):
    """canonical customer <-> (app, app record id). `state` is active, or unlinked (the app
    keeps its record but it is no longer synced, and it is not re-created there)."""

    __tablename__ = "links"
    # One active (or unlinked, gone) record per customer and app; `duplicate` records of the
    # same app are read, never written to (see engine.match).
    __table_args__ = (Index("uq_links_customer_app", "customer_id", "app", unique=True,
                            sqlite_where=text("state <> 'duplicate'"),
                            postgresql_where=text("state <> 'duplicate'")),)
    app: str = Field(sa_column=Column(String(64), primary_key=True))
    app_record_id: str = Field(sa_column=Column(String(255), primary_key=True))
    customer_id: str = Field(sa_column=Column(String(36), nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    linked_at: datetime = _ts(nullable=False)


class SnapshotRow(SQLModel, table=True):
    """The base: canonical values last agreed with one app, and the fingerprint of the app
    fields we last wrote there (how an echo is recognised before any normalization)."""

    __tablename__ = "snapshots"
    customer_id: str = Field(sa_column=Column(String(36), primary_key=True))
    app: str = Field(sa_column=Column(String(128), primary_key=True))  # app, or app#digest of a duplicate
    values: dict[str, Any] = _json(nullable=False)
    app_fingerprint: str | None = Field(sa_column=Column(String(32), nullable=True))
    source_modified_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts(nullable=False)


class ChangeLogEntry(SQLModel, table=True):
    """Append-only: everything observed, decided and written, with why."""

    __tablename__ = "changelog"
    __table_args__ = (
        Index("ix_changelog_customer", "customer_id", "seq"),
        Index("ix_changelog_app_record", "app", "app_record_id"),
    )
    seq: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    at: datetime = _ts(nullable=False)
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    app: str | None = Field(sa_column=Column(String(64), nullable=True))
    app_record_id: str | None = Field(sa_column=Column(String(255), nullable=True))
    customer_id: str | None = Field(sa_column=Column(String(36), nullable=True))
    # field -> [old, new] (observed/decided/written) or other JSON detail.
    diff: dict[str, Any] | None = _json(nullable=True)
    source_modified_at: datetime | None = _ts(nullable=True)
    reason: str | None = Field(sa_column=Column(String(1000), nullable=True))
    run_id: str | None = Field(sa_column=Column(String(36), nullable=True))


class InboxItem(SQLModel, table=True):
    """A record (or a bare change notification) received from an app, not yet processed."""

    __tablename__ = "inbox"
    __table_args__ = (
        Index("ix_inbox_state", "state", "seq"),
        Index("ix_inbox_app_record", "app", "app_record_id"),
    )
    seq: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    app: str = Field(sa_column=Column(String(64), nullable=False))
    app_record_id: str = Field(sa_column=Column(String(255), nullable=False))
    # AppRecord as JSON, or null when a webhook carried only the id (the engine reads it).
    payload: dict[str, Any] | None = _json(nullable=True)
    deleted: bool = Field(default=False, nullable=False)
    source: str = Field(sa_column=Column(String(16), nullable=False))  # poll | webhook | resync
    received_at: datetime = _ts(nullable=False)
    state: str = Field(sa_column=Column(String(16), nullable=False))  # pending | done | failed
    error: str | None = Field(sa_column=Column(String(1000), nullable=True))


class OutboxItem(SQLModel, table=True):
    """A write decided but not yet confirmed by the target app.

    state: pending -> sending (committed before the call) -> done | failed | dead.
    A row found in `sending` after a restart is uncertain: dispatch checks the app before
    sending it again, so a retry never duplicates an effect.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_app_state", "app", "state", "seq"),
        Index("ix_outbox_customer_app", "customer_id", "app", "state"),
        # the few writes sent without a clear answer, looked up per app on every batch decided
        Index("ix_outbox_uncertain", "app", "customer_id",
              sqlite_where=text("sent_at IS NOT NULL"), postgresql_where=text("sent_at IS NOT NULL")),
    )
    seq: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    customer_id: str = Field(sa_column=Column(String(36), nullable=False))
    app: str = Field(sa_column=Column(String(64), nullable=False))
    op: str = Field(sa_column=Column(String(8), nullable=False))  # create | update | delete
    app_record_id: str | None = Field(sa_column=Column(String(255), nullable=True))
    # canonical field -> new canonical value (mapped to app fields at dispatch time)
    fields: dict[str, Any] = _json(nullable=False)
    reason: str | None = Field(sa_column=Column(String(200), nullable=True))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, nullable=False)
    next_attempt_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts(nullable=False)
    error: str | None = Field(sa_column=Column(String(1000), nullable=True))
    # set when a send ended without a clear answer: the write may have reached the app
    sent_at: datetime | None = _ts(nullable=True)


class CursorRow(SQLModel, table=True):
    """Where polling of an app resumes; written in the same transaction as the page it follows."""

    __tablename__ = "cursors"
    app: str = Field(sa_column=Column(String(64), primary_key=True))
    value: str = Field(sa_column=Column(String(2000), nullable=False))
    updated_at: datetime = _ts(nullable=False)


class ConflictRow(SQLModel, table=True):
    """Two apps changed one field differently since the base, or a record matched ambiguously.

    kind: field | match. status: decided (by a rule) | parked (waits) | resolved (by operator).
    """

    __tablename__ = "conflicts"
    __table_args__ = (Index("ix_conflicts_status", "status", "id"),)
    id: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    kind: str = Field(sa_column=Column(String(8), nullable=False))
    customer_id: str | None = Field(sa_column=Column(String(36), nullable=True))
    field: str | None = Field(sa_column=Column(String(128), nullable=True))
    rule: str | None = Field(sa_column=Column(String(32), nullable=True))
    winner_app: str | None = Field(sa_column=Column(String(64), nullable=True))
    winner_value: Any = _json(nullable=True)
    loser_app: str | None = Field(sa_column=Column(String(64), nullable=True))
    loser_value: Any = _json(nullable=True)
    # for kind=match: the record and the candidate customers
    app: str | None = Field(sa_column=Column(String(64), nullable=True))
    app_record_id: str | None = Field(sa_column=Column(String(255), nullable=True))
    detail: dict[str, Any] | None = _json(nullable=True)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = _ts(nullable=False)
    resolved_at: datetime | None = _ts(nullable=True)


class DeadLetter(SQLModel, table=True):
    """Work that failed for good (a rejected record, a write that exhausted its retries)."""

    __tablename__ = "dead_letters"
    id: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    source: str = Field(sa_column=Column(String(16), nullable=False))  # inbox | outbox
    app: str = Field(sa_column=Column(String(64), nullable=False))
    app_record_id: str | None = Field(sa_column=Column(String(255), nullable=True))
    customer_id: str | None = Field(sa_column=Column(String(36), nullable=True))
    payload: dict[str, Any] | None = _json(nullable=True)
    error: str = Field(sa_column=Column(String(1000), nullable=False))
    at: datetime = _ts(nullable=False)
    # when an operator put the write back in the outbox (`dead-letters replay`); set once
    replayed_at: datetime | None = _ts(nullable=True)


class RejectionRow(SQLModel, table=True):
    """A value an app sent for one field of one record that normalization refused (an invalid
    phone, an unmapped country): one row per (app, record, field).

    status: open (the record still holds the refused value) | resolved (it later brought a
    valid value for the field, or no longer carries it). Resolving forgets the raw value; the
    row stays as history. `customer_id` is set once the record is linked.
    """

    __tablename__ = "rejections"
    __table_args__ = (
        Index("ix_rejections_status_app", "status", "app"),
        Index("ix_rejections_customer", "customer_id"),
    )
    app: str = Field(sa_column=Column(String(64), primary_key=True))
    app_record_id: str = Field(sa_column=Column(String(255), primary_key=True))
    field: str = Field(sa_column=Column(String(128), primary_key=True))
    # The value as the app sent it: personal data, shown to the operator, never logged.
    raw_value: Any = _json(nullable=True)
    reason: str = Field(sa_column=Column(String(1000), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    customer_id: str | None = Field(sa_column=Column(String(36), nullable=True))
    first_seen_at: datetime = _ts(nullable=False)
    last_seen_at: datetime = _ts(nullable=False)
    resolved_at: datetime | None = _ts(nullable=True)


class PendingDelete(SQLModel, table=True):
    """A delete seen in an app whose delete policy is `approve`, waiting for an operator."""

    __tablename__ = "pending_deletes"
    id: int | None = Field(default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True))
    customer_id: str = Field(sa_column=Column(String(36), nullable=False))
    app: str = Field(sa_column=Column(String(64), nullable=False))
    app_record_id: str = Field(sa_column=Column(String(255), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # pending|approved|rejected
    requested_at: datetime = _ts(nullable=False)
    decided_at: datetime | None = _ts(nullable=True)


class AppState(SQLModel, table=True):
    """Per-app health for `status` and `check` (last poll, last error, parked), and what the
    daemon must remember about an app across restarts: when its first complete listing was
    processed (`listed_at`: no create is sent to it before), when it was last reconciled, and
    until when it is paused (`resume_at`: the vendor asked to wait), and whether an operator
    paused it (`operator_paused_at`: neither polled nor dispatched until resumed)."""

    __tablename__ = "app_state"
    app: str = Field(sa_column=Column(String(64), primary_key=True))
    last_poll_at: datetime | None = _ts(nullable=True)
    last_success_at: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(sa_column=Column(String(1000), nullable=True))
    parked: bool = Field(default=False, nullable=False)
    consecutive_failures: int = Field(default=0, nullable=False)
    listed_at: datetime | None = _ts(nullable=True)
    reconciled_at: datetime | None = _ts(nullable=True)
    resume_at: datetime | None = _ts(nullable=True)
    operator_paused_at: datetime | None = _ts(nullable=True)
