"""Field-level three-way merge of one incoming record against its app's base.

For each field the incoming app holds: if it equals the base, the app did not change it; if the
canonical value still equals the base, only the app changed it and it wins; if both changed it
to different values, that is a conflict for the rules (`rules.decide`). When the app holds the
value the customer already has, the value's provenance moves to the app if the rules would
rank its claim higher (a later time, a higher priority): so the outcome does not depend on the
order in which the apps' records arrive. Set-valued fields
(tags, other phones) merge element-wise: additions and removals since the base both apply, so
two apps adding different tags both win.

Two fields are more than values. The customer's emails are a set with one primary
(`conflicts.emails`), and email consent is a legal fact, decided by the `consent` rule unless
an operator names another rule for it (`conflicts.consent`): every statement of consent is
weighed, not only conflicts, and a parked consent conflict keeps the more restrictive value.

Pure functions over plain dicts: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from customer_sync.config import ConflictsConfig
from customer_sync.conflicts.consent import CONSENT_AT_FIELD, CONSENT_FIELD, merge_consent
from customer_sync.conflicts.emails import OTHERS_FIELD, PRIMARY_FIELD, merge_emails
from customer_sync.conflicts.rules import Contender, Decision, consent_value, decide, more_restrictive

__all__ = ["FieldConflict", "MergeResult", "is_empty", "merge_record", "same_value"]


_MISSING: Any = object()


def is_empty(value: Any) -> bool:
    """None, "" and [] are all 'no value'."""
    # comparisons rather than isinstance against a union: the same answer for the JSON-like
    # values fields hold, in half the time (called a few dozen times per record decided)
    return value is None or value == "" or value == []


def same_value(a: Any, b: Any) -> bool:
    """Equal canonical values, where None, "" and [] are all 'empty'."""
    return a == b or (is_empty(a) and is_empty(b))


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A conflict and how the rule decided it (`decision.parked`: kept the current value)."""

    field: str
    decision: Decision


@dataclass
class MergeResult:
    """What the merge changes in the canonical customer, and why."""

    changes: dict[str, Any] = field(default_factory=dict)  # field -> new canonical value
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[FieldConflict] = field(default_factory=list)
    observed: dict[str, list[Any]] = field(default_factory=dict)  # field -> [base, incoming]


def merge_record(
    *,
    app: str,
    incoming: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    provenance: Mapping[str, Mapping[str, Any]],
    modified_at: datetime | None,
    field_modified_at: Mapping[str, datetime],
    set_fields: frozenset[str],
    rules: ConflictsConfig,
    address_apps: frozenset[str] = frozenset(),
) -> MergeResult:
    """Merge `incoming` (normalized values from `app`) into `current`.

    Args:
        base: the values last agreed with `app` (None: the record is new to this customer).
        provenance: field -> {"app", "at", "rule"} of the current values. A field a conflict
            decided, whichever side won, gets the deciding rule (`priority`, `last_writer`, ...).
        modified_at / field_modified_at: the app's record and per-field modified times.
        address_apps: the apps whose record is an email address (`requires_email`): their
            address joins the customer's emails and never claims the primary.
    """
    special = _special_fields(incoming, current, rules)
    if base is None and not current:
        out = _first_values(app, incoming, modified_at, field_modified_at, set_fields, special)
    else:
        out = _merge_values(app, incoming, base, current, provenance, modified_at,
                            field_modified_at, set_fields, rules, special)
    if special:
        _merge_special(out, special, app=app, incoming=incoming, base=base, current=current,
                       provenance=provenance, modified_at=modified_at,
                       field_modified_at=field_modified_at, rules=rules, address_apps=address_apps)
    return out


