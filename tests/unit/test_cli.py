"""The `customer-sync` command line, driven end to end: two `sql` apps in SQLite files, a SQLite
store, and `run --once` between the steps, exactly as an operator would."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from customer_sync import __version__
from customer_sync.cli import app

CONFIG = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"
log_level = "{log_level}"
log_format = "json"
redact_logs = {redact}
poll_interval_s = 0.2
listen = "127.0.0.1:{port}"

[conflicts]
default = "{rule}"

[apps.a]
connector = "sql"
on_delete = "{a_on_delete}"
{a_extra}

[apps.a.settings]
url = "sqlite:///{tmp}/a.db"
table = "contacts"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.a.fields]
email = "email"
first_name = "first_name"

[apps.b]
connector = "sql"

[apps.b.settings]
url = "sqlite:///{tmp}/b.db"
table = "people"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.b.fields]
email = "email"
first_name = "first_name"
"""


@dataclass
class Setup:
    """A config file, its two app databases and the store, all in one tmp folder."""

    tmp: Path
    runner: CliRunner

    @property
    def config(self) -> Path:
        return self.tmp / "config.toml"

    def write_config(self, *, rule: str = "last_writer", a_on_delete: str = "unlink",
                     a_extra: str = "", log_level: str = "warning", redact: bool = True) -> Path:
        self.config.write_text(CONFIG.format(
            tmp=self.tmp.as_posix(), rule=rule, a_on_delete=a_on_delete, a_extra=a_extra,
            log_level=log_level, redact="true" if redact else "false", port=_free_port(),
        ), encoding="utf-8")
        return self.config

    def cli(self, *args: str) -> Result:
        """Run one command against this setup's config; never re-raises (exit code tells)."""
        return self.runner.invoke(app, [*args, "--config", str(self.config)])

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def rows(self, app_name: str) -> list[dict[str, Any]]:
        table = {"a": "contacts", "b": "people"}[app_name]
        with sqlite3.connect(self.tmp / f"{app_name}.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f"select * from {table} order by email")]

    def execute(self, app_name: str, sql: str, *params: Any) -> None:
        with sqlite3.connect(self.tmp / f"{app_name}.db") as db:
            db.execute(sql, params)

    def insert(self, app_name: str, record_id: str, email: str, first_name: str) -> None:
        table = {"a": "contacts", "b": "people"}[app_name]
        self.execute(app_name, f"insert into {table} (id, email, first_name, updated_at) values (?, ?, ?, ?)",
                     record_id, email, first_name, _later())

    def set_first_name(self, app_name: str, email: str, first_name: str) -> None:
        table = {"a": "contacts", "b": "people"}[app_name]
        self.execute(app_name, f"update {table} set first_name = ?, updated_at = ? where lower(email) = ?",
                     first_name, _later(), email.lower())

    def store_count(self, table: str) -> int:
        with sqlite3.connect(self.tmp / "store.db") as db:
            return db.execute(f"select count(*) from {table}").fetchone()[0]


def _free_port() -> int:
    """A port nobody listens on now, so that parallel runs never share the daemon's address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    s = Setup(tmp_path, CliRunner())
    s.write_config()
    return s


@pytest.fixture
def synced(setup: Setup) -> Setup:
    """Both apps' tables exist and ann@example.com, created in app a, is synced to app b."""
    setup.ok("run", "--once")  # creates the tables
    setup.insert("a", "a1", "Ann@Example.com", "Ann")
    setup.ok("run", "--once")
    assert [("ann@example.com", "Ann")] == [(r["email"], r["first_name"]) for r in setup.rows("b")]
    return setup


# -- version, connectors -------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    """`--version` prints the installed version and exits 0."""
    result = CliRunner().invoke(app, ["--version"])

    assert 0 == result.exit_code
    assert f"customer-sync {__version__}" == result.stdout.strip()


def test_shell_completion_is_on_and_completes_commands_and_options() -> None:
    """`--show-completion SHELL` prints the script that `--install-completion` installs, and
    the script's callback completes commands and their options."""
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="customer-sync")
    assert 0 == script.exit_code, script.output
    assert "_CUSTOMER_SYNC_COMPLETE=complete_bash" in script.stdout

    def complete(words: str) -> list[str]:
        env = {"_CUSTOMER_SYNC_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        result = CliRunner().invoke(app, [], prog_name="customer-sync", env=env)
        assert 0 == result.exit_code, result.output
        return result.stdout.split()

    assert ["connectors", "conflicts"] == complete("customer-sync con")
    assert ["--once"] == complete("customer-sync run --on")


def test_connectors_lists_the_bundled_sql_connector() -> None:
    """`connectors` names each installed connector with its distribution and capabilities."""
    result = CliRunner().invoke(app, ["connectors", "--json"])

    assert 0 == result.exit_code, result.stderr
    sql = {c["name"]: c for c in json.loads(result.stdout)}["sql"]
    assert "customer-sync" == sql["distribution"]
    assert "ID_SCAN" in sql["capabilities"]
    assert sql["batch_size"] >= 1
    text = CliRunner().invoke(app, ["connectors"]).stdout
    assert any(line.split()[:2] == ["sql", "customer-sync"] for line in text.splitlines())


def test_connectors_takes_a_config_like_every_command_and_names_its_apps(setup: Setup) -> None:
    """`connectors --config F` is accepted (every command takes --config) and names the apps
    of F that use each connector; without a config it needs none."""
    data = setup.json("connectors")

    assert ["a", "b"] == {c["name"]: c for c in data}["sql"]["apps"]
    text = setup.ok("connectors").stdout
    assert "APPS" in text.splitlines()[0]
    assert any(line.split()[:2] == ["sql", "customer-sync"] and line.endswith("a, b")
               for line in text.splitlines())


# -- check ---------------------------------------------------------------------------------------


def test_check_on_a_good_config_says_ok_for_every_step(synced: Setup) -> None:
    """`check` prints one ok line per step and exits 0 when config, store and apps are fine."""
    result = synced.cli("check", "--connect")

    assert 0 == result.exit_code, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok config", "ok store", "ok apps", "ok app a", "ok app b"]
    assert str(synced.tmp) in lines[1]  # the store, named


def test_check_before_the_first_run_says_the_store_will_be_created(setup: Setup) -> None:
    """On a fresh clone the store does not exist yet: `check` says the daemon will create it,
    exits 0, and creates nothing."""
    result = setup.cli("check")

    assert 0 == result.exit_code, result.output
    [store_line] = [line for line in result.stdout.splitlines() if line.startswith("ok store:")]
    assert store_line.endswith("does not exist yet: the daemon creates it when it starts")
    assert not (setup.tmp / "store.db").exists()


def test_check_of_a_store_that_cannot_be_created_names_daemon_store_url(setup: Setup) -> None:
    """A store under a file cannot be created: exit 2, one line naming the setting."""
    (setup.tmp / "a-file").write_text("", encoding="utf-8")
    setup.config.write_text(setup.config.read_text(encoding="utf-8").replace(
        "/store.db", "/a-file/store.db"), encoding="utf-8")

    result = setup.cli("check")

    assert 2 == result.exit_code
    assert result.stderr.startswith("error: daemon.store_url: cannot create the store at ")
    assert "Traceback" not in result.output


def test_check_exits_1_and_names_a_parked_app(synced: Setup) -> None:
    """A parked app (its credentials were refused) makes `check` fail, naming the app and why."""
    with sqlite3.connect(synced.tmp / "store.db") as db:
        db.execute("update app_state set parked = 1, last_error = 'AuthError: refused' where app = 'b'")

    result = synced.cli("check")

    assert 1 == result.exit_code
    assert "app b: parked: AuthError: refused" in result.stderr
    assert "ok apps" not in result.stdout


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("[daemon]\n", '[daemon]\ncolour = "blue"\n'), "daemon.colour: unknown key"),
        (lambda t: t.replace('[apps.b]\nconnector = "sql"', '[apps.b]\nconnector = "nosuch"'),
         "apps.b.connector: unknown connector 'nosuch'"),
        (lambda t: t.replace('table = "contacts"', 'table = "contacts"\npassword = "${CS_TEST_UNSET_PW}"'),
         "apps.a.settings.password: environment variable CS_TEST_UNSET_PW is not set"),
        (lambda t: t.replace('on_delete = "unlink"', 'on_delete = "unlink"\ndirection = "sideways"'),
         "apps.a.direction: "),
    ],
    ids=["unknown-key", "unknown-connector", "missing-env-secret", "bad-direction"],
)
def test_check_on_a_bad_config_prints_file_and_key_path_and_exits_2(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, edit: Any, expected: str
) -> None:
    """A config error prints one `FILE: key.path: what` line per problem and exits 2."""
    monkeypatch.delenv("CS_TEST_UNSET_PW", raising=False)
    setup.config.write_text(edit(setup.config.read_text()))

    result = setup.cli("check")

    assert 2 == result.exit_code
    assert f"{setup.config}: {expected}" in result.stderr
    assert all(line.startswith(f"{setup.config}: ") for line in result.stderr.splitlines())
    assert "Traceback" not in result.output
    assert "" == result.stdout


