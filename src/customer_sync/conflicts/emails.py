"""The customer's emails: a set (`email` ∪ `other_emails`) with one primary (`email`).

An address any app brings joins the set; an address leaves it only when an app that holds the
whole set (maps `other_emails`) removes it since its base. Which address is primary is a claim
an app makes with its `email` field, and claims are ranked, so that the outcome does not
depend on the order in which the apps' records arrive:

1. an app whose record *is* an address (`requires_email`, an email list) makes no claim: its
   address joins the set and it is never rewritten; the primary it gives a customer that has
   no other is the first of the set in sort order, until any other app claims one;
2. an app that holds the set (maps `other_emails`) outranks an app with one email field, which
   can only hold one of the customer's addresses, not say which is primary;
3. between two claims of one rank, the conflict rules decide (`rules.decide`): a conflict,
   recorded, but the losing address stays in the set, never dropped. A claim on an address the
   customer already has is ranked the same way, without a conflict: nothing is lost.

An app that changes its own address since its base (and the primary still is the one it had)
moves the primary, as any field changed in one app only does; the old address stays in the
set. An app that empties its email field states nothing: addresses are identities and are not
erased that way.

Pure functions over plain dicts: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_sync.conflicts.rules import Contender, Decision, decide

if TYPE_CHECKING:
    from customer_sync.config import ConflictsConfig, FieldRule

__all__ = ["OTHERS_FIELD", "PRIMARY_FIELD", "EmailMerge", "merge_emails"]

PRIMARY_FIELD = "email"
OTHERS_FIELD = "other_emails"

# How strong a claim on the primary is, by what the claiming app can know.
_RANK = {"address": 0, "single": 1, "set": 2}


@dataclass
class EmailMerge:
    """What one record changes in the customer's emails, and the conflict on the primary."""

    changes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    decision: Decision | None = None


