"""Conflict rules: which of two differing values of one field wins.

- `priority`: the app listed first in the rule's `apps` wins; an app not listed ranks below
  every listed one; two unlisted apps fall back to last writer.
- `last_writer`: the later modified time wins (the app's per-field time when the connector
  gives one, else the record's). Equal times keep the current value; unknown times cannot be
  compared, so the value with a known time wins, and with none known the conflict is parked.
- `manual`: always parked; the current value stays until an operator resolves it.
- `consent` (consent fields): the more restrictive value wins (`CONSENT_ORDER`), unless the
  less restrictive one comes from an app of the rule's `consent_source` with a later known
  time: a newer opt-in recorded where consent is collected. `conflicts.consent` applies the
  same order to every statement of the field, not only to conflicts.

A parked conflict keeps the current value and waits in `customer-sync conflicts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from customer_sync.config import FieldRule

__all__ = [
    "CONSENT_ORDER", "Contender", "Decision", "consent_rank", "consent_value", "decide",
    "more_restrictive", "same_consent",
]

# Email-marketing consent from the least to the most restrictive. `unknown` says nothing and
# yields to any known value. `pending` (asked for, not confirmed) and `transactional` (receives
# transactional mail only) are not consent to marketing, so they rank above `subscribed`;
# `transactional` above `pending`, which is a step towards an opt-in. `unsubscribed` is the
# person's own refusal; `cleaned` (the address bounced) is above it, as no mail reaches it.
CONSENT_ORDER = ("unknown", "subscribed", "pending", "transactional", "unsubscribed", "cleaned")
_CONSENT_RANK = {value: rank for rank, value in enumerate(CONSENT_ORDER)}
# Other spellings accepted for a consent value (Mailchimp's "cleaned" is "bounced" elsewhere).
_CONSENT_SPELLINGS = {"bounced": "cleaned"}


def consent_value(value: Any) -> Any:
    """The consent value in its canonical spelling (`bounced` is `cleaned`); others as given."""
    return _CONSENT_SPELLINGS.get(value, value) if isinstance(value, str) else value


def consent_rank(value: Any) -> int:
    """How restrictive a consent value is: -1 for no value, 0 for unknown or unrecognised."""
    if value is None or value == "":
        return -1
    return _CONSENT_RANK.get(consent_value(value), 0)


def same_consent(a: Any, b: Any) -> bool:
    """Equal consent values, `bounced` and `cleaned` being one, and None and "" both empty."""
    a, b = consent_value(a), consent_value(b)
    return a == b or (a in (None, "") and b in (None, ""))


def more_restrictive(a: Any, b: Any) -> Any:
    """The more restrictive of two consent values (`a` on a tie)."""
    return b if consent_rank(b) > consent_rank(a) else a


@dataclass(frozen=True, slots=True)
class Contender:
    """One side of a conflict: which app holds which value, changed when."""

    app: str | None
    value: Any
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: winner, loser, the rule that decided, and whether it was parked."""

    winner: Contender
    loser: Contender
    rule: str
    parked: bool = False


def decide(rule: FieldRule, *, incoming: Contender, current: Contender) -> Decision:
    """Decide a conflict between an incoming value and the current canonical value."""
    if rule.rule == "manual":
        return Decision(current, incoming, "manual", parked=True)
    if rule.rule == "consent":
        return _consent(rule.consent_source or (), incoming, current)
    if rule.rule == "priority":
        rank_in, rank_cur = _rank(rule.apps, incoming.app), _rank(rule.apps, current.app)
        if rank_in != rank_cur:
            if rank_in < rank_cur:
                return Decision(incoming, current, "priority")
            return Decision(current, incoming, "priority")
    return _last_writer(incoming, current)


def _rank(apps: list[str], app: str | None) -> int:
    return apps.index(app) if app in apps else len(apps)


def _last_writer(incoming: Contender, current: Contender) -> Decision:
    if incoming.at is not None and current.at is not None:
        if incoming.at > current.at:
            return Decision(incoming, current, "last_writer")
        return Decision(current, incoming, "last_writer")
    if incoming.at is not None:
        return Decision(incoming, current, "last_writer")
    if current.at is not None:
        return Decision(current, incoming, "last_writer")
    return Decision(current, incoming, "last_writer", parked=True)


def _consent(sources: Sequence[str], incoming: Contender, current: Contender) -> Decision:
    """The more restrictive value wins, unless the other is a newer one from a consent source."""
    rank_in, rank_cur = consent_rank(incoming.value), consent_rank(current.value)
    if rank_in == rank_cur:
        return Decision(current, incoming, "consent")
    strict, loose = (incoming, current) if rank_in > rank_cur else (current, incoming)
    if (loose.app in sources and consent_rank(loose.value) > 0 and loose.at is not None
            and strict.at is not None and loose.at > strict.at):
        strict, loose = loose, strict
    return Decision(strict, loose, "consent")
