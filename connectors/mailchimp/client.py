"""Mailchimp's audience-members API as typed calls: paths, parameters, batches and their
results archive, and the cap on simultaneous connections.

Every call goes through the SDK's `ApiClient` (retries, error classification); this module
only knows the vendor's shapes (shared/specs/mailchimp/marketing-3.0.55...yaml, CONTRACTS.md
section 3). Mailchimp limits each *user* to 10 simultaneous connections and answers 429 past
them; it has no per-window quota. So instead of a rate limiter, `ConnectionCap` sits under the
client: at most `max_connections` requests are in flight, each held until its body is read.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from customer_sync_connectors.mailchimp.models import Batch, BatchResult, Member, MembersPage

from customer_sync.sdk import ApiClient, ConnectorError, TransientError, json_body

__all__ = ["ConnectionCap", "MailchimpClient"]

MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a results archive larger than this is refused


class ConnectionCap(httpx.AsyncBaseTransport):
    """At most `limit` requests in flight through `inner`; each holds its slot until its body
    is read, which is when Mailchimp's connection is free again."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._slots:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                response = await self._inner.handle_async_request(request)
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
                return response
            finally:
                self.in_flight -= 1

    async def aclose(self) -> None:
        if not self._closed:  # shared by the API client and the downloads client
            self._closed = True
            await self._inner.aclose()


