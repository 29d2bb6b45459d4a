"""HTTP to HubSpot's contacts v3 endpoints: the requests the connector sends, and their answers
parsed into `models`.

One `ApiClient` per app carries the token, timeouts, retries and the app's rate limit; search
calls also wait for the search endpoint's own, lower limit. Request shapes follow
`hubspot/crm-contacts-v3.json`, with one deliberate deviation named where it is made (search
`sorts`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx

from customer_sync.sdk import (
    ApiClient,
    ConnectorError,
    MultiLimiter,
    RateLimiter,
    RecordRejected,
    json_body,
    retry_policy,
)
from customer_sync_connectors.hubspot.models import (
    BatchResponse,
    Contact,
    ContactPage,
    SearchPage,
    parse,
)

__all__ = ["CONTACTS", "HubSpotClient"]

CONTACTS = "/crm/v3/objects/contacts"
#: HubSpot's Properties API, "Read all properties" of contacts. It is not among the shared
#: specs; its path and `{"results": [{"name": ...}]}` answer follow HubSpot's public reference.
CONTACT_PROPERTIES = "/crm/v3/properties/contacts"
M = TypeVar("M", bound=ContactPage | BatchResponse)


class _ErrorFactory(Protocol):
    def __call__(self, cls: type[ConnectorError], message: str, **kw: Any) -> ConnectorError: ...


def _under(calls: int) -> int:
    """A limit a little under the vendor's: it counts arrivals, we count departures."""
    return max(1, calls - max(1, calls // 20))


class HubSpotClient:
    """One app's client for the contacts endpoints.

    Args:
        app, connector: named in errors and logs.
        base_url: HubSpot's API root.
        token: the private app's access token (sent as a Bearer token, never logged).
        rate_limit: (calls, window_s) of the app, as documented; the client stays a little
            under it.
        search_per_s: the search endpoint's own limit.
        error: builds errors naming the app (`Connector.error`).
        transport: the test seam; None uses the network.
        clock, sleep: with `sleep` given, the limiters count time in `clock().timestamp()` and
            they and the retry policy sleep through `sleep` (tests); else the real clocks.
    """

    def __init__(
        self,
        *,
        app: str,
        connector: str,
        base_url: str,
        token: str,
        rate_limit: tuple[int, float],
        search_per_s: float,
        error: _ErrorFactory,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        monotonic: Callable[[], float] = time.monotonic
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep
        if sleep is not None and clock is not None:
            monotonic, pause = (lambda: clock().timestamp()), sleep
        calls, window_s = rate_limit
        app_limiter = RateLimiter(_under(calls), window_s, clock=monotonic, sleep=pause)
        per_window = max(1, int(search_per_s))
        search_limiter = RateLimiter(
            per_window, per_window / search_per_s, clock=monotonic, sleep=pause
        )
        self._search_limiter = MultiLimiter(app_limiter, search_limiter)
        self._error = error
        self.api = ApiClient(
            app=app,
            connector=connector,
            base_url=base_url,
            auth_headers={"Authorization": f"Bearer {token}"},
            limiter=app_limiter,
            retry=None if sleep is None else retry_policy(sleep=pause),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    async def check(self) -> None:
        """One contact id: proves the token and the contacts read scope."""
        params = {"limit": 1, "properties": "hs_object_id"}
        await self.api.request("GET", CONTACTS, operation="contacts.check", params=params)

    async def list_page(
        self,
        *,
        after: str | None,
        limit: int,
        properties: Sequence[str],
        history: Sequence[str] = (),
        archived: bool = False,
    ) -> ContactPage:
        """One page of the list endpoint (archived contacts only, with `archived`)."""
        params: dict[str, Any] = {"limit": limit, "properties": list(properties)}
        if history:
            params["propertiesWithHistory"] = list(history)
        if archived:
            params["archived"] = "true"
        if after:
            params["after"] = after
        operation = "contacts.list_archived" if archived else "contacts.list"
        response = await self.api.request("GET", CONTACTS, operation=operation, params=params)
        return self._parse(ContactPage, response, operation)

    async def search_modified(
        self,
        floor_ms: int | None,
        *,
        after: int,
        limit: int,
        properties: Sequence[str],
        descending: bool = False,
    ) -> SearchPage:
        """Contacts with `lastmodifieddate >= floor_ms` (all without a floor), oldest first
        (newest first with `descending`), from offset `after`."""
        groups = []
        if floor_ms is not None:
            floor = {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(floor_ms)}
            groups.append({"filters": [floor]})
        # HubSpot's documented sort objects. The spec types `sorts` as strings, but HubSpot
        # ignores a sort sent as a string (hubspot-api-ruby issue #257).
        direction = "DESCENDING" if descending else "ASCENDING"
        sort = {"propertyName": "lastmodifieddate", "direction": direction}
        return await self._search(groups, [sort], properties, limit=limit, after=after)

    async def search_email(self, email: str, *, properties: Sequence[str]) -> SearchPage:
        """Contacts whose primary email is `email`."""
        groups = [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]
        return await self._search(groups, [], properties, limit=10, after=0)

    async def search_created(
        self,
        since_ms: int | None,
        equal: Mapping[str, str],
        *,
        properties: Sequence[str],
        limit: int = 10,
    ) -> SearchPage:
        """Contacts created at or after `since_ms` (any time with None) whose properties `equal`
        match (EQ, which HubSpot compares case-insensitively), oldest first, at most `limit`."""
        filters = [{"propertyName": k, "operator": "EQ", "value": v} for k, v in equal.items()]
        if since_ms is not None:
            filters.insert(0, {"propertyName": "createdate", "operator": "GTE", "value": str(since_ms)})
        sort = {"propertyName": "createdate", "direction": "ASCENDING"}
        return await self._search([{"filters": filters}], [sort], properties, limit=limit, after=0)

    async def probe_id_property(self, name: str, value: str) -> bool:
        """Read one contact by `value` of property `name` used as `idProperty` (spec: "The name
        of a property whose values are unique for this object type"): True when HubSpot takes
        the property as one (found or 404), False when it refuses it (a 4xx other than 404).

        What HubSpot answers for a property that does not exist or is not unique is
        UNVERIFIED (the spec shows no example); the simulator answers 400.
        """
        params = {"idProperty": name, "properties": "hs_object_id"}
        try:
            await self.api.request(
                "GET", f"{CONTACTS}/{value}", operation="contacts.check_id_property",
                params=params, accept=(404,),
            )
        except RecordRejected:
            return False
        return True

    async def property_names(self) -> set[str] | None:
        """The internal names of the account's contact properties (Properties API, "Read all
        properties"), or None when the token may not read them (403: the app lacks a schema
        read scope), so the caller says it cannot tell rather than failing a working setup."""
        response = await self.api.request("GET", CONTACT_PROPERTIES, operation="properties.list",
                                          params={"archived": "false"}, accept=(403,))
        if response.status_code == 403:
            return None
        try:
            results = response.json()["results"]
            return {str(item["name"]) for item in results}
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(ConnectorError, "the properties list is not the documented shape",
                              operation="properties.list") from exc

    async def batch(self, action: str, body: Any, *, idempotent: bool) -> BatchResponse:
        """A batch call (`batch/read`, `batch/upsert`...); 200, 201 and 207 are answers."""
        return await self._post(BatchResponse, action, body, idempotent=idempotent)

    async def merge(self, primary_id: str, merged_id: str) -> Contact:
        """POST contacts/merge: fold `merged_id` into `primary_id`; the survivor comes back.
        Not resent after an unclear failure here: the connector checks what happened first."""
        body = {"primaryObjectId": primary_id, "objectIdToMerge": merged_id}
        return await self._post(Contact, "merge", body, idempotent=False)

    async def archive(self, app_record_ids: Sequence[str]) -> None:
        """batch/archive; archiving twice leaves a contact archived, so it is safe to resend."""
        body = {"inputs": [{"id": i} for i in app_record_ids]}
        await self.api.request(
            "POST",
            f"{CONTACTS}/batch/archive",
            operation="contacts.delete",
            json=body,
            idempotent=True,
        )

    async def _search(
        self,
        groups: list[Any],
        sorts: list[Any],
        properties: Sequence[str],
        *,
        limit: int,
        after: int,
    ) -> SearchPage:
        body = {
            "filterGroups": groups,
            "sorts": sorts,
            "properties": list(properties),
            "limit": limit,
            "after": str(after),
        }
        return await self._post(SearchPage, "search", body, idempotent=True, search=True)

    async def _post(
        self, model: type[M], action: str, body: Any, *, idempotent: bool, search: bool = False
    ) -> M:
        operation = f"contacts.{action.replace('/', '_')}"
        response = await self.api.request(
            "POST",
            f"{CONTACTS}/{action}",
            operation=operation,
            json=body,
            idempotent=idempotent,
            limiter=self._search_limiter if search else None,
        )
        return self._parse(model, response, operation)

    def _parse(self, model: type[M], response: httpx.Response, operation: str) -> M:
        try:
            return parse(model, json_body(response))
        except ValueError as exc:  # not JSON, or not the shape we read
            raise self._error(
                ConnectorError,
                f"HubSpot answered in an unexpected shape: {exc}",
                operation=operation,
                status_code=response.status_code,
            ) from None