def _special_fields(incoming: Mapping[str, Any], current: Mapping[str, Any],
                    rules: ConflictsConfig) -> frozenset[str]:
    """The fields of `incoming` merged by their own module rather than value by value."""
    found = [f for f in _SPECIAL if f in incoming]
    if not found:
        return _NONE
    if (CONSENT_FIELD in found or CONSENT_AT_FIELD in found) and not (
        _is_consent_rule(rules) and (CONSENT_FIELD in found or not is_empty(current.get(CONSENT_FIELD)))
    ):
        # Decided like any field (an operator's rule), or a time of consent with no consent:
        # alone it states nothing, but there is nothing to keep it consistent with either.
        found = [f for f in found if f not in (CONSENT_FIELD, CONSENT_AT_FIELD)]
    return frozenset(found)


_SPECIAL = (PRIMARY_FIELD, OTHERS_FIELD, CONSENT_FIELD, CONSENT_AT_FIELD)
_NONE: frozenset[str] = frozenset()


def _is_consent_rule(rules: ConflictsConfig) -> bool:
    return rules.rule_for(CONSENT_FIELD).rule in ("consent", "manual")


def _merge_special(
    out: MergeResult, special: frozenset[str], *, app: str, incoming: Mapping[str, Any],
    base: Mapping[str, Any] | None, current: Mapping[str, Any],
    provenance: Mapping[str, Mapping[str, Any]], modified_at: datetime | None,
    field_modified_at: Mapping[str, datetime], rules: ConflictsConfig, address_apps: frozenset[str],
) -> None:
    if PRIMARY_FIELD in special or OTHERS_FIELD in special:
        emails = merge_emails(
            app=app, incoming=incoming, base=base, current=current,
            holder=provenance.get(PRIMARY_FIELD) or {},
            at=field_modified_at.get(PRIMARY_FIELD) or modified_at,
            at_others=field_modified_at.get(OTHERS_FIELD) or modified_at,
            rules=rules, is_address=app in address_apps,
        )
        out.changes.update(emails.changes)
        out.provenance.update(emails.provenance)
        if emails.decision is not None:
            out.conflicts.append(FieldConflict(PRIMARY_FIELD, emails.decision))
    if CONSENT_FIELD in special:
        rule = rules.rule_for(CONSENT_FIELD)
        consent = merge_consent(
            app=app, incoming=incoming, base=base, current=current,
            holder=provenance.get(CONSENT_FIELD) or {},
            at=field_modified_at.get(CONSENT_FIELD) or modified_at,
            rule=rule.rule, sources=rule.consent_source or (),
        )
        out.changes.update(consent.changes)
        out.provenance.update(consent.provenance)
        if consent.decision is not None:
            out.conflicts.append(FieldConflict(CONSENT_FIELD, consent.decision))


