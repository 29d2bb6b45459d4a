"""Rejected values as the operator meets them (issue 14, defect 7): a phone refused on the first
sync shows under `log EMAIL`, is counted by `status`, listed by `errors`, attached to the
customer, logged at warning without the value, and resolved once the app holds a valid one.

Driven end to end through the `customer-sync` command: two `sql` apps in SQLite files, a SQLite
store, and `run --once` between the steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from customer_sync.cli import app

CONFIG = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"
log_level = "warning"
log_format = "json"
redact_logs = {redact}
listen = "127.0.0.1:{port}"

[apps.a]
connector = "sql"

[apps.a.settings]
url = "sqlite:///{tmp}/a.db"
table = "contacts"
create_table = true
column_types = {{ email = "text", first_name = "text", phone = "text" }}

[apps.a.fields]
email = "email"
first_name = "first_name"
phone = "phone"

[apps.b]
connector = "sql"

[apps.b.settings]
url = "sqlite:///{tmp}/b.db"
table = "people"
create_table = true
column_types = {{ email = "text", first_name = "text", phone = "text" }}

[apps.b.fields]
email = "email"
first_name = "first_name"
phone = "phone"
"""

BAD_PHONE = "call me maybe 7"
GOOD_PHONE = "+16502530000"


@dataclass
class Setup:
    """A config file, its two app databases and the store, all in one tmp folder."""

    tmp: Path
    runner: CliRunner

    @property
    def config(self) -> Path:
        return self.tmp / "config.toml"

    def write_config(self, *, redact: bool = True) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.config.write_text(CONFIG.format(tmp=self.tmp.as_posix(), port=port,
                                             redact="true" if redact else "false"), encoding="utf-8")

    def cli(self, *args: str) -> Result:
        return self.runner.invoke(app, [*args, "--config", str(self.config)])

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def execute(self, app_name: str, sql: str, *params: Any) -> None:
        with sqlite3.connect(self.tmp / f"{app_name}.db") as db:
            db.execute(sql, params)

    def insert(self, app_name: str, record_id: str, email: str, phone: str) -> None:
        table = {"a": "contacts", "b": "people"}[app_name]
        self.execute(app_name, f"insert into {table} (id, email, first_name, phone, updated_at) "
                     "values (?, ?, ?, ?, ?)", record_id, email, "Ann", phone, _later())

    def set_phone(self, app_name: str, record_id: str, phone: str | None) -> None:
        table = {"a": "contacts", "b": "people"}[app_name]
        self.execute(app_name, f"update {table} set phone = ?, updated_at = ? where id = ?",
                     phone, _later(), record_id)


_clock = [datetime.now(UTC)]


