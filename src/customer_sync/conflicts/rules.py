"""Conflict rules: which of two differing values of one field wins.

- `priority`: the app listed first in the rule's `apps` wins; an app not listed ranks below
  every listed one; two unlisted apps fall back to last writer.
- `last_writer`: the later modified time wins (the app's per-field time when the connector
  gives one, else the record's). Equal times keep the current value; unknown times cannot be
  compared, so the value with a known time wins, and with none known the conflict is parked.
- `manual`: always parked; the current value stays until an operator resolves it.

A parked conflict keeps the current value and waits in `customer-sync conflicts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_sync.config import FieldRule

__all__ = ["Contender", "Decision", "decide"]


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
