"""The dashboard at `/`: server-rendered HTML pages for an operator, behind the admin token.

Plain HTML and a little inline CSS, no JavaScript: every action is a form. Pages are built
from `api._html`'s pieces, in which every value goes through `e` (`html.escape`): a hostile
name shows as text. Every value cell is `dir="auto"` (values inside running text are isolated
with `<bdi>`), so a Persian or Arabic name reads right to left inside the left-to-right
tables.

- `/login` (a form that posts the token; a correct one sets the session cookie, `HttpOnly`
  and `SameSite=Strict`, from `AdminAuth.session_value`), `/logout`;
- `/`: per-app health (`admin.app_health`), charts of the last 24 hours (changes written,
  conflicts), conflicts waiting with a resolve form per side, recent rejections;
- `/customers/{who}` (an id, an email, a phone or `APP:RECORD_ID`): each field's value, the
  app it came from, when and by which rule, its links, rejections and change log.

Every page needs the session (or the bearer token), else it redirects to `/login`; every form
posted carries the `csrf` field (`AdminAuth.check_csrf`), else 403. Store reads run off the
event loop (`Engine.db`); a busy store answers a 503 page. Personal data is shown on these
pages and never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

import structlog
from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from customer_sync.api._html import (
    bar_chart,
    cell,
    csrf_field,
    diff_html,
    duration,
    e,
    page,
    show,
    table,
    when,
)
from customer_sync.engine import admin
from customer_sync.engine.webhooks import is_store_busy as is_busy
from customer_sync.errors import ConfigError, StoreBusy, StoreError

if TYPE_CHECKING:
    from customer_sync.api.auth import AdminAuth
    from customer_sync.engine.runner import Engine

__all__ = ["dashboard_routes"]

log = structlog.get_logger("customer_sync.dashboard")

#: The longest form body read (a login or a resolve form is a few hundred bytes).
MAX_FORM_BYTES = 16_384
#: Hours the charts cover, one bar each.
CHART_HOURS = 24
_STATE_CLASS = {"in sync": "ok", "lagging": "warn", "failing": "bad", "paused": "off"}
_APP_COLOURS = ("#2f6fde", "#e07b00", "#2a9d5b", "#9b4dca", "#c9344d", "#00838f", "#8d6e00")

async def _form(request: Request) -> dict[str, str]:
    """A posted urlencoded form (the only kind these pages send), first value of each field."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _safe_next(target: str | None) -> str:
    """A redirect target on this site only (no `//host`, `/\\host` or `scheme:`; no control
    characters or spaces, which browsers drop before they read `//`)."""
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(c.isspace() or not c.isprintable() for c in target)):
        return "/"
    return target


# -- reads (in a worker thread) -----------------------------------------------------------------

def _overview(engine: Engine, now: datetime) -> dict[str, Any]:
    store, config = engine.store, engine.config
    until = admin.hour_after(now)
    return {
        "status": admin.app_status(store, config, now=now),
        "activity": admin.activity(store, until=until, buckets=CHART_HOURS),
        "conflicts": (conflicts := admin.list_conflicts(store, status="parked", limit=100)),
        "who": admin.customer_summaries(store, [c["customer_id"] for c in conflicts]),
        "rejections": admin.list_rejections(store, config, limit=50),
    }


def _customer(engine: Engine, who: str) -> dict[str, Any]:
    store = engine.store
    cid = admin.find_customer(store, who, identity_key=engine.identity_key, apps=engine.config.apps)
    return {"explain": admin.explain(store, cid), "log": admin.customer_log(store, cid, limit=100),
            "rejections": admin.customer_rejections(store, cid),
            "conflicts": (conflicts := admin.list_conflicts(store, status="parked", customer_id=cid)),
            "who": admin.customer_summaries(store, [cid] if conflicts else [])}


# -- pages --------------------------------------------------------------------------------------

