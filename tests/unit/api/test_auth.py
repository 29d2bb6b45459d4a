"""The admin token: from the environment only, off when unset, refused when too short, and
checked in constant time against a bearer header or the dashboard's session cookie."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.requests import Request

from customer_sync.api.auth import ADMIN_TOKEN_ENV, SESSION_COOKIE, AdminAuth, admin_auth
from customer_sync.errors import ConfigError

TOKEN = "a-long-enough-admin-token-0001"


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/api/status", "headers": raw})


def test_no_token_set_means_the_admin_surface_is_off() -> None:
    assert admin_auth({}) is None
    assert admin_auth({ADMIN_TOKEN_ENV: "   "}) is None


def test_a_short_token_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        admin_auth({ADMIN_TOKEN_ENV: "short"})
    assert ADMIN_TOKEN_ENV in str(caught.value)
    assert "short" not in str(caught.value).replace("shorter", "")  # the value is never echoed


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, False),
    ({"Authorization": f"Bearer {TOKEN}"}, True),
    ({"Authorization": f"bearer {TOKEN}"}, True),
    ({"Authorization": f"Bearer {TOKEN}x"}, False),
    ({"Authorization": "Bearer "}, False),
    ({"Authorization": f"Basic {TOKEN}"}, False),
    ({"Cookie": f"{SESSION_COOKIE}={TOKEN}"}, False),  # the cookie holds a derived value, not the token
], ids=["none", "right", "scheme-any-case", "wrong", "empty", "other-scheme", "raw-token-cookie"])
def test_bearer_and_cookie(headers: dict[str, str], allowed: bool) -> None:
    auth = admin_auth({ADMIN_TOKEN_ENV: TOKEN})
    assert auth is not None
    assert allowed is auth.allows(_request(headers))


def test_the_session_cookie_is_derived_from_the_token_and_changes_with_it() -> None:
    auth = AdminAuth(TOKEN)
    assert TOKEN not in auth.session_value
    assert auth.allows(_request({"Cookie": f"{SESSION_COOKIE}={auth.session_value}"}))
    other = AdminAuth(TOKEN + "-rotated")
    assert not other.allows(_request({"Cookie": f"{SESSION_COOKIE}={auth.session_value}"}))
    assert auth.check_csrf(auth.csrf_value)
    assert not auth.check_csrf(other.csrf_value)
    assert not auth.check_csrf(None)


def test_the_daemon_refuses_a_short_token_at_start_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    tmp = tmp_path.as_posix()
    apps = "".join(
        f'[apps.{name}]\nconnector = "sql"\n[apps.{name}.settings]\nurl = "sqlite:///{tmp}/{name}.db"\n'
        f'table = "contacts"\ncreate_table = true\ncolumn_types = {{ email = "text" }}\n'
        f'[apps.{name}.fields]\nemail = "email"\n' for name in ("a", "b"))
    config.write_text(f'[daemon]\nstore_url = "sqlite:///{tmp}/store.db"\nlisten = "127.0.0.1:1"\n'
                      + apps, encoding="utf-8")
    env = {**os.environ, ADMIN_TOKEN_ENV: "tooshort"}

    result = subprocess.run([sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, check=False, env=env)

    assert 2 == result.returncode, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {ADMIN_TOKEN_ENV}: the admin token must be at least 16"), line
    assert "tooshort" not in result.stderr
