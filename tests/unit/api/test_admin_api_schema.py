"""Schemathesis against `/api/openapi.json`: every operation of the admin API, called through the
ASGI app with the admin token and generated input, answers without a server error and as its
OpenAPI document says. Any 500 fails the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from customer_sync.api.app import create_app
from customer_sync.api.auth import AdminAuth
from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.reload import Reloader
from customer_sync.store.db import open_store
from tests.unit.api.test_admin_api import BEARER, TOKEN, write_config

#: Examples per operation: enough to reach every answer of each route, bounded so that the
#: whole run stays well under a minute on a busy machine.
EXAMPLES = 50


def _seed(tmp: Path) -> None:
    """Two customers in crm, one synced to desk, and a conflict parked for the operator."""
    import sqlite3

    path = write_config(tmp, rule="manual")
    config = load_config(path)
    store = open_store(config.daemon.store_url)

    async def run() -> None:
        async with Engine(config, store) as engine:
            await engine.run_once()

    try:
        asyncio.run(run())
        with sqlite3.connect(tmp / "crm.db") as conn:
            conn.execute("INSERT INTO people (id, email, first_name) VALUES ('c1', 'ann@example.com', 'Ann'),"
                         " ('c2', 'bea@example.com', 'Bea')")
        asyncio.run(run())
        for app, name in (("crm", "Anna"), ("desk", "Annie")):
            with sqlite3.connect(tmp / f"{app}.db") as conn:
                conn.execute("UPDATE people SET first_name = ?, updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') "
                             "WHERE email = 'ann@example.com'", (name,))
        asyncio.run(run())
    finally:
        store.close()


@pytest.fixture(scope="module")
def admin_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("schema")
    _seed(tmp)
    path = tmp / "config.toml"
    config = load_config(path)
    store = open_store(config.daemon.store_url)
    engine = Engine(config, store)  # the API needs the store and config, not the apps' connectors
    try:
        app = create_app(engine, auth=AdminAuth(TOKEN), reloader=Reloader(path, config))
        yield schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=BEARER)
    finally:
        engine.metrics.close()
        engine.normalizer.close()
        store.close()


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _check(operation: Any, mode: GenerationMode) -> None:
    """Run the checks over generated cases of one operation; raises at the first failure."""

    @given(case=operation.as_strategy(generation_mode=mode, headers=BEARER))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=BEARER, checks=[not_a_server_error, response_schema_conformance])

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_as_documented(admin_schema: Any, mode: GenerationMode) -> None:
    """Valid input (positive) and input the document forbids (negative), for every operation:
    no 5xx, and every answer matches its documented schema."""
    failed: dict[str, BaseException] = {}
    for operation in _operations(admin_schema):
        try:
            _check(operation, mode)
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without input has no invalid input
        except Exception as exc:  # noqa: BLE001  (every operation's failure is reported, not the first only)
            failed[f"{operation.method.upper()} {operation.path}"] = exc
    assert {} == failed


def test_the_run_covers_every_operation(admin_schema: Any) -> None:
    """The document the run is generated from holds every route (none silently left out)."""
    assert 13 == len({f"{op.method.upper()} {op.path}" for op in _operations(admin_schema)})


def test_an_endpoint_that_fails_fails_the_run(admin_schema: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is real: a route whose store call breaks (a 500) fails it."""
    from customer_sync.engine import admin

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug in a route")

    monkeypatch.setattr(admin, "list_pending_deletes", broken)
    [deletes] = [op for op in _operations(admin_schema) if op.path == "/deletes"]
    with pytest.raises(BaseException) as failed:
        _check(deletes, GenerationMode.POSITIVE)
    assert "a bug in a route" in str(failed.value) or "Server error" in str(failed.value)
