"""The `hubspot` connector: two-way sync of HubSpot CRM contacts through the v3 REST API.

API facts and their sources are in `shared/specs/CONTRACTS.md` §1 and HubSpot's OpenAPI file
`hubspot/crm-contacts-v3.json`. What this connector relies on that CONTRACTS.md marks UNVERIFIED
is named where it is used, and `tests/test_hubspot.py` has a test for each.

Listing. With no cursor, a full pass walks the list endpoint (`limit`, `after`). Before its first
page the pass notes the newest `lastmodifieddate` in the portal (one search); incremental listing
later starts from there, so nothing modified while the pass was walking is lost. With a cursor,
listing searches `lastmodifieddate >= since - lookback_s` in ascending order. Each page is asked
for again from the newest time received (keyset paging) instead of with the search's `after`
offset: the offset stops at 10,000 results, and it shifts under records that change while we page.
Only when more than a page of contacts share one millisecond does the offset step through them.
Then the archived contacts are listed (`archived=true`) and those archived since the cursor come
back as deleted records. See `_cursor` for what the cursor holds.

Per-field modified times (`field_history`): the full pass asks the list endpoint for
`propertiesWithHistory`; incremental listing makes one extra batch/read per page of changes (per
`history_page_size` records), because search cannot return history.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import Field, SecretStr, field_validator

from customer_sync.sdk import (
    ApiClient,
    AppRecord,
    Capability,
    Change,
    ChangePage,
    Connector,
    ConnectorError,
    ConnectorSettings,
    Cursor,
    MultiLimiter,
    RateLimiter,
    RecordGone,
    RecordRejected,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
    retry_policy,
)
from customer_sync_connectors.hubspot import _writes as w
from customer_sync_connectors.hubspot._cursor import CursorError, ListingState, Watermark
from customer_sync_connectors.hubspot._webhooks import is_authentic, parse_events
from customer_sync_connectors.hubspot.models import (
    BatchResponse,
    Contact,
    ContactPage,
    SearchPage,
    ms_of,
    parse,
)

__all__ = ["HubSpotConnector", "HubSpotSettings"]

CONTACTS = "/crm/v3/objects/contacts"
M = TypeVar("M", bound=ContactPage | BatchResponse)

# Read with every contact besides the configured properties: the modified time listing runs on,
# and the ids merged into a contact, so that merges show up when the survivor is listed. The
# latter is not in CONTRACTS.md (UNVERIFIED); HubSpot ignores properties it does not know.
_ALWAYS_READ = ("lastmodifieddate", "hs_merged_object_ids")


def _default_properties() -> list[str]:
    """The HubSpot properties named by the default field map beside this module."""
    text = (resources.files(__package__) / "mapping.toml").read_text(encoding="utf-8")
    entries = tomllib.loads(text).get("fields", {})
    names = [e if isinstance(e, str) else e["field"] for e in entries.values()]
    return list(dict.fromkeys(names))


DEFAULT_PROPERTIES = tuple(_default_properties())


class HubSpotSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `hubspot` connector.

    Attributes:
        base_url: HubSpot's API root (the spec's `servers` URL).
        access_token: a private app's access token (`${HUBSPOT_TOKEN}`), sent as a Bearer token.
        app_secret: the app's client secret, which signs webhooks (v3); without it every
            webhook delivery is refused.
        properties: the contact properties read and written (default: those in mapping.toml).
        page_size: contacts per list or search page (the list endpoint takes at most 100;
            UNVERIFIED in CONTRACTS.md).
        history_page_size: contacts per request when property history is asked for. The spec
            says history "will reduce the maximum number of contacts that can be read by a
            single request" without saying to what; 50 is the figure third parties report.
        rate_limit_calls, rate_limit_window_s: the app's documented limit (Free/Starter: 100
            per 10 s). The connector stays a little under it.
        search_per_s: the search endpoint's own limit, on top (4/s in HubSpot's changelog;
            the current value is UNVERIFIED).
        field_history: read per-property modified times (`propertiesWithHistory`).
        lookback_s: every incremental listing re-reads this many seconds before its cursor,
            for contacts that reach the search index late with an older modified time.
        webhook_max_age_s: deliveries signed longer ago than this are refused (HubSpot's SDK
            uses 300 s).
    """

    base_url: str = "https://api.hubapi.com"
    access_token: SecretStr
    app_secret: SecretStr | None = None
    properties: list[str] = Field(default_factory=lambda: list(DEFAULT_PROPERTIES), min_length=1)
    page_size: int = Field(100, ge=1, le=100)
    history_page_size: int = Field(50, ge=1, le=100)
    rate_limit_calls: int = Field(100, ge=1)
    rate_limit_window_s: float = Field(10.0, gt=0)
    search_per_s: float = Field(4, gt=0)
    field_history: bool = True
    lookback_s: float = Field(2, ge=0)
    webhook_max_age_s: float = Field(300, gt=0)

    @field_validator("properties")
    @classmethod
    def _unique_properties(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("property names must not be empty")
        return list(dict.fromkeys(value))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _under(calls: int) -> int:
    """A limit a little under the vendor's: it counts arrivals, we count departures."""
    return max(1, calls - max(1, calls // 20))


class HubSpotConnector(Connector[HubSpotSettings]):
    """HubSpot CRM contacts (API v3).

    Args:
        settings: the app's validated settings.
        app: the configured app name.
        transport: the test seam (`httpx.ASGITransport` over the simulator); None uses the
            network.
        clock: the wall clock (aware UTC), for webhook freshness; with `sleep`, also the time
            the rate limiters count in.
        sleep: replaces `asyncio.sleep` in the rate limiters and the retry policy; tests pass
            one that advances `clock`, so that nothing really waits.
    """

    name = "hubspot"
    settings_model = HubSpotSettings
    capabilities = (
        Capability.INCREMENTAL | Capability.WEBHOOKS | Capability.BATCH_WRITE | Capability.DELETE
        | Capability.DELETES_VISIBLE | Capability.FIELD_MODIFIED_AT | Capability.SEARCH_BY_EMAIL
        | Capability.UPSERT
    )
    object_types = ("contact",)
    batch_size = 100
    #: how far one search query can page (HubSpot's ceiling; UNVERIFIED in CONTRACTS.md)
    search_result_cap: ClassVar[int] = 10_000

    def __init__(
        self,
        settings: HubSpotSettings,
        *,
        app: str,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(settings, app=app)
        self._transport = transport
        self._clock = clock or _utcnow
        self._sleep = sleep
        self._api: ApiClient | None = None
        self._search_limiter: MultiLimiter | None = None
        self._props = list(settings.properties)
        self._read_props = list(dict.fromkeys([*settings.properties, *_ALWAYS_READ]))
        if not settings.field_history:
            # Capabilities are declared per class; this one depends on a setting.
            self.capabilities = type(self).capabilities & ~Capability.FIELD_MODIFIED_AT  # type: ignore[misc]

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the app's HTTP client and its rate limiters."""
        s = self.settings
        if self._sleep is None:
            monotonic, sleep = time.monotonic, asyncio.sleep
        else:
            monotonic, sleep = (lambda: self._clock().timestamp()), self._sleep
        app_limiter = RateLimiter(
            _under(s.rate_limit_calls), s.rate_limit_window_s, clock=monotonic, sleep=sleep
        )
        per_window = max(1, int(s.search_per_s))
        search_limiter = RateLimiter(
            per_window, per_window / s.search_per_s, clock=monotonic, sleep=sleep
        )
        self._search_limiter = MultiLimiter(app_limiter, search_limiter)
        self._api = ApiClient(
            app=self.app,
            connector=self.name,
            base_url=s.base_url,
            auth_headers={"Authorization": f"Bearer {s.access_token.get_secret_value()}"},
            limiter=app_limiter,
            retry=None if self._sleep is None else retry_policy(sleep=self._sleep),
            transport=self._transport,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        api, self._api = self._api, None
        if api is not None:
            await api.aclose()

    @property
    def api(self) -> ApiClient:
        """The open client (request counts for benchmarks live on it)."""
        if self._api is None:
            raise self.error(ConnectorError, "the connector is not open", operation="open")
        return self._api

    async def check(self) -> None:
        """Read one contact id: proves the token and the contacts read scope.

        Raises:
            AuthError: the token is refused (401/403).
        """
        await self.api.request(
            "GET", CONTACTS, operation="contacts.check",
            params={"limit": 1, "properties": "hs_object_id"},
        )

    # -- listing --------------------------------------------------------------------------------

    async def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:
        """Pages of contacts changed after `since`; every contact when it is None.

        A full pass's pages carry cursors that resume the pass. Incremental listing yields
        nothing when nothing changed.

        Raises:
            ConnectorError: the cursor is not one this connector wrote, or more contacts than
                one search can page through share a single modified time.
        """
        if since is None:
            newest = await self._newest_modified_ms()
            start = Watermark(newest)
            state = ListingState(modified=start, archived=start, full_after="")
        else:
            state = self._decode(since)
        if state.is_full_pass:
            async for page in self._full_pass(state):
                yield page
            return
        async for page in self._incremental(state):
            yield page

    def _decode(self, cursor: Cursor) -> ListingState:
        try:
            return ListingState.decode(cursor)
        except CursorError as exc:
            raise self.error(
                ConnectorError, f"stored cursor is unusable ({exc}); reset the app's cursor",
                operation="contacts.list",
            ) from None

    async def _newest_modified_ms(self) -> int:
        """The newest `lastmodifieddate` in the portal now (0 when it has no contacts)."""
        page = await self._search(None, after=0, limit=1, descending=True, props=["hs_object_id"])
        newest = page.results[0].modified_at if page.results else None
        return ms_of(newest) if newest is not None else 0

    async def _full_pass(self, state: ListingState) -> AsyncIterator[ChangePage]:
        s = self.settings
        params: dict[str, Any] = {"limit": s.page_size, "properties": self._read_props}
        if s.field_history:
            params["limit"] = min(s.page_size, s.history_page_size)
            params["propertiesWithHistory"] = self._props
        after = state.full_after
        while True:
            page_params = {**params, "after": after} if after else params
            page = await self._get(ContactPage, CONTACTS, page_params, operation="contacts.list")
            next_after = page.next_after or None
            if next_after is not None and next_after == after:
                raise self.error(
                    ConnectorError, "pagination repeated a cursor token", operation="contacts.list"
                )
            state = state.with_changes(full_after=next_after)
            records = self._records(page.results, history=s.field_history)
            yield ChangePage(records=records, cursor=state.encode())
            if next_after is None:
                return
            after = next_after

    async def _incremental(self, state: ListingState) -> AsyncIterator[ChangePage]:
        s = self.settings
        lookback_ms = round(s.lookback_s * 1000)
        listed = state.modified
        # Keyset position of this pass: the newest time received and the ids received at it.
        at_ms, at_ids, offset = max(0, listed.at_ms - lookback_ms), set[str](), 0
        while True:
            page = await self._search(at_ms, after=offset, limit=s.page_size, props=self._read_props)
            results = page.results
            fresh = [
                c for c in results
                if not (c.id in at_ids and self._ms(c) == at_ms) and not listed.is_listed(c.id, self._ms(c))
            ]
            for contact in fresh:
                listed = listed.advance(contact.id, self._ms(contact))
            if fresh:
                state = state.with_changes(modified=listed)
                records = await self._with_history(fresh) if s.field_history else self._records(fresh)
                yield ChangePage(records=records, cursor=state.encode())
            if not results or page.next_after is None:
                break
            last_ms = self._ms(results[-1])
            if last_ms > at_ms:
                at_ms, at_ids, offset = last_ms, {c.id for c in results if self._ms(c) == last_ms}, 0
            else:
                # A whole page shares one time: step through them by offset.
                at_ids |= {c.id for c in results}
                offset += len(results)
                if offset + s.page_size > self.search_result_cap:
                    raise self.error(
                        ConnectorError,
                        f"more than {self.search_result_cap} contacts share one lastmodifieddate; "
                        "search cannot page through them",
                        operation="contacts.search",
                    )
        async for page in self._archived_since(state):
            yield page

    async def _archived_since(self, state: ListingState) -> AsyncIterator[ChangePage]:
        """Contacts archived since the cursor, as deleted records. The list endpoint cannot
        filter by time, so every archived contact is paged through; the watermark moves with
        the last page (a pass resumed mid-way reports some deletes twice, which is harmless)."""
        s = self.settings
        before = state.archived
        floor = max(0, before.at_ms - round(s.lookback_s * 1000))
        advanced = before
        params: dict[str, Any] = {"limit": s.page_size, "archived": "true", "properties": "hs_object_id"}
        after: str | None = None
        while True:
            page_params = {**params, "after": after} if after else params
            page = await self._get(ContactPage, CONTACTS, page_params, operation="contacts.list_archived")
            records = []
            for contact in page.results:
                at = contact.archived_at or contact.modified_at
                at_ms = ms_of(at) if at is not None else 0
                if at_ms >= floor and not before.is_listed(contact.id, at_ms):
                    records.append(AppRecord(app_record_id=contact.id, deleted=True, modified_at=at))
                    advanced = advanced.advance(contact.id, at_ms)
            next_after = page.next_after or None
            if next_after is not None and next_after == after:
                raise self.error(
                    ConnectorError, "pagination repeated a cursor token",
                    operation="contacts.list_archived",
                )
            last = next_after is None
            if records or (last and advanced != before):
                cursor = state.with_changes(archived=advanced if last else before).encode()
                yield ChangePage(records=records, cursor=cursor)
            if last:
                return
            after = next_after

    @staticmethod
    def _ms(contact: Contact) -> int:
        at = contact.modified_at
        return ms_of(at) if at is not None else 0

    # -- records --------------------------------------------------------------------------------

    def _record(self, contact: Contact, *, history: bool) -> AppRecord:
        """A contact as app fields: every property read, missing/null/"" as None."""
        return AppRecord(
            app_record_id=contact.id,
            fields={name: contact.properties.get(name) or None for name in self._props},
            modified_at=contact.modified_at,
            field_modified_at=contact.field_modified_at(self._props) if history else {},
        )

    def _records(self, contacts: Iterable[Contact], *, history: bool = False) -> list[AppRecord]:
        """Records of listed contacts; each survivor of a merge is preceded by a merged-away
        record for every id merged into it, so the engine's link follows the merge."""
        out: list[AppRecord] = []
        for contact in contacts:
            out += [_merged(old, contact.id) for old in contact.merged_ids() if old != contact.id]
            out.append(self._record(contact, history=history))
        return out

    async def _with_history(self, contacts: Sequence[Contact]) -> list[AppRecord]:
        """Listed contacts re-read with their property history (one batch/read per
        `history_page_size`); a contact that vanished meanwhile keeps its listed values."""
        found, merged = await self._batch_read([c.id for c in contacts], history=True)
        out: list[AppRecord] = []
        for contact in contacts:
            if contact.id in merged:
                out.append(_merged(contact.id, merged[contact.id]))
            elif contact.id in found:
                out += self._records([found[contact.id]], history=True)
            else:
                out += self._records([contact])
        return out

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        """Contacts by id (batch/read, 100 per call, or `history_page_size` with history).

        An id merged into another contact comes back as `AppRecord(deleted=True,
        merged_into=<survivor>)`; ids HubSpot does not find are absent.
        """
        history = self.settings.field_history
        found, merged = await self._batch_read(app_record_ids, history=history)
        out: list[AppRecord] = []
        for rid in dict.fromkeys(app_record_ids):
            if rid in found:
                out.append(self._record(found[rid], history=history))
            elif rid in merged:
                out.append(_merged(rid, merged[rid]))
        return out

    async def _batch_read(
        self, app_record_ids: Iterable[str], *, history: bool
    ) -> tuple[dict[str, Contact], dict[str, str]]:
        """(requested id -> contact, merged-away id -> survivor id).

        A merged-away id is answered with the survivor (UNVERIFIED; HubSpot may answer 404,
        and then the id is simply absent). The survivor is told apart by its
        `hs_merged_object_ids`, or as the one result left over for the one id left over.
        """
        ids = list(dict.fromkeys(app_record_ids))
        size = self.settings.history_page_size if history else self.batch_size
        found: dict[str, Contact] = {}
        merged: dict[str, str] = {}
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            body = {
                "inputs": [{"id": i} for i in chunk],
                "properties": self._read_props,
                "propertiesWithHistory": self._props if history else [],
            }
            try:
                answer = await self._post(BatchResponse, "batch/read", body, idempotent=True)
            except RecordGone:
                continue  # none of them exists
            wanted = set(chunk)
            others: list[Contact] = []
            for contact in answer.results:
                if contact.id in wanted:
                    found[contact.id] = contact
                else:
                    others.append(contact)
            missing = {i for e in answer.errors for i in w.error_ids(e)}
            left = [i for i in chunk if i not in found and i not in missing]
            for survivor in others:
                for old in survivor.merged_ids():
                    if old in wanted and old not in found:
                        merged[old] = survivor.id
            left = [i for i in left if i not in merged]
            unclaimed = [c for c in others if c.id not in merged.values()]
            if len(left) == 1 and len(unclaimed) == 1:
                merged[left[0]] = unclaimed[0].id
        return found, merged

    async def search_by_email(self, email: str) -> list[AppRecord]:
        """Contacts whose primary email is `email` (search, `email EQ`)."""
        body = {
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}],
            "sorts": [],
            "properties": self._read_props,
            "limit": 10,
            "after": "0",
        }
        page = await self._post(SearchPage, "search", body, idempotent=True, search=True)
        return [self._record(c, history=False) for c in page.results]

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Create one contact; with an email, an upsert by email (see `create_many`)."""
        op = WriteOp(key=idempotency_key, op="create", fields=fields, idempotency_key=idempotency_key)
        return _receipt_or_raise(await self.create_many([op]))

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        """Set the `changed` properties of one contact ("" or None clears one)."""
        op = WriteOp(key=app_record_id, op="update", app_record_id=app_record_id, fields=changed)
        return _receipt_or_raise(await self.update_many([op]))

    async def delete(self, app_record_id: str) -> None:
        """Archive one contact (HubSpot restores archived contacts for 90 days)."""
        op = WriteOp(key=app_record_id, op="delete", app_record_id=app_record_id)
        _receipt_or_raise(await self.delete_many([op]))

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Create contacts, 100 per call.

        Writes that carry an email go to batch/upsert keyed by email: sending one again
        updates the contact it made instead of making a second one, which is what makes a
        retried create safe. Writes without an email go to batch/create, which is not
        idempotent. A conflict naming an existing contact ("Existing ID: N") is resolved by
        writing the fields to that contact (adopting it).
        """
        outcomes, valid = self._prepare(ops, creating=True)
        with_email = [op for op in valid if w.email_of(op) is not None]
        without = [op for op in valid if w.email_of(op) is None]
        for chunk in w.chunks_without_repeats(with_email, size=self.batch_size, key=_email_key):
            outcomes += await self._split_on_refusal(chunk, self._upsert_chunk)
        for start in range(0, len(without), self.batch_size):
            outcomes += await self._split_on_refusal(without[start : start + self.batch_size], self._create_chunk)
        return outcomes

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update contacts with batch/update, 100 per call; a missing contact is RecordGone."""
        outcomes, valid = self._prepare(ops, creating=False)
        for chunk in w.chunks_without_repeats(valid, size=self.batch_size, key=lambda op: op.app_record_id):
            outcomes += await self._split_on_refusal(chunk, self._update_chunk)
        return outcomes

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Archive contacts with batch/archive, 100 per call; already gone counts as done."""
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(ops), self.batch_size):
            outcomes += await self._split_on_refusal(
                list(ops[start : start + self.batch_size]), self._archive_chunk, gone_is_done=True
            )
        return outcomes

    def _prepare(self, ops: Sequence[WriteOp], *, creating: bool) -> tuple[list[WriteOutcome], list[WriteOp]]:
        """Refuse writes whose values have no HubSpot form before anything is sent."""
        refused: list[WriteOutcome] = []
        valid: list[WriteOp] = []
        for op in ops:
            try:
                w.properties_for(op, creating=creating)
            except TypeError as exc:
                error = self._op_error(RecordRejected, str(exc), op, operation=f"contacts.{op.op}")
                refused.append(WriteOutcome(key=op.key, error=error))
            else:
                valid.append(op)
        return refused, valid

    async def _split_on_refusal(
        self,
        ops: list[WriteOp],
        send: Callable[[list[WriteOp]], Awaitable[list[WriteOutcome]]],
        *,
        gone_is_done: bool = False,
    ) -> list[WriteOutcome]:
        """Send a batch; when HubSpot refuses it whole (one bad input fails a batch with a
        4xx), send each half again until the refused writes stand alone."""
        try:
            return await send(ops)
        except (RecordRejected, RecordGone) as exc:
            if len(ops) > 1:
                mid = len(ops) // 2
                first = await self._split_on_refusal(ops[:mid], send, gone_is_done=gone_is_done)
                return first + await self._split_on_refusal(ops[mid:], send, gone_is_done=gone_is_done)
            (op,) = ops
            if gone_is_done and isinstance(exc, RecordGone):
                return [_done(op)]
            error = self._op_error(type(exc), _message_of(exc), op, operation=exc.operation, status=exc.status_code)
            return [WriteOutcome(key=op.key, error=error)]

    async def _upsert_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        inputs = [
            {
                "id": w.email_of(op),
                "idProperty": "email",
                "properties": w.properties_for(op, creating=True),
                "objectWriteTraceId": op.key,
            }
            for op in ops
        ]
        # Idempotent by email: resending after a timeout cannot make a second contact.
        answer = await self._post(BatchResponse, "batch/upsert", {"inputs": inputs}, idempotent=True)
        return await self._settle(ops, answer, key_of_op=_email_key, key_of_result=_result_email, operation="contacts.create")

    async def _create_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        sent = {op.key: w.properties_for(op, creating=True) for op in ops}
        inputs = [
            {"properties": sent[op.key], "associations": [], "objectWriteTraceId": op.key}
            for op in ops
        ]
        answer = await self._post(BatchResponse, "batch/create", {"inputs": inputs})
        return await self._settle(ops, answer, key_of_op=lambda op: None, key_of_result=lambda c: None, operation="contacts.create", sent=sent)

    async def _update_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        inputs = [
            {
                "id": op.app_record_id,
                "properties": w.properties_for(op, creating=False),
                "objectWriteTraceId": op.key,
            }
            for op in ops
        ]
        # Setting the same values twice leaves the same contact: safe to resend.
        answer = await self._post(BatchResponse, "batch/update", {"inputs": inputs}, idempotent=True)
        return await self._settle(ops, answer, key_of_op=lambda op: op.app_record_id, key_of_result=lambda c: c.id, operation="contacts.update")

    async def _archive_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        inputs = [{"id": op.app_record_id} for op in ops]
        await self.api.request(
            "POST", f"{CONTACTS}/batch/archive", operation="contacts.delete",
            json={"inputs": inputs}, idempotent=True,
        )
        return [_done(op) for op in ops]

    async def _settle(
        self,
        ops: list[WriteOp],
        answer: BatchResponse,
        *,
        key_of_op: Callable[[WriteOp], str | None],
        key_of_result: Callable[[Contact], str | None],
        operation: str,
        sent: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[WriteOutcome]:
        """One outcome per op from a batch answer: receipts for results, errors for the
        inputs `errors[]` names, adoption for conflicts that name an existing contact."""
        updating = operation == "contacts.update"
        matched, left, extra = w.match_results(
            ops, answer.results, key_of_op=key_of_op, key_of_result=key_of_result,
            sent=sent, pair_last=not updating,
        )
        outcomes = [WriteOutcome(key=k, receipt=_receipt(r, _op(ops, k))) for k, r in matched.items()]
        named, unnamed = w.group_errors(answer.errors, left, key_of_op=key_of_op)
        adopt: list[WriteOp] = []
        for op in left:
            error = named.get(op.key) or (unnamed[0] if unnamed and not updating else None)
            if error is not None and (existing := w.existing_id(error)) is not None and not updating:
                adopt.append(op.model_copy(update={"op": "update", "app_record_id": existing}))
            elif error is not None:
                cls = RecordGone if error.category == "OBJECT_NOT_FOUND" else RecordRejected
                outcomes.append(WriteOutcome(key=op.key, error=self._op_error(cls, w.error_text(error), op, operation=operation)))
            elif updating and extra:
                # The id now answers as another contact: it was merged away.
                outcomes.append(WriteOutcome(key=op.key, error=self._op_error(RecordGone, "contact was merged into another", op, operation=operation)))
            else:
                outcomes.append(WriteOutcome(key=op.key, error=self._op_error(ConnectorError, "HubSpot answered without a result for this write", op, operation=operation)))
        if adopt:
            self.log.info("record.adopted", count=len(adopt), reason="existing contact with this email")
            outcomes += await self._split_on_refusal(adopt, self._update_chunk)
        return outcomes

    def _op_error(
        self, cls: type[ConnectorError], message: str, op: WriteOp, *, operation: str | None, status: int | None = None
    ) -> ConnectorError:
        return self.error(cls, message, operation=operation, status_code=status, app_record_id=op.app_record_id)

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
    ) -> bool:
        """True for a delivery with a valid v3 signature, signed within `webhook_max_age_s`;
        always False without `app_secret`."""
        secret = self.settings.app_secret
        if secret is None:
            return False
        return is_authentic(
            headers, body, secret=secret.get_secret_value(), url=url, method=method,
            now=self._clock(), max_age_s=self.settings.webhook_max_age_s,
        )

    def parse_webhook(self, body: bytes) -> list[Change]:
        """The changes a verified delivery reports (see `_webhooks.parse_events`).

        Raises:
            ConnectorError: the body is not HubSpot's array of events.
        """
        try:
            return parse_events(body, properties=frozenset(self._props))
        except ValueError as exc:
            raise self.error(ConnectorError, str(exc), operation="webhook.parse") from None

    # -- HTTP -----------------------------------------------------------------------------------

    async def _search(
        self, floor_ms: int | None, *, after: int, limit: int, props: list[str], descending: bool = False
    ) -> SearchPage:
        filters = (
            [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(floor_ms)}]}]
            if floor_ms is not None
            else []
        )
        body = {
            "filterGroups": filters,
            # HubSpot's documented sort objects. The spec types sorts as strings, but HubSpot
            # ignores a sort sent as a string (hubspot-api-ruby issue #257).
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING" if descending else "ASCENDING"}],
            "properties": props,
            "limit": limit,
            "after": str(after),
        }
        return await self._post(SearchPage, "search", body, idempotent=True, search=True)

    async def _get(self, model: type[M], path: str, params: Mapping[str, Any], *, operation: str) -> M:
        response = await self.api.request("GET", path, operation=operation, params=params)
        return self._parse(model, response, operation)

    async def _post(
        self, model: type[M], action: str, body: Any, *, idempotent: bool | None = None, search: bool = False
    ) -> M:
        operation = f"contacts.{action.replace('/', '_')}"
        response = await self.api.request(
            "POST", f"{CONTACTS}/{action}", operation=operation, json=body, idempotent=idempotent,
            limiter=self._search_limiter if search else None,
        )
        return self._parse(model, response, operation)

    def _parse(self, model: type[M], response: httpx.Response, operation: str) -> M:
        try:
            return parse(model, response.json())
        except ValueError as exc:
            raise self.error(
                ConnectorError, f"HubSpot answered in an unexpected shape: {exc}",
                operation=operation, status_code=response.status_code,
            ) from None


def _merged(old_id: str, survivor_id: str) -> AppRecord:
    return AppRecord(app_record_id=old_id, deleted=True, merged_into=survivor_id)


def _email_key(op: WriteOp) -> str | None:
    return w.fold(w.email_of(op))


def _result_email(contact: Contact) -> str | None:
    return w.fold(contact.properties.get("email"))


def _op(ops: Sequence[WriteOp], key: str) -> WriteOp:
    return next(op for op in ops if op.key == key)


def _receipt(contact: Contact, op: WriteOp) -> WriteReceipt:
    return WriteReceipt(app_record_id=contact.id, modified_at=contact.modified_at, fingerprint=fingerprint(op.fields))


def _done(op: WriteOp) -> WriteOutcome:
    assert op.app_record_id is not None
    return WriteOutcome(key=op.key, receipt=WriteReceipt(app_record_id=op.app_record_id, fingerprint=""))


def _message_of(exc: ConnectorError) -> str:
    return exc.args[0] if exc.args else type(exc).__name__


def _receipt_or_raise(outcomes: list[WriteOutcome]) -> WriteReceipt:
    (outcome,) = outcomes
    if outcome.error is not None:
        raise outcome.error
    assert outcome.receipt is not None
    return outcome.receipt
