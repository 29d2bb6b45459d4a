"""Consent as a legal fact: the most restrictive statement stands, whatever the conflict rule
elsewhere, and only a newer word from the app that collects consent lifts a restriction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_sync.config import ConflictsConfig, FieldRule
from customer_sync.conflicts.rules import CONSENT_ORDER, consent_rank, consent_value, more_restrictive
from customer_sync.conflicts.three_way import MergeResult, merge_record

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLY, MID, LATE = T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)

LAST_WRITER = ConflictsConfig(default="last_writer", consent_source=["list"])
PRIORITY = ConflictsConfig(default="priority", priority=["crm", "list"], consent_source=["list"])
BOTH = pytest.mark.parametrize("rules", [LAST_WRITER, PRIORITY], ids=["last_writer", "priority"])


class Customer:
    """A canonical customer that records from apps are merged into, as the engine does."""

    def __init__(self, rules: ConflictsConfig) -> None:
        self.rules = rules
        self.values: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}
        self.bases: dict[str, dict[str, Any]] = {}

    def receive(self, app: str, at: datetime | None, **fields: Any) -> MergeResult:
        """Merge `fields` of `app`'s record, modified at `at`, against that app's base."""
        result = merge_record(
            app=app, incoming=fields, base=self.bases.get(app), current=self.values,
            provenance=self.provenance, modified_at=at, field_modified_at={},
            set_fields=frozenset(), rules=self.rules,
        )
        self.values = {**self.values, **result.changes}
        self.provenance = {**self.provenance, **result.provenance}
        self.bases[app] = {**self.bases.get(app, {}), **fields}
        return result

    @property
    def consent(self) -> Any:
        return self.values.get("email_consent")


def test_consent_values_rank_from_unknown_to_cleaned() -> None:
    """The order of restriction: unknown < subscribed < pending < transactional < unsubscribed
    < cleaned; "bounced" is another spelling of cleaned."""
    assert ("unknown", "subscribed", "pending", "transactional", "unsubscribed", "cleaned") == CONSENT_ORDER
    assert [0, 1, 2, 3, 4, 5] == [consent_rank(v) for v in CONSENT_ORDER]
    assert ("cleaned", 5) == (consent_value("bounced"), consent_rank("bounced"))
    assert -1 == consent_rank(None)
    assert "unsubscribed" == more_restrictive("subscribed", "unsubscribed") == more_restrictive("unsubscribed", "pending")


@BOTH
def test_unsubscribed_never_goes_back_to_subscribed_from_another_app(rules: ConflictsConfig) -> None:
    """Defect 6: an app going from unsubscribed back to subscribed since its base (a change in
    that app only) does not lift the restriction, under either default rule."""
    c = Customer(rules)
    c.receive("crm", EARLY, email_consent="subscribed")
    c.receive("list", MID, email_consent="subscribed")
    c.receive("list", MID + timedelta(minutes=1), email_consent="unsubscribed")
    c.bases["crm"] = {"email_consent": "unsubscribed"}  # the restriction was written to crm

    result = c.receive("crm", LATE, email_consent="subscribed")

    assert "unsubscribed" == c.consent
    assert {} == result.changes
    [conflict] = result.conflicts
    assert ("email_consent", "consent", "list", "unsubscribed", "crm", "subscribed", False) == (
        conflict.field, conflict.decision.rule, conflict.decision.winner.app, conflict.decision.winner.value,
        conflict.decision.loser.app, conflict.decision.loser.value, conflict.decision.parked)


@BOTH
@pytest.mark.parametrize("spelling", ["cleaned", "bounced"])
def test_cleaned_never_becomes_subscribed(rules: ConflictsConfig, spelling: str) -> None:
    """Defect 6: a bounced address stays cleaned when any app other than the consent source
    says subscribed, newer or not, under either default rule."""
    c = Customer(rules)
    c.receive("desk", EARLY, email_consent=spelling)

    c.receive("crm", LATE, email_consent="subscribed")
    c.receive("shop", LATE + timedelta(minutes=1), email_consent="subscribed")

    assert "cleaned" == c.consent


def test_a_restriction_from_any_app_wins_over_subscribed() -> None:
    """An app that unsubscribes the customer wins over a subscribed value from a listed,
    prioritised app: consent is not decided by priority."""
    c = Customer(PRIORITY)
    c.receive("crm", LATE, email_consent="subscribed")

    result = c.receive("shop", EARLY, email_consent="unsubscribed")

    assert "unsubscribed" == c.consent
    assert "unsubscribed" == result.changes["email_consent"]


@pytest.mark.parametrize(
    ("source", "opt_in_at", "lifted"),
    [("list", LATE, True), ("list", EARLY, False), ("crm", LATE, False)],
    ids=["newer opt-in from the consent source", "older opt-in from the consent source",
         "newer opt-in from another app"],
)
def test_only_a_newer_opt_in_from_the_consent_source_lifts_a_restriction(
    source: str, opt_in_at: datetime, lifted: bool
) -> None:
    """A restriction made at MID is lifted by the consent source's opt-in made after it, not by
    one made before it, and not by another app's."""
    c = Customer(LAST_WRITER)
    c.receive(source, T0 - timedelta(days=1), email_consent="unsubscribed")
    c.receive("desk", MID, email_consent="unsubscribed")

    c.receive(source, opt_in_at, email_consent="subscribed")

    assert ("subscribed" if lifted else "unsubscribed") == c.consent


