"""A crash between any two stages, then a restart: no change lost, no effect duplicated."""

from __future__ import annotations

from collections import Counter

import pytest


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the engine catches it."""


POINTS = ["after_inbox", "after_merge", "mid_dispatch", "before_confirm"]


def seed(w) -> None:
    """Twelve customers spread over three apps, some in two apps, in several pages and batches."""
    for i in range(6):
        w.apps["crm"].put({"email": f"p{i}@x.io", "first": f"P{i}", "tags": "crm"})
    for i in range(3, 9):
        w.apps["desk"].put({"email": f"P{i}@X.io", "last": f"L{i}", "tags": "desk"})
    for i in range(9, 12):
        w.apps["shop"].put({"email": f"p{i}@x.io", "phone": f"+1415555{i:04d}"})


def crash_at(point: str, nth: int):
    seen = Counter()

    def faults(where: str) -> None:
        seen[where] += 1
        if where == point and seen[where] == nth:
            raise Crash(where)

    return faults


def state(w) -> dict[str, dict[str, tuple]]:
    return {
        app: {email: tuple(sorted((k, v) for k, v in rec.items() if k != "email"))
              for email, rec in w.by_email(app).items()}
        for app in w.apps
    }


@pytest.mark.parametrize("nth", [1, 2], ids=["first", "second"])
@pytest.mark.parametrize("point", POINTS)
async def test_crash_then_restart_loses_nothing_and_duplicates_nothing(world, point, nth):
    """Whatever stage the daemon dies in, a restart converges to the no-crash result."""
    reference = world(conflicts={"default": "last_writer"}, own_store=True)
    seed(reference)
    await reference.run()

    w = world(conflicts={"default": "last_writer"})
    seed(w)
    with pytest.raises(Crash):
        async with w.engine(faults=crash_at(point, nth)) as engine:
            await engine.run_once()
    after = await w.run()  # the restart
    assert {} == after.failed_apps

    for app in w.apps:
        assert 12 == len(w.apps[app].live()), f"{app} lost or duplicated a record"
    assert state(reference) == state(w)
    assert 12 == len(w.customers())
    creates = Counter((e["customer_id"], e["app"]) for e in w.changelog("written")
                      if (e["reason"] or "").startswith("create"))
    assert [] == [k for k, n in creates.items() if n > 1]
    again = await w.run()
    assert (0, 0) == (again.dispatch.written, again.process.planned)
