"""A stateful simulator of the Chatwoot application API (contacts of one account), for tests,
benchmarks and the sandbox.

It holds contacts, their contact inboxes and the account's inboxes in memory and answers the
calls a Chatwoot connector makes, with the paths, bodies, paging, error bodies, rate limits and
webhook signatures of `shared/specs/CONTRACTS.md` (section 4), the swagger copy beside it and
the Chatwoot source it cites. Mount `.app` on an `httpx.ASGITransport` for in-process tests, or
run it on loopback with `_common.serve(sim.app)`.

What it does as Chatwoot does, and a kinder fake would not:

- pages hold 15 contacts, asked for by `page` number; a page past the end is empty;
- the list and search show only *resolved* contacts (with an email, a phone or an identifier):
  a contact known only by its Instagram handle is invisible there, yet `GET /contacts/{id}`
  shows it and the webhooks report it;
- there is no `updated_at` in a contact and no changed-since filter;
- an update *merges* `custom_attributes` and `additional_attributes` one level deep, so
  `social_profiles` is replaced whole;
- email (case-insensitively), phone and identifier are unique per account, and a phone written
  through the API must end in an E.164 number (`/\\+[1-9]\\d{1,14}\\z/`, not anchored at the
  start, as in the Contact model); contacts a channel or an older version stored are kept as
  they are (Persian digits in a phone, any text in a name);
- 422 bodies are `{"message", "attributes"}` (RecordInvalid), other errors `{"error"}`; a
  throttled request gets rack-attack's plain-text 429 without `Retry-After`, in fixed windows
  aligned to the clock; search has its own lower limit;
- `contact_updated` is not sent when nothing changed; deliveries are signed with
  `X-Chatwoot-Signature: sha256=HEX(HMAC-SHA256(secret, "{timestamp}.{body}"))`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from customer_sync.sandbox._common import Clock, utcnow

__all__ = ["CHANNEL_API", "CHANNEL_INSTAGRAM", "CHANNEL_WHATSAPP", "ChatwootSimulator", "sign"]

Json = dict[str, Any]

PAGE_SIZE = 15  # RESULTS_PER_PAGE in the contacts controller; "Page size = 15" in the spec
CHANNEL_API = "Channel::Api"
CHANNEL_INSTAGRAM = "Channel::Instagram"
CHANNEL_WHATSAPP = "Channel::Whatsapp"
_JSON = "application/json; charset=utf-8"  # what Rails sends, and what the spec declares
# Contact model: `format: { with: /\+[1-9]\d{1,14}\z/ }` - Ruby's \d is ASCII, and there is no \A.
_PHONE_RE = re.compile(r"\+[1-9][0-9]{1,14}\Z")
_EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\Z")  # Devise.email_regexp
_SORTS = frozenset({"name", "email", "phone_number", "last_activity_at"})
_WRITABLE = ("name", "email", "phone_number", "identifier", "blocked")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot's webhook signature header value: `sha256=` + hex HMAC-SHA256 over
    `"{timestamp}.{raw body}"` (CONTRACTS.md section 4, "Signature")."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type=_JSON)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


@dataclass(slots=True)
class _Inbox:
    id: int
    name: str
    channel_type: str

    def render(self) -> Json:
        return {"id": self.id, "name": self.name, "channel_type": self.channel_type}


@dataclass(slots=True)
class _Contact:
    id: int
    created_at: int
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    blocked: bool = False
    custom_attributes: Json = field(default_factory=dict)
    additional_attributes: Json = field(default_factory=dict)
    last_activity_at: int | None = None
    inboxes: list[tuple[int, str]] = field(default_factory=list)  # (inbox id, source id)

    @property
    def is_resolved(self) -> bool:
        # Contact.resolved_contacts: email <> '' OR phone_number <> '' OR identifier <> ''
        return bool(self.email or self.phone_number or self.identifier)

    def snapshot(self) -> Json:
        return {k: getattr(self, k) for k in (*_WRITABLE, "custom_attributes",
                                              "additional_attributes")}


class _RecordInvalid(ValueError):
    def __init__(self, messages: list[str], attributes: list[str]) -> None:
        super().__init__(", ".join(messages))
        self.messages, self.attributes = messages, attributes

    def response(self) -> Response:
        # RequestExceptionHandler#render_record_invalid
        return _json({"message": ", ".join(self.messages), "attributes": self.attributes}, 422)


@dataclass(slots=True)
class _Window:
    """rack-attack's throttle: `limit` requests per `period_s`, counted in windows aligned to
    the clock (its cache key is `now / period`)."""

    limit: int
    period_s: float
    started_at: float = -math.inf
    used: int = 0

    def take(self, now: float) -> bool:
        start = math.floor(now / self.period_s) * self.period_s
        if start != self.started_at:
            self.started_at, self.used = start, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after_s: float | None


_Handler = Callable[..., Awaitable[Response]]
_ROUTES: list[tuple[str, str, str]] = [  # (method, path under the account, handler)
    ("GET", r"/inboxes", "_list_inboxes"),
    ("GET", r"/custom_attribute_definitions", "_list_attributes"),
    ("GET", r"/contacts", "_list"),
    ("POST", r"/contacts", "_create"),
    ("GET", r"/contacts/search", "_search"),
    ("GET", r"/contacts/(?P<contact_id>\d+)", "_show"),
    ("PUT", r"/contacts/(?P<contact_id>\d+)", "_update"),
    ("DELETE", r"/contacts/(?P<contact_id>\d+)", "_delete"),
]


class ChatwootSimulator:
    """One Chatwoot account: contacts, contact inboxes, inboxes, rate limits, webhooks.

    Args:
        clock: returns the current aware UTC datetime; inject one so tests never sleep.
        account_id: the account in every path (`/api/v1/accounts/{account_id}/...`).
        api_access_token: the token accepted in the `api_access_token` header.
        rate_limit: (requests, period_s) per client, rack-attack's `req/ip` throttle: 3000 a
            minute by default (RACK_ATTACK_LIMIT). None: no limit.
        search_rate_limit: the contact search's own throttle, 100 a minute per account by
            default (RATE_LIMIT_CONTACT_SEARCH). None: no limit.
        webhook_secret: the account webhook's `secret`.
        webhook_url: where `flush_webhooks()` posts contact events; None records none.
        contact_attributes: the keys of the account's contact custom attribute definitions.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        account_id: int = 1,
        api_access_token: str = "sandbox-api-token",
        rate_limit: tuple[int, float] | None = (3000, 60.0),
        search_rate_limit: tuple[int, float] | None = (100, 60.0),
        webhook_secret: str = "sandbox-webhook-secret",
        webhook_url: str | None = None,
        contact_attributes: Iterable[str] = (),
    ) -> None:
        self.clock: Clock = clock or utcnow
        self.contact_attribute_keys: list[str] = list(dict.fromkeys(contact_attributes))
        self.account_id = account_id
        self.api_access_token = api_access_token
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.base_url = "https://app.chatwoot.com"
        self.request_count = 0
        self.count_by_route: Counter[str] = Counter()
        self.statuses: list[int] = []
        self.inboxes = {
            1: _Inbox(1, "Website API", CHANNEL_API),
            2: _Inbox(2, "Instagram", CHANNEL_INSTAGRAM),
            3: _Inbox(3, "WhatsApp", CHANNEL_WHATSAPP),
        }
        self._contacts: dict[int, _Contact] = {}
        self._next_id = 1
        self._webhooks: deque[Json] = deque()
        self._failures: deque[_Failure] = deque()
        self._window = _Window(*rate_limit) if rate_limit else None
        self._search_window = _Window(*search_rate_limit) if search_rate_limit else None
        prefix = rf"/api/v1/accounts/{account_id}"
        self._routes = [(m, re.compile(prefix + p + r"\Z"), f"{m} {p}", h) for m, p, h in _ROUTES]
        self.app = Starlette(routes=[Route("/{path:path}", self._dispatch,
                                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    # ------------------------------------------------------------------ as a person would

    def add_contact(self, *, inboxes: list[tuple[int, str]] | None = None,
                    created_at: int | None = None, **fields: Any) -> int:
        """Create a contact as a channel or an agent would, unvalidated (a phone in Persian
        digits, a name that is an emoji: what older versions and channels stored); returns its
        id. `inboxes`: (inbox id, source id) pairs, e.g. `(3, "989121234567")` for WhatsApp."""
        contact = _Contact(id=self._next_id, created_at=created_at or self._now())
        self._next_id += 1
        self._assign(contact, fields)
        contact.inboxes = list(inboxes or [])
        self._contacts[contact.id] = contact
        self._emit("contact_created", contact)
        return contact.id

    def edit_contact(self, contact_id: int, **fields: Any) -> None:
        """Change a contact as an agent would in the UI (attributes replaced, not merged)."""
        contact = self._contacts[contact_id]
        before = contact.snapshot()
        self._assign(contact, fields)
        self._changed(contact, before)

    def delete_contact(self, contact_id: int) -> None:
        """Delete a contact as an agent would; no webhook reports it (CONTRACTS.md)."""
        del self._contacts[contact_id]

    def contact(self, contact_id: int) -> Json | None:
        """The contact as `GET /contacts/{id}` renders it, or None."""
        found = self._contacts.get(contact_id)
        return None if found is None else self._render(found)

    @property
    def contact_count(self) -> int:
        return len(self._contacts)

    def fail_next(self, n: int, status: int, *, retry_after_s: float | None = None) -> None:
        """Answer the next `n` requests with `status` (a 429 as rack-attack sends it, with
        `Retry-After` only when `retry_after_s` is given)."""
        self._failures.extend(_Failure(status, retry_after_s) for _ in range(n))

    # ------------------------------------------------------------------ webhooks

    @property
    def pending_webhooks(self) -> list[Json]:
        """Contact events recorded and not yet delivered, oldest first."""
        return list(self._webhooks)

    def signed_webhook(self, event: Mapping[str, Any], *, timestamp: int | None = None
                       ) -> tuple[dict[str, str], bytes]:
        """Headers and raw body of the POST that delivers `event`, signed now (or at
        `timestamp`, Unix seconds)."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        stamp = str(self._now() if timestamp is None else timestamp)
        return {
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": stamp,
            "X-Chatwoot-Signature": sign(self.webhook_secret, stamp, body),
            "X-Chatwoot-Delivery": str(uuid.uuid4()),  # not signed, not a dedupe key
        }, body

    async def flush_webhooks(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        """POST each pending event to `webhook_url`, in order; failed ones stay pending."""
        responses, failed = [], []
        while self._webhooks and self.webhook_url is not None:
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

    def _emit(self, event: str, contact: _Contact, changed: list[Json] | None = None) -> None:
        if self.webhook_url is None:
            return
        # Contact#webhook_data merged with the event name (WebhookListener).
        payload: Json = {
            "account": {"id": self.account_id, "name": "Sandbox"},
            "additional_attributes": dict(contact.additional_attributes),
            "avatar": "", "custom_attributes": dict(contact.custom_attributes),
            "email": contact.email, "id": contact.id, "identifier": contact.identifier,
            "name": contact.name, "phone_number": contact.phone_number, "thumbnail": "",
            "event": event,
        }
        if changed is not None:
            payload["changed_attributes"] = changed
        self._webhooks.append(payload)

    def _changed(self, contact: _Contact, before: Json) -> None:
        after = contact.snapshot()
        changed = [{k: {"previous_value": before[k], "current_value": after[k]}}
                   for k in after if after[k] != before[k]]
        if changed:  # "contact_updated is not sent when changed_attributes is blank"
            self._emit("contact_updated", contact, changed)

    # ------------------------------------------------------------------ HTTP plumbing

    def _now(self) -> int:
        return int(self.clock().timestamp())

    async def _dispatch(self, request: Request) -> Response:
        response = await self._answer(request)
        self.statuses.append(response.status_code)
        return response

    async def _answer(self, request: Request) -> Response:
        self.request_count += 1
        found = None
        for method, pattern, name, attr in self._routes:
            m = pattern.match(request.url.path)
            if m and method == request.method:
                found = (name, attr, m.groupdict())
                break
        self.count_by_route[found[0] if found else "UNMATCHED"] += 1
        if self._failures:
            return self._failure(self._failures.popleft())
        now = self.clock().timestamp()
        if self._window is not None and not self._window.take(now):
            return _throttled()
        if request.headers.get("api_access_token") != self.api_access_token:
            return _error(401, "Invalid Access Token")  # authenticate_access_token!
        if found is None:
            return _error(404, "Resource could not be found")
        name, attr, params = found
        if (name == "GET /contacts/search" and self._search_window is not None
                and not self._search_window.take(now)):
            return _throttled()
        handler: _Handler = getattr(self, attr)
        return await handler(request, **params)

    def _failure(self, failure: _Failure) -> Response:
        if failure.status == 429:
            return _throttled(failure.retry_after_s)
        if failure.status == 401:
            return _error(401, "Invalid Access Token")
        if failure.status >= 500:
            return Response("We're sorry, but something went wrong.", status_code=failure.status,
                            media_type="text/html")
        return _error(failure.status, "Injected failure")

    # ------------------------------------------------------------------ handlers

    async def _list_inboxes(self, request: Request) -> Response:
        return _json({"payload": [i.render() for i in self.inboxes.values()]})

    async def _list_attributes(self, request: Request) -> Response:
        # get-account-custom-attribute: `attribute_model` is required, "0" conversation and "1"
        # contact attributes; the simulator defines contact attributes only. A bare array.
        model = request.query_params.get("attribute_model")
        if model not in ("0", "1"):
            return _error(422, "attribute_model must be 0 or 1")  # UNVERIFIED: status and body
        keys = self.contact_attribute_keys if model == "1" else []
        return _json([
            {"id": i + 1, "attribute_display_name": key, "attribute_display_type": "text",
             "attribute_description": "", "attribute_key": key,
             "default_value": "", "attribute_model": "contact_attribute",
             "account_id": self.account_id}
            for i, key in enumerate(keys)
        ])

    async def _list(self, request: Request) -> Response:
        contacts = [c for c in self._contacts.values() if c.is_resolved]
        return self._page(request, contacts)

    async def _search(self, request: Request) -> Response:
        q = (request.query_params.get("q") or "").strip()
        if not q:
            return _error(422, "Specify search string with parameter q")
        # name/email/phone ILIKE, identifier LIKE '%q%' (ContactsController#search)
        low = q.lower()
        found = [c for c in self._contacts.values() if c.is_resolved and (
            low in (c.name or "").lower() or low in (c.email or "").lower()
            or low in (c.phone_number or "").lower() or q in (c.identifier or ""))]
        return self._page(request, found)

    def _page(self, request: Request, contacts: list[_Contact]) -> Response:
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        sort = request.query_params.get("sort")
        if sort and sort.lstrip("-") in _SORTS:
            key = sort.lstrip("-")
            contacts = sorted(contacts, key=lambda c: (getattr(c, key) is None,
                                                      getattr(c, key) or ""),
                              reverse=sort.startswith("-"))
        # Without `sort` the order is the database's; here it is by id (UNVERIFIED).
        chunk = contacts[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        return _json({"meta": {"count": len(contacts), "current_page": str(page)},
                      "payload": [self._render(c) for c in chunk]})

    async def _show(self, request: Request, contact_id: str) -> Response:
        contact = self._contacts.get(int(contact_id))
        if contact is None:
            return _error(404, "Resource could not be found")
        return _json({"payload": self._render(contact)})

    async def _create(self, request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return _error(422, "param is missing or the value is empty: contact")
        inbox_id = body.get("inbox_id")
        if inbox_id is not None and inbox_id not in self.inboxes:
            return _error(404, "Resource could not be found")
        contact = _Contact(id=self._next_id, created_at=self._now())
        try:
            self._assign(contact, _permitted(body))
            self._validate(contact)
        except _RecordInvalid as exc:
            return exc.response()
        self._next_id += 1
        source_id = None
        if inbox_id is not None:
            source_id = str(uuid.uuid4())  # an API inbox makes up its own source id
            contact.inboxes.append((inbox_id, source_id))
        self._contacts[contact.id] = contact
        self._emit("contact_created", contact)
        inbox = self.inboxes[inbox_id].render() if inbox_id is not None else None
        return _json({"payload": {"contact": self._render(contact),
                                  "contact_inbox": {"inbox": inbox, "source_id": source_id}}})

    async def _update(self, request: Request, contact_id: str) -> Response:
        contact = self._contacts.get(int(contact_id))
        if contact is None:
            return _error(404, "Resource could not be found")
        body = await _body(request)
        if body is None:
            return _error(422, "param is missing or the value is empty: contact")
        permitted = _permitted(body)
        # contact_update_params: both attribute hashes merged into the stored ones, one level
        for key in ("custom_attributes", "additional_attributes"):
            if isinstance(permitted.get(key), dict):
                permitted[key] = {**getattr(contact, key), **permitted[key]}
            else:
                permitted.pop(key, None)  # Rails permits only a hash here
        before = contact.snapshot()
        trial = _Contact(**{k: getattr(contact, k) for k in _Contact.__slots__})
        try:
            self._assign(trial, permitted)
            self._validate(trial)
        except _RecordInvalid as exc:
            return exc.response()
        self._assign(contact, permitted)
        self._changed(contact, before)
        return _json({"payload": self._render(contact)})

    async def _delete(self, request: Request, contact_id: str) -> Response:
        if self._contacts.pop(int(contact_id), None) is None:
            return _error(404, "Resource could not be found")
        return Response(status_code=200)  # `head :ok`

    # ------------------------------------------------------------------ model

    def _assign(self, contact: _Contact, fields: Mapping[str, Any]) -> None:
        for key, value in fields.items():
            if key in ("custom_attributes", "additional_attributes"):
                setattr(contact, key, dict(value or {}))
            elif key in _WRITABLE:
                setattr(contact, key, value)
            else:
                raise TypeError(f"not a contact attribute: {key}")
        # prepare_email_attribute: blank is nil, the rest lower-cased
        contact.email = contact.email.strip().lower() if contact.email else None
        contact.identifier = contact.identifier or None
        contact.phone_number = contact.phone_number or None

    def _validate(self, contact: _Contact) -> None:
        messages, attributes = [], []

        def refuse(attribute: str, message: str) -> None:
            messages.append(message)
            attributes.append(attribute)

        others = [c for c in self._contacts.values() if c.id != contact.id]
        if contact.email:
            if not _EMAIL_RE.match(contact.email):
                refuse("email", "Email Invalid email")
            elif any((c.email or "").lower() == contact.email for c in others):
                refuse("email", "Email has already been taken")
        if contact.identifier and any(c.identifier == contact.identifier for c in others):
            refuse("identifier", "Identifier has already been taken")
        if contact.phone_number:
            if not _PHONE_RE.search(contact.phone_number):
                refuse("phone_number", "Phone number should be in e164 format")
            elif any(c.phone_number == contact.phone_number for c in others):
                refuse("phone_number", "Phone number has already been taken")
        if messages:
            raise _RecordInvalid(messages, attributes)

    def _render(self, c: _Contact) -> Json:
        # api/v1/models/_contact.json.jbuilder with contact inboxes; no updated_at
        return {
            "additional_attributes": dict(c.additional_attributes),
            "availability_status": "offline",
            "email": c.email,
            "id": c.id,
            "name": c.name,
            "phone_number": c.phone_number,
            "identifier": c.identifier,
            "blocked": c.blocked,
            "thumbnail": "",
            "custom_attributes": dict(c.custom_attributes),
            "last_activity_at": c.last_activity_at,
            "created_at": c.created_at,
            "contact_inboxes": [{"source_id": source_id, "inbox": self.inboxes[inbox_id].render()}
                                for inbox_id, source_id in c.inboxes],
        }


def _throttled(retry_after_s: float | None = None) -> Response:
    # rack-attack's default throttled responder: 429, text/plain "Retry later", no Retry-After
    headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
    return Response("Retry later\n", status_code=429, media_type="text/plain", headers=headers)


def _permitted(body: Mapping[str, Any]) -> dict[str, Any]:
    """ContactsController#permitted_params: unknown keys are dropped, as Rails drops them."""
    out = {k: body[k] for k in _WRITABLE if k in body}
    for key in ("custom_attributes", "additional_attributes"):
        if isinstance(body.get(key), dict):
            out[key] = body[key]
    return out


async def _body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
