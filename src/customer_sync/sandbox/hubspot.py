"""A stateful simulator of the HubSpot CRM Contacts API v3, for tests, benchmarks and the sandbox.

It keeps contacts in memory (properties with per-property history, createdAt/updatedAt,
archiving, merges) and answers the calls a HubSpot connector makes with the paths, bodies,
paging, error bodies, rate limits and webhook signatures described in `shared/specs/CONTRACTS.md`
(section 1) and the vendor OpenAPI file `hubspot/crm-contacts-v3.json` next to it. Mount `.app`
on an `httpx.ASGITransport` in-process, or `serve()` it on loopback.

Where CONTRACTS.md marks a behaviour UNVERIFIED the simulator still picks one, says so in a
comment, and makes it a constructor option when a connector could reasonably meet either.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from customer_sync.sandbox._common import (
    Clock,
    SlidingWindow,
    epoch_ms,
    iso_from_ms,
    ms_from_text,
    utcnow,
)

if TYPE_CHECKING:
    from datetime import datetime

    from starlette.requests import Request

__all__ = ["HubSpotSimulator", "sign_v1", "sign_v3"]

Json = dict[str, Any]
_Handler = Callable[..., Response]
_Source = tuple[str, str]  # (sourceType, sourceId) of a change

CONTACTS = "/crm/v3/objects/contacts"
# The Properties API (HubSpot's "Read all properties", GET /crm/v3/properties/{objectType}); it
# is not among the shared specs, so its shape here follows HubSpot's public reference.
CONTACT_PROPERTIES = "/crm/v3/properties/contacts"

# Returned when a read names no `properties` (HubSpot's contact defaults).
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
# Returned with every read that names `properties`, whether asked for or not.
ALWAYS_RETURNED = ("createdate", "hs_object_id", "lastmodifieddate")
# Maintained by HubSpot; writes to them fail like writes to unknown properties.
READ_ONLY = frozenset({"createdate", "lastmodifieddate", "hs_object_id", "hs_merged_object_ids"})
STANDARD_PROPERTIES = frozenset(
    {
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "company",
        "website",
        "jobtitle",
        "address",
        "city",
        "state",
        "zip",
        "country",
        "lifecyclestage",
        "hs_lead_status",
        "hubspot_owner_id",
        "hs_additional_emails",
        "hs_language",
        "date_of_birth",
        "salutation",
    }
)
_DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})
_NOT_TAKEN_IN_MERGE = READ_ONLY | {"email", "hs_additional_emails"}
_QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")  # searched by `query`
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_FILTER_GROUPS = 6  # PublicObjectSearchRequest.filterGroups: "Up to 6 groups of filters"
_WEBHOOK_BATCH = 100  # events per delivery (UNVERIFIED; commonly quoted)
_WEBHOOK_MAX_ATTEMPTS = 10  # after this many failed deliveries an event is dropped (UNVERIFIED)
_SUBSCRIPTION_IDS = {
    "contact.creation": 1,
    "contact.propertyChange": 2,
    "contact.deletion": 3,
    "contact.merge": 4,
    "contact.restore": 5,
    "contact.privacyDeletion": 6,
}
_NOT_FOUND_BATCH = (
    "Could not get some CONTACT objects, they may be deleted or not exist. "
    "Check that ids are valid."
)
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def sign_v3(secret: str, method: str, uri: str, body: bytes | str, timestamp: str | int) -> str:
    """HubSpot webhook signature v3: base64(HMAC-SHA256(secret, method + uri + body + timestamp)).

    CONTRACTS.md §1 "Webhooks" (HubSpot's request-validation page and the official Python SDK).
    `timestamp` is the `X-HubSpot-Request-Timestamp` header value (epoch milliseconds).
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    message = f"{method}{uri}{text}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def sign_v1(secret: str, body: bytes | str) -> str:
    """HubSpot's legacy webhook signature v1: hex SHA-256 of secret + body (CONTRACTS.md §1)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return hashlib.sha256(f"{secret}{text}".encode()).hexdigest()


class _ApiError(Exception):
    """An error answer in HubSpot's shape: {status, message, correlationId, category, ...}."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, "VALIDATION_ERROR", message)


def _invalid_properties(problems: list[Json]) -> _ApiError:
    """HubSpot's 400 for property values it refuses, listing each problem."""
    listing = json.dumps([{"isValid": False, **p} for p in problems])
    return _ApiError(
        400,
        "VALIDATION_ERROR",
        f"Property values were not valid: {listing}",
        errors=[
            {"message": p["message"], "code": p["error"], "context": {"name": [p["name"]]}}
            for p in problems
        ],
    )


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    # orjson: compact UTF-8, as HubSpot answers; a 50-contact page with property history is
    # ~70 KB, and json.dumps was a third of the simulator's time serving one.
    body = orjson.dumps(payload)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error_body(category: str, message: str, **extra: Any) -> Json:
    return {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }


def _problem(name: str, error: str, message: str) -> Json:
    return {"name": name, "error": error, "message": message}


def _batch_error(category: str, message: str, **context: list[str]) -> Json:
    """One `StandardError` item of a 207 body (all six required fields present)."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    }


@dataclass(slots=True)
class _Contact:
    id: int
    props: dict[str, str]
    created_ms: int
    updated_ms: int
    # property -> [(ms, value, sourceType, sourceId)], oldest first
    history: dict[str, list[tuple[int, str, str, str]]] = field(default_factory=dict)
    archived_ms: int | None = None
    merged_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Failure:
    remaining: int
    status: int
    route: str | None


@dataclass(frozen=True, slots=True)
class _Filter:
    prop: str
    op: str
    value: str | None
    values: tuple[str, ...]
    high: str | None


# A change's origin, as history `sourceType`/`sourceId` and webhook `changeSource`/`sourceId`.
# HubSpot's exact labels for private-app writes are UNVERIFIED; CRM_UI vs INTEGRATION is enough
# for the engine to tell a human edit from an API write.
_API = ("INTEGRATION", "sandbox-app")
_HUMAN = ("CRM_UI", "userId:1")
_IMPORT = ("IMPORT", "sandbox-seed")


class HubSpotSimulator:
    """In-memory HubSpot contacts with the v3 REST API as an ASGI app (`.app`).

    Args:
        clock: returns the current aware UTC datetime; drives timestamps and rate limits.
        rate_limit: (requests, per seconds) for the app, HubSpot's "100 per 10 s" (Free/Starter
            tier, CONTRACTS.md "Rate limits"); None disables it (benchmarks).
        search_rate_limit: (requests, per seconds) for the search endpoint, on top of
            `rate_limit`. CONTRACTS.md cites an older changelog's 4/s and marks the current
            value UNVERIFIED; 5/s is HubSpot's current public figure.
        app_secret: the app's client secret; signs webhooks.
        webhook_url: where `flush_webhooks()` delivers events; None records no events.
        page_cap: the largest `limit` the list endpoint accepts (100; UNVERIFIED in the spec).
        access_token: the one bearer token accepted; None accepts any non-empty token.
        search_page_cap: the largest search `limit` ("up to 200 objects", spec).
        search_result_cap: how far search can page; a request with `after` at or beyond it is a
            400, as HubSpot's 10,000-result ceiling (UNVERIFIED in CONTRACTS.md).
        batch_cap: the most inputs a batch call accepts (100; UNVERIFIED).
        custom_properties: property names accepted besides HubSpot's standard contact ones.
        unique_properties: custom properties created with unique values (HubSpot's
            `hasUniqueValue`; the properties API that creates them is not among the spec
            files). They are writable, no two active contacts hold one value, and each is
            accepted as `idProperty` ("The name of a property whose values are unique for this
            object type", spec) on GET and PATCH by id, batch/read, batch/update,
            batch/upsert and gdpr-delete.
        resolve_merged_ids: True makes reads of a merged-away id answer with the surviving
            contact; False makes them 404. Which one HubSpot does is UNVERIFIED.
        portal_id, app_id: put in webhook events.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rate_limit: tuple[int, float] | None = (100, 10.0),
        search_rate_limit: tuple[int, float] | None = (5, 1.0),
        app_secret: str = "sandbox-secret",
        webhook_url: str | None = None,
        page_cap: int = 100,
        access_token: str | None = None,
        search_page_cap: int = 200,
        search_result_cap: int = 10_000,
        batch_cap: int = 100,
        custom_properties: Iterable[str] = (),
        unique_properties: Iterable[str] = (),
        resolve_merged_ids: bool = True,
        portal_id: int = 62515,
        app_id: int = 54321,
    ) -> None:
        self._clock = clock or utcnow
        self._limiter = SlidingWindow(*rate_limit) if rate_limit else None
        self._search_limiter = SlidingWindow(*search_rate_limit) if search_rate_limit else None
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        self.page_cap = page_cap
        self.access_token = access_token
        self.search_page_cap = search_page_cap
        self.search_result_cap = search_result_cap
        self.batch_cap = batch_cap
        self.resolve_merged_ids = resolve_merged_ids
        self.portal_id = portal_id
        self.app_id = app_id
        self.unique_properties = frozenset(unique_properties)
        clash = self.unique_properties & (STANDARD_PROPERTIES | READ_ONLY)
        if clash:
            raise ValueError(f"not custom properties: {sorted(clash)}")
        self._writable = (
            STANDARD_PROPERTIES | frozenset(custom_properties) | self.unique_properties
        )

        self._lock = threading.RLock()
        self._next_id = 1001
        self._contacts: dict[int, _Contact] = {}
        self._active_ids: list[int] = []  # sorted; list paging
        self._archived_ids: list[int] = []  # sorted
        self._by_updated: list[tuple[int, int]] = []  # sorted (updated_ms, id) of active contacts
        self._by_email: dict[str, int] = {}  # lower-cased email (and additional emails) -> id
        # unique property -> value -> id of the active contact holding it
        self._by_unique: dict[str, dict[str, int]] = {p: {} for p in self.unique_properties}
        self._merged_into: dict[int, int] = {}
        self.blocklisted_emails: set[str] = set()

        self._failures: list[_Failure] = []
        self._pending_events: list[Json] = []
        self._next_event_id = 1
        self.request_count = 0
        self.count_by_route: Counter[str] = Counter()
        self.app = self._build_app()

    # ------------------------------------------------------------------ helpers for tests

    def add_contact(
        self,
        properties: Mapping[str, Any],
        *,
        updated_at: datetime | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """Seed a contact (as an import would) and return its id.

        Args:
            properties: property values; unknown or read-only names raise ValueError.
            updated_at: its `updatedAt`/`lastmodifieddate` (a datetime); the clock by default.
            created_at: its `createdAt`; `updated_at` by default.

        Raises:
            ValueError: invalid properties, or an email or unique value another contact has.
        """
        with self._lock:
            now_ms = epoch_ms(updated_at) if updated_at is not None else self._now_ms()
            created_ms = epoch_ms(created_at) if created_at is not None else now_ms
            props = self._as_helper_error(self._clean_properties, properties)
            if (existing := self._email_owner(props.get("email"))) is not None:
                raise ValueError(f"Contact already exists. Existing ID: {existing}")
            self._as_helper_error(self._check_unique, [(None, props)])
            contact = self._insert(props, created_ms, now_ms, _IMPORT)
            return str(contact.id)

    def edit_contact(self, contact_id: str | int, properties: Mapping[str, Any]) -> None:
        """Change properties as a person would in HubSpot's UI (sourceType CRM_UI).

        Raises:
            KeyError: no such active contact.
            ValueError: invalid properties, or an email or unique value another contact has.
        """
        with self._lock:
            contact = self._active(contact_id)
            props = self._as_helper_error(self._clean_properties, properties)
            if (owner := self._email_owner(props.get("email"))) not in (None, contact.id):
                raise ValueError(f"Contact already exists. Existing ID: {owner}")
            self._as_helper_error(self._check_unique, [(contact.id, props)])
            self._write(contact, props, self._now_ms(), _HUMAN)

    def archive(self, contact_id: str | int) -> None:
        """Archive (soft-delete) a contact as a person would; restorable with `restore()`.

        Raises:
            KeyError: no such active contact.
        """
        with self._lock:
            self._archive(self._active(contact_id), self._now_ms(), _HUMAN)

    def restore(self, contact_id: str | int) -> None:
        """Bring an archived contact back.

        Raises:
            KeyError: no such archived contact.
            ValueError: its email or a unique value of it now belongs to another contact.
        """
        with self._lock:
            contact = self._contacts.get(int(contact_id))
            if contact is None or contact.archived_ms is None:
                raise KeyError(f"no archived contact {contact_id}")
            if (owner := self._email_owner(contact.props.get("email"))) is not None:
                raise ValueError(f"Contact already exists. Existing ID: {owner}")
            self._as_helper_error(self._check_unique, [(contact.id, contact.props)])
            now_ms = max(self._now_ms(), contact.updated_ms)
            del self._archived_ids[bisect.bisect_left(self._archived_ids, contact.id)]
            contact.archived_ms = None
            contact.updated_ms = now_ms
            self._index(contact)
            self._queue_event("contact.restore", contact.id, now_ms, _HUMAN)

    def merge(self, primary_id: str | int, secondary_id: str | int) -> str:
        """Merge the secondary contact into the primary, as HubSpot's merge does.

        The secondary disappears (from list, search and the email index); the primary keeps its
        values, takes the secondary's for properties it has no value for, lists the secondary's
        id in `hs_merged_object_ids` and its email in `hs_additional_emails`. Reads of the old
        id follow `resolve_merged_ids`.

        Returns:
            The surviving id (the primary's).

        Raises:
            KeyError: either contact is not active.
            ValueError: both ids name the same contact.
        """
        with self._lock:
            return str(self._merge(self._active(primary_id), self._active(secondary_id), _HUMAN).id)

    def fail_next(self, n: int, status: int, *, route: str | None = None) -> None:
        """Answer the next `n` requests (to `route`, e.g. "POST /crm/v3/objects/contacts/search",
        or to any route) with `status` and HubSpot's error body for it (429, 401, 5xx...)."""
        with self._lock:
            self._failures.append(_Failure(n, status, route))

    def get_contact(self, contact_id: str | int) -> Json | None:
        """Everything stored for a contact (all properties, with history), or None if unknown."""
        with self._lock:
            contact = self._contacts.get(int(contact_id))
            if contact is None:
                return None
            names = list(contact.props) + list(ALWAYS_RETURNED)
            return self._render(contact, names, names)

    def contact_ids(self, *, archived: bool = False) -> list[str]:
        """Ids of active (or archived) contacts, ascending."""
        with self._lock:
            return [str(i) for i in (self._archived_ids if archived else self._active_ids)]

    @property
    def pending_webhooks(self) -> list[Json]:
        """Events recorded and not yet delivered, oldest first (copies)."""
        with self._lock:
            return [dict(event) for event in self._pending_events]

    async def flush_webhooks(self, client: httpx.AsyncClient | None = None) -> int:
        """POST pending events to `webhook_url` in batches, signed as HubSpot signs them.

        Each request carries `X-HubSpot-Signature-v3` over (POST, webhook_url, body, timestamp),
        `X-HubSpot-Request-Timestamp` (epoch ms from the clock) and the legacy v1 headers.
        A batch that fails (non-2xx or transport error) goes back to the queue with its
        `attemptNumber` raised, and is dropped after 10 attempts.

        Args:
            client: the client to send with (tests pass one on an ASGI or mock transport);
                a fresh one by default.

        Returns:
            How many events were delivered.
        """
        if self.webhook_url is None:
            return 0
        with self._lock:
            events, self._pending_events = self._pending_events, []
        if not events:
            return 0
        own_client = client is None
        http = client or httpx.AsyncClient(timeout=10.0)
        delivered = 0
        failed: list[Json] = []
        try:
            for start in range(0, len(events), _WEBHOOK_BATCH):
                batch = events[start : start + _WEBHOOK_BATCH]
                if await self._deliver(http, batch):
                    delivered += len(batch)
                else:
                    failed.extend(
                        {**event, "attemptNumber": event["attemptNumber"] + 1}
                        for event in batch
                        if event["attemptNumber"] + 1 < _WEBHOOK_MAX_ATTEMPTS
                    )
        finally:
            if own_client:
                await http.aclose()
            with self._lock:
                self._pending_events[:0] = failed
        return delivered

    async def _deliver(self, http: httpx.AsyncClient, batch: list[Json]) -> bool:
        assert self.webhook_url is not None
        body = json.dumps(batch, separators=(",", ":")).encode()
        timestamp = str(self._now_ms())
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": sign_v3(
                self.app_secret, "POST", self.webhook_url, body, timestamp
            ),
            "X-HubSpot-Signature": sign_v1(self.app_secret, body),
            "X-HubSpot-Signature-Version": "v1",
        }
        try:
            response = await http.post(self.webhook_url, content=body, headers=headers)
        except httpx.HTTPError:
            return False
        return response.is_success

    # ------------------------------------------------------------------ state

    def _now_ms(self) -> int:
        return epoch_ms(self._clock())

    @staticmethod
    def _as_helper_error(fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return fn(arg)
        except _ApiError as exc:
            raise ValueError(exc.message) from None

    def _active(self, contact_id: str | int) -> _Contact:
        contact = self._contacts.get(int(contact_id))
        if contact is None or contact.archived_ms is not None:
            raise KeyError(f"no active contact {contact_id}")
        return contact

    def _email_owner(self, email: str | None) -> int | None:
        return self._by_email.get(email.lower()) if email else None

    def _index(self, contact: _Contact) -> None:
        bisect.insort(self._active_ids, contact.id)
        bisect.insort(self._by_updated, (contact.updated_ms, contact.id))
        for email in self._emails_of(contact):
            self._by_email[email] = contact.id
        for name, holders in self._by_unique.items():
            if value := contact.props.get(name):
                holders[value] = contact.id

    def _unindex(self, contact: _Contact) -> None:
        del self._active_ids[bisect.bisect_left(self._active_ids, contact.id)]
        key = (contact.updated_ms, contact.id)
        del self._by_updated[bisect.bisect_left(self._by_updated, key)]
        for email in self._emails_of(contact):
            if self._by_email.get(email) == contact.id:
                del self._by_email[email]
        # Archived contacts free their unique values here, as they free their email (whether
        # HubSpot keeps an archived contact's unique value reserved is UNVERIFIED).
        for name, holders in self._by_unique.items():
            value = contact.props.get(name)
            if value and holders.get(value) == contact.id:
                del holders[value]

    @staticmethod
    def _emails_of(contact: _Contact) -> list[str]:
        emails = [contact.props["email"].lower()] if contact.props.get("email") else []
        extra = contact.props.get("hs_additional_emails", "")
        return emails + [e.strip().lower() for e in extra.split(";") if e.strip()]

    def _insert(
        self, props: dict[str, str], created_ms: int, updated_ms: int, source: _Source
    ) -> _Contact:
        contact = _Contact(self._next_id, {}, created_ms, updated_ms)
        self._next_id += 1
        self._contacts[contact.id] = contact
        for name, value in props.items():
            if value != "":
                contact.props[name] = value
                contact.history[name] = [(created_ms, value, *source)]
        self._index(contact)
        self._queue_event("contact.creation", contact.id, created_ms, source, changeFlag="NEW")
        for name in contact.props:
            self._queue_property_change(contact, name, created_ms, source)
        return contact

    def _write(
        self, contact: _Contact, props: Mapping[str, str], now_ms: int, source: _Source
    ) -> None:
        """Apply property values; "" clears. lastmodifieddate moves on every write."""
        self._unindex(contact)
        changed = []
        for name, value in props.items():
            if contact.props.get(name, "") == value:
                continue
            if value == "":
                contact.props.pop(name, None)
            else:
                contact.props[name] = value
            contact.history.setdefault(name, []).append((now_ms, value, *source))
            changed.append(name)
        contact.updated_ms = max(now_ms, contact.updated_ms)
        self._index(contact)
        for name in changed:
            self._queue_property_change(contact, name, now_ms, source)

    def _archive(self, contact: _Contact, now_ms: int, source: _Source) -> None:
        self._unindex(contact)
        contact.archived_ms = max(now_ms, contact.updated_ms)
        contact.updated_ms = contact.archived_ms
        bisect.insort(self._archived_ids, contact.id)
        self._queue_event("contact.deletion", contact.id, now_ms, source, changeFlag="DELETED")

    def _purge(self, contact: _Contact, now_ms: int) -> None:
        if contact.archived_ms is None:
            self._unindex(contact)
        else:
            del self._archived_ids[bisect.bisect_left(self._archived_ids, contact.id)]
        del self._contacts[contact.id]
        self._queue_event("contact.privacyDeletion", contact.id, now_ms, _API, changeFlag="DELETED")

    def _merge(self, primary: _Contact, secondary: _Contact, source: _Source) -> _Contact:
        if primary.id == secondary.id:
            raise ValueError("cannot merge a contact into itself")
        now_ms = self._now_ms()
        self._unindex(secondary)
        del self._contacts[secondary.id]
        taken = {
            name: value
            for name, value in secondary.props.items()
            if name not in primary.props and name not in _NOT_TAKEN_IN_MERGE
        }
        extra = [e for e in primary.props.get("hs_additional_emails", "").split(";") if e]
        for email in self._emails_of(secondary):
            if email not in [e.lower() for e in extra]:
                extra.append(email)
        if "email" not in primary.props and extra:
            taken["email"] = extra.pop(0)
        merged = primary.merged_ids + [secondary.id] + secondary.merged_ids
        primary.merged_ids = merged
        taken["hs_additional_emails"] = ";".join(extra)
        self._write(primary, taken, now_ms, source)
        # hs_merged_object_ids is read-only to clients, so it is set here and not through _write.
        primary.props["hs_merged_object_ids"] = ";".join(str(i) for i in merged)
        primary.history.setdefault("hs_merged_object_ids", []).append(
            (now_ms, primary.props["hs_merged_object_ids"], *source)
        )
        for old_id in [secondary.id, *secondary.merged_ids]:
            self._merged_into[old_id] = primary.id
        self._queue_event(
            "contact.merge",
            primary.id,
            now_ms,
            source,
            primaryObjectId=primary.id,
            mergedObjectIds=[secondary.id],
            newObjectId=primary.id,
        )
        return primary

    def _clean_properties(self, raw: Any) -> dict[str, str]:
        """Validate a `properties` object; any bad value fails the whole request (400)."""
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise _invalid("Invalid input JSON: properties must be an object")
        clean: dict[str, str] = {}
        problems: list[Json] = []
        for name, value in raw.items():
            if name in READ_ONLY:
                message = f'Property "{name}" is read-only'
                problems.append(_problem(name, "READ_ONLY_VALUE", message))
                continue
            if name not in self._writable:
                problems.append(
                    _problem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
                )
                continue
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (str, int, float)):
                text = str(value)
            else:
                message = f'Property "{name}" must be a string'
                problems.append(_problem(name, "INVALID_TYPE", message))
                continue
            if name == "email" and text:
                if not _EMAIL_RE.match(text):
                    problems.append(_problem(name, "INVALID_EMAIL", "Email address is invalid"))
                    continue
                if text.lower() in self.blocklisted_emails:
                    problems.append(_problem(name, "INVALID_EMAIL", "Email address is blocklisted"))
                    continue
            clean[name] = text
        if problems:
            raise _invalid_properties(problems)
        return clean

    def _check_unique(self, writes: Iterable[tuple[int | str | None, Mapping[str, str]]]) -> None:
        """Refuse a request that would give two active contacts one value of a unique property.

        `writes` are (target, properties) in the order the request applies them; the target is
        a contact id, or a token naming a contact the same request creates (None: a new one).
        The whole request is refused before anything is written, as for any invalid property
        value. That HubSpot answers a duplicate unique value with this 400 is UNVERIFIED: the
        spec files do not show the error, so its shape follows the other property errors.
        """
        claimed: dict[tuple[str, str], int | str] = {}
        for n, (target, props) in enumerate(writes):
            token: int | str = f"new-{n}" if target is None else target
            for name in self.unique_properties:
                value = props.get(name)
                if not value:
                    continue
                holder = claimed.get((name, value), self._by_unique[name].get(value))
                if holder is not None and holder != token:
                    message = f'Another contact already has this value of unique property "{name}"'
                    raise _invalid_properties([_problem(name, "VALUE_NOT_UNIQUE", message)])
                claimed[(name, value)] = token

    def _find(
        self, key: str, id_property: str | None, *, archived: bool = False
    ) -> _Contact | None:
        """The contact a path id or batch input names, by id or by `idProperty=email`."""
        if id_property == "email":
            if archived:
                wanted = key.lower()
                archived_contacts = (self._contacts[i] for i in self._archived_ids)
                return next((c for c in archived_contacts if wanted in self._emails_of(c)), None)
            owner = self._by_email.get(key.lower())
            return self._contacts[owner] if owner is not None else None
        if id_property in self.unique_properties:
            if archived:
                archived_contacts = (self._contacts[i] for i in self._archived_ids)
                return next((c for c in archived_contacts if c.props.get(id_property) == key), None)
            holder = self._by_unique[id_property].get(key)
            return self._contacts[holder] if holder is not None else None
        if id_property not in (None, "", "hs_object_id"):
            raise _invalid(f"{id_property} is not a unique property")
        if not key.isdigit():
            return None
        number = int(key)
        if number not in self._contacts and self.resolve_merged_ids:
            while number in self._merged_into:
                number = self._merged_into[number]
        contact = self._contacts.get(number)
        if contact is None or (contact.archived_ms is not None) != archived:
            return None
        return contact

    # ------------------------------------------------------------------ webhooks

    def _queue_event(
        self, kind: str, object_id: int, at_ms: int, source: _Source, **extra: Any
    ) -> None:
        if self.webhook_url is None:
            return
        self._pending_events.append(
            {
                "eventId": self._next_event_id,
                "subscriptionId": _SUBSCRIPTION_IDS[kind],
                "portalId": self.portal_id,
                "appId": self.app_id,
                "occurredAt": at_ms,
                "subscriptionType": kind,
                "attemptNumber": 0,
                "objectId": object_id,
                "changeSource": source[0],
                "sourceId": source[1],
                **extra,
            }
        )
        self._next_event_id += 1

    def _queue_property_change(
        self, contact: _Contact, name: str, at_ms: int, source: _Source
    ) -> None:
        # Fields of propertyChange events beyond the documented example are UNVERIFIED
        # (CONTRACTS.md §1 "Webhooks"); propertyName/propertyValue are the commonly seen ones.
        self._queue_event(
            "contact.propertyChange",
            contact.id,
            at_ms,
            source,
            propertyName=name,
            propertyValue=contact.props.get(name, ""),
        )

    # ------------------------------------------------------------------ rendering

    def _value(self, contact: _Contact, name: str) -> str | None:
        if name == "hs_object_id":
            return str(contact.id)
        if name == "createdate":
            return iso_from_ms(contact.created_ms)
        if name == "lastmodifieddate":
            return iso_from_ms(contact.updated_ms)
        return contact.props.get(name)

    def _render(
        self,
        contact: _Contact,
        properties: Iterable[str] | None,
        with_history: Iterable[str] | None = None,
    ) -> Json:
        names = DEFAULT_PROPERTIES if not properties else (*properties, *ALWAYS_RETURNED)
        props: dict[str, str] = {}
        for name in names:
            # Unset properties are left out: the spec types values as plain strings (not
            # nullable), although HubSpot is known to send null for them (UNVERIFIED).
            value = self._value(contact, name)
            if value is not None:
                props[name] = value
        obj: Json = {
            "id": str(contact.id),
            "properties": props,
            "createdAt": iso_from_ms(contact.created_ms),
            "updatedAt": iso_from_ms(contact.updated_ms),
            "archived": contact.archived_ms is not None,
        }
        if contact.archived_ms is not None:
            obj["archivedAt"] = iso_from_ms(contact.archived_ms)
        if with_history:
            obj["propertiesWithHistory"] = {
                name: self._history(contact, name)
                for name in with_history
                if self._value(contact, name) is not None or name in contact.history
            }
        return obj

    def _history(self, contact: _Contact, name: str) -> list[Json]:
        entries = contact.history.get(name)
        if entries is None:  # computed properties keep no history: one entry, their value now
            value = self._value(contact, name) or ""
            created = name in ("createdate", "hs_object_id")
            ms = contact.created_ms if created else contact.updated_ms
            entries = [(ms, value, "CALCULATED", "")]
        return [
            {"value": value, "timestamp": iso_from_ms(ms), "sourceType": stype, "sourceId": sid}
            for ms, value, stype, sid in reversed(entries)  # newest first, as HubSpot lists them
        ]

    def _properties(self, request: Request, body: Json | None) -> Response:
        """Read all properties of contacts: `{"results": [property, ...]}`, each with at
        least `name`, `label`, `type`, `fieldType`, `groupName` and `hidden`."""
        results = [
            {"name": name, "label": name, "type": "string", "fieldType": "text",
             "groupName": "contactinformation", "hidden": False,
             "hubspotDefined": name in STANDARD_PROPERTIES or name in READ_ONLY,
             "hasUniqueValue": name in self.unique_properties,
             "modificationMetadata": {"archivable": name not in READ_ONLY,
                                      "readOnlyDefinition": name in READ_ONLY,
                                      "readOnlyValue": name in READ_ONLY}}
            for name in sorted(self._writable | READ_ONLY)
        ]
        return _json_response(200, {"results": results})

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_app(self) -> Starlette:
        def route(path: str, method: str, handler: _Handler, *, search: bool = False) -> Route:
            name = f"{method} {path}"

            async def endpoint(request: Request) -> Response:
                body = await request.body()
                with self._lock:
                    return self._handle(name, handler, request, body, search=search)

            return Route(path, endpoint, methods=[method], name=name)

        routes = [
            route(CONTACTS, "GET", self._list),
            route(CONTACTS, "POST", self._create),
            route(f"{CONTACTS}/search", "POST", self._search, search=True),
            route(f"{CONTACTS}/merge", "POST", self._merge_endpoint),
            route(f"{CONTACTS}/gdpr-delete", "POST", self._gdpr_delete),
            route(f"{CONTACTS}/batch/read", "POST", self._batch_read),
            route(f"{CONTACTS}/batch/create", "POST", self._batch_create),
            route(f"{CONTACTS}/batch/update", "POST", self._batch_update),
            route(f"{CONTACTS}/batch/upsert", "POST", self._batch_upsert),
            route(f"{CONTACTS}/batch/archive", "POST", self._batch_archive),
            route(CONTACT_PROPERTIES, "GET", self._properties),
            route(CONTACTS + "/{contactId}", "GET", self._get),
            route(CONTACTS + "/{contactId}", "PATCH", self._update),
            route(CONTACTS + "/{contactId}", "DELETE", self._delete),
        ]

        async def not_found(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            category = "OBJECT_NOT_FOUND" if status == 404 else "VALIDATION_ERROR"
            return _json_response(status, _error_body(category, "Route not found"))

        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})

    def _handle(
        self, name: str, handler: _Handler, request: Request, body: bytes, *, search: bool
    ) -> Response:
        self.request_count += 1
        self.count_by_route[name] += 1
        now_s = self._clock().timestamp()
        failure = self._take_failure(name)
        if failure is not None:
            return self._failure_response(failure, now_s, search=search)
        if not self._is_authorized(request):
            return _json_response(401, _error_body("INVALID_AUTHENTICATION", _AUTH_MESSAGE))
        limited = self._check_rate(now_s, search=search)
        if limited is not None:
            return limited
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            invalid = _error_body("VALIDATION_ERROR", "Invalid input JSON on request body")
            response = _json_response(400, invalid)
        else:
            try:
                response = handler(request, parsed)
            except _ApiError as exc:
                error = _error_body(exc.category, exc.message, **exc.extra)
                response = _json_response(exc.status, error)
        if not search:
            response.headers.update(self._rate_headers(now_s))
        return response

    def _take_failure(self, name: str) -> _Failure | None:
        for failure in self._failures:
            if failure.route in (None, name):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _failure_response(self, failure: _Failure, now_s: float, *, search: bool) -> Response:
        if failure.status == 429:
            return self._rate_limited(now_s, search=search, app_window=True)
        if failure.status == 401:
            return _json_response(401, _error_body("INVALID_AUTHENTICATION", _AUTH_MESSAGE))
        category = "INTERNAL_ERROR" if failure.status >= 500 else "VALIDATION_ERROR"
        message = f"injected failure ({failure.status})"
        return _json_response(failure.status, _error_body(category, message))

    def _is_authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.access_token is None or hmac.compare_digest(token, self.access_token)

    def _check_rate(self, now_s: float, *, search: bool) -> Response | None:
        if search and self._search_limiter is not None and self._search_limiter.is_full(now_s):
            return self._rate_limited(now_s, search=True)
        if self._limiter is not None and self._limiter.is_full(now_s):
            return self._rate_limited(now_s, search=search, app_window=True)
        if search and self._search_limiter is not None:
            self._search_limiter.record(now_s)
        if self._limiter is not None:
            self._limiter.record(now_s)
        return None

    def _rate_limited(self, now_s: float, *, search: bool, app_window: bool = False) -> Response:
        # 429 body: `message` and `policyName` (CONTRACTS.md "Rate limits"); the policy names
        # and `errorType` are HubSpot's as commonly seen (UNVERIFIED). No Retry-After: HubSpot
        # sending one is UNVERIFIED, so a connector must not need it.
        if search and not app_window:
            policy, message = "SECONDLY", "You have reached your secondly limit."
        else:
            policy = "TEN_SECONDLY_ROLLING"
            message = "You have reached your ten_secondly_rolling limit."
        body = _error_body("RATE_LIMITS", message, errorType="RATE_LIMIT", policyName=policy)
        headers = None
        if not search:
            headers = {**self._rate_headers(now_s), "X-HubSpot-RateLimit-Remaining": "0"}
        return _json_response(429, body, headers)

    def _rate_headers(self, now_s: float) -> dict[str, str]:
        # CONTRACTS.md "Rate limits": Interval-Milliseconds, Max, Remaining. Not sent on search
        # responses (a community post says search has none; UNVERIFIED, and the safer choice).
        # The Daily headers are left out, as for OAuth-authorised calls.
        if self._limiter is None:
            return {}
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self._limiter.per_s * 1000)),
            "X-HubSpot-RateLimit-Max": str(self._limiter.max_calls),
            "X-HubSpot-RateLimit-Remaining": str(self._limiter.remaining(now_s)),
        }

    # ------------------------------------------------------------------ request parsing

    @staticmethod
    def _list_param(request: Request, name: str) -> list[str] | None:
        """An array query parameter, repeated (`a=1&a=2`, the spec's form) or comma separated."""
        raw = request.query_params.getlist(name)
        if not raw:
            return None
        return [item.strip() for value in raw for item in value.split(",") if item.strip()]

    @staticmethod
    def _bool_param(request: Request, name: str) -> bool:
        value = request.query_params.get(name, "false").lower()
        if value not in ("true", "false"):
            raise _invalid(f"{name} must be true or false")
        return value == "true"

    @staticmethod
    def _object(body: Any) -> Json:
        if not isinstance(body, dict):
            raise _invalid("Invalid input JSON: expected an object")
        return body

    def _inputs(self, body: Any) -> list[Json]:
        inputs = self._object(body).get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
            raise _invalid("Invalid input JSON: inputs must be a list of objects")
        if len(inputs) > self.batch_cap:
            raise _invalid(f"Batch input is limited to {self.batch_cap} inputs")
        return inputs

    @staticmethod
    def _names(body: Json, key: str) -> list[str] | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _invalid(f"{key} must be a list of property names")
        return value

    def _batch_response(
        self, results: list[Json], errors: list[Json], ok_status: int = 200
    ) -> Response:
        now = iso_from_ms(self._now_ms())
        payload: Json = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            # Partial success is a 207 listing StandardError items (spec). Whether HubSpot fails
            # the whole batch instead for some errors is UNVERIFIED: handle both.
            payload["errors"] = errors
            payload["numErrors"] = len(errors)
            return _json_response(207, payload)
        return _json_response(ok_status, payload)

    # ------------------------------------------------------------------ endpoints

    def _list(self, request: Request, _body: Any) -> Response:
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            raise _invalid("limit must be an integer") from None
        if not 1 <= limit <= self.page_cap:
            # The spec states no maximum; 100 is UNVERIFIED. A 400 (not a silent clamp) so a
            # connector that asks for more finds out in tests rather than in production.
            raise _invalid(f"limit must be between 1 and {self.page_cap}")
        archived = self._bool_param(request, "archived")
        ids = self._archived_ids if archived else self._active_ids
        after = request.query_params.get("after")
        start = 0
        if after:
            if not after.isdigit():
                raise _invalid("after is not a valid paging cursor")
            start = bisect.bisect_left(ids, int(after))
        page = ids[start : start + limit]
        properties = self._list_param(request, "properties")
        history = self._list_param(request, "propertiesWithHistory")
        results = [self._render(self._contacts[i], properties, history) for i in page]
        payload: Json = {"results": results}
        if start + limit < len(ids):
            # The cursor is the next id (opaque to clients: only ever send it back).
            token = str(ids[start + limit])
            payload["paging"] = {"next": {"after": token, "link": f"?after={token}"}}
        return _json_response(200, payload)

    def _get(self, request: Request, _body: Any) -> Response:
        contact = self._find(
            request.path_params["contactId"],
            request.query_params.get("idProperty"),
            archived=self._bool_param(request, "archived"),
        )
        if contact is None:
            raise _ApiError(404, "OBJECT_NOT_FOUND", "Object not found.")
        properties = self._list_param(request, "properties")
        history = self._list_param(request, "propertiesWithHistory")
        return _json_response(200, self._render(contact, properties, history))

    def _create(self, _request: Request, body: Any) -> Response:
        body = self._object(body)
        props = self._clean_properties(body.get("properties"))
        if (existing := self._email_owner(props.get("email"))) is not None:
            # HubSpot's duplicate message; connectors parse the id out of it (UNVERIFIED here).
            raise _ApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
        self._check_unique([(None, props)])
        now_ms = self._now_ms()
        contact = self._insert(props, now_ms, now_ms, _API)
        return _json_response(201, self._render(contact, list(props) or None))

    def _update(self, request: Request, body: Any) -> Response:
        props = self._clean_properties(self._object(body).get("properties"))
        id_property = request.query_params.get("idProperty")
        contact = self._find(request.path_params["contactId"], id_property)
        if contact is None:
            raise _ApiError(404, "OBJECT_NOT_FOUND", "Object not found.")
        if (owner := self._email_owner(props.get("email"))) not in (None, contact.id):
            raise _ApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {owner}")
        self._check_unique([(contact.id, props)])
        self._write(contact, props, self._now_ms(), _API)
        return _json_response(200, self._render(contact, list(props) or None))

    def _delete(self, request: Request, _body: Any) -> Response:
        contact = self._find(request.path_params["contactId"], None)
        # Archiving an unknown or archived id answers 204 too (idempotent; UNVERIFIED).
        if contact is not None:
            self._archive(contact, self._now_ms(), _API)
        return Response(status_code=204)

    def _batch_read(self, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        properties = self._names(body, "properties")
        history = self._names(body, "propertiesWithHistory")
        id_property = body.get("idProperty")
        archived = self._bool_param(request, "archived")
        results, missing, seen = [], [], set()
        for item in inputs:
            key = str(item.get("id", ""))
            contact = self._find(key, id_property, archived=archived)
            if contact is None:
                missing.append(key)
            elif contact.id not in seen:
                seen.add(contact.id)
                results.append(self._render(contact, properties, history))
        errors = []
        if missing:
            errors.append(_batch_error("OBJECT_NOT_FOUND", _NOT_FOUND_BATCH, ids=missing))
        return self._batch_response(results, errors)

    def _batch_create(self, _request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        cleaned = [self._clean_properties(item.get("properties")) for item in inputs]
        self._check_unique(
            (None, props) for props in cleaned if self._email_owner(props.get("email")) is None
        )
        now_ms = self._now_ms()
        results, errors = [], []
        for props in cleaned:
            if (existing := self._email_owner(props.get("email"))) is not None:
                message = f"Contact already exists. Existing ID: {existing}"
                errors.append(_batch_error("CONFLICT", message, existingId=[str(existing)]))
                continue
            contact = self._insert(props, now_ms, now_ms, _API)
            results.append(self._render(contact, list(props) or None))
        return self._batch_response(results, errors, ok_status=201)

    def _batch_update(self, _request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        keys = [str(item.get("id", "")) for item in inputs]
        if len(set(keys)) != len(keys):
            raise _invalid("Duplicate IDs found in batch input")
        cleaned = [self._clean_properties(item.get("properties")) for item in inputs]
        targets = [
            self._find(key, item.get("idProperty")) for item, key in zip(inputs, keys, strict=True)
        ]
        self._check_unique(
            (contact.id, props)
            for contact, props in zip(targets, cleaned, strict=True)
            if contact is not None
        )
        now_ms = self._now_ms()
        results, errors, missing = [], [], []
        for key, contact, props in zip(keys, targets, cleaned, strict=True):
            if contact is None:
                missing.append(key)
                continue
            if (owner := self._email_owner(props.get("email"))) not in (None, contact.id):
                message = f"Contact already exists. Existing ID: {owner}"
                errors.append(_batch_error("CONFLICT", message, ids=[key]))
                continue
            self._write(contact, props, now_ms, _API)
            results.append(self._render(contact, list(props) or None))
        if missing:
            errors.insert(0, _batch_error("OBJECT_NOT_FOUND", _NOT_FOUND_BATCH, ids=missing))
        return self._batch_response(results, errors)

    def _batch_upsert(self, _request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        cleaned = [self._clean_properties(item.get("properties")) for item in inputs]
        planned: list[tuple[str, str | None, dict[str, str]]] = []
        for item, props in zip(inputs, cleaned, strict=True):
            key, id_property = str(item.get("id", "")), item.get("idProperty")
            if id_property == "email":
                props = {**props, "email": key}  # the id *is* the email value
                self._clean_properties({"email": key})
            elif id_property in self.unique_properties:
                # The id is the property's value, which a created contact holds. Whether
                # HubSpot also takes the value from `id` alone, without it in `properties`,
                # is UNVERIFIED; the simulator sets it either way.
                if not key:
                    raise _invalid("id must not be empty")
                props = {**props, id_property: key}
            planned.append((key, id_property, props))
        unique_keys = [(p, k) for k, p, _ in planned if p in self.unique_properties]
        if len(set(unique_keys)) != len(unique_keys):
            # As batch/update refuses an id named twice (UNVERIFIED for upsert).
            raise _invalid("Duplicate IDs found in batch input")
        writes = []
        for key, id_property, props in planned:
            contact = self._find(key, id_property)
            if contact is not None:
                writes.append((contact.id, props))
            elif id_property == "email":
                writes.append((f"email:{key.lower()}", props))
            elif id_property in self.unique_properties:
                writes.append((None, props))
        self._check_unique(writes)
        now_ms = self._now_ms()
        results, errors = [], []
        for key, id_property, props in planned:
            contact = self._find(key, id_property)
            creates = id_property == "email" or id_property in self.unique_properties
            if contact is None and not creates:
                errors.append(_batch_error("OBJECT_NOT_FOUND", _NOT_FOUND_BATCH, ids=[key]))
                continue
            owner = self._email_owner(props.get("email"))
            if owner is not None and (contact is None or owner != contact.id):
                message = f"Contact already exists. Existing ID: {owner}"
                errors.append(_batch_error("CONFLICT", message, ids=[key]))
                continue
            if contact is None:
                contact, new = self._insert(props, now_ms, now_ms, _API), True
            else:
                self._write(contact, props, now_ms, _API)
                new = False
            results.append({**self._render(contact, list(props) or None), "new": new})
        return self._batch_response(results, errors)

    def _batch_archive(self, _request: Request, body: Any) -> Response:
        now_ms = self._now_ms()
        for item in self._inputs(body):
            contact = self._find(str(item.get("id", "")), None)
            if contact is not None:
                self._archive(contact, now_ms, _API)
        return Response(status_code=204)

    def _merge_endpoint(self, _request: Request, body: Any) -> Response:
        body = self._object(body)
        primary = self._find(str(body.get("primaryObjectId", "")), None)
        secondary = self._find(str(body.get("objectIdToMerge", "")), None)
        if primary is None or secondary is None:
            raise _ApiError(404, "OBJECT_NOT_FOUND", "Object not found.")
        if primary.id == secondary.id:
            raise _invalid("Cannot merge an object into itself")
        return _json_response(200, self._render(self._merge(primary, secondary, _API), None))

    def _gdpr_delete(self, _request: Request, body: Any) -> Response:
        body = self._object(body)
        key, id_property = str(body.get("objectId", "")), body.get("idProperty")
        contact = self._find(key, id_property) or self._find(key, id_property, archived=True)
        if contact is not None:
            self._purge(contact, self._now_ms())
        elif id_property == "email":
            # "If email address is not found, the email address will be added to a blocklist" (spec)
            self.blocklisted_emails.add(key.lower())
        return Response(status_code=204)

    # ------------------------------------------------------------------ search

    def _search(self, _request: Request, body: Any) -> Response:
        body = self._object(body)
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= self.search_page_cap:
            raise _invalid(f"limit must be between 1 and {self.search_page_cap}")
        after_raw = body.get("after") or "0"
        if not str(after_raw).isdigit():
            raise _invalid("after is not a valid paging cursor")
        after = int(after_raw)
        if after >= self.search_result_cap:
            # HubSpot search stops at 10,000 results per query (UNVERIFIED in CONTRACTS.md):
            # asking past it is a 400. Narrow the query (a later lastmodifieddate) instead.
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"Search results are limited to {self.search_result_cap} per query; "
                "narrow the filters instead of paging further",
            )
        groups = self._parse_groups(body.get("filterGroups") or [])
        sort_prop, descending = self._parse_sort(body.get("sorts") or [])
        query = body.get("query")
        if query is not None and not isinstance(query, str):
            raise _invalid("query must be a string")

        fast = (
            sort_prop == "lastmodifieddate"
            and not query
            and len(groups) <= 1
            and all(f.prop == "lastmodifieddate" and f.op in _RANGE_OPS for g in groups for f in g)
        )
        if fast:
            lo, hi = self._updated_range(groups[0] if groups else [])
            total = hi - lo
            stop = min(after + limit, total, self.search_result_cap)
            if descending:
                page = [self._by_updated[hi - 1 - k][1] for k in range(after, stop)]
            else:
                page = [self._by_updated[lo + k][1] for k in range(after, stop)]
        else:
            matches = self._matching_ids(groups, query)
            total = len(matches)
            matches.sort(key=self._sort_key(sort_prop), reverse=descending)
            page = matches[after : min(after + limit, self.search_result_cap)]
        properties = self._names(body, "properties")
        results = [self._render(self._contacts[i], properties) for i in page]
        payload: Json = {"total": total, "results": results}
        end = after + len(page)
        if end < total:
            # Search cursors are offsets; results written between pages shift them, as on HubSpot.
            payload["paging"] = {"next": {"after": str(end), "link": f"?after={end}"}}
        return _json_response(200, payload)

    @staticmethod
    def _parse_groups(raw: Any) -> list[list[_Filter]]:
        if not isinstance(raw, list) or len(raw) > _MAX_FILTER_GROUPS:
            raise _invalid(f"filterGroups must be a list of at most {_MAX_FILTER_GROUPS} groups")
        groups = []
        for group in raw:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise _invalid("each filter group needs a filters list")
            parsed = []
            for f in filters:
                if (
                    not isinstance(f, dict)
                    or not isinstance(f.get("propertyName"), str)
                    or f.get("operator") not in _OPERATORS
                ):
                    raise _invalid(f"invalid filter: {f!r}")
                values = f.get("values") or []
                parsed.append(
                    _Filter(
                        f["propertyName"],
                        f["operator"],
                        None if f.get("value") is None else str(f["value"]),
                        tuple(str(v) for v in values),
                        None if f.get("highValue") is None else str(f["highValue"]),
                    )
                )
            groups.append(parsed)
        return groups

    @staticmethod
    def _parse_sort(raw: Any) -> tuple[str | None, bool]:
        """Sorts come as the spec's strings ("prop", "-prop" descending) or as HubSpot's
        documented objects {propertyName, direction}. Only one sort is supported."""
        if not isinstance(raw, list) or len(raw) > 1:
            raise _invalid("sorts: the simulator supports at most one sort")
        if not raw:
            return None, False
        sort = raw[0]
        if isinstance(sort, str):
            return sort.lstrip("-"), sort.startswith("-")
        if isinstance(sort, dict) and isinstance(sort.get("propertyName"), str):
            direction = sort.get("direction", "ASCENDING")
            if direction not in ("ASCENDING", "DESCENDING"):
                raise _invalid("direction must be ASCENDING or DESCENDING")
            return sort["propertyName"], direction == "DESCENDING"
        raise _invalid(f"invalid sort: {sort!r}")

    def _updated_range(self, filters: list[_Filter]) -> tuple[int, int]:
        """Index bounds in `_by_updated` for lastmodifieddate range filters (ANDed)."""
        lo, hi = 0, len(self._by_updated)
        for f in filters:
            low_ms = self._filter_ms(f.value)
            if f.op in ("GT", "GTE", "EQ", "BETWEEN"):
                edge = (low_ms, 1 << 62) if f.op == "GT" else (low_ms, -1)
                lo = max(lo, bisect.bisect_left(self._by_updated, edge))
            if f.op in ("LT", "LTE", "EQ", "BETWEEN"):
                top_ms = self._filter_ms(f.high) if f.op == "BETWEEN" else low_ms
                edge = (top_ms, -1) if f.op == "LT" else (top_ms, 1 << 62)
                hi = min(hi, bisect.bisect_left(self._by_updated, edge))
        return lo, max(lo, hi)

    @staticmethod
    def _filter_ms(value: str | None) -> int:
        try:
            return ms_from_text(value or "")
        except ValueError:
            raise _invalid(f"{value!r} is not a date (epoch ms or ISO 8601)") from None

    def _matching_ids(self, groups: list[list[_Filter]], query: str | None) -> list[int]:
        if groups:
            found: set[int] = set()
            for group in groups:
                found.update(
                    i
                    for i in self._candidates(group)
                    if all(self._matches(self._contacts[i], f) for f in group)
                )
            ids = list(found)
        else:
            ids = list(self._active_ids)
        if query:
            needle = query.lower()
            ids = [
                i
                for i in ids
                if any(
                    needle in self._contacts[i].props.get(p, "").lower() for p in _QUERY_PROPERTIES
                )
            ]
        return ids

    def _candidates(self, group: list[_Filter]) -> Iterable[int]:
        for f in group:
            if f.prop == "email" and f.op == "EQ":
                owner = self._email_owner(f.value)
                return [owner] if owner is not None else []
        ranges = [f for f in group if f.prop == "lastmodifieddate" and f.op in _RANGE_OPS]
        if ranges:
            lo, hi = self._updated_range(ranges)
            return [i for _, i in self._by_updated[lo:hi]]
        return self._active_ids

    def _matches(self, contact: _Contact, f: _Filter) -> bool:
        value = self._value(contact, f.prop)
        if f.op == "HAS_PROPERTY":
            return bool(value)
        if f.op == "NOT_HAS_PROPERTY":
            return not value
        if f.op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = (f.value or "").lower().strip("*")
            hit = bool(value) and token in (value or "").lower()
            return hit if f.op == "CONTAINS_TOKEN" else not hit
        if f.op in ("IN", "NOT_IN"):
            hit = value is not None and value.lower() in {v.lower() for v in f.values}
            return hit if f.op == "IN" else not hit
        if value is None:
            return f.op == "NEQ"
        have, want = self._comparable(f.prop, value), self._comparable(f.prop, f.value or "")
        if f.op == "BETWEEN":
            return want <= have <= self._comparable(f.prop, f.high or "")
        return _COMPARE[f.op](have, want)

    def _comparable(self, prop: str, value: str) -> Any:
        if prop in _DATE_PROPERTIES:
            return self._filter_ms(value)
        if prop == "hs_object_id" or value.lstrip("-").isdigit():
            return (0, int(value)) if value.lstrip("-").isdigit() else (1, value.lower())
        return (1, value.lower())

    def _sort_key(self, prop: str | None) -> Callable[[int], Any]:
        if prop is None:  # HubSpot's default order is unspecified; by id here
            return lambda i: i
        if prop in _DATE_PROPERTIES or prop == "hs_object_id":
            return lambda i: (
                self._comparable(prop, self._value(self._contacts[i], prop) or "0"),
                i,
            )

        def key(i: int) -> Any:
            value = self._value(self._contacts[i], prop)
            return (value is None, self._comparable(prop, value or ""), i)

        return key


_RANGE_OPS = frozenset({"GT", "GTE", "LT", "LTE", "EQ", "BETWEEN"})
_OPERATORS = frozenset(
    {
        "BETWEEN",
        "CONTAINS_TOKEN",
        "EQ",
        "GT",
        "GTE",
        "HAS_PROPERTY",
        "IN",
        "LT",
        "LTE",
        "NEQ",
        "NOT_CONTAINS_TOKEN",
        "NOT_HAS_PROPERTY",
        "NOT_IN",
    }
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "EQ": lambda a, b: a == b,
    "NEQ": lambda a, b: a != b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
}
