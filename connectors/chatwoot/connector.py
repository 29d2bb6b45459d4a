"""The `chatwoot` connector: two-way sync of the contacts of one Chatwoot account.

API notes (shared/specs/CONTRACTS.md section 4, the 2024 swagger copy beside it, and the Chatwoot
source it cites):

- **No changed-since filter.** The contacts list has only `page` (15 per page) and `sort`, and a
  contact carries no documented `updated_at`. Changes arrive two ways: the signed
  `contact_created` / `contact_updated` webhooks (seconds), and a full scan of every page,
  which the engine compares with the base by content fingerprint, so an unchanged contact costs
  the reading and nothing more. The connector is not INCREMENTAL: listing from no cursor is the
  scan; its cursor is the page reached (`page:N`, so a scan cut short resumes there) and then
  `scanned`, from which a poll lists nothing, at no cost. The engine scans again every
  `reconcile_interval_s` (an hour by default): one pass over the pages for the ids (hard deletes,
  `list_ids`) and one for the contents.
- **Resolved contacts only.** The list and the search show contacts with an email, a phone or
  an identifier. A contact known only by an Instagram handle is not listed: the webhooks and
  `GET /contacts/{id}` are how it is seen, and the engine reads a linked contact the id scan
  did not see before it takes it for deleted.
- **Writes.** No batch endpoints: creates and updates go one request each, at most
  `read_concurrency` in flight. Email, phone and identifier are unique per account. A create
  sends the engine's idempotency key as `identifier` (unless the fields carry one): the
  identifier of a contact in the "external system", which is us. A create sent again after a
  lost answer is refused as taken, and the contact holding that identifier is the one the first
  send made; a contact holding the email or phone under another identifier is someone else's
  record, and the create is refused (RecordRejected) rather than linked blindly.
- **Identities.** `_fields` reads the social profiles and the WhatsApp number of the contact's
  inbox identities into app fields, so a contact without an email still matches by phone or
  handle.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from customer_sync_connectors.chatwoot._fields import (
    ADDITIONAL_PREFIX,
    CUSTOM_PREFIX,
    READ_ONLY_FIELDS,
    SOCIAL_PREFIX,
    FieldRefused,
    check_writable,
    needs_current,
    record_fields,
    write_body,
)
from customer_sync_connectors.chatwoot._webhooks import changes_of, signature_problem
from customer_sync_connectors.chatwoot.client import PAGE_SIZE, ChatwootClient, ContactInvalid
from customer_sync_connectors.chatwoot.models import Contact, ContactPage
from customer_sync_connectors.chatwoot.settings import ChatwootSettings

from customer_sync.sdk import (
    HttpConnector,
    ApiClient,
    AppRecord,
    Capability,
    Change,
    ChangePage,
    ConnectorError,
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

__all__ = ["ChatwootConnector"]


SCANNED = "scanned"  # the cursor after a complete scan: a poll from it lists nothing
_PAGE = "page:"  # the cursor inside a scan: pages up to N are committed
_IDENTIFIER_PREFIX = "customer-sync:"
_MAX_SEARCH_PAGES = 3  # a search for one email or phone: more than 45 hits is not one person


class ChatwootConnector(HttpConnector[ChatwootSettings, ChatwootClient]):
    """Contacts of one Chatwoot account. See the module docstring for the API notes.

    Args:
        settings: the validated settings block.
        app: the configured app name.
        transport: the HTTP test seam (`httpx.ASGITransport` over the simulator).
        clock: wall clock (aware UTC) for webhook freshness and rate limits.
        sleep: async sleep for rate limits and retries; tests inject both.
    """

    name = "chatwoot"
    settings_model = ChatwootSettings
    capabilities = (Capability.WEBHOOKS | Capability.DELETE | Capability.ID_SCAN
                    | Capability.SEARCH_BY_EMAIL)
    object_types = ("contact",)
    batch_size = 50
    # The only way to see an edit made without a webhook (none configured, one lost, an
    # older server that does not sign) and a delete (no webhook reports one).
    reconcile_interval_s = 3600.0

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        account = RateLimiter(s.rate_limit, s.rate_limit_window_s, clock=self._monotonic,
                              sleep=self._sleep)
        search = RateLimiter(s.search_rate_limit, s.search_rate_limit_window_s,
                             clock=self._monotonic, sleep=self._sleep)
        self.http = ApiClient(
            app=self.app, connector=self.name, base_url=s.base_url,
            auth_headers=s.auth_headers(), timeout_s=s.timeout_s, limiter=account,
            retry=retry_policy(sleep=self._sleep), transport=self._transport,
            # rack-attack's 429 names no wait; its windows are aligned to the clock
            rate_limited_pause_s=min(s.rate_limit_window_s, 15.0),
            max_retry_after_s=self.max_retry_after_s,
        )
        self._api = ChatwootClient(self.http, account_id=s.account_id,
                                   search_limiter=MultiLimiter(account, search))

    async def check(self) -> None:
        inboxes = await self.api.inboxes()
        wanted = self.settings.inbox_id
        if wanted is not None and wanted not in {i.id for i in inboxes}:
            raise self.error(ConnectorError, f"inbox_id {wanted} is not an inbox of the account",
                             operation="inboxes.list")

    async def app_fields(self) -> set[str]:
        """The contact's own attributes, `custom_attributes.KEY` per contact attribute the
        account defines, and any `additional_attributes.KEY` or `social_profiles.NETWORK` (free
        hashes Chatwoot defines no list of)."""
        keys = await self.api.contact_attribute_keys()
        return {"name", "email", "phone_number", "identifier", *READ_ONLY_FIELDS,
                *(CUSTOM_PREFIX + key for key in keys), ADDITIONAL_PREFIX + "*", SOCIAL_PREFIX + "*"}

    # -- the scan -------------------------------------------------------------------------------

    async def list_changes(  # type: ignore[override]
        self, since: Cursor | None
    ) -> AsyncIterator[ChangePage]:
        """Every resolved contact, page by page (see the module docstring for the cursor)."""
        if since is not None and since.value == SCANNED:
            return
        start = _page_of(since) + 1 if since is not None else 1
        async for number, page, last in self._pages(start):
            records = [self._record(c) for c in page.payload]
            self.log.info("app.page_fetched", count=len(records), page=number, end=last)
            yield ChangePage(records=records,
                             cursor=Cursor(value=SCANNED if last else f"{_PAGE}{number}"))

    async def list_ids(self) -> AsyncIterator[list[str]]:  # type: ignore[override]
        async for _, page, _ in self._pages(1):
            yield [str(c.id) for c in page.payload]

    async def _pages(self, start: int) -> AsyncIterator[tuple[int, ContactPage, bool]]:
        """(page number, page, is last) from page `start` to a short page or the count."""
        number = start
        previous: list[int] | None = None
        while True:
            page = await self.api.page(number)
            ids = [c.id for c in page.payload]
            if ids and ids == previous:
                raise self.error(ConnectorError, "pagination repeated a page",
                                 operation="contacts.list")
            count = page.meta.count
            last = len(ids) < PAGE_SIZE or (count is not None and number * PAGE_SIZE >= count)
            yield number, page, last
            if last:
                return
            previous, number = ids, number + 1

    def _record(self, contact: Contact) -> AppRecord:
        return AppRecord(app_record_id=str(contact.id), fields=record_fields(contact))

    # -- reads ----------------------------------------------------------------------------------

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        ids = [int(i) for i in dict.fromkeys(app_record_ids) if _is_contact_id(i)]
        found = await self._bounded([self.api.show(i) for i in ids])
        return [self._record(c) for c in found if c is not None]

    async def search_by_email(self, email: str) -> list[AppRecord]:
        wanted = email.strip().lower()
        return [self._record(c) for c in await self._search(wanted)
                if (c.email or "").strip().lower() == wanted]

    async def search_by_phone(self, phone: str) -> list[AppRecord]:
        """Contacts whose `phone_number` is this number (digits compared, `+` and spacing
        ignored); the create's lookup, and for callers that match by phone."""
        wanted = _digits(phone)
        if not wanted:
            return []
        # Chatwoot matches `q` as a substring; stored phones are E.164, so the digits alone
        # find the number however it was typed here.
        return [self._record(c) for c in await self._search(wanted)
                if _digits(c.phone_number or "") == wanted]

    async def _search(self, q: str) -> list[Contact]:
        out: list[Contact] = []
        for number in range(1, _MAX_SEARCH_PAGES + 1):
            page = await self.api.search(q, page=number)
            out += page.payload
            if len(page.payload) < PAGE_SIZE:
                break
        return out

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        return await self._create(fields, idempotency_key, uncertain=False)

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        return await self._each(ops, lambda op: self._create(
            op.fields, op.idempotency_key or op.key, uncertain=op.uncertain_since is not None))

    async def _create(self, fields: Mapping[str, Any], key: str, *,
                      uncertain: bool) -> WriteReceipt:
        operation = "contacts.create"
        try:
            body = write_body(fields)
        except FieldRefused as exc:
            raise self.error(RecordRejected, str(exc), operation=operation) from None
        if not body.get("identifier"):
            body["identifier"] = _identifier(key)
        identifier = body["identifier"]
        if self.settings.inbox_id is not None:
            body["inbox_id"] = self.settings.inbox_id
        if uncertain:  # the first send may have made it: answer with that contact
            own = await self._own(identifier)
            if own is not None:
                return self._receipt(own, fields)
        try:
            contact = await self.api.create(body)
        except ContactInvalid as exc:
            if not exc.is_taken:
                raise
            own = await self._own(identifier)
            if own is not None:
                return self._receipt(own, fields)
            taken = [a for a in exc.attributes if a != "identifier"] or ["identifier"]
            holders = await self._holders(body, taken)
            raise self.error(RecordRejected, f"Chatwoot holds this {', '.join(taken)} on another "
                             f"contact ({holders or 'id unknown'}; one per account); it is linked "
                             "once a scan or webhook reads it", operation=operation) from None
        return self._receipt(contact, fields)

    async def _holders(self, body: Mapping[str, Any], taken: Sequence[str]) -> str:
        """The ids of the contacts holding the email or phone a create was refused for (ids
        only: the message reaches the change log)."""
        found: list[AppRecord] = []
        if "email" in taken and body.get("email"):
            found += await self.search_by_email(str(body["email"]))
        if "phone_number" in taken and body.get("phone_number"):
            found += await self.search_by_phone(str(body["phone_number"]))
        return ", ".join(dict.fromkeys(f"contact {r.app_record_id}" for r in found))

    async def _own(self, identifier: str) -> Contact | None:
        """The contact holding this identifier (the one an earlier send of a create made)."""
        for contact in await self._search(identifier):
            if contact.identifier == identifier:
                return contact
        return None

    def _receipt(self, contact: Contact, sent: Mapping[str, Any]) -> WriteReceipt:
        # No modified time in a contact: the version is the fingerprint of what it holds.
        return WriteReceipt(app_record_id=str(contact.id),
                            version=fingerprint(record_fields(contact)),
                            fingerprint=fingerprint(sent))

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        operation = "contacts.update"
        if not _is_contact_id(app_record_id):
            raise self.error(RecordGone, "not a Chatwoot contact id", operation=operation,
                             app_record_id=app_record_id)
        contact_id = int(app_record_id)
        try:
            check_writable(changed)
            current = None
            if needs_current(changed):
                current = await self.api.show(contact_id)
                if current is None:
                    raise self.error(RecordGone, "contact not found", operation=operation,
                                     app_record_id=app_record_id)
            body = write_body(changed, current=current)
        except FieldRefused as exc:
            raise self.error(RecordRejected, str(exc), operation=operation,
                             app_record_id=app_record_id) from None
        contact = await self.api.update(contact_id, body) if body else None
        version = fingerprint(record_fields(contact)) if contact is not None else None
        if version is None:  # a 204 (2024 swagger) or nothing to send
            version = fingerprint({"sent": fingerprint(changed), "at": self._now().isoformat()})
        return WriteReceipt(app_record_id=app_record_id, version=version,
                            fingerprint=fingerprint(changed))

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        return await self._each(ops, lambda op: self.update(op.app_record_id or "", op.fields))

    async def delete(self, app_record_id: str) -> None:
        if not _is_contact_id(app_record_id):
            raise self.error(RecordGone, "not a Chatwoot contact id", operation="contacts.delete",
                             app_record_id=app_record_id)
        await self.api.delete(int(app_record_id))

    async def _each(self, ops: Sequence[WriteOp],
                    write: Callable[[WriteOp], Awaitable[WriteReceipt]]) -> list[WriteOutcome]:
        """One write per op, at most `read_concurrency` at a time; a refused or gone record is
        its op's outcome, any other error is raised once every op has settled."""

        async def one(op: WriteOp) -> WriteOutcome:
            try:
                return WriteOutcome(key=op.key, receipt=await write(op))
            except (RecordRejected, RecordGone) as exc:
                return WriteOutcome(key=op.key, error=exc)

        return await self._bounded([one(op) for op in ops])

    @property
    def max_in_flight(self) -> int:
        """Per-record calls at once (`_bounded`): the `read_concurrency` setting."""
        return self.settings.read_concurrency

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, url: str = "",
                       method: str = "POST") -> bool:
        secret = self.settings.webhook_secret
        if secret is None:
            return self._webhook_verdict("no_webhook_secret")
        problem = signature_problem(headers, body, secret=secret.get_secret_value(),
                                    now=self._now(), max_age_s=self.settings.webhook_max_age_s,
                                    future_skew_s=self.settings.webhook_future_skew_s)
        return self._webhook_verdict(problem)

    def parse_webhook(self, body: bytes) -> list[Change]:
        """The changes a verified delivery reports (see `_webhooks.changes_of`).

        Raises:
            WebhookRefused: the body is not one Chatwoot event, or out of bounds.
        """
        return self._parsed_webhook(lambda: changes_of(body))


def _page_of(cursor: Cursor) -> int:
    """The last page a scan committed, from a `page:N` cursor; 0 (start over) otherwise."""
    text = cursor.value[len(_PAGE):] if cursor.value.startswith(_PAGE) else ""
    return int(text) if text.isascii() and text.isdigit() else 0


def _identifier(key: str) -> str:
    text = _IDENTIFIER_PREFIX + key
    if len(text) <= 200:
        return text
    return _IDENTIFIER_PREFIX + hashlib.blake2b(key.encode(), digest_size=20).hexdigest()


def _is_contact_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and value != "0" and len(value) <= 18


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isascii() and c.isdigit())
