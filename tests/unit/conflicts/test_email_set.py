"""A customer's emails are a set with one primary: no address is dropped, an email list's
address never claims the primary, and the primary does not depend on arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_sync.config import ConflictsConfig, FieldRule
from customer_sync.conflicts.three_way import MergeResult, merge_record

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLY, MID, LATE = T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)
LIST = frozenset({"list"})

RULES = pytest.mark.parametrize("rules", [
    ConflictsConfig(default="last_writer"),
    ConflictsConfig(default="priority", priority=["list", "desk", "crm"]),
    ConflictsConfig(default="priority", priority=["crm", "desk", "list"]),
], ids=["last_writer", "priority list first", "priority crm first"])


class Customer:
    """A canonical customer that records from apps are merged into, as the engine does."""

    def __init__(self, rules: ConflictsConfig | None = None) -> None:
        self.rules = rules or ConflictsConfig()
        self.values: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}
        self.bases: dict[str, dict[str, Any]] = {}

    def receive(self, app: str, at: datetime | None, **fields: Any) -> MergeResult:
        result = merge_record(
            app=app, incoming=fields, base=self.bases.get(app), current=self.values,
            provenance=self.provenance, modified_at=at, field_modified_at={},
            set_fields=frozenset({"other_emails"} & set(fields)), rules=self.rules, address_apps=LIST,
        )
        self.values = {**self.values, **result.changes}
        self.provenance = {**self.provenance, **result.provenance}
        self.bases[app] = {**self.bases.get(app, {}), **fields}
        return result

    @property
    def emails(self) -> tuple[Any, list[str]]:
        return self.values.get("email"), self.values.get("other_emails") or []


@RULES
@pytest.mark.parametrize("list_first", [True, False], ids=["list first", "helpdesk first"])
def test_a_list_members_address_joins_a_helpdesk_users_two_addresses(
    rules: ConflictsConfig, list_first: bool
) -> None:
    """Defect 4: a helpdesk user with two addresses, one of them a list member's: the helpdesk's
    primary stays primary, the list's address stays in the set, nothing is dropped."""
    c = Customer(rules)
    arrivals = [("list", LATE, {"email": "ann@list.io"}),
                ("desk", EARLY, {"email": "ann@work.io", "other_emails": ["ann@list.io"]})]
    for app, at, fields in arrivals if list_first else reversed(arrivals):
        c.receive(app, at, **fields)

    assert ("ann@work.io", ["ann@list.io"]) == c.emails


@RULES
def test_a_list_address_new_to_the_customer_is_kept_not_claimed(rules: ConflictsConfig) -> None:
    """An email list whose member's address the customer does not have yet adds it to the set;
    it is no conflict on the primary, whatever the rule or the times."""
    c = Customer(rules)
    c.receive("crm", EARLY, email="ann@work.io")

    result = c.receive("list", LATE, email="ann@home.io")

    assert ("ann@work.io", ["ann@home.io"]) == c.emails
    assert [] == result.conflicts


def test_a_customer_known_only_to_the_list_has_its_address_as_primary_until_another_app_claims_one() -> None:
    """The list's address is the primary of a customer nobody else holds; an app that holds
    another address takes the primary without a conflict, and the list's address stays."""
    c = Customer()
    c.receive("list", LATE, email="ann@home.io")
    assert ("ann@home.io", []) == c.emails

    result = c.receive("crm", EARLY, email="ann@work.io")

    assert ("ann@work.io", ["ann@home.io"]) == c.emails
    assert [] == result.conflicts


@pytest.mark.parametrize(
    ("rules", "primary"),
    [(ConflictsConfig(default="last_writer"), "b@x.io"),
     (ConflictsConfig(default="priority", priority=["crm"]), "a@x.io")],
    ids=["last_writer", "priority"],
)
def test_a_conflict_on_the_primary_is_decided_by_the_rules_and_keeps_the_loser(
    rules: ConflictsConfig, primary: str
) -> None:
    """Two apps with one email field each hold a different address: the rule picks the
    primary, the conflict is recorded, and the losing address stays in other_emails."""
    c = Customer(rules)
    c.receive("crm", EARLY, email="a@x.io")

    result = c.receive("shop", LATE, email="b@x.io")

    assert (primary, sorted({"a@x.io", "b@x.io"} - {primary})) == c.emails
    [conflict] = result.conflicts
    assert ("email", primary) == (conflict.field, conflict.decision.winner.value)


def test_a_parked_conflict_on_the_primary_keeps_both_addresses() -> None:
    """Under `manual` the primary stays until an operator decides; the other address is kept."""
    c = Customer(ConflictsConfig(fields={"email": FieldRule(rule="manual")}))
    c.receive("crm", EARLY, email="a@x.io")

    result = c.receive("shop", LATE, email="b@x.io")

    assert ("a@x.io", ["b@x.io"]) == c.emails
    assert [True] == [x.decision.parked for x in result.conflicts]


