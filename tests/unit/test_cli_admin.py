"""`pause`, `resume` and `dead-letters` against two `sql` apps and a real store (the setup of
`test_cli`): each takes --config and --json, and ends with a message and an exit code."""

from __future__ import annotations

from tests.unit import test_cli
from tests.unit.test_cli import Setup

# the fixtures of `test_cli`: a config over two sql apps, and one customer synced between them
_restore_logging, setup, synced = test_cli._restore_logging, test_cli.setup, test_cli.synced

_TABLE = ("create table people (id text primary key, updated_at timestamp, email text, "
          "first_name text{check})")


def test_a_paused_app_is_left_alone_until_resumed(synced: Setup) -> None:
    assert "b paused" in synced.ok("pause", "b").stdout
    assert "b was paused already" in synced.ok("pause", "b").stdout
    assert {"app": "b", "paused": True, "changed": False} == synced.json("pause", "b")
    assert "paused by operator" in synced.ok("status").stdout
    [b] = [row for row in synced.json("status") if row["app"] == "b"]
    assert b["paused_by_operator_at"] is not None

    synced.insert("a", "a2", "bea@example.com", "Bea")
    synced.insert("b", "b9", "cy@example.com", "Cy")
    synced.ok("run", "--once")
    assert ["ann@example.com", "cy@example.com"] == [r["email"] for r in synced.rows("b")]
    assert ["ann@example.com", "bea@example.com"] == [r["email"].lower() for r in synced.rows("a")]  # b unread

    assert "b resumed" in synced.ok("resume", "b").stdout
    assert {"app": "b", "paused": False, "changed": False} == synced.json("resume", "b")
    synced.ok("run", "--once")
    assert ["ann@example.com", "bea@example.com", "cy@example.com"] == [r["email"] for r in synced.rows("b")]
    assert ["ann@example.com", "bea@example.com", "cy@example.com"] == [r["email"].lower() for r in synced.rows("a")]
    assert "paused by operator" not in synced.ok("status").stdout


def test_pausing_an_unknown_app_exits_2(synced: Setup) -> None:
    for command in ("pause", "resume"):
        result = synced.cli(command, "nope")
        assert 2 == result.exit_code
        assert "unknown app 'nope'" in result.stderr


def test_a_dead_letter_is_listed_and_replayed(synced: Setup) -> None:
    synced.execute("b", "drop table people")
    synced.execute("b", _TABLE.format(check=" check (first_name <> 'Refused')"))
    synced.insert("a", "a2", "bea@example.com", "Refused")
    synced.ok("run", "--once")
    assert [] == synced.rows("b")

    [dead] = synced.json("dead-letters")
    assert ("b", {"op": "create", "fields": ["email", "first_name"]}) == (dead["app"], dead["payload"])
    listed = synced.ok("dead-letters").stdout
    assert "CHECK constraint failed" in listed
    assert "customer-sync dead-letters replay ID" in listed
    assert [dead["id"]] == [d["id"] for d in synced.json("dead-letters", "list")]

    synced.execute("b", "drop table people")
    synced.execute("b", _TABLE.format(check=""))
    replayed = synced.ok("dead-letters", "replay", str(dead["id"])).stdout
    assert f"dead letter {dead['id']} replayed: 1 write(s) to b" in replayed
    assert "replayed already" in synced.ok("dead-letters", "replay", str(dead["id"])).stdout
    synced.ok("run", "--once")
    assert [("bea@example.com", "Refused")] == [(r["email"], r["first_name"]) for r in synced.rows("b")]
    assert "no dead letters" in synced.ok("dead-letters").stdout
    assert [dead["id"]] == [d["id"] for d in synced.json("dead-letters", "--all")]

    unknown = synced.cli("dead-letters", "replay", "999")
    assert 1 == unknown.exit_code
    assert "no dead letter 999" in unknown.stderr
