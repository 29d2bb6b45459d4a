"""A stateful simulator of the Zendesk Support users API, for tests, benchmarks and the sandbox.

It holds users and their identities in memory and answers the calls a Zendesk connector makes,
with the paths, bodies, paging, error bodies, rate limits and webhook signatures described in
`shared/specs/CONTRACTS.md` (section 2) and the vendor OpenAPI file next to it. Mount `.app` on
an `httpx.ASGITransport` for in-process tests, or run it on loopback with `_common.serve(sim.app)`.

Where the vendor documents nothing, the simulator picks the behaviour that is hardest on a
connector (opaque cursors with `+` and `=` in them, 13-digit ids, `email: null`, repeated items
in the time-based export) and says so in a comment marked UNVERIFIED.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import hashlib
import hmac
import json
import math
import re
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from customer_sync.sandbox._common import Clock, utcnow

__all__ = ["RecordInvalid", "ZendeskSimulator", "sign"]

Json = dict[str, Any]

_FIRST_USER_ID = 6_500_000_000_001  # real ids are 13 digits: more than 32 bits
_FIRST_IDENTITY_ID = 9_100_000_000_001
_MAX_EXPORT_PAGE = 1000  # CONTRACTS.md: "1000 is commonly quoted" (UNVERIFIED)
_MAX_SHOW_MANY = 100
_MAX_SEARCH_PAGE = 100
_MAX_BULK_USERS = 100
_EXPORT_LAG_S = 60  # "Data isn't provided for the most recent minute" (time-based export)
_ROLES = frozenset({"end-user", "agent", "admin"})
_IDENTITY_TYPES = frozenset(
    {"email", "twitter", "facebook", "google", "agent_forwarding", "phone_number"}
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EVENT_PREFIX = "zen:event-type:user."
_WEBHOOK_EVENT_VERSION = "2022-06-20"  # as in the documented example payload


def sign(secret: str, timestamp: str, body: bytes | str) -> str:
    """Zendesk's webhook signature: base64(HMAC-SHA256(secret, timestamp + body)).

    The timestamp is the exact `X-Zendesk-Webhook-Signature-Timestamp` header value, joined to
    the raw body with no separator (CONTRACTS.md, "Verifying webhook authenticity").
    """
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), timestamp.encode() + raw, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, error: str, description: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "description": description, **extra}, status_code=status)


def _not_found() -> JSONResponse:
    # Body quoted in the OAS (ShowUserComplianceDeletionStatuses description).
    return _error(404, "RecordNotFound", "Not found")


class RecordInvalid(ValueError):
    """A write broke a validation rule; `details` is Zendesk's per-field error map."""

    def __init__(self, details: dict[str, list[Json]]) -> None:
        self.details = details
        super().__init__("; ".join(d["description"] for ds in details.values() for d in ds))

    def response(self) -> JSONResponse:
        # Shape {"error","description","details":{field:[{description,error}]}}: UNVERIFIED beyond
        # the `error` name, which Zendesk's own clients key on (CONTRACTS.md has no 422 body).
        return _error(422, "RecordInvalid", "Record validation errors", details=self.details)


def _invalid(field_name: str, code: str, description: str) -> RecordInvalid:
    return RecordInvalid({field_name: [{"description": description, "error": code}]})


@dataclass(slots=True)
class _Identity:
    id: int
    user_id: int
    type: str
    value: str
    primary: bool
    verified: bool
    created_at: int
    updated_at: int


@dataclass(slots=True)
class _User:
    id: int
    name: str
    role: str
    created_at: int
    updated_at: int
    seq: int  # write sequence: the export order is (updated_at, seq)
    email: str | None = None  # mirrors the primary email identity
    phone: str | None = None
    organization_id: int | None = None
    external_id: str | None = None
    tags: list[str] = field(default_factory=list)
    user_fields: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    details: str = ""
    alias: str = ""
    active: bool = True
    identities: list[_Identity] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    id: str
    inputs: list[Json]
    status: str = "queued"
    polls: int = 0
    results: list[Json] | None = None
    message: str | None = None
    completed_at: int | None = None


@dataclass(slots=True)
class _Window:
    """A fixed window of `limit` requests per `period_s`, aligned to the clock."""

    limit: int
    period_s: float
    started_at: float = -math.inf
    used: int = 0

    def _roll(self, now: float) -> None:
        start = math.floor(now / self.period_s) * self.period_s
        if start != self.started_at:
            self.started_at, self.used = start, 0

    def take(self, now: float) -> bool:
        self._roll(now)
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit - self.used)

    def reset_s(self, now: float) -> int:
        return max(1, math.ceil(self.started_at + self.period_s - now))


@dataclass(slots=True)
class _Failure:
    status: int
    route: str | None
    retry_after_s: int


_Handler = Callable[..., Awaitable[Response]]

# (method, path regex without ".json", route name as in the OAS, handler attribute, is a list)
_ROUTES: list[tuple[str, str, str, str, bool]] = [
    ("GET", r"/api/v2/incremental/users/cursor", "", "_export_cursor", True),
    ("GET", r"/api/v2/incremental/users", "", "_export_time", True),
    ("GET", r"/api/v2/users/me", "", "_show_me", False),
    ("GET", r"/api/v2/users/show_many", "", "_show_many", True),
    ("GET", r"/api/v2/users/search", "", "_search", True),
    ("POST", r"/api/v2/users/create_or_update", "", "_create_or_update", False),
    ("POST", r"/api/v2/users/create_or_update_many", "", "_create_or_update_many", False),
    ("POST", r"/api/v2/users", "", "_create", False),
    ("GET", r"/api/v2/users/(?P<user_id>\d+)", "/api/v2/users/{user_id}", "_show", False),
    ("PUT", r"/api/v2/users/(?P<user_id>\d+)", "/api/v2/users/{user_id}", "_update", False),
    ("DELETE", r"/api/v2/users/(?P<user_id>\d+)", "/api/v2/users/{user_id}", "_delete", False),
    (
        "PUT",
        r"/api/v2/users/(?P<user_id>\d+)/merge",
        "/api/v2/users/{user_id}/merge",
        "_merge",
        False,
    ),
    (
        "GET",
        r"/api/v2/users/(?P<user_id>\d+)/identities",
        "/api/v2/users/{user_id}/identities",
        "_list_identities",
        True,
    ),
    (
        "POST",
        r"/api/v2/users/(?P<user_id>\d+)/identities",
        "/api/v2/users/{user_id}/identities",
        "_create_identity",
        False,
    ),
    ("GET", r"/api/v2/user_fields", "", "_list_user_fields", True),
    (
        "GET",
        r"/api/v2/job_statuses/(?P<job_status_id>[0-9a-f]+)",
        "/api/v2/job_statuses/{job_status_id}",
        "_show_job",
        False,
    ),
]
_EXPORT_ROUTES = frozenset(
    {"GET /api/v2/incremental/users/cursor", "GET /api/v2/incremental/users"}
)