def merge_emails(
    *,
    app: str,
    incoming: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    holder: Mapping[str, Any],
    at: datetime | None,
    at_others: datetime | None,
    rules: ConflictsConfig,
    is_address: bool,
) -> EmailMerge:
    """Merge the `email` and `other_emails` of one incoming record.

    Args:
        holder: the provenance entry of the current primary ({"app", "at", "rule", "kind"}).
        at / at_others: the modified times of the two fields in the app.
        rules: the conflict rules (of `email`, asked for only when two claims meet).
        is_address: the app's record is an address (`requires_email`).
    """
    out = EmailMerge()
    if base is not None and all(f in base and _same(incoming[f], base[f])
                                for f in (PRIMARY_FIELD, OTHERS_FIELD) if f in incoming):
        return out  # the app changed no address since its base: the common case, said nothing
    kind = "address" if is_address else ("set" if OTHERS_FIELD in incoming else "single")
    new_p = incoming.get(PRIMARY_FIELD) or None
    cur_p = current.get(PRIMARY_FIELD) or None
    if cur_p is None and not current.get(OTHERS_FIELD):
        return _first_emails(app, incoming, new_p, kind, at, at_others)
    cur_o = set(current.get(OTHERS_FIELD) or ())
    known = cur_o | ({cur_p} if cur_p else set())

    # The set: what the app added since its base joins; what an app holding the set removed
    # since its base leaves (but never the primary that stands, checked below).
    has_base = base is not None and any(f in base for f in (PRIMARY_FIELD, OTHERS_FIELD) if f in incoming)
    held = _addresses(incoming)
    had = _addresses(base) if has_base and base is not None else set()
    removed = had - held if kind == "set" and has_base else set()
    emails = (known | (held - had)) - removed

    # The primary.
    base_p = (base or {}).get(PRIMARY_FIELD) or None
    claimed = (PRIMARY_FIELD in incoming and new_p is not None and kind != "address"
               and not (has_base and PRIMARY_FIELD in (base or {}) and new_p == base_p))
    holder_kind = holder.get("kind") or ("single" if cur_p else None)
    if cur_p is None or holder_kind == "address":
        holder_kind = "address"
    primary, entry = cur_p, None
    stamp = _iso(at)
    if claimed:
        rule = rules.rule_for(PRIMARY_FIELD)
        claim = Contender(app, new_p, at)
        standing = Contender(holder.get("app"), cur_p, _parse(holder.get("at")))
        if holder_kind == "address":
            primary, entry = new_p, _entry(app, stamp, "first_value" if cur_p is None else "email_set", kind)
        elif new_p == cur_p:
            if _outranks(rule, claim, kind, standing, holder_kind):
                entry = _entry(app, stamp, "agreed", kind)
        elif has_base and PRIMARY_FIELD in (base or {}) and cur_p == base_p:
            primary, entry = new_p, _entry(app, stamp, "only_change", kind)
        elif _RANK[kind] != _RANK[holder_kind]:
            if _RANK[kind] > _RANK[holder_kind]:
                primary, entry = new_p, _entry(app, stamp, "email_set", kind)
            if new_p not in known:  # an address new to the customer: a disagreement to record
                won = primary == new_p
                out.decision = Decision(claim if won else standing, standing if won else claim, "email_set")
        else:
            decision = decide(rule, incoming=claim, current=standing)
            if decision.winner is claim and not decision.parked:
                primary, entry = new_p, _entry(app, stamp, decision.rule, kind)
            if new_p not in known:
                out.decision = decision
                if decision.winner is standing and not decision.parked:
                    # the primary that stands now stands by the rule that decided (explain)
                    entry = {**{k: v for k, v in holder.items() if k != "conflict_id"},
                             "app": holder.get("app") or standing.app, "rule": decision.rule}
    if holder_kind == "address" and entry is None:
        # No app has claimed a primary: the first address in sort order, whoever brought it.
        first = min(emails) if emails else None
        if first != cur_p:
            primary = first
            entry = _entry(app if first in held else holder.get("app"), None, "email_set", "address")

    if primary is not None:
        emails.add(primary)
    others = sorted(emails - {primary})
    if primary != cur_p:
        out.changes[PRIMARY_FIELD] = primary
    if entry is not None:
        out.provenance[PRIMARY_FIELD] = entry
    if others != sorted(cur_o):
        out.changes[OTHERS_FIELD] = others
        out.provenance[OTHERS_FIELD] = {"app": app, "at": _iso(at_others), "rule": "set_merge"}
    return out


def _first_emails(app: str, incoming: Mapping[str, Any], new_p: str | None, kind: str,
                  at: datetime | None, at_others: datetime | None) -> EmailMerge:
    """`merge_emails` for a customer with no address yet (every new customer of an initial
    pull): what the general path gives, which a test checks, without its set arithmetic."""
    out = EmailMerge()
    held = _addresses(incoming)
    if not held:
        return out
    if new_p is not None and kind != "address":
        primary, entry = new_p, _entry(app, _iso(at), "first_value", kind)
    else:
        primary, entry = min(held), _entry(app, None, "email_set", "address")
    out.changes[PRIMARY_FIELD] = primary
    out.provenance[PRIMARY_FIELD] = entry
    if len(held) > 1:
        out.changes[OTHERS_FIELD] = sorted(held - {primary})
        out.provenance[OTHERS_FIELD] = {"app": app, "at": _iso(at_others), "rule": "set_merge"}
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b or (not a and not b)


def _addresses(values: Mapping[str, Any]) -> set[str]:
    found = set(values.get(OTHERS_FIELD) or ())
    if values.get(PRIMARY_FIELD):
        found.add(values[PRIMARY_FIELD])
    return found


def _outranks(rule: FieldRule, claim: Contender, kind: str, standing: Contender, holder_kind: str) -> bool:
    """Whether a claim on the value already primary is stronger than the one it stands on."""
    if _RANK[kind] != _RANK[holder_kind]:
        return _RANK[kind] > _RANK[holder_kind]
    ranked = decide(rule, incoming=claim, current=standing)
    return ranked.winner is claim and not ranked.parked


def _entry(app: str | None, at: str | None, rule: str, kind: str) -> dict[str, Any]:
    return {"app": app, "at": at, "rule": rule, "kind": kind}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
