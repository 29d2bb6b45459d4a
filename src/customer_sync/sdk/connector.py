"""The connector contract: what a connector declares, the coroutines it implements, and the
value objects it exchanges with the engine.

A connector knows one vendor API and nothing else: it lists changes since a cursor, reads,
creates, updates and deletes records, and verifies and parses webhooks. It never touches the
store, never decides conflicts and never schedules itself. Records cross this boundary as plain
app fields (the vendor's own field names and values); the engine maps them to the canonical
customer through the app's field map.

Optional abilities are `Capability` flags, not methods that raise `NotImplementedError`: the
engine asks `connector.capabilities` before it calls, for instance, `parse_webhook`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from customer_sync.errors import ConnectorError

if TYPE_CHECKING:
    import structlog

__all__ = [
    "AppRecord",
    "Capability",
    "Change",
    "ChangePage",
    "Connector",
    "ConnectorSettings",
    "Cursor",
    "WriteOp",
    "WriteOutcome",
    "WriteReceipt",
    "fingerprint",
]


class Capability(enum.Flag):
    """What a connector can do beyond the required read/create/update."""

    NONE = 0
    INCREMENTAL = enum.auto()  # list_changes(since=cursor) returns only newer changes
    WEBHOOKS = enum.auto()  # verify_webhook / parse_webhook are implemented
    BATCH_WRITE = enum.auto()  # create_many / update_many use a batch endpoint
    DELETE = enum.auto()  # delete() removes or archives a record
    DELETES_VISIBLE = enum.auto()  # list_changes reports deletions (AppRecord.deleted)
    FIELD_MODIFIED_AT = enum.auto()  # records carry per-field modified times
    SEARCH_BY_EMAIL = enum.auto()  # search_by_email is implemented
    UPSERT = enum.auto()  # create() is idempotent by a natural key (e.g. email)
    ID_SCAN = enum.auto()  # list_ids() yields every live id (hard deletes found by comparison)
    # A record is an email address (an email list's member): the engine never creates a
    # customer without an email here, and never rewrites a record's own address.
    REQUIRES_EMAIL = enum.auto()
    # merge() folds one record into another of the same app, as the app's own merge does
    # (duplicates inside one app are merged there when the operator sets `merge_in_app`).
    MERGE = enum.auto()


class ConnectorSettings(BaseModel):
    """Base of every connector's settings model: one `[apps.NAME.settings]` block.

    Unknown keys are errors, so a typo in config.toml is reported instead of ignored. Secrets are
    `SecretStr` fields whose values come from `${ENV_VAR}` references.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class Cursor(_Value):
    """Where listing resumes: opaque to the engine, stored with the page it came after."""

    value: str


class AppRecord(_Value):
    """A customer as one app holds it.

    Attributes:
        app_record_id: the vendor's id of the record in this app.
        fields: app field name -> value, as the vendor spells them (JSON-compatible values).
        modified_at: the app's own last-modified time of the record (UTC), when it has one.
        field_modified_at: per-field modified times, for connectors with FIELD_MODIFIED_AT.
        deleted: the record was deleted or archived in the app.
        merged_into: the record was merged into another record of the same app (its new id).
    """

    app_record_id: str
    fields: Mapping[str, Any] = Field(default_factory=dict)
    modified_at: datetime | None = None
    field_modified_at: Mapping[str, datetime] = Field(default_factory=dict)
    deleted: bool = False
    merged_into: str | None = None


class Change(_Value):
    """A change notification (from a webhook): the record when the payload carries it, else
    only its id, and the engine reads the record before processing it."""

    app_record_id: str
    kind: Literal["upsert", "delete"] = "upsert"
    record: AppRecord | None = None
    occurred_at: datetime | None = None


class ChangePage(_Value):
    """One page of listed records and the cursor to store once the page is committed."""

    records: Sequence[AppRecord]
    cursor: Cursor


class WriteReceipt(_Value):
    """What the app confirmed for one write: the id, its version/modified time, and the
    fingerprint of the fields sent (how the engine recognises the echo of its own write)."""

    app_record_id: str
    modified_at: datetime | None = None
    version: str | None = None
    fingerprint: str