@pytest.mark.parametrize("desk_first", [True, False], ids=["helpdesk first", "crm first"])
def test_an_app_holding_the_set_outranks_an_app_with_one_email_field(desk_first: bool) -> None:
    """The helpdesk knows both addresses and which is primary; a CRM holding one of them, even
    newer and listed first, does not move the primary."""
    c = Customer(ConflictsConfig(default="priority", priority=["crm"]))
    arrivals = [("desk", EARLY, {"email": "ann@work.io", "other_emails": ["ann@home.io"]}),
                ("crm", LATE, {"email": "ann@home.io"})]
    for app, at, fields in arrivals if desk_first else reversed(arrivals):
        c.receive(app, at, **fields)

    assert ("ann@work.io", ["ann@home.io"]) == c.emails


def test_an_app_changing_its_own_address_moves_the_primary_and_keeps_the_old_one() -> None:
    """A change of the email in one app only (the primary still is its base) is that app's
    edit: it becomes the primary, and the old address stays one of the customer's."""
    c = Customer()
    c.receive("crm", EARLY, email="old@x.io")

    c.receive("crm", LATE, email="new@x.io")

    assert ("new@x.io", ["old@x.io"]) == c.emails


def test_an_app_holding_the_set_removes_an_address_but_never_the_primary() -> None:
    """Removing an address from other_emails in the helpdesk removes it from the customer; the
    helpdesk dropping the primary, while its own claim on another address loses, does not."""
    c = Customer()
    c.receive("desk", EARLY, email="a@x.io", other_emails=["b@x.io", "c@x.io"])

    c.receive("desk", MID, email="a@x.io", other_emails=["c@x.io"])
    assert ("a@x.io", ["c@x.io"]) == c.emails

    c.bases["desk"] = {"email": "a@x.io", "other_emails": ["c@x.io"]}
    c.receive("crm", LATE, email="c@x.io")
    c.receive("desk", LATE, email=None, other_emails=["c@x.io"])
    assert ("a@x.io", ["c@x.io"]) == c.emails


@pytest.mark.parametrize("value", [None, ""], ids=["None", "empty"])
def test_an_app_emptying_its_email_erases_no_address(value: Any) -> None:
    """Addresses are identities: an app that empties its email field states nothing."""
    c = Customer()
    c.receive("crm", EARLY, email="a@x.io")

    result = c.receive("crm", LATE, email=value)

    assert ("a@x.io", []) == c.emails
    assert {} == result.changes


def test_first_meeting_with_an_address_the_customer_has_is_no_conflict() -> None:
    """A CRM meeting the customer with one of its other addresses joins without a conflict
    and without moving the primary held by the app that holds the set."""
    c = Customer()
    c.receive("desk", EARLY, email="ann@work.io", other_emails=["ann@home.io"])

    result = c.receive("crm", LATE, email="ann@home.io")

    assert ([], {}) == (result.conflicts, result.changes)


def test_a_customer_without_an_address_merges_emails_as_the_general_rules_say() -> None:
    """The shortcut for a customer holding no address yet gives what the general email merge
    gives (the general path is taken when the customer holds some other address)."""
    import random

    from customer_sync.conflicts.emails import merge_emails

    rng = random.Random(5)
    pool = ["a@x.io", "b@x.io", "c@x.io"]
    for _ in range(400):
        incoming: dict[str, Any] = {"email": rng.choice([None, "", *pool])}
        if rng.random() < 0.5:
            incoming["other_emails"] = sorted(rng.sample(pool, rng.randint(0, 3)))
        kwargs: dict[str, Any] = {"app": "crm", "incoming": incoming, "base": None, "holder": {},
                                  "at": rng.choice([EARLY, None]), "at_others": EARLY,
                                  "rules": ConflictsConfig(), "is_address": rng.random() < 0.3}
        fast = merge_emails(current={}, **kwargs)
        if not incoming["email"] and not incoming.get("other_emails"):
            assert ({}, {}) == (fast.changes, fast.provenance), incoming
            continue
        # A customer already holding only "zz@x.io" (which sorts last, so is never the first
        # of the set) takes the general path; leaving that address out, the outcome is the same.
        general = merge_emails(current={"other_emails": ["zz@x.io"]}, **kwargs)
        others = [a for a in general.changes.get("other_emails", []) if a != "zz@x.io"]
        assert (fast.changes.get("email"), fast.changes.get("other_emails", [])) == (
            general.changes.get("email"), others), incoming
        assert fast.provenance.get("email") == general.provenance.get("email"), incoming
