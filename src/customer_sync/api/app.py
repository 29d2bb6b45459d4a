"""The daemon's small HTTP surface: webhook intake, health and readiness.

`POST /webhooks/{app}` verifies the delivery's signature through the app's connector and commits
its changes to the inbox *before* answering 2xx, so an acknowledged webhook is never lost; the
engine processes the inbox on its own schedule. Bodies are capped, and every refusal is a clear
status: 401 (signature), 404 (no such app), 400 (malformed), 413 (too large).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from customer_sync.errors import AuthError, ConnectorError
from customer_sync.store.tables import AppState

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine

__all__ = ["MAX_BODY_BYTES", "create_app", "serve"]

log = structlog.get_logger("customer_sync.api")
MAX_BODY_BYTES = 1_000_000


def create_app(engine: Engine, *, public_url: str | None = None) -> Starlette:
    """The ASGI app over an opened engine.

    Args:
        public_url: the base URL vendors post to (e.g. behind a proxy); used to rebuild the
            exact URL a vendor signed. Default: the URL the request arrived on.
    """

    async def webhook(request: Request) -> JSONResponse:
        app = request.path_params["app"]
        if app not in engine.apps:
            return JSONResponse({"error": "no such app"}, status_code=404)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        url = str(request.url)
        if public_url:
            url = public_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            count = await engine.accept_webhook(app, dict(request.headers), body, url=url, method=request.method)
        except AuthError:
            return JSONResponse({"error": "signature rejected"}, status_code=401)
        except ConnectorError as exc:
            log.warning("webhook.rejected", app=app, reason=type(exc).__name__)
            return JSONResponse({"error": "malformed delivery"}, status_code=400)
        log.info("webhook.accepted", app=app, count=count)
        return JSONResponse({"accepted": count})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            parked = await asyncio.to_thread(_parked_apps, engine)
        except Exception as exc:  # the store is unreachable: not ready, say why in one word
            return JSONResponse({"status": "store unreachable", "error": type(exc).__name__}, status_code=503)
        failed = sorted(set(engine.unopened) | set(parked))
        status = 200 if not failed else 503
        return JSONResponse({"status": "ready" if not failed else "degraded", "failed_apps": failed},
                            status_code=status)

    return Starlette(routes=[
        Route("/webhooks/{app}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ])


def _parked_apps(engine: Engine) -> list[str]:
    state = AppState.__table__
    with engine.store.transaction() as conn:
        conn.execute(text("select 1"))
        return list(conn.execute(select(state.c.app).where(state.c.parked.is_(True))).scalars())


async def serve(engine: Engine, listen: str, stop: asyncio.Event, *, public_url: str | None = None) -> None:
    """Serve the API on `listen` ("host:port") until `stop` is set."""
    import uvicorn

    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(create_app(engine, public_url=public_url), host=host or "127.0.0.1",
                            port=int(port), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
