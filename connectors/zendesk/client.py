"""Zendesk Support's users API as typed calls: paths, parameters, body wrappers and paging.

Every call goes through the SDK's `ApiClient` (rate limits, retries, error classification);
this module only knows the vendor's shapes (shared/specs/zendesk/support-api-oas.yaml,
CONTRACTS.md section 2). Paths are the OAS's, without the `.json` suffix Zendesk also accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from customer_sync.sdk import ApiClient, ConnectorError, LinkPaginator, RecordRejected, json_body
from customer_sync_connectors.zendesk.models import ExportPage, Identity, JobStatus, User

if TYPE_CHECKING:
    import httpx

    from customer_sync.sdk import Limiter

__all__ = ["MAX_BULK", "MAX_SHOW_MANY", "ZendeskApiClient", "ZendeskClient"]

MAX_SHOW_MANY = 100  # show_many: "up to 100" ids
MAX_BULK = 100  # create_or_update_many: "up to 100 user objects"
_SEARCH_PAGE = 100  # search: 100 per page


class ZendeskApiClient(ApiClient):
    """`ApiClient` that names the refused fields of a 422.

    Zendesk's validation error says only "Record validation errors"; its `details` object is
    keyed by field name (`{"email": [{"description": "Email: ... is not properly formatted"}]}`,
    shape UNVERIFIED beyond the `error` name). The field names are added to the message; the
    descriptions, which quote the refused values, are not.
    """

    def validate_response(self, response: httpx.Response, *, operation: str,
                          app_record_id: str | None = None) -> ConnectorError | None:
        error = super().validate_response(response, operation=operation,
                                          app_record_id=app_record_id)
        if not isinstance(error, RecordRejected):
            return error
        try:
            details = response.json().get("details")
        except (ValueError, AttributeError):
            return error
        if not isinstance(details, Mapping) or not details:
            return error
        names = ", ".join(sorted(str(k) for k in details)[:10])
        return RecordRejected(f"{error.args[0]} (fields: {names})", app=error.app,
                              connector=error.connector, operation=error.operation,
                              status_code=error.status_code, app_record_id=error.app_record_id)


class ZendeskClient:
    """The users API calls the connector makes, over one app's `ApiClient`.

    Args:
        http: the app's client (base URL, credentials, account rate limit).
        export_limiter: the account limit *and* the incremental exports' own lower limit.
    """

    def __init__(self, http: ApiClient, *, export_limiter: Limiter) -> None:
        self.http = http
        self.export_limiter = export_limiter

    def _error(self, message: str, *, operation: str) -> ConnectorError:
        return ConnectorError(message, app=self.http.app, connector=self.http.connector,
                              operation=operation)

    def _json(self, response: httpx.Response, key: str, *, operation: str) -> Any:
        return self._body(response, key, operation=operation)[key]

    def _body(self, response: httpx.Response, key: str, *, operation: str) -> Mapping[str, Any]:
        """The JSON object of a response, which must hold `key`."""
        try:
            body = json_body(response)
        except ValueError:
            body = None
        if not isinstance(body, Mapping) or key not in body:
            raise self._error(f"the response has no {key!r}", operation=operation)
        return body

    async def me(self) -> User | None:
        """The authenticated user; None when Zendesk answers as for an anonymous caller."""
        response = await self.http.request("GET", "/api/v2/users/me", operation="users.me")
        user = self._json(response, "user", operation="users.me")
        if not isinstance(user, Mapping) or user.get("id") is None:
            return None
        return User.model_validate(user)

    async def user_field_keys(self) -> list[str]:
        """The keys of the account's custom user fields (ListUserFields, offset pages of 100)."""
        operation = "user_fields.list"
        keys: list[str] = []
        url: str | None = "/api/v2/user_fields"
        params: dict[str, Any] | None = {"per_page": 100}
        while url:
            response = await self.http.request("GET", url, operation=operation, params=params)
            body = self._body(response, "user_fields", operation=operation)
            keys += [str(f["key"]) for f in body["user_fields"] or []
                     if isinstance(f, Mapping) and f.get("key")]
            url, params = body.get("next_page"), None  # next_page carries the query
        return keys

    async def export_page(self, params: Mapping[str, Any]) -> ExportPage:
        """One page of the cursor-based incremental user export."""
        operation = "users.export"
        response = await self.http.request(
            "GET", "/api/v2/incremental/users/cursor", operation=operation, params=params,
            limiter=self.export_limiter,
        )
        try:
            return ExportPage.model_validate_json(response.content)
        except ValueError as exc:
            raise self._error("an export page is not the documented shape",
                              operation=operation) from exc

    async def show_many(self, ids: Sequence[int]) -> list[User]:
        """Users by id, at most `MAX_SHOW_MANY`; unknown ids are left out."""
        users, _ = await self.show_many_with(ids, include=None)
        return users

    async def show_many_with(
        self, ids: Sequence[int], *, include: str | None
    ) -> tuple[list[User], list[Identity] | None]:
        """`show_many`, asking for side-loads (`include`); the identities are None unless
        Zendesk side-loaded them."""
        if len(ids) > MAX_SHOW_MANY:
            raise ValueError(f"show_many takes at most {MAX_SHOW_MANY} ids")
        params = {"ids": ",".join(str(i) for i in ids)}
        if include:
            params["include"] = include
        response = await self.http.request(
            "GET", "/api/v2/users/show_many", operation="users.show_many", params=params,
        )
        body = self._body(response, "users", operation="users.show_many")
        users = [User.model_validate(u) for u in body["users"]]
        raw = body.get("identities")
        identities = [Identity.model_validate(i) for i in raw] if isinstance(raw, list) else None
        return users, identities

    async def identities(self, user_id: int) -> list[Identity]:
        """Every identity of a user, following `next_page` (100 per page)."""
        out: list[Identity] = []
        async for response in LinkPaginator("next_page").pages(
            self.http, "GET", f"/api/v2/users/{user_id}/identities",
            operation="users.identities",
        ):
            out += [Identity.model_validate(i) for i in
                    self._json(response, "identities", operation="users.identities")]
        return out

    async def search(self, query: str, *, max_pages: int = 10) -> list[User]:
        """Users matching a Zendesk search query (offset pages of 100, at most `max_pages`)."""
        out: list[User] = []
        pages = LinkPaginator("next_page").pages(
            self.http, "GET", "/api/v2/users/search", operation="users.search",
            params={"query": query, "per_page": _SEARCH_PAGE},
        )
        async for response in pages:
            out += [User.model_validate(u) for u in
                    self._json(response, "users", operation="users.search")]
            max_pages -= 1
            if max_pages <= 0:
                break
        return out

    async def create_or_update(self, user: Mapping[str, Any]) -> User:
        """CreateOrUpdateUser: 201 when created, 200 when the email or external id matched.

        Sent as idempotent: a re-sent upsert matches the user the first one made.
        """
        response = await self.http.request(
            "POST", "/api/v2/users/create_or_update", operation="users.create_or_update",
            json={"user": dict(user)}, idempotent=True,
        )
        return User.model_validate(
            self._json(response, "user", operation="users.create_or_update"))

    async def create_or_update_many(self, users: Sequence[Mapping[str, Any]]) -> JobStatus | None:
        """Queue a bulk upsert; None when the account has bulk imports switched off (403)."""
        if len(users) > MAX_BULK:
            raise ValueError(f"create_or_update_many takes at most {MAX_BULK} users")
        operation = "users.create_or_update_many"
        response = await self.http.request(
            "POST", "/api/v2/users/create_or_update_many", operation=operation,
            json={"users": [dict(u) for u in users]}, idempotent=True, accept=(403,),
        )
        if response.status_code == 403:
            return None
        return JobStatus.model_validate(self._json(response, "job_status", operation=operation))

    async def job_status(self, job_id: str) -> JobStatus:
        operation = "job_statuses.show"
        response = await self.http.request("GET", f"/api/v2/job_statuses/{job_id}",
                                           operation=operation)
        return JobStatus.model_validate(self._json(response, "job_status", operation=operation))

    async def update(self, user_id: int, user: Mapping[str, Any]) -> User:
        """UpdateUser (PUT, so retried safely)."""
        response = await self.http.request(
            "PUT", f"/api/v2/users/{user_id}", operation="users.update",
            json={"user": dict(user)}, app_record_id=str(user_id),
        )
        return User.model_validate(self._json(response, "user", operation="users.update"))

    async def merge(self, user_id: int, into_id: int) -> User:
        """MergeEndUsers: end user `user_id` merged into end user `into_id`, which comes back."""
        response = await self.http.request(
            "PUT", f"/api/v2/users/{user_id}/merge", operation="users.merge",
            json={"user": {"id": into_id}}, app_record_id=str(user_id),
        )
        return User.model_validate(self._json(response, "user", operation="users.merge"))

    async def delete(self, user_id: int) -> None:
        """DeleteUser: Zendesk's soft delete (the user shows `active: false`)."""
        await self.http.request("DELETE", f"/api/v2/users/{user_id}", operation="users.delete",
                                app_record_id=str(user_id))
