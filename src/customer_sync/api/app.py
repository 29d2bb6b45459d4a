"""The daemon's small HTTP surface: webhook intake, health and readiness.

`POST /webhooks/{app}` verifies the delivery's signature through the app's connector and commits
its changes to the inbox *before* answering 2xx, so an acknowledged webhook is never lost; the
engine processes the inbox on its own schedule (`engine/webhooks.py`). Every refusal is a clear
status, and bad input is never a 5xx (a 5xx makes the vendor retry forever): 401 (signature),
404 (no such app, or an app whose connector takes no webhooks: it has no webhook URL), 400 (malformed or out of bounds, with a short reason), 413 (body over
`MAX_BODY_BYTES`, refused while it streams in, so no more than that is ever held), and 503 with
`Retry-After` when the store is busy (the vendor delivers again later; nothing was written).

`GET /webhooks/{app}` answers 200 for a configured app that takes webhooks and touches nothing: vendors check a
callback URL that way before they save a webhook (Mailchimp does, per third-party accounts;
CONTRACTS.md does not say).

`/healthz` says the process answers and touches nothing else. `/readyz` checks the store the
way intake uses it, with the same short lock wait, and says why it is not ready.

`/api` is the admin API (`api.admin`, FastAPI, its OpenAPI document at `/api/openapi.json`),
behind the admin token; with no token configured it answers 404 on every path (off, not open).
`/` and the pages under it are the dashboard (`api.dashboard`), behind the same token; with
no token set, `/` says the dashboard is off and how to turn it on.

`/metrics` serves the engine's metrics in the Prometheus text format (`customer_sync.metrics`);
the store's depths are read off the event loop and waited for briefly, so a busy store makes the
scrape serve the last depths read (with `customer_sync_store_read_ok 0`), never a stalled loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from customer_sync.engine.webhooks import parked_apps
from customer_sync.errors import AuthError, ConfigError, ConnectorError, StoreBusy, StoreError
from customer_sync.metrics import CONTENT_TYPE
from customer_sync.sdk.connector import Capability
from customer_sync.sdk.http import redact_text

if TYPE_CHECKING:
    from customer_sync.api.auth import AdminAuth
    from customer_sync.engine.runner import Engine
    from customer_sync.reload import Reloader

__all__ = ["MAX_BODY_BYTES", "RETRY_AFTER_S", "bind", "create_app", "serve"]

log = structlog.get_logger("customer_sync.api")
MAX_BODY_BYTES = 1_000_000
#: What a 503 asks the vendor to wait before delivering again. A store busy past the intake's
#: short lock wait is usually busy for seconds (a migration, a backup, another replica's batch).
RETRY_AFTER_S = 10


class _BodyTooLarge(Exception):
    """The body grew past the cap while it streamed in."""


async def _read_body(request: Request, cap: int) -> bytes:
    """The request body, read as it streams in and given up on past `cap` bytes, so that no
    more than `cap` plus one received chunk is ever held.

    Raises:
        _BodyTooLarge: the body is longer than `cap`.
        ClientDisconnect: the client went away before the body was complete.
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _BodyTooLarge
    return bytes(body)