class ZendeskSimulator:
    """In-memory Zendesk Support account: users, identities, bulk jobs, rate limits, webhooks.

    Args:
        clock: returns the current aware UTC datetime; inject one so tests never sleep.
            Timestamps are whole seconds, as Zendesk's are.
        rate_limit: account limit as (requests, period_s), or None for no limit. The default
            700/min is the example value in Zendesk's rate-limit docs; plan values are UNVERIFIED.
        export_rate_limit: the incremental exports' own limit, "up to 10 requests per minute".
        webhook_secret: the signing secret of the one webhook.
        webhook_url: where `flush_webhooks()` POSTs user events; None records no events.
        subdomain: the account subdomain, used for URLs built outside a request.
        agent_email, api_token, oauth_token: the credentials accepted as
            `Basic base64("{agent_email}/token:{api_token}")` or `Bearer {oauth_token}`.
        job_polls: how many polls of a bulk job status it takes to reach "completed"
            (earlier polls answer "working"); `complete_jobs()` finishes them at once.
        export_deleted: whether soft-deleted users appear in the incremental exports with
            `active: false`. CONTRACTS.md marks this UNVERIFIED, so test both ways.
        bulk_import_enabled: False makes create_or_update_many answer 403, as on accounts
            where Zendesk has not enabled bulk imports.
        user_fields: the keys of the account's custom user fields (served by ListUserFields).
        sideload_identities: whether `include=identities` on the user exports and show_many
            adds the listed users' identities as a top-level `identities` array. Those
            endpoints document "Users sideloads" without CONTRACTS.md saying which they are
            (UNVERIFIED), so by default the include is ignored, as Zendesk ignores sideloads it
            does not know (also UNVERIFIED); test both ways.

    The account owner (`owner_id`, role "admin", `agent_email`) is a user like any other: it
    shows in exports and search, as it does in Zendesk.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rate_limit: tuple[int, float] | None = (700, 60.0),
        export_rate_limit: tuple[int, float] | None = (10, 60.0),
        webhook_secret: str = "sandbox-webhook-secret",
        webhook_url: str | None = None,
        subdomain: str = "sandbox",
        agent_email: str = "admin@example.com",
        api_token: str = "sandbox-api-token",
        oauth_token: str | None = "sandbox-oauth-token",
        job_polls: int = 2,
        export_deleted: bool = True,
        bulk_import_enabled: bool = True,
        account_id: int = 12514403,
        sideload_identities: bool = False,
        user_fields: Sequence[str] = (),
    ) -> None:
        self.clock: Clock = clock or utcnow
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.subdomain = subdomain
        self.base_url = f"https://{subdomain}.zendesk.com"
        self.agent_email = agent_email
        self.api_token = api_token
        self.oauth_token = oauth_token
        self.job_polls = max(1, job_polls)
        self.export_deleted = export_deleted
        self.bulk_import_enabled = bulk_import_enabled
        self.account_id = account_id
        self.sideload_identities = sideload_identities
        # the account's custom user fields, by key (ListUserFields); an admin defines them
        self.user_field_keys: list[str] = list(dict.fromkeys(user_fields))

        self.request_count = 0
        self.count_by_route: Counter[str] = Counter()

        self._users: dict[int, _User] = {}
        self._order: list[tuple[int, int]] = []  # sorted (updated_at, seq)
        self._by_seq: dict[int, int] = {}  # seq -> user id
        self._by_email: dict[str, int] = {}  # lowercased email identity -> active user id
        self._by_external_id: dict[str, int] = {}  # lowercased external_id -> active user id
        self._jobs: dict[str, _Job] = {}
        self._webhooks: deque[Json] = deque()
        self._failures: deque[_Failure] = deque()
        self._next_user_id = _FIRST_USER_ID
        self._next_identity_id = _FIRST_IDENTITY_ID
        self._next_seq = 1
        self._account_window = _Window(*rate_limit) if rate_limit else None
        self._export_window = _Window(*export_rate_limit) if export_rate_limit else None

        self._routes = [
            (method, re.compile(pattern + r"\Z"), f"{method} {name or pattern}", attr, is_list)
            for method, pattern, name, attr, is_list in _ROUTES
        ]
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._dispatch,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )
        self.owner_id = self.add_user(name="Sandbox Owner", email=agent_email, role="admin")
        self._webhooks.clear()  # the account existed before the webhook did

    # ------------------------------------------------------------------ seeding and inspection

    def add_user(
        self,
        *,
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
        **fields: Any,
    ) -> int:
        """Create a user as an agent would in the Zendesk UI and return its id.

        Takes the API's user attributes (`name` is required; `email`, `phone`, `role`,
        `organization_id`, `external_id`, `tags`, `user_fields`, `notes`, `details`, `alias`,
        `verified`). `created_at` / `updated_at` back-date the record for seeding history.
        Raises `RecordInvalid` (a ValueError) on a duplicate or malformed email.
        """
        verified = bool(fields.pop("verified", True))
        user = self._create_user(fields, verified=verified)
        if created_at is not None or updated_at is not None:
            user.created_at = int((created_at or updated_at or self.clock()).timestamp())
            self._touch(user, at=int((updated_at or created_at or self.clock()).timestamp()))
        return user.id

    def add_identity(self, user_id: int, type: str, value: str, *, verified: bool = True) -> int:
        """Add a secondary identity (extra email, phone_number, twitter...) and return its id."""
        user = self._live_user(user_id)
        identity = self._add_identity(user, type, value, verified=verified)
        self._touch(user)
        self._emit(user, "identity_created", {"current": {"type": type, "value": value}})
        return identity.id

    def edit_user(self, user_id: int, **fields: Any) -> None:
        """Change a user as an agent would in the UI: updated_at moves and webhooks fire.

        Unlike the API's PUT, an `email` here replaces the primary email (an agent can make any
        address primary in the UI); the old primary address is dropped.
        """
        self._apply(self._live_user(user_id), fields, api=False)

    def delete_user(self, user_id: int) -> None:
        """Soft-delete a user as an agent would: `active` becomes false and updated_at moves."""
        self._soft_delete(self._live_user(user_id))

    def get_user(self, user_id: int) -> Json | None:
        """The user as `GET /api/v2/users/{id}` would render it, or None."""
        user = self._users.get(user_id)
        return None if user is None else self._render(user, self.base_url)

    def find_user_id(
        self, *, email: str | None = None, external_id: str | None = None
    ) -> int | None:
        """The active user holding this email identity or external id, or None."""
        if email is not None:
            return self._by_email.get(email.lower())
        if external_id is not None:
            return self._by_external_id.get(external_id.lower())
        raise TypeError("pass email or external_id")

    @property
    def routes(self) -> list[str]:
        """The routes served, named as in `count_by_route`, e.g. "GET /api/v2/users/{user_id}"."""
        return [name for _, _, name, _, _ in self._routes]

    @property
    def user_count(self) -> int:
        """Users in the store, soft-deleted ones included (the owner counts too)."""
        return len(self._users)

    def user_ids(self) -> list[int]:
        """Every user's id, soft-deleted ones included, oldest first."""
        return sorted(self._users)

    def fail_next(
        self, n: int, status: int, *, route: str | None = None, retry_after_s: int = 7
    ) -> None:
        """Answer the next `n` requests (to `route`, e.g. "GET /api/v2/users/{user_id}", if
        given) with `status` instead of handling them. 429 and 503 carry `Retry-After`."""
        self._failures.extend(_Failure(status, route, retry_after_s) for _ in range(n))

    # ------------------------------------------------------------------ bulk jobs

    def complete_jobs(self) -> list[str]:
        """Run every queued or working bulk job now; returns their ids."""
        done = [job for job in self._jobs.values() if job.status != "completed"]
        for job in done:
            self._run_job(job)
        return [job.id for job in done]

    # ------------------------------------------------------------------ webhooks

    @property
    def pending_webhooks(self) -> list[Json]:
        """User events recorded but not yet delivered, oldest first."""
        return list(self._webhooks)

    def signed_webhook(self, event: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
        """Headers and raw body of the POST that would deliver `event` now."""
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Signature": sign(self.webhook_secret, timestamp, body),
            # ISO 8601 per a third-party sample; CONTRACTS.md says treat it as opaque.
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        }
        return headers, body

    async def flush_webhooks(self, client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
        """POST each pending event to `webhook_url`, one request per event, in order.

        Events answered with a non-2xx status, or whose request fails, stay pending for the
        next flush (Zendesk retries failed deliveries). Returns the responses received.
        """
        if self.webhook_url is None or not self._webhooks:
            return []
        if client is None:
            async with httpx.AsyncClient() as own_client:
                return await self.flush_webhooks(own_client)
        responses: list[httpx.Response] = []
        failed: list[Json] = []
        while self._webhooks:
            event = self._webhooks.popleft()
            headers, body = self.signed_webhook(event)
            try:
                response = await client.post(self.webhook_url, content=body, headers=headers)
            except httpx.HTTPError:
                failed.append(event)
                continue
            responses.append(response)
            if not response.is_success:
                failed.append(event)
        self._webhooks.extend(failed)
        return responses

    # ------------------------------------------------------------------ HTTP plumbing

    async def _dispatch(self, request: Request) -> Response:
        self.request_count += 1
        path = request.url.path.removesuffix(".json")
        found = self._match(request.method, path)
        route = found[0] if found else "UNMATCHED"
        self.count_by_route[route] += 1

        failure = self._take_failure(route)
        if failure is not None:
            return self._failure_response(failure)
        if found is None:
            return _error(404, "InvalidEndpoint", "Not found")
        route, attr, is_list, params = found

        authorized = self._is_authorized(request.headers.get("authorization"))
        if authorized is None and route == "GET /api/v2/users/me":
            return JSONResponse({"user": self._anonymous_user()})
        if not authorized:
            # Body as Zendesk answers a bad API token (forum-quoted; not in CONTRACTS.md).
            return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)

        now = self.clock().timestamp()
        limited = self._take_quota(route, now)
        if limited is not None:
            return limited
        handler: _Handler = getattr(self, attr)
        base = str(request.base_url).rstrip("/")
        response = await handler(request, base, **params)
        self._add_rate_headers(response, now, is_list=is_list)
        return response

    def _match(self, method: str, path: str) -> tuple[str, str, bool, dict[str, str]] | None:
        for route_method, pattern, name, attr, is_list in self._routes:
            if route_method != method:
                continue
            m = pattern.match(path)
            if m:
                return name, attr, is_list, m.groupdict()
        return None

    def _take_failure(self, route: str) -> _Failure | None:
        for i, failure in enumerate(self._failures):
            if failure.route is None or failure.route == route:
                del self._failures[i]
                return failure
        return None

    def _failure_response(self, failure: _Failure) -> Response:
        if failure.status == 401:
            return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)
        if failure.status == 429:
            return self._too_many(failure.retry_after_s)
        headers = {"Retry-After": str(failure.retry_after_s)} if failure.status == 503 else {}
        return Response(
            "Internal server error" if failure.status >= 500 else "Injected failure",
            status_code=failure.status,
            media_type="text/plain",
            headers=headers,
        )

    def _too_many(self, retry_after_s: int, now: float | None = None) -> Response:
        # CONTRACTS.md: 429 + Retry-After (seconds). Zendesk's documented sample 429 has a
        # text/html body, so the body is not JSON here either: a connector must read the header.
        headers = {"Retry-After": str(retry_after_s)}
        window = self._account_window
        if window is not None:
            headers["X-Rate-Limit"] = str(window.limit)
            headers["X-Rate-Limit-Remaining"] = str(0 if now is None else window.remaining(now))
        return Response(
            "Number of allowed API requests per minute exceeded",
            status_code=429,
            media_type="text/html",
            headers=headers,
        )

    def _take_quota(self, route: str, now: float) -> Response | None:
        windows = [self._account_window]
        if route in _EXPORT_ROUTES:
            windows.append(self._export_window)
        for window in windows:
            if window is not None and window.remaining(now) == 0:
                return self._too_many(window.reset_s(now), now)
        for window in windows:
            if window is not None:
                window.take(now)
        return None

    def _add_rate_headers(self, response: Response, now: float, *, is_list: bool) -> None:
        window = self._account_window
        if window is None:
            return
        remaining = str(window.remaining(now))
        response.headers["X-Rate-Limit"] = str(window.limit)
        response.headers["X-Rate-Limit-Remaining"] = remaining
        if is_list:  # "Ticketing list endpoints (e.g. Search Users) also send" these
            response.headers["ratelimit-limit"] = str(window.limit)
            response.headers["ratelimit-remaining"] = remaining
            response.headers["ratelimit-reset"] = str(window.reset_s(now))

    def _is_authorized(self, header: str | None) -> bool | None:
        """True for good credentials, False for bad ones, None when none were sent."""
        if not header:
            return None
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.oauth_token is not None and hmac.compare_digest(
                credentials.strip(), self.oauth_token
            )
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, secret = decoded.partition(":")
        # Only API-token auth: "{email}/token:{api_token}". Password auth is off by default.
        return bool(sep) and username.lower() == f"{self.agent_email.lower()}/token" and (
            hmac.compare_digest(secret, self.api_token)
        )

    async def _json_body(self, request: Request, key: str, kind: type) -> Any:
        """The `{key: ...}` wrapper Zendesk puts around every write body, unwrapped."""
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise _BadRequest("Invalid JSON in request body") from exc
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, kind):
            raise _BadRequest(f"Parameter {key} is required")
        return value

    # ------------------------------------------------------------------ handlers: reads

    async def _show_me(self, request: Request, base: str) -> Response:
        user = self._render(self._users[self.owner_id], base)
        user["authenticity_token"] = "sandbox-csrf-token"
        return JSONResponse({"user": user})

    async def _show(self, request: Request, base: str, user_id: str) -> Response:
        user = self._users.get(int(user_id))
        if user is None:
            return _not_found()
        # A soft-deleted user still reads back, with active: false (UNVERIFIED).
        return JSONResponse({"user": self._render(user, base)})

    async def _show_many(self, request: Request, base: str) -> Response:
        q = request.query_params
        if "ids" in q:
            keys = _split_csv(q["ids"])
            if not all(k.isdigit() for k in keys):
                return _error(400, "InvalidValue", "ids must be a comma-separated list of ids")
            found = [self._users.get(int(k)) for k in keys]
        elif "external_ids" in q:
            keys = _split_csv(q["external_ids"])
            found = [self._users.get(self._by_external_id.get(k.lower(), 0)) for k in keys]
        else:
            return _error(400, "InvalidValue", "Parameter ids or external_ids is required")
        if len(keys) > _MAX_SHOW_MANY:
            # "up to 100" is documented; what Zendesk does with more is UNVERIFIED.
            return _error(400, "InvalidValue", "Too many ids (maximum is 100)")
        listed = [u for u in found if u is not None]
        body = _offset_page([self._render(u, base) for u in listed], "users",
                            next_page=None, previous_page=None)
        return JSONResponse(self._sideloaded(body, q, listed, base))

    async def _search(self, request: Request, base: str) -> Response:
        q = request.query_params
        page = _positive_int(q.get("page"), 1)
        per_page = min(_positive_int(q.get("per_page"), _MAX_SEARCH_PAGE), _MAX_SEARCH_PAGE)
        if "external_id" in q:
            uid = self._by_external_id.get(q["external_id"].lower())
            matches = [self._users[uid]] if uid is not None else []
        elif "query" in q:
            # An `email:` qualifier names at most one user: use the index, not a full scan.
            email = _EMAIL_QUALIFIER_RE.search(q["query"])
            candidates: Iterable[_User] = self._users.values()
            if email is not None:
                uid = self._by_email.get(email.group(1).lower())
                candidates = [self._users[uid]] if uid is not None else []
            matches = [u for u in candidates if u.active and _matches(u, q["query"])]
        else:
            return _error(400, "InvalidValue", "Parameter query or external_id is required")
        matches.sort(key=lambda u: u.id)
        start = (page - 1) * per_page
        chunk = matches[start : start + per_page]

        def link(p: int) -> str:
            params = {k: v for k, v in q.items() if k != "page"}
            query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
            return f"{base}/api/v2/users/search.json?{query}&page={p}"

        body = {
            "users": [self._render(u, base) for u in chunk],
            "next_page": link(page + 1) if start + per_page < len(matches) else None,
            "previous_page": link(page - 1) if page > 1 else None,
            "count": len(matches),
        }
        return JSONResponse(body)

    async def _list_identities(self, request: Request, base: str, user_id: str) -> Response:
        user = self._users.get(int(user_id))
        if user is None:
            return _not_found()
        wanted = set(request.query_params.getlist("type[]"))
        items = [
            self._render_identity(i, base)
            for i in user.identities
            if not wanted or i.type in wanted
        ]
        return JSONResponse(_offset_page(items, "identities", next_page=None, previous_page=None))

    async def _list_user_fields(self, request: Request, base: str) -> Response:
        # ListUserFields: the account's custom user fields, in their configured order, as
        # CustomFieldObject (`key`, `type`, `title` required). At most 100 a page per the OAS;
        # the simulator serves one page, so it holds at most 100.
        at = _iso(int(self.clock().timestamp()))
        items = [
            {"id": 7 + i, "url": f"{base}/api/v2/user_fields/{7 + i}.json", "key": key,
             "type": "text", "title": key, "raw_title": key, "description": "",
             "raw_description": "", "position": i, "active": True, "system": False,
             "regexp_for_validation": None, "created_at": at, "updated_at": at}
            for i, key in enumerate(self.user_field_keys[:100])
        ]
        return JSONResponse(_offset_page(items, "user_fields", next_page=None, previous_page=None))

    async def _show_job(self, request: Request, base: str, job_status_id: str) -> Response:
        job = self._jobs.get(job_status_id)
        if job is None:
            return _not_found()
        if job.status != "completed":
            job.polls += 1
            if job.polls >= self.job_polls:
                self._run_job(job)
            else:
                job.status = "working"
        return JSONResponse({"job_status": self._render_job(job, base)})

    # ------------------------------------------------------------------ handlers: exports

    async def _export_cursor(self, request: Request, base: str) -> Response:
        """IncrementalUserExportCursor: pages in (updated_at, write order), resumable by cursor.

        A user written after the cursor was issued moves behind it and comes again, so nothing
        is lost, even when many users share one updated_at second.
        """
        q = request.query_params
        per_page = _export_page_size(q.get("per_page"))
        if q.get("cursor"):
            position = _decode_cursor(q["cursor"])
            if position is None:
                # Status and body for a bad cursor are UNVERIFIED.
                return _error(400, "InvalidValue", "Invalid cursor")
        else:
            start_time, problem = self._start_time(q.get("start_time"))
            if problem is not None:
                return problem
            position = (start_time, -1)

        i = bisect.bisect_right(self._order, position)
        listed: list[_User] = []
        last = position
        while i < len(self._order) and len(listed) < per_page:
            last = self._order[i]
            user = self._users[self._by_seq[last[1]]]
            if user.active or self.export_deleted:
                listed.append(user)
            i += 1
        users = [self._render(user, base) for user in listed]
        cursor = _encode_cursor(last)
        body = {
            "users": users,
            "after_cursor": cursor,
            "after_url": f"{base}/api/v2/incremental/users/cursor.json?cursor={quote(cursor)}",
            # Backward paging is not simulated; the vendor's own example has null here too.
            "before_cursor": None,
            "before_url": None,
            "end_of_stream": i >= len(self._order),
        }
        return JSONResponse(self._sideloaded(body, q, listed, base))

    async def _export_time(self, request: Request, base: str) -> Response:
        """IncrementalUserExportTime: users with updated_at >= start_time, oldest first.

        "Data isn't provided for the most recent minute". The next page starts at the last
        item's second again, so items of that second come twice (CONTRACTS.md: time-based
        exports may repeat items; dedupe by id and updated_at). A page never splits one second;
        a page filled by a single second moves on one second, so paging always advances.
        """
        q = request.query_params
        per_page = _export_page_size(q.get("per_page"))
        start_time, problem = self._start_time(q.get("start_time"))
        if problem is not None:
            return problem
        cutoff = int(self.clock().timestamp()) - _EXPORT_LAG_S
        lo = bisect.bisect_right(self._order, (start_time, -1))
        hi = bisect.bisect_right(self._order, (cutoff, math.inf))
        end = min(hi, lo + per_page)
        keys = self._order[lo:end]
        if len(keys) == per_page:
            while end < hi and self._order[end][0] == keys[-1][0]:
                end += 1
            keys = self._order[lo:end]
        end_time = keys[-1][0] if keys else start_time
        if len(keys) >= per_page and keys[0][0] == keys[-1][0]:
            end_time += 1
        listed = [
            u for u in (self._users[self._by_seq[seq]] for _, seq in keys)
            if u.active or self.export_deleted
        ]
        body = {
            "users": [self._render(u, base) for u in listed],
            "count": len(listed),
            "end_time": end_time,
            "next_page": f"{base}/api/v2/incremental/users.json?start_time={end_time}",
            "end_of_stream": len(keys) < per_page,
        }
        return JSONResponse(self._sideloaded(body, q, listed, base))

    def _sideloaded(self, body: Json, query: Any, users: list[_User], base: str) -> Json:
        """`body` with the users' identities side-loaded, when asked for and simulated."""
        if self.sideload_identities and "identities" in _split_csv(query.get("include") or ""):
            body["identities"] = [self._render_identity(i, base) for u in users
                                  for i in u.identities]
        return body

    def _start_time(self, raw: str | None) -> tuple[int, Response | None]:
        if raw is None or not raw.lstrip("-").isdigit():
            return 0, _error(400, "InvalidValue", "start_time is required (Unix seconds)")
        start_time = int(raw)
        if start_time > int(self.clock().timestamp()):
            # Status and body are UNVERIFIED. A start_time inside the last minute is accepted:
            # "Data isn't provided for the most recent minute" is applied by withholding data.
            return start_time, _error(400, "InvalidValue", "start_time is in the future")
        return start_time, None

    # ------------------------------------------------------------------ handlers: writes

    async def _create(self, request: Request, base: str) -> Response:
        try:
            fields = await self._json_body(request, "user", dict)
            user = self._create_user(fields, verified=False)
        except (_BadRequest, RecordInvalid) as exc:
            return exc.response()
        return JSONResponse({"user": self._render(user, base)}, status_code=201)

    async def _create_or_update(self, request: Request, base: str) -> Response:
        """CreateOrUpdateUser: match "by e-mail address or external ID"; 201 new, 200 existing."""
        try:
            fields = await self._json_body(request, "user", dict)
            user, created = self._upsert(fields)
        except (_BadRequest, RecordInvalid) as exc:
            return exc.response()
        return JSONResponse(
            {"user": self._render(user, base)},
            status_code=201 if created else 200,
            headers={"Location": f"/api/v2/users/{user.id}.json"},
        )

    async def _create_or_update_many(self, request: Request, base: str) -> Response:
        if not self.bulk_import_enabled:
            # 403 is documented; the body is Zendesk's generic one (UNVERIFIED).
            return _error(
                403,
                "Forbidden",
                "You do not have access to this page. Please contact the account owner of "
                "this help desk for further help.",
            )
        try:
            users = await self._json_body(request, "users", list)
        except _BadRequest as exc:
            return exc.response()
        if not users:
            return _error(400, "InvalidValue", "users must be a non-empty array")
        if len(users) > _MAX_BULK_USERS:
            # The limit of 100 is documented; the status and body are UNVERIFIED.
            return _error(400, "TooManyValues", "Too many users (maximum is 100)")
        job = _Job(id=uuid.uuid4().hex, inputs=list(users))
        self._jobs[job.id] = job
        return JSONResponse({"job_status": self._render_job(job, base)})

    async def _update(self, request: Request, base: str, user_id: str) -> Response:
        user = self._users.get(int(user_id))
        if user is None or not user.active:
            return _not_found()
        try:
            fields = await self._json_body(request, "user", dict)
            self._apply(user, fields, api=True)
        except (_BadRequest, RecordInvalid) as exc:
            return exc.response()
        return JSONResponse({"user": self._render(user, base)})

    async def _delete(self, request: Request, base: str, user_id: str) -> Response:
        user = self._users.get(int(user_id))
        if user is None or not user.active:
            return _not_found()
        self._soft_delete(user)
        return JSONResponse({"user": self._render(user, base)})

    async def _merge(self, request: Request, base: str, user_id: str) -> Response:
        """MergeEndUsers: the path user is merged into the user the body names (support-api-oas
        `PUT /api/v2/users/{user_id}/merge`). Both must be end users; the path user's identities
        move to the target and the path user is deleted (Zendesk's help page on merging users;
        which of its other values the target takes, and the refusal's status and body, are
        UNVERIFIED: here the target keeps its own and takes none)."""
        source = self._users.get(int(user_id))
        if source is None or not source.active:
            return _not_found()
        try:
            spec = await self._json_body(request, "user", dict)
        except _BadRequest as exc:
            return exc.response()
        target_id = spec.get("id")
        target = self._users.get(target_id) if isinstance(target_id, int) else None
        if target is None or not target.active:
            return _not_found()
        if target.id == source.id or source.role != "end-user" or target.role != "end-user":
            return _invalid("user", "InvalidValue", "User: only two different end users can be merged").response()
        moved = list(source.identities)
        self._soft_delete(source)
        for identity in moved:
            with contextlib.suppress(RecordInvalid):
                self._add_identity(target, identity.type, identity.value, verified=identity.verified)
        self._touch(target)
        return JSONResponse({"user": self._render(target, base)})

    async def _create_identity(self, request: Request, base: str, user_id: str) -> Response:
        user = self._users.get(int(user_id))
        if user is None or not user.active:
            return _not_found()
        try:
            spec = await self._json_body(request, "identity", dict)
            identity = self._add_identity(
                user,
                str(spec.get("type", "")),
                str(spec.get("value", "")),
                verified=bool(spec.get("verified", False)),
            )
        except (_BadRequest, RecordInvalid) as exc:
            return exc.response()
        self._touch(user)
        self._emit(
            user, "identity_created", {"current": {"type": identity.type, "value": identity.value}}
        )
        return JSONResponse({"identity": self._render_identity(identity, base)}, status_code=201)

    # ------------------------------------------------------------------ the store

    def _now_s(self) -> int:
        return int(self.clock().timestamp())

    def _live_user(self, user_id: int) -> _User:
        user = self._users.get(user_id)
        if user is None or not user.active:
            raise LookupError(f"no active user {user_id}")
        return user

    def _touch(self, user: _User, *, at: int | None = None) -> None:
        """Move the user to the end of the export order with a fresh updated_at."""
        key = (user.updated_at, user.seq)
        i = bisect.bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]
            del self._by_seq[user.seq]
        user.updated_at = self._now_s() if at is None else at
        user.seq = self._next_seq
        self._next_seq += 1
        self._by_seq[user.seq] = user.id
        bisect.insort(self._order, (user.updated_at, user.seq))

    def _create_user(self, fields: Mapping[str, Any], *, verified: bool) -> _User:
        fields = dict(fields)
        email = fields.pop("email", None)
        extra = [
            (str(spec.get("type", "")), str(spec.get("value", "")))
            for spec in fields.pop("identities", None) or []
            if isinstance(spec, dict)
        ]
        if "name" not in fields:
            raise _invalid("name", "BlankValue", "Name: cannot be blank")
        self._check_fields(fields, user_id=None)
        for type_, value in ([("email", email)] if email is not None else []) + extra:
            self._check_identity(type_, value, user_id=None)
        now = self._now_s()
        user = _User(
            id=self._next_user_id,
            name="",
            role="end-user",  # "If you don't specify a role parameter ... end user"
            created_at=now,
            updated_at=now,
            seq=0,
        )
        self._next_user_id += 1
        self._users[user.id] = user
        self._assign_fields(user, fields)
        if email is not None:
            self._add_identity(user, "email", email, verified=verified, primary=True)
        for type_, value in extra:
            self._add_identity(user, type_, value, verified=verified)
        self._touch(user, at=now)
        self._emit(user, "created", {})
        return user

    def _upsert(self, fields: Mapping[str, Any]) -> tuple[_User, bool]:
        user = self._match_existing(fields)
        if user is None:
            return self._create_user(fields, verified=False), True
        self._apply(user, fields, api=True)
        return user, False

    def _match_existing(self, fields: Mapping[str, Any]) -> _User | None:
        # External id first (it names the record in the other system), then any email identity.
        # Which wins when both are sent and point at different users is UNVERIFIED.
        external_id = fields.get("external_id")
        if external_id is not None:
            uid = self._by_external_id.get(str(external_id).lower())
            if uid is not None:
                return self._users[uid]
        email = fields.get("email")
        if isinstance(email, str):
            uid = self._by_email.get(email.lower())
            if uid is not None:
                return self._users[uid]
        return None

    def _apply(self, user: _User, fields: Mapping[str, Any], *, api: bool) -> None:
        """Update a user, bump updated_at (every write does, even one that changes nothing)
        and record the matching webhook events.

        Through the API an `email` not yet on the user is added as a secondary identity
        ("Writeable on create only. On update, a secondary email is added." – UserForAdmin);
        from the UI (`api=False`) it replaces the primary address.
        """
        fields = dict(fields)
        fields.pop("identities", None)  # only read on create
        email = fields.pop("email", None)
        self._check_fields(fields, user_id=user.id)
        if email is not None:
            self._check_identity("email", email, user_id=user.id)
        before = _snapshot(user)
        self._assign_fields(user, fields)
        added: _Identity | None = None
        if email is not None and not api:
            self._replace_primary_email(user, email)
        elif email is not None and email.lower() not in _emails(user):
            added = self._add_identity(user, "email", email, verified=False)
        self._touch(user)
        self._emit_changes(user, before)
        if added is not None:
            self._emit(user, "identity_created", {"current": {"type": "email", "value": email}})

    def _check_fields(self, fields: Mapping[str, Any], *, user_id: int | None) -> None:
        """Raise RecordInvalid for any writable attribute Zendesk would refuse."""
        if "name" in fields and (not isinstance(fields["name"], str) or not fields["name"].strip()):
            raise _invalid("name", "BlankValue", "Name: cannot be blank")
        if "role" in fields and fields["role"] not in _ROLES:
            raise _invalid("role", "InvalidValue", f"Role: {fields['role']} is not valid")
        org = fields.get("organization_id")
        if org is not None and not (isinstance(org, int) or str(org).isdigit()):
            raise _invalid("organization_id", "InvalidValue", "Organization: is not valid")
        tags = fields.get("tags")
        if tags is not None and not isinstance(tags, list):
            raise _invalid("tags", "InvalidValue", "Tags: must be an array")
        user_fields = fields.get("user_fields")
        if user_fields is not None and not isinstance(user_fields, dict):
            raise _invalid("user_fields", "InvalidValue", "User fields: must be an object")
        if fields.get("external_id") is not None:
            holder = self._by_external_id.get(str(fields["external_id"]).lower())
            if holder is not None and holder != user_id:
                # Uniqueness is documented; this error code and text are UNVERIFIED.
                raise _invalid("external_id", "DuplicateValue", "External: has already been taken")

    def _assign_fields(self, user: _User, fields: Mapping[str, Any]) -> None:
        if "name" in fields:
            user.name = str(fields["name"]).strip()
        if "role" in fields:
            user.role = fields["role"]
        if "phone" in fields:
            user.phone = None if fields["phone"] in (None, "") else str(fields["phone"])
        if "organization_id" in fields:
            org = fields["organization_id"]
            user.organization_id = None if org is None else int(org)
        if "external_id" in fields:
            if user.external_id is not None:
                self._by_external_id.pop(user.external_id.lower(), None)
            raw = fields["external_id"]
            # Lookup is case-insensitive; the stored case becomes the one last sent.
            user.external_id = None if raw in (None, "") else str(raw)
            if user.external_id is not None:
                self._by_external_id[user.external_id.lower()] = user.id
        if "tags" in fields:
            user.tags = list(dict.fromkeys(str(t) for t in fields["tags"] or []))
        if "user_fields" in fields:
            # Zendesk merges: keys not sent keep their values.
            user.user_fields.update(fields["user_fields"] or {})
        for key in ("notes", "details", "alias"):
            if key in fields:
                setattr(user, key, "" if fields[key] is None else str(fields[key]))

    def _check_identity(self, type_: str, value: Any, *, user_id: int | None) -> None:
        if type_ not in _IDENTITY_TYPES:
            raise _invalid("type", "InvalidValue", f"Type: {type_} is not a valid identity type")
        if not isinstance(value, str) or not value:
            raise _invalid("value", "BlankValue", "Value: cannot be blank")
        if type_ != "email":
            return
        if not _EMAIL_RE.match(value):
            raise _invalid("email", "InvalidFormat", f"Email: {value} is not properly formatted")
        holder = self._by_email.get(value.lower())
        if holder is not None and holder != user_id:
            # Wording as Zendesk's help centre quotes it; the `error` code is UNVERIFIED.
            raise _invalid(
                "email", "DuplicateValue", f"Email: {value} is already being used by another user"
            )

    def _add_identity(
        self, user: _User, type_: str, value: str, *, verified: bool, primary: bool = False
    ) -> _Identity:
        self._check_identity(type_, value, user_id=user.id)
        for existing in user.identities:
            if existing.type == type_ and existing.value.lower() == value.lower():
                return existing
        now = self._now_s()
        identity = _Identity(
            id=self._next_identity_id,
            user_id=user.id,
            type=type_,
            value=value,
            # The first identity of a type is the primary one, as for a user's first email.
            primary=primary or not any(i.type == type_ for i in user.identities),
            verified=verified,
            created_at=now,
            updated_at=now,
        )
        self._next_identity_id += 1
        user.identities.append(identity)
        if type_ == "email":
            self._by_email[value.lower()] = user.id
            if identity.primary:
                user.email = value
        return identity

    def _replace_primary_email(self, user: _User, email: str) -> None:
        previous = user.email
        for identity in list(user.identities):
            if identity.type == "email" and (
                identity.primary or identity.value.lower() == email.lower()
            ):
                user.identities.remove(identity)
                self._by_email.pop(identity.value.lower(), None)
        user.email = None
        self._add_identity(user, "email", email, verified=True, primary=True)
        if previous != email:
            self._emit(user, "identity_changed", {"current": email, "previous": previous})

    def _soft_delete(self, user: _User) -> None:
        user.active = False
        for identity in user.identities:
            if identity.type == "email" and self._by_email.get(identity.value.lower()) == user.id:
                del self._by_email[identity.value.lower()]
        if user.external_id and self._by_external_id.get(user.external_id.lower()) == user.id:
            del self._by_external_id[user.external_id.lower()]
        self._touch(user)
        self._emit(user, "active_changed", {"current": False, "previous": True})
        self._emit(user, "deleted", {})

    def _run_job(self, job: _Job) -> None:
        """Apply a create_or_update_many job item by item, in the order sent."""
        results: list[Json] = []
        for index, raw in enumerate(job.inputs):
            matched = self._match_existing(raw) if isinstance(raw, dict) else None
            try:
                if not isinstance(raw, dict):
                    raise _invalid("user", "InvalidValue", "User: must be an object")
                user, created = self._upsert(raw)
            except RecordInvalid as exc:
                # Shape seen in a Zendesk community thread, where Zendesk confirmed that results
                # keep the request order and status is one of Created, Updated, Failed.
                failed: Json = {
                    "index": index,
                    "status": "Failed",
                    "error": "UserUpdateError",
                    "details": str(exc),
                    "success": False,
                }
                if matched is not None:
                    failed["id"] = matched.id
                results.append(failed)
                continue
            if created:
                # Keys of the spec's CreateResourceResult plus the observed status and email.
                results.append(
                    {"id": user.id, "index": index, "status": "Created", "email": user.email}
                )
            else:
                # The spec's UpdateResourceResult (CONTRACTS.md) plus the observed email.
                results.append(
                    {
                        "id": user.id,
                        "action": "update",
                        "status": "Updated",
                        "success": True,
                        "email": user.email,
                    }
                )
        job.results = results
        job.status = "completed"
        job.completed_at = self._now_s()
        done_at = datetime.fromtimestamp(job.completed_at, UTC)
        job.message = done_at.strftime("Completed at %Y-%m-%d %H:%M:%S +0000")  # as in the OAS

    # ------------------------------------------------------------------ webhooks (recording)

    def _emit(self, user: _User, kind: str, event: Json) -> None:
        if self.webhook_url is None:
            return
        self._webhooks.append(
            {
                "type": _EVENT_PREFIX + kind,
                "account_id": self.account_id,
                "id": str(uuid.uuid4()),
                "time": _iso(self._now_s()),
                "zendesk_event_version": _WEBHOOK_EVENT_VERSION,
                "subject": f"zen:user:{user.id}",
                "detail": {
                    # Ids are strings inside `detail`, "0" when unset (CONTRACTS.md example).
                    "id": str(user.id),
                    "email": user.email,
                    "external_id": user.external_id or "",
                    "role": user.role,
                    "organization_id": str(user.organization_id or 0),
                    "default_group_id": "0",
                    "created_at": _iso(user.created_at),
                    "updated_at": _iso(user.updated_at),
                },
                "event": event,
            }
        )

    def _emit_changes(self, user: _User, before: Json) -> None:
        # Event names are from Zendesk's "Webhook event types" page; payloads of the `event`
        # object other than active_changed are UNVERIFIED ({current, previous} assumed).
        after = _snapshot(user)
        for key, kind in (
            ("name", "name_changed"),
            ("external_id", "external_id_changed"),
            ("role", "role_changed"),
            ("tags", "tags_changed"),
            ("notes", "notes_changed"),
            ("details", "details_changed"),
            ("alias", "alias_changed"),
            ("phone", "identity_changed"),
        ):
            if before[key] != after[key]:
                self._emit(user, kind, {"current": after[key], "previous": before[key]})
        for key in sorted(set(before["user_fields"]) | set(after["user_fields"])):
            old, new = before["user_fields"].get(key), after["user_fields"].get(key)
            if old != new:
                self._emit(
                    user,
                    "custom_field_changed",
                    {"field": {"key": key}, "current": new, "previous": old},
                )

    # ------------------------------------------------------------------ rendering

    def _render(self, user: _User, base: str) -> Json:
        return {
            "id": user.id,
            "url": f"{base}/api/v2/users/{user.id}.json",
            "name": user.name,
            # null for a user without email: the OAS says string, Zendesk sends null.
            "email": user.email,
            "created_at": _iso(user.created_at),
            "updated_at": _iso(user.updated_at),
            "time_zone": "UTC",
            "iana_time_zone": "Etc/UTC",
            "phone": user.phone,
            "shared_phone_number": None if user.phone is None else False,
            "photo": None,
            "locale_id": 1,
            "locale": "en-US",
            "organization_id": user.organization_id,
            "role": user.role,
            "verified": any(i.verified for i in user.identities),
            "external_id": user.external_id,
            "tags": list(user.tags),
            "alias": user.alias,
            "active": user.active,
            "shared": False,
            "shared_agent": False,
            "details": user.details,
            "notes": user.notes,
            "role_type": None,
            "custom_role_id": None,
            "moderator": user.role != "end-user",
            "ticket_restriction": "requested" if user.role == "end-user" else None,
            "only_private_comments": False,
            "restricted_agent": user.role == "agent",
            "suspended": False,
            "chat_only": False,
            "report_csv": False,
            "two_factor_auth_enabled": None,
            "user_fields": dict(user.user_fields),
        }

    def _render_identity(self, identity: _Identity, base: str) -> Json:
        return {
            "id": identity.id,
            "url": f"{base}/api/v2/users/{identity.user_id}/identities/{identity.id}.json",
            "user_id": identity.user_id,
            "type": identity.type,
            "value": identity.value,
            "primary": identity.primary,
            "verified": identity.verified,
            "verification_method": "full" if identity.verified else "none",
            "created_at": _iso(identity.created_at),
            "updated_at": _iso(identity.updated_at),
        }

    def _render_job(self, job: _Job, base: str) -> Json:
        total = len(job.inputs)
        if job.status == "completed":
            progress: int | None = total
        elif job.status == "working":
            progress = total * job.polls // self.job_polls
        else:
            progress = None
        return {
            "id": job.id,
            "url": f"{base}/api/v2/job_statuses/{job.id}.json",
            "job_type": "Bulk Create or Update Users",  # UNVERIFIED label
            "total": total,
            "progress": progress,
            "status": job.status,
            "message": job.message,
            "results": job.results,
        }

    def _anonymous_user(self) -> Json:
        # "Allowed For: Anonymous users": without credentials Zendesk answers 200 with an
        # anonymous user whose id is null (UNVERIFIED shape). check() must not trust a 200 alone.
        return {"id": None, "url": None, "name": "Anonymous user", "role": "end-user"}


