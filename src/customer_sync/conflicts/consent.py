"""Consent as a legal fact: what every app has said about a customer's email consent, and the
value that stands.

Every change of the consent field an app makes (and every value an app holds when it first
meets the customer) is a *statement*: a value, the app, and when it was made (the record's
`email_consent_at` when the app maps it and it changed with the value, else the field's or the
record's modified time).
Statements are never forgotten; the value that stands is the most restrictive one stated
(`rules.CONSENT_ORDER`), except that the latest explicit statement of an app named in
`consent_source` (the app that collects consent) supersedes every statement *older* than it:
that is how a person opts in again. A statement of unknown time is never known to be older,
so it is never superseded.

The statements are kept folded, per value, as the latest time that value was stated (and by
whom), plus the latest consent-source statement: a few entries, stored with the field's
provenance. Folding is commutative, so the value that stands does not depend on the order in
which the apps' records arrive. Under an explicit `manual` rule nothing supersedes a
restriction (the operator does, by resolving the parked conflict), and every conflict and
every loosening is parked while the more restrictive value stands and is written.

Pure functions over plain dicts: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from customer_sync.conflicts.rules import Contender, Decision, consent_rank, consent_value, same_consent

__all__ = ["CONSENT_AT_FIELD", "CONSENT_FIELD", "ConsentMerge", "Statement", "merge_consent", "standing"]

CONSENT_FIELD = "email_consent"
CONSENT_AT_FIELD = "email_consent_at"


@dataclass(frozen=True, slots=True)
class Statement:
    """One app's word on the consent: a value, when (None: unknown), and the app's own
    `email_consent_at` text when it maps that field."""

    value: str
    app: str | None
    at: datetime | None
    stated_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "app": self.app, "at": _iso(self.at), "stated_at": self.stated_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Statement:
        return cls(data["value"], data.get("app"), _parse(data.get("at")), data.get("stated_at"))

    @property
    def consent_at(self) -> str | None:
        """The `email_consent_at` that goes with this statement."""
        return self.stated_at or _iso(self.at)


@dataclass(frozen=True)
class _State:
    facts: dict[str, Statement]  # value -> its latest statement
    lift: Statement | None  # the latest explicit statement of a consent source, with a time

    def as_json(self) -> dict[str, Any]:
        return {"facts": {v: s.as_json() for v, s in sorted(self.facts.items())},
                "lift": self.lift.as_json() if self.lift else None}


@dataclass
class ConsentMerge:
    """What one statement changes: canonical values, their provenance, and the conflict (if
    the statement lost to a standing restriction, or both sides had changed)."""

    changes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    decision: Decision | None = None


def merge_consent(
    *,
    app: str,
    incoming: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    holder: Mapping[str, Any],
    at: datetime | None,
    rule: str,
    sources: frozenset[str] | set[str] | list[str] | tuple[str, ...],
) -> ConsentMerge:
    """Merge the consent (and `email_consent_at`) of one incoming record.

    Args:
        incoming / base / current: the record's canonical values, the app's base, the customer's.
        holder: the provenance entry of the current consent value (it carries the statements).
        at: the field's (else the record's) modified time.
        rule: "consent" or "manual".
        sources: the apps whose newer statement supersedes older ones (ignored under manual).
    """
    out = ConsentMerge()
    new = consent_value(incoming.get(CONSENT_FIELD))
    stated_at = incoming.get(CONSENT_AT_FIELD) or None
    has_base = base is not None and CONSENT_FIELD in base
    base_value = consent_value(base.get(CONSENT_FIELD)) if base is not None else None
    if has_base and same_consent(new, base_value) and (
        CONSENT_AT_FIELD not in incoming or stated_at == (base or {}).get(CONSENT_AT_FIELD)
    ):
        return out  # the app did not say anything new
    if new is None or new == "":
        return out  # an app that clears the field states nothing; the value stands
    cur = consent_value(current.get(CONSENT_FIELD))
    if has_base and stated_at is not None and stated_at == (base or {}).get(CONSENT_AT_FIELD):
        stated_at = None  # the app changed the value, not its time: that time was the old value's
    when = _parse(stated_at) or at
    said = Statement(new, app, when, stated_at if isinstance(stated_at, str) else None)
    state = _load(holder, cur)
    lifts = rule == "consent" and app in sources and consent_rank(new) > 0 and when is not None
    after = _State({**state.facts, new: _later_fact(state.facts.get(new), said)},
                   _later_lift(state.lift, said) if lifts else state.lift)
    stands = standing(after)
    assert stands is not None
    label = f"{rule}: {stands.app} at {_iso(stands.at) or 'unknown time'}"
    entry = {"app": stands.app, "at": _iso(stands.at), "rule": label, "consent": after.as_json()}
    if not same_consent(stands.value, cur):
        out.changes[CONSENT_FIELD] = stands.value
    if CONSENT_FIELD in out.changes or after != state or holder.get("consent") is None:
        out.provenance[CONSENT_FIELD] = entry
    # The time goes with the value that stands, never with a statement that lost; it is kept
    # whether or not an app maps it, as the one that does may be the email list, whose records
    # of our own writes are echoes never merged.
    consent_at = stands.consent_at or current.get(CONSENT_AT_FIELD)
    if consent_at != current.get(CONSENT_AT_FIELD):
        out.changes[CONSENT_AT_FIELD] = consent_at
        out.provenance[CONSENT_AT_FIELD] = {k: v for k, v in entry.items() if k != "consent"}
    out.decision = _conflict(said, stands, cur, holder, has_base=has_base, base_value=base_value, rule=rule)
    return out


def standing(state: _State) -> Statement | None:
    """The statement that stands: the most restrictive of the consent source's latest and of
    every statement not older than it; the latest of them for a value stated more than once."""
    lift = state.lift
    best: Statement | None = lift
    for fact in state.facts.values():
        if lift is not None and fact.at is not None and fact.at < lift.at:  # type: ignore[operator]
            continue  # superseded by the newer word of the app that collects consent
        if best is None or _outranks(fact, best):
            best = fact
    return best


def _outranks(a: Statement, b: Statement) -> bool:
    ra, rb = consent_rank(a.value), consent_rank(b.value)
    if ra != rb:
        return ra > rb
    return _later_fact(b, a) is a


def _later_fact(old: Statement | None, new: Statement) -> Statement:
    """The later of two statements (unknown time counts as latest; a tie goes to the app that
    sorts first, so that folding does not depend on order)."""
    if old is None:
        return new
    key_old, key_new = _time_key(old.at), _time_key(new.at)
    if key_old != key_new:
        return new if key_new > key_old else old
    return new if (new.app or "", new.value) < (old.app or "", old.value) else old


def _later_lift(old: Statement | None, new: Statement) -> Statement:
    """The later of two consent-source statements (a tie: the more restrictive, then the app)."""
    if old is None:
        return new
    if old.at != new.at:
        return new if new.at > old.at else old  # type: ignore[operator]
    if consent_rank(old.value) != consent_rank(new.value):
        return new if consent_rank(new.value) > consent_rank(old.value) else old
    return new if (new.app or "") < (old.app or "") else old


def _time_key(at: datetime | None) -> tuple[int, datetime]:
    return (1, _EPOCH) if at is None else (0, at)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _load(holder: Mapping[str, Any], cur: Any) -> _State:
    """The statements behind the current value; made up from the value and its provenance
    when there are none (a value decided before consent was a rule, or by an operator)."""
    data = holder.get("consent")
    if isinstance(data, Mapping):
        state = _State({v: Statement.from_json(s) for v, s in (data.get("facts") or {}).items()},
                       Statement.from_json(data["lift"]) if data.get("lift") else None)
        stands = standing(state)
        if stands is not None and same_consent(stands.value, cur):
            return state
    if cur is None or cur == "":
        return _State({}, None)
    said = Statement(cur, holder.get("app"), _parse(holder.get("at")))
    # An operator's decision counts as the word of the app that collects consent.
    lift = said if holder.get("rule") == "operator" and said.at is not None else None
    return _State({cur: said}, lift)


def _conflict(
    said: Statement, stands: Statement, cur: Any, holder: Mapping[str, Any], *,
    has_base: bool, base_value: Any, rule: str,
) -> Decision | None:
    """A conflict to record: the statement lost to a standing value, or both the app and the
    customer had changed the field since the app's base. Under `manual`, parked."""
    if consent_rank(said.value) <= 0 or consent_rank(cur) <= 0 or same_consent(said.value, cur):
        return None
    prevailed = same_consent(stands.value, said.value)
    both_changed = not (has_base and same_consent(cur, base_value))
    if prevailed and not both_changed:
        return None
    incoming = Contender(said.app, said.value, said.at)
    if prevailed:
        return Decision(incoming, Contender(holder.get("app"), cur, _parse(holder.get("at"))), rule,
                        parked=rule == "manual")
    return Decision(Contender(stands.app, stands.value, stands.at), incoming, rule, parked=rule == "manual")


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def _parse(text: Any) -> datetime | None:
    if isinstance(text, datetime):
        return text
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
