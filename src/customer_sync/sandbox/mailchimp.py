"""A stateful simulator of the Mailchimp Marketing API's audience members, for tests, benchmarks
and the sandbox.

It holds the members of one audience (list) in memory and answers the calls a Mailchimp
connector makes, with the paths, offset paging, RFC 9457 problem bodies, the limit of 10
simultaneous connections, batch operations with a gzipped results archive, and signed
form-encoded webhooks described in `shared/specs/CONTRACTS.md` (section 3) and the OpenAPI file
next to it (`mailchimp/marketing-3.0.55.openapi-generator-normalized.yaml`). Mount `.app` on an
`httpx.ASGITransport` for in-process tests, or run it on loopback with `_common.serve(sim.app)`.

Consent is enforced as Mailchimp enforces it: a member who is `unsubscribed` or `cleaned` is
not subscribed again through the API (400 "Member In Compliance State"; a cleaned member is not
set to `pending` either), and a permanently deleted address is never re-imported (400
"Forgotten Email Not Subscribed"). Both bodies are as Mailchimp sends them in public bug
reports (ibericode/mailchimp-for-wordpress issues 666 and 798); CONTRACTS.md does not list
them. Only the member's own opt-in (`opt_in`, the signup form) brings them back.

Where the vendor documents nothing, the simulator picks the behaviour that is hardest on a
connector and says so in a comment marked UNVERIFIED: `since_last_changed` is exclusive and
`last_changed` has whole seconds (many members share one), members with equal `last_changed`
come back in no promised order, batch operations run in reverse order, and a 429 for too many
connections carries no `Retry-After`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import io
import json
import re
import tarfile
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from customer_sync.sandbox._common import Clock, utcnow

__all__ = [
    "MEMBER_STATUSES",
    "MailchimpSimulator",
    "form_body",
    "parse_form",
    "sign",
    "subscriber_hash",
]

Json = dict[str, Any]

MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
_PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
_MAX_COUNT = 1000  # `count`: "Maximum value is 1000" (OAS)
_MAX_PENDING_BATCHES = 500  # CONTRACTS.md: at most 500 batch requests pending
_RESULTS_VALID_S = 600  # CONTRACTS.md: the results URL is valid 10 minutes
_RESULTS_PER_FILE = 50  # the archive holds several JSON files; how many per file is UNVERIFIED
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BIRTHDAY_RE = re.compile(r"^(0[1-9]|1[0-2])/(0[1-9]|[12]\d|3[01])$")
_ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")
_ADDRESS_KEYS = ("addr1", "addr2", "city", "state", "zip", "country")
# The merge fields a new audience has (Mailchimp's defaults); tag -> type.
DEFAULT_MERGE_FIELDS = {
    "FNAME": "text", "LNAME": "text", "ADDRESS": "address", "PHONE": "phone", "BIRTHDAY": "birthday",
}


def subscriber_hash(email: str) -> str:
    """The member id: MD5 of the lower-cased address (CONTRACTS.md, "Member identity")."""
    return hashlib.md5(email.lower().encode()).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Mailchimp's webhook signature header value: `t={ts},v1={hex HMAC-SHA256(secret,
    "{ts}.{raw body}")}` (CONTRACTS.md section 3, "Webhooks")."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def form_body(pairs: list[tuple[str, str]]) -> bytes:
    """A form-encoded webhook body (`data[merges][FNAME]=...`), as Mailchimp posts it. The
    bracket key style is UNVERIFIED (CONTRACTS.md); it is the one PHP's parser reads, which the
    documented parsed form implies."""
    return urlencode(pairs).encode()


def _iso(ts: int) -> str:
    # The OAS's and CONTRACTS.md's form: 2015-10-21T15:41:36+00:00
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _parse_time(value: str) -> int | None:
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp())


class Problem(Exception):
    """An API error: rendered as an RFC 9457 problem document (CONTRACTS.md section 3)."""

    def __init__(self, status: int, title: str, detail: str, *,
                 errors: list[Json] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.errors = status, title, detail, errors

    def body(self) -> Json:
        out: Json = {"type": _PROBLEM_TYPE, "title": self.title, "status": self.status,
                     "detail": self.detail, "instance": str(uuid.uuid4())}
        if self.errors:
            out["errors"] = self.errors
        return out


def _not_found() -> Problem:
    return Problem(404, "Resource Not Found", "The requested resource could not be found.")


def _invalid(detail: str, errors: list[Json] | None = None) -> Problem:
    return Problem(400, "Invalid Resource", detail, errors=errors)


@dataclass(slots=True)
class _Member:
    hash: str
    email: str
    status: str
    seq: int
    created_at: int
    last_changed: int
    timestamp_opt: int | None
    unique_email_id: str
    merge_fields: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)  # name -> tag id
    language: str = ""
    vip: bool = False
    email_type: str = "html"
    archived: bool = False


@dataclass(slots=True)
class _Batch:
    id: str
    operations: list[Json]
    submitted_at: int
    polls: int = 0
    status: str = "pending"
    results: list[Json] | None = None
    errored: int = 0
    completed_at: int | None = None


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after_s: float | None


class MailchimpSimulator:
    """One Mailchimp account with one audience: members, batches, limits and webhooks.

    Args:
        clock: returns the current aware UTC datetime; inject one so tests never sleep.
        list_id: the audience's id.
        api_key: the key accepted as the Basic auth password (any user name); its `-us21`
            suffix names the data center, as real keys do.
        oauth_token: a token accepted as `Bearer`.
        max_connections: simultaneous requests served before the next is answered 429 (10 per
            user, CONTRACTS.md); None for no limit.
        latency_s: how long each request is held before it is answered; with it, requests
            overlap, which is how a test sees the connection limit.
        batch_polls: how many `GET /batches/{id}` a batch takes to finish (earlier ones answer
            `pending`, then `started`); `complete_batches()` finishes them at once.
        webhook_signing_secret: the audience webhook's signing secret; None for an unsigned
            webhook (created before signing existed, or not opted in).
        webhook_sources_api: whether changes made through the API fire webhooks too (the
            webhook's `sources.api`; off by default, as Mailchimp suggests to avoid loops).
        results_base: where batch result archives are served; by default an S3-style host, as
            Mailchimp's are (served by this same app).
        merge_fields: the audience's merge fields, tag -> type (text, phone, address, birthday,
            number); Mailchimp's defaults for a new audience when None.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        list_id: str = "a6b5da1054",
        api_key: str = "sandbox0key0000000000000000000000-us21",
        oauth_token: str | None = "sandbox-oauth-token",
        max_connections: int | None = 10,
        latency_s: float = 0.0,
        batch_polls: int = 2,
        webhook_signing_secret: str | None = "sandbox-signing-secret",
        webhook_sources_api: bool = False,
        results_base: str = "https://mailchimp-api-batch.s3.amazonaws.com",
        merge_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.clock: Clock = clock or utcnow
        self.list_id = list_id
        self.api_key = api_key
        self.oauth_token = oauth_token
        self.dc = api_key.rpartition("-")[2] or "us1"
        self.base_url = f"https://{self.dc}.api.mailchimp.com/3.0"
        self.max_connections = max_connections
        self.latency_s = latency_s
        self.batch_polls = max(1, batch_polls)
        self.webhook_signing_secret = webhook_signing_secret
        self.webhook_sources_api = webhook_sources_api
        self.results_base = results_base.rstrip("/")
        self.merge_field_types = dict(merge_fields or DEFAULT_MERGE_FIELDS)

        self.request_count = 0
        self.count_by_route: Counter[str] = Counter()
        self.statuses: list[int] = []
        self.peak_connections = 0
        self._in_flight = 0
        self._members: dict[str, _Member] = {}
        self._forgotten: set[str] = set()  # hashes of permanently deleted addresses
        self._batches: dict[str, _Batch] = {}
        self._tag_ids: dict[str, int] = {}
        self._webhooks: deque[list[tuple[str, str]]] = deque()
        self._failures: deque[_Failure] = deque()
        self._seq = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._dispatch,
                                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    # ------------------------------------------------------------------ seeding and inspection

    def _now(self) -> int:
        return int(self.clock().timestamp())

    def add_member(self, email: str, *, status: str = "subscribed",
                   merge_fields: Mapping[str, Any] | None = None, tags: list[str] | None = None,
                   last_changed: datetime | None = None, language: str = "") -> str:
        """Add a member as a person would (signup form, import); returns its id (the hash)."""
        member = self._insert(email, status, merge_fields or {}, tags or [], source="user")
        member.language = language
        if last_changed is not None:
            member.last_changed = int(last_changed.timestamp())
        return member.hash

    def edit_member(self, member_id: str, *, merge_fields: Mapping[str, Any] | None = None,
                    tags: list[str] | None = None, last_changed: datetime | None = None) -> None:
        """Change a member's merge fields or tags as a person would in Mailchimp's UI."""
        member = self._live(member_id)
        if merge_fields:
            member.merge_fields.update(self._checked_merge_fields(merge_fields))
        if tags is not None:
            member.tags = {t: self._tag_id(t) for t in tags}
        self._touch(member, at=None if last_changed is None else int(last_changed.timestamp()))
        self._emit_profile(member)

    def unsubscribe(self, member_id: str) -> None:
        """The member unsubscribes through the link in an email."""
        member = self._live(member_id)
        member.status = "unsubscribed"
        self._touch(member)
        self._emit(member, "unsubscribe", [("data[action]", "unsub"), ("data[reason]", "manual")])

    def clean(self, member_id: str) -> None:
        """The address bounced hard: Mailchimp cleans it."""
        member = self._live(member_id)
        member.status = "cleaned"
        self._touch(member)
        self._emit(member, "cleaned", [("data[reason]", "hard")])

    def opt_in(self, email: str) -> str:
        """The person subscribes through the audience's own signup form (their own opt-in):
        the one way back for an unsubscribed, cleaned or permanently deleted address."""
        key = subscriber_hash(email)
        self._forgotten.discard(key)
        member = self._members.get(key)
        if member is None:
            return self._insert(email, "subscribed", {}, [], source="user").hash
        member.archived = False
        member.status = "subscribed"
        member.timestamp_opt = self._now()
        self._touch(member)
        self._emit(member, "subscribe", [])
        return key

    def change_email(self, member_id: str, new_email: str) -> str:
        """A person changes the member's address in the UI; the member's id changes with it."""
        member = self._live(member_id)
        old_email, new_key = member.email, subscriber_hash(new_email)
        if new_key in self._members:
            raise ValueError("that address is already a member")
        del self._members[member.hash]
        member.hash, member.email = new_key, new_email
        member.merge_fields["EMAIL"] = new_email
        self._members[new_key] = member
        self._touch(member)
        self._webhook("upemail", [("data[list_id]", self.list_id), ("data[new_id]", member.unique_email_id),
                                  ("data[new_email]", new_email), ("data[old_email]", old_email)])
        return new_key

    def archive(self, member_id: str) -> None:
        """A person archives the member in the UI."""
        self._archive(self._live(member_id), source="admin")

    def get_member(self, member_id: str) -> Json | None:
        """The member as `GET .../members/{hash}` renders it (archived ones too), or None."""
        member = self._members.get(member_id)
        return None if member is None else self._render(member)

    def is_forgotten(self, email: str) -> bool:
        return subscriber_hash(email) in self._forgotten

    @property
    def member_count(self) -> int:
        """Members that are not archived."""
        return sum(not m.archived for m in self._members.values())

    def fail_next(self, n: int, status: int, *, retry_after_s: float | None = None) -> None:
        """Answer the next `n` API requests with `status` instead of handling them."""
        self._failures.extend(_Failure(status, retry_after_s) for _ in range(n))

    # ------------------------------------------------------------------ webhooks

    @property
    def pending_webhooks(self) -> list[list[tuple[str, str]]]:
        """Events recorded but not delivered, oldest first, each as its form pairs."""
        return list(self._webhooks)

    def take_webhooks(self) -> list[list[tuple[str, str]]]:
        out = list(self._webhooks)
        self._webhooks.clear()
        return out

    def webhook_delivery(self, pairs: list[tuple[str, str]], *, signed_at: datetime | None = None
                         ) -> tuple[dict[str, str], bytes]:
        """Headers and raw body of the POST that delivers one event. Signed only when the
        audience's webhook has a signing secret."""
        body = form_body(pairs)
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "User-Agent": "MailChimp"}
        if self.webhook_signing_secret is not None:
            ts = int((signed_at or self.clock()).timestamp())
            headers["X-Mailchimp-Signature"] = sign(self.webhook_signing_secret, ts, body)
        return headers, body

    def _webhook(self, kind: str, data: list[tuple[str, str]]) -> None:
        fired = self.clock().strftime("%Y-%m-%d %H:%M:%S")
        self._webhooks.append([("type", kind), ("fired_at", fired), *data])

    def _emit(self, member: _Member, kind: str, extra: list[tuple[str, str]], *,
              source: str = "user") -> None:
        if source == "api" and not self.webhook_sources_api:
            return
        data = [("data[id]", member.unique_email_id), ("data[list_id]", self.list_id),
                ("data[email]", member.email), ("data[email_type]", member.email_type)]
        if kind in ("subscribe", "profile", "unsubscribe"):
            data.append(("data[merges][EMAIL]", member.email))
            for tag, value in member.merge_fields.items():
                if isinstance(value, str) and tag != "EMAIL":
                    data.append((f"data[merges][{tag}]", value))
        self._webhook(kind, data + extra)

    def _emit_profile(self, member: _Member, *, source: str = "user") -> None:
        self._emit(member, "profile", [], source=source)

    # ------------------------------------------------------------------ batches

    def complete_batches(self) -> list[str]:
        """Run every unfinished batch now (Mailchimp works its queue whether or not anyone
        polls); returns their ids."""
        done = [b for b in self._batches.values() if b.status != "finished"]
        for batch in done:
            self._run_batch(batch)
        return [b.id for b in done]

    def _run_batch(self, batch: _Batch) -> None:
        results = []
        # "operations may run out of order" (CONTRACTS.md): the hardest order is reversed.
        for op in reversed(batch.operations):
            method = str(op.get("method", "")).upper()
            path = str(op.get("path", ""))
            params = op.get("params") or {}
            body_text = op.get("body")
            try:
                body = json.loads(body_text) if body_text else None
                status, answer = self._call(method, path, {k: str(v) for k, v in params.items()},
                                            body, source="api")
            except Problem as problem:
                status, answer = problem.status, problem.body()
            except ValueError:
                problem = _invalid("The operation body is not valid JSON.")
                status, answer = problem.status, problem.body()
            # `response` is the answer's JSON as a *string* (jethro-pmm issue 656 shows one).
            results.append({"status_code": status, "operation_id": op.get("operation_id"),
                            "response": json.dumps(answer) if answer is not None else ""})
        batch.results = results
        batch.errored = sum(r["status_code"] >= 400 for r in results)
        batch.status = "finished"
        batch.completed_at = self._now()

    def _render_batch(self, batch: _Batch) -> Json:
        finished = batch.status == "finished"
        out: Json = {
            "id": batch.id, "status": batch.status,
            "total_operations": len(batch.operations),
            "finished_operations": len(batch.operations) if finished else 0,
            "errored_operations": batch.errored if finished else 0,
            "submitted_at": _iso(batch.submitted_at),
            "_links": [{"rel": "self", "href": f"{self.base_url}/batches/{batch.id}",
                        "method": "GET"}],
        }
        if finished and batch.completed_at is not None:
            out["completed_at"] = _iso(batch.completed_at)
            out["response_body_url"] = (
                f"{self.results_base}/batch-results/{batch.id}-response.tar.gz")
        return out

    def _archive_bytes(self, batch: _Batch) -> bytes:
        """The gzipped tar of JSON files, each an array of results (CONTRACTS.md)."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            results = batch.results or []
            for n, start in enumerate(range(0, max(1, len(results)), _RESULTS_PER_FILE)):
                data = json.dumps(results[start:start + _RESULTS_PER_FILE]).encode()
                info = tarfile.TarInfo(f"{batch.id}/{n}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue())

    # ------------------------------------------------------------------ the API, as calls

    def _call(self, method: str, path: str, query: Mapping[str, str], body: Any, *,
              source: str) -> tuple[int, Any]:
        """Handle one API call (from HTTP or from a batch): (status, JSON answer or None)."""
        parts = [p for p in path.split("/") if p]
        if parts == ["ping"] and method == "GET":
            return 200, {"health_status": "Everything's Chimpy!"}
        if parts == ["search-members"] and method == "GET":
            return 200, self._search(query)
        if parts[:1] == ["batches"]:
            return self._batches_call(method, parts[1:], body)
        if parts[2:] == ["merge-fields"] and parts[1] == self.list_id and method == "GET":
            return 200, self._merge_fields(query)
        if len(parts) < 3 or parts[0] != "lists" or parts[2] != "members":
            raise _not_found()
        if parts[1] != self.list_id:
            raise _not_found()
        rest = parts[3:]
        if not rest:
            if method == "GET":
                return 200, self._list(query)
            if method == "POST":
                return 200, self._render(self._create(body, query, source=source))
            raise Problem(405, "Method Not Allowed", "The requested method and resource are "
                          "not compatible. See the Allow header for this resource's available "
                          "methods.")
        key = self._resolve(rest[0])
        if len(rest) == 1:
            if method == "GET":
                member = self._members.get(key)
                if member is None:
                    raise _not_found()
                return 200, self._render(member)
            if method == "PUT":
                return 200, self._render(self._upsert(key, body, source=source))
            if method == "PATCH":
                return 200, self._render(self._patch(key, body, source=source))
            if method == "DELETE":
                member = self._members.get(key)
                if member is None or member.archived:
                    raise _not_found()
                self._archive(member, source=source)
                return 204, None
        if rest[1:] == ["tags"] and method == "POST":
            self._set_tags(key, body, source=source)
            return 204, None
        if rest[1:] == ["actions", "delete-permanent"] and method == "POST":
            member = self._members.pop(key, None)
            if member is None:
                raise _not_found()
            self._forgotten.add(key)
            return 204, None
        raise _not_found()

    def _resolve(self, ref: str) -> str:
        """The path's member reference: a hash, or (also accepted, per the OAS) an address."""
        return subscriber_hash(ref) if "@" in ref else ref.lower()

    def _merge_fields(self, query: Mapping[str, str]) -> Json:
        """getListsIdMergeFields: the audience's merge fields (but EMAIL, which Mailchimp does
        not list), paged by `count` (default 10) and `offset` like the members."""
        count = self._int(query, "count", 10)
        offset = self._int(query, "offset", 0)
        if count > _MAX_COUNT or count < 0 or offset < 0:
            raise _invalid(f"count must be between 0 and {_MAX_COUNT}; offset at least 0.")
        tags = [t for t in self.merge_field_types if t != "EMAIL"]
        items = [
            {"merge_id": i + 1, "tag": tag, "name": tag.title(), "type": kind, "required": False,
             "default_value": "", "public": False, "display_order": i + 2, "options": {},
             "help_text": "", "list_id": self.list_id, "_links": []}
            for i, (tag, kind) in enumerate((t, self.merge_field_types[t]) for t in tags)
        ]
        return {"merge_fields": items[offset:offset + count], "list_id": self.list_id,
                "total_items": len(items), "_links": []}

    def _list(self, query: Mapping[str, str]) -> Json:
        count = self._int(query, "count", 10)
        offset = self._int(query, "offset", 0)
        if count > _MAX_COUNT or count < 0 or offset < 0:
            raise _invalid(f"count must be between 0 and {_MAX_COUNT}; offset at least 0.")
        status = query.get("status")
        if status is not None and status not in (*MEMBER_STATUSES, "archived"):
            raise _invalid("The status filter is not one of the documented values.")
        since = self._time(query, "since_last_changed")
        before = self._time(query, "before_last_changed")
        members = [m for m in self._members.values()
                   if (m.archived if status == "archived" else not m.archived)
                   and (status in (None, "archived") or m.status == status)
                   # "changed after"/"before" the time: exclusive (UNVERIFIED)
                   and (since is None or m.last_changed > since)
                   and (before is None or m.last_changed < before)]
        sort_field = query.get("sort_field")
        if sort_field is not None:
            if sort_field not in ("timestamp_opt", "timestamp_signup", "last_changed"):
                raise _invalid("sort_field is not one of the documented values.")
            attr = {"timestamp_opt": "timestamp_opt", "timestamp_signup": "created_at",
                    "last_changed": "last_changed"}[sort_field]
            # Equal times come in no promised order (UNVERIFIED): newest write first among them.
            members.sort(key=lambda m: (getattr(m, attr) or 0, -m.seq),
                         reverse=query.get("sort_dir", "ASC").upper() == "DESC")
        page = members[offset:offset + count]
        body = {"members": [self._render(m) for m in page], "list_id": self.list_id,
                "total_items": len(members),
                "_links": [{"rel": "self", "href": f"{self.base_url}/lists/{self.list_id}/members",
                            "method": "GET"}]}
        return _only_fields(body, query.get("fields"))

    def _search(self, query: Mapping[str, str]) -> Json:
        text = (query.get("query") or "").strip().lower()
        if not text:
            raise _invalid("The query parameter is required.")
        list_id = query.get("list_id")
        if list_id is not None and list_id != self.list_id:
            raise _not_found()
        exact = [m for m in self._members.values() if not m.archived and m.email.lower() == text]
        full = [m for m in self._members.values() if not m.archived and m not in exact and any(
            text in str(m.merge_fields.get(t, "")).lower() for t in ("FNAME", "LNAME"))]
        return {"exact_matches": {"members": [self._render(m) for m in exact],
                                  "total_items": len(exact)},
                "full_search": {"members": [self._render(m) for m in full[:10]],
                                "total_items": len(full)}}

    def _batches_call(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest and method == "POST":
            operations = body.get("operations") if isinstance(body, dict) else None
            if not isinstance(operations, list) or not all(
                    isinstance(o, dict) and o.get("method") and o.get("path") for o in operations):
                raise _invalid("Each operation needs a method and a path.")
            pending = sum(b.status != "finished" for b in self._batches.values())
            if pending >= _MAX_PENDING_BATCHES:
                raise Problem(429, "Too Many Requests", "You have more than 500 pending batch "
                              "requests. Please wait for them to finish.")
            batch = _Batch(id=uuid.uuid4().hex[:10], operations=operations,
                           submitted_at=self._now())
            self._batches[batch.id] = batch
            return 200, self._render_batch(batch)
        if len(rest) == 1 and method == "GET":
            batch = self._batches.get(rest[0])
            if batch is None:
                raise _not_found()
            if batch.status != "finished":
                batch.polls += 1
                if batch.polls >= self.batch_polls:
                    self._run_batch(batch)
                else:
                    batch.status = "started"
            return 200, self._render_batch(batch)
        raise _not_found()

    # ------------------------------------------------------------------ writes

    def _create(self, body: Any, query: Mapping[str, str], *, source: str) -> _Member:
        body = _object(body)
        email = self._email(body.get("email_address"))
        status = body.get("status")
        if status not in MEMBER_STATUSES:
            raise _invalid("The resource submitted could not be validated.",
                           [{"field": "status", "message": "Data did not match any of the "
                             "schemas described in anyOf."}])
        key = subscriber_hash(email)
        self._refuse_forgotten(key, email)
        if key in self._members and not self._members[key].archived:
            raise Problem(400, "Member Exists", f"{email} is already a list member. Use PUT to "
                          "insert or update list members.")
        member = self._insert(email, status, self._checked_merge_fields(
            body.get("merge_fields") or {}), list(body.get("tags") or []), source=source)
        self._apply_profile(member, body)
        return member

    def _upsert(self, key: str, body: Any, *, source: str) -> _Member:
        body = _object(body)
        email = self._email(body.get("email_address"))
        if subscriber_hash(email) != key:
            raise _invalid("The email address does not match the subscriber hash.")
        member = self._members.get(key)
        if member is None or member.archived:
            # "status_if_new: required only if the email address is not already present"
            status = body.get("status") or body.get("status_if_new")
            if status not in MEMBER_STATUSES:
                raise _invalid("The resource submitted could not be validated.",
                               [{"field": "status_if_new",
                                 "message": "Required when the address is new."}])
            self._refuse_forgotten(key, email)
            if member is not None:
                self._check_consent(member, status)  # archived members keep their consent
            merges = self._checked_merge_fields(body.get("merge_fields") or {})
            if member is None:
                member = self._insert(email, status, merges, [], source=source)
            else:  # an archived member comes back (UNVERIFIED: with the status sent)
                member.archived, member.status = False, status
                member.merge_fields.update(merges)
                self._touch(member)
                self._emit(member, "subscribe" if status == "subscribed" else "profile", [],
                           source=source)
            self._apply_profile(member, body)
            return member
        return self._change(member, body, source=source)

    def _patch(self, key: str, body: Any, *, source: str) -> _Member:
        member = self._members.get(key)
        if member is None or member.archived:
            raise _not_found()
        body = _object(body)
        if "email_address" in body and subscriber_hash(self._email(body["email_address"])) != key:
            raise _invalid("Changing a member's address through the API is not simulated; "
                           "archive it and add the new address.")
        return self._change(member, body, source=source)

    def _change(self, member: _Member, body: Json, *, source: str) -> _Member:
        status = body.get("status")
        if status is not None:
            if status not in MEMBER_STATUSES:
                raise _invalid("The resource submitted could not be validated.",
                               [{"field": "status", "message": "Not a member status."}])
            self._check_consent(member, status)
        merges = self._checked_merge_fields(body.get("merge_fields") or {})
        before = (member.status, dict(member.merge_fields), member.language, member.vip)
        if status is not None:
            if status == "subscribed" and member.status != "subscribed":
                member.timestamp_opt = self._now()
            member.status = status
        member.merge_fields.update(merges)
        self._apply_profile(member, body)
        if before != (member.status, dict(member.merge_fields), member.language, member.vip):
            self._touch(member)
            kind = {"unsubscribed": "unsubscribe", "cleaned": "cleaned",
                    "subscribed": "subscribe"}.get(status or "", "profile")
            if status is not None and status == before[0]:
                kind = "profile"
            self._emit(member, kind, [], source=source)
        return member

    def _check_consent(self, member: _Member, status: str) -> None:
        """The API never re-subscribes a member who left or bounced (their own opt-in does)."""
        if member.status == status:
            return
        refused = (member.status in ("unsubscribed", "cleaned") and status == "subscribed") or (
            member.status == "cleaned" and status == "pending")
        if refused:
            raise Problem(400, "Member In Compliance State", f"{member.email} is in a compliance "
                          "state due to unsubscribe, bounce, or compliance review and cannot be "
                          "subscribed.")

    def _refuse_forgotten(self, key: str, email: str) -> None:
        if key in self._forgotten:
            raise Problem(400, "Forgotten Email Not Subscribed", f"{email} was permanently "
                          "deleted and cannot be re-imported. The contact must re-subscribe to "
                          "get back on the list.")

    def _apply_profile(self, member: _Member, body: Json) -> None:
        if isinstance(body.get("language"), str):
            member.language = body["language"]
        if isinstance(body.get("vip"), bool):
            member.vip = body["vip"]
        if body.get("email_type") in ("html", "text"):
            member.email_type = body["email_type"]

    def _set_tags(self, key: str, body: Any, *, source: str) -> None:
        member = self._members.get(key)
        if member is None or member.archived:
            raise _not_found()
        tags = _object(body).get("tags")
        if not isinstance(tags, list) or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"].strip()
                and t.get("status") in ("active", "inactive") for t in tags):
            raise _invalid("The resource submitted could not be validated.",
                           [{"field": "tags", "message": "Each tag needs a name and a status "
                             "of active or inactive."}])
        before = dict(member.tags)
        for tag in tags:
            name = tag["name"].strip()
            if tag["status"] == "active":
                member.tags.setdefault(name, self._tag_id(name))
            else:
                member.tags.pop(name, None)
        if before != member.tags:
            self._touch(member)
            self._emit_profile(member, source=source)

    def _insert(self, email: str, status: str, merge_fields: Mapping[str, Any],
                tags: list[str], *, source: str) -> _Member:
        if status not in MEMBER_STATUSES:
            raise _invalid(f"Unknown status {status!r}.")
        now = self._now()
        self._seq += 1
        key = subscriber_hash(email)
        member = _Member(hash=key, email=email, status=status, seq=self._seq, created_at=now,
                         last_changed=now,
                         timestamp_opt=now if status == "subscribed" else None,
                         unique_email_id=hashlib.sha1(key.encode()).hexdigest()[:10],
                         merge_fields=dict(merge_fields),
                         tags={t: self._tag_id(t) for t in tags})
        self._members[key] = member
        self._emit(member, "subscribe" if status == "subscribed" else "profile", [], source=source)
        return member

    def _archive(self, member: _Member, *, source: str) -> None:
        member.archived = True
        self._touch(member)  # UNVERIFIED: whether archiving moves last_changed
        # An archive reported as an unsubscribe with action "delete" (UNVERIFIED: CONTRACTS.md
        # shows only action "unsub").
        self._emit(member, "unsubscribe", [("data[action]", "delete"), ("data[reason]", "manual")],
                   source=source)

    def _touch(self, member: _Member, *, at: int | None = None) -> None:
        self._seq += 1
        member.seq = self._seq
        member.last_changed = self._now() if at is None else at

    def _live(self, member_id: str) -> _Member:
        member = self._members.get(member_id)
        if member is None or member.archived:
            raise KeyError(member_id)
        return member

    def _tag_id(self, name: str) -> int:
        return self._tag_ids.setdefault(name, 10_000 + len(self._tag_ids))

    def _email(self, value: Any) -> str:
        if not isinstance(value, str) or not _EMAIL_RE.match(value.strip()):
            raise _invalid("Please provide a valid email address.",
                           [{"field": "email_address", "message": "This value should be a valid "
                             "email address."}])
        return value.strip()

    def _checked_merge_fields(self, merges: Any) -> dict[str, Any]:
        """Mailchimp stores what a person types (free text in names, Persian digits in a phone
        field in international format); it refuses unknown tags, an address without its
        required parts, and a birthday not in MM/DD."""
        if not isinstance(merges, dict):
            raise _invalid("merge_fields must be an object.")
        errors, out = [], {}
        for tag, value in merges.items():
            kind = self.merge_field_types.get(tag)
            message = None
            if kind is None:
                message = "This merge field does not exist in the audience."
            elif kind == "address":
                if value == "":
                    out[tag] = ""
                    continue
                if not isinstance(value, dict) or any(
                        not str(value.get(k) or "").strip() for k in _ADDRESS_REQUIRED):
                    message = "Please enter a complete address (addr1, city, state, zip)."
                else:
                    value = {k: str(value.get(k) or "") for k in _ADDRESS_KEYS}
            elif not isinstance(value, str | int | float) or isinstance(value, bool):
                message = "The value must be text."
            elif kind == "birthday" and value != "" and not _BIRTHDAY_RE.match(str(value)):
                message = "Please enter the date in the MM/DD format."
            if message is not None:
                errors.append({"field": tag, "message": message})
            else:
                out[tag] = value if isinstance(value, dict) else str(value)
        if errors:
            raise _invalid("Your merge fields were invalid.", errors)
        return out

    # ------------------------------------------------------------------ rendering

    def _render(self, member: _Member) -> Json:
        merges: Json = {}
        for tag, kind in self.merge_field_types.items():
            value = member.merge_fields.get(tag, "")
            merges[tag] = value if value or kind != "address" else ""
        tags = sorted(member.tags.items())
        return {
            "id": member.hash,
            "email_address": member.email,
            "unique_email_id": member.unique_email_id,
            "email_type": member.email_type,
            # An archived member reads as status "archived" (the list filter's value; the
            # member schema's enum omits it, a deviation the contract test names).
            "status": "archived" if member.archived else member.status,
            "merge_fields": merges,
            "interests": {},
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": "",
            "timestamp_signup": _iso(member.created_at),
            "ip_opt": "",
            "timestamp_opt": _iso(member.timestamp_opt) if member.timestamp_opt else "",
            "member_rating": 2,
            "last_changed": _iso(member.last_changed),
            "language": member.language,
            "vip": member.vip,
            "email_client": "",
            "location": {"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0,
                         "country_code": "", "timezone": ""},
            "tags_count": len(tags),
            "tags": [{"id": tag_id, "name": name} for name, tag_id in tags],
            "list_id": self.list_id,
            "_links": [{"rel": "self", "method": "GET",
                        "href": f"{self.base_url}/lists/{self.list_id}/members/{member.hash}"}],
        }

    # ------------------------------------------------------------------ HTTP plumbing

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/batch-results/") and request.method == "GET":
            return self._serve_results(path)
        self.request_count += 1
        if self.max_connections is not None and self._in_flight >= self.max_connections:
            # CONTRACTS.md: over 10 simultaneous connections -> 429. No Retry-After is
            # documented, so none is sent (UNVERIFIED).
            self.count_by_route[_route_name(request.method, path.removeprefix("/3.0"))] += 1
            self.statuses.append(429)
            return _problem(Problem(429, "Too Many Requests", "You have exceeded the limit of "
                                    f"{self.max_connections} simultaneous connections."))
        self._in_flight += 1
        self.peak_connections = max(self.peak_connections, self._in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            else:
                await asyncio.sleep(0)  # let concurrent requests overlap, as on a network
            response = await self._answer(request)
        finally:
            self._in_flight -= 1
        self.statuses.append(response.status_code)
        return response

    async def _answer(self, request: Request) -> Response:
        path = request.url.path.removeprefix("/3.0")
        route = _route_name(request.method, path)
        self.count_by_route[route] += 1
        if self._failures:
            failure = self._failures.popleft()
            return self._failure_response(failure)
        if not self._is_authorized(request.headers.get("authorization")):
            return _problem(Problem(401, "API Key Invalid", "Your API key may be invalid, or "
                                    "you've attempted to access the wrong datacenter."))
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _problem(Problem(400, "JSON Schema Validation Failed", "We encountered an "
                                    "unspecified JSON parsing error."))
        try:
            status, answer = self._call(request.method, path, dict(request.query_params), body,
                                        source="api")
        except Problem as problem:
            return _problem(problem)
        if answer is None:
            return Response(status_code=status)
        return JSONResponse(answer, status_code=status)

    def _failure_response(self, failure: _Failure) -> Response:
        titles = {401: "API Key Invalid", 429: "Too Many Requests", 400: "Invalid Resource",
                  500: "Internal Server Error", 503: "Service Unavailable"}
        response = _problem(Problem(failure.status, titles.get(failure.status, "Error"),
                                    "Injected failure."))
        if failure.retry_after_s is not None:
            response.headers["Retry-After"] = f"{failure.retry_after_s:g}"
        return response

    def _serve_results(self, path: str) -> Response:
        name = path.rsplit("/", 1)[-1]
        batch = self._batches.get(name.removesuffix("-response.tar.gz"))
        if batch is None or batch.status != "finished":
            return Response("<Error><Code>NoSuchKey</Code></Error>", status_code=404,
                            media_type="application/xml")
        if batch.completed_at is not None and self._now() - batch.completed_at > _RESULTS_VALID_S:
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired"
                            "</Message></Error>", status_code=403, media_type="application/xml")
        return Response(self._archive_bytes(batch), media_type="application/x-tar",
                        headers={"Content-Encoding": "identity"})

    def _is_authorized(self, header: str | None) -> bool:
        import base64

        if not header:
            return False
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.oauth_token is not None and hmac.compare_digest(
                credentials.strip(), self.oauth_token)
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(password, self.api_key)

    @staticmethod
    def _int(query: Mapping[str, str], name: str, default: int) -> int:
        try:
            return int(query.get(name, default))
        except ValueError:
            raise _invalid(f"{name} must be an integer.") from None

    @staticmethod
    def _time(query: Mapping[str, str], name: str) -> int | None:
        value = query.get(name)
        if value is None:
            return None
        parsed = _parse_time(value)
        if parsed is None:
            raise _invalid(f"{name} must be an ISO 8601 time, e.g. 2015-10-21T15:41:36+00:00.")
        return parsed