class _BadRequest(Exception):
    def response(self) -> JSONResponse:
        # Status and body for malformed requests are UNVERIFIED.
        return _error(400, "InvalidValue", str(self))


def _snapshot(user: _User) -> Json:
    return {
        "name": user.name,
        "external_id": user.external_id,
        "role": user.role,
        "tags": list(user.tags),
        "notes": user.notes,
        "details": user.details,
        "alias": user.alias,
        "phone": user.phone,
        "user_fields": dict(user.user_fields),
    }


def _emails(user: _User) -> set[str]:
    return {i.value.lower() for i in user.identities if i.type == "email"}


def _split_csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _positive_int(raw: str | None, default: int) -> int:
    return int(raw) if raw is not None and raw.isdigit() and int(raw) > 0 else default


def _export_page_size(raw: str | None) -> int:
    return min(_positive_int(raw, _MAX_EXPORT_PAGE), _MAX_EXPORT_PAGE)


def _offset_page(items: list[Json], key: str, **links: Any) -> Json:
    return {key: items, **links, "count": len(items)}


def _encode_cursor(position: tuple[int, int]) -> str:
    # Modelled on the vendor example ("MTU3NjYxMzUzOS4wfHw0Njd8" = "1576613539.0||467|"). Standard
    # base64, so cursors may hold "+", "/" and "=": send them URL-encoded and treat them as opaque.
    ts, seq = position
    return base64.b64encode(f"{ts}.0||{seq}|~".encode()).decode("ascii")


