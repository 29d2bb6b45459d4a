"""Who may use the admin API (`/api`) and the dashboard (`/`): whoever holds the admin token.

The token comes from the environment only (`CUSTOMER_SYNC_ADMIN_TOKEN`), never from the config
file, a log line or an answer. With no token set, the admin API and the dashboard are **off**
(every admin route answers 404 and says how to turn them on), never open.

A request proves it holds the token in one of two ways, both compared in constant time:

- `Authorization: Bearer <token>`: scripts, `curl`, the OpenAPI tools;
- the session cookie the dashboard's login form sets: an HMAC of the token, never the token
  itself, `HttpOnly` and `SameSite=Strict`, so another site cannot make a browser use it.

Forms the dashboard posts also carry a CSRF value derived from the token the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from starlette.requests import HTTPConnection

from customer_sync.errors import ConfigError

__all__ = ["ADMIN_TOKEN_ENV", "MIN_TOKEN_LENGTH", "SESSION_COOKIE", "AdminAuth", "admin_auth"]

#: The environment variable that holds the admin token.
ADMIN_TOKEN_ENV = "CUSTOMER_SYNC_ADMIN_TOKEN"
#: A shorter token is refused at start: it could be guessed.
MIN_TOKEN_LENGTH = 16
#: The dashboard's session cookie.
SESSION_COOKIE = "customer_sync_session"


class AdminAuth:
    """Checks requests against the admin token. Built once per served app."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._session = self._derive(b"dashboard-session")
        self._csrf = self._derive(b"dashboard-csrf")

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(self._token, purpose, hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        """Whether `candidate` is the admin token, compared in constant time."""
        return hmac.compare_digest(candidate.encode(), self._token)

    def allows(self, conn: HTTPConnection) -> bool:
        """Whether the request carries the token (bearer) or the dashboard's session cookie."""
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return self.check_token(credentials.strip())
        cookie = conn.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode())

    @property
    def session_value(self) -> str:
        """The value of the session cookie a correct login sets."""
        return self._session

    @property
    def csrf_value(self) -> str:
        """The value every dashboard form carries in its `csrf` field."""
        return self._csrf

    def check_csrf(self, candidate: str | None) -> bool:
        """Whether a posted form's `csrf` field is the right one (constant time)."""
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._csrf.encode())


def admin_auth(environ: Mapping[str, str] | None = None) -> AdminAuth | None:
    """The admin auth from the environment, or None when no token is set (admin off).

    Raises:
        ConfigError: the token is set but too short to be safe.
    """
    token = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"error: {ADMIN_TOKEN_ENV}: the admin token must be at least "
                          f"{MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)")
    return AdminAuth(token)