class WriteOp(_Value):
    """One write in a batch. `key` is the engine's handle for matching outcomes to ops.

    `uncertain_since` is set when this write may already have reached the app: it was being
    sent when the daemon stopped, and no answer was recorded. It holds when the write was
    decided; the app cannot hold its effect from before then. A connector whose creates are
    not idempotent by themselves (no `idempotency_key` the app honours, no unique key to upsert
    on) should look for the record the first send made before creating again, and answer with
    it: that is what keeps a crash from making a second record (DESIGN rule 5).
    """

    key: str
    op: Literal["create", "update", "delete"]
    app_record_id: str | None = None
    fields: Mapping[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    uncertain_since: datetime | None = None


class WriteOutcome(_Value):
    """Result of one `WriteOp`: a receipt, or the error that op ended with."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    key: str
    receipt: WriteReceipt | None = None
    error: ConnectorError | None = None


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A stable short hash of app fields: equal content gives an equal fingerprint, whatever the
    key order. Used to recognise echoes; it never reveals the values."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


S = TypeVar("S", bound=ConnectorSettings)


class Connector(Generic[S]):
    """Base of every connector. Subclasses declare, then implement what the vendor forces.

    Declarations (class attributes):
        name: the connector's registry name (`connector = "NAME"` in config.toml).
        settings_model: the pydantic model of the app's `settings` block.
        capabilities: `Capability` flags.
        object_types: the vendor objects synced (informational).
        batch_size: how many writes `create_many`/`update_many` send per call.
        reconcile_interval_s: how often the engine compares the whole app with its store by
            default (None: never; an operator's `reconcile_interval_s` overrides it). Declare it
            when listing from a cursor can miss changes: the cursor follows a time that writers
            other than the vendor set (a database column), or deletes leave no trace to list.
        lists_in_worker: the engine may run `list_changes` in a worker process, on a second
            instance it builds there from the same settings, while this one does everything
            else. Declare it only when listing depends on nothing but the settings and the
            cursor (it learns nothing that other methods read later), the settings pickle, and
            every rate limiter is created in `__init__` or `open`, so that the worker's instance
            shares this one's budget (see `sdk.ratelimit`). It pays off for connectors whose
            pages are costly to read and parse; records and errors cross the process boundary
            by pickle.

    Lifecycle: the engine constructs the connector with its validated settings, enters it as an
    async context manager (`open` / `close`), and calls the coroutines below. Override `open`
    to acquire resources (HTTP client, DB engine) and `close` to release them.
    """

    name: ClassVar[str]
    settings_model: ClassVar[type[ConnectorSettings]]
    capabilities: ClassVar[Capability] = Capability.NONE
    object_types: ClassVar[tuple[str, ...]] = ("contact",)
    batch_size: ClassVar[int] = 100
    reconcile_interval_s: ClassVar[float | None] = None
    lists_in_worker: ClassVar[bool] = False
    #: Longest vendor `Retry-After` waited for (s); longer ones raise `RateLimited` at once. Set
    #: per app from `max_retry_after_s` in config.toml; pass it to `ApiClient` in `open`.
    max_retry_after_s: float = 900.0

    def __init__(self, settings: S, *, app: str) -> None:
        import structlog

        self.settings = settings
        self.app = app
        self.log: structlog.stdlib.BoundLogger = structlog.get_logger("customer_sync.connector").bind(
            app=app, connector=self.name
        )

    async def __aenter__(self) -> Connector[S]:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Acquire resources. Override when the connector needs a client or an engine."""

    async def close(self) -> None:
        """Release what `open` acquired."""

    def error(self, cls: type[ConnectorError], message: str, **kw: Any) -> ConnectorError:
        """Build an error that already names this app and connector."""
        return cls(message, app=self.app, connector=self.name, **kw)

    # -- required -------------------------------------------------------------------------------

    async def check(self) -> None:
        """Verify that the app is reachable and the credentials work.

        Raises:
            AuthError: the credentials are refused.
            ConnectorError: the app cannot be reached.
        """
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------------------

    async def app_fields(self) -> set[str] | None:
        """The field names the app has, as a field map names them, for `check --connect` to
        catch a mapped app field the app does not have (a typo); None when the connector
        cannot tell (the default). A name ending in `.*` stands for every field under that
        prefix (a free-form hash, e.g. `additional_attributes.*`). Called on an opened
        connector; reads, never writes.

        Raises:
            ConnectorError: the app cannot be reached.
        """
        return None

    def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:
        """Yield pages of records changed after `since` (all records when it is None).

        Every page carries the cursor to resume after it. A connector without INCREMENTAL yields
        every record on each call; the engine then compares by content fingerprint.
        """
        raise NotImplementedError

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        """Read records by id; ids that no longer exist are absent from the result."""
        raise NotImplementedError

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Create one record from app fields."""
        raise NotImplementedError

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        """Set only the `changed` fields of one record.

        Raises:
            RecordGone: the record no longer exists.
            RecordRejected: the app refused the values.
        """
        raise NotImplementedError

    # -- optional, by capability ----------------------------------------------------------------

    async def delete(self, app_record_id: str) -> None:
        """Delete or archive a record (Capability.DELETE)."""
        raise NotImplementedError

    @classmethod
    def settings_for_fields(cls, settings: Mapping[str, Any], app_fields: Sequence[str]) -> Mapping[str, Any]:
        """An app's raw settings, given the app fields its field map names.

        A connector that reads only the fields it is told to (HubSpot's `properties`) fills
        them in from the map when the settings do not name them, so that a field mapped is a
        field read. The default returns `settings` unchanged.
        """
        return settings

    async def count_records(self) -> int | None:
        """How many records a listing from no cursor will yield, when the app can tell cheaply
        (one call); None when it cannot. Used only for the progress of an initial pull (its
        estimate of the time left), so an approximate count is fine. The default: None."""
        return None

    async def merge(self, survivor_id: str, merged_id: str) -> str:
        """Merge record `merged_id` into `survivor_id` with the app's own merge
        (Capability.MERGE); returns the surviving record's id (some apps give it a new one).

        Must be safe to call again after a lost answer: when `merged_id` is already gone, or
        already answers as the survivor, return the survivor's id instead of failing.

        Raises:
            RecordGone: the survivor no longer exists.
            RecordRejected: the app refuses this merge (the engine lists it for review).
        """
        raise NotImplementedError

    def list_ids(self) -> AsyncIterator[list[str]]:
        """Yield every live record id in chunks (Capability.ID_SCAN).

        The engine compares them with its links to see records deleted without a trace
        (hard deletes in an API or table that keeps no tombstone).
        """
        raise NotImplementedError

    async def search_by_email(self, email: str) -> list[AppRecord]:
        """Records holding this email (Capability.SEARCH_BY_EMAIL)."""
        raise NotImplementedError

    async def search_by_emails(self, emails: Sequence[str]) -> list[AppRecord]:
        """Live records holding any of these emails (Capability.SEARCH_BY_EMAIL).

        The engine calls it before it creates records, to link a record the app already holds
        instead of creating a second one. The default asks `search_by_email` once per email;
        override it when the vendor can look several up in one call (an `IN` query, a batch
        read by email). A record found twice is returned once.
        """
        found: dict[str, AppRecord] = {}
        for email in dict.fromkeys(emails):
            for rec in await self.search_by_email(email):
                found.setdefault(rec.app_record_id, rec)
        return list(found.values())

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
    ) -> bool:
        """True when a webhook delivery is authentic and fresh (Capability.WEBHOOKS).

        `url` is the full URL the delivery was posted to, as the vendor saw it (some vendors,
        HubSpot v3 for one, sign the method and URI too). Header names are case-insensitive:
        look them up through a lower-cased copy. Reject stale timestamps here.
        """
        raise NotImplementedError

    def parse_webhook(self, body: bytes) -> list[Change]:
        """Turn a verified webhook body into change notifications (Capability.WEBHOOKS).

        Read the body with `read_webhook(body, shape)` into a pydantic shape of the vendor's
        event (ids as `PositiveId`, times as `EventTime`, the event list with a `max_length`):
        it bounds depth, size and numbers, and refuses everything else with `WebhookRefused`.
        Let no other exception escape: the daemon answers `WebhookRefused` with 400, and an
        unexpected error with 500, which makes the vendor retry the same body forever.

        Raises:
            WebhookRefused: the body is malformed or out of bounds.
        """
        raise NotImplementedError

    # -- batches: override when the vendor has batch endpoints ----------------------------------

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Create several records; the default sends them one by one.

        Override with the vendor's batch endpoint (declare BATCH_WRITE). Return one outcome per
        op, in any order; a failed op carries its error and does not fail the others.
        """
        return await self._one_by_one(
            ops, lambda op: self.create(op.fields, idempotency_key=op.idempotency_key or op.key))

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update several records; the default sends them one by one (see `create_many`)."""
        return await self._one_by_one(ops, lambda op: self.update(_record_id(op), op.fields))

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Delete several records; the default deletes them one by one."""

        async def delete(op: WriteOp) -> WriteReceipt:
            await self.delete(_record_id(op))
            return WriteReceipt(app_record_id=_record_id(op), fingerprint=fingerprint({}))

        return await self._one_by_one(ops, delete)

    async def _one_by_one(
        self, ops: Sequence[WriteOp], write: Callable[[WriteOp], Awaitable[WriteReceipt]]
    ) -> list[WriteOutcome]:
        """Send ops one at a time; a per-record failure becomes that op's outcome."""
        out = []
        for op in ops:
            try:
                out.append(WriteOutcome(key=op.key, receipt=await write(op)))
            except ConnectorError as exc:
                if not _is_per_record(exc):
                    raise
                out.append(WriteOutcome(key=op.key, error=exc))
        return out

    async def write_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Apply a mixed batch of writes; the engine's single entry point for dispatch."""
        by_kind: dict[str, list[WriteOp]] = {"create": [], "update": [], "delete": []}
        for op in ops:
            by_kind[op.op].append(op)
        outcomes: list[WriteOutcome] = []
        if by_kind["create"]:
            outcomes += await self.create_many(by_kind["create"])
        if by_kind["update"]:
            outcomes += await self.update_many(by_kind["update"])
        if by_kind["delete"]:
            outcomes += await self.delete_many(by_kind["delete"])
        return outcomes


def _record_id(op: WriteOp) -> str:
    if op.app_record_id is None:
        raise ValueError(f"write op {op.key} ({op.op}) needs an app_record_id")
    return op.app_record_id


def _is_per_record(exc: ConnectorError) -> bool:
    from customer_sync.errors import RecordGone, RecordRejected

    return isinstance(exc, RecordRejected | RecordGone)
