"""Shared fixtures: store URLs for SQLite and for a throwaway PostgreSQL database.

PostgreSQL comes from `CUSTOMER_SYNC_TEST_PG_URL`, an admin URL (default: the local `test`
database). Each session creates its own database `cs_test_<random>` through it and drops it at
the end; each test that asks for `pg_store_url` gets a fresh schema in that database. Without a
server, PostgreSQL tests fail when `CI` is set and are skipped otherwise, and the terminal
summary says so: they are never skipped silently.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PG_ADMIN_URL_ENV = "CUSTOMER_SYNC_TEST_PG_URL"
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_pg_skip_reason = pytest.StashKey[str]()
_PG_FIXTURES = {"pg_url", "pg_store_url"}
_TERMINATE_SESSIONS = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = :name AND pid <> pg_backend_pid()"
)


def _pg_admin_url() -> URL:
    url = make_url(os.environ.get(PG_ADMIN_URL_ENV) or DEFAULT_PG_ADMIN_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs PostgreSQL, so `-m "not postgres"` can leave them out."""
    for item in items:
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say loudly that PostgreSQL tests were skipped."""
    reason = config.stash.get(_pg_skip_reason, None)
    if reason is not None:
        terminalreporter.write_sep("!", reason, yellow=True, bold=True)


@pytest.fixture(scope="session")
def _pg_admin(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An autocommit engine on the admin database; fails or skips when there is no server."""
    url = _pg_admin_url()
    shown = url.render_as_string(hide_password=True)
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        engine.dispose()
        if _is_ci():
            detail = str(exc.orig or exc).strip().splitlines()[0]
            pytest.fail(
                f"no PostgreSQL server at {shown} and CI is set ({detail}); set {PG_ADMIN_URL_ENV}",
                pytrace=False,
            )
        reason = f"PostgreSQL tests skipped: no server at {shown} (set {PG_ADMIN_URL_ENV})"
        request.config.stash[_pg_skip_reason] = reason
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url(_pg_admin: Engine) -> Iterator[str]:
    """URL (password included) of a PostgreSQL database created for this test session."""
    name = f"cs_test_{secrets.token_hex(6)}"
    with _pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin.connect() as conn:
            conn.execute(_TERMINATE_SESSIONS, {"name": name})
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    """URL of an empty PostgreSQL schema of its own (via search_path), dropped after the test."""
    schema = f"t_{secrets.token_hex(6)}"
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite store file that does not exist yet, in a folder that does not exist yet."""
    return f"sqlite:///{tmp_path / 'store' / 'customer-sync.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty store, once per backend: run a test against SQLite and PostgreSQL alike."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_store_url"
    return str(request.getfixturevalue(fixture))