def _object(body: Any) -> Json:
    if not isinstance(body, dict):
        raise Problem(400, "JSON Schema Validation Failed", "The request body must be an object.")
    return body


def _problem(problem: Problem) -> Response:
    return Response(json.dumps(problem.body()), status_code=problem.status,
                    media_type="application/problem+json")


def _only_fields(body: Json, fields: str | None) -> Json:
    """The partial response `fields=members.id,total_items` asks for (dotted paths)."""
    if not fields:
        return body
    wanted = [f.strip().split(".") for f in fields.split(",") if f.strip()]

    def pick(value: Any, paths: list[list[str]]) -> Any:
        if not isinstance(value, dict):
            return value
        out: Json = {}
        for key in value:
            below = [p[1:] for p in paths if p[0] == key]
            if not below:
                continue
            if any(not p for p in below):
                out[key] = value[key]
            elif isinstance(value[key], list):
                out[key] = [pick(v, below) for v in value[key]]
            else:
                out[key] = pick(value[key], below)
        return out

    return pick(body, wanted)


_HASH = re.compile(r"[0-9a-f]{32}\Z")


def _route_name(method: str, path: str) -> str:
    """The route as the OAS names it, e.g. `GET /lists/{list_id}/members/{subscriber_hash}`."""
    parts = [p for p in path.split("/") if p]
    named = []
    for i, part in enumerate(parts):
        if i == 1 and parts[0] == "lists":
            named.append("{list_id}")
        elif i == 3 and parts[:1] == ["lists"] and len(parts) > 3:
            named.append("{subscriber_hash}")
        elif i == 1 and parts[0] == "batches":
            named.append("{batch_id}")
        else:
            named.append(part)
    return f"{method} /{'/'.join(named)}"


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The pairs of a form-encoded body (a helper for tests)."""
    return parse_qsl(body.decode(), keep_blank_values=True)
