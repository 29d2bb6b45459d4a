"""The three-way merge of one incoming record against its app's base: field by field, with the
conflict rules deciding fields both sides changed, and set fields merged element by element."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_sync.config import ConflictsConfig, FieldRule
from customer_sync.conflicts.rules import Contender, Decision
from customer_sync.conflicts.three_way import FieldConflict, MergeResult, merge_record

if TYPE_CHECKING:
    from collections.abc import Mapping

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLY, MID, LATE = T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)
TAGS = frozenset({"tags"})


def _merge(
    incoming: Mapping[str, Any],
    *,
    base: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    provenance: Mapping[str, Mapping[str, Any]] | None = None,
    modified_at: datetime | None = None,
    field_modified_at: Mapping[str, datetime] | None = None,
    set_fields: frozenset[str] = frozenset(),
    rules: ConflictsConfig | None = None,
) -> MergeResult:
    """Merge a record from app `crm`."""
    return merge_record(
        app="crm",
        incoming=incoming,
        base=base,
        current=current,
        provenance=provenance or {},
        modified_at=modified_at,
        field_modified_at=field_modified_at or {},
        set_fields=set_fields,
        rules=rules or ConflictsConfig(),
    )


def _held_by(app: str, at: datetime | None, rule: str = "only_change") -> dict[str, Any]:
    """Provenance of a current value, as the merge records it."""
    return {"app": app, "at": at.isoformat() if at else None, "rule": rule}


def test_change_only_in_the_app_wins() -> None:
    """A field only the app changed since the base (current still equals it) takes the new value."""
    result = _merge(
        {"company": "B"}, base={"company": "A"}, current={"company": "A"}, modified_at=MID
    )

    assert MergeResult(
        changes={"company": "B"},
        provenance={"company": _held_by("crm", MID, "only_change")},
        observed={"company": ["A", "B"]},
    ) == result


def test_app_clearing_an_agreed_field_erases_it() -> None:
    """An app that empties a field it had agreed on erases the canonical value."""
    result = _merge({"company": None}, base={"company": "A"}, current={"company": "A"})

    assert {"company": None} == result.changes
    assert [] == result.conflicts


@pytest.mark.parametrize(
    ("base_value", "incoming_value"),
    [("A", "A"), (None, ""), ([], None)],
    ids=["same value", "None and empty text", "empty list and None"],
)
def test_field_unchanged_in_the_app_is_ignored(base_value: Any, incoming_value: Any) -> None:
    """A field equal to the app's base (all empties equal) is no change, whatever current is."""
    result = _merge(
        {"company": incoming_value}, base={"company": base_value}, current={"company": "C"}
    )

    assert MergeResult() == result


def test_value_already_agreed_is_observed_but_not_changed() -> None:
    """An app that changes a field to the value the customer already holds changes nothing."""
    result = _merge({"company": "B"}, base={"company": "A"}, current={"company": "B"})

    assert MergeResult(observed={"company": ["A", "B"]}) == result


def test_apps_editing_different_fields_both_win() -> None:
    """A field changed in another app stays while this app's change to another field applies."""
    result = _merge(
        {"company": "B", "job_title": "CTO"},
        base={"company": "A", "job_title": "CTO"},
        current={"company": "A", "job_title": "CEO"},
    )

    assert {"company": "B"} == result.changes
    assert [] == result.conflicts


