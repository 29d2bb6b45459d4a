"""The admin API under `/api`: what the CLI's operator commands do, over HTTP, with an OpenAPI
document at `/api/openapi.json`.

Every route needs the admin token (`api.auth`): `Authorization: Bearer <token>`, or the
dashboard's session cookie; anything else is a 401 with `WWW-Authenticate: Bearer`. With no
token configured the daemon mounts `admin_off` instead, which answers 404 on every path and
says how to turn the API on: the admin API is off, never open.

The routes call `engine.admin`, the same functions as the CLI. Store calls block, so each runs
off the event loop (`Engine.db`); a busy store is a 503 with `Retry-After`, a missing customer,
conflict, dead letter or app a 404, and an action the current state refuses (a conflict already
resolved, a write that cannot be replayed) a 409. Bad input is never a 5xx. An action that plans
writes wakes the engine (`Engine.notify`), so the daemon sends them in its next round instead of
at its next tick.

FastAPI is imported by this module only, which the HTTP app imports when it is built: the CLI's
other commands never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from fastapi import Body, Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from customer_sync.api.auth import ADMIN_TOKEN_ENV
from customer_sync.engine import admin
from customer_sync.errors import ConfigError, StoreBusy, StoreError
from customer_sync.store.tables import stored_utc

if TYPE_CHECKING:
    from customer_sync.api.auth import AdminAuth
    from customer_sync.engine.runner import Engine
    from customer_sync.reload import Reloader

__all__ = ["admin_api", "admin_off"]

T = TypeVar("T")
#: What a 503 asks the client to wait before trying again (as the webhook intake's).
RETRY_AFTER_S = 10
#: The largest id a store holds (a signed 64-bit integer); a larger one is refused as input.
MAX_ID = 2**63 - 1


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else stored_utc(value)


UtcTime = Annotated[datetime, AfterValidator(stored_utc)]
OptionalUtcTime = Annotated[datetime | None, AfterValidator(_utc)]


# -- the documents ---------------------------------------------------------------------------------


class Problem(BaseModel):
    """Why a request was refused."""

    error: str


class AppStatus(BaseModel):
    """One app's health, as `customer-sync status` shows it."""

    app: str
    connector: str
    enabled: bool
    state: str = Field(description='"ok", "paused by operator", "paused until ...", "parked" or "not listed yet"')
    listed: bool = Field(description="its first complete listing is done (creates go to it)")
    paused_until: OptionalUtcTime = Field(description="the vendor asked to wait until then")
    paused_by_operator_at: OptionalUtcTime = Field(description="paused by an operator since then")
    last_poll_at: OptionalUtcTime
    lag_s: float | None = Field(description="seconds since the last successful poll")
    linked: int
    inbox: int
    pending_writes: int
    dead_letters: int
    rejections: int
    parked: bool = Field(description="its credentials were refused; it waits for an operator")
    last_error: str | None
    open_conflicts: int = Field(description="parked conflicts over every app")
    health: Literal["in sync", "lagging", "failing", "paused"] = Field(
        description="as the dashboard says it: paused, failing (credentials refused, failed passes, "
                    "or half of 5+ recent changes failed), lagging, or in sync")
    health_reason: str = Field(description="why, in a few words")
    recent_written: int = Field(description="changes written to the app this hour and the last")
    recent_errors: int = Field(description="changes that ended in an error, same window")


class FieldSource(BaseModel):
    """One canonical field: its value, the app it came from, when, and by which rule (a
    conflict decision names its rule and the conflict)."""

    model_config = ConfigDict(extra="allow")
    value: Any = None
    app: str | None = None
    at: str | None = None
    rule: str | None = None
    conflict_id: int | None = None


class Link(BaseModel):
    app: str
    app_record_id: str
    state: str


class ChangeLogEntry(BaseModel):
    seq: int
    at: UtcTime
    kind: str
    app: str | None
    app_record_id: str | None
    customer_id: str | None
    diff: Any = None
    source_modified_at: OptionalUtcTime = None
    reason: str | None
    run_id: str | None