def test_check_reports_every_config_problem_at_once(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown key, a missing env secret and an unknown connector are reported in one run."""
    monkeypatch.delenv("CS_TEST_UNSET_PW", raising=False)
    text = setup.config.read_text()
    text = text.replace("[daemon]\n", '[daemon]\ncolour = "blue"\n')
    text = text.replace('table = "contacts"', 'table = "contacts"\npassword = "${CS_TEST_UNSET_PW}"')
    text = text.replace('[apps.b]\nconnector = "sql"', '[apps.b]\nconnector = "nosuch"')
    setup.config.write_text(text)

    result = setup.cli("check")

    assert 2 == result.exit_code
    assert {"daemon.colour", "apps.a.settings.password", "apps.b.connector"} == {
        line.split(": ")[1] for line in result.stderr.splitlines()}


HUBSPOT_APP = """
[apps.hs]
connector = "hubspot"
{extra}

[apps.hs.settings]
access_token = "${{CS_TEST_HS_TOKEN}}"
{settings}
"""


def _add_hubspot(*, extra: str = "", settings: str = "") -> Any:
    """An edit that appends a hubspot app (default field map) to the config."""
    return lambda t: t + HUBSPOT_APP.format(extra=extra, settings=settings)


# One edit per value that `check` used to accept, with the key its problem line must name.
NEWLY_REFUSED = [
    pytest.param(lambda t: t.replace('first_name = "first_name"\n\n[apps.b]',
                                     'first_name = "first_name"\n'
                                     'last_name = { field = "first_name", direction = "to_app" }'
                                     '\n\n[apps.b]'),
                 "apps.a.fields.last_name.field", id="1-app-field-mapped-twice"),
    pytest.param(_add_hubspot(settings='base_url = "not a url"'),
                 "apps.hs.settings.base_url", id="2-base-url-not-a-url"),
    pytest.param(_add_hubspot(settings='base_url = "http://169.254.169.254"'),
                 "apps.hs.settings.base_url", id="3-metadata-address"),
    pytest.param(lambda t: t.replace("[daemon]\n", '[daemon]\ndefault_region = "XX"\n'),
                 "daemon.default_region", id="4-unknown-region"),
    pytest.param(lambda t: t.replace('on_delete = "unlink"',
                                     'on_delete = "unlink"\nenabled = "yes"'),
                 "apps.a.enabled", id="5-string-boolean"),
    pytest.param(lambda t: re.sub(r'listen = ".*"', 'listen = "8080"', t),
                 "daemon.listen", id="6-listen-not-host-port"),
    pytest.param(lambda t: t.replace("[daemon]\n", '[daemon]\npublic_url = "sync.example.com"\n'),
                 "daemon.public_url", id="6-public-url-not-http"),
    pytest.param(lambda t: t.replace('store_url = "sqlite:', 'store_url = "mysql:'),
                 "daemon.store_url", id="7-unknown-store-scheme"),
    pytest.param(_add_hubspot(settings="webhook_max_age_s = 31536000"),
                 "apps.hs.settings.webhook_max_age_s", id="8-webhook-max-age-a-year"),
]


@pytest.mark.parametrize(("edit", "key"), NEWLY_REFUSED)
@pytest.mark.parametrize("command", [["check"], ["run", "--once"]], ids=["check", "run"])
def test_a_value_that_cannot_work_is_refused_by_check_and_run_naming_its_key(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, edit: Any, key: str, command: list[str]
) -> None:
    """`check` and `run` exit 2 with one line naming the key, and create no store."""
    monkeypatch.setenv("CS_TEST_HS_TOKEN", "hs-token-for-tests")
    setup.config.write_text(edit(setup.config.read_text()))

    result = setup.cli(*command)

    assert 2 == result.exit_code, (result.stdout, result.stderr)
    assert [key] == [line.split(": ")[1] for line in result.stderr.splitlines()]
    assert "Traceback" not in result.output
    assert not (setup.tmp / "store.db").exists()


def test_a_hubspot_app_on_loopback_passes_the_config_check(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vendor app pointed at a loopback simulator passes the config step of `check`."""
    monkeypatch.setenv("CS_TEST_HS_TOKEN", "hs-token-for-tests")
    setup.config.write_text(
        _add_hubspot(settings='base_url = "http://127.0.0.1:8123"')(setup.config.read_text())
    )

    result = setup.cli("check")

    assert "ok config" in result.stdout, result.stderr
    assert "hs-token-for-tests" not in result.output


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config file that does not exist is a config error (exit 2), not a traceback."""
    result = CliRunner().invoke(app, ["status", "--config", str(tmp_path / "nope.toml")])

    assert 2 == result.exit_code
    assert f"{tmp_path / 'nope.toml'}: file not found" in result.stderr


# -- run -----------------------------------------------------------------------------------------


def test_run_once_syncs_a_new_row_from_one_app_to_the_other(setup: Setup) -> None:
    """`run --once` carries a row inserted in app a into app b and prints the pass summary."""
    setup.ok("run", "--once")
    setup.insert("a", "a1", "Ann@Example.com", "Ann")

    result = setup.ok("run", "--once")

    assert [("ann@example.com", "Ann")] == [(r["email"], r["first_name"]) for r in setup.rows("b")]
    assert result.stdout.startswith("pass finished in ")
    summary = {
        label.strip(): value
        for label, value in (line.rsplit("  ", 1) for line in result.stdout.splitlines()[1:])
    }
    # a's new row, then b's copy coming back: read twice, and the second is our own echo
    assert ("2", "1", "1", "1") == (summary["records read"], summary["customers created"],
                                    summary["records written"], summary["echoes ignored"])
    assert ("0", "0", "none") == (summary["errors"], summary["writes waiting for retry"],
                                  summary["failed apps"])


def test_run_once_json_is_machine_readable(synced: Setup) -> None:
    """`run --once --json` prints the summary as one JSON object and nothing else."""
    summary = synced.json("run", "--once")

    assert {} == summary["failed_apps"]
    assert 0 == summary["dispatch_written"]
    assert 0 == summary["waiting"]


def _break_app_b(s: Setup) -> None:
    """Turn app b's database file into something that is not a database."""
    (s.tmp / "b.db").write_bytes(b"not a database " * 100)


def test_run_once_exits_1_with_a_message_when_an_app_cannot_be_opened(synced: Setup) -> None:
    """An app whose database is broken ends `run --once` with exit 1 and a message naming it."""
    _break_app_b(synced)

    result = synced.cli("run", "--once")

    assert 1 == result.exit_code
    assert "app=b" in result.stderr
    assert "Traceback" not in result.output


def test_an_app_that_cannot_be_opened_does_not_stop_the_others(synced: Setup) -> None:
    """With app b broken, `run --once` still reads app a, and names b among the failed apps."""
    _break_app_b(synced)
    synced.insert("a", "a2", "bob@example.com", "Bob")

    result = synced.cli("run", "--once")

    assert 1 == result.exit_code
    assert "failed apps:" in result.stdout
    assert "  b: " in result.stdout
    assert 2 == synced.store_count("customers")


def test_dry_run_prints_the_plan_and_writes_nothing(setup: Setup) -> None:
    """`run --dry-run` shows customer, app, op and fields old → new, and writes to no app or store."""
    setup.ok("run", "--once")
    setup.insert("a", "a1", "Ann@Example.com", "Ann")

    result = setup.ok("run", "--dry-run")

    assert "dry run: nothing was written" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["CUSTOMER", "APP", "OP"]
    assert lines[1].split()[:3] == ["ann@example.com", "b", "create"]
    assert "(none) → ann@example.com" in result.stdout
    assert "(none) → Ann" in result.stdout
    assert [] == setup.rows("b")
    assert 0 == setup.store_count("customers")
    plan = setup.json("run", "--dry-run")
    assert [("b", "create", ["email", "first_name"])] == [
        (p["app"], p["op"], sorted(p["fields"])) for p in plan]


def test_once_and_dry_run_together_is_a_usage_error(setup: Setup) -> None:
    """`--once` and `--dry-run` exclude each other (exit 2)."""
    result = setup.cli("run", "--once", "--dry-run")

    assert 2 == result.exit_code


def _daemon_until_b_holds_a_row(setup: Setup) -> tuple[list[str], int, str]:
    """Start `customer-sync run`, wait (at most a minute) until app b holds a row, then SIGTERM:
    b's emails at that moment, the exit code and stderr."""
    env = {**os.environ, "CUSTOMER_SYNC_CONFIG": str(setup.config)}
    proc = subprocess.Popen([sys.executable, "-m", "customer_sync", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not setup.rows("b") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        synced = [r["email"] for r in setup.rows("b")]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return synced, proc.returncode, err


def test_the_daemon_polls_every_app_at_start_whatever_its_interval(setup: Setup) -> None:
    """With an hour between polls, the daemon still reads every app at once when it starts
    (nothing waits an hour), and its start logs no warning."""
    setup.config.write_text(setup.config.read_text(encoding="utf-8").replace(
        "poll_interval_s = 0.2", "poll_interval_s = 3600").replace('log_level = "warning"', 'log_level = "info"'),
        encoding="utf-8")
    setup.ok("run", "--once")
    setup.insert("a", "a1", "ann@example.com", "Ann")

    synced, code, err = _daemon_until_b_holds_a_row(setup)

    assert ["ann@example.com"] == synced
    assert 0 == code, err
    levels = [json.loads(line).get("level") for line in err.splitlines() if line.startswith("{")]
    assert levels and not {"warning", "error", "critical"} & set(levels), err


def test_the_daemon_syncs_and_stops_gracefully_on_sigterm(setup: Setup) -> None:
    """`run` keeps syncing until SIGTERM, then stops and exits 0."""
    setup.ok("run", "--once")
    setup.insert("a", "a1", "ann@example.com", "Ann")

    synced, code, err = _daemon_until_b_holds_a_row(setup)

    assert 0 == code, err
    assert ["ann@example.com"] == synced
    assert "Traceback" not in err


def _changelog_size(store_url: str) -> int:
    """Entries in the store's change log, read without waiting for its writer."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.pool import NullPool

    from customer_sync.store.tables import ChangeLogEntry

    engine = create_engine(store_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(ChangeLogEntry.__table__)
            return conn.execute(query).scalar_one()
    finally:
        engine.dispose()


def _cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own (CliRunner would share this one's locks)."""
    return subprocess.run([sys.executable, "-m", "customer_sync", *args, "--config",
                           str(setup.config)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_second_daemon_on_a_store_in_use_is_refused_and_sends_nothing(
    setup: Setup, store_url: str,
) -> None:
    """While a daemon runs, `run` and `run --once` on its store exit 1 with one line naming the
    holder, and touch nothing; once the daemon is killed with SIGKILL, `run --once` works at
    once: kill -9 leaves no stale lock."""
    text = setup.config.read_text(encoding="utf-8")
    text = re.sub(r'store_url = ".*"', f'store_url = "{store_url}"\nnormalize_workers = 0', text)
    setup.config.write_text(text, encoding="utf-8")
    setup.ok("run", "--once")
    setup.insert("a", "a1", "ann@example.com", "Ann")
    daemon = subprocess.Popen([sys.executable, "-m", "customer_sync", "run", "--config",
                               str(setup.config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not setup.rows("b"):  # the daemon runs, and holds the store
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, "the daemon did not sync"
            time.sleep(0.05)
        daemon.send_signal(signal.SIGSTOP)  # it keeps the lock, and does nothing while stopped
        setup.insert("a", "a2", "bob@example.com", "Bob")
        logged = _changelog_size(store_url)

        refused = [_cli(setup, "run"), _cli(setup, "run", "--once")]

        assert [1, 1] == [r.returncode for r in refused]
        holder = f"(pid {daemon.pid} on " if "sqlite" in store_url else "(it holds advisory lock"
        for result in refused:
            [line] = result.stderr.splitlines()
            assert line.startswith("error: another customer-sync daemon is running on the store")
            assert holder in line
        assert ["ann@example.com"] == [r["email"] for r in setup.rows("b")]
        assert logged == _changelog_size(store_url)

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        again = _cli(setup, "run", "--once")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate(timeout=30)

    assert 0 == again.returncode, again.stderr
    assert ["ann@example.com", "bob@example.com"] == [r["email"] for r in setup.rows("b")]


# -- one customer: log, explain ------------------------------------------------------------------


def test_explain_finds_the_customer_by_email_in_any_case(synced: Setup) -> None:
    """`explain` takes an email in any case and shows each field's value and source app."""
    result = synced.ok("explain", "ANN@example.COM")

    fields = {line.split()[0]: line.split() for line in result.stdout.splitlines()
              if line.split()[:1] in (["email"], ["first_name"])}
    assert ["email", "ann@example.com", "a"] == fields["email"][:3]
    assert ["first_name", "Ann", "a"] == fields["first_name"][:3]
    links = {tuple(line.split()[:1]) + tuple(line.split()[2:]) for line in result.stdout.splitlines()
             if line.split()[:1] in (["a"], ["b"])}
    assert {("a", "active"), ("b", "active")} == links
    data = synced.json("explain", "Ann@Example.com")
    assert "a1" == {lk["app"]: lk["app_record_id"] for lk in data["links"]}["a"]


def test_log_finds_the_customer_by_email_in_any_case(synced: Setup) -> None:
    """`log` shows what was observed in a, decided, and written to b, with the fields' old → new."""
    data = synced.json("log", "ann@EXAMPLE.com")

    assert [("observed", "a"), ("decided", "a"), ("written", "b")] == [
        (e["kind"], e["app"]) for e in data["entries"]]
    text = synced.ok("log", "Ann@example.com").stdout
    assert f"customer {data['customer_id']}" == text.splitlines()[0]
    assert "first_name: (none) → Ann" in text


def test_log_shows_a_new_customers_fields_as_a_list_not_as_old_and_new(synced: Setup) -> None:
    """The decision on a new customer names its fields (`{"fields": [email, first_name]}`);
    two names are a list, not a change from one to the other."""
    text = synced.ok("log", "ann@example.com").stdout

    decided = next(line for line in text.splitlines() if " decided " in line)
    assert "fields: email, first_name" in decided
    assert "email → first_name" not in text


def test_log_and_explain_find_the_customer_by_an_apps_record_id(synced: Setup) -> None:
    """`APP:RECORD_ID` names the customer an app's record is linked to, in either app; a record
    of a configured app that nobody is linked to is not found, and says so."""
    customer_id = synced.json("explain", "ann@example.com")["customer_id"]
    b_record = {lk["app"]: lk["app_record_id"] for lk in synced.json("explain", "a:a1")["links"]}["b"]

    assert customer_id == synced.json("log", "a:a1")["customer_id"]
    assert customer_id == synced.json("explain", f"b:{b_record}")["customer_id"]
    assert f"customer {customer_id}" == synced.ok("log", "a:a1").stdout.splitlines()[0]
    missing = synced.cli("explain", "a:nope")
    assert 1 == missing.exit_code
    assert "not found: no customer is linked to record 'nope' of a" in missing.stderr


def test_log_limit_keeps_the_latest_entries(synced: Setup) -> None:
    """`log --limit N` shows the last N entries."""
    full = synced.json("log", "ann@example.com")["entries"]

    last = synced.json("log", "ann@example.com", "--limit", "1")["entries"]

    assert [full[-1]["seq"]] == [e["seq"] for e in last]


def test_an_unknown_customer_exits_1_without_a_traceback(synced: Setup) -> None:
    """`explain` and `log` for nobody say so and exit 1."""
    for command in ("explain", "log"):
        result = synced.cli(command, "nobody@example.com")

        assert 1 == result.exit_code
        assert "not found: no customer matches 'nobody@example.com'" in result.stderr
        assert "Traceback" not in result.output


# -- status --------------------------------------------------------------------------------------


def test_status_lists_both_apps(synced: Setup) -> None:
    """`status` has one line per app with its connector, linked count and no error."""
    result = synced.ok("status")

    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert {"a", "b"} == set(rows)
    assert ["sql"] == list({r[1] for r in rows.values()})
    assert "open conflicts: 0" == result.stdout.splitlines()[-1]
    data = {row["app"]: row for row in synced.json("status")}
    assert (1, 1) == (data["a"]["linked"], data["b"]["linked"])
    assert (None, None) == (data["a"]["last_error"], data["b"]["last_error"])
    assert (0, 0) == (data["a"]["pending_writes"], data["b"]["pending_writes"])


# -- conflicts -----------------------------------------------------------------------------------


def _park_a_conflict(s: Setup) -> dict[str, Any]:
    """Under the manual rule, edit ann's first name differently in both apps and run once."""
    s.write_config(rule="manual")
    s.set_first_name("a", "ann@example.com", "Annie")
    s.set_first_name("b", "ann@example.com", "Anna")
    s.ok("run", "--once")
    parked = s.json("conflicts")
    assert 1 == len(parked), parked
    return parked[0]


def _first_names(s: Setup) -> dict[str, str]:
    return {name: row["first_name"] for name in ("a", "b") for row in s.rows(name)}


def test_conflicts_lists_a_parked_conflict(synced: Setup) -> None:
    """A field edited differently in both apps under the manual rule is listed with both sides."""
    conflict = _park_a_conflict(synced)

    assert ("field", "first_name", "manual", "parked") == (
        conflict["kind"], conflict["field"], conflict["rule"], conflict["status"])
    assert {"a": "Annie", "b": "Anna"} == {
        conflict["winner_app"]: conflict["winner_value"], conflict["loser_app"]: conflict["loser_value"]}
    assert "ann@example.com" == conflict["customer"]
    text = synced.ok("conflicts").stdout
    row = text.splitlines()[1]
    assert row.split()[:6] == [str(conflict["id"]), "field", "parked", "ann@example.com", "first_name", "manual"]
    assert "a: Annie" in row and "b: Anna" in row
    assert "resolve with: customer-sync conflicts resolve ID --take APP" in text


def test_a_parked_conflict_leaves_both_apps_as_they_are(synced: Setup) -> None:
    """Until an operator resolves it, a parked conflict writes neither side over the other."""
    _park_a_conflict(synced)

    assert {"a": "Annie", "b": "Anna"} == _first_names(synced)


def test_resolving_a_conflict_writes_the_taken_value_on_the_next_run(synced: Setup) -> None:
    """`conflicts resolve ID --take APP` resolves it, and the next run writes APP's value to the
    other app (taking the side the apps do not hold now, so the write is visible)."""
    conflict = _park_a_conflict(synced)
    take, value = conflict["loser_app"], conflict["loser_value"]
    other = ({"a", "b"} - {take}).pop()
    assert value != _first_names(synced)[other]

    result = synced.ok("conflicts", "resolve", str(conflict["id"]), "--take", take)
    synced.ok("run", "--once")

    assert f"conflict {conflict['id']} resolved: first_name takes {take}'s value" in result.stdout
    assert {"a": value, "b": value} == _first_names(synced)
    assert [] == synced.json("conflicts")
    assert ["resolved"] == [c["status"] for c in synced.json("conflicts", "--all")]


def test_a_resolved_conflict_keeps_both_sides_in_its_history(synced: Setup) -> None:
    """After resolving by taking the loser's side, the conflict shows that side as the winner and
    the other side, with its value, as the loser."""
    conflict = _park_a_conflict(synced)
    take = conflict["loser_app"]

    synced.ok("conflicts", "resolve", str(conflict["id"]), "--take", take)

    [resolved] = synced.json("conflicts", "--all")
    assert (take, conflict["loser_value"]) == (resolved["winner_app"], resolved["winner_value"])
    assert (conflict["winner_app"], conflict["winner_value"]) == (
        resolved["loser_app"], resolved["loser_value"])


def test_resolve_takes_the_config_given_before_the_subcommand(synced: Setup) -> None:
    """`conflicts --config F resolve ...` uses F, as `conflicts resolve ... --config F` does."""
    conflict = _park_a_conflict(synced)

    result = synced.runner.invoke(
        app, ["conflicts", "--config", str(synced.config), "resolve", str(conflict["id"]), "--take", "b"])

    assert 0 == result.exit_code, result.stderr


def test_resolve_with_an_app_not_in_the_conflict_exits_2(synced: Setup) -> None:
    """`--take` must name one of the conflict's two apps."""
    conflict = _park_a_conflict(synced)

    result = synced.cli("conflicts", "resolve", str(conflict["id"]), "--take", "crm")

    assert 2 == result.exit_code
    assert "--take must be one of" in result.stderr


def test_resolving_an_unknown_conflict_exits_1(synced: Setup) -> None:
    """An unknown conflict id is NotFound: exit 1 and a message."""
    result = synced.cli("conflicts", "resolve", "999", "--take", "a")

    assert 1 == result.exit_code
    assert "not found: no conflict 999" in result.stderr


# -- resync --------------------------------------------------------------------------------------


def test_resync_then_run_writes_nothing_new(synced: Setup) -> None:
    """After `resync a` the next run re-reads a, recognises every record, and writes nothing."""
    result = synced.ok("resync", "a")
    summary = synced.json("run", "--once")

    assert "the next run re-reads every record of a" in result.stdout
    assert summary["read"] >= 1
    assert (0, 0, 0) == (summary["dispatch_written"], summary["created"], summary["updated"])
    assert 1 == len(synced.rows("b"))


def test_resync_of_an_unknown_app_exits_2(synced: Setup) -> None:
    """An app that is not configured is a config error."""
    result = synced.cli("resync", "crm")

    assert 2 == result.exit_code
    assert "unknown app 'crm'" in result.stderr


# -- deletes -------------------------------------------------------------------------------------


def _hold_a_delete(s: Setup) -> dict[str, Any]:
    s.write_config(a_on_delete="approve")
    s.execute("a", "delete from contacts where id = 'a1'")
    s.ok("run", "--once", "--reconcile")  # a hard delete leaves no row: the id scan finds it
    held = s.json("deletes")
    assert 1 == len(held), held
    return held[0]


def test_deletes_lists_a_delete_held_for_approval(synced: Setup) -> None:
    """A hard delete in an app with on_delete = "approve" waits in `deletes`; b keeps the record."""
    held = _hold_a_delete(synced)

    assert ("a", "a1", "ann@example.com") == (held["app"], held["app_record_id"], held["customer"])
    assert 1 == len(synced.rows("b"))
    row = synced.ok("deletes").stdout.splitlines()[1].split()
    assert [str(held["id"]), "ann@example.com", "a", "a1"] == row[:4]


def test_approving_a_delete_deletes_the_customer_in_the_other_app(synced: Setup) -> None:
    """`deletes approve ID` then `run --once` deletes the record in b too."""
    held = _hold_a_delete(synced)

    result = synced.ok("deletes", "approve", str(held["id"]))
    synced.ok("run", "--once")

    assert f"delete request {held['id']} approved" in result.stdout
    assert [] == synced.rows("b")
    assert [] == synced.json("deletes")


def test_rejecting_a_delete_keeps_the_customer_in_the_other_app(synced: Setup) -> None:
    """`deletes reject ID` keeps b's record and stops syncing the customer to a."""
    held = _hold_a_delete(synced)

    result = synced.ok("deletes", "reject", str(held["id"]))
    synced.ok("run", "--once")

    assert f"delete request {held['id']} rejected" in result.stdout
    assert 1 == len(synced.rows("b"))
    assert [] == synced.rows("a")
    assert [] == synced.json("deletes")


def test_deciding_an_unknown_delete_exits_1(synced: Setup) -> None:
    """An unknown delete request is NotFound: exit 1."""
    result = synced.cli("deletes", "approve", "42")

    assert 1 == result.exit_code
    assert "not found: no pending delete 42" in result.stderr


# -- logs ----------------------------------------------------------------------------------------


def test_no_email_reaches_the_logs_even_with_redaction_off(synced: Setup) -> None:
    """With debug logs and the redaction safety net off, a pass still logs no customer value."""
    synced.write_config(log_level="debug", redact=False)
    synced.insert("a", "a2", "bob.secret@example.com", "Bobsecret")

    result = synced.ok("run", "--once")

    assert "sync.pass_finished" in result.stderr
    assert "bob.secret" not in result.stderr
    assert "Bobsecret" not in result.stderr
