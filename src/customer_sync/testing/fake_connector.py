"""`FakeConnector`: a full connector over an in-memory dict, for engine tests and plugin authors.

It behaves as a well-mannered vendor API: ids are assigned on create, every write bumps the
record's modified time from an injected clock, listing is incremental by (modified, id) so equal
timestamps are never skipped, deletes leave a tombstone that listing reports, creates are
idempotent by key, and failures can be injected per operation (`fail_next`), before the
operation (nothing happens) or after it (`lose_answers`: it happens, the caller hears of a
failure, as when a vendor's answer is lost).
Several apps can share one `FakeStore` class each; each instance is one app's data.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_sync.errors import ConnectorError, RecordGone, RecordRejected, TransientError
from customer_sync.sdk.connector import (
    AppRecord,
    Capability,
    ChangePage,
    Connector,
    ConnectorSettings,
    Cursor,
    WriteReceipt,
    fingerprint,
)

__all__ = ["FakeApp", "FakeConnector", "FakeSettings"]


class FakeSettings(ConnectorSettings):
    """Settings of the fake: a page size, and the name of the shared `FakeApp` to use."""

    page_size: int = 50
    data: str = "default"


class FakeApp:
    """One app's records: id -> {fields, modified_at, deleted}."""

    registry: dict[str, FakeApp] = {}

    def __init__(self, name: str = "default", *, clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self.records: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._tick = itertools.count(1)
        self.clock = clock
        self.idempotency: dict[str, str] = {}
        self.failures: dict[str, list[ConnectorError]] = {}
        self.lost_answers: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        FakeApp.registry[name] = self

    def now(self) -> datetime:
        if self.clock is not None:
            return self.clock()
        # a strictly increasing fake time, one second apart
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._tick))

    def put(self, fields: Mapping[str, Any], *, app_record_id: str | None = None,
            modified_at: datetime | None = None) -> str:
        """Create or replace a record as a person using the app would."""
        rid = app_record_id or str(next(self._ids))
        self.records[rid] = {"fields": dict(fields), "modified_at": modified_at or self.now(), "deleted": False}
        return rid

    def edit(self, app_record_id: str, **fields: Any) -> None:
        rec = self.records[app_record_id]
        rec["fields"].update(fields)
        rec["modified_at"] = self.now()

    def remove(self, app_record_id: str) -> None:
        rec = self.records[app_record_id]
        rec["deleted"] = True
        rec["modified_at"] = self.now()

    def merge(self, primary_id: str, secondary_id: str) -> None:
        """Merge two records as CRMs do: the secondary disappears, pointing at the primary."""
        sec = self.records[secondary_id]
        sec["deleted"] = True
        sec["merged_into"] = primary_id
        sec["modified_at"] = self.now()
        self.records[primary_id]["modified_at"] = self.now()

    def live(self) -> dict[str, dict[str, Any]]:
        return {rid: r["fields"] for rid, r in self.records.items() if not r["deleted"]}

    def fail_next(self, operation: str, error: ConnectorError, times: int = 1) -> None:
        self.failures.setdefault(operation, []).extend([error] * times)

    def lose_answers(self, operation: str, times: int = 1) -> None:
        """Carry out the next `times` calls of `operation`, then fail each with a
        TransientError: the write is made and its answer never arrives."""
        self.lost_answers[operation] = self.lost_answers.get(operation, 0) + times

    def _maybe_fail(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        queue = self.failures.get(operation)
        if queue:
            raise queue.pop(0)

    def _maybe_lose_answer(self, operation: str) -> None:
        if self.lost_answers.get(operation, 0) > 0:
            self.lost_answers[operation] -= 1
            raise TransientError("the answer was lost", operation=operation)


class FakeConnector(Connector[FakeSettings]):
    """A complete connector over a `FakeApp`."""

    name = "fake"
    settings_model = FakeSettings
    capabilities = (
        Capability.INCREMENTAL | Capability.DELETE | Capability.DELETES_VISIBLE
        | Capability.ID_SCAN | Capability.SEARCH_BY_EMAIL
    )
    batch_size = 50

    def __init__(self, settings: FakeSettings, *, app: str, data: FakeApp | None = None) -> None:
        super().__init__(settings, app=app)
        self.data = data or FakeApp.registry.get(settings.data) or FakeApp(settings.data)

    async def check(self) -> None:
        self.data._maybe_fail("check")

    def _record(self, rid: str) -> AppRecord:
        r = self.data.records[rid]
        return AppRecord(app_record_id=rid, fields=dict(r["fields"]), modified_at=r["modified_at"],
                         deleted=r["deleted"], merged_into=r.get("merged_into"))

    async def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:  # type: ignore[override]
        self.data._maybe_fail("list")
        after = json.loads(since.value) if since else None
        key = lambda rid: (self.data.records[rid]["modified_at"].isoformat(), rid.zfill(12))  # noqa: E731
        ordered = sorted(self.data.records, key=key)
        if after is not None:
            ordered = [rid for rid in ordered if key(rid) > (after["m"], after["id"])]
        size = self.settings.page_size
        for i in range(0, max(len(ordered), 1), size):
            chunk = ordered[i : i + size]
            if chunk:
                m, rid = key(chunk[-1])
                cursor = Cursor(value=json.dumps({"m": m, "id": rid}))
            else:
                cursor = since or Cursor(value=json.dumps({"m": "", "id": ""}))
            yield ChangePage(records=[self._record(r) for r in chunk], cursor=cursor)

    async def count_records(self) -> int | None:
        return len(self.data.records)

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        self.data._maybe_fail("read")
        return [self._record(r) for r in app_record_ids
                if r in self.data.records and not self.data.records[r]["deleted"]]

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        self.data._maybe_fail("create")
        if "__reject__" in fields.values():
            raise self.error(RecordRejected, "value refused by the app", operation="create")
        rid = self.data.idempotency.get(idempotency_key)
        if rid is None:
            rid = self.data.put(fields)
            self.data.idempotency[idempotency_key] = rid
        self.data._maybe_lose_answer("create")
        rec = self.data.records[rid]
        return WriteReceipt(app_record_id=rid, modified_at=rec["modified_at"], fingerprint=fingerprint(fields))

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        self.data._maybe_fail("update")
        rec = self.data.records.get(app_record_id)
        if rec is None or rec["deleted"]:
            raise self.error(RecordGone, "record not found", operation="update", app_record_id=app_record_id)
        if "__reject__" in changed.values():
            raise self.error(RecordRejected, "value refused by the app", operation="update",
                             app_record_id=app_record_id)
        self.data.edit(app_record_id, **changed)
        self.data._maybe_lose_answer("update")
        return WriteReceipt(app_record_id=app_record_id, modified_at=rec["modified_at"],
                            fingerprint=fingerprint(changed))

    async def delete(self, app_record_id: str) -> None:
        self.data._maybe_fail("delete")
        rec = self.data.records.get(app_record_id)
        if rec is None or rec["deleted"]:
            raise self.error(RecordGone, "record not found", operation="delete", app_record_id=app_record_id)
        self.data.remove(app_record_id)
        self.data._maybe_lose_answer("delete")

    async def list_ids(self) -> AsyncIterator[list[str]]:  # type: ignore[override]
        yield [rid for rid, r in self.data.records.items() if not r["deleted"]]

    async def search_by_email(self, email: str) -> list[AppRecord]:
        return [self._record(rid) for rid, f in self.data.live().items()
                if str(f.get("email", "")).lower() == email.lower()]
