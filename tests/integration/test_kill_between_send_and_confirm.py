"""A kill between a write's send and its confirm, then users at work, then a restart.

The write may have reached the app; its outbox row is left `sending`. Before the daemon runs
again, the apps' users go on: they edit the record that write went to, or delete it. Whatever
they did must survive the restart: the row left `sending` was decided on what the daemon knew
then, and must not undo what happened since. (Found by the kill -9 loop of
`test_daemon_kill_loop.py`; these are its minimal reproductions.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, delete, select

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.errors import TransientError
from customer_sync.store.db import open_store
from customer_sync.store.tables import DeadLetter, LinkRow


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the engine catches it."""


def crash_at(point: str):
    def faults(where: str) -> None:
        if where == point:
            raise Crash(where)

    return faults


def first_names(w) -> dict[str, list[Any]]:
    return {app: sorted(str(f.get("first")) for f in w.apps[app].live().values()) for app in w.apps}


async def test_a_write_left_sending_does_not_overwrite_a_newer_edit_in_its_app(world) -> None:
    """A user's edit of a record, made after a write to it was sent but not confirmed, is the
    latest value: the restart keeps it, in that app and every other."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    crm_id = w.apps["crm"].put({"email": "ann@x.io", "first": "Ann"})
    await w.run()
    [desk_id] = w.apps["desk"].live()
    w.apps["crm"].edit(crm_id, first="Bea")
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("before_confirm")) as engine:
            await engine.run_once()  # "Bea" reached desk; its outbox row is left `sending`
    assert {"crm": ["Bea"], "desk": ["Bea"]} == first_names(w)

    w.apps["desk"].edit(desk_id, first="Cy")  # the latest edit
    await w.run()

    assert {"crm": ["Cy"], "desk": ["Cy"]} == first_names(w)


async def test_a_write_left_unsent_is_not_sent_after_a_newer_value_was_written(world) -> None:
    """A write killed before it was sent ("Bea") and a newer one ("Cy") killed after it reached
    the app: settling them finds "Cy" written, and "Bea" is never sent afterwards (the kill loop
    saw such a stale write overwrite the newer value)."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    crm_id = w.apps["crm"].put({"email": "ann@x.io", "first": "Ann"})
    await w.run()
    w.apps["crm"].edit(crm_id, first="Bea")
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("mid_dispatch")) as engine:
            await engine.run_once()  # "Bea" claimed (`sending`), never sent
    w.apps["crm"].edit(crm_id, first="Cy")
    w.apps["desk"].fail_next("read", TransientError("desk is down", operation="read"))
    await w.run()  # "Cy" is decided beside the row left `sending`; desk is not reached
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("before_confirm")) as engine:
            await engine.run_once()  # both sent; "Cy" last: desk holds "Cy", unconfirmed
    assert {"crm": ["Cy"], "desk": ["Cy"]} == first_names(w)

    await w.run()
    await w.run()

    assert {"crm": ["Cy"], "desk": ["Cy"]} == first_names(w)
    assert [] == [o for o in w.outbox() if o["app"] == "desk"]


async def test_a_create_left_sending_is_not_refused_when_its_record_has_been_linked(world) -> None:
    """The record an unconfirmed create made is found and linked by the next poll; the create
    is then done, not refused as a write the app "already holds for another customer"."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    w.apps["crm"].put({"email": "ann@x.io", "first": "Ann"})
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("before_confirm")) as engine:
            await engine.run_once()  # desk made the record; the create is left `sending`
    assert {"crm": ["Ann"], "desk": ["Ann"]} == first_names(w)

    await w.run()

    assert [] == [(d["app"], d["error"]) for d in w.rows(DeadLetter)]
    assert {"crm": ["Ann"], "desk": ["Ann"]} == first_names(w)


async def test_a_create_left_sending_carries_the_values_decided_since(world) -> None:
    """A create that had not reached its app when the daemon died is made with the values of
    now, not those it was decided with: made later, the old values would look newest."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    crm_id = w.apps["crm"].put({"email": "ann@x.io", "first": "Ann"})
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("mid_dispatch")) as engine:
            await engine.run_once()  # the create to desk is claimed, not sent: left `sending`
    assert {"crm": ["Ann"], "desk": []} == first_names(w)

    w.apps["crm"].edit(crm_id, first="Bea")
    await w.run()

    assert {"crm": ["Bea"], "desk": ["Bea"]} == first_names(w)