class MailchimpClient:
    """The members API calls the connector makes, over one app's `ApiClient`.

    Args:
        http: the app's client (base URL, credentials, connection cap).
        list_id: the audience.
        downloads: a client *without* credentials for batch result archives, which Mailchimp
            serves from another host by a signed URL.
    """

    def __init__(self, http: ApiClient, *, list_id: str, downloads: httpx.AsyncClient) -> None:
        self.http = http
        self.list_id = list_id
        self.downloads = downloads
        self.members_path = f"/lists/{list_id}/members"

    def _error(self, message: str, *, operation: str) -> ConnectorError:
        return ConnectorError(message, app=self.http.app, connector=self.http.connector,
                              operation=operation)

    def member_path(self, member_id: str) -> str:
        return f"{self.members_path}/{member_id}"

    async def ping(self) -> None:
        await self.http.request("GET", "/ping", operation="ping")

    async def list_audience(self) -> None:
        """The audience exists and the credentials reach it (404 otherwise)."""
        await self.http.request("GET", self.members_path, operation="members.list",
                                params={"count": 1, "fields": "total_items"})

    async def merge_fields(self) -> dict[str, str]:
        """The audience's merge fields, tag -> type (getListsIdMergeFields, pages of 1000)."""
        operation = "merge_fields.list"
        found: dict[str, str] = {}
        offset = 0
        while True:
            response = await self.http.request(
                "GET", f"/lists/{self.list_id}/merge-fields", operation=operation,
                params={"count": 1000, "offset": offset})
            try:
                body = json_body(response)
                items = body["merge_fields"]
                total = int(body["total_items"])
                found.update({str(f["tag"]): str(f.get("type") or "text") for f in items})
            except (ValueError, KeyError, TypeError) as exc:
                raise self._error("the merge fields are not the documented shape",
                                  operation=operation) from exc
            offset += len(items)
            if not items or offset >= total:
                return found

    async def members_page(self, params: Mapping[str, Any]) -> MembersPage:
        operation = "members.list"
        response = await self.http.request("GET", self.members_path, operation=operation,
                                           params=params)
        try:
            return MembersPage.model_validate(json_body(response))
        except ValueError as exc:
            raise self._error("a members page is not the documented shape",
                              operation=operation) from exc

    async def member(self, member_id: str) -> Member:
        """One member, archived ones included (status "archived").

        Raises:
            RecordGone: no such member (or permanently deleted).
        """
        response = await self.http.request("GET", self.member_path(member_id),
                                           operation="members.get", app_record_id=member_id)
        return Member.model_validate(json_body(response))

    async def put_member(self, member_id: str, body: Mapping[str, Any]) -> Member:
        """Upsert by subscriber hash (PUT, so retried safely)."""
        response = await self.http.request("PUT", self.member_path(member_id),
                                           operation="members.upsert", json=dict(body),
                                           app_record_id=member_id)
        return Member.model_validate(json_body(response))

    async def patch_member(self, member_id: str, body: Mapping[str, Any]) -> Member:
        """Change some fields. A PATCH repeated after a lost answer sets the same values."""
        response = await self.http.request("PATCH", self.member_path(member_id),
                                           operation="members.update", json=dict(body),
                                           app_record_id=member_id, idempotent=True)
        return Member.model_validate(json_body(response))

    async def set_tags(self, member_id: str, tags: Sequence[Mapping[str, str]]) -> None:
        """Mark tags active or inactive (idempotent: the same marks again change nothing)."""
        await self.http.request("POST", f"{self.member_path(member_id)}/tags",
                                operation="members.tags", json={"tags": list(tags)},
                                app_record_id=member_id, idempotent=True)

    async def archive(self, member_id: str) -> None:
        await self.http.request("DELETE", self.member_path(member_id), operation="members.archive",
                                app_record_id=member_id)

    async def delete_permanently(self, member_id: str) -> None:
        await self.http.request("POST", f"{self.member_path(member_id)}/actions/delete-permanent",
                                operation="members.delete_permanent", app_record_id=member_id,
                                idempotent=True)

    # -- batches --------------------------------------------------------------------------------

    async def start_batch(self, operations: Sequence[Mapping[str, Any]]) -> Batch:
        """POST /batches. Not retried after an unclear failure: the batch may be running."""
        response = await self.http.request("POST", "/batches", operation="batches.create",
                                           json={"operations": list(operations)})
        return Batch.model_validate(json_body(response))

    async def batch(self, batch_id: str) -> Batch:
        response = await self.http.request("GET", f"/batches/{batch_id}", operation="batches.get")
        return Batch.model_validate(json_body(response))

    async def batch_results(self, batch: Batch) -> dict[str, BatchResult]:
        """The results archive of a finished batch, by operation id.

        The archive is a gzipped tar of JSON files, each an array of results (CONTRACTS.md).
        It is fetched without credentials: the URL is signed, and on another host.

        Raises:
            TransientError: the archive cannot be fetched or read (the batch is sent again;
                its operations are idempotent).
        """
        operation = "batches.results"
        url = batch.response_body_url or ""
        if not url.startswith(("https://", "http://")):
            raise self._transient("a finished batch names no results archive", operation)
        try:
            response = await self.downloads.get(url)
        except httpx.HTTPError as exc:
            raise self._transient(f"network error: {type(exc).__name__}", operation) from exc
        if response.status_code != 200:
            raise self._transient(f"HTTP {response.status_code} for the results archive", operation)
        try:
            return _read_archive(response.content)
        except (OSError, EOFError, tarfile.TarError, TypeError, ValueError) as exc:
            raise self._transient(f"the results archive is unreadable ({type(exc).__name__})",
                                  operation) from exc

    def _transient(self, message: str, operation: str) -> TransientError:
        return TransientError(message, app=self.http.app, connector=self.http.connector,
                              operation=operation)


def _read_archive(content: bytes) -> dict[str, BatchResult]:
    raw = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
    if len(raw) > MAX_ARCHIVE_BYTES:
        raise ValueError("archive too large")
    results: dict[str, BatchResult] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            if not info.isfile() or not info.name.endswith(".json"):
                continue
            handle = tar.extractfile(info)
            if handle is None:
                continue
            rows = json.loads(handle.read())
            if not isinstance(rows, list):
                raise TypeError("a results file is not an array")
            for row in rows:
                result = BatchResult.model_validate(row)
                if result.operation_id is not None:
                    results[result.operation_id] = result
    return results