def test_the_consent_source_lifts_cleaned_too() -> None:
    """A bounce recorded anywhere is lifted only by a newer word of the consent source."""
    c = Customer(LAST_WRITER)
    c.receive("desk", MID, email_consent="bounced")

    c.receive("list", LATE, email_consent="subscribed")

    assert "subscribed" == c.consent


def test_a_restriction_after_the_opt_in_stands() -> None:
    """The consent source's opt-in supersedes only what is older than it."""
    c = Customer(LAST_WRITER)
    c.receive("list", MID, email_consent="subscribed")

    c.receive("crm", LATE, email_consent="unsubscribed")

    assert "unsubscribed" == c.consent


def test_a_restriction_of_unknown_time_is_never_lifted() -> None:
    """A restriction whose time is unknown cannot be shown to be older than an opt-in."""
    c = Customer(LAST_WRITER)
    c.receive("desk", None, email_consent="unsubscribed")

    c.receive("list", LATE, email_consent="subscribed")

    assert "unsubscribed" == c.consent


def test_the_time_of_consent_given_by_the_app_dates_the_statement() -> None:
    """The record's own email_consent_at says when consent was given: an opt-in saved late
    but given before the restriction does not lift it; the time goes with the standing value."""
    c = Customer(LAST_WRITER)
    c.receive("desk", MID, email_consent="unsubscribed", email_consent_at=MID.isoformat())

    c.receive("list", LATE, email_consent="subscribed", email_consent_at=EARLY.isoformat())
    assert ("unsubscribed", MID.isoformat()) == (c.consent, c.values["email_consent_at"])

    c.receive("list", LATE, email_consent="subscribed", email_consent_at=LATE.isoformat())
    assert ("subscribed", LATE.isoformat()) == (c.consent, c.values["email_consent_at"])


def test_a_rejected_opt_in_does_not_bring_its_time() -> None:
    """email_consent_at stays that of the restriction when another app's opt-in is rejected."""
    c = Customer(LAST_WRITER)
    c.receive("list", MID, email_consent="unsubscribed", email_consent_at=MID.isoformat())

    result = c.receive("crm", LATE, email_consent="subscribed", email_consent_at=LATE.isoformat())

    assert {} == result.changes
    assert MID.isoformat() == c.values["email_consent_at"]


def test_the_decision_names_the_app_and_the_time_of_the_statement() -> None:
    """The provenance rule (the change log's `decided` reason) names the app and its time."""
    c = Customer(LAST_WRITER)
    c.receive("crm", EARLY, email_consent="subscribed")

    result = c.receive("desk", MID, email_consent="unsubscribed")

    assert f"consent: desk at {MID.isoformat()}" == result.provenance["email_consent"]["rule"]
    assert ("desk", MID.isoformat()) == (result.provenance["email_consent"]["app"],
                                         result.provenance["email_consent"]["at"])


