"""Paginators: declarations of how a vendor API says "there is a next page", one class each.

A connector declares its paginator and iterates `paginator.pages(client, ...)`, which yields one
`httpx.Response` per page and stops when the API shows no next page. Every paginator guards
against a vendor that hands back a token (or page) it already gave: paging stops with a
`ConnectorError` instead of looping forever (meltano's loop guard).

Pages are reads, so they are sent as idempotent requests whatever the method (HubSpot searches
with POST) and retried by the client's policy.
"""

from __future__ import annotations

import abc
import hashlib
import json as json_module
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from customer_sync.errors import ConnectorError
from customer_sync.sdk.http import json_body

if TYPE_CHECKING:
    import httpx

    from customer_sync.sdk.http import ApiClient

__all__ = ["BasePaginator", "CursorPaginator", "LinkPaginator", "OffsetPaginator"]


def _get_path(body: Any, path: str) -> Any:
    """The value at a dotted path such as `paging.next.after`, or None when any part is missing."""
    value = body
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class BasePaginator(abc.ABC):
    """Yields the pages of one listing. Subclass to declare a new way of finding the next page."""

    @abc.abstractmethod
    def pages(
        self,
        client: ApiClient,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> AsyncIterator[httpx.Response]:
        """Yield each page's response, first page first.

        Raises:
            ConnectorError: the API repeated a token or page (loop guard), or a page is not a
                JSON object; plus whatever `ApiClient.request` raises.
        """

    @staticmethod
    def _body(response: httpx.Response, client: ApiClient, operation: str) -> Mapping[str, Any]:
        try:
            body = json_body(response)
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            raise _error(client, operation, "a page is not a JSON object")
        return body


def _error(client: ApiClient, operation: str, message: str) -> ConnectorError:
    return ConnectorError(
        message, app=client.app, connector=client.connector, operation=operation
    )


class CursorPaginator(BasePaginator):
    """The next page is asked for with a token from the last page (HubSpot, Zendesk exports).

    Args:
        token_path: dotted path of the next token in the page body; missing or empty means
            last page. HubSpot: `paging.next.after`; Zendesk incremental: `after_cursor`.
        param: the name the token is sent back under. HubSpot: `after`; Zendesk: `cursor`.
        send_in: `params` (query string) or `json` (top-level key of the body: HubSpot search).
        end_path: dotted path of a flag that is true on the last page (Zendesk's
            `end_of_stream`, whose last page still carries a cursor).
        has_more_path: dotted path of a flag that is false on the last page (`meta.has_more`).
    """

    def __init__(
        self,
        token_path: str,
        param: str,
        *,
        send_in: Literal["params", "json"] = "params",
        end_path: str | None = None,
        has_more_path: str | None = None,
    ) -> None:
        self.token_path = token_path
        self.param = param
        self.send_in = send_in
        self.end_path = end_path
        self.has_more_path = has_more_path

    def _is_last(self, body: Mapping[str, Any]) -> bool:
        if self.end_path is not None and _get_path(body, self.end_path):
            return True
        return self.has_more_path is not None and not _get_path(body, self.has_more_path)

    async def pages(
        self,
        client: ApiClient,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> AsyncIterator[httpx.Response]:
        seen: set[str] = set()
        token: str | None = None
        while True:
            page_params, page_json = dict(params or {}), json
            if token is not None:
                if self.send_in == "json":
                    page_json = {**(json or {}), self.param: token}
                else:
                    page_params[self.param] = token
            response = await client.request(
                method,
                path,
                operation=operation,
                params=page_params or None,
                json=page_json,
                idempotent=True,
            )
            body = self._body(response, client, operation)
            yield response
            next_token = _get_path(body, self.token_path)
            if next_token in (None, "") or self._is_last(body):
                return
            token = str(next_token)
            if token in seen:
                raise _error(client, operation, "pagination repeated a cursor token")
            seen.add(token)


class LinkPaginator(BasePaginator):
    """The last page carries the URL of the next one (Zendesk `next_page`, `links.next`).

    The next URL, relative or absolute, already holds every query parameter, so `params` go to
    the first page only. `ApiClient` refuses a URL on another origin.

    Args:
        next_path: dotted path of the next URL in the page body; None reads the `Link` header's
            `rel="next"` instead (RFC 8288).
    """

    def __init__(self, next_path: str | None = "links.next") -> None:
        self.next_path = next_path

    def _next_url(self, response: httpx.Response, client: ApiClient, operation: str) -> str | None:
        if self.next_path is None:
            url = response.links.get("next", {}).get("url")
        else:
            url = _get_path(self._body(response, client, operation), self.next_path)
        return str(url) if url else None

    async def pages(
        self,
        client: ApiClient,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> AsyncIterator[httpx.Response]:
        seen = {path}
        url, page_params = path, params
        while True:
            response = await client.request(
                method, url, operation=operation, params=page_params, json=json, idempotent=True
            )
            next_url = self._next_url(response, client, operation)
            yield response
            if next_url is None:
                return
            if next_url in seen:
                raise _error(client, operation, "pagination repeated a next-page link")
            seen.add(next_url)
            url, page_params = next_url, None


class OffsetPaginator(BasePaginator):
    """Pages are asked for by position: `offset` and `limit` (Mailchimp's `offset` and `count`).

    Paging stops at a short or empty page, or once `offset` reaches the total the API reports.
    An API that ignores the offset would return the same page forever: a page identical to the
    one before stops paging with a `ConnectorError`.

    Args:
        records_path: dotted path of the page's list of records (Mailchimp: `members`).
        limit: records per page.
        offset_param: the offset query parameter.
        limit_param: the page size query parameter (Mailchimp: `count`).
        total_path: dotted path of the total number of records, when the API reports it
            (Mailchimp: `total_items`).
        start: the first offset.
    """

    def __init__(
        self,
        records_path: str,
        *,
        limit: int = 100,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_path: str | None = None,
        start: int = 0,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.records_path = records_path
        self.limit = limit
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.total_path = total_path
        self.start = start

    async def pages(
        self,
        client: ApiClient,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> AsyncIterator[httpx.Response]:
        offset = self.start
        previous_digest: bytes | None = None
        while True:
            page_params = {
                **(params or {}),
                self.offset_param: offset,
                self.limit_param: self.limit,
            }
            response = await client.request(
                method, path, operation=operation, params=page_params, json=json, idempotent=True
            )
            body = self._body(response, client, operation)
            records = _get_path(body, self.records_path)
            if not isinstance(records, list):
                raise _error(client, operation, f"a page has no list at {self.records_path}")
            # The records, not the whole body: a body may carry a request id or a timestamp.
            digest = hashlib.blake2b(
                json_module.dumps(records, sort_keys=True, default=str).encode(), digest_size=16
            ).digest()
            if records and digest == previous_digest:
                raise _error(client, operation, "pagination repeated a page")
            previous_digest = digest
            yield response
            offset += len(records)
            total = _get_path(body, self.total_path) if self.total_path else None
            if len(records) < self.limit or (isinstance(total, int) and offset >= total):
                return
