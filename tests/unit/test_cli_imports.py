"""The CLI imports only what a command uses: `--help` loads neither the store, the HTTP client
nor the engine, and an operator command such as `status` loads no Alembic and no engine stages.

Each check runs the command in a fresh interpreter and reads its `sys.modules`: this guards the
structure (what is imported where), not a time; `bench/startup.py` measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from customer_sync.store.db import open_store

# Runs `customer-sync ARGV...` in this interpreter, then prints the modules it imported (a
# module held by `_lazy.lazy_module` and never used is not counted: it was not run).
_PROBE = """
import importlib.util, json, sys
from customer_sync.cli import app
try:
    app(sys.argv[1:], prog_name="customer-sync")
except SystemExit as exc:
    code = exc.code
loaded = sorted(name for name, module in sys.modules.items()
                if type(module).__name__ != "_LazyModule")
print(json.dumps({"code": code, "modules": loaded}))
"""


def _imported_by(*argv: str, cwd: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                          cwd=cwd, check=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None), done.stderr
    return set(result["modules"])


def _loaded(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_help_imports_no_store_http_or_engine(tmp_path: Path) -> None:
    """`customer-sync --help` imports neither SQLAlchemy, httpx, the config nor the engine."""
    modules = _imported_by("--help", cwd=tmp_path)
    assert [] == _loaded(modules, "sqlalchemy", "sqlmodel", "alembic", "httpx", "pydantic_settings",
                         "customer_sync.config", "customer_sync.store", "customer_sync.engine.runner",
                         "customer_sync.engine.admin", "uvicorn", "starlette", "phonenumbers")


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["run", "--help"]],
                         ids=["root", "status", "run"])
def test_help_of_every_level_stays_light(tmp_path: Path, argv: list[str]) -> None:
    """A command's own help is as light as the root's."""
    assert [] == _loaded(_imported_by(*argv, cwd=tmp_path), "sqlalchemy", "httpx", "customer_sync.engine.runner")


def test_status_imports_no_alembic_and_no_engine_stages(tmp_path: Path) -> None:
    """`status` on a migrated store reads it without Alembic, the runner, the HTTP server or
    the engine's processing stages."""
    store_url = f"sqlite:///{tmp_path}/store.db"
    open_store(store_url).close()  # created and migrated, as the daemon's first start does
    (tmp_path / "config.toml").write_text(
        f'[daemon]\nstore_url = "{store_url}"\n\n'
        '[apps.crm]\nconnector = "sql"\n\n'
        f'[apps.crm.settings]\nurl = "sqlite:///{tmp_path}/crm.db"\ntable = "contacts"\ncreate_table = true\n'
        'column_types = { email = "text" }\n\n[apps.crm.fields]\nemail = "email"\n'
    )
    modules = _imported_by("status", "--config", str(tmp_path / "config.toml"), cwd=tmp_path)
    assert "customer_sync.engine.admin" in modules  # it did run
    assert [] == _loaded(modules, "alembic", "customer_sync.engine.runner", "customer_sync.engine.process",
                         "customer_sync.engine.plan", "customer_sync.engine.listing", "uvicorn", "starlette",
                         "apscheduler")
    # Nor the HTTP client (the sdk's HTTP parts load on first use), the value normalizers' email
    # and phone libraries (no value is normalized; this config sets no phone region), the retry
    # policy, or rich (structlog's console tracebacks, never used; status writes to a pipe here).
    assert [] == _loaded(modules, "httpx", "httpcore", "tenacity", "email_validator", "phonenumbers",
                         "rich", "customer_sync.sdk.http", "customer_sync.sdk.retry",
                         "customer_sync.sdk.ratelimit", "customer_sync.sdk.pagination")
