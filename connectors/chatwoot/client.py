"""Chatwoot's contacts API as typed calls: paths, parameters, bodies and pages.

Every call goes through the SDK's `ApiClient` (rate limits, retries, error classification); this
module only knows the vendor's shapes (shared/specs/chatwoot/, CONTRACTS.md section 4). All
paths are under `/api/v1/accounts/{account_id}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from customer_sync_connectors.chatwoot.models import Contact, ContactPage, Inbox

from customer_sync.sdk import (
    ApiClient,
    ConnectorError,
    RecordGone,
    RecordRejected,
    json_body,
    redact_text,
)

if TYPE_CHECKING:
    import httpx

    from customer_sync.sdk import Limiter

__all__ = ["PAGE_SIZE", "ChatwootClient", "ContactInvalid"]

PAGE_SIZE = 15  # "Listing all the resolved contacts with pagination (Page size = 15)"


class ContactInvalid(RecordRejected):
    """A 422 RecordInvalid: Chatwoot refused the values; `attributes` names the fields
    (`email`, `phone_number`, `identifier`...), the message never quotes a value."""

    def __init__(self, message: str, *, attributes: list[str], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.attributes = attributes

    @property
    def is_taken(self) -> bool:
        """Whether a unique attribute is held by another contact ("has already been taken")."""
        return "already been taken" in str(self)


class ChatwootClient:
    """The contacts API calls the connector makes, over one app's `ApiClient`.

    Args:
        http: the app's client (base URL, token, account rate limit).
        account_id: the account in every path.
        search_limiter: the account limit *and* the search's own lower one.
    """

    def __init__(self, http: ApiClient, *, account_id: int, search_limiter: Limiter) -> None:
        self.http = http
        self.search_limiter = search_limiter
        self._root = f"/api/v1/accounts/{account_id}"

    def _error(self, message: str, *, operation: str) -> ConnectorError:
        return ConnectorError(message, app=self.http.app, connector=self.http.connector,
                              operation=operation)

    def _body(self, response: httpx.Response, *, operation: str) -> Any:
        try:
            return json_body(response)
        except ValueError:
            raise self._error("the response is not JSON", operation=operation) from None

    def _contact(self, payload: Any, *, operation: str) -> Contact:
        try:
            return Contact.model_validate(payload)
        except ValueError:
            raise self._error("a contact is not the documented shape",
                              operation=operation) from None

    async def inboxes(self) -> list[Inbox]:
        """The account's inboxes: `{payload: [...]}` as Chatwoot answers (the 2024 swagger
        says a bare array; both are read)."""
        operation = "inboxes.list"
        response = await self.http.request("GET", f"{self._root}/inboxes", operation=operation)
        body = self._body(response, operation=operation)
        items = body.get("payload") if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            raise self._error("the inbox list is not the documented shape", operation=operation)
        return [Inbox.model_validate(i) for i in items]

    async def contact_attribute_keys(self) -> list[str]:
        """The keys of the account's contact custom attribute definitions
        (get-account-custom-attribute with attribute_model=1, a bare array)."""
        operation = "custom_attributes.list"
        response = await self.http.request("GET", f"{self._root}/custom_attribute_definitions",
                                           operation=operation, params={"attribute_model": "1"})
        body = self._body(response, operation=operation)
        if not isinstance(body, list):
            raise self._error("the custom attribute list is not the documented shape",
                              operation=operation)
        return [str(a["attribute_key"]) for a in body if isinstance(a, Mapping) and a.get("attribute_key")]

    async def page(self, page: int) -> ContactPage:
        """One page of the resolved contacts, in Chatwoot's own order (no `sort`)."""
        return await self._page("GET", "/contacts", {"page": page}, operation="contacts.list")

    async def search(self, q: str, *, page: int = 1) -> ContactPage:
        """One page of resolved contacts whose name, email, phone or identifier holds `q`."""
        return await self._page("GET", "/contacts/search", {"q": q, "page": page},
                                operation="contacts.search", limiter=self.search_limiter)

    async def _page(self, method: str, path: str, params: Mapping[str, Any], *, operation: str,
                    limiter: Limiter | None = None) -> ContactPage:
        response = await self.http.request(method, self._root + path, operation=operation,
                                           params=params, limiter=limiter)
        try:
            return ContactPage.model_validate_json(response.content)
        except ValueError:
            raise self._error("a contact page is not the documented shape",
                              operation=operation) from None

    async def show(self, contact_id: int) -> Contact | None:
        """The contact, or None when it no longer exists."""
        operation = "contacts.show"
        try:
            response = await self.http.request("GET", f"{self._root}/contacts/{contact_id}",
                                               operation=operation, app_record_id=str(contact_id))
        except RecordGone:
            return None
        body = self._body(response, operation=operation)
        return self._contact(body.get("payload") if isinstance(body, Mapping) else None,
                             operation=operation)

    async def create(self, body: Mapping[str, Any]) -> Contact:
        """POST /contacts; the answer is `{payload: {contact, contact_inbox}}`.

        Raises:
            ContactInvalid: a 422 (a value refused, or a unique one taken).
        """
        operation = "contacts.create"
        response = await self.http.request("POST", f"{self._root}/contacts", operation=operation,
                                           json=dict(body), accept=(422,))
        self._raise_invalid(response, operation=operation)
        payload = self._body(response, operation=operation)
        contact = payload.get("payload", {}).get("contact") if isinstance(payload, Mapping) else None
        return self._contact(contact, operation=operation)

    async def update(self, contact_id: int, body: Mapping[str, Any]) -> Contact | None:
        """PUT /contacts/{id}: 200 with `{payload: contact}` now, 204 in the 2024 swagger
        (None then).

        Raises:
            RecordGone: the contact no longer exists.
            ContactInvalid: a 422.
        """
        operation = "contacts.update"
        response = await self.http.request("PUT", f"{self._root}/contacts/{contact_id}",
                                           operation=operation, json=dict(body),
                                           app_record_id=str(contact_id), accept=(422,))
        self._raise_invalid(response, operation=operation, app_record_id=str(contact_id))
        if response.status_code == 204 or not response.content:
            return None
        payload = self._body(response, operation=operation)
        return self._contact(payload.get("payload") if isinstance(payload, Mapping) else None,
                             operation=operation)

    async def delete(self, contact_id: int) -> None:
        """DELETE /contacts/{id} (200, empty).

        Raises:
            RecordGone: the contact no longer exists.
        """
        await self.http.request("DELETE", f"{self._root}/contacts/{contact_id}",
                                operation="contacts.delete", app_record_id=str(contact_id))

    def _raise_invalid(self, response: httpx.Response, *, operation: str,
                       app_record_id: str | None = None) -> None:
        if response.status_code != 422:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, Mapping) else {}
        message = body.get("message") or body.get("error") or ""
        attributes = body.get("attributes")
        attributes = [str(a) for a in attributes] if isinstance(attributes, list) else []
        text = redact_text(str(message))[:200]
        raise ContactInvalid(f"HTTP 422 Unprocessable Entity: {text}".rstrip(": "),
                             attributes=attributes, app=self.http.app,
                             connector=self.http.connector, operation=operation,
                             status_code=422, app_record_id=app_record_id)