def _overview_body(engine: Engine, data: Mapping[str, Any], auth: AdminAuth, flash: str) -> str:
    act = data["activity"]
    colours = {app: _APP_COLOURS[i % len(_APP_COLOURS)] for i, app in enumerate(engine.config.apps)}
    healths = admin.health_by_app(data["status"], act, engine.config)
    health_rows = []
    for row in data["status"]:
        app = row["app"]
        h = healths[app]
        state, why, written, errors = h["health"], h["health_reason"], h["recent_written"], h["recent_errors"]
        rate = f"{errors / (written + errors):.0%}" if written + errors else "—"
        health_rows.append(
            f'<tr data-app="{e(app)}"><td>{e(app)} <span class="muted">{e(row["connector"])}</span></td>'
            f'<td><span class="state {_STATE_CLASS[state]}">{e(state)}</span> '
            f'<span class="muted">{e(why)}</span></td>'
            f'<td>{e(when(row["last_poll_at"]))}</td><td>{e(duration(row["lag_s"]))}</td>'
            f'<td>{row["pending_writes"]}</td><td>{e(rate)} <span class="muted">({errors} of '
            f'{written + errors}, 2 h)</span></td><td>{row["linked"]}</td><td>{row["rejections"]}</td>'
            f'<td>{row["dead_letters"]}</td>{cell(row["last_error"])}</tr>')
    health = table(["app", "state", "last poll", "lag", "pending writes", "error rate", "linked",
                     "rejections", "dead letters", "last error"], health_rows, empty="No apps configured.")
    written_series = {app: act["written"].get(app, [0] * len(act["starts"])) for app in engine.config.apps}
    charts = (bar_chart("Changes written per hour (24 h)", act["starts"], written_series, colours)
              + bar_chart("Conflicts per hour (24 h)", act["starts"], {"conflicts": act["conflicts"]},
                           {"conflicts": "#c9344d"}))
    if act["truncated"]:
        charts += '<p class="muted">The busiest part of the window was counted in part only.</p>'
    conflicts = _conflicts_table(data["conflicts"], data["who"], auth, back="/")
    rejection_rows = [
        f'<tr><td>{e(r["app"])}</td><td><a href="/customers/{quote(r["app"] + ":" + r["app_record_id"], safe="")}">'
        f'<bdi dir="auto">{e(r["app_record_id"])}</bdi></a></td><td>{e(r["field"])}</td>'
        f'{cell(r["raw_value"])}{cell(r["reason"])}<td>{e(when(r["last_seen_at"]))}</td></tr>'
        for r in data["rejections"]]
    rejections = table(["app", "record", "field", "value", "reason", "last seen"], rejection_rows,
                        empty="No open rejections.")
    return (f"<h1>Overview</h1>{flash}<h2>Apps</h2>{health}<h2>Activity</h2><div class=\"charts\">{charts}</div>"
            f"<h2>Conflicts waiting ({len(data['conflicts'])})</h2>{conflicts}"
            f"<h2>Recent rejections</h2>{rejections}")


def _customer_body(data: Mapping[str, Any], auth: AdminAuth, *, back: str, flash: str) -> str:
    ex = data["explain"]
    waiting = {c["field"]: c["id"] for c in data["conflicts"] if c["field"]}
    field_rows = []
    for name, f in ex["fields"].items():
        rule = e(f.get("rule") or "—")
        decided_by = f.get("conflict_id", f.get("conflict"))  # a conflict's rule decided it
        if decided_by is not None:
            rule += f' <span class="muted">(conflict #{e(decided_by)})</span>'
        if name in waiting:
            rule += f' <strong>conflict #{waiting[name]} waiting</strong>'
        field_rows.append(f'<tr data-field="{e(name)}"><td>{e(name)}</td>{cell(f.get("value"))}'
                          f'<td>{e(f.get("app") or "—")}</td><td>{e(when(f.get("at")))}</td><td>{rule}</td></tr>')
    fields = table(["field", "value", "from app", "when", "rule"], field_rows, empty="No values.")
    links = table(["app", "record", "state"], (
        f'<tr><td>{e(lk["app"])}</td>{cell(lk["app_record_id"])}<td>{e(lk["state"])}</td></tr>'
        for lk in ex["links"]), empty="Linked to no app.")
    rejections = table(["app", "record", "field", "value", "reason", "status"], (
        f'<tr><td>{e(r["app"])}</td>{cell(r["app_record_id"])}<td>{e(r["field"])}</td>'
        f'{cell(r["raw_value"])}{cell(r["reason"])}<td>{e(r["status"])}</td></tr>'
        for r in data["rejections"]), empty="No rejections.")
    log_rows = []
    for entry in reversed(data["log"]):  # newest first
        log_rows.append(f'<tr><td>{e(when(entry["at"]))}</td><td>{e(entry["kind"])}</td>'
                        f'<td>{e(entry["app"] or "")}</td><td>{diff_html(entry["diff"])}</td>'
                        f'{cell(entry["reason"])}</tr>')
    changelog = table(["when", "kind", "app", "change", "why"], log_rows, empty="Nothing logged.")
    deleted = f'<p class="error">Deleted {e(when(ex["deleted_at"]))}</p>' if ex["deleted_at"] else ""
    conflicts = (f"<h2>Conflicts waiting</h2>{_conflicts_table(data['conflicts'], data['who'], auth, back=back)}"
                 if data["conflicts"] else "")
    return (f'<h1>Customer <bdi>{e(ex["customer_id"])}</bdi></h1>{flash}{deleted}'
            f'<p class="muted">created {e(when(ex["created_at"]))}, updated {e(when(ex["updated_at"]))}</p>'
            f"<h2>Fields</h2>{fields}{conflicts}<h2>Links</h2>{links}<h2>Rejections</h2>{rejections}"
            f"<h2>Change log (newest first)</h2>{changelog}")