@pytest.mark.parametrize(
    ("modified_at", "field_at", "current_at", "winner", "parked"),
    [
        (LATE, None, EARLY, "incoming", False),
        (EARLY, None, LATE, "current", False),
        (LATE, EARLY, MID, "current", False),
        (EARLY, LATE, MID, "incoming", False),
        (MID, None, MID, "current", False),
        (None, None, None, "current", True),
    ],
    ids=[
        "incoming newer",
        "current newer",
        "older field time beats newer record time",
        "newer field time beats older record time",
        "equal times keep current",
        "no times park",
    ],
)
def test_both_changed_is_decided_by_last_writer(
    modified_at: datetime | None,
    field_at: datetime | None,
    current_at: datetime | None,
    winner: str,
    parked: bool,
) -> None:
    """When app and customer both changed a field, the later change wins by the finest time."""
    result = _merge(
        {"company": "B"},
        base={"company": "A"},
        current={"company": "C"},
        provenance={"company": _held_by("shop", current_at)},
        modified_at=modified_at,
        field_modified_at={"company": field_at} if field_at else {},
    )

    incoming = Contender("crm", "B", field_at or modified_at)
    current = Contender("shop", "C", current_at)
    if winner == "incoming":
        decision = Decision(incoming, current, "last_writer")
        changes = {"company": "B"}
        provenance = {"company": _held_by("crm", incoming.at, "last_writer")}
    else:
        decision = Decision(current, incoming, "last_writer", parked=parked)
        # a current value the rule kept now stands by that rule (a parked one by what it was)
        changes = {}
        provenance = {} if parked else {"company": _held_by("shop", current_at, "last_writer")}
    assert MergeResult(
        changes=changes,
        provenance=provenance,
        conflicts=[FieldConflict("company", decision)],
        observed={"company": ["A", "B"]},
    ) == result


@pytest.mark.parametrize(
    ("rules", "winner", "rule"),
    [
        (ConflictsConfig(default="priority", priority=["crm"]), "B", "priority"),
        (ConflictsConfig(default="priority", priority=["shop"]), "C", "priority"),
        (ConflictsConfig(default="priority", priority=["erp"]), "C", "last_writer"),
        (
            ConflictsConfig(fields={"company": FieldRule(rule="priority", apps=["crm"])}),
            "B",
            "priority",
        ),
    ],
    ids=[
        "incoming listed beats newer unlisted",
        "current listed beats unlisted",
        "two unlisted fall back to last writer",
        "per-field rule overrides the default",
    ],
)
def test_both_changed_is_decided_by_priority(
    rules: ConflictsConfig, winner: str, rule: str
) -> None:
    """Under `priority` a listed app beats an unlisted one; two unlisted apps go by last writer."""
    result = _merge(
        {"company": "B"},
        base={"company": "A"},
        current={"company": "C"},
        provenance={"company": _held_by("shop", LATE)},
        modified_at=EARLY,
        rules=rules,
    )

    assert [("company", winner, rule, False)] == [
        (c.field, c.decision.winner.value, c.decision.rule, c.decision.parked)
        for c in result.conflicts
    ]
    assert ({"company": "B"} if winner == "B" else {}) == result.changes


def test_manual_rule_parks_and_keeps_current() -> None:
    """On conflict a `manual` field is parked and keeps its current value, even an older one."""
    rules = ConflictsConfig(fields={"company": FieldRule(rule="manual")})

    result = _merge(
        {"company": "B"},
        base={"company": "A"},
        current={"company": "C"},
        provenance={"company": _held_by("shop", EARLY)},
        modified_at=LATE,
        rules=rules,
    )

    decision = Decision(
        winner=Contender("shop", "C", EARLY),
        loser=Contender("crm", "B", LATE),
        rule="manual",
        parked=True,
    )
    assert MergeResult(
        conflicts=[FieldConflict("company", decision)],
        observed={"company": ["A", "B"]},
    ) == result


@pytest.mark.parametrize(
    ("base", "current", "incoming", "merged"),
    [
        (["a"], ["a", "x"], ["a", "y"], ["a", "x", "y"]),
        (["a", "b"], ["a", "b", "x"], ["a"], ["a", "x"]),
        (["a", "b"], ["a", "x"], ["a", "b", "y"], ["a", "x", "y"]),
        (None, ["x"], ["y"], ["x", "y"]),
    ],
    ids=[
        "both apps add different tags",
        "removal since base applies",
        "other app's removal survives this app's addition",
        "first contact unites",
    ],
)
def test_set_fields_merge_element_wise(
    base: list[str] | None, current: list[str], incoming: list[str], merged: list[str]
) -> None:
    """Tags merge element-wise: additions and removals since the base all apply, no conflict."""
    result = _merge(
        {"tags": incoming},
        base=None if base is None else {"tags": base},
        current={"tags": current},
        modified_at=MID,
        set_fields=TAGS,
    )

    assert MergeResult(
        changes={"tags": merged},
        provenance={"tags": _held_by("crm", MID, "set_merge")},
        observed={"tags": [base, incoming]},
    ) == result