async def test_the_echo_of_an_unconfirmed_write_does_not_beat_a_newer_edit(world) -> None:
    """A value the daemon wrote but did not confirm is its own, not the app user's, even when
    the user then edits another field of that record: it must not win over a newer edit."""
    w = world(apps=("crm", "desk"), conflicts={"default": "last_writer"})
    crm_id = w.apps["crm"].put({"email": "ann@x.io", "first": "Ann", "last": "Ames"})
    await w.run()
    [desk_id] = w.apps["desk"].live()
    w.apps["crm"].edit(crm_id, first="Bea")
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at("before_confirm")) as engine:
            await engine.run_once()  # "Bea" reached desk; its outbox row is left `sending`
    w.apps["crm"].edit(crm_id, first="Cy")  # the latest edit of the first name
    w.apps["desk"].fail_next("list", TransientError("desk is down", operation="list"))
    await w.run()  # "Cy" is decided; desk cannot be read (nor written) in this run

    w.apps["desk"].edit(desk_id, last="Lee")  # later, and of another field
    await w.run()

    assert {"crm": ["Cy"], "desk": ["Cy"]} == first_names(w)
    assert {"crm": ["Lee"], "desk": ["Lee"]} == {
        app: sorted(str(f.get("last")) for f in w.apps[app].live().values()) for app in w.apps}


# -- with `sql` apps: a hard delete -------------------------------------------------------------


def _sql_config(folder: Path) -> Any:
    columns = {"email": "text", "first_name": "text"}
    return load_config(data={
        "daemon": {"store_url": f"sqlite:///{folder}/store.db", "normalize_workers": 0},
        "conflicts": {"default": "last_writer"},
        "apps": {
            app: {"connector": "sql", "fields": {"email": "email", "first_name": "first_name"},
                  "reconcile_interval_s": 3600, "settings": {
                      "url": f"sqlite:///{folder}/{app}.db", "table": "people",
                      "create_table": True, "column_types": columns}}
            for app in ("crm", "desk")
        },
    })


async def test_a_create_left_sending_does_not_bring_back_a_record_deleted_since(
    tmp_path: Path,
) -> None:
    """A record an unconfirmed create made, linked by the next poll and then deleted by the app's
    user, stays deleted: the create left `sending` is not made again."""
    config = _sql_config(tmp_path)
    store = open_store(config.daemon.store_url)
    apps = {app: create_engine(f"sqlite:///{tmp_path}/{app}.db") for app in ("crm", "desk")}
    try:
        async with Engine(config, store) as engine:
            await engine.run_once()  # creates the tables
        people = {app: Table("people", MetaData(), autoload_with=apps[app]) for app in apps}
        with apps["crm"].begin() as conn:
            conn.execute(people["crm"].insert().values(id="c1", email="ann@x.io", first_name="Ann"))

        with pytest.raises(Crash):
            async with Engine(config, store, faults=crash_at("before_confirm")) as engine:
                await engine.run_once()  # desk made the record; the create is left `sending`

        def desk_linked(where: str) -> None:
            with store.transaction() as conn:
                linked = conn.execute(select(LinkRow.__table__.c.app_record_id).where(
                    LinkRow.__table__.c.app == "desk")).first()
            if where == "after_merge" and linked is not None:
                raise Crash(where)

        with pytest.raises(Crash):
            async with Engine(config, store, faults=desk_linked) as engine:
                await engine.run_once()  # the poll links desk's record; then the daemon dies

        with apps["desk"].begin() as conn:  # desk's user deletes Ann
            conn.execute(delete(people["desk"]))
        async with Engine(config, store) as engine:
            await engine.run_once(reconcile=True)  # the id scan sees the delete

        with apps["desk"].connect() as conn:
            assert [] == conn.execute(select(people["desk"].c.email)).all()
    finally:
        store.close()
        for engine in apps.values():
            engine.dispose()