def _decode_cursor(cursor: str) -> tuple[int, int] | None:
    try:
        text = base64.b64decode(cursor, validate=True).decode()
        ts, rest = text.split(".0||", 1)
        seq = rest.split("|", 1)[0]
        return int(ts), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


_EMAIL_QUALIFIER_RE = re.compile(r'(?:^|\s)email:"?([^"\s]+)"?')
_QUALIFIER_RE = re.compile(r'(\w+):("[^"]*"|\S+)|("[^"]*"|\S+)')


def _matches(user: _User, query: str) -> bool:
    """Zendesk search syntax, the part a connector uses: `email:`, `external_id:`, `phone:`,
    `name:`, `role:`, `type:user`, and bare words matched against name, emails, phone, notes.
    (CONTRACTS.md: the exact `email:` qualifier form is UNVERIFIED; `query=<address>` also works.)
    """
    emails = _emails(user)
    for m in _QUALIFIER_RE.finditer(query):
        key, value, bare = m.group(1), m.group(2), m.group(3)
        text = (value if key else bare or "").strip('"').lower()
        if not text:
            continue
        if key == "email":
            ok = text in emails
        elif key == "external_id":
            ok = (user.external_id or "").lower() == text
        elif key == "phone":
            ok = text in (user.phone or "").lower()
        elif key == "name":
            ok = text in user.name.lower()
        elif key == "role":
            ok = user.role == text
        elif key == "type":
            ok = text == "user"
        else:
            haystack = [user.name.lower(), (user.phone or "").lower(), user.notes.lower(), *emails]
            ok = any(text in h for h in haystack)
        if not ok:
            return False
    return True