class Rejection(BaseModel):
    app: str
    app_record_id: str
    field: str
    raw_value: Any = None
    reason: str
    status: str
    customer_id: str | None
    first_seen_at: UtcTime
    last_seen_at: UtcTime
    resolved_at: OptionalUtcTime = None


class Customer(BaseModel):
    """A customer with its links, change log, rejected values and `explain`."""

    customer_id: str
    created_at: UtcTime
    updated_at: UtcTime
    deleted_at: OptionalUtcTime
    fields: dict[str, FieldSource]
    links: list[Link]
    log: list[ChangeLogEntry]
    rejections: list[Rejection]


class Conflict(BaseModel):
    id: int
    kind: str
    status: str
    customer_id: str | None
    field: str | None
    rule: str | None
    winner_app: str | None
    winner_value: Any = None
    loser_app: str | None
    loser_value: Any = None
    app: str | None
    app_record_id: str | None
    detail: dict[str, Any] | None
    created_at: UtcTime
    resolved_at: OptionalUtcTime


class Resolve(BaseModel):
    """Which app's value wins."""

    take: str = Field(description="one of the conflict's two apps")


class Resolved(BaseModel):
    customer_id: str
    field: str
    planned: int = Field(description="writes planned for the next dispatch")


class DeadLetter(BaseModel):
    id: int
    source: str
    app: str
    app_record_id: str | None
    customer_id: str | None
    payload: dict[str, Any] | None
    error: str
    at: UtcTime
    replayed_at: OptionalUtcTime


class Replayed(BaseModel):
    dead_letter_id: int
    app: str
    customer_id: str | None
    replayed: bool = Field(description="False: it had been replayed before; nothing more was planned")
    planned: int
    replayed_at: OptionalUtcTime


class PendingDelete(BaseModel):
    id: int
    customer_id: str
    app: str
    app_record_id: str
    status: str
    requested_at: UtcTime
    decided_at: OptionalUtcTime


class DeleteDecided(BaseModel):
    customer_id: str
    app: str
    approved: bool


class Paused(BaseModel):
    app: str
    paused: bool
    changed: bool = Field(description="False: the app was in that state already")


class Resynced(BaseModel):
    app: str
    detail: str


class Reloaded(BaseModel):
    applied: bool
    reason: str
    apps: list[str]


# -- the app ---------------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description=f"the admin token ({ADMIN_TOKEN_ENV})")
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
AppName = Annotated[str, PathParam(description="a configured app")]
Who = Annotated[str, PathParam(description="a customer id, an email, a phone, or APP:RECORD_ID")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="at most this many, the newest")]
OnlyApp = Annotated[str | None, Query(description="only this app's")]
ConflictStatus = Literal["parked", "decided", "resolved", "all"]
ResolveBody = Annotated[Resolve, Body()]


