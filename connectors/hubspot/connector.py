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

Creates are upserts wherever HubSpot has a key for them, so that a create sent again (its
answer lost, or the daemon stopped before recording it) updates the contact it made: by email,
and for contacts without an email by the operator's unique-value property `id_property`, which
holds the engine's idempotency key. Without that property such creates go to batch/create, and
one that may have been sent already (`WriteOp.uncertain_since`) is looked for through search
first: best effort, since the search index lags (see `_writer`). `search_by_emails` reads
contacts by email with batch/read (`idProperty=email`), which needs no search index at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from customer_sync.sdk import (
    AppRecord,
    Capability,
    Change,
    ChangePage,
    ConfigError,
    Connector,
    ConnectorError,
    Cursor,
    RecordGone,
    RecordRejected,
    TransientError,
    WebhookRefused,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
)
from customer_sync_connectors.hubspot import _writes as w
from customer_sync_connectors.hubspot._cursor import CursorError, ListingState, Watermark
from customer_sync_connectors.hubspot._webhooks import is_authentic, parse_events
from customer_sync_connectors.hubspot._writer import ContactWriter
from customer_sync_connectors.hubspot.client import HubSpotClient
from customer_sync_connectors.hubspot.models import Contact, ms_of
from customer_sync_connectors.hubspot.settings import HubSpotSettings

__all__ = ["HubSpotConnector"]