def _conflicts_table(rows: Sequence[Mapping[str, Any]], who: Mapping[str, Mapping[str, Any]],
                     auth: AdminAuth, *, back: str) -> str:
    """Conflicts waiting, with the customer's name and email (`who`, by customer id) and a
    resolve form per side of a field conflict (the form comes back to `back`)."""
    out = []
    for c in rows:
        cid = c["customer_id"]
        customer = "<td>—</td>"
        if cid:
            known = who.get(cid, {})
            label = "".join(f'<div dir="auto">{e(known[k])}</div>'
                            for k in ("name", "email") if known.get(k)) or e(cid)
            customer = f'<td><a href="/customers/{quote(cid, safe="")}">{label}</a></td>'
        if c["kind"] == "field":
            sides = [(c["winner_app"], c["winner_value"]), (c["loser_app"], c["loser_value"])]
            values = "".join(f'<div><strong>{e(app)}</strong>: <bdi dir="auto">{e(show(v))}</bdi></div>'
                             for app, v in sides)
            actions = "".join(
                f'<form class="inline" method="post" action="/conflicts/{c["id"]}/resolve">{csrf_field(auth)}'
                f'<input type="hidden" name="back" value="{e(back)}">'
                f'<input type="hidden" name="take" value="{e(app)}">'
                f'<button name="resolve" value="{e(app)}">Take {e(app)}</button></form>' for app, _ in sides)
        else:
            values = f'<div dir="auto">{e(c["app"] or "")} {e(c["app_record_id"] or "")}</div>'
            actions = '<span class="muted">resolve in the app (link or merge the records)</span>'
        out.append(
            f'<tr data-conflict="{c["id"]}"><td>{c["id"]}</td><td>{e(c["kind"])}</td>{customer}'
            f'<td>{e(c["field"] or "")}</td><td dir="auto">{values}</td><td>{e(when(c["created_at"]))}</td>'
            f'<td>{actions}</td></tr>')
    return table(["#", "kind", "customer", "field", "values", "since", "resolve"], out,
                  empty="No conflicts waiting.")


def _flash(request: Request) -> str:
    if (done := request.query_params.get("resolved")) and (took := request.query_params.get("took")):
        return f'<p class="note" role="status">Conflict {e(done)} resolved: took {e(took)}.</p>'
    return ""