def _later() -> str:
    """A modified time after every earlier one in this test run (the apps' own clocks)."""
    _clock[0] = max(_clock[0] + timedelta(milliseconds=10), datetime.now(UTC))
    return _clock[0].isoformat()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures logging on CliRunner's captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """Both apps' tables exist and the store is migrated; nothing synced yet."""
    s = Setup(tmp_path, CliRunner())
    s.write_config()
    s.ok("run", "--once")
    return s


@pytest.fixture
def rejected(setup: Setup) -> Setup:
    """Ann is created in app a with a phone that is no phone number, and synced once."""
    setup.insert("a", "a1", "ann@example.com", BAD_PHONE)
    setup.ok("run", "--once")
    return setup


def _warnings(stderr: str) -> list[dict[str, Any]]:
    return [line for line in (json.loads(x) for x in stderr.splitlines() if x.startswith("{"))
            if line.get("event") == "record.value_rejected"]


def test_a_first_sync_rejection_shows_under_log_email(rejected: Setup) -> None:
    """A value refused on the record's first sync is in the customer's log: the change-log
    error entry carries the customer, and the rejection lists app, record, field and value."""
    data = rejected.json("log", "ann@example.com")

    errors = [(e["kind"], e["app"], e["app_record_id"], e["diff"]) for e in data["entries"] if e["kind"] == "error"]
    assert [("error", "a", "a1", {"fields": ["phone"]})] == errors
    [rejection] = data["rejections"]
    assert ("a", "a1", "phone", BAD_PHONE, "open", data["customer_id"]) == (
        rejection["app"], rejection["app_record_id"], rejection["field"], rejection["raw_value"],
        rejection["status"], rejection["customer_id"])
    assert rejection["reason"].startswith("phone: ")
    text = rejected.ok("log", "ann@example.com").stdout
    assert "rejected values:" in text
    line = next(x for x in text.splitlines() if x.startswith("a ") and "phone" in x and "open" in x)
    assert f'"{BAD_PHONE}"' in line


def test_status_counts_open_rejections_per_app(rejected: Setup) -> None:
    """`status` has a `rejected` column: one in app a, none in app b."""
    data = {row["app"]: row["rejections"] for row in rejected.json("status")}

    assert {"a": 1, "b": 0} == data
    lines = rejected.ok("status").stdout.splitlines()
    header = lines[0].split()
    column = header.index("REJECTED")
    assert {"a": "1", "b": "0"} == {line.split()[0]: line.split()[column] for line in lines[1:3]}


def test_errors_lists_the_rejection_with_its_value_and_customer(rejected: Setup) -> None:
    """`errors` lists the open rejection: app, record, field, reason, raw value, the customer it
    is attached to, and when it was seen."""
    [row] = rejected.json("errors")

    assert ("a", "a1", "phone", BAD_PHONE, "ann@example.com") == (
        row["app"], row["app_record_id"], row["field"], row["raw_value"], row["customer"])
    assert row["customer_id"] is not None
    assert row["first_seen_at"] == row["last_seen_at"]
    text = rejected.ok("errors").stdout
    assert ["APP", "RECORD", "FIELD", "VALUE"] == text.splitlines()[0].split()[:4]
    assert f'a    a1      phone  "{BAD_PHONE}"' in text
    assert "ann@example.com" in text
    assert "1 rejected value(s)" in text.splitlines()[-1]


def test_errors_narrows_to_one_app_and_refuses_an_unknown_one(rejected: Setup) -> None:
    """`errors --app b` lists nothing; `errors --app nope` is bad usage: exit 2, naming the apps."""
    assert [] == rejected.json("errors", "--app", "b")
    assert 1 == len(rejected.json("errors", "--app", "a"))
    assert "no rejected values in b" == rejected.ok("errors", "--app", "b").stdout.strip()

    result = rejected.cli("errors", "--app", "nope")

    assert 2 == result.exit_code
    assert "unknown app 'nope' (configured: a, b)" in result.stderr
    assert "Traceback" not in result.output


def test_errors_limit_keeps_the_most_recently_seen(setup: Setup) -> None:
    """`errors --limit 1` shows the latest rejection and says more may be left out."""
    setup.insert("a", "a1", "ann@example.com", BAD_PHONE)
    setup.ok("run", "--once")
    setup.insert("a", "a2", "bob@example.com", "not a phone either")
    setup.ok("run", "--once")

    rows = setup.json("errors", "--limit", "1")

    assert ["a2"] == [r["app_record_id"] for r in rows]
    assert "--limit shows more" in setup.ok("errors", "--limit", "1").stdout


def test_the_rejection_is_logged_at_warning_without_the_value(setup: Setup) -> None:
    """The run logs one warning naming app, record, field and reason, with the value redacted,
    even with the redaction safety net off (the value is never handed to the logger)."""
    setup.write_config(redact=False)
    setup.insert("a", "a1", "ann@example.com", BAD_PHONE)

    result = setup.ok("run", "--once")

    [line] = _warnings(result.stderr)
    assert ("warning", "a", "a1", "phone", "[redacted]") == (
        line["level"], line["app"], line["app_record_id"], line["field"], line["value"])
    assert line["reason"].startswith("phone: ")
    assert BAD_PHONE not in result.stderr


def test_a_fixed_value_resolves_the_rejection(rejected: Setup) -> None:
    """Once the app holds a valid phone, the next run resolves the rejection: `errors` and
    `status` show none, and `log` keeps it as resolved, without the value."""
    rejected.set_phone("a", "a1", GOOD_PHONE)

    rejected.ok("run", "--once")

    assert [] == rejected.json("errors")
    assert {"a": 0, "b": 0} == {row["app"]: row["rejections"] for row in rejected.json("status")}
    [rejection] = rejected.json("log", "ann@example.com")["rejections"]
    assert ("resolved", None) == (rejection["status"], rejection["raw_value"])
    assert rejection["resolved_at"] is not None
    assert "no rejected values" == rejected.ok("errors").stdout.strip()


def test_a_value_refused_again_stays_one_rejection_brought_up_to_date(rejected: Setup) -> None:
    """The record changed to another bad phone: still one rejection, holding the new value, first
    seen when it was first refused and last seen now."""
    [before] = rejected.json("errors")
    rejected.set_phone("a", "a1", "still no phone")

    rejected.ok("run", "--once")

    [after] = rejected.json("errors")
    assert ("still no phone", before["first_seen_at"]) == (after["raw_value"], after["first_seen_at"])
    assert after["last_seen_at"] > before["last_seen_at"]


def test_a_field_cleared_in_the_app_resolves_its_rejection(rejected: Setup) -> None:
    """A record that no longer holds the refused value (the field emptied) has nothing to fix."""
    rejected.set_phone("a", "a1", None)

    rejected.ok("run", "--once")

    assert [] == rejected.json("errors")


def test_a_refused_value_overwritten_by_our_write_is_resolved(rejected: Setup) -> None:
    """The phone edited in app b is written over the refused one in app a: the rejection is
    resolved, although app a's record then comes back as an echo and is not normalized again."""
    with contextlib.closing(sqlite3.connect(rejected.tmp / "b.db")) as db:
        [(b_id,)] = db.execute("select id from people").fetchall()
    rejected.set_phone("b", b_id, GOOD_PHONE)

    rejected.ok("run", "--once")

    with contextlib.closing(sqlite3.connect(rejected.tmp / "a.db")) as db:
        assert [(GOOD_PHONE,)] == db.execute("select phone from contacts").fetchall()
    assert [] == rejected.json("errors")
    [rejection] = rejected.json("log", "ann@example.com")["rejections"]
    assert ("resolved", None) == (rejection["status"], rejection["raw_value"])
