"""The `mailchimp` connector: two-way sync of the members of one Mailchimp audience (list).

API notes (shared/specs/CONTRACTS.md section 3, and the Marketing API's OpenAPI file beside it):

- **A member is an address.** Its id is the subscriber hash, the MD5 of the lower-cased
  address; the connector declares `REQUIRES_EMAIL`, so the engine never creates a member
  without an email and never rewrites a member's address. An update carrying another address
  writes its other fields and reports `RecordRejected` for the address.
- **Listing** pages through `GET /lists/{id}/members` sorted by `last_changed` ascending, each
  page asked `since_last_changed` a second before the last member of the page before, so that a
  member edited during the pass cannot shift the offsets of the others (see `_cursor` for the
  watermark, equal times and late arrivals). Archived members are listed as deleted from a
  second watermark over `status=archived`. A permanent delete leaves no trace to list: it is
  seen as a 404 on the member's next read or write.
- **Creates** are `PUT /lists/{id}/members/{hash}` (an upsert by address), so a create sent
  again after a lost answer finds the member the first one made. The status goes as
  `status_if_new` only: a create never changes the consent of a member Mailchimp already has.
- **Consent**: `status` maps to `email_consent`. Mailchimp refuses to subscribe again a member
  who unsubscribed or bounced (400 "Member In Compliance State") and to re-import a permanently
  deleted address (400 "Forgotten Email Not Subscribed"); both are per-record `RecordRejected`,
  never retried. Only the member's own opt-in (Mailchimp's forms) lifts them.
- **Bulk writes** (`batch_threshold` or more of a kind) go through `POST /batches`, which is
  polled until finished; its results archive is read and each operation's answer becomes that
  record's outcome. Batches run their operations in any order, so tags of new members go in a
  second batch after the members exist.
- **Tags** are a set: written with `POST .../tags`, marking the missing ones active and the
  extra ones inactive against the member's current tags.
- **Deletes** archive (`DELETE`) by default; `delete_mode = "permanent"` uses the
  delete-permanent action, after which the address can never be imported again by the API.
- **Connections**: at most `max_connections` requests in flight (Mailchimp: 10 per user).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from customer_sync_connectors.mailchimp._cursor import CursorError, ListingState, Watermark
from customer_sync_connectors.mailchimp._fields import (
    ADDRESS_PARTS,
    FieldRefused,
    address_tags_in,
    record_fields,
    status_for_write,
    write_body,
)
from customer_sync_connectors.mailchimp._webhooks import (
    changes_of,
    signature_problem,
    subscriber_hash,
    url_secret_problem,
)
from customer_sync_connectors.mailchimp.client import ConnectionCap, MailchimpClient
from customer_sync_connectors.mailchimp.models import Batch, BatchResult, Member
from customer_sync_connectors.mailchimp.settings import MailchimpSettings

from customer_sync.sdk import (
    HttpConnector,
    Sleep,
    ApiClient,
    AppRecord,
    AuthError,
    Capability,
    Change,
    ChangePage,
    ConnectorError,
    Cursor,
    RateLimiter,
    RecordGone,
    RecordRejected,
    TransientError,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
    redact_text,
    retry_policy,
)

__all__ = ["MailchimpConnector"]

T = TypeVar("T")
_HASH = re.compile(r"[0-9a-f]{32}\Z")
MAX_BATCH_OPERATIONS = 500


class MailchimpConnector(HttpConnector[MailchimpSettings, MailchimpClient]):
    """Members of one Mailchimp audience. See the module docstring for the API notes.

    Args:
        settings: the validated settings block.
        app: the configured app name.
        transport: the HTTP test seam (`httpx.ASGITransport` over the simulator).
        clock: wall clock (aware UTC) for webhook freshness and batch timeouts.
        sleep: async sleep for retries and batch polling; tests inject both.
    """

    name = "mailchimp"
    settings_model = MailchimpSettings
    capabilities = (
        Capability.INCREMENTAL | Capability.WEBHOOKS | Capability.BATCH_WRITE
        | Capability.DELETE | Capability.DELETES_VISIBLE | Capability.SEARCH_BY_EMAIL
        | Capability.UPSERT | Capability.REQUIRES_EMAIL
    )
    object_types = ("member",)
    batch_size = MAX_BATCH_OPERATIONS

    def __init__(self, settings: MailchimpSettings, *, app: str,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None) -> None:
        super().__init__(settings, app=app, transport=transport, clock=clock, sleep=sleep)
        self._downloads: httpx.AsyncClient | None = None
        self.cap: ConnectionCap | None = None
        self._address_tags = frozenset(settings.address_merge_fields)

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        inner = self._transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=s.max_connections))
        self.cap = ConnectionCap(inner, s.max_connections)
        # No request quota exists; the limiter only pauses every caller after a 429 (too many
        # connections, e.g. from another integration of the same user).
        pause = RateLimiter(1_000_000, 1.0, clock=self._monotonic, sleep=self._sleep)
        self.http = ApiClient(
            app=self.app, connector=self.name, base_url=s.api_root(),
            auth_headers=s.auth_headers(), timeout_s=s.timeout_s, limiter=pause,
            retry=retry_policy(sleep=self._sleep), transport=self.cap,
            max_retry_after_s=self.max_retry_after_s,
        )
        self._downloads = httpx.AsyncClient(transport=self.cap, timeout=httpx.Timeout(s.timeout_s))
        self._api = MailchimpClient(self.http, list_id=s.list_id, downloads=self._downloads)

    async def close(self) -> None:
        await super().close()
        if self._downloads is not None:
            await self._downloads.aclose()
        self._downloads = None

    # -- check and listing ----------------------------------------------------------------------

    async def check(self) -> None:
        await self.api.ping()
        try:
            await self.api.list_audience()
        except RecordGone as exc:
            raise self.error(ConnectorError, f"no audience {self.settings.list_id!r} for these credentials",
                             operation="members.list") from exc

    async def app_fields(self) -> set[str]:
        """The member attributes the connector reads, and each merge tag of the audience (an
        address merge field as its parts, `TAG.addr1` ...)."""
        fields = {"email_address", "status", "tags", "language", "vip", "email_type",
                  "last_changed", "timestamp_opt"}
        for tag, kind in (await self.api.merge_fields()).items():
            if kind == "address" or tag in self._address_tags:
                fields |= {f"{tag}.{part}" for part in ADDRESS_PARTS}
            else:
                fields.add(tag)
        return fields

    async def list_changes(  # type: ignore[override]
        self, since: Cursor | None
    ) -> AsyncIterator[ChangePage]:
        try:
            state = ListingState.decode(since) if since is not None else ListingState()
        except CursorError as exc:
            raise self.error(ConnectorError, f"the stored cursor is unreadable ({exc}); "
                             "`customer-sync resync APP` reads the app again from the start",
                             operation="members.list") from exc
        if since is None:
            # Nothing archived before the first pass is news: the archive watermark starts at
            # the newest archived member, before any live member is listed.
            newest = await self.api.members_page({
                "status": "archived", "sort_field": "last_changed", "sort_dir": "DESC",
                "count": 1, "offset": 0})
            for member in newest.members:
                if member.last_changed is not None:
                    state.archived.advance(member.id, _epoch(member.last_changed),
                                           _digest(self._record(member)))
            async for records in self._stream(state.live, status=None):
                yield ChangePage(records=records, cursor=state.encode())
            if state.archived.at is None and state.live.at is not None:
                # No archived member yet: archives from now on are newer than the newest
                # member listed (minus the late-arrival window, as ever).
                state.archived.at = state.live.at
                yield ChangePage(records=[], cursor=state.encode())
            return
        async for records in self._stream(state.live, status=None):
            yield ChangePage(records=records, cursor=state.encode())
        async for records in self._stream(state.archived, status="archived"):
            yield ChangePage(records=records, cursor=state.encode())

    async def _stream(self, mark: Watermark, *, status: str | None) -> AsyncIterator[list[AppRecord]]:
        """Pages of members changed after `mark`, advancing it; see the module docstring."""
        late_s = self.settings.late_arrival_s
        count = self.settings.page_size
        since = mark.since(late_s)
        offset = 0
        seen_pages: set[tuple[int | None, int]] = set()
        while True:
            params: dict[str, Any] = {"count": count, "offset": offset,
                                      "sort_field": "last_changed", "sort_dir": "ASC"}
            if since is not None:
                params["since_last_changed"] = _iso(since)
            if status is not None:
                params["status"] = status
            if (since, offset) in seen_pages:
                raise self.error(ConnectorError, "paging repeated a page",
                                 operation="members.list")
            seen_pages.add((since, offset))
            page = await self.api.members_page(params)
            records = []
            for member in page.members:
                if member.last_changed is None:
                    continue
                at = _epoch(member.last_changed)
                record = self._record(member)
                digest = _digest(record)
                if not mark.is_new(member.id, at, digest, late_s):
                    continue
                mark.advance(member.id, at, digest)
                records.append(record)
            mark.prune(late_s)
            self.log.info("app.page_fetched", count=len(records), archived=status is not None,
                          skipped=len(page.members) - len(records))
            yield records
            if len(page.members) < count:
                return
            last = page.members[-1].last_changed
            next_since = _epoch(last) - 1 if last is not None else since
            if since is None or (next_since is not None and next_since > since):
                since, offset = next_since, 0
            else:  # a whole page within one second: page on by offset inside it
                offset += len(page.members)

    def _record(self, member: Member) -> AppRecord:
        if member.is_archived:
            return AppRecord(app_record_id=member.id, modified_at=member.last_changed, deleted=True)
        return AppRecord(app_record_id=member.id, modified_at=member.last_changed,
                         fields=record_fields(member, address_tags=self._address_tags))

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        ids = [i for i in dict.fromkeys(app_record_ids) if _HASH.match(i)]
        members = await self._bounded([self._member_or_none(i) for i in ids])
        return [self._record(m) for m in members if m is not None and not m.is_archived]

    async def _member_or_none(self, member_id: str) -> Member | None:
        try:
            return await self.api.member(member_id)
        except RecordGone:
            return None

    async def search_by_email(self, email: str) -> list[AppRecord]:
        if "@" not in email:
            return []
        return await self.read([subscriber_hash(email)])

    async def search_by_emails(self, emails: Sequence[str]) -> list[AppRecord]:
        return await self.read([subscriber_hash(e) for e in emails if "@" in e])

    @property
    def max_in_flight(self) -> int:
        """Per-record calls at once (`_bounded`): the `max_connections` setting."""
        return self.settings.max_connections

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        (outcome,) = await self.create_many(
            [WriteOp(key="create", op="create", fields=fields, idempotency_key=idempotency_key)])
        return _receipt_or_raise(outcome)

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        (outcome,) = await self.update_many(
            [WriteOp(key="update", op="update", app_record_id=app_record_id, fields=changed)])
        return _receipt_or_raise(outcome)

    def _create_plan(self, op: WriteOp) -> tuple[str, dict[str, Any], list[str] | None]:
        """(member id, PUT body, tags) of a create; raises RecordRejected."""
        email = op.fields.get("email_address")
        if not isinstance(email, str) or "@" not in email:
            raise self.error(RecordRejected, "a Mailchimp member is an email address; this "
                             "record has none", operation="members.upsert")
        try:
            body = write_body(op.fields)
            status = status_for_write(op.fields.get("status")) or self.settings.status_if_new
        except FieldRefused as exc:
            raise self.error(RecordRejected, str(exc), operation="members.upsert") from None
        body["email_address"] = email.strip()
        body["status_if_new"] = status
        return subscriber_hash(email), body, _tags(op.fields)

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        ready: list[tuple[WriteOp, str, dict[str, Any], list[str] | None]] = []
        for op in ops:
            try:
                ready.append((op, *self._create_plan(op)))
            except RecordRejected as exc:
                outcomes[op.key] = WriteOutcome(key=op.key, error=exc)
        if len(ready) >= self.settings.batch_threshold:
            for chunk in _chunks(ready, MAX_BATCH_OPERATIONS):
                for outcome in await self._create_batch(chunk):
                    outcomes[outcome.key] = outcome
        else:
            results = await self._bounded([self._create_one(*item) for item in ready])
            outcomes.update({o.key: o for o in results})
        return [outcomes[op.key] for op in ops]

    async def _create_one(self, op: WriteOp, member_id: str, body: Mapping[str, Any],
                          tags: list[str] | None) -> WriteOutcome:
        try:
            member = await self.api.put_member(member_id, body)
            if tags is not None:
                member = await self._write_tags(member, tags)
        except (RecordRejected, RecordGone) as exc:
            return WriteOutcome(key=op.key, error=exc)
        return self._written(op, member)

    async def _write_tags(self, member: Member, tags: Sequence[str]) -> Member:
        marks = _tag_marks({t.name for t in member.tags}, tags)
        if not marks:
            return member
        await self.api.set_tags(member.id, marks)
        return await self.api.member(member.id)

    async def _create_batch(self, chunk: Sequence[tuple[WriteOp, str, dict[str, Any], list[str] | None]]
                            ) -> list[WriteOutcome]:
        path = self.api.member_path
        operations = [{"method": "PUT", "path": path(mid), "operation_id": f"{i}",
                       "body": json.dumps(body)} for i, (_, mid, body, _) in enumerate(chunk)]
        results = await self._run_batch(operations)
        outcomes: list[WriteOutcome] = []
        tagged: list[tuple[int, Member, list[str]]] = []
        for i, (op, _, _, tags) in enumerate(chunk):
            outcome, member = self._outcome_of(op, results.get(f"{i}"), "members.upsert")
            if member is not None and tags is not None and _tag_marks(
                    {t.name for t in member.tags}, tags):
                tagged.append((i, member, tags))
            outcomes.append(outcome)
        if tagged:
            # Operations of one batch run in any order: tags only once their members exist.
            tag_ops = [{"method": "POST", "path": f"{path(m.id)}/tags", "operation_id": f"{i}",
                        "body": json.dumps({"tags": _tag_marks({t.name for t in m.tags}, tags)})}
                       for i, m, tags in tagged]
            tag_results = await self._run_batch(tag_ops)
            for i, _, _ in tagged:
                error = self._result_error(tag_results.get(f"{i}"), "members.tags",
                                           chunk[i][1])
                if error is not None:
                    outcomes[i] = WriteOutcome(key=chunk[i][0].key, error=error)
        return outcomes

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        planned: list[tuple[WriteOp, dict[str, Any], list[str] | None, bool]] = []
        for op in ops:
            rid = op.app_record_id or ""
            if not _HASH.match(rid):
                outcomes[op.key] = WriteOutcome(key=op.key, error=self.error(
                    RecordGone, "not a Mailchimp subscriber hash", operation="members.update",
                    app_record_id=rid))
                continue
            fields = dict(op.fields)
            moved = False
            email = fields.pop("email_address", None)
            if isinstance(email, str) and email and subscriber_hash(email) != rid:
                moved = True  # the address is the member: it is never rewritten
            try:
                body = write_body(fields)  # validated now; rebuilt with the current address
                status = status_for_write(fields.get("status"))
            except FieldRefused as exc:
                outcomes[op.key] = WriteOutcome(key=op.key, error=self.error(
                    RecordRejected, str(exc), operation="members.update", app_record_id=rid))
                continue
            if status is not None:
                body["status"] = status
            planned.append((op, body, _tags(fields), moved))
        need_current = [op.app_record_id or "" for op, _, tags, _ in planned
                        if tags is not None or address_tags_in(op.fields)]
        current: dict[str, Member | None] = {}
        if need_current:
            found = await self._bounded([self._member_or_none(i) for i in need_current])
            current = dict(zip(need_current, found, strict=True))
        todo = []
        for op, body, tags, moved in planned:
            rid = op.app_record_id or ""
            now = current.get(rid)
            if rid in current and (now is None or now.is_archived):
                outcomes[op.key] = WriteOutcome(key=op.key, error=self.error(
                    RecordGone, "member not found", operation="members.update", app_record_id=rid))
                continue
            if address_tags_in(op.fields):
                fields = {k: v for k, v in op.fields.items() if k != "email_address"}
                body = {**body, **write_body(fields, current=now)}
            todo.append((op, body, tags, moved, now))
        if len(todo) >= self.settings.batch_threshold:
            for chunk in _chunks(todo, MAX_BATCH_OPERATIONS):
                for outcome in await self._update_batch(chunk):
                    outcomes[outcome.key] = outcome
        else:
            results = await self._bounded([self._update_one(*item) for item in todo])
            outcomes.update({o.key: o for o in results})
        return [outcomes[op.key] for op in ops]

    async def _update_one(self, op: WriteOp, body: Mapping[str, Any], tags: list[str] | None,
                          moved: bool, now: Member | None) -> WriteOutcome:
        rid = op.app_record_id or ""
        try:
            member = await self.api.patch_member(rid, body) if body else now
            if member is None:
                member = await self.api.member(rid)
            if tags is not None:
                marks = _tag_marks({t.name for t in member.tags}, tags)
                if marks:
                    await self.api.set_tags(rid, marks)
        except (RecordRejected, RecordGone) as exc:
            return WriteOutcome(key=op.key, error=exc)
        if moved:
            return self._moved(op)
        return self._written(op, member)

    async def _update_batch(self, chunk: Sequence[tuple[WriteOp, dict[str, Any], list[str] | None,
                                                        bool, Member | None]]) -> list[WriteOutcome]:
        path = self.api.member_path
        operations = []
        for i, (op, body, tags, _, now) in enumerate(chunk):
            rid = op.app_record_id or ""
            operations.append({"method": "PATCH", "path": path(rid), "operation_id": f"{i}",
                               "body": json.dumps(body)})
            marks = _tag_marks({t.name for t in now.tags} if now else set(), tags or [])
            if tags is not None and marks:
                operations.append({"method": "POST", "path": f"{path(rid)}/tags",
                                   "operation_id": f"{i}.tags", "body": json.dumps({"tags": marks})})
        results = await self._run_batch(operations)
        outcomes = []
        for i, (op, _, _, moved, _) in enumerate(chunk):
            outcome, _member = self._outcome_of(op, results.get(f"{i}"), "members.update")
            tag_error = (self._result_error(results.get(f"{i}.tags"), "members.tags",
                                            op.app_record_id) if f"{i}.tags" in results else None)
            if outcome.error is None and tag_error is not None:
                outcome = WriteOutcome(key=op.key, error=tag_error)
            if outcome.error is None and moved:
                outcome = self._moved(op)
            outcomes.append(outcome)
        return outcomes

    def _moved(self, op: WriteOp) -> WriteOutcome:
        return WriteOutcome(key=op.key, error=self.error(
            RecordRejected, "a Mailchimp member is its address, which is never rewritten (add "
            "the new address as a member of its own); the other fields were written",
            operation="members.update", app_record_id=op.app_record_id))

    def _written(self, op: WriteOp, member: Member) -> WriteOutcome:
        receipt = WriteReceipt(app_record_id=member.id, modified_at=member.last_changed,
                               fingerprint=fingerprint(op.fields))
        return WriteOutcome(key=op.key, receipt=receipt)

    # -- batches --------------------------------------------------------------------------------

    async def _run_batch(self, operations: Sequence[Mapping[str, Any]]) -> dict[str, BatchResult]:
        """Send a batch, poll it until it finishes (at most `batch_timeout_s`), and read its
        results. A batch that does not finish is a TransientError: the writes are sent again,
        and every operation in them is idempotent (PUT by hash, PATCH, tag marks)."""
        s = self.settings
        batch: Batch = await self.api.start_batch(operations)
        deadline = self._monotonic() + s.batch_timeout_s
        polls = 0
        while not batch.is_finished:
            if self._monotonic() >= deadline:
                raise self.error(TransientError, f"batch unfinished after {s.batch_timeout_s}s "
                                 f"({polls} polls)", operation="batches.get")
            await self._sleep(s.batch_poll_interval_s)
            batch = await self.api.batch(batch.id)
            polls += 1
        self.log.debug("write.batch_finished", count=batch.total_operations,
                       errors=batch.errored_operations, attempt=polls)
        return await self.api.batch_results(batch)

    def _outcome_of(self, op: WriteOp, result: BatchResult | None, operation: str
                    ) -> tuple[WriteOutcome, Member | None]:
        error = self._result_error(result, operation, op.app_record_id)
        if error is not None:
            return WriteOutcome(key=op.key, error=error), None
        assert result is not None
        try:
            member = Member.model_validate_json(result.response or "")
        except ValueError:
            return WriteOutcome(key=op.key, error=self.error(
                TransientError, "a batch result is not a member", operation=operation)), None
        return self._written(op, member), member

    def _result_error(self, result: BatchResult | None, operation: str,
                      app_record_id: str | None) -> ConnectorError | None:
        """The error one batch operation ended with, or None for a success."""
        if result is None:
            return self.error(TransientError, "the batch reported no result for the operation",
                              operation=operation, app_record_id=app_record_id)
        status = result.status_code
        if 200 <= status < 300:
            return None
        reason = _problem_text(result.response)
        message = f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
        kw = {"operation": operation, "status_code": status, "app_record_id": app_record_id}
        if status == 404:
            return self.error(RecordGone, message, **kw)
        if status in (401, 403):
            return self.error(AuthError, message, **kw)
        if status == 429 or status >= 500:
            return self.error(TransientError, message, **kw)
        return self.error(RecordRejected, message, **kw)

    # -- deletes --------------------------------------------------------------------------------

    async def delete(self, app_record_id: str) -> None:
        if not _HASH.match(app_record_id):
            raise self.error(RecordGone, "not a Mailchimp subscriber hash",
                             operation="members.archive", app_record_id=app_record_id)
        if self.settings.delete_mode == "permanent":
            await self.api.delete_permanently(app_record_id)
        else:
            await self.api.archive(app_record_id)

    async def delete_permanently(self, app_record_id: str) -> None:
        """Erase a member for good (the delete-permanent action), whatever `delete_mode` says:
        the address can then never be imported again through the API."""
        if not _HASH.match(app_record_id):
            raise self.error(RecordGone, "not a Mailchimp subscriber hash",
                             operation="members.delete_permanent", app_record_id=app_record_id)
        await self.api.delete_permanently(app_record_id)

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, url: str = "",
                       method: str = "POST") -> bool:
        s = self.settings
        if s.webhook_signing_secret is not None:
            problem = signature_problem(headers, body, secret=s.webhook_signing_secret.get_secret_value(),
                                        now=self._now(), max_age_s=s.webhook_max_age_s)
        elif s.webhook_url_secret is not None:
            problem = url_secret_problem(url, secret=s.webhook_url_secret.get_secret_value())
        else:
            problem = "no_webhook_secret"
        return self._webhook_verdict(problem)

    def parse_webhook(self, body: bytes) -> list[Change]:
        """The changes a verified delivery reports (see `_webhooks.changes_of`).

        Raises:
            WebhookRefused: the body is not one Mailchimp event, or out of bounds.
        """
        return self._parsed_webhook(lambda: changes_of(body, list_id=self.settings.list_id))


def _receipt_or_raise(outcome: WriteOutcome) -> WriteReceipt:
    if outcome.error is not None:
        raise outcome.error
    assert outcome.receipt is not None
    return outcome.receipt


def _tags(fields: Mapping[str, Any]) -> list[str] | None:
    """The tag set a write asks for, or None when it does not touch tags."""
    if "tags" not in fields:
        return None
    value = fields["tags"]
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return sorted({str(t).strip() for t in value if str(t).strip()})


def _tag_marks(current: set[str], wanted: Sequence[str]) -> list[dict[str, str]]:
    """Marks that turn `current` into `wanted`: missing tags active, extra ones inactive."""
    want = set(wanted)
    return ([{"name": t, "status": "active"} for t in sorted(want - current)]
            + [{"name": t, "status": "inactive"} for t in sorted(current - want)])


def _problem_text(response: str | None) -> str:
    """`title: detail` of a problem document, with addresses and phone numbers masked."""
    if not response:
        return ""
    try:
        body = json.loads(response)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("title", "detail") if isinstance(body.get(k), str)]
    errors = body.get("errors")
    if isinstance(errors, list):
        names = [str(e.get("field")) for e in errors[:5] if isinstance(e, dict) and e.get("field")]
        if names:
            parts.append(f"(fields: {', '.join(names)})")
    return redact_text(": ".join(parts))[:240]


def _digest(record: AppRecord) -> str:
    """What a listed member is told apart by within one `last_changed` second."""
    return fingerprint({"deleted": record.deleted, **record.fields})


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _iso(epoch_s: int) -> str:
    # The documented form: 2015-10-21T15:41:36+00:00
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

