"""`explain` names the rule that decided a conflicting field, and the conflict, whichever side
won: the value kept by the rule used to be reported by how it first came in (`only_change`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from customer_sync.engine import admin
from tests.integration.conftest import World


@pytest.mark.parametrize(("conflicts", "rule"), [
    ({"default": "priority", "priority": ["crm", "desk"]}, "priority"),
    ({"default": "priority", "priority": ["desk", "crm"]}, "priority"),
    ({"default": "last_writer"}, "last_writer"),
])
async def test_explain_reports_the_rule_and_the_conflict_that_decided_a_field(
    world: Callable[..., World], conflicts: dict[str, object], rule: str,
) -> None:
    w = world(apps=("crm", "desk"), conflicts=conflicts)
    crm_id = w.apps["crm"].put({"email": "ann@example.com", "first": "Ann"})
    await w.run()
    [desk_id] = w.apps["desk"].live()
    w.apps["desk"].edit(desk_id, first="Annie")  # the older edit
    w.apps["crm"].edit(crm_id, first="Anna")  # the newer one
    await w.run()

    [conflict] = [c for c in w.conflicts() if c["kind"] == "field"]
    assert ("first_name", "decided", rule) == (conflict["field"], conflict["status"], conflict["rule"])
    [customer] = w.customers()
    explained = admin.explain(w.store, customer["customer_id"])["fields"]["first_name"]
    assert {"value": conflict["winner_value"], "app": conflict["winner_app"], "rule": rule,
            "conflict_id": conflict["id"]} == {k: explained.get(k) for k in ("value", "app", "rule", "conflict_id")}
    assert {w.by_email(app)["ann@example.com"]["first"] for app in w.apps} == {conflict["winner_value"]}


async def test_explain_reports_the_rule_and_the_conflict_that_kept_a_primary_email(
    world: Callable[..., World],
) -> None:
    """The primary email is merged by its own module; a primary a rule kept says so too."""
    w = world(apps=("crm", "desk"), conflicts={"default": "priority", "priority": ["crm", "desk"]})
    crm_id = w.apps["crm"].put({"email": "ann@example.com", "first": "Ann"})
    await w.run()
    [desk_id] = w.apps["desk"].live()
    w.apps["crm"].edit(crm_id, email="ann.crm@example.com")
    w.apps["desk"].edit(desk_id, email="ann.desk@example.com")
    await w.run()

    [conflict] = [c for c in w.conflicts() if c["kind"] == "field"]
    assert ("email", "priority", "crm", "ann.crm@example.com") == (
        conflict["field"], conflict["rule"], conflict["winner_app"], conflict["winner_value"])
    [customer] = w.customers()
    explained = admin.explain(w.store, customer["customer_id"])["fields"]["email"]
    assert {"value": "ann.crm@example.com", "app": "crm", "rule": "priority", "conflict_id": conflict["id"]} == {
        k: explained.get(k) for k in ("value", "app", "rule", "conflict_id")}