async def require_admin(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The admin token (bearer) or the dashboard's session cookie, else a 401."""
    if not request.app.state.auth.allows(request):
        raise _Refused(401, "the admin token is missing or wrong", {"WWW-Authenticate": "Bearer"})


class _Refused(Exception):
    """An answer other than 200, with its reason."""

    def __init__(self, status_code: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status_code, self.error, self.headers = status_code, error, headers


def _refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in (401, 503, *codes)}


def state_word(row: dict[str, Any]) -> str:
    """The one-word state of an app in `status` (`admin.run_state`, as the CLI says it)."""
    state, until = admin.run_state(row)
    return f"{state} {stored_utc(until).isoformat()}" if until is not None else state


def admin_api(engine: Engine, *, auth: AdminAuth, reloader: Reloader | None) -> FastAPI:
    """The admin API over an opened engine, to mount at `/api`."""
    api = FastAPI(
        title="customer-sync admin API",
        version="1",
        description="Operate a running customer-sync daemon: app status, customers, conflicts, "
                    "dead letters, deletes waiting for approval, pause and resume, resync, reload.",
        dependencies=[Depends(require_admin)],
        servers=[{"url": "/api", "description": "this daemon"}],
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    api.state.auth = auth

    @api.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"error": exc.error}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, a method not allowed) in our shape
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    async def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return await engine.db(fn, *args, **kw)
        except StoreBusy:
            raise _Refused(503, "store busy", {"Retry-After": str(RETRY_AFTER_S)}) from None
        except StoreError:
            raise _Refused(503, "store unavailable", {"Retry-After": str(RETRY_AFTER_S)}) from None
        except admin.NotFound as exc:
            raise _Refused(404, str(exc)) from None
        except ConfigError as exc:
            raise _Refused(409, "; ".join(exc.problems)) from None

    def known_app(app: str) -> str:
        if app not in engine.config.apps:
            raise _Refused(404, f"no app {app!r} (configured: {', '.join(engine.config.apps)})")
        return app

    @api.get("/status", response_model=list[AppStatus], responses=_refusals(), tags=["apps"])
    async def status() -> list[dict[str, Any]]:
        """Per app: last poll, lag, linked records, inbox, pending writes, dead letters, values
        rejected, state and last error."""
        def read() -> list[dict[str, Any]]:
            now = engine.clock()
            rows = admin.app_status(engine.store, engine.config, now=now)
            act = admin.activity(engine.store, until=admin.hour_after(now), buckets=admin.HEALTH_BUCKETS)
            healths = admin.health_by_app(rows, act, engine.config)
            return [{**row, "state": state_word(row), **healths[row["app"]]} for row in rows]

        return await call(read)

    @api.get("/customers/{who:path}", response_model=Customer, responses=_refusals(404), tags=["customers"])
    async def customer(who: Who, limit: Limit = 200) -> dict[str, Any]:
        """One customer: each field's value, app, time and rule (`explain`), its links, change
        log (oldest first) and rejected values."""

        def read() -> dict[str, Any]:
            cid = admin.find_customer(engine.store, who, identity_key=engine.identity_key,
                                      apps=engine.config.apps)
            found = admin.explain(engine.store, cid)
            found["log"] = admin.customer_log(engine.store, cid, limit=limit)
            found["rejections"] = admin.customer_rejections(engine.store, cid)
            return found

        return await call(read)

    @api.get("/conflicts", response_model=list[Conflict], responses=_refusals(), tags=["conflicts"])
    async def conflicts(
        status: ConflictStatus = "parked", limit: Limit = 200,
    ) -> list[dict[str, Any]]:
        """Conflicts, newest first: those parked for an operator (the default), or another status."""
        return await call(admin.list_conflicts, engine.store, status=None if status == "all" else status,
                          limit=limit)

    @api.post("/conflicts/{conflict_id}/resolve", response_model=Resolved,
              responses=_refusals(400, 404, 409), tags=["conflicts"])
    async def resolve(conflict_id: Id, body: ResolveBody) -> dict[str, Any]:
        """Resolve a parked conflict by taking one app's value; it is then written to every app
        that differs."""
        if body.take not in engine.config.apps:
            raise _Refused(400, f"take: {body.take!r} is not a configured app")
        result = await call(admin.resolve_conflict, engine.store, engine.config, conflict_id,
                            take=body.take, identity_key=engine.identity_key, now=engine.clock())
        engine.notify()
        return result

    @api.get("/dead-letters", response_model=list[DeadLetter], responses=_refusals(404),
             tags=["dead letters"])
    async def dead_letters(
        app: OnlyApp = None, include_replayed: bool = False, limit: Limit = 200,
    ) -> list[dict[str, Any]]:
        """Writes an app refused or that ran out of attempts, newest first."""
        if app is not None:
            known_app(app)
        return await call(admin.list_dead_letters, engine.store, app=app,
                          include_replayed=include_replayed, limit=limit)

    @api.post("/dead-letters/{dead_letter_id}/replay", response_model=Replayed,
              responses=_refusals(404, 409), tags=["dead letters"])
    async def replay(dead_letter_id: Id) -> dict[str, Any]:
        """Put the write back in the outbox as pending, its attempts reset, planned from what
        the customer holds now; a second replay plans nothing."""
        result = await call(admin.replay_dead_letter, engine.store, engine.config, dead_letter_id,
                            identity_key=engine.identity_key, now=engine.clock())
        engine.notify()
        return result

    @api.get("/deletes", response_model=list[PendingDelete], responses=_refusals(), tags=["deletes"])
    async def deletes() -> list[dict[str, Any]]:
        """Deletes waiting for approval (apps with `on_delete = "approve"`)."""
        return await call(admin.list_pending_deletes, engine.store)

    @api.post("/deletes/{request_id}/approve", response_model=DeleteDecided,
              responses=_refusals(404), tags=["deletes"])
    async def approve(request_id: Id) -> dict[str, Any]:
        """Approve a held delete: the customer is deleted from every app that holds it."""
        result = await call(admin.approve_delete, engine.store, engine.config, request_id,
                            identity_key=engine.identity_key, now=engine.clock())
        engine.notify()
        return result

    @api.post("/deletes/{request_id}/reject", response_model=DeleteDecided,
              responses=_refusals(404), tags=["deletes"])
    async def reject(request_id: Id) -> dict[str, Any]:
        """Reject a held delete: the other apps keep the customer; the deleting app is unlinked."""
        result = await call(admin.reject_delete, engine.store, engine.config, request_id,
                            identity_key=engine.identity_key, now=engine.clock())
        engine.notify()
        return result

    @api.post("/apps/{app}/pause", response_model=Paused, responses=_refusals(404), tags=["apps"])
    async def pause(app: AppName) -> dict[str, Any]:
        """Pause an app: neither polled nor written to (writes wait in the outbox) until
        resumed, across restarts."""
        return await call(admin.pause_app, engine.store, engine.config, known_app(app), now=engine.clock())

    @api.post("/apps/{app}/resume", response_model=Paused, responses=_refusals(404), tags=["apps"])
    async def resume(app: AppName) -> dict[str, Any]:
        """Lift an operator's pause: the next round polls the app and sends what waited."""
        result = await call(admin.resume_app, engine.store, engine.config, known_app(app), now=engine.clock())
        engine.notify()
        return result

    @api.post("/apps/{app}/resync", response_model=Resynced, responses=_refusals(404), tags=["apps"])
    async def resync(app: AppName) -> dict[str, Any]:
        """Forget the app's cursor: its next poll re-reads every record (unchanged ones cost
        nothing)."""
        await call(admin.resync, engine.store, engine.config, known_app(app))
        engine.notify()
        return {"app": app, "detail": f"cursor forgotten; the next poll re-reads every record of {app}"}

    @api.post("/config/reload", response_model=Reloaded, tags=["daemon"],
              responses={**_refusals(), 409: {"model": Reloaded, "description": "refused: the running config stays"}})
    async def reload() -> Any:
        """Re-read and validate the daemon's config file, and swap it in (200), or keep the
        running config and say why (409). 503 when the daemon runs without a config file."""
        if reloader is None:
            raise _Refused(503, "this engine runs without a config file to reload")
        result = await reloader.reload()
        body = {"applied": result.applied, "reason": result.reason, "apps": list(result.apps)}
        return JSONResponse(body, status_code=200 if result.applied else 409)

    return api


async def admin_off(scope: Scope, receive: Receive, send: Send) -> None:
    """Every `/api` path while no admin token is configured: 404, saying how to turn it on."""
    if scope["type"] != "http":
        return
    response = JSONResponse(
        {"error": f"the admin API is off: set {ADMIN_TOKEN_ENV} (at least 16 characters) in the "
                  "daemon's environment to turn it on"},
        status_code=404)
    await response(scope, receive, send)

