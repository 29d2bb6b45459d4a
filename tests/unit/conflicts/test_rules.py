"""Conflict rules: `decide` picks the winner of two differing values by priority, last writer,
restriction (consent) or not at all (manual), and parks what it cannot decide."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_sync.config import FieldRule
from customer_sync.conflicts.rules import Contender, Decision, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLY, LATE = T0, T0 + timedelta(minutes=5)


def _decide(rule: FieldRule, incoming: Contender, current: Contender) -> Decision:
    return decide(rule, incoming=incoming, current=current)


def _won_by(
    winner: str, incoming: Contender, current: Contender, rule: str, *, parked: bool = False
) -> Decision:
    """The decision in which `winner` ("incoming" or "current") beats the other side."""
    if winner == "incoming":
        return Decision(incoming, current, rule, parked=parked)
    return Decision(current, incoming, rule, parked=parked)


def test_manual_parks_and_keeps_current() -> None:
    """`manual` never decides: the current value stays and the conflict is parked."""
    incoming, current = Contender("crm", "B", LATE), Contender("shop", "C", EARLY)

    assert Decision(current, incoming, "manual", parked=True) == _decide(
        FieldRule(rule="manual"), incoming, current
    )


@pytest.mark.parametrize(
    ("apps", "incoming_at", "current_at", "winner"),
    [
        (["crm", "shop"], EARLY, LATE, "incoming"),
        (["shop", "crm"], LATE, EARLY, "current"),
        (["crm"], EARLY, LATE, "incoming"),
        (["shop"], LATE, EARLY, "current"),
    ],
    ids=[
        "incoming listed first, older",
        "current listed first, older",
        "incoming listed, current not",
        "current listed, incoming not",
    ],
)
def test_priority_ranks_listed_apps_above_time(
    apps: list[str], incoming_at: datetime, current_at: datetime, winner: str
) -> None:
    """Under `priority` the app listed earlier wins and listed beats unlisted, whatever the time."""
    incoming, current = Contender("crm", "B", incoming_at), Contender("shop", "C", current_at)
    rule = FieldRule(rule="priority", apps=apps)

    assert _won_by(winner, incoming, current, "priority") == _decide(rule, incoming, current)


def test_priority_ranks_unknown_holder_as_unlisted() -> None:
    """A current value with no known app ranks below every listed app."""
    incoming, current = Contender("crm", "B", EARLY), Contender(None, "C", LATE)

    assert Decision(incoming, current, "priority") == _decide(
        FieldRule(rule="priority", apps=["crm"]), incoming, current
    )


@pytest.mark.parametrize(
    ("incoming_at", "current_at", "winner"),
    [(LATE, EARLY, "incoming"), (EARLY, LATE, "current")],
    ids=["incoming newer", "current newer"],
)
def test_priority_between_two_unlisted_apps_falls_back_to_last_writer(
    incoming_at: datetime, current_at: datetime, winner: str
) -> None:
    """Two apps missing from the priority list are decided by last writer."""
    incoming, current = Contender("crm", "B", incoming_at), Contender("shop", "C", current_at)
    rule = FieldRule(rule="priority", apps=["erp"])

    assert _won_by(winner, incoming, current, "last_writer") == _decide(rule, incoming, current)


@pytest.mark.parametrize(
    ("incoming_at", "current_at", "winner", "parked"),
    [
        (LATE, EARLY, "incoming", False),
        (EARLY, LATE, "current", False),
        (EARLY, EARLY, "current", False),
        (EARLY, None, "incoming", False),
        (None, EARLY, "current", False),
        (None, None, "current", True),
    ],
    ids=[
        "incoming newer",
        "current newer",
        "equal times keep current",
        "only incoming time known",
        "only current time known",
        "no times park",
    ],
)
def test_last_writer_prefers_the_later_known_time(
    incoming_at: datetime | None, current_at: datetime | None, winner: str, parked: bool
) -> None:
    """The later time wins, a tie keeps current, a known time beats none, and no times park."""
    incoming, current = Contender("crm", "B", incoming_at), Contender("shop", "C", current_at)
    expected = _won_by(winner, incoming, current, "last_writer", parked=parked)

    assert expected == _decide(FieldRule(rule="last_writer"), incoming, current)


@pytest.mark.parametrize(
    ("incoming", "current", "winner"),
    [
        (Contender("crm", "subscribed", LATE), Contender("list", "unsubscribed", EARLY), "current"),
        (Contender("crm", "unsubscribed", EARLY), Contender("desk", "subscribed", LATE), "incoming"),
        (Contender("crm", "subscribed", LATE), Contender("desk", "bounced", EARLY), "current"),
        (Contender("list", "subscribed", LATE), Contender("desk", "cleaned", EARLY), "incoming"),
        (Contender("list", "subscribed", EARLY), Contender("desk", "cleaned", LATE), "current"),
        (Contender("list", "subscribed", LATE), Contender("desk", "unsubscribed", None), "current"),
        (Contender("list", "unknown", LATE), Contender("desk", "pending", EARLY), "current"),
        (Contender("crm", "transactional", EARLY), Contender("desk", "pending", LATE), "incoming"),
    ],
    ids=[
        "newer subscribed from another app loses to unsubscribed",
        "older unsubscribed wins over newer subscribed",
        "subscribed never beats bounced",
        "newer opt-in of the consent source lifts cleaned",
        "older opt-in of the consent source does not",
        "a restriction of unknown time is never lifted",
        "unknown is no opt-in",
        "transactional is more restrictive than pending",
    ],
)
def test_consent_keeps_the_more_restrictive_value(
    incoming: Contender, current: Contender, winner: str
) -> None:
    """`consent`: the more restrictive value wins unless the other is a newer word of the
    consent source ("list" here), whatever the priority list says."""
    rule = FieldRule(rule="consent", apps=["crm"], consent_source=["list"])

    assert _won_by(winner, incoming, current, "consent") == _decide(rule, incoming, current)