@pytest.mark.parametrize("value", [None, "", "unknown"], ids=["cleared", "empty", "unknown"])
def test_no_word_on_consent_lifts_nothing(value: Any) -> None:
    """An app that clears the field or says unknown does not change a known value."""
    c = Customer(LAST_WRITER)
    c.receive("list", EARLY, email_consent="subscribed")
    c.receive("crm", EARLY, email_consent="subscribed")

    c.receive("list", LATE, email_consent=value)

    assert "subscribed" == c.consent


def test_unknown_yields_to_a_known_value() -> None:
    """A customer whose consent is unknown takes the first known value, even subscribed."""
    c = Customer(LAST_WRITER)
    c.receive("crm", EARLY, email_consent="unknown")

    c.receive("shop", MID, email_consent="subscribed")

    assert "subscribed" == c.consent


def test_manual_keeps_the_restriction_and_parks_the_loosening() -> None:
    """Defect 6: under an explicit `manual` rule an app's loosening is parked, and the
    restriction is what stands (and is written) until an operator decides."""
    rules = ConflictsConfig(default="last_writer", consent_source=["list"],
                            fields={"email_consent": FieldRule(rule="manual")})
    c = Customer(rules)
    c.receive("list", EARLY, email_consent="unsubscribed")
    c.bases["list"] = {"email_consent": "unsubscribed"}

    result = c.receive("list", LATE, email_consent="subscribed")  # not lifted: manual

    assert "unsubscribed" == c.consent
    [conflict] = result.conflicts
    assert (True, "manual", "unsubscribed") == (
        conflict.decision.parked, conflict.decision.rule, conflict.decision.winner.value)


def test_manual_applies_a_restriction_even_on_conflict() -> None:
    """Defect 6: both sides changed consent; under `manual` the conflict is parked, but the
    unsubscribe is what stands, so that it reaches every app."""
    rules = ConflictsConfig(fields={"email_consent": FieldRule(rule="manual")})
    c = Customer(rules)
    c.receive("crm", EARLY, email_consent="subscribed")
    c.bases["desk"] = {"email_consent": "subscribed"}
    c.receive("shop", MID, email_consent="pending")  # the customer's value moves on

    result = c.receive("desk", LATE, email_consent="unsubscribed")

    assert "unsubscribed" == c.consent
    [conflict] = result.conflicts
    assert (True, "desk", "unsubscribed") == (
        conflict.decision.parked, conflict.decision.winner.app, conflict.decision.winner.value)


def test_an_explicit_plain_rule_is_the_operators_choice_but_never_parks_on_the_looser_side() -> None:
    """Naming last_writer for email_consent turns the consent rule off: a newer subscribed
    wins; but a conflict it cannot decide keeps the more restrictive value."""
    rules = ConflictsConfig(fields={"email_consent": FieldRule(rule="last_writer")})
    c = Customer(rules)
    c.receive("crm", EARLY, email_consent="unsubscribed")
    c.receive("desk", LATE, email_consent="subscribed")
    assert "subscribed" == c.consent

    undecided = Customer(rules)
    undecided.receive("crm", None, email_consent="subscribed")
    result = undecided.receive("desk", None, email_consent="unsubscribed")
    assert "unsubscribed" == undecided.consent
    assert [True] == [c.decision.parked for c in result.conflicts]


def test_a_value_decided_by_an_operator_counts_as_the_consent_source() -> None:
    """A consent value an operator chose (no statements kept with it) is not undone by an
    older restriction that arrives after."""
    c = Customer(LAST_WRITER)
    c.values = {"email_consent": "subscribed"}
    c.provenance = {"email_consent": {"app": "crm", "at": MID.isoformat(), "rule": "operator"}}

    c.receive("desk", EARLY, email_consent="unsubscribed")
    assert "subscribed" == c.consent
    c.receive("shop", LATE, email_consent="unsubscribed")
    assert "unsubscribed" == c.consent


def test_a_time_of_consent_left_unchanged_does_not_date_a_new_value() -> None:
    """An app that changes the value but not its email_consent_at (still the old value's
    time) states the new value at its modified time."""
    c = Customer(LAST_WRITER)
    c.receive("crm", MID, email_consent="unsubscribed")
    c.bases["list"] = {"email_consent": "unsubscribed", "email_consent_at": EARLY.isoformat()}

    c.receive("list", LATE, email_consent="subscribed", email_consent_at=EARLY.isoformat())

    assert ("subscribed", LATE.isoformat()) == (c.consent, c.values["email_consent_at"])