def create_app(engine: Engine, *, public_url: str | None = None, auth: AdminAuth | None = None,
               reloader: Reloader | None = None) -> Starlette:
    """The ASGI app over an opened engine.

    Args:
        public_url: the base URL vendors post to (e.g. behind a proxy); used to rebuild the
            exact URL a vendor signed. Default: the URL the request arrived on.
        auth: the admin token's checker (`api.auth.admin_auth()`); None turns the admin API
            and the dashboard off.
        reloader: what `POST /api/config/reload` calls (the daemon's own, as SIGHUP does);
            None when the engine runs without a config file to reload (tests).
    """

    def no_webhook_url(app: str) -> JSONResponse | None:
        """The 404 of an unknown app, or of one whose connector takes no webhooks."""
        if app not in engine.apps:
            return JSONResponse({"error": "no such app"}, status_code=404)
        if Capability.WEBHOOKS not in engine.apps[app].connector_cls.capabilities:
            return JSONResponse({"error": "app takes no webhooks"}, status_code=404)
        return None

    async def webhook(request: Request) -> Response:
        app = request.path_params["app"]
        if (missing := no_webhook_url(app)) is not None:
            return missing
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _too_large(app)
        try:
            body = await _read_body(request, MAX_BODY_BYTES)
        except _BodyTooLarge:
            return _too_large(app)
        except ClientDisconnect:
            # Not an error of ours: the vendor will deliver again. Nobody reads this answer.
            log.info("webhook.client_disconnected", app=app)
            return Response(status_code=400)
        url = str(request.url)
        if public_url:
            url = public_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            count = await engine.accept_webhook(app, dict(request.headers), body, url=url, method=request.method)
        except AuthError:
            log.warning("webhook.rejected", app=app, status_code=401, reason="bad signature")
            return JSONResponse({"error": "signature rejected"}, status_code=401)
        except ConnectorError as exc:
            # the error's own message (no app, connector suffix): a short reason, never a value
            reason = redact_text(str(exc.args[0]) if exc.args else type(exc).__name__)[:200]
            log.warning("webhook.rejected", app=app, status_code=400, reason=reason)
            return JSONResponse({"error": "malformed delivery", "reason": reason}, status_code=400)
        except StoreError as exc:
            busy = isinstance(exc, StoreBusy)
            log.warning("webhook.deferred", app=app, status_code=503, reason=str(exc))
            return JSONResponse({"error": "store busy" if busy else "store unavailable"},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        log.info("webhook.accepted", app=app, count=count)
        return JSONResponse({"accepted": count})

    async def webhook_check(request: Request) -> JSONResponse:
        if (missing := no_webhook_url(request.path_params["app"])) is not None:
            return missing
        return JSONResponse({"status": "ok"})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            parked = await parked_apps(engine)
        except StoreBusy as exc:
            return JSONResponse({"status": "store busy", "reason": str(exc)}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        except StoreError as exc:  # the store is unreachable: not ready, say why
            return JSONResponse({"status": "store unreachable", "reason": str(exc)},
                                status_code=503)
        failed = sorted(set(engine.unopened) | set(parked))
        status = 200 if not failed else 503
        return JSONResponse({"status": "ready" if not failed else "degraded", "failed_apps": failed},
                            status_code=status)

    async def metrics(request: Request) -> Response:
        return Response(await engine.metrics.render(engine.store), media_type=CONTENT_TYPE)

    from customer_sync.api.admin import admin_api, admin_off
    from customer_sync.api.dashboard import dashboard_routes

    return Starlette(routes=[
        Route("/webhooks/{app}", webhook, methods=["POST"]),
        Route("/webhooks/{app}", webhook_check, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/api", app=admin_off if auth is None else admin_api(engine, auth=auth, reloader=reloader)),
        # last: the dashboard's pages sit at the root (`/`, `/login`, `/customers/...`)
        *dashboard_routes(engine, auth),
    ])


def _too_large(app: str) -> JSONResponse:
    log.warning("webhook.rejected", app=app, status_code=413, reason="body too large")
    return JSONResponse({"error": "body too large"}, status_code=413)


def bind(listen: str) -> socket.socket:
    """A socket bound to `listen` ("host:port") and listening, for `serve`.

    Bound by the daemon before it opens any app, so that a taken port or a wrong address ends
    the start at once with one line naming the setting, instead of uvicorn's exit mid-run.

    Raises:
        ConfigError: the address cannot be bound (taken, not an address of this host).
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"error: daemon.listen: cannot listen on {listen}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"error: daemon.listen: cannot listen on {listen}: {exc.strerror or exc}") from exc
    sock.set_inheritable(False)
    return sock


async def serve(engine: Engine, sock: socket.socket, stop: asyncio.Event, *,
                public_url: str | None = None, auth: AdminAuth | None = None,
                reloader: Reloader | None = None) -> None:
    """Serve the API on a socket from `bind` until `stop` is set."""
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn without its signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP (they
        drain the engine, then stop this server through `stop`). uvicorn's own would replace
        the daemon's while it serves, and raise a captured signal again when it ends."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(create_app(engine, public_url=public_url, auth=auth, reloader=reloader),
                            log_config=None,
                            access_log=False, lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task
