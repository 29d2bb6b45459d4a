"""A stateful fake of the AcmeCRM contacts API, as a Starlette ASGI app for `httpx.ASGITransport`.

AcmeCRM is made up. This docstring is its API reference; the fake follows it and the connector
relies on nothing else.

    Base URL   https://api.acmecrm.example/v1; JSON bodies.
    Auth       `Authorization: Bearer <api token>`; otherwise 401 {"code": "unauthorized"}.
    Limits     100 requests per 10 s per token; over it, 429 with `Retry-After: <seconds>`
               (may be fractional). Errors are {"code": ..., "message": ...}.
    Contact    {"id": "c_000001", "email", "first_name", "last_name", "phone", "company",
                "tags": [str], "updated_at": ISO 8601 UTC, "version": int, "deleted": bool}.
               `email` is required and must be an address (else 422 "invalid_email"); any
               other key is 422 "unknown_field". Deleted contacts stay listed as tombstones.

    GET    /contacts?updated_since=&limit=&page_token=
           Contacts with updated_at >= updated_since (inclusive; all without it), deleted
           ones included, ordered by (updated_at, id); limit 1-100 (default 100).
           200 {"data": [contact], "next_page_token": str | null}. A token is only valid with
           the same updated_since.
    GET    /contacts/{id}        200 contact; 404 when missing or deleted.
    POST   /contacts             body: fields; `Idempotency-Key` header. 201 contact; a key
                                 seen before answers 200 with the contact it created.
    PATCH  /contacts/{id}        body: fields to set. 200 contact; 404; 422.
    DELETE /contacts/{id}        204; 404 when missing or already deleted.
    POST   /contacts/batch       {"contacts": [{"ref", "idempotency_key", "fields"}]}, at most
                                 100 (else 400). 207 {"results": [one per item, in order:
                                 {"ref", "status": 201 | 200, "contact"} or
                                 {"ref", "status": 422, "error": {"code", "message"}}]}.

    Webhooks   POST {"events": [{"type": "contact.created" | "contact.updated" |
               "contact.deleted", "contact_id", "occurred_at"}]} to the subscriber's URL, with
               `X-Acme-Timestamp: <Unix seconds>` and `X-Acme-Signature: sha256=<hex
               HMAC-SHA256(webhook secret, timestamp + "." + body)>`. Refuse deliveries older
               than 5 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Message, Receive, Scope, Send

__all__ = ["FIELDS", "AcmeCrmFake"]

FIELDS = frozenset({"email", "first_name", "last_name", "phone", "company", "tags"})


class AcmeCrmFake:
    """AcmeCRM in memory. Tests act as a person would through `put`, `change` and `remove`,
    inject failures with `fail_next`, and read `statuses` and the pending webhook `events`."""

    def __init__(
        self, *, api_token: str, webhook_secret: str, rate_limit: tuple[int, float] = (100, 10.0)
    ) -> None:
        self.api_token = api_token
        self.webhook_secret = webhook_secret
        self.rate_limit = rate_limit
        self.contacts: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # webhook events, oldest first
        self.statuses: list[int] = []  # every status code served
        self._failures: deque[tuple[int, float | None]] = deque()
        self._arrivals: deque[float] = deque()
        self._created_by_key: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._last_at = datetime.now(UTC)
        contacts = [
            Route("/contacts", self._list, methods=["GET"]),
            Route("/contacts", self._create, methods=["POST"]),
            Route("/contacts/batch", self._batch_create, methods=["POST"]),
            Route("/contacts/{id}", self._get, methods=["GET"]),
            Route("/contacts/{id}", self._update, methods=["PATCH"]),
            Route("/contacts/{id}", self._delete, methods=["DELETE"]),
        ]
        self._router = Router(routes=[Mount("/v1", routes=contacts)])

    # -- what a person does in the app, and what tests inject -----------------------------------

    def put(
        self, fields: Mapping[str, Any], *, updated_at: datetime | None = None
    ) -> dict[str, Any]:
        contact_id = f"c_{next(self._ids):06d}"
        self.contacts[contact_id] = {"id": contact_id, **fields, "version": 0, "deleted": False}
        return self._touch(contact_id, "contact.created", updated_at)

    def change(
        self, contact_id: str, fields: Mapping[str, Any], *, updated_at: datetime | None = None
    ) -> None:
        self.contacts[contact_id].update(fields)
        self._touch(contact_id, "contact.updated", updated_at)

    def remove(self, contact_id: str) -> None:
        self.contacts[contact_id]["deleted"] = True
        self._touch(contact_id, "contact.deleted", None)

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> None:
        """Answer the next `times` requests with `status` (and `Retry-After`, when given)."""
        self._failures.extend([(status, retry_after_s)] * times)

    def signed_delivery(
        self, events: list[dict[str, Any]], *, signed_at: float | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a webhook delivery, signed at `signed_at` (Unix s; default now)."""
        body = json.dumps({"events": events}).encode()
        timestamp = str(int(time.time() if signed_at is None else signed_at))
        signed = timestamp.encode() + b"." + body
        digest = hmac.new(self.webhook_secret.encode(), signed, hashlib.sha256).hexdigest()
        return {
            "Content-Type": "application/json",
            "X-Acme-Timestamp": timestamp,
            "X-Acme-Signature": f"sha256={digest}",
        }, body

    def _touch(self, contact_id: str, event: str, at: datetime | None) -> dict[str, Any]:
        if at is None:  # the server's clock: every change gets a later time than the last one
            at = self._last_at = max(datetime.now(UTC), self._last_at + timedelta(microseconds=1))
        contact = self.contacts[contact_id]
        contact.update(updated_at=at, version=contact["version"] + 1)
        self.events.append({"type": event, "contact_id": contact_id, "occurred_at": at.isoformat()})
        return contact

    # -- HTTP -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        refusal = self._refusal(Request(scope))
        app = refusal if refusal is not None else self._router
        await app(scope, receive, send_and_record)

    def _refusal(self, request: Request) -> Response | None:
        """What a request gets before any route sees it: an injected failure, a 401 or a 429."""
        if self._failures:
            status, retry_after_s = self._failures.popleft()
            headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
            return _error(status, "injected", "failure injected by the test", headers=headers)
        if request.headers.get("authorization") != f"Bearer {self.api_token}":
            return _error(401, "unauthorized", "invalid API token")
        calls, per_s = self.rate_limit
        now = time.monotonic()
        while self._arrivals and self._arrivals[0] <= now - per_s:
            self._arrivals.popleft()
        if len(self._arrivals) >= calls:
            wait_s = self._arrivals[0] + per_s - now
            retry_after = {"Retry-After": f"{wait_s:.3f}"}
            return _error(429, "rate_limited", "too many requests", headers=retry_after)
        self._arrivals.append(now)
        return None

    async def _list(self, request: Request) -> Response:
        query = request.query_params
        try:
            limit = int(query.get("limit", 100))
            since = query.get("updated_since")
            since_at = datetime.fromisoformat(since) if since is not None else None
            token = query.get("page_token")
            after = _untoken(token) if token is not None else None
        except (ValueError, TypeError):
            return _error(400, "invalid_parameter", "bad limit, updated_since or page_token")
        if not 1 <= limit <= 100:
            return _error(400, "invalid_parameter", "limit must be 1 to 100")
        keys = sorted(
            (c["updated_at"], c["id"])
            for c in self.contacts.values()
            if since_at is None or c["updated_at"] >= since_at
        )
        rest = [k for k in keys if after is None or k > after]
        page = rest[:limit]
        data = [_out(self.contacts[contact_id]) for _, contact_id in page]
        next_token = _token(page[-1]) if len(rest) > limit else None
        return JSONResponse({"data": data, "next_page_token": next_token})

    async def _get(self, request: Request) -> Response:
        contact = self._live(request.path_params["id"])
        if contact is None:
            return _error(404, "not_found", "no such contact")
        return JSONResponse(_out(contact))

    async def _create(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        status, body = self._create_one(await request.json(), key)
        return JSONResponse(body, status)

    async def _update(self, request: Request) -> Response:
        contact_id, fields = request.path_params["id"], await request.json()
        if self._live(contact_id) is None:
            return _error(404, "not_found", "no such contact")
        if (problem := _problem(fields, partial=True)) is not None:
            return JSONResponse(problem, 422)
        self.change(contact_id, fields)
        return JSONResponse(_out(self.contacts[contact_id]))

    async def _delete(self, request: Request) -> Response:
        contact_id = request.path_params["id"]
        if self._live(contact_id) is None:
            return _error(404, "not_found", "no such contact")
        self.remove(contact_id)
        return Response(status_code=204)

    async def _batch_create(self, request: Request) -> Response:
        items = (await request.json())["contacts"]
        if len(items) > 100:
            return _error(400, "batch_too_large", "at most 100 contacts per batch")
        results = []
        for item in items:
            status, body = self._create_one(item["fields"], item.get("idempotency_key"))
            outcome = {"contact": body} if status < 400 else {"error": body}
            results.append({"ref": item["ref"], "status": status, **outcome})
        return JSONResponse({"results": results}, 207)

    def _create_one(self, fields: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        if key is not None and key in self._created_by_key:
            return 200, _out(self.contacts[self._created_by_key[key]])
        if (problem := _problem(fields, partial=False)) is not None:
            return 422, problem
        contact = self.put(fields)
        if key is not None:
            self._created_by_key[key] = contact["id"]
        return 201, _out(contact)

    def _live(self, contact_id: str) -> dict[str, Any] | None:
        contact = self.contacts.get(contact_id)
        return None if contact is None or contact["deleted"] else contact


def _problem(fields: Mapping[str, Any], *, partial: bool) -> dict[str, str] | None:
    """The 422 body for fields the API refuses, or None. Like many APIs, it names the field,
    never the value."""
    if unknown := sorted(set(fields) - FIELDS):
        return {"code": "unknown_field", "message": f"unknown field {unknown[0]}"}
    if (not partial or "email" in fields) and "@" not in str(fields.get("email") or ""):
        return {"code": "invalid_email", "message": "email is not a valid address"}
    return None


def _error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"code": code, "message": message}, status, headers=headers)


def _out(contact: Mapping[str, Any]) -> dict[str, Any]:
    return {**contact, "updated_at": contact["updated_at"].isoformat()}


def _token(key: tuple[datetime, str]) -> str:
    """Keyset page tokens: the page after (updated_at, id), so edits while paging shift nothing."""
    return base64.urlsafe_b64encode(f"{key[0].isoformat()}|{key[1]}".encode()).decode()


def _untoken(token: str) -> tuple[datetime, str]:
    at, _, contact_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
    return datetime.fromisoformat(at), contact_id