@pytest.mark.parametrize(
    ("base", "incoming"),
    [(["a", "b"], ["a"]), (None, [])],
    ids=["removal already applied", "first contact without tags"],
)
def test_set_merge_that_changes_nothing_is_no_change(
    base: list[str] | None, incoming: list[str]
) -> None:
    """A set merge whose result equals the current set changes nothing."""
    result = _merge(
        {"tags": incoming},
        base=None if base is None else {"tags": base},
        current={"tags": ["a"]},
        set_fields=TAGS,
    )

    assert ({}, []) == (result.changes, result.conflicts)


@pytest.mark.parametrize(
    ("base", "incoming_value"),
    [(None, None), (None, ""), ({}, None), ({"email": "a@example.com"}, "")],
    ids=["no base, None", "no base, empty text", "empty base", "base without this field"],
)
def test_first_contact_with_empty_value_does_not_erase(
    base: dict[str, Any] | None, incoming_value: Any
) -> None:
    """An app meeting a customer for the first time without a value leaves the current value."""
    result = _merge(
        {"company": incoming_value},
        base=base,
        current={"company": "C"},
        provenance={"company": _held_by("shop", EARLY)},
        modified_at=LATE,
    )

    assert ({}, []) == (result.changes, result.conflicts)


def test_first_contact_fills_an_empty_field() -> None:
    """On first contact, a value for a field the customer lacks is taken as the first value."""
    result = _merge({"company": "B"}, base=None, current={}, modified_at=MID)

    assert MergeResult(
        changes={"company": "B"},
        provenance={"company": _held_by("crm", MID, "first_value")},
        observed={"company": [None, "B"]},
    ) == result


@pytest.mark.parametrize(
    ("modified_at", "winner"),
    [(LATE, "B"), (None, "C")],
    ids=["incoming newer wins", "unknown incoming time loses to known current"],
)
def test_first_contact_with_different_value_is_a_conflict(
    modified_at: datetime | None, winner: str
) -> None:
    """An app bringing a value unlike the customer's when they first meet is a conflict."""
    result = _merge(
        {"company": "B"},
        base=None,
        current={"company": "C"},
        provenance={"company": _held_by("shop", EARLY)},
        modified_at=modified_at,
    )

    assert [("company", winner)] == [(c.field, c.decision.winner.value) for c in result.conflicts]
    assert ({"company": "B"} if winner == "B" else {}) == result.changes


def test_observed_records_base_and_incoming_of_each_changed_field() -> None:
    """`observed` holds [base, incoming] for each field the app changed, nothing for the rest."""
    result = _merge(
        {"company": "B", "job_title": "CTO", "last_name": "Lovelace", "tags": ["x"]},
        base={"company": "A", "job_title": "CTO", "tags": []},
        current={"company": "A", "job_title": "CTO", "tags": []},
        set_fields=TAGS,
    )

    assert {
        "company": ["A", "B"],
        "last_name": [None, "Lovelace"],
        "tags": [[], ["x"]],
    } == result.observed


def test_an_empty_field_never_held_is_not_an_observation() -> None:
    """A record new to the customer lists every mapped field, most of them often empty: empty
    with no base is "nothing, still nothing" and stays out of `observed`; emptied after a base
    value is a change and is observed."""
    first = _merge({"email": "ada@x.io", "phone": None, "city": ""}, base=None, current={})
    assert {"email": [None, "ada@x.io"]} == first.observed
    emptied = _merge({"phone": None, "city": None}, base={"phone": "+1415", "city": None},
                     current={"phone": "+1415"})
    assert {"phone": ["+1415", None]} == emptied.observed


def test_current_value_from_the_same_app_that_wins_is_kept() -> None:
    """A newer current value held by the same app wins, and the older incoming one is not used."""
    result = _merge(
        {"company": "B"},
        base={"company": "A"},
        current={"company": "C"},
        provenance={"company": _held_by("crm", LATE)},
        modified_at=EARLY,
    )

    assert ["C"] == [c.decision.winner.value for c in result.conflicts]
    assert {} == result.changes


@pytest.mark.parametrize(("value", "empty"), [
    (None, True), ("", True), ([], True),
    ("a", False), (["x"], False), (0, False), (False, False), ({}, False), (0.0, False),
])
def test_what_counts_as_no_value(value: Any, empty: bool) -> None:
    from customer_sync.conflicts.three_way import is_empty

    assert empty is is_empty(value)