def dashboard_routes(engine: Engine, auth: AdminAuth | None) -> list[BaseRoute]:
    """The dashboard's routes, for `create_app`; with no admin token (`auth` None), `/` and
    `/login` answer 404 saying how to turn the dashboard on."""
    if auth is None:
        async def off(request: Request) -> Response:
            return page("Dashboard off", (
                "<h1>The dashboard is off</h1><p>No admin token is set. Set the environment variable "
                "<code>CUSTOMER_SYNC_ADMIN_TOKEN</code> to a secret of 16 characters or more "
                "(e.g. <code>openssl rand -hex 32</code>) and restart the daemon; then log in here "
                "with that token.</p>"), status_code=404)

        return [Route("/", off, methods=["GET", "POST"]), Route("/login", off, methods=["GET", "POST"])]

    def guarded(handler: Callable[[Request], Awaitable[Response]], *, post: bool = False
                ) -> Callable[[Request], Awaitable[Response]]:
        """Needs the session (else to /login); a POST needs the csrf field (else 403); a busy
        store is a 503 page."""

        async def endpoint(request: Request) -> Response:
            assert auth is not None
            if not auth.allows(request):
                if request.method != "GET":
                    return page("Log in", '<p class="error">Your session has ended. '
                                 '<a href="/login">Log in</a> again.</p>', status_code=401)
                target = quote(request.url.path, safe="/:@") + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
            if post:
                form = await _form(request)
                if not auth.check_csrf(form.get("csrf")):
                    log.warning("dashboard.csrf_refused", path=request.url.path)
                    return page("Refused", '<p class="error">This form is stale or was not sent by '
                                 'this dashboard. <a href="/">Back to the overview</a>.</p>',
                                 auth=auth, status_code=403)
                request.state.form = form
            try:
                return await handler(request)
            except (StoreBusy, OperationalError) as exc:
                # the store's own lock wait ran out (SQLite `database is locked`, a PostgreSQL lock
                # or statement timeout), or it cannot be reached: the page, not a 500
                busy = isinstance(exc, StoreBusy) or is_busy(exc)
                log.warning("dashboard.store_unavailable", reason="busy" if busy else type(exc).__name__)
                response = page("Store busy" if busy else "Store unavailable", (
                    '<p class="error">The store is busy; try again in a few seconds.</p>' if busy else
                    '<p class="error">The store cannot be reached.</p>'), auth=auth, status_code=503)
                response.headers["Retry-After"] = "5"
                return response
            except StoreError as exc:
                log.warning("dashboard.store_unavailable", reason=type(exc).__name__)
                return page("Store unavailable", '<p class="error">The store cannot be reached.</p>',
                             auth=auth, status_code=503)

        return endpoint

    async def login_page(request: Request) -> Response:
        assert auth is not None
        if request.method == "GET" and auth.allows(request):
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        error, status, target = "", 200, request.query_params.get("next", "/")
        if request.method == "POST":
            form = await _form(request)
            target = form.get("next", "/")
            if auth.check_token(form.get("token", "")):
                log.info("dashboard.logged_in")
                response = RedirectResponse(_safe_next(target), status_code=303)
                response.set_cookie("customer_sync_session", auth.session_value, httponly=True,
                                    samesite="strict", secure=request.url.scheme == "https", path="/")
                return response
            log.warning("dashboard.login_refused")
            error, status = '<p class="error" role="alert">That is not the admin token.</p>', 401
        return page("Log in", (
            f'<h1>Log in</h1>{error}<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{e(_safe_next(target))}">'
            f'<label>Admin token <input type="password" name="token" autocomplete="current-password" '
            f'required autofocus></label> <button>Log in</button></form>'
            f'<p class="muted">The token is the value of <code>CUSTOMER_SYNC_ADMIN_TOKEN</code> in the '
            f'daemon\'s environment.</p>'), status_code=status)

    async def logout_page(request: Request) -> Response:
        assert auth is not None
        return page("Log out", f'<form method="post" action="/logout">{csrf_field(auth)}'
                     f'<button>Log out</button></form>', auth=auth)

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie("customer_sync_session", path="/", httponly=True, samesite="strict")
        return response

    async def overview(request: Request) -> Response:
        assert auth is not None
        data = await engine.db(_overview, engine, engine.clock())
        return page("Overview", _overview_body(engine, data, auth, _flash(request)), auth=auth)

    async def resolve(request: Request) -> Response:
        assert auth is not None
        conflict_id = request.path_params["conflict_id"]
        take = request.state.form.get("take", "")
        try:
            await engine.db(admin.resolve_conflict, engine.store, engine.config, conflict_id, take=take,
                            identity_key=engine.identity_key, now=engine.clock())
        except admin.NotFound as exc:
            return page("Not found", f'<p class="error">{e(exc)}</p><p><a href="/">Back</a></p>',
                         auth=auth, status_code=404)
        except ConfigError as exc:
            return page("Not resolved", f'<p class="error">{e(exc)}</p><p><a href="/">Back</a></p>',
                         auth=auth, status_code=409)
        log.info("dashboard.conflict_resolved", conflict_id=conflict_id, app=take)
        engine.notify()  # the writes it planned go out soon, not at the next tick
        back = _safe_next(request.state.form.get("back")).partition("?")[0]
        return RedirectResponse(f"{back}?" + urlencode({"resolved": conflict_id, "took": take}), status_code=303)

    async def search(request: Request) -> Response:
        assert auth is not None
        who = request.query_params.get("q", "").strip()
        if who:
            return RedirectResponse(f"/customers/{quote(who, safe='')}", status_code=303)
        return page("Find a customer", "<h1>Find a customer</h1><p>By customer id, email, phone or "
                     "<code>APP:RECORD_ID</code>, in the box above.</p>", auth=auth)

    async def customer(request: Request) -> Response:
        assert auth is not None
        who = request.path_params["who"]
        try:
            data = await engine.db(_customer, engine, who)
        except admin.NotFound:
            return page("Not found", f'<h1>No customer found</h1><p>Nobody matches '
                         f'<bdi dir="auto">{e(who)}</bdi>.</p>', auth=auth, status_code=404, search=who)
        back = "/customers/" + quote(who, safe="")
        return page("Customer", _customer_body(data, auth, back=back, flash=_flash(request)),
                     auth=auth, search=who)

    return [
        Route("/", guarded(overview), methods=["GET"]),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", guarded(logout_page), methods=["GET"]),
        Route("/logout", guarded(logout, post=True), methods=["POST"]),
        Route("/conflicts/{conflict_id:int}/resolve", guarded(resolve, post=True), methods=["POST"]),
        Route("/customers", guarded(search), methods=["GET"]),
        Route("/customers/{who:path}", guarded(customer), methods=["GET"]),
    ]