def _merge_values(
    app: str, incoming: Mapping[str, Any], base: Mapping[str, Any] | None,
    current: Mapping[str, Any], provenance: Mapping[str, Mapping[str, Any]],
    modified_at: datetime | None, field_modified_at: Mapping[str, datetime],
    set_fields: frozenset[str], rules: ConflictsConfig, special: frozenset[str],
) -> MergeResult:
    """The field-by-field merge of every field but the `special` ones (observed only)."""
    out = MergeResult()
    _prov = _provenance_maker(app)

    for name, new in incoming.items():
        has_base = base is not None and name in base
        old_base = base.get(name) if base is not None else None
        cur = current.get(name)
        at = field_modified_at.get(name) or modified_at
        if has_base and same_value(new, old_base):
            continue  # the app did not change this field
        if has_base or not is_empty(new):  # "nothing, still nothing" is not an observation
            out.observed[name] = [old_base, new]
        if name in special:
            continue
        if name == CONSENT_FIELD:  # under a rule an operator chose: one spelling of each value
            new, old_base = consent_value(new), consent_value(old_base)
            if has_base and same_value(new, old_base):
                continue
        if name in set_fields:
            merged = _merge_set(new, old_base if has_base else None, cur)
            if not same_value(merged, cur):
                out.changes[name] = merged
                out.provenance[name] = _prov(at, "set_merge")
            continue
        if same_value(cur, new) and is_empty(new):
            continue  # nothing, still nothing
        if same_value(cur, new):
            # Already agreed. The value now stands on the stronger of the two claims (the later
            # time, the app of higher priority), so that the next conflict on this field is
            # decided as if the records had come in the other order.
            holder = provenance.get(name, {})
            claim = Contender(app, new, at)
            ranked = decide(rules.rule_for(name), incoming=claim,
                            current=Contender(holder.get("app"), cur, _parse(holder.get("at"))))
            if ranked.winner is claim and not ranked.parked:
                out.provenance[name] = _prov(at, "agreed")
            continue
        if not has_base and is_empty(new):
            continue  # the app merely lacks a value we hold: it will be written, not erased
        if is_empty(cur) and not has_base:
            out.changes[name] = new
            out.provenance[name] = _prov(at, "first_value")
            continue
        if has_base and same_value(cur, old_base):
            out.changes[name] = new
            out.provenance[name] = _prov(at, "only_change")
            continue
        # Both sides changed the field since the base (or the app holds a different value the
        # first time it meets this customer): the rule decides.
        holder = provenance.get(name, {})
        incoming = Contender(app, new, at)
        decision = decide(
            rules.rule_for(name),
            incoming=incoming,
            current=Contender(holder.get("app"), cur, _parse(holder.get("at"))),
        )
        out.conflicts.append(FieldConflict(name, decision))
        if decision.winner is incoming and not decision.parked:
            out.changes[name] = new
            out.provenance[name] = _prov(at, decision.rule)
        elif not decision.parked:
            # The current value won: it now stands by the rule that decided, not by how it
            # first came in (`only_change`, `first_value`). The store adds the conflict's id.
            kept = {k: v for k, v in holder.items() if k != "conflict_id"}
            out.provenance[name] = {**kept, "app": holder.get("app") or decision.winner.app,
                                    "rule": decision.rule}
        elif (name == CONSENT_FIELD and decision.parked
              and more_restrictive(cur, new) == new and not same_value(cur, new)):
            # Parked or not, consent never stands on the less restrictive of two values.
            out.changes[name] = new
            out.provenance[name] = _prov(at, f"{decision.rule} (parked; more restrictive kept)")
    return out


def _first_values(
    app: str, incoming: Mapping[str, Any], modified_at: datetime | None,
    field_modified_at: Mapping[str, datetime], set_fields: frozenset[str],
    special: frozenset[str] = frozenset(),
) -> MergeResult:
    """`merge_record` for a customer that holds nothing yet and no base (a new customer, on
    the hot path of an initial pull): every non-empty value is its field's first value. The
    same result as the general loop, which a test checks, with none of its comparisons."""
    out = MergeResult()
    _prov = _provenance_maker(app)
    for name, new in incoming.items():
        if new is None or new == "" or new == []:
            continue  # nothing, still nothing: neither observed nor a change
        out.observed[name] = [None, new]
        if name in special:
            continue
        if name == CONSENT_FIELD:
            new = consent_value(new)
        at = field_modified_at.get(name) or modified_at
        if name in set_fields:
            merged = _merge_set(new, None, None)
            if not same_value(merged, None):
                out.changes[name] = merged
                out.provenance[name] = _prov(at, "set_merge")
            continue
        out.changes[name] = new
        out.provenance[name] = _prov(at, "first_value")
    return out


def _provenance_maker(app: str) -> Callable[[datetime | None, str], dict[str, Any]]:
    """Provenance entries of one merge: {"app", "at", "rule"}, each distinct time formatted once."""
    stamps: dict[datetime | None, str | None] = {None: None}

    def make(at: datetime | None, rule: str) -> dict[str, Any]:
        text = stamps.get(at, _MISSING)
        if text is _MISSING:
            text = stamps[at] = at.isoformat()  # type: ignore[union-attr]
        return {"app": app, "at": text, "rule": rule}

    return make


def _merge_set(new: Any, base: Any, cur: Any) -> list[Any]:
    new_s, base_s, cur_s = set(new or ()), set(base or ()), set(cur or ())
    if base is None:
        return sorted(cur_s | new_s)
    return sorted((cur_s | (new_s - base_s)) - (base_s - new_s))


def _parse(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None
