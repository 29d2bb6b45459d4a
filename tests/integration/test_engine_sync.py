"""The engine end to end over fake apps and a real SQLite store: convergence, no echoes,
field-level merge, conflicts, directions, filters, transforms, bad values and deletes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from customer_sync.engine import admin
from customer_sync.errors import AuthError, RateLimited, TransientError
from customer_sync.store.tables import DeadLetter, PendingDelete


async def test_records_converge_across_three_apps(world):
    """A customer known in one app appears, identical, in the two others."""
    w = world()
    w.apps["crm"].put({"email": "Ann@Example.com", "first": "Ann", "phone": "(415) 555-2671", "tags": "vip"})
    summary = await w.run()
    assert {} == summary.failed_apps
    for app in ("desk", "shop"):
        rec = w.by_email(app)["ann@example.com"]
        assert "Ann" == rec["first"]
        assert "+14155552671" == rec["phone"]
        assert "vip" == rec["tags"]
    assert 1 == len(w.customers())


async def test_second_pass_writes_nothing(world):
    """Once quiet, another run reads only echoes and writes nothing (no ping-pong)."""
    w = world()
    w.apps["crm"].put({"email": "a@x.io", "first": "A"})
    w.apps["desk"].put({"email": "b@x.io", "first": "B"})
    await w.run()
    calls_before = {n: dict(a.calls) for n, a in w.apps.items()}
    again = await w.run()
    assert 0 == again.dispatch.written
    assert 0 == again.process.planned
    assert {n: c.get("create", 0) for n, c in calls_before.items()} == {
        n: a.calls.get("create", 0) for n, a in w.apps.items()}


async def test_same_person_in_two_apps_with_different_case_is_one_customer(world):
    """Emails that differ only in case match one canonical customer; nobody is duplicated."""
    w = world()
    w.apps["crm"].put({"email": "Ann@Example.COM", "first": "Ann"})
    w.apps["desk"].put({"email": "ann@example.com", "last": "Lee"})
    await w.run()
    assert 1 == len(w.customers())
    for app in w.apps:
        assert 1 == len(w.apps[app].live())
        rec = w.by_email(app)["ann@example.com"]
        assert ("Ann", "Lee") == (rec["first"], rec["last"])


async def test_edits_to_different_fields_in_two_apps_both_win(world):
    """Field-level merge: one app edits the name, another the phone; both edits survive."""
    w = world()
    rid = w.apps["crm"].put({"email": "c@x.io", "first": "Cy", "phone": "+14155550100"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, first="Cyrus")
    w.apps["desk"].edit(desk_id, phone="+14155550199")
    await w.run()
    for app in w.apps:
        rec = w.by_email(app)["c@x.io"]
        assert ("Cyrus", "+14155550199") == (rec["first"], rec["phone"])
    assert [] == [c for c in w.conflicts() if c["kind"] == "field"]


async def test_last_writer_wins_and_conflict_keeps_both_values(world):
    """Both apps change one field: the later edit wins and the conflict records both values."""
    w = world(conflicts={"default": "last_writer"})
    rid = w.apps["crm"].put({"email": "d@x.io", "first": "Dee"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, first="Deanna")   # earlier
    w.apps["desk"].edit(desk_id, first="Dina")  # later
    await w.run()
    for app in w.apps:
        assert "Dina" == w.by_email(app)["d@x.io"]["first"]
    (conflict,) = [c for c in w.conflicts() if c["kind"] == "field"]
    assert ("first_name", "last_writer", "decided") == (conflict["field"], conflict["rule"], conflict["status"])
    assert {("desk", "Dina"), ("crm", "Deanna")} == {
        (conflict["winner_app"], conflict["winner_value"]), (conflict["loser_app"], conflict["loser_value"])}


async def test_last_writer_counts_the_latest_edit_even_when_it_agrees(world):
    """Two apps set a field to one value, a third to another in between: the latest edit wins,
    though it agreed with the value the daemon held already when it was read."""
    w = world(conflicts={"default": "last_writer"})
    rid = w.apps["crm"].put({"email": "e@x.io", "first": "Eve"})
    await w.run()
    ids = {app: next(iter(w.apps[app].live())) for app in ("desk", "shop")}
    w.apps["crm"].edit(rid, first="Eva")
    w.apps["shop"].edit(ids["shop"], first="Evie")
    w.apps["desk"].edit(ids["desk"], first="Eva")  # the latest edit
    w.apps["shop"].fail_next("list", TransientError("shop is down", operation="list"))
    await w.run()  # crm's edit and desk's are read; shop is down
    await w.run()  # shop's edit, older than desk's, is read now
    for app in w.apps:
        assert "Eva" == w.by_email(app)["e@x.io"]["first"], app


async def test_priority_rule_prefers_the_listed_app_whatever_the_time(world):
    """With a per-field priority list, the higher-priority app wins even with the older edit."""
    w = world(conflicts={"default": "last_writer",
                                "fields": {"first_name": {"rule": "priority", "apps": ["crm", "desk"]}}})
    rid = w.apps["crm"].put({"email": "e@x.io", "first": "Eve"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, first="Evelyn")   # earlier, but crm has priority
    w.apps["desk"].edit(desk_id, first="Eva")
    await w.run()
    for app in w.apps:
        assert "Evelyn" == w.by_email(app)["e@x.io"]["first"]
    (conflict,) = [c for c in w.conflicts() if c["kind"] == "field"]
    assert ("priority", "crm", "Evelyn", "desk", "Eva") == (
        conflict["rule"], conflict["winner_app"], conflict["winner_value"],
        conflict["loser_app"], conflict["loser_value"])


async def test_manual_rule_parks_the_conflict_and_keeps_the_value(world):
    """A `manual` conflict is parked, and until it is resolved no app's value is overwritten."""
    w = world(conflicts={"default": "manual"})
    rid = w.apps["crm"].put({"email": "f@x.io", "first": "Fay"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, first="Faye")
    w.apps["desk"].edit(desk_id, first="Fae")
    await w.run()
    parked = [c for c in w.conflicts() if c["status"] == "parked"]
    assert 1 == len(parked)
    assert "first_name" == parked[0]["field"]
    assert {"crm": "Faye", "desk": "Fae", "shop": "Fay"} == {
        a: w.by_email(a)["f@x.io"]["first"] for a in w.apps}


async def test_tags_merge_element_wise(world):
    """Two apps adding different tags both keep them; a tag removed in one app goes everywhere."""
    w = world()
    rid = w.apps["crm"].put({"email": "g@x.io", "tags": "a,b"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, tags="a,b,c")
    w.apps["desk"].edit(desk_id, tags="b,d")  # removed a, added d
    await w.run()
    for app in w.apps:
        assert "b,c,d" == w.by_email(app)["g@x.io"]["tags"]


async def test_directions_are_respected(world, base_fields):
    """A from_app field is read but never written to that app; a to_app field is never read."""
    fields = dict(base_fields)
    w = world(apps=("crm", "desk"), fields=fields, app_options={
        "desk": {"fields": {**fields, "first_name": {"field": "first", "direction": "to_app"},
                            "last_name": {"field": "last", "direction": "from_app"}}},
    })
    w.apps["crm"].put({"email": "h@x.io", "first": "Hal", "last": "Crm"})
    w.apps["desk"].put({"email": "h@x.io", "first": "Ignored", "last": "Desk"})
    await w.run()
    crm, desk = w.by_email("crm")["h@x.io"], w.by_email("desk")["h@x.io"]
    assert "Hal" == crm["first"]           # desk's first name was never read
    assert "Hal" == desk["first"]          # ...but is written to desk
    assert "Desk" == desk["last"]          # last name is never written to desk
    assert crm["last"] in ("Crm", "Desk")  # decided by the rule, read from both


async def test_filter_keeps_other_countries_out_of_an_app(world):
    """An app filtered to one country receives only customers from it."""
    w = world(apps=("crm", "shop"), app_options={
        "shop": {"filters": [{"field": "address.country", "op": "eq", "value": "de"}]},
    })
    w.apps["crm"].put({"email": "de@x.io", "country": "DE"})
    w.apps["crm"].put({"email": "fr@x.io", "country": "FR"})
    await w.run()
    assert {"de@x.io"} == set(w.by_email("shop"))


async def test_newer_than_filter_uses_created_at(world, base_fields):
    """`newer_than` over a date-time field admits only recent sign-ups."""
    fields = {**base_fields, "created_at": "signed_up"}
    w = world(apps=("crm", "shop"), fields=fields, app_options={
        "shop": {"filters": [{"field": "created_at", "op": "newer_than", "value": "180d"}]},
    })
    w.apps["crm"].put({"email": "old@x.io", "signed_up": "2020-01-01T00:00:00Z"})
    w.apps["crm"].put({"email": "new@x.io", "signed_up": "2099-01-01T00:00:00Z"})
    await w.run()
    assert {"new@x.io"} == set(w.by_email("shop"))


async def test_enum_map_and_transform_translate_both_ways(world):
    """Enum value maps and named transforms convert app values to canonical ones and back."""
    base = {"email": "email"}
    w = world(apps=("crm", "desk"), fields=base, app_options={
        "crm": {"fields": {**base, "lifecycle_stage": {"field": "stage", "values": {"L": "lead", "C": "customer"}},
                           "custom.vip": {"field": "vip", "transform": "yes_no"}}},
        "desk": {"fields": {**base, "lifecycle_stage": "stage", "custom.vip": "vip"}},
    }, custom_fields={"vip": "bool"})
    rid = w.apps["crm"].put({"email": "i@x.io", "stage": "L", "vip": "yes"})
    await w.run()
    desk = w.by_email("desk")["i@x.io"]
    assert ("lead", True) == (desk["stage"], desk["vip"])
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["desk"].edit(desk_id, stage="customer", vip=False)
    await w.run()
    crm = w.apps["crm"].live()[rid]
    assert ("C", "no") == (crm["stage"], crm["vip"])


async def test_bad_value_is_recorded_and_the_rest_of_the_record_syncs(world):
    """An invalid phone is rejected with a recorded error naming the field; other fields sync."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "j@x.io", "first": "Jo", "phone": "call me maybe"})
    summary = await w.run()
    assert 1 == summary.process.errors
    assert "Jo" == w.by_email("desk")["j@x.io"]["first"]
    (err,) = w.changelog("error")
    assert {"fields": ["phone"]} == err["diff"]
    assert "call me maybe" not in (err["reason"] or "")


async def test_rejected_write_becomes_dead_letter_and_others_continue(world):
    """A record the target refuses is parked as a dead letter; other customers still sync."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "k@x.io", "first": "__reject__"})
    w.apps["crm"].put({"email": "l@x.io", "first": "Lu"})
    await w.run()
    assert {"l@x.io"} == set(w.by_email("desk"))
    (dead,) = w.rows(DeadLetter)
    assert "desk" == dead["app"]
    assert [] == [o for o in w.outbox() if o["state"] in ("pending", "sending")]


async def test_an_app_refusing_writes_for_long_spends_no_attempts(world):
    """Writes an app refuses to take yet (RateLimited: a quota, a file open in a spreadsheet
    program) wait as long as it takes and never become dead letters; once it takes them,
    they land."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "r@x.io", "first": "Ria"})
    w.apps["desk"].fail_next("create", RateLimited("busy", app="desk", retry_after_s=60), times=1000)
    for _ in range(12):
        await w.run()
        w.clock.t += timedelta(minutes=10)
    assert w.apps["desk"].calls["create"] > 8  # more tries than max_attempts
    assert [] == w.rows(DeadLetter)
    assert set() == set(w.by_email("desk"))
    w.apps["desk"].failures.clear()  # it takes writes again
    await w.run()
    assert {"r@x.io"} == set(w.by_email("desk"))
    assert [] == [o for o in w.outbox() if o["state"] in ("pending", "sending", "dead")]


async def test_transient_failure_is_retried_later_without_loss(world):
    """A 5xx-like failure puts the writes back with a backoff; a later run delivers them."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "m@x.io", "first": "Mo"})
    w.apps["desk"].fail_next("create", TransientError("503", app="desk"), times=3)
    first = await w.run()
    assert 1 == first.waiting          # backing off: 1 s, 2 s, 4 s ...
    assert 1 <= first.dispatch.retried
    for _ in range(3):  # each later run finds the backoff over and tries again
        if w.by_email("desk"):
            break
        w.clock.t += timedelta(minutes=10)
        await w.run()
    assert {"m@x.io"} == set(w.by_email("desk"))
    assert 1 == len(w.apps["desk"].live())


async def test_auth_error_parks_one_app_and_the_others_keep_syncing(world):
    """Refused credentials park that app; the other apps still converge."""
    w = world()
    w.apps["crm"].put({"email": "n@x.io", "first": "Nia"})
    w.apps["shop"].fail_next("list", AuthError("401", app="shop"), times=5)
    summary = await w.run()
    assert ["shop"] == sorted(summary.failed_apps)
    assert {"n@x.io"} == set(w.by_email("desk"))


async def test_a_wait_longer_than_the_cap_pauses_that_app_until_then(world):
    """A vendor asking to wait a day (a RateLimited that the SDK would not sleep on) pauses that
    app until then, as status shows; the other apps keep syncing; the app resumes afterwards."""
    w = world()
    w.apps["crm"].put({"email": "p@x.io", "first": "Pia"})
    w.apps["shop"].fail_next("list", RateLimited("429", app="shop", retry_after_s=86_400))
    summary = await w.run()
    assert ["shop"] == sorted(summary.failed_apps)
    assert {"p@x.io"} == set(w.by_email("desk"))
    (shop,) = [row for row in admin.app_status(w.store, w.config, now=w.clock.t) if row["app"] == "shop"]
    assert shop["paused_until"] is not None
    assert timedelta(hours=23) < shop["paused_until"] - w.clock.t <= timedelta(days=1)

    w.apps["crm"].put({"email": "q@x.io", "first": "Quin"})
    calls = w.apps["shop"].calls.get("list", 0)
    await w.run()  # still paused: the shop is neither read nor written
    assert calls == w.apps["shop"].calls.get("list", 0)
    assert set() == set(w.by_email("shop"))

    w.clock.t += timedelta(days=1)
    resumed = await w.run()
    assert {} == resumed.failed_apps
    assert {"p@x.io", "q@x.io"} == set(w.by_email("shop"))
    (shop,) = [row for row in admin.app_status(w.store, w.config, now=w.clock.t) if row["app"] == "shop"]
    assert (None, None) == (shop["paused_until"], shop["last_error"])


async def test_a_second_record_of_one_app_with_the_same_email_joins_as_a_duplicate(world):
    """A second record of one app with an email already linked there is the same customer (one
    email shared, one customer): it joins as a duplicate, is listed for review, is never
    written to, and no second customer is created anywhere."""
    w = world(apps=("crm", "desk"))
    first = w.apps["crm"].put({"email": "o@x.io", "first": "Olga"})
    second = w.apps["crm"].put({"email": "O@x.io", "first": "Oleg"})
    await w.run()
    (dup,) = [c for c in w.conflicts() if c["kind"] == "match"]
    assert ("crm", "duplicate_in_app", "decided") == (dup["app"], dup["detail"]["reason"], dup["status"])
    assert {dup["app_record_id"], dup["detail"]["duplicate_of"]} == {first, second}
    assert 1 == len(w.customers())
    assert 1 == len(w.apps["desk"].live())


async def test_phone_matches_when_the_email_is_unknown(world):
    """A record with a new email but a known phone joins the customer holding that phone."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "u@x.io", "phone": "+14155550001"})
    w.apps["desk"].put({"phone": "(415) 555-0001", "first": "Una"})
    await w.run()
    assert 1 == len(w.customers())
    assert "Una" == w.by_email("crm")["u@x.io"]["first"]


@pytest.mark.parametrize("policy", ["unlink", "propagate", "approve", "ignore"])
async def test_delete_policies(world, policy):
    """A delete in one app follows that app's policy."""
    w = world(apps=("crm", "desk"), app_options={"crm": {"on_delete": policy}})
    rid = w.apps["crm"].put({"email": "r@x.io", "first": "Rae"})
    await w.run()
    w.apps["crm"].remove(rid)
    await w.run()
    desk = set(w.by_email("desk"))
    if policy == "propagate":
        assert set() == desk
        assert [] == w.customers()
    else:
        assert {"r@x.io"} == desk
    if policy == "approve":
        (request,) = w.rows(PendingDelete)
        assert ("crm", "pending") == (request["app"], request["status"])
    if policy == "unlink":
        (link,) = [lk for lk in w.links() if lk["app"] == "crm"]
        assert "unlinked" == link["state"]
        did = next(iter(w.apps["desk"].live()))
        w.apps["desk"].edit(did, first="Ray")
        await w.run()
        assert [] == list(w.apps["crm"].live())  # not re-created in crm


async def test_change_in_target_since_base_is_not_overwritten(world):
    """A field the target changed since its base is merged, not blindly overwritten."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    rid = w.apps["crm"].put({"email": "s@x.io", "first": "Sam"})
    await w.run()
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(rid, first="Samuel")
    async with w.engine() as engine:
        await engine.poll("crm")
        await engine.process_inbox()
        # desk changes the same field after we decided but before we write:
        w.apps["desk"].edit(desk_id, first="Sammy")
        await engine.dispatch("desk")
    assert "Sammy" == w.apps["desk"].live()[desk_id]["first"]
    await w.run()
    for app in w.apps:
        assert "Sammy" == w.by_email(app)["s@x.io"]["first"]  # the later edit wins by rule


async def test_dry_run_writes_nothing_anywhere(world):
    """Dry-run returns the plan and leaves the apps and the store untouched."""
    w = world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "t@x.io", "first": "Tia"})
    async with w.engine() as engine:
        plan = await engine.dry_run()
    assert [("desk", "create")] == [(p["app"], p["op"]) for p in plan]
    assert {"email": [None, "t@x.io"], "first_name": [None, "Tia"]} == plan[0]["fields"]
    assert {} == w.apps["desk"].live()
    assert [] == w.customers()
    await w.run()
    assert {"t@x.io"} == set(w.by_email("desk"))


async def test_merge_in_one_app_leaves_one_linked_customer(world):
    """Two records merged in the CRM become one customer; the link follows the survivor."""
    w = world(apps=("crm", "desk"))
    first = w.apps["crm"].put({"email": "v@x.io", "first": "Vic"})
    second = w.apps["crm"].put({"email": "victor@x.io", "phone": "+14155550777"})
    await w.run()
    assert 2 == len(w.customers())
    w.apps["crm"].merge(first, second)
    await w.run()
    (customer,) = w.customers()
    active = {(lk["app"], lk["app_record_id"]) for lk in w.links()
              if lk["state"] == "active" and lk["customer_id"] == customer["customer_id"]}
    assert ("crm", first) in active
    assert ("crm", second) not in active
    assert "+14155550777" == customer["values"]["phone"]  # the loser's values fill the gaps
    dup = [c for c in w.conflicts() if c["kind"] == "match"]
    # the desk holds two records of the one customer now: one is written, the other joins it
    # as a duplicate, read but never written, and listed for review
    assert [("desk", "duplicate_in_app")] == [(c["app"], c["detail"]["reason"]) for c in dup]
    assert ["duplicate"] == [lk["state"] for lk in w.links() if lk["app"] == "desk"
                             and lk["app_record_id"] == dup[0]["app_record_id"]]
    again = await w.run()
    assert 0 == again.dispatch.written


async def test_ignored_delete_is_recreated_when_the_customer_next_changes(world):
    """With on_delete = "ignore", a record deleted in one app comes back there, once, the next
    time the customer changes elsewhere."""
    w = world(apps=("crm", "desk"), app_options={"crm": {"on_delete": "ignore"}})
    rid = w.apps["crm"].put({"email": "w@x.io", "first": "Wes"})
    await w.run()
    w.apps["crm"].remove(rid)
    await w.run()
    assert {} == w.apps["crm"].live()  # ignored: nothing else happens yet
    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["desk"].edit(desk_id, first="Wesley")
    reads_before = w.apps["crm"].calls.get("read", 0)
    await w.run()
    # one check finds the record gone; the create follows without a second attempt to update it
    assert 1 == w.apps["crm"].calls.get("read", 0) - reads_before
    (again,) = w.apps["crm"].live().values()
    assert ("w@x.io", "Wesley") == (again["email"], again["first"])
    (link,) = [lk for lk in w.links() if lk["app"] == "crm"]
    assert "active" == link["state"]
    quiet = await w.run()
    assert 0 == quiet.dispatch.written
