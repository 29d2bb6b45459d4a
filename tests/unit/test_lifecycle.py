"""The daemon's life as an operator sees it: a start that cannot work ends at once with one line
naming the setting (exit 2, no traceback); SIGTERM, SIGKILL and SIGHUP. Each test runs the
real `customer-sync run` in a process of its own, with two `sql` apps in SQLite files, and
waits for conditions, never for fixed times."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