def test_a_customer_with_nothing_yet_merges_as_the_general_rules_say() -> None:
    """The shortcut for a new customer (no base, nothing current) gives exactly what the general
    field-by-field merge gives, for empty, set, scalar and per-field-timed values."""
    import random

    rng = random.Random(7)
    pool: list[Any] = [None, "", [], "x", "Ada", 0, 5, False, ["b", "a", "b"], ["z"], {"k": 1}, "  "]
    names = [f"f{i}" for i in range(8)]
    for _ in range(300):
        incoming = {n: rng.choice(pool) for n in rng.sample(names, rng.randint(0, 8))}
        set_fields = frozenset(n for n in names if rng.random() < 0.3 and isinstance(incoming.get(n), list | None))
        field_times = {n: LATE for n in incoming if rng.random() < 0.3}
        kwargs: dict[str, Any] = {"app": "crm", "incoming": incoming, "base": None, "provenance": {},
                                  "modified_at": rng.choice([EARLY, None]), "field_modified_at": field_times,
                                  "set_fields": set_fields, "rules": ConflictsConfig()}
        fast = merge_record(current={}, **kwargs)
        general = merge_record(current={"unrelated": "held"}, **kwargs)  # takes the general loop
        assert general == fast, incoming


def test_agreeing_with_a_later_time_moves_the_provenance_to_that_app() -> None:
    """An app holding the value the customer has, with a later time, becomes its provenance:
    the next conflict on the field is measured against that later time."""
    result = _merge(incoming={"first_name": "Ann"}, base=None, current={"first_name": "Ann"},
                    provenance={"first_name": _held_by("shop", T0)}, modified_at=T0 + timedelta(hours=1))

    assert {} == result.changes
    assert {"first_name": {"app": "crm", "at": (T0 + timedelta(hours=1)).isoformat(), "rule": "agreed"}} == result.provenance


def test_agreeing_with_an_earlier_time_leaves_the_provenance() -> None:
    """An app holding the customer's value, with an earlier time, does not weaken its claim."""
    result = _merge(incoming={"first_name": "Ann"}, base=None, current={"first_name": "Ann"},
                    provenance={"first_name": _held_by("shop", T0)}, modified_at=T0 - timedelta(hours=1))

    assert ({}, {}) == (result.changes, result.provenance)


_apps_st = st.lists(st.sampled_from(["crm", "desk", "shop", "erp"]), min_size=2, max_size=4, unique=True)


@settings(max_examples=300, deadline=None)
@given(apps=_apps_st, data=st.data(),
       rules=st.sampled_from([ConflictsConfig(default="last_writer"),
                              ConflictsConfig(default="priority", priority=["desk", "crm"])]))
def test_first_meeting_ends_the_same_whatever_order_the_apps_come_in(apps, data, rules) -> None:
    """Each app holds a value of one field with its own time (all distinct): merged into a new
    customer in any order, the field ends with the same value."""
    minutes = data.draw(st.lists(st.integers(0, 10_000), min_size=len(apps), max_size=len(apps), unique=True))
    held = {app: (data.draw(st.sampled_from(["Ann", "Bea", "Cid"])), T0 + timedelta(minutes=m))
            for app, m in zip(apps, minutes, strict=True)}
    order = data.draw(st.permutations(apps))

    def fold(sequence: list[str]) -> Any:
        values: dict[str, Any] = {}
        provenance: dict[str, Any] = {}
        for app in sequence:
            value, at = held[app]
            result = merge_record(app=app, incoming={"first_name": value}, base=None, current=values,
                                  provenance=provenance, modified_at=at, field_modified_at={},
                                  set_fields=frozenset(), rules=rules)
            values = {**values, **result.changes}
            provenance = {**provenance, **result.provenance}
        return values["first_name"]

    assert fold(sorted(apps)) == fold(list(order))


# Each app's part in the customer's emails: an email list (its record is an address), apps
# holding the set of addresses, apps with one email field.
_ROLES = {"list": "address", "desk": "set", "erp": "set", "crm": "single", "shop": "single"}
_ADDRESSES = ["ann@x.io", "ann@y.io", "bea@x.io", "cy@x.io"]
_CONSENT = ["subscribed", "unsubscribed", "cleaned", "bounced", "pending", "transactional", "unknown", None]


