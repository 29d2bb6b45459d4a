"""The `customer-sync` command: run the daemon, one pass or a dry run; check health; and the
operator's actions (status, conflicts, errors, deletes, dead letters, pause and resume, log,
explain, resync, connectors).

Thin on purpose: every decision lives in `engine/` (the runner and `engine.admin`); a command
loads the config, opens the store, calls one function and renders what it returns. Expected
errors end with a message and an exit code, never a traceback: 2 for a bad config or bad usage,
1 for everything else that failed (store unreachable, an app parked or failed, nothing found).

Logs go to stderr, so that stdout holds only the command's output (and `--json` stays
parseable).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from customer_sync import __version__
from customer_sync._cli_render import (
    EMPTY,
    diff_lines,
    format_change,
    format_lag,
    format_raw,
    format_time,
    format_value,
    table,
    to_json,
)
from customer_sync._lazy import lazy_module
from customer_sync.engine._identity import default_identity_key
from customer_sync.errors import ConfigError, StoreError, SyncError

if TYPE_CHECKING:
    import asyncio

    from customer_sync.api.auth import AdminAuth
    from customer_sync.config import Config
    from customer_sync.engine import admin
    from customer_sync.engine.runner import RunSummary
    from customer_sync.reload import Reloader
    from customer_sync.store.db import Store

__all__ = ["app", "main"]

# Every command pays for what this module imports, `--help` included: the engine, the store
# (SQLAlchemy) and the config (pydantic-settings, the connectors) are imported by the commands
# that use them, and `admin` is loaded on its first use.
if not TYPE_CHECKING:
    admin = lazy_module("customer_sync.engine.admin")

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="customer-sync",
    help="Two-way sync of customer records across your apps.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
conflicts_app = typer.Typer(help="Conflicts the rules could not decide, and resolving them.")
deletes_app = typer.Typer(help='Deletes held for approval (apps with on_delete = "approve").')
dead_letters_app = typer.Typer(help="Writes an app refused or that ran out of attempts, and replaying them.")
app.add_typer(conflicts_app, name="conflicts")
app.add_typer(deletes_app, name="deletes")
app.add_typer(dead_letters_app, name="dead-letters")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="CUSTOMER_SYNC_CONFIG", dir_okay=False,
        help="The config file (env CUSTOMER_SYNC_CONFIG).",
    ),
]
# Under a group (`conflicts`, `deletes`) --config may come before or after the subcommand.
SubConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", dir_okay=False, help="The config file (default: the group's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
DEFAULT_CONFIG = Path("config.toml")


@dataclass(frozen=True)
class _GroupOptions:
    """Options given to a group (`conflicts -c F resolve ...`), for its subcommands."""

    config_path: Path
    show_all: bool = False
    as_json: bool = False


# -- plumbing ----------------------------------------------------------------------------------


def _err(line: str) -> None:
    typer.echo(line, err=True)


def _expected_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors an operator can cause or fix into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for line in exc.problems:
                _err(line)
            raise typer.Exit(2) from None
        except StoreError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(1) from None
        except admin.NotFound as exc:
            _err(f"not found: {exc}")
            raise typer.Exit(1) from None
        except SyncError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(1) from None

    return wrapper


def _setup(config_path: Path) -> Config:
    """Load the config and configure logging from its `[daemon]` table.

    Raises:
        ConfigError: with one problem line per error.
    """
    from customer_sync.config import load_config
    from customer_sync.logs import configure_logging

    config = load_config(config_path)
    daemon = config.daemon
    configure_logging(
        level=daemon.log_level, fmt=daemon.log_format, redact=daemon.redact_logs, stream=sys.stderr
    )
    return config


@contextlib.contextmanager
def _opened_store(config: Config) -> Iterator[Store]:
    """The store, closed afterwards. Only `run` creates or migrates a store (`_daemon_store`):
    an operator command against a missing or outdated store says so instead.

    Raises:
        StoreError: the store is missing, unreachable or not at this version's schema.
    """
    from customer_sync.store.db import check_store, open_store

    check_store(config.daemon.store_url)
    store = open_store(config.daemon.store_url, migrate=False)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _daemon_store(config: Config) -> Iterator[Store]:
    """The store of `run`, held under the daemon lock, and created or migrated only once the
    lock is held: a second daemon is refused before it touches the store (it neither migrates
    the store under the first, nor waits for the first's write lock to say so).

    Raises:
        StoreLocked: another daemon holds the store.
        StoreError: the store is unreachable, or cannot be locked or migrated.
    """
    from customer_sync.store.db import migrate_store, open_store
    from customer_sync.store.lock import daemon_lock

    with _store_setting():
        store = open_store(config.daemon.store_url, migrate=False)
    try:
        with contextlib.ExitStack() as held:
            with _store_setting():
                held.enter_context(daemon_lock(store))
                migrate_store(store)
            yield store
    finally:
        store.close()


@contextlib.contextmanager
def _store_setting() -> Iterator[None]:
    """A store the daemon cannot open, lock or migrate at start (an unwritable folder, a
    wrong host) is a setting to fix: one line naming `daemon.store_url`, exit 2. Another
    daemon on the store stays exit 1 (it says who holds it)."""
    from customer_sync.errors import StoreLocked

    try:
        yield
    except StoreLocked:
        raise
    except StoreError as exc:
        raise ConfigError(f"error: daemon.store_url: {exc}") from exc


def _print_json(data: Any) -> None:
    typer.echo(to_json(data))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"customer-sync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Two-way sync of customer records across your apps."""


# -- run -----------------------------------------------------------------------------------------


@app.command()
@_expected_errors
def run(
    config_path: ConfigOption = DEFAULT_CONFIG,
    once: Annotated[bool, typer.Option("--once", help="Run until quiet, then exit.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read every app and show the writes; write nothing.")
    ] = False,
    reconcile: Annotated[
        bool, typer.Option("--reconcile", help="With --once: compare every app whole with the "
                           "store now (hard deletes, edits with old modified times), not only "
                           "those whose reconcile_interval_s has passed.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the daemon (until SIGTERM or Ctrl-C), run until quiet (--once), or a dry run (--dry-run).

    --once runs the daemon's own rounds until one is quiet; it exits 1 when an app failed. Only
    one daemon (or --once) runs on a store at a time: a second exits 1 and says who holds it.
    """
    if once and dry_run:
        raise typer.BadParameter("use --once or --dry-run, not both", param_hint="--once/--dry-run")
    if as_json and not (once or dry_run):
        raise typer.BadParameter("--json goes with --once or --dry-run", param_hint="--json")
    if reconcile and not once:
        raise typer.BadParameter("--reconcile goes with --once (the daemon reconciles on its "
                                 "interval)", param_hint="--reconcile")
    config = _setup(config_path)
    auth = None
    if not (once or dry_run):
        from customer_sync.api.auth import admin_auth

        auth = admin_auth()  # a token too short to be safe ends the start, naming the variable
    signals = _DaemonSignals()
    if not (once or dry_run):
        signals.install()  # a stop that comes while the daemon starts is kept, not a traceback
    import asyncio  # here, not at the top: `--help` and the operator commands need no event loop

    with _daemon_store(config) as store:
        if dry_run:
            plan = asyncio.run(_dry_run(config, store))
            _print_plan(plan, as_json=as_json)
            _err("dry run: nothing was written")
            if any(entry.get("op") == "error" for entry in plan):
                raise typer.Exit(1)
        elif once:
            summary = asyncio.run(_run_once(config, store, reconcile=reconcile or None))
            _print_summary(summary, as_json=as_json)
            if summary.failed_apps:
                raise typer.Exit(1)
        else:
            from customer_sync.api.app import bind

            # bound before any app opens: a taken port ends the start at once, naming the setting
            sock = bind(config.daemon.listen)
            try:
                asyncio.run(_run_daemon(config, config_path, store, sock, signals, auth))
            finally:
                sock.close()
                signals.restore()


async def _dry_run(config: Config, store: Store) -> list[dict[str, Any]]:
    from customer_sync.engine.runner import Engine

    async with Engine(config, store) as engine:
        return await engine.dry_run()


async def _run_once(config: Config, store: Store, *, reconcile: bool | None) -> RunSummary:
    from customer_sync._cli_progress import progress_bar
    from customer_sync.engine.runner import Engine

    async with Engine(config, store) as engine:
        with progress_bar(engine):  # on a terminal only
            return await engine.run_once(reconcile=reconcile)


#: How long SIGTERM waits for the round in flight (its writes, then its cursors) before it
#: cancels it; a write cut off is sent again at the next start, idempotently.
STOP_GRACE_S = 30.0


class _DaemonSignals:
    """The daemon's signals for its whole life, from before the loop runs until the process
    ends: SIGTERM and SIGINT stop it (a second one says it is stopping already, and changes
    nothing); SIGHUP reloads the config (`customer_sync.reload`). One that arrives while the
    daemon starts is acted on as soon as its loop runs."""

    STOP = (signal.SIGTERM, signal.SIGINT)
    ALL = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.early: set[int] = set()
        self.stop: asyncio.Event | None = None
        self.reloader: Reloader | None = None
        self._previous: dict[int, Any] = {}
        self._reloads: set[asyncio.Task[Any]] = set()

    def install(self) -> None:
        for sig in self.ALL:
            self._previous[sig] = signal.signal(sig, self._before_loop)

    def _before_loop(self, signum: int, frame: object) -> None:
        self.early.add(signum)  # acted on when the loop runs; nothing is in flight yet

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, reloader: Reloader) -> None:
        self.stop, self.reloader = stop, reloader
        for sig in self.STOP:
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        if self.early & set(self.STOP):
            stop.set()
        elif signal.SIGHUP in self.early:
            self._on_hup()

    def _on_stop(self, sig: signal.Signals) -> None:
        from customer_sync.engine.runner import log

        assert self.stop is not None
        if self.stop.is_set():
            log.info("daemon.already_stopping", signal=sig.name,
                     detail=f"writes in flight finish first (at most {STOP_GRACE_S:.0f}s)")
            return
        log.info("daemon.stopping", signal=sig.name)
        self.stop.set()

    def _on_hup(self) -> None:
        import asyncio

        assert self.reloader is not None
        task = asyncio.ensure_future(self.reloader.reload())
        self._reloads.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._reloads.discard)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self.ALL:
            loop.remove_signal_handler(sig)
            signal.signal(sig, self._before_loop)  # the loop is ending: a late signal is moot

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


async def _run_daemon(config: Config, config_path: Path, store: Store, sock: socket.socket,
                      signals: _DaemonSignals, auth: AdminAuth | None = None) -> None:
    """Run the daemon until stopped; a reload closes the apps and opens the new config's on the
    same store and socket."""
    import asyncio

    from customer_sync.reload import Reloader

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloader = Reloader(config_path, config)
    signals.attach(loop, stop, reloader)
    try:
        while not stop.is_set():
            reloader.swapped.clear()
            await _run_engine(reloader.config, store, sock, stop, reloader, auth)
    finally:
        signals.detach(loop)


async def _run_engine(config: Config, store: Store, sock: socket.socket, stop: asyncio.Event,
                      reloader: Reloader, auth: AdminAuth | None) -> None:
    """One engine and its HTTP server, until the daemon stops or a new config is swapped in."""
    import asyncio

    from customer_sync.api.app import serve
    from customer_sync.engine.runner import Engine, log

    ending = asyncio.Event()  # this engine's stop: the daemon's, or a reload
    async with Engine(config, store) as engine:
        # uvicorn closes the socket it serves; a duplicate keeps the bound one for the next engine
        work = asyncio.ensure_future(asyncio.gather(
            engine.run_forever(ending),
            serve(engine, sock.dup(), ending, public_url=config.daemon.public_url, auth=auth,
                  reloader=reloader),
        ))
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reloader.swapped.wait())}
        await asyncio.wait({work, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        ending.set()
        if not work.done():
            # the round in flight finishes its writes and commits its cursors, within bounds
            done, _ = await asyncio.wait({work}, timeout=STOP_GRACE_S)
            if not done:
                log.warning("daemon.stop_timeout", grace_s=STOP_GRACE_S,
                            detail="the round in flight was cancelled; its writes are sent "
                                   "again at the next start")
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
        await work


def _print_plan(plan: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        _print_json(plan)
        return
    if not plan:
        typer.echo("nothing to write: every app already agrees")
        return
    rows = []
    for entry in plan:
        fields = entry.get("fields") or {}
        rows.append([
            format_value(entry.get("customer")),
            entry.get("app") or "",
            entry.get("op") or "",
            list(fields) or [""],
            [format_change(old, new) for old, new in fields.values()] or [""],
            entry.get("reason") or "",
        ])
    typer.echo(table(["customer", "app", "op", "field", "old → new", "reason"], rows))
    typer.echo(f"{len(plan)} write(s) planned")


def _print_summary(summary: RunSummary, *, as_json: bool) -> None:
    data = summary.as_dict()
    if as_json:
        _print_json(data)
        return
    lines = [
        ("records read", data["read"]),
        ("customers created", data["created"]),
        ("records matched", data["matched"]),
        ("customers updated", data["updated"]),
        ("records written", data["dispatch_written"]),
        ("records deleted", data["dispatch_deleted"]),
        ("echoes ignored", data["echoes"]),
        ("conflicts", data["conflicts"]),
        ("parked", data["parked"]),
        ("errors", data["errors"]),
        ("writes waiting for retry", data["waiting"]),
    ]
    width = max(len(label) for label, _ in lines)
    typer.echo(f"pass finished in {data['duration_s']:.2f}s ({data['rounds']} round(s))")
    for label, value in lines:
        typer.echo(f"  {label.ljust(width)}  {value}")
    if summary.failed_apps:
        typer.echo("failed apps:")
        for name, error in sorted(summary.failed_apps.items()):
            typer.echo(f"  {name}: {error}")
    else:
        typer.echo(f"  {'failed apps'.ljust(width)}  none")


# -- check ---------------------------------------------------------------------------------------


@app.command()
@_expected_errors
def check(
    config_path: ConfigOption = DEFAULT_CONFIG,
    connect: Annotated[
        bool, typer.Option("--connect", help="Also ask every enabled app's connector to connect.")
    ] = False,
) -> None:
    """Check the config, the store and the apps; exit 0 when healthy (run it before a deploy).

    Exit 2: the config is invalid. Exit 1: the store is unreachable or not migrated, an app is
    parked, or (with --connect) an app cannot be reached.
    """
    config = _setup(config_path)
    enabled = sum(rt.config.enabled for rt in config.apps.values())
    typer.echo(f"ok config: {config_path} ({enabled} of {len(config.apps)} apps enabled)")
    healthy = True
    from customer_sync.store.db import store_to_create

    try:
        fresh = store_to_create(config.daemon.store_url)
    except StoreError as exc:
        raise ConfigError(f"error: daemon.store_url: {exc}") from exc
    if fresh is not None:  # before the first run: nothing can be parked yet
        typer.echo(f"ok store: {fresh}")
        parked = []
    else:
        with _opened_store(config) as store:
            typer.echo(f"ok store: {store.display_url} is reachable and migrated")
            parked = [row for row in admin.app_status(store, config) if row["parked"]]
    for row in parked:
        healthy = False
        _err(f"app {row['app']}: parked: {row['last_error'] or 'no error recorded'}")
    if not parked:
        typer.echo("ok apps: none parked")
    if connect:
        import asyncio

        for name, problem, verified in asyncio.run(_check_connections(config)):
            if problem is None:
                typer.echo(f"ok app {name}: {verified}")
            else:
                healthy = False
                _err(f"app {name}: {problem}")
    if not healthy:
        raise typer.Exit(1)


async def _check_connections(config: Config) -> list[tuple[str, str | None, str]]:
    """Per enabled app: (app, problem or None, what was verified)."""
    results: list[tuple[str, str | None, str]] = []
    for name, rt in config.apps.items():
        if not rt.config.enabled:
            continue
        try:
            async with rt.make_connector() as connector:
                await connector.check()
                known = await connector.app_fields()
        except SyncError as exc:
            results.append((name, f"cannot connect: {type(exc).__name__}: {exc}", ""))
            continue
        if known is None:
            results.append((name, None, ("connected (its connector cannot list the app's fields, "
                                         "so the field map is not checked against them)")))
            continue
        prefixes = tuple(f[:-1] for f in known if f.endswith(".*"))  # "hash.*": any key
        unknown = sorted(f for f in rt.mapping.app_fields - known if not f.startswith(prefixes))
        if unknown:
            problem = (f"apps.{name}.fields maps app field(s) the app does not have: "
                       f"{', '.join(unknown)} (it has: {', '.join(sorted(known)) or 'none'})")
            results.append((name, problem, ""))
        else:
            results.append((name, None, "connected, every mapped field exists"))
    return results


# -- status --------------------------------------------------------------------------------------


@app.command()
@_expected_errors
def status(config_path: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Per app: last poll, lag, linked records, inbox, pending writes, dead letters, values
    rejected (see `errors`), state and last error."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        rows = admin.app_status(store, config)
    if as_json:
        _print_json(rows)
        return
    typer.echo(table(
        ["app", "connector", "last poll", "lag", "linked", "inbox", "pending", "dead", "rejected",
         "state", "last error"],
        [[
            row["app"] + ("" if row["enabled"] else " (disabled)"),
            row["connector"],
            format_time(row["last_poll_at"]),
            format_lag(row["lag_s"]),
            row["linked"],
            row["inbox"],
            row["pending_writes"],
            row["dead_letters"],
            row["rejections"],
            _app_state(row),
            row["last_error"] or EMPTY,
        ] for row in rows],
    ))
    # app_status counts open conflicts over every app, so they are shown once, as a total.
    open_conflicts = rows[0]["open_conflicts"] if rows else 0
    typer.echo(f"open conflicts: {open_conflicts}"
               + ("  (see: customer-sync conflicts)" if open_conflicts else ""))


def _app_state(row: dict[str, Any]) -> str:
    """PARKED (needs an operator), "paused by operator" (`customer-sync pause`), PAUSED until a
    time (the vendor asked to wait), "not listed yet" (no create is sent to it before its first
    complete listing), or ok (`admin.run_state`)."""
    state, until = admin.run_state(row)
    if state == "parked":
        return "PARKED"
    if until is not None:
        return f"PAUSED until {format_time(until)}"
    return state


# -- conflicts -----------------------------------------------------------------------------------


AllOption = Annotated[bool, typer.Option("--all", help="Also list decided and resolved conflicts.")]


@conflicts_app.callback(invoke_without_command=True)
@_expected_errors
def conflicts(
    ctx: typer.Context,
    config_path: ConfigOption = DEFAULT_CONFIG,
    show_all: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """List parked conflicts (the default), or resolve one."""
    ctx.obj = _GroupOptions(config_path, show_all=show_all, as_json=as_json)
    if ctx.invoked_subcommand is None:
        _list_conflicts(config_path, show_all=show_all, as_json=as_json)


@conflicts_app.command("list")
@_expected_errors
def conflicts_list(
    ctx: typer.Context,
    config_path: SubConfigOption = None,
    show_all: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """List parked conflicts (with --all: every conflict, newest first)."""
    group: _GroupOptions = ctx.obj
    _list_conflicts(
        config_path or group.config_path, show_all=show_all or group.show_all, as_json=as_json or group.as_json
    )


def _list_conflicts(config_path: Path, *, show_all: bool, as_json: bool) -> None:
    config = _setup(config_path)
    with _opened_store(config) as store:
        rows = admin.list_conflicts(store, status=None if show_all else "parked")
        who = {cid: _customer_label(store, cid) for cid in {r["customer_id"] for r in rows} if cid}
    if as_json:
        _print_json([{**row, "customer": who.get(row["customer_id"])} for row in rows])
        return
    if not rows:
        typer.echo("no parked conflicts" if not show_all else "no conflicts")
        return
    typer.echo(table(
        ["id", "kind", "status", "customer", "field", "rule", "winner", "loser", "created"],
        [[
            row["id"], row["kind"], row["status"],
            who.get(row["customer_id"]) or row["customer_id"] or EMPTY,
            row["field"] or EMPTY, row["rule"] or EMPTY,
            _side(row["winner_app"], row["winner_value"]),
            _side(row["loser_app"], row["loser_value"]),
            format_time(row["created_at"]),
        ] if row["kind"] == "field" else [
            row["id"], row["kind"], row["status"],
            f"{row['app']} record {row['app_record_id']}", EMPTY, EMPTY,
            _review_reason(row["detail"] or {}), EMPTY,
            format_time(row["created_at"]),
        ] for row in rows],
    ))
    if any(row["status"] == "parked" and row["kind"] == "field" for row in rows):
        typer.echo("resolve with: customer-sync conflicts resolve ID --take APP")


def _review_reason(detail: dict[str, Any]) -> str:
    """What a match or merge review item is about, in a few words."""
    if detail.get("candidates"):
        return f"{len(detail['candidates'])} candidates ({detail.get('reason', 'ambiguous')})"
    if detail.get("duplicate_of"):
        return f"{detail.get('reason', 'duplicate')} of {detail['duplicate_of']}"
    return str(detail.get("reason") or EMPTY)


def _side(app_name: str | None, value: Any) -> str:
    return f"{app_name}: {format_value(value)}" if app_name else EMPTY


def _customer_label(store: Store, customer_id: str) -> str:
    try:
        found = admin.explain(store, customer_id)
    except admin.NotFound:
        return f"{customer_id} (gone)"
    return admin.summarize_values({k: v["value"] for k, v in found["fields"].items()})


@conflicts_app.command("resolve")
@_expected_errors
def conflicts_resolve(
    ctx: typer.Context,
    conflict_id: Annotated[int, typer.Argument(metavar="ID", help="The conflict's id.")],
    take: Annotated[str, typer.Option("--take", help="The app whose value wins.")],
    config_path: SubConfigOption = None,
) -> None:
    """Resolve a parked conflict by taking one app's value; the next run writes it everywhere."""
    config = _setup(config_path or ctx.obj.config_path)
    with _opened_store(config) as store:
        result = admin.resolve_conflict(
            store, config, conflict_id, take=take, identity_key=default_identity_key()
        )
    typer.echo(
        f"conflict {conflict_id} resolved: {result['field']} takes {take}'s value; "
        f"{result['planned']} write(s) planned for the next run"
    )


# -- errors (rejections) -------------------------------------------------------------------------


@app.command("errors")
@_expected_errors
def errors_(
    config_path: ConfigOption = DEFAULT_CONFIG,
    app_name: Annotated[
        str | None, typer.Option("--app", metavar="APP", help="Only this app's rejections.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most N, the most recently seen first.")
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """Values the apps sent that were refused (an invalid phone, an unmapped country), with the
    value as the app holds it: fix it there, and the next read of the record resolves it."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        rows = admin.list_rejections(store, config, app=app_name, limit=limit)
        who = {cid: _customer_label(store, cid) for cid in {r["customer_id"] for r in rows} if cid}
    if as_json:
        _print_json([{**row, "customer": who.get(row["customer_id"])} for row in rows])
        return
    if not rows:
        typer.echo("no rejected values" + (f" in {app_name}" if app_name else ""))
        return
    typer.echo(table(
        ["app", "record", "field", "value", "reason", "customer", "first seen", "last seen"],
        [[row["app"], row["app_record_id"], row["field"], format_raw(row["raw_value"]), row["reason"],
          who.get(row["customer_id"]) or row["customer_id"] or "(not linked)",
          format_time(row["first_seen_at"]), format_time(row["last_seen_at"])] for row in rows],
    ))
    more = f" (the {limit} most recently seen; --limit shows more)" if len(rows) == limit else ""
    typer.echo(f"{len(rows)} rejected value(s){more}; fix them in the app: the next read resolves them")


# -- deletes -------------------------------------------------------------------------------------


@deletes_app.callback(invoke_without_command=True)
@_expected_errors
def deletes(
    ctx: typer.Context, config_path: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False
) -> None:
    """List deletes waiting for approval (the default), or approve / reject one."""
    ctx.obj = _GroupOptions(config_path, as_json=as_json)
    if ctx.invoked_subcommand is not None:
        return
    config = _setup(config_path)
    with _opened_store(config) as store:
        rows = admin.list_pending_deletes(store)
        who = {cid: _customer_label(store, cid) for cid in {r["customer_id"] for r in rows}}
    if as_json:
        _print_json([{**row, "customer": who.get(row["customer_id"])} for row in rows])
        return
    if not rows:
        typer.echo("no deletes waiting for approval")
        return
    typer.echo(table(
        ["id", "customer", "deleted in", "record", "requested"],
        [[row["id"], who[row["customer_id"]], row["app"], row["app_record_id"],
          format_time(row["requested_at"])] for row in rows],
    ))
    typer.echo("decide with: customer-sync deletes approve ID  |  customer-sync deletes reject ID")


RequestId = Annotated[int, typer.Argument(metavar="ID", help="The delete request's id.")]


@deletes_app.command("approve")
@_expected_errors
def deletes_approve(
    ctx: typer.Context, request_id: RequestId, config_path: SubConfigOption = None
) -> None:
    """Approve a held delete: the next run deletes the customer from every app."""
    config = _setup(config_path or ctx.obj.config_path)
    with _opened_store(config) as store:
        result = admin.approve_delete(store, config, request_id, identity_key=default_identity_key())
    typer.echo(
        f"delete request {request_id} approved: customer {result['customer_id']} "
        "will be deleted from every app by the next run"
    )


@deletes_app.command("reject")
@_expected_errors
def deletes_reject(
    ctx: typer.Context, request_id: RequestId, config_path: SubConfigOption = None
) -> None:
    """Reject a held delete: the other apps keep the customer; the deleting app is unlinked."""
    config = _setup(config_path or ctx.obj.config_path)
    with _opened_store(config) as store:
        result = admin.reject_delete(store, config, request_id, identity_key=default_identity_key())
    typer.echo(
        f"delete request {request_id} rejected: the other apps keep customer "
        f"{result['customer_id']}; {result['app']} is no longer synced for it"
    )


# -- dead letters --------------------------------------------------------------------------------


@dead_letters_app.callback(invoke_without_command=True)
@_expected_errors
def dead_letters(
    ctx: typer.Context,
    config_path: ConfigOption = DEFAULT_CONFIG,
    show_all: Annotated[bool, typer.Option("--all", help="Also list those replayed already.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List dead letters (the default), or replay one."""
    ctx.obj = _GroupOptions(config_path, show_all=show_all, as_json=as_json)
    if ctx.invoked_subcommand is None:
        _list_dead_letters(config_path, show_all=show_all, as_json=as_json)


@dead_letters_app.command("list")
@_expected_errors
def dead_letters_list(
    ctx: typer.Context,
    config_path: SubConfigOption = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list those replayed already.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List dead letters, newest first (with --all: the replayed ones too)."""
    group: _GroupOptions = ctx.obj
    _list_dead_letters(config_path or group.config_path, show_all=show_all or group.show_all,
                       as_json=as_json or group.as_json)


def _list_dead_letters(config_path: Path, *, show_all: bool, as_json: bool) -> None:
    config = _setup(config_path)
    with _opened_store(config) as store:
        rows = admin.list_dead_letters(store, include_replayed=show_all)
        who = {cid: _customer_label(store, cid) for cid in {r["customer_id"] for r in rows} if cid}
    if as_json:
        _print_json([{**row, "customer": who.get(row["customer_id"])} for row in rows])
        return
    if not rows:
        typer.echo("no dead letters")
        return
    typer.echo(table(
        ["id", "app", "op", "customer", "record", "fields", "error", "at", "replayed"],
        [[row["id"], row["app"], (row["payload"] or {}).get("op") or row["source"],
          who.get(row["customer_id"]) or row["customer_id"] or EMPTY, row["app_record_id"] or EMPTY,
          ", ".join((row["payload"] or {}).get("fields") or []) or EMPTY, row["error"],
          format_time(row["at"]), format_time(row["replayed_at"]) if row["replayed_at"] else EMPTY]
         for row in rows],
    ))
    if any(row["replayed_at"] is None for row in rows):
        typer.echo("replay with: customer-sync dead-letters replay ID")


@dead_letters_app.command("replay")
@_expected_errors
def dead_letters_replay(
    ctx: typer.Context,
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", help="The dead letter's id.")],
    config_path: SubConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a dead letter's write back in the outbox (attempts reset); the next run sends it."""
    config = _setup(config_path or ctx.obj.config_path)
    with _opened_store(config) as store:
        result = admin.replay_dead_letter(store, config, dead_letter_id, identity_key=default_identity_key())
    if as_json or ctx.obj.as_json:
        _print_json(result)
        return
    if not result["replayed"]:
        typer.echo(f"dead letter {dead_letter_id} was replayed already ({format_time(result['replayed_at'])}); "
                   "nothing more planned")
        return
    typer.echo(f"dead letter {dead_letter_id} replayed: {result['planned']} write(s) to {result['app']} "
               "planned for the next run")


# -- pause, resume ------------------------------------------------------------------------------


AppArgument = Annotated[str, typer.Argument(metavar="APP", help="A configured app.")]


@app.command()
@_expected_errors
def pause(app_name: AppArgument, config_path: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Pause an app: the daemon neither polls it nor sends it writes (they wait) until `resume`."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        result = admin.pause_app(store, config, app_name)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"{app_name} paused: neither polled nor written to until `customer-sync resume {app_name}`"
               if result["changed"] else f"{app_name} was paused already")


@app.command()
@_expected_errors
def resume(app_name: AppArgument, config_path: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Resume an app paused by `pause`: the next round polls it and sends what waited."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        result = admin.resume_app(store, config, app_name)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"{app_name} resumed: the next round polls it and sends what waited"
               if result["changed"] else f"{app_name} was not paused")


# -- one customer --------------------------------------------------------------------------------


Who = Annotated[str, typer.Argument(
    metavar="WHO",
    help="An email, a phone, a customer id, or an app's record as APP:RECORD_ID (crm:c1).",
)]


@app.command("log")
@_expected_errors
def log_(
    who: Who,
    config_path: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="The last N entries.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The change log of one customer: what was observed, decided and written, and why; and
    the values of its records that were refused."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        customer_id = admin.find_customer(store, who, identity_key=default_identity_key(),
                                          apps=config.apps)
        entries = admin.customer_log(store, customer_id, limit=limit)
        rejections = admin.customer_rejections(store, customer_id)
    if as_json:
        _print_json({"customer_id": customer_id, "entries": entries, "rejections": rejections})
        return
    typer.echo(f"customer {customer_id}")
    if not entries:
        typer.echo("no change log entries")
    else:
        typer.echo(table(
            ["time", "kind", "app", "record", "fields", "reason"],
            [[format_time(e["at"]), e["kind"], e["app"] or EMPTY, e["app_record_id"] or EMPTY,
              diff_lines(e["diff"]) or [""], e["reason"] or ""] for e in entries],
        ))
    if rejections:
        typer.echo("")
        typer.echo("rejected values:")
        typer.echo(table(
            ["app", "record", "field", "value", "reason", "status", "last seen"],
            [[r["app"], r["app_record_id"], r["field"], format_raw(r["raw_value"]), r["reason"],
              r["status"] if r["status"] == "open" else f"resolved {format_time(r['resolved_at'])}",
              format_time(r["last_seen_at"])] for r in rejections],
        ))


@app.command()
@_expected_errors
def explain(who: Who, config_path: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Why a customer looks the way it does: each field's value, source app, time and rule."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        customer_id = admin.find_customer(store, who, identity_key=default_identity_key(),
                                          apps=config.apps)
        found = admin.explain(store, customer_id)
    if as_json:
        _print_json(found)
        return
    typer.echo(f"customer {customer_id}")
    typer.echo(f"created {format_time(found['created_at'])}, updated {format_time(found['updated_at'])}"
               + (f", DELETED {format_time(found['deleted_at'])}" if found["deleted_at"] else ""))
    typer.echo("")
    typer.echo(table(
        ["field", "value", "from app", "at", "rule"],
        [[name, format_value(f["value"]), f.get("app") or EMPTY, format_time(f.get("at")),
          _rule(f)] for name, f in found["fields"].items()],
    ))
    typer.echo("")
    if found["links"]:
        typer.echo(table(["app", "record", "link"],
                         [[lk["app"], lk["app_record_id"], lk["state"]] for lk in found["links"]]))
    else:
        typer.echo("no links")


def _rule(source: dict[str, Any]) -> str:
    """The rule a field's value stands by, and the conflict that decided it."""
    rule = source.get("rule") or EMPTY
    return f"{rule} (conflict {source['conflict_id']})" if source.get("conflict_id") else rule


# -- resync, connectors --------------------------------------------------------------------------


@app.command()
@_expected_errors
def resync(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The configured app to re-read.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Forget an app's cursor: the next run re-reads all its records (unchanged ones cost nothing)."""
    config = _setup(config_path)
    with _opened_store(config) as store:
        admin.resync(store, config, app_name)
    typer.echo(f"resync {app_name}: cursor forgotten; the next run re-reads every record of {app_name}")


# `connectors` needs no config; given one (or CUSTOMER_SYNC_CONFIG), it names the apps using each.
OptionalConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="CUSTOMER_SYNC_CONFIG", dir_okay=False,
        help="A config file: also show which of its apps use each connector "
             "(env CUSTOMER_SYNC_CONFIG).",
    ),
]


@app.command()
@_expected_errors
def connectors(config_path: OptionalConfigOption = None, as_json: JsonOption = False) -> None:
    """The installed connectors: name, distribution, capabilities and batch size; with a
    config, the apps that use each."""
    from customer_sync.sdk.registry import discover_connectors

    used_by: dict[str, list[str]] | None = None
    if config_path is not None:
        config = _setup(config_path)
        used_by = {}
        for name, rt in sorted(config.apps.items()):
            used_by.setdefault(rt.config.connector, []).append(name)
    found = [
        {
            "name": info.name,
            "distribution": info.distribution,
            "capabilities": [flag.name for flag in info.cls.capabilities if flag.name],
            "batch_size": info.cls.batch_size,
            **({} if used_by is None else {"apps": used_by.get(info.name, [])}),
        }
        for info in discover_connectors().values()
    ]
    if as_json:
        _print_json(found)
        return
    if not found:
        typer.echo("no connectors installed")
        return
    headers = ["name", "distribution", "capabilities", "batch size"]
    if used_by is not None:
        headers.append("apps")
    typer.echo(table(
        headers,
        [[c["name"], c["distribution"] or EMPTY, ", ".join(c["capabilities"]) or EMPTY,
          c["batch_size"], *([", ".join(c["apps"]) or EMPTY] if used_by is not None else [])]
         for c in found],
    ))


# -- sandbox -------------------------------------------------------------------------------------


@app.command()
def sandbox(
    directory: Annotated[Path, typer.Option(
        "--dir", file_okay=False, help="Where the sandbox writes its config, store and sandbox.env.",
    )] = Path("sandbox-data"),
    port: Annotated[int, typer.Option(
        "--port", min=1, max=65535, help="The daemon's port (dashboard, webhooks) on 127.0.0.1.",
    )] = 8080,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a config in --dir that the sandbox did not write.",
    )] = False,
) -> None:
    """Try it out: simulated HubSpot, Zendesk, Mailchimp and Chatwoot on loopback, seeded with a
    small business's customers, synced by the daemon; prints the dashboard URL. Ctrl-C stops it.

    Exit 2: --dir holds another config (see --force), or --port cannot be listened on.
    """
    from customer_sync.sandbox.quickstart import run_sandbox

    def run_daemon(config_path: Path) -> None:
        run(config_path=config_path)  # the daemon `customer-sync run` starts, in this process

    code = run_sandbox(directory, port=port, force=force, run_daemon=run_daemon,
                       echo=typer.echo, err=_err)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """The console script's entry point."""
    app()