# Read with every contact besides the configured properties: the modified time listing runs on,
# and the ids merged into a contact, so that merges show up when the survivor is listed. The
# latter is not in CONTRACTS.md (UNVERIFIED); HubSpot ignores properties it does not know.
_ALWAYS_READ = ("lastmodifieddate", "hs_merged_object_ids")
# The value `check` reads by `id_property`: any value does; no contact needs to hold it.
_PROBE_KEY = "customer-sync-check"


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        Capability.INCREMENTAL
        | Capability.WEBHOOKS
        | Capability.BATCH_WRITE
        | Capability.DELETE
        | Capability.DELETES_VISIBLE
        | Capability.FIELD_MODIFIED_AT
        | Capability.SEARCH_BY_EMAIL
        | Capability.UPSERT
        | Capability.MERGE
    )
    object_types = ("contact",)
    batch_size = 100
    # Listing keeps its state in the cursor, and a page of 50-100 contacts (with property
    # history) costs more to read and parse than to decide: worth a process of its own.
    lists_in_worker = True
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
        self._client: HubSpotClient | None = None
        self._props = list(settings.properties)
        self._read_props = list(dict.fromkeys([*settings.properties, *_ALWAYS_READ]))
        self._writer = ContactWriter(
            post=lambda action, body, *, idempotent: self.client.batch(
                action, body, idempotent=idempotent
            ),
            archive=lambda ids: self.client.archive(ids),
            search_created=lambda since, equal, props, limit: self.client.search_created(
                since, equal, properties=props, limit=limit
            ),
            error=self.error,
            log=self.log,
            batch_size=self.batch_size,
            id_property=settings.id_property,
        )
        if not settings.field_history:
            # Capabilities are declared per class; this one depends on a setting.
            self.capabilities = type(self).capabilities & ~Capability.FIELD_MODIFIED_AT  # type: ignore[misc]

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the app's HTTP client and its rate limiters."""
        s = self.settings
        self._client = HubSpotClient(
            app=self.app,
            connector=self.name,
            base_url=s.base_url,
            token=s.access_token.get_secret_value(),
            rate_limit=(s.rate_limit_calls, s.rate_limit_window_s),
            search_per_s=s.search_per_s,
            error=self.error,
            transport=self._transport,
            clock=self._clock,
            sleep=self._sleep,
        )
        # The app's cap on a vendor's Retry-After (config `max_retry_after_s`): longer waits
        # are raised at once for the engine to park the app, not slept on.
        self._client.api.max_retry_after_s = self.max_retry_after_s

    async def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> HubSpotClient:
        """The open client; `client.api` counts requests (benchmarks read it)."""
        if self._client is None:
            raise self.error(ConnectorError, "the connector is not open", operation="open")
        return self._client

    async def check(self) -> None:
        """Read one contact id: proves the token and the contacts read scope. With
        `id_property`, also read a contact by that property as `idProperty`, which HubSpot
        takes only for a property with unique values.

        The properties API, which would say outright whether the property exists and has
        unique values, is not among the spec files this connector is written from, so it is
        not called: creating the property is the operator's step (docs/connectors.md). What
        HubSpot answers for a missing or non-unique `idProperty` is UNVERIFIED; a refusal
        (400) fails the check, a 404 (no contact holds the probe value) passes it.

        Raises:
            AuthError: the token is refused (401/403).
            ConfigError: HubSpot refuses `id_property` as an `idProperty`.
        """
        await self.client.check()
        name = self.settings.id_property
        if name is not None and not await self.client.probe_id_property(name, _PROBE_KEY):
            raise ConfigError(
                f"app {self.app}: HubSpot refuses id_property {name!r} as an idProperty; create "
                "a custom contact property of that internal name with unique values "
                "(docs/connectors.md, HubSpot)"
            )

    async def app_fields(self) -> set[str] | None:
        """The account's contact properties, by internal name (the Properties API), for
        `check --connect` to catch a mapped property that does not exist; None when the token
        may not read property definitions (a 403), which the check reports as "cannot tell"."""
        return await self.client.property_names()

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
                ConnectorError,
                f"stored cursor is unusable ({exc}); reset the app's cursor",
                operation="contacts.list",
            ) from None

    async def count_records(self) -> int | None:
        """The portal's contacts: the `total` of a one-result search with no filter (one search
        call, for the progress of an initial pull). Archived contacts are not counted."""
        page = await self.client.search_modified(
            None, after=0, limit=1, properties=["hs_object_id"], descending=True
        )
        return page.total

    async def _newest_modified_ms(self) -> int:
        """The newest `lastmodifieddate` in the portal now (0 when it has no contacts)."""
        page = await self.client.search_modified(
            None, after=0, limit=1, properties=["hs_object_id"], descending=True
        )
        newest = page.results[0].modified_at if page.results else None
        return ms_of(newest) if newest is not None else 0

    async def _full_pass(self, state: ListingState) -> AsyncIterator[ChangePage]:
        s = self.settings
        limit = min(s.page_size, s.history_page_size) if s.field_history else s.page_size
        history = self._props if s.field_history else []
        after = state.full_after
        while True:
            page = await self.client.list_page(
                after=after, limit=limit, properties=self._read_props, history=history
            )
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
            page = await self.client.search_modified(
                at_ms, after=offset, limit=s.page_size, properties=self._read_props
            )
            results = page.results
            fresh = [
                c
                for c in results
                if not (c.id in at_ids and self._ms(c) == at_ms)
                and not listed.is_listed(c.id, self._ms(c))
            ]
            for contact in fresh:
                listed = listed.advance(contact.id, self._ms(contact))
            if fresh:
                state = state.with_changes(modified=listed)
                records = (
                    await self._with_history(fresh) if s.field_history else self._records(fresh)
                )
                yield ChangePage(records=records, cursor=state.encode())
            if not results or page.next_after is None:
                break
            last_ms = self._ms(results[-1])
            if last_ms > at_ms:
                at_ms, at_ids, offset = (
                    last_ms,
                    {c.id for c in results if self._ms(c) == last_ms},
                    0,
                )
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
        after: str | None = None
        while True:
            page = await self.client.list_page(
                after=after, limit=s.page_size, properties=["hs_object_id"], archived=True
            )
            records = []
            for contact in page.results:
                at = contact.archived_at or contact.modified_at
                at_ms = ms_of(at) if at is not None else 0
                if at_ms >= floor and not before.is_listed(contact.id, at_ms):
                    records.append(
                        AppRecord(app_record_id=contact.id, deleted=True, modified_at=at)
                    )
                    advanced = advanced.advance(contact.id, at_ms)
            next_after = page.next_after or None
            if next_after is not None and next_after == after:
                raise self.error(
                    ConnectorError,
                    "pagination repeated a cursor token",
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
                answer = await self.client.batch("batch/read", body, idempotent=True)
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
            # The survivor may have been asked for too, and then it answers for both ids.
            for survivor in answer.results:
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
        page = await self.client.search_email(email, properties=self._read_props)
        return [self._record(c, history=False) for c in page.results]

    async def search_by_emails(self, emails: Sequence[str]) -> list[AppRecord]:
        """Live contacts holding any of these emails: batch/read with `idProperty=email`, 100
        emails per request (CONTRACTS.md §1: batch read takes `idProperty`; the emails HubSpot
        does not find come back in a 207's `errors[]`, which is not an error here).

        One request per 100 emails, on the app's rate limit, not search's 4 a second, and no
        search index in the way: a contact created a moment ago is found. Archived contacts
        are not read (no `archived=true`). A contact found by two emails is returned once.
        Whether a secondary email (`hs_additional_emails`) finds its contact here is
        UNVERIFIED; the simulator finds it, as its search does.
        """
        wanted = list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))
        found: dict[str, AppRecord] = {}
        for start in range(0, len(wanted), self.batch_size):
            body = {
                "inputs": [{"id": e} for e in wanted[start : start + self.batch_size]],
                "idProperty": "email",
                "properties": self._read_props,
                "propertiesWithHistory": [],
            }
            try:
                answer = await self.client.batch("batch/read", body, idempotent=True)
            except RecordGone:
                continue  # none of them is held by a contact
            for contact in answer.results:
                if not contact.archived:
                    found.setdefault(contact.id, self._record(contact, history=False))
        return list(found.values())

    # -- writes ---------------------------------------------------------------------------------

    @classmethod
    def settings_for_fields(cls, settings: Mapping[str, Any], app_fields: Sequence[str]) -> Mapping[str, Any]:
        """HubSpot returns only the properties asked for: without `properties` in the settings,
        the connector reads and writes those the app's field map names (a custom property
        mapped in `[apps.NAME.fields]` is read without naming it twice)."""
        if "properties" in settings:
            return settings
        return {**settings, "properties": list(dict.fromkeys(app_fields))}

    async def merge(self, survivor_id: str, merged_id: str) -> str:
        """contacts/merge, `merged_id` into `survivor_id`; the survivor's id comes back.

        HubSpot refuses a merge whose secondary is already merged (it answers as the primary:
        "cannot merge an object into itself") or gone (404). Either can be our own earlier merge
        whose answer was lost, so a refusal is checked against the two ids before it stands.
        """
        try:
            return (await self.client.merge(survivor_id, merged_id)).id
        except (RecordGone, RecordRejected, TransientError):
            found, merged = await self._batch_read([survivor_id, merged_id], history=False)
            survivor = survivor_id if survivor_id in found else merged.get(survivor_id)
            gone = merged_id not in found and merged_id not in merged
            if survivor is not None and (gone or merged.get(merged_id) == survivor):
                return survivor
            raise

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Create one contact; with an email, an upsert by email (see `create_many`)."""
        op = WriteOp(
            key=idempotency_key, op="create", fields=fields, idempotency_key=idempotency_key
        )
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
        """Create contacts, 100 per call (see `ContactWriter.create_many`).

        Writes that carry an email go to batch/upsert keyed by email, and with `id_property`
        set, writes without one go to batch/upsert keyed by that property: sending one again
        updates the contact it made instead of making a second one, which is what makes a
        retried create safe. Without `id_property`, writes without an email go to
        batch/create, which is not idempotent; one sent with `uncertain_since` is first looked
        for through search.
        """
        return await self._writer.create_many(ops)

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update contacts with batch/update, 100 per call; a missing contact is RecordGone."""
        return await self._writer.update_many(ops)

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Archive contacts with batch/archive, 100 per call; already gone counts as done."""
        return await self._writer.delete_many(ops)

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
            headers,
            body,
            secret=secret.get_secret_value(),
            url=url,
            method=method,
            now=self._clock(),
            max_age_s=self.settings.webhook_max_age_s,
        )

    def parse_webhook(self, body: bytes) -> list[Change]:
        """The changes a verified delivery reports (see `_webhooks.parse_events`).

        Raises:
            WebhookRefused: the body is not HubSpot's array of events, or out of bounds.
        """
        try:
            return parse_events(body, properties=frozenset(self._props))
        except WebhookRefused as exc:
            raise self.error(WebhookRefused, f"malformed webhook: {exc}",
                             operation="webhook.parse") from None


def _merged(old_id: str, survivor_id: str) -> AppRecord:
    return AppRecord(app_record_id=old_id, deleted=True, merged_into=survivor_id)


def _receipt_or_raise(outcomes: list[WriteOutcome]) -> WriteReceipt:
    (outcome,) = outcomes
    if outcome.error is not None:
        raise outcome.error
    assert outcome.receipt is not None
    return outcome.receipt
