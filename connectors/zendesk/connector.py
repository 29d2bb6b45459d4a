"""The `zendesk` connector: two-way sync of Zendesk Support users (end users by default).

API notes (shared/specs/CONTRACTS.md section 2, and Zendesk's OAS beside it):

- **Listing** is the cursor-based incremental user export: `start_time=0` on a first pass, then
  the stored `after_cursor`, which is stored even at `end_of_stream` (it is where the next pass
  resumes). Users sharing one `updated_at` second are never skipped: the cursor is a position,
  not a time. Deleted users are reported when the export shows them with `active: false`
  (UNVERIFIED: Zendesk may leave them out, in which case the `user.deleted` webhook and a
  404 on the next write report the delete).
- **Identities** (extra emails and phones) are not in a user's payload. The export and
  show_many are asked to side-load them (`include=identities`): both document "Users
  sideloads", but which those are is not in CONTRACTS.md (UNVERIFIED). A page that carries an
  `identities` array gives every listed user's identities at once; a page without one costs a
  `GET /users/{id}/identities` per live end user, at most `identity_concurrency` at a time, and a
  request Zendesk refuses for the `include` is sent again without it, which is then never asked
  for again (`sideload_identities = false` never asks). `fetch_identities = false` turns
  identities off; `other_emails` / `other_phones` are then absent, which is never a change.
- **Writes**: creates are `create_or_update` (one) and `create_or_update_many` (up to 100, a
  background job polled to completion); both match an existing user by email or external id,
  so a re-sent create never makes a second user (a customer without an email is created with
  the engine's idempotency key as `external_id`, for the same reason). Updates are one `PUT`
  per user: Zendesk's bulk update by id applies one body to every user. Zendesk never changes
  a primary email on update (it adds a second address), so an update carrying `email` writes
  its other fields and reports `RecordRejected` for the email.
- **Staff**: agents and admins (the account owner is one) are never written to, and with
  `end_users_only` (the default) never listed, read or searched either (`_staff`). Only their
  primary emails are known, so an upsert by an agent's second address still reaches the agent;
  its outcome is then refused, so that no customer is linked to an agent.
- **Names**: see `_fields` for how Zendesk's single `name` becomes `first_name` / `last_name`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx

from customer_sync.sdk import (
    HttpConnector,
    Sleep,
    AppRecord,
    AuthError,
    Capability,
    Change,
    ChangePage,
    ConnectorError,
    Cursor,
    MultiLimiter,
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
from customer_sync_connectors.zendesk._fields import (
    READ_ONLY_FIELDS,
    USER_FIELD_PREFIX,
    WRITABLE_FIELDS,
    FieldRefused,
    check_writable,
    needs_current_name,
    record_fields,
    write_body,
)
from customer_sync_connectors.zendesk._staff import Staff
from customer_sync_connectors.zendesk._webhooks import changes_of, signature_problem
from customer_sync_connectors.zendesk.client import (
    MAX_BULK,
    MAX_SHOW_MANY,
    ZendeskApiClient,
    ZendeskClient,
)

from customer_sync_connectors.zendesk.models import Identity, JobStatus, User
from customer_sync_connectors.zendesk.settings import ZendeskSettings

__all__ = ["ZendeskConnector"]

T = TypeVar("T")


class ZendeskConnector(HttpConnector[ZendeskSettings, ZendeskClient]):
    """Users of one Zendesk Support account. See the module docstring for the API notes.

    Args:
        settings: the validated settings block.
        app: the configured app name.
        transport: the HTTP test seam (`httpx.ASGITransport` over the simulator).
        clock: wall clock (aware UTC) for webhook freshness, job timeouts and rate limits.
        sleep: async sleep for rate limits, retries and job polling; tests inject both.
    """

    name = "zendesk"
    settings_model = ZendeskSettings
    capabilities = (
        Capability.INCREMENTAL | Capability.WEBHOOKS | Capability.BATCH_WRITE
        | Capability.DELETE | Capability.DELETES_VISIBLE | Capability.SEARCH_BY_EMAIL
        | Capability.UPSERT | Capability.MERGE
    )
    object_types = ("user",)
    batch_size = MAX_BULK

    def __init__(self, settings: ZendeskSettings, *, app: str,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None) -> None:
        super().__init__(settings, app=app, transport=transport, clock=clock, sleep=sleep)
        self._staff = Staff()
        self._bulk_disabled = False
        # `include=identities` is asked for until Zendesk refuses it once
        self._sideload = settings.fetch_identities and settings.sideload_identities

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        account = RateLimiter(s.rate_limit, s.rate_limit_window_s, clock=self._monotonic,
                              sleep=self._sleep)
        export = RateLimiter(s.export_rate_limit, s.export_rate_limit_window_s,
                             clock=self._monotonic, sleep=self._sleep)
        self.http = ZendeskApiClient(
            app=self.app, connector=self.name, base_url=s.base_url,
            auth_headers=s.auth_headers(), timeout_s=s.timeout_s, limiter=account,
            retry=retry_policy(sleep=self._sleep), transport=self._transport,
            max_retry_after_s=self.max_retry_after_s,
        )
        self._api = ZendeskClient(self.http, export_limiter=MultiLimiter(account, export))

    # -- check and listing ----------------------------------------------------------------------

    async def check(self) -> None:
        me = await self.api.me()
        if me is None:
            raise self.error(AuthError, "Zendesk answered as for an anonymous caller: the "
                             "credentials were not accepted", operation="users.me")
        if me.role != "admin":
            raise self.error(AuthError, "the incremental user export needs an admin's "
                             "credentials", operation="users.me")

    async def app_fields(self) -> set[str]:
        """The user attributes the connector reads, and `user_fields.KEY` per custom user
        field the account defines (ListUserFields)."""
        keys = await self.api.user_field_keys()
        return {*WRITABLE_FIELDS, *READ_ONLY_FIELDS, *(USER_FIELD_PREFIX + key for key in keys)}

    async def list_changes(  # type: ignore[override]
        self, since: Cursor | None
    ) -> AsyncIterator[ChangePage]:
        per_page = self.settings.page_size
        params: dict[str, Any] = {"per_page": per_page}
        if since is None:
            params["start_time"] = 0
        else:
            params["cursor"] = since.value
        seen = {since.value} if since is not None else set()
        while True:
            try:
                page = await self.api.export_page(self._with_sideload(params))
            except RecordRejected as exc:
                if self._sideload:
                    self._refuse_sideload(exc, "users.export")
                    continue  # the same page again, without the include
                # A 4xx on an export page is no record's fault; the likely cause is a stored
                # cursor Zendesk no longer accepts (its lifetime is UNVERIFIED).
                raise self.error(ConnectorError, f"Zendesk refused the export cursor ({exc}); "
                                 "`customer-sync resync APP` reads the app again from the start",
                                 operation="users.export") from exc
            cursor = page.after_cursor or (since.value if since is not None else None)
            if not cursor:
                raise self.error(ConnectorError, "an export page carries no cursor",
                                 operation="users.export")
            records = await self._records(page.users, sideloaded=page.identities)
            self.log.info("app.page_fetched", count=len(records),
                          deleted=sum(r.deleted for r in records),
                          skipped=len(page.users) - len(records), end=page.end_of_stream)
            yield ChangePage(records=records, cursor=Cursor(value=cursor))
            if page.end_of_stream or not page.after_cursor:
                return
            if page.after_cursor in seen:
                raise self.error(ConnectorError, "pagination repeated a cursor token",
                                 operation="users.export")
            seen.add(page.after_cursor)
            since = Cursor(value=page.after_cursor)
            # Follow-up pages carry the cursor only, as Zendesk's own after_url does.
            params = {"cursor": page.after_cursor, "per_page": per_page}

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        ids = [int(i) for i in dict.fromkeys(app_record_ids) if _is_user_id(i)]
        records: list[AppRecord] = []
        for chunk in _chunks(ids, MAX_SHOW_MANY):
            users, sideloaded = await self._show_many(chunk)
            records += [r for r in await self._records(users, sideloaded=sideloaded) if not r.deleted]
        return records

    async def _show_many(self, ids: Sequence[int]) -> tuple[list[User], list[Identity] | None]:
        while True:
            include = "identities" if self._sideload else None
            try:
                return await self.api.show_many_with(ids, include=include)
            except RecordRejected as exc:
                if include is None:
                    raise
                self._refuse_sideload(exc, "users.show_many")

    def _with_sideload(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, "include": "identities"} if self._sideload else dict(params)

    def _refuse_sideload(self, exc: Exception, operation: str) -> None:
        self._sideload = False
        self.log.warning("identities.sideload_refused", operation=operation, error=str(exc),
                         fallback="one identities request per user")

    async def search_by_email(self, email: str) -> list[AppRecord]:
        # The `email:` qualifier form is UNVERIFIED (CONTRACTS.md); matches are re-checked here.
        wanted = email.strip().lower()
        users = await self.api.search(f"email:{wanted}", max_pages=1)
        found = []
        for record in await self._records(users):
            if record.deleted:
                continue
            emails = [record.fields.get("email"), *record.fields.get("other_emails", ())]
            if wanted in {str(e).lower() for e in emails if e} or (
                "other_emails" not in record.fields
            ):
                found.append(record)
        return found

    async def _records(
        self, users: Iterable[User], *, sideloaded: Sequence[Identity] | None = None
    ) -> list[AppRecord]:
        """App records for users in the order given; staff are left out with end_users_only.

        `sideloaded`: the identities Zendesk side-loaded with these users (all of them: a user
        with none there has none); None reads each user's identities."""
        kept: list[User] = []
        for user in users:
            self._staff.note(user)
            if self.settings.end_users_only and not user.is_end_user:
                continue
            kept.append(user)
        live = [u for u in kept if u.active]
        if sideloaded is not None and self.settings.fetch_identities:
            identities: dict[int, list[Identity] | None] = {u.id: [] for u in live}
            for identity in sideloaded:
                if identity.user_id in identities:
                    identities[identity.user_id].append(identity)  # type: ignore[union-attr]
        else:
            identities = await self._identities_of(live)
        return [
            AppRecord(app_record_id=str(u.id), modified_at=u.updated_at, deleted=True)
            if not u.active else
            AppRecord(app_record_id=str(u.id), modified_at=u.updated_at,
                      fields=record_fields(u, identities.get(u.id)))
            for u in kept
        ]

    async def _identities_of(self, users: Sequence[User]) -> dict[int, list[Identity] | None]:
        if not self.settings.fetch_identities or not users:
            return {}

        async def one(user: User) -> list[Identity] | None:
            try:
                return await self.api.identities(user.id)
            except RecordGone:
                return None  # deleted since it was listed: the next page or pass says so

        found = await self._bounded([one(u) for u in users])
        return {u.id: ids for u, ids in zip(users, found, strict=True)}

    @property
    def max_in_flight(self) -> int:
        """Per-record calls at once (`_bounded`): the `identity_concurrency` setting."""
        return self.settings.identity_concurrency

    # -- staff ----------------------------------------------------------------------------------

    async def _load_staff(self) -> None:
        try:
            await self._staff.load(self.api.search)
        except (RecordRejected, RecordGone) as exc:
            # Not the fault of the record being written: never let it read as one.
            raise self.error(ConnectorError, "could not list the account's agents and admins: "
                             f"{exc}", operation="users.search") from exc

    def _staff_refusal(self, *, email: Any = None, app_record_id: str | None = None,
                       operation: str) -> ConnectorError | None:
        user_id = int(app_record_id) if app_record_id and _is_user_id(app_record_id) else None
        if not self._staff.holds(email=email, user_id=user_id):
            return None
        return self._not_staff_error(operation=operation, app_record_id=app_record_id)

    def _not_staff_error(self, *, operation: str, app_record_id: str | None) -> ConnectorError:
        return self.error(RecordRejected, "the user is a Zendesk agent or admin; customer-sync "
                          "never writes to staff", operation=operation,
                          app_record_id=app_record_id)

    # -- creates --------------------------------------------------------------------------------

    def _create_body(self, fields: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        try:
            body = write_body(fields, on_create=True)
        except FieldRefused as exc:
            raise self.error(RecordRejected, str(exc), operation="users.create") from None
        if not body.get("email") and not body.get("external_id"):
            # Nothing else to match a re-sent create by (CreateOrUpdateUser matches "by e-mail
            # address or external ID").
            body["external_id"] = idempotency_key
        return body

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        body = self._create_body(fields, idempotency_key)
        await self._load_staff()
        refusal = self._staff_refusal(email=body.get("email"), operation="users.create")
        if refusal is not None:
            raise refusal
        op = WriteOp(key="create", op="create", fields=fields, idempotency_key=idempotency_key)
        outcome = await self._create_one(op, body)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.receipt is not None
        return outcome.receipt

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        ready: list[tuple[WriteOp, dict[str, Any]]] = []
        await self._load_staff()
        for op in ops:
            try:
                body = self._create_body(op.fields, op.idempotency_key or op.key)
            except RecordRejected as exc:
                outcomes[op.key] = WriteOutcome(key=op.key, error=exc)
                continue
            refusal = self._staff_refusal(email=body.get("email"), operation="users.create")
            if refusal is not None:
                outcomes[op.key] = WriteOutcome(key=op.key, error=refusal)
                continue
            ready.append((op, body))
        for chunk in _chunks(ready, MAX_BULK):
            for outcome in await self._create_chunk(chunk):
                outcomes[outcome.key] = outcome
        return [outcomes[op.key] for op in ops]

    async def _create_chunk(self, chunk: Sequence[tuple[WriteOp, dict[str, Any]]]
                            ) -> list[WriteOutcome]:
        job = None
        if len(chunk) > 1 and not self._bulk_disabled:
            job = await self.api.create_or_update_many([body for _, body in chunk])
            if job is None:
                # 403: bulk imports are switched off on this account (CONTRACTS.md).
                self._bulk_disabled = True
                self.log.warning("write.batch_unavailable", reason="bulk_import_disabled",
                                 count=len(chunk))
        if job is None:
            return [await self._create_one(op, body) for op, body in chunk]
        job = await self._wait_for(job)
        return self._outcomes_of(job, chunk)

    async def _create_one(self, op: WriteOp, body: Mapping[str, Any]) -> WriteOutcome:
        try:
            user = await self.api.create_or_update(body)
        except (RecordRejected, RecordGone) as exc:
            return WriteOutcome(key=op.key, error=exc)
        self._staff.note(user)
        return self._created(op, user.id, modified_at=user.updated_at)

    def _created(self, op: WriteOp, user_id: int, *, modified_at: datetime | None = None
                 ) -> WriteOutcome:
        """The outcome of an upsert that Zendesk applied to user `user_id`.

        An upsert can still land on an agent through an address the staff check does not know
        (an agent's secondary email). Zendesk has applied it by then; refusing the outcome at
        least keeps the customer from being linked to the agent.
        """
        if self._staff.holds(user_id=user_id):
            self.log.warning("record.written_to_staff", app_record_id=str(user_id))
            return WriteOutcome(key=op.key, error=self.error(
                RecordRejected, "the upsert matched a Zendesk agent or admin by one of their "
                "addresses; the customer is not linked to them", operation="users.create",
                app_record_id=str(user_id)))
        receipt = WriteReceipt(app_record_id=str(user_id), modified_at=modified_at,
                               fingerprint=fingerprint(op.fields))
        return WriteOutcome(key=op.key, receipt=receipt)

    async def _wait_for(self, job: JobStatus) -> JobStatus:
        """Poll a bulk job until it finishes, at most `job_timeout_s`; a job that does not
        finish is a TransientError (the batch is re-sent, and upserts make that harmless)."""
        s = self.settings
        deadline = self._monotonic() + s.job_timeout_s
        polls = 0
        while not job.is_finished:
            if self._monotonic() >= deadline:
                raise self.error(TransientError, f"bulk job unfinished after {s.job_timeout_s}s "
                                 f"({polls} polls)", operation="job_statuses.show")
            await self._sleep(s.job_poll_interval_s)
            job = await self.api.job_status(job.id)
            polls += 1
        if job.status != "completed":
            raise self.error(TransientError, f"bulk job ended {job.status}",
                             operation="job_statuses.show")
        self.log.debug("write.job_finished", count=job.total, attempt=polls)
        return job

    def _outcomes_of(self, job: JobStatus, chunk: Sequence[tuple[WriteOp, Mapping[str, Any]]]
                     ) -> list[WriteOutcome]:
        by_position: dict[int, WriteOutcome] = {}
        for position, row in enumerate(job.results or []):
            index = row.index if row.index is not None else position
            if not 0 <= index < len(chunk) or index in by_position:
                continue
            op = chunk[index][0]
            if row.failed or row.id is None:
                # `details` quotes the refused value ("Email: ... is not properly formatted"),
                # which need not look like an email: mask what was sent, then anything PII-shaped.
                sent = [str(v) for v in op.fields.values() if isinstance(v, str | int) and str(v)]
                detail = " ".join(p for p in (row.error, row.details) if p)
                reason = redact_text(detail, secrets=sorted(sent, key=len, reverse=True))[:200]
                error = self.error(RecordRejected, f"Zendesk refused the user: {reason}",
                                   operation="users.create_or_update_many",
                                   app_record_id=None if row.id is None else str(row.id))
                by_position[index] = WriteOutcome(key=op.key, error=error)
            else:
                by_position[index] = self._created(op, row.id)
        if len(by_position) != len(chunk):
            raise self.error(TransientError, f"bulk job reported {len(by_position)} of "
                             f"{len(chunk)} results", operation="job_statuses.show")
        return [by_position[i] for i in range(len(chunk))]

    # -- updates and deletes --------------------------------------------------------------------

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        (outcome,) = await self.update_many(
            [WriteOp(key="update", op="update", app_record_id=app_record_id, fields=changed)])
        if outcome.error is not None:
            raise outcome.error
        assert outcome.receipt is not None
        return outcome.receipt

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        todo: list[tuple[WriteOp, dict[str, Any]]] = []
        for op in ops:
            rid = op.app_record_id or ""
            fields = {k: v for k, v in op.fields.items() if k != "email"}
            error: ConnectorError | None = None
            if not _is_user_id(rid):
                error = self.error(RecordGone, "not a Zendesk user id", operation="users.update",
                                   app_record_id=rid)
            else:
                error = self._staff_refusal(app_record_id=rid, operation="users.update")
            if error is None:
                try:
                    check_writable(fields)
                except FieldRefused as exc:
                    error = self.error(RecordRejected, str(exc), operation="users.update",
                                       app_record_id=rid)
            if error is not None:
                outcomes[op.key] = WriteOutcome(key=op.key, error=error)
            else:
                todo.append((op, fields))
        need = [int(op.app_record_id or 0) for op, fields in todo if needs_current_name(fields)]
        current: dict[int, User] = {}
        for chunk in _chunks(need, MAX_SHOW_MANY):
            current.update({u.id: u for u in await self.api.show_many(chunk)})
        results = await self._bounded([self._update_one(op, f, current) for op, f in todo])
        outcomes.update({o.key: o for o in results})
        return [outcomes[op.key] for op in ops]

    async def _update_one(self, op: WriteOp, fields: Mapping[str, Any],
                          current: Mapping[int, User]) -> WriteOutcome:
        rid = op.app_record_id or ""
        user_id = int(rid)
        now = current.get(user_id)
        try:
            if needs_current_name(fields) and (now is None or not now.active):
                raise self.error(RecordGone, "user not found", operation="users.update",
                                 app_record_id=rid)
            if now is not None and not now.is_end_user:
                self._staff.note(now)
                raise self._not_staff_error(operation="users.update", app_record_id=rid)
            try:
                body = write_body(fields, current=now)
            except FieldRefused as exc:
                raise self.error(RecordRejected, str(exc), operation="users.update",
                                 app_record_id=rid) from None
            user = await self.api.update(user_id, body) if body else None
        except (RecordGone, RecordRejected) as exc:
            return WriteOutcome(key=op.key, error=exc)
        if "email" in op.fields:
            return WriteOutcome(key=op.key, error=self.error(
                RecordRejected, "Zendesk's primary email is writeable on create only (an update "
                "adds a second address); the other fields were written",
                operation="users.update", app_record_id=rid))
        receipt = WriteReceipt(app_record_id=rid, modified_at=user.updated_at if user else None,
                               fingerprint=fingerprint(op.fields))
        return WriteOutcome(key=op.key, receipt=receipt)

    async def delete(self, app_record_id: str) -> None:
        if not _is_user_id(app_record_id):
            raise self.error(RecordGone, "not a Zendesk user id", operation="users.delete",
                             app_record_id=app_record_id)
        refusal = self._staff_refusal(app_record_id=app_record_id, operation="users.delete")
        if refusal is not None:
            raise refusal
        await self.api.delete(int(app_record_id))

    async def merge(self, survivor_id: str, merged_id: str) -> str:
        """MergeEndUsers: `merged_id` into `survivor_id` (end users only; the survivor keeps its id).

        A merge asked again after a lost answer finds the merged user gone (404): when the
        survivor is live and the merged user is not, that is the merge done.
        """
        for rid in (survivor_id, merged_id):
            if not _is_user_id(rid):
                raise self.error(RecordGone, "not a Zendesk user id", operation="users.merge", app_record_id=rid)
            refusal = self._staff_refusal(app_record_id=rid, operation="users.merge")
            if refusal is not None:
                raise refusal
        try:
            await self.api.merge(int(merged_id), int(survivor_id))
        except (RecordGone, RecordRejected, TransientError):
            live = {r.app_record_id for r in await self.read([survivor_id, merged_id])}
            if survivor_id in live and merged_id not in live:
                return survivor_id
            raise
        return survivor_id

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, url: str = "",
                       method: str = "POST") -> bool:
        secret = self.settings.webhook_secret
        if secret is None:
            return self._webhook_verdict("no_webhook_secret")
        problem = signature_problem(headers, body, secret=secret.get_secret_value(),
                                    now=self._now(), max_age_s=self.settings.webhook_max_age_s)
        return self._webhook_verdict(problem)

    def parse_webhook(self, body: bytes) -> list[Change]:
        """The changes a verified delivery reports (see `_webhooks.changes_of`).

        Raises:
            WebhookRefused: the body is not one Zendesk event, or out of bounds.
        """
        return self._parsed_webhook(lambda: changes_of(body, end_users_only=self.settings.end_users_only))


def _is_user_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and value != "0"


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
