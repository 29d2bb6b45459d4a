"""Mailchimp webhook deliveries: authenticity, freshness, and member events as changes.

Two ways a delivery is authenticated, both in use (CONTRACTS.md section 3, "Webhooks"):

- **Signed** webhooks send `X-Mailchimp-Signature: t={unix seconds},v1={hex}`, where `v1` is
  `HMAC-SHA256(signing secret, "{t}.{raw body}")` over the raw, undecoded body; deliveries
  signed more than `max_age_s` ago (Mailchimp: 5 minutes) or as far ahead are refused.
- **Unsigned** webhooks (created before signing existed, or not opted in) carry nothing but
  what the callback URL holds; Mailchimp's own advice is a secret in that URL. The delivery's
  URL must carry `secret=<the secret>` in its query; it is compared in constant time.

The body is `application/x-www-form-urlencoded` with bracketed keys (`data[email]`,
`data[merges][FNAME]`), read with a bound on its size and number of pairs. Events carry the
address, not the member's id (`data[id]` is another identifier), so each becomes a `Change`
naming the subscriber hash of the address; the engine reads the member. `upemail` is the old
address gone and the new one changed; `unsubscribe` with `action=delete` is an archive.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import httpx

from customer_sync.sdk import Change, WebhookRefused

__all__ = ["SIGNATURE_HEADER", "changes_of", "signature_problem", "subscriber_hash", "url_secret_problem"]

SIGNATURE_HEADER = "x-mailchimp-signature"
URL_SECRET_PARAM = "secret"
MAX_BODY_BYTES = 64 * 1024
MAX_PAIRS = 200
_EVENTS = frozenset({"subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign"})


def subscriber_hash(email: str) -> str:
    """The member id: MD5 of the lower-cased address (CONTRACTS.md, "Member identity")."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def signature_problem(headers: Mapping[str, str], body: bytes, *, secret: str, now: datetime,
                      max_age_s: float) -> str | None:
    """Why a signed delivery is refused, or None when it is authentic and fresh."""
    lowered = {k.lower(): v for k, v in headers.items()}
    header = lowered.get(SIGNATURE_HEADER)
    if not header:
        return "missing_signature"
    parts = dict(p.strip().partition("=")[::2] for p in header.split(",") if "=" in p)
    timestamp, given = parts.get("t", ""), parts.get("v1", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not given:
        return "bad_signature"
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
        return "bad_signature"
    age_s = now.timestamp() - int(timestamp)
    if age_s > max_age_s:
        return "stale"
    if -age_s > max_age_s:
        return "from_the_future"
    return None


def url_secret_problem(url: str, *, secret: str) -> str | None:
    """Why an unsigned delivery is refused, or None when its URL carries the secret."""
    try:
        given = httpx.URL(url).params.get(URL_SECRET_PARAM)
    except (httpx.InvalidURL, TypeError):
        return "bad_url"
    if not given:
        return "missing_url_secret"
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return "bad_url_secret"
    return None


def changes_of(body: bytes, *, list_id: str) -> list[Change]:
    """The changes a verified delivery reports: members of this audience only.

    Raises:
        WebhookRefused: the body is not a bounded form with a known event type, or a member
            event names no address; the message names what is wrong, never a value.
    """
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRefused("the body is larger than a member event")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=MAX_PAIRS)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRefused("the body is not a form-encoded event") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    kind = form.get("type")
    if kind not in _EVENTS:
        raise WebhookRefused("the event type is missing or unknown")
    occurred_at = _fired_at(form.get("fired_at"))
    if kind == "campaign":
        return []  # a campaign was sent: no member changed
    if form.get("data[list_id]", list_id) != list_id:
        return []  # another audience's webhook pointed here
    if kind == "upemail":
        old, new = form.get("data[old_email]"), form.get("data[new_email]")
        if not old or not new:
            raise WebhookRefused("an upemail event lacks an address")
        return [Change(app_record_id=subscriber_hash(old), kind="delete", occurred_at=occurred_at),
                Change(app_record_id=subscriber_hash(new), occurred_at=occurred_at)]
    email = form.get("data[email]")
    if not email or "@" not in email:
        raise WebhookRefused("a member event names no address")
    deleted = kind == "unsubscribe" and form.get("data[action]") == "delete"
    return [Change(app_record_id=subscriber_hash(email), kind="delete" if deleted else "upsert",
                   occurred_at=occurred_at)]


def _fired_at(value: str | None) -> datetime | None:
    """`fired_at` ("2009-03-26 21:35:57"); its zone is not documented and read as UTC."""
    if not value:
        return None
    try:
        at = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return at.replace(tzinfo=UTC)
