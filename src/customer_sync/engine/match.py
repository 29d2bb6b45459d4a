"""Match: which canonical customer a record that is not linked yet belongs to.

The rules (docs/matching.md has them with examples) give the same customers, links and review
items whatever the order the records arrive in and however they are split into pages:

1. **Emails.** A record with an email belongs to the customer holding one of its emails; one
   email shared means one customer, transitively: a record holding the emails of two customers
   joins them. A record whose emails nobody holds is a new customer, even when its phone or
   handle is someone else's: two customers with different emails are never merged because they
   share a phone or a handle (families share a landline, agencies a social account).
2. **Email-less records** attach to the one customer whose *email records* hold the record's
   phone (or WhatsApp number), else its handle. When that points to several customers, or the
   phone points to one and the handle to another, the record is parked for review: not linked,
   nothing created for it.
3. **Email-less records that attach to nobody** form customers of their own, grouped by shared
   phone or handle: a double import inside one app joins one customer.
4. **Names never match.**

Rule 2 looks only at what records *with an email* hold, so an attachment never leans on another
email-less record. Because records arrive one at a time, a record with an email that brings a
phone or handle re-decides the email-less records that hold it (`settle_email_less`): a group
of them that now attaches to that customer joins it, and one whose attachment has become
ambiguous is parked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from customer_sync.canonical import identity_values
from customer_sync.store.uow import duplicate_base

if TYPE_CHECKING:
    from customer_sync.store.uow import UnitOfWork

__all__ = ["Keys", "Match", "email_keys", "is_email_less", "match_record", "record_keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """What a record can be matched by: its emails, phones (WhatsApp included) and handles
    (`network:handle`)."""

    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    handles: frozenset[str] = frozenset()

    def pairs(self) -> list[tuple[str, str]]:
        return ([("email", v) for v in sorted(self.emails)] + [("phone", v) for v in sorted(self.phones)]
                + [("handle", v) for v in sorted(self.handles)])


def record_keys(values: Mapping[str, Any]) -> Keys:
    """The identities of one record's (or customer's) canonical values."""
    by_kind: dict[str, set[str]] = {"email": set(), "phone": set(), "handle": set()}
    for kind, value in identity_values(values):
        by_kind[kind].add(value)
    return Keys(frozenset(by_kind["email"]), frozenset(by_kind["phone"]), frozenset(by_kind["handle"]))


def is_email_less(values: Mapping[str, Any] | None) -> bool:
    return not values or not (values.get("email") or values.get("other_emails"))


@dataclass(slots=True)
class Match:
    """Where a record goes: `customer_id` None is a new customer; `parked` holds the candidates
    of a record parked for review; `join` the further customers one email (or, for email-less
    customers, one phone or handle) shows to be the same as `customer_id`."""

    customer_id: str | None
    how: str
    parked: set[str] = field(default_factory=set)
    join: list[str] = field(default_factory=list)


def _live(uow: UnitOfWork, kind: str, values: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for value in values:
        found |= uow.candidates(kind, value)
    return found


def _oldest(uow: UnitOfWork, cids: Iterable[str]) -> list[str]:
    """Customers oldest first (customer ids are time-ordered)."""
    return sorted(cids)


def email_keys(uow: UnitOfWork, customer_id: str) -> Keys:
    """The phones and handles the customer's records *with an email* hold (rule 2 looks at
    these only), read from the bases of its active links."""
    phones: set[str] = set()
    handles: set[str] = set()
    links = [*uow.links_by_customer.get(customer_id, {}).values(),
             *uow.duplicates_by_customer.get(customer_id, {}).values()]
    for link in links:
        if link["state"] == "active":
            key = link["app"]
        elif link["state"] == "duplicate":
            key = duplicate_base(link["app"], link["app_record_id"])
        else:
            continue
        snap = uow.snapshot(customer_id, key)
        if snap is None or is_email_less(snap["values"]):
            continue
        keys = record_keys(snap["values"])
        phones |= keys.phones
        handles |= keys.handles
    return Keys(frozenset(), frozenset(phones), frozenset(handles))


def _is_email_customer(uow: UnitOfWork, customer_id: str) -> bool:
    row = uow.customer(customer_id)
    return row is not None and not is_email_less(row["values"])


def match_record(uow: UnitOfWork, keys: Keys, *, exclude: Iterable[str] = ()) -> Match:
    """Decide where a record with these keys belongs (rules 1-3); `exclude`: customers not to
    consider (the one the record is being re-decided away from)."""
    skip = set(exclude)
    if keys.emails:
        found = _live(uow, "email", keys.emails) - skip
        if not found:
            return Match(None, "new")
        first, *rest = _oldest(uow, found)
        return Match(first, "matched_by_email", join=rest)
    return _attach_email_less(uow, keys, skip)


def _attach_email_less(uow: UnitOfWork, keys: Keys, skip: set[str]) -> Match:
    by_phone = _live(uow, "phone", keys.phones) - skip
    by_handle = _live(uow, "handle", keys.handles) - skip
    # Rule 2: only what the customers' records with an email hold counts.
    e_phone = {c for c in by_phone if _is_email_customer(uow, c) and keys.phones & email_keys(uow, c).phones}
    e_handle = {c for c in by_handle if _is_email_customer(uow, c) and keys.handles & email_keys(uow, c).handles}
    if len(e_phone) > 1:
        return Match(None, "ambiguous_phone", parked=e_phone)
    if e_phone and e_handle and e_handle != e_phone:
        return Match(None, "phone_and_handle_disagree", parked=e_phone | e_handle)
    if e_phone:
        return Match(next(iter(e_phone)), "matched_by_phone")
    if len(e_handle) > 1:
        return Match(None, "ambiguous_handle", parked=e_handle)
    if e_handle:
        return Match(next(iter(e_handle)), "matched_by_handle")
    # Rule 3: a customer of email-less records only, grouped by a shared phone or handle.
    groups = {c for c in by_phone | by_handle if not _is_email_customer(uow, c)}
    if not groups:
        return Match(None, "new")
    first, *rest = _oldest(uow, groups)
    return Match(first, "grouped_by_phone" if by_phone & groups else "grouped_by_handle", join=rest)
