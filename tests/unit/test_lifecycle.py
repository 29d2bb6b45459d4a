"""The daemon's life as an operator sees it: a start that cannot work ends at once with one line
naming the setting (exit 2, no traceback); SIGTERM, SIGKILL and SIGHUP. Each test runs the
real `customer-sync run` in a process of its own, with two `sql` apps in SQLite files, and
waits for conditions, never for fixed times."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests._procs import alive, children

CONFIG = """\
[daemon]
store_url = "{store_url}"
log_level = "info"
log_format = "json"
poll_interval_s = {poll}
listen = "127.0.0.1:{port}"
normalize_workers = {workers}

[apps.a]
connector = "sql"

[apps.a.settings]
url = "{a_url}"
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp: Path, *, port: int | None = None, store_url: str | None = None,
                 a_url: str | None = None, poll: float = 0.2, workers: int = 0,
                 name: str = "config.toml") -> Path:
    path = tmp / name
    path.write_text(CONFIG.format(
        tmp=tmp.as_posix(), port=port or _free_port(), poll=poll, workers=workers,
        store_url=store_url or f"sqlite:///{tmp.as_posix()}/store.db",
        a_url=a_url or f"sqlite:///{tmp.as_posix()}/a.db"), encoding="utf-8")
    return path


def run_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "customer_sync", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def wait_for(condition: Callable[[], bool], what: str, *, proc: subprocess.Popen[str] | None = None,
             timeout: float = 60) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` (a safety net, not a
    timing assertion), or at once when `proc` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the daemon ended (exit {proc.returncode}) before {what}: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def rows(db: Path, table: str) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute(f"select email, first_name from {table} order by email"))
        except sqlite3.OperationalError:  # not created yet
            return []


@pytest.fixture
def daemon_procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Daemons a test starts; killed (by their pid) if the test left one running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def start_daemon(config: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


# -- a start that cannot work --------------------------------------------------------------------


def test_a_taken_port_is_one_line_naming_daemon_listen_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port=port)

        result = run_cli(config, "run")

    assert 2 == result.returncode, result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if not ln.startswith("{")]
    assert line.startswith(f"error: daemon.listen: cannot listen on 127.0.0.1:{port}: "), line
    assert "Traceback" not in result.stderr
    assert "Errno" not in result.stderr


def test_an_unwritable_store_is_one_line_naming_daemon_store_url_and_exit_2(tmp_path: Path) -> None:
    """A store whose folder cannot be made (here: under a file; root may write anywhere else)."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    config = write_config(tmp_path, store_url=f"sqlite:///{tmp_path.as_posix()}/a-file/store.db")

    result = run_cli(config, "run")

    assert 2 == result.returncode, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: daemon.store_url: cannot create the folder of the store"), line


def test_a_missing_secret_is_one_line_naming_the_setting_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, a_url="${CS_TEST_UNSET_URL}")
    env = {k: v for k, v in os.environ.items() if k != "CS_TEST_UNSET_URL"}

    result = subprocess.run([sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, check=False, env=env)

    assert 2 == result.returncode, result.stderr
    [line] = result.stderr.splitlines()
    assert line.endswith("apps.a.settings.url: environment variable CS_TEST_UNSET_URL is not set"), line


# -- SIGTERM, SIGKILL ----------------------------------------------------------------------------


def _seed(tmp: Path, config: Path, count: int) -> None:
    """Create the apps' tables (one pass), then `count` new customers in app a."""
    done = run_cli(config, "run", "--once")
    assert 0 == done.returncode, done.stderr
    with sqlite3.connect(tmp / "a.db") as conn:
        conn.executemany(
            "insert into contacts (id, email, first_name, updated_at) values (?, ?, ?, ?)",
            [(f"a{i}", f"p{i}@example.com", f"N{i}", "2030-01-01T00:00:00+00:00") for i in range(count)])


def _writes_to_b(tmp: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(tmp / "store.db") as conn:
        return list(conn.execute("select app_record_id, count(*) from changelog where kind = 'written' "
                                 "and app = 'b' group by app_record_id"))


def _problems(stderr: str) -> list[str]:
    """Log lines at warning or above, and anything that is not a log line (a traceback)."""
    import json

    out = []
    for line in stderr.splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:
            out.append(line)
            continue
        if level in {"warning", "error", "critical"}:
            out.append(line)
    return out


def test_sigterm_mid_dispatch_drains_and_repeats_no_write(
    tmp_path: Path, daemon_procs: list[subprocess.Popen[str]],
) -> None:
    """SIGTERM (twice) while the daemon writes: it finishes the writes in flight, commits, exits 0
    with no warning and no traceback; the next pass sends what was left and repeats nothing."""
    count = 1500
    config = write_config(tmp_path, workers=1)
    _seed(tmp_path, config, count)
    proc = start_daemon(config, daemon_procs)
    wait_for(lambda: bool(rows(tmp_path / "b.db", "people")), "the first write to b", proc=proc)

    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert 0 == proc.returncode, err
    assert [] == _problems(err)
    assert "daemon.already_stopping" in err or "daemon.stopping" in err
    again = run_cli(config, "run", "--once")
    assert 0 == again.returncode, again.stderr
    assert count == len(rows(tmp_path / "b.db", "people"))
    writes = _writes_to_b(tmp_path)
    assert count == len(writes)
    assert [] == [(record, n) for record, n in writes if n != 1]


def test_a_stop_while_the_daemon_starts_ends_it_cleanly(
    tmp_path: Path, daemon_procs: list[subprocess.Popen[str]],
) -> None:
    """SIGTERM at once after start (before the loop runs): exit 0, no traceback."""
    config = write_config(tmp_path)
    proc = start_daemon(config, daemon_procs)
    wait_for(lambda: (tmp_path / "store.db").exists(), "the store", proc=proc)

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert 0 == proc.returncode, err
    assert [] == _problems(err)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_no_worker_outlives_a_daemon_killed_with_sigkill(
    tmp_path: Path, daemon_procs: list[subprocess.Popen[str]],
) -> None:
    config = write_config(tmp_path, workers=1)
    _seed(tmp_path, config, 200)
    proc = start_daemon(config, daemon_procs)
    wait_for(lambda: bool(rows(tmp_path / "b.db", "people")), "the first write to b", proc=proc)
    workers = children(proc.pid)
    assert workers, "the daemon started no worker process"

    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)

    wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to end", timeout=30)


# -- SIGHUP --------------------------------------------------------------------------------------

APP_C = """
[apps.c]
connector = "sql"

[apps.c.settings]
url = "sqlite:///{tmp}/c.db"
table = "folks"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.c.fields]
email = "email"
first_name = "first_name"
"""


_minutes = iter(range(1, 60))


def _insert_a(tmp: Path, record_id: str, email: str) -> None:
    """A new row in app a, modified after every earlier one (the sql connector's cursor)."""
    with sqlite3.connect(tmp / "a.db") as conn:
        conn.execute("insert into contacts (id, email, first_name, updated_at) values (?, ?, ?, ?)",
                     (record_id, email, "N", f"2030-01-01T00:{next(_minutes):02d}:00+00:00"))


def test_sighup_keeps_the_running_config_when_the_new_one_is_invalid_and_swaps_in_a_valid_one(
    tmp_path: Path, daemon_procs: list[subprocess.Popen[str]],
) -> None:
    config = write_config(tmp_path)
    _seed(tmp_path, config, 1)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    daemon_procs.append(proc)

    def logged(event: str) -> int:
        return log_path.read_text(encoding="utf-8").count(f'"event": "{event}"')

    wait_for(lambda: bool(rows(tmp_path / "b.db", "people")), "the first sync", proc=proc)
    valid = config.read_text(encoding="utf-8")

    # invalid: the daemon says why, in one line, and goes on syncing with the running config
    config.write_text(valid.replace("poll_interval_s = 0.2", 'poll_interval_s = "soon"'), encoding="utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: logged("daemon.reload_refused") == 1, "the refused reload", proc=proc)
    [refused] = [ln for ln in log_path.read_text(encoding="utf-8").splitlines() if "daemon.reload_refused" in ln]
    assert "daemon.poll_interval_s" in refused
    _insert_a(tmp_path, "a-after-refused", "after.refused@example.com")
    wait_for(lambda: len(rows(tmp_path / "b.db", "people")) == 2, "a sync after the refused reload", proc=proc)

    # valid, with an app added: it is opened (its table created) and receives new customers
    config.write_text(valid + APP_C.format(tmp=tmp_path.as_posix()), encoding="utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: logged("daemon.reloading") == 1, "the reload", proc=proc)
    _insert_a(tmp_path, "a-after-reload", "after.reload@example.com")
    wait_for(lambda: [("after.reload@example.com", "N")] == rows(tmp_path / "c.db", "folks"),
             "the added app to receive a new customer", proc=proc)
    wait_for(lambda: len(rows(tmp_path / "b.db", "people")) == 3, "app b too", proc=proc)
    port = re.search(r'listen = "127.0.0.1:(\d+)"', valid).group(1)  # type: ignore[union-attr]
    assert 200 == httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code  # same socket

    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    text = log_path.read_text(encoding="utf-8")
    assert 0 == proc.returncode, text
    assert [] == [ln for ln in _problems(text) if "daemon.reload_refused" not in ln]
    assert 1 == logged("daemon.reloading")