@st.composite
def _email_and_consent_record(draw: st.DrawFn, app: str) -> dict[str, Any]:
    """A record of `app` with its emails (as its role allows) and its consent."""
    record: dict[str, Any] = {"email": draw(st.sampled_from(_ADDRESSES))}
    if _ROLES[app] == "set":
        record["email"] = draw(st.sampled_from([*_ADDRESSES, None]))
        record["other_emails"] = sorted(set(draw(st.lists(st.sampled_from(_ADDRESSES), max_size=3))))
    record["email_consent"] = draw(st.sampled_from(_CONSENT))
    if draw(st.booleans()):
        record["email_consent_at"] = draw(st.sampled_from(
            [None, *(f"2026-01-0{d}T00:00:00+00:00" for d in range(1, 4))]))
    return record


@settings(max_examples=400, deadline=None)
@given(data=st.data(),
       rules=st.sampled_from([
           ConflictsConfig(default="last_writer"),
           ConflictsConfig(default="priority", priority=["desk", "crm"], consent_source=["list"]),
           ConflictsConfig(default="last_writer", consent_source=["list", "crm"]),
           ConflictsConfig(default="priority", priority=["shop"],
                           fields={"email_consent": FieldRule(rule="manual")}),
       ]))
def test_emails_and_consent_end_the_same_whatever_order_the_apps_come_in(data, rules) -> None:
    """Each app (an email list, apps holding the set of addresses, apps with one email field)
    holds addresses and a consent value with its own time: merged into a new customer in any
    order, the primary, the set of addresses and the consent (with its time) end the same."""
    apps = data.draw(st.lists(st.sampled_from(sorted(_ROLES)), min_size=2, max_size=5, unique=True))
    minutes = data.draw(st.lists(st.integers(0, 10_000), min_size=len(apps), max_size=len(apps), unique=True))
    held = {app: (data.draw(_email_and_consent_record(app)), T0 + timedelta(minutes=m))
            for app, m in zip(apps, minutes, strict=True)}
    order = data.draw(st.permutations(apps))

    def fold(sequence: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        provenance: dict[str, Any] = {}
        for app in sequence:
            record, at = held[app]
            result = merge_record(app=app, incoming=record, base=None, current=values,
                                  provenance=provenance, modified_at=at, field_modified_at={},
                                  set_fields=frozenset({"other_emails"} & set(record)), rules=rules,
                                  address_apps=frozenset({"list"}))
            values = {**values, **result.changes}
            provenance = {**provenance, **result.provenance}
        return {k: v for k, v in values.items() if v not in (None, [])}

    first, then = fold(sorted(apps)), fold(list(order))
    assert first == then
    every = {a for record, _ in held.values() for a in [record["email"], *record.get("other_emails", [])] if a}
    assert every == {first.get("email"), *first.get("other_emails", [])} - {None}, "an address was lost"


def test_a_new_customer_merges_emails_and_consent_as_the_general_rules_say() -> None:
    """The shortcut for a new customer gives what the general merge gives for the fields with
    merges of their own (emails, consent)."""
    import random

    rng = random.Random(11)
    for _ in range(300):
        incoming: dict[str, Any] = {"email": rng.choice([None, "", "a@x.io", "b@x.io"]),
                                    "email_consent": rng.choice(_CONSENT),
                                    "first_name": rng.choice([None, "Ann"])}
        if rng.random() < 0.5:
            incoming["other_emails"] = rng.sample(["a@x.io", "c@x.io"], rng.randint(0, 2))
        if rng.random() < 0.5:
            incoming["email_consent_at"] = rng.choice([None, "2026-01-02T00:00:00+00:00"])
        kwargs: dict[str, Any] = {"app": rng.choice(["crm", "list"]), "incoming": incoming, "base": None,
                                  "provenance": {}, "modified_at": rng.choice([EARLY, None]),
                                  "field_modified_at": {}, "set_fields": frozenset({"other_emails"}),
                                  "rules": ConflictsConfig(), "address_apps": frozenset({"list"})}
        fast = merge_record(current={}, **kwargs)
        general = merge_record(current={"unrelated": "held"}, **kwargs)
        assert general == fast, incoming
