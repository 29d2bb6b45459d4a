"""The `acmecrm` connector: two-way sync of AcmeCRM contacts.

AcmeCRM is made up for this example; `fake.py` documents its API and fakes it. The class below
first declares what the connector is (name, settings, capabilities, paginator), then implements
only what the API forces. Retries, rate limits and the meaning of HTTP statuses come from
`customer_sync.sdk.ApiClient`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError

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
    CursorPaginator,
    RateLimiter,
    RecordRejected,
    WebhookRefused,
    VendorUrl,
    WebhookMaxAge,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
    read_webhook,
    redact_text,
)
from customer_sync_acmecrm.models import BatchAnswer, Contact, ContactPage, WebhookBody

if TYPE_CHECKING:
    import httpx

__all__ = ["AcmeCrmConnector", "AcmeCrmSettings"]

CONTACTS = "/contacts"
M = TypeVar("M", bound=BaseModel)


class AcmeCrmSettings(ConnectorSettings):
    """One `[apps.NAME.settings]` block of the `acmecrm` connector.

    Attributes:
        base_url: the API root.
        api_token: the API token (`api_token = "${ACMECRM_TOKEN}"`), sent as a Bearer token.
        webhook_secret: the secret webhook deliveries are signed with; without it every
            delivery is refused.
        page_size: contacts per listing page (the API takes 1 to 100).
        rate_limit_calls, rate_limit_window_s: the documented limit, 100 calls per 10 s per
            token. The connector stays a little under it.
        webhook_max_age_s: deliveries signed longer ago (or further ahead) are refused.
    """

    base_url: VendorUrl = "https://api.acmecrm.example/v1"
    api_token: SecretStr
    webhook_secret: SecretStr | None = None
    page_size: int = Field(100, ge=1, le=100)
    rate_limit_calls: int = Field(100, ge=1)
    rate_limit_window_s: float = Field(10.0, gt=0)
    webhook_max_age_s: WebhookMaxAge = 300.0


class AcmeCrmConnector(Connector[AcmeCrmSettings]):
    """AcmeCRM contacts.

    Args:
        settings: the app's validated settings.
        app: the configured app name.
        transport: the test seam (`httpx.ASGITransport` over the fake); None uses the network.
    """

    name = "acmecrm"
    settings_model = AcmeCrmSettings
    capabilities = (
        Capability.INCREMENTAL
        | Capability.BATCH_WRITE
        | Capability.DELETE
        | Capability.DELETES_VISIBLE
        | Capability.WEBHOOKS
    )
    object_types = ("contact",)
    batch_size = 100  # the batch endpoint's documented maximum
    paginator = CursorPaginator(token_path="next_page_token", param="page_token")

    def __init__(
        self,
        settings: AcmeCrmSettings,
        *,
        app: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(settings, app=app)
        self._transport = transport
        self._api: ApiClient | None = None

    async def open(self) -> None:
        """Create the app's HTTP client and its rate limiter."""
        s = self.settings
        # The API counts arrivals and we count departures, so stay 10% under its limit.
        calls = max(1, s.rate_limit_calls * 9 // 10)
        self._api = ApiClient(
            app=self.app,
            connector=self.name,
            base_url=s.base_url,
            auth_headers={"Authorization": f"Bearer {s.api_token.get_secret_value()}"},
            limiter=RateLimiter(calls, s.rate_limit_window_s),
            max_retry_after_s=self.max_retry_after_s,
            transport=self._transport,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        api, self._api = self._api, None
        if api is not None:
            await api.aclose()

    @property
    def api(self) -> ApiClient:
        """The app's open client."""
        if self._api is None:
            raise self.error(ConnectorError, "the connector is not open", operation="open")
        return self._api

    async def check(self) -> None:
        """List one contact: proves the token (a 401 becomes AuthError)."""
        await self.api.request("GET", CONTACTS, operation="contacts.check", params={"limit": 1})

    # -- reading --------------------------------------------------------------------------------

    async def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:
        """Contacts updated at or after the cursor's time, oldest first, deleted ones included.

        The cursor is the newest `updated_at` listed so far. `updated_since` is inclusive, so
        the contacts sharing that time are read again (the engine recognises them by their
        fingerprint) and a contact written in the same microsecond is never skipped.
        """
        params: dict[str, Any] = {"limit": self.settings.page_size}
        if since is not None:
            params["updated_since"] = since.value
        pages = self.paginator.pages(
            self.api, "GET", CONTACTS, operation="contacts.list", params=params
        )
        async for response in pages:
            page = self._parse(ContactPage, response, "contacts.list")
            if page.data:
                cursor = Cursor(value=page.data[-1].updated_at.isoformat())
                yield ChangePage(records=[_record(c) for c in page.data], cursor=cursor)

    async def read(self, app_record_ids: Sequence[str]) -> list[AppRecord]:
        """Read contacts one by one; a 404 (missing or deleted) leaves the id out."""
        records = []
        for app_record_id in app_record_ids:
            response = await self.api.request(
                "GET",
                f"{CONTACTS}/{app_record_id}",
                operation="contacts.read",
                app_record_id=app_record_id,
                accept=(404,),
            )
            if response.status_code != 404:
                records.append(_record(self._parse(Contact, response, "contacts.read")))
        return records

    # -- writing --------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        """Create a contact. The API answers a repeated `Idempotency-Key` with the contact that
        key created, so a create resent after a lost answer makes no duplicate."""
        response = await self.api.request(
            "POST",
            CONTACTS,
            operation="contacts.create",
            json=dict(fields),
            headers={"Idempotency-Key": idempotency_key},
            idempotent=True,
        )
        return _receipt(self._parse(Contact, response, "contacts.create"), fields)

    async def update(self, app_record_id: str, changed: Mapping[str, Any]) -> WriteReceipt:
        """PATCH the changed fields; 404 becomes RecordGone, 422 RecordRejected."""
        response = await self.api.request(
            "PATCH",
            f"{CONTACTS}/{app_record_id}",
            operation="contacts.update",
            json=dict(changed),
            app_record_id=app_record_id,
            idempotent=True,  # setting the same values twice changes nothing
        )
        return _receipt(self._parse(Contact, response, "contacts.update"), changed)

    async def delete(self, app_record_id: str) -> None:
        """Delete a contact; one that is already gone (404) counts as deleted."""
        await self.api.request(
            "DELETE",
            f"{CONTACTS}/{app_record_id}",
            operation="contacts.delete",
            app_record_id=app_record_id,
            accept=(404,),
        )

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Create through the batch endpoint, `batch_size` contacts per call.

        The API answers per item, so a refused contact fails alone as RecordRejected. Every
        item carries its idempotency key, which makes resending a whole batch harmless.
        """
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(ops), self.batch_size):
            outcomes += await self._create_batch(ops[start : start + self.batch_size])
        return outcomes

    async def _create_batch(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        operation = "contacts.batch_create"
        sent = {op.key: op for op in ops}
        contacts = [
            {"ref": key, "idempotency_key": op.idempotency_key or key, "fields": dict(op.fields)}
            for key, op in sent.items()
        ]
        response = await self.api.request(
            "POST",
            f"{CONTACTS}/batch",
            operation=operation,
            json={"contacts": contacts},
            idempotent=True,
        )
        answer = self._parse(BatchAnswer, response, operation)
        if sorted(item.ref for item in answer.results) != sorted(sent):
            message = "the batch answer does not name each contact sent once"
            raise self.error(ConnectorError, message, operation=operation)
        outcomes = []
        for item in answer.results:
            op = sent[item.ref]
            if item.contact is not None:
                outcomes.append(WriteOutcome(key=op.key, receipt=_receipt(item.contact, op.fields)))
                continue
            # The API's message might quote the refused value: redact it before keeping it.
            detail = redact_text(f"{item.error.code}: {item.error.message}") if item.error else ""
            error = self.error(
                RecordRejected,
                f"AcmeCRM refused the contact ({detail})",
                operation=operation,
                status_code=item.status,
            )
            outcomes.append(WriteOutcome(key=op.key, error=error))
        return outcomes

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
    ) -> bool:
        """Check `X-Acme-Signature` (HMAC-SHA256 of `timestamp + "." + body`) and the age of
        `X-Acme-Timestamp`. AcmeCRM signs neither the URL nor the method."""
        secret = self.settings.webhook_secret
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-acme-timestamp", "").strip()
        signature = lowered.get("x-acme-signature", "").strip()
        if secret is None or not (timestamp.isascii() and timestamp.isdigit()):
            return False
        # A captured delivery replayed later, or signed by a clock far ahead, is refused.
        if abs(time.time() - int(timestamp)) > self.settings.webhook_max_age_s:
            return False
        signed = timestamp.encode() + b"." + body
        digest = hmac.new(secret.get_secret_value().encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(f"sha256={digest}", signature)

    def parse_webhook(self, body: bytes) -> list[Change]:
        """One change per contact event; the engine reads the contact before using it."""
        try:
            # Bounded JSON (depth, numbers, size), then the typed shape; never another error.
            delivery = read_webhook(body, WebhookBody)
        except WebhookRefused as exc:
            raise self.error(WebhookRefused, f"malformed webhook: {exc}",
                             operation="webhook.parse") from None
        return [
            Change(
                app_record_id=event.contact_id,
                kind="delete" if event.type == "contact.deleted" else "upsert",
                occurred_at=event.occurred_at,
            )
            for event in delivery.events
            if event.type.startswith("contact.")  # other objects' events are not ours
        ]

    def _parse(self, model: type[M], response: httpx.Response, operation: str) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise self.error(
                ConnectorError,
                f"AcmeCRM answered in an unexpected shape ({exc.error_count()} problems)",
                operation=operation,
                status_code=response.status_code,
            ) from None


def _record(contact: Contact) -> AppRecord:
    return AppRecord(
        app_record_id=contact.id,
        fields=contact.app_fields,
        modified_at=contact.updated_at,
        deleted=contact.deleted,
    )


def _receipt(contact: Contact, sent: Mapping[str, Any]) -> WriteReceipt:
    """What the engine needs to recognise the echo of this write: the fingerprint of what we
    sent, and the version and time the app gave it."""
    return WriteReceipt(
        app_record_id=contact.id,
        modified_at=contact.updated_at,
        version=str(contact.version),
        fingerprint=fingerprint(sent),
    )
