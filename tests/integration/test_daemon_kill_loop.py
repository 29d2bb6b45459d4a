"""kill -9, again and again, in daemon mode: 0 people lost, 0 duplicated, 0 values differing.

The real CLI (`customer-sync run`) runs as a subprocess over three `sql` apps in SQLite files
that already share customers (the same people, by email, in two or three apps, with differing
values), and a SQLite store. It is killed with SIGKILL at a random moment while it syncs, over
and over; while it is down, the apps' users edit people, add people (some of whom another app
already holds) and delete people (a soft delete in one app, a hard delete in another). At the
end one more daemon runs until it is quiet, and is stopped with SIGTERM.

Every value a user enters is logged with the modified time it was saved with, and those times
only grow, so under `last_writer` the expected end state is exact: each field holds the latest
non-empty value entered for it, in every app that should hold the person (every app but the one
it was deleted from). The modified time is the record's, not the field's: a user edits a record
again only once the daemon has read their previous edit of it (the app's cursor has passed
it), or two edits would reach the daemon as one, at the later time.

Two worlds (apps and store each) run side by side, so that the kills fit the time budget: a
daemon takes over a second to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from customer_sync_connectors.sql import SqlConnector, SqlSettings

MIN_KILLS_MID_SYNC = 50  # over both worlds
# per world: the loop fails at this many kills without enough of them mid-sync. On a loaded
# machine fewer kills land mid-sync (48 of 50 was seen at a load average of 24 with a cap of
# 60); the loop stops as soon as it has enough, so a high cap costs nothing on a quiet one.
MAX_KILLS = 100
WORLDS = 2
PEOPLE = 300  # people in each world's apps at the start; each is in one, two or three apps
FIELDS = ("first_name", "last_name", "company", "address.city")  # besides the email
QUIET_S = 3.0  # the last daemon is taken to be done when nothing has moved for this long


@dataclass(frozen=True)
class App:
    """One `sql` app: its table, its columns for the canonical fields, how its users delete."""

    name: str
    table: str
    columns: dict[str, str]  # canonical field -> column
    deletes: str | None  # "soft" (deleted_column), "hard" (DELETE) or None (never)

    @property
    def email(self) -> str:
        return self.columns["email"]


SAME = {"email": "email", "first_name": "first_name", "last_name": "last_name",
        "company": "company", "address.city": "city"}
APPS = {
    "crm": App("crm", "contacts", SAME, "soft"),
    "desk": App("desk", "users", SAME, "hard"),
    "shop": App("shop", "customers", {"email": "mail", "first_name": "given_name",
                                       "last_name": "family_name", "company": "org",
                                       "address.city": "town"}, None),
}

# Small batches: every batch of polled records, inbox items or writes commits on its own, so
# that kills land between many commits instead of in one long transaction.
CONFIG = """\
[daemon]
store_url = "sqlite:///{folder}/store.db"
listen = "127.0.0.1:{port}"
log_level = "info"
log_format = "json"
normalize_workers = 0
poll_interval_s = 0.2
batch_size = 50

[conflicts]
default = "last_writer"
"""
APP_CONFIG = """
[apps.{name}]
connector = "sql"
poll_interval_s = 0.2
{extra}
[apps.{name}.settings]
url = "sqlite:///{folder}/{name}.db"
{settings}

[apps.{name}.fields]
{fields}
"""


def _settings(app: App) -> dict[str, Any]:
    settings: dict[str, Any] = {"table": app.table, "create_table": True, "email_column": app.email,
                                "page_size": 50,
                                "column_types": {c: "text" for c in app.columns.values()}}
    if app.deletes == "soft":
        settings["deleted_column"] = "deleted_at"
    return settings


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike in TOML


def write_config(folder: Path) -> Path:
    """The config, on a port free now (each daemon start gets a new one)."""
    text = CONFIG.format(folder=folder.as_posix(), port=_free_port())
    for app in APPS.values():
        text += APP_CONFIG.format(
            name=app.name, folder=folder.as_posix(),
            # hard deletes are found by comparing ids: often, so that kills land in it too
            extra="reconcile_interval_s = 2" if app.deletes == "hard" else "",
            settings="\n".join(f"{k} = {_toml(v)}" for k, v in _settings(app).items()),
            fields="\n".join(f'"{f}" = "{c}"' for f, c in app.columns.items()),
        )
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    """The apps' users' clock: every time it tells is later than all it told before."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def stamp(self, *, now: bool = True) -> str:
        """The next modified time, as SQLAlchemy spells times in SQLite; `now=False`: just
        after the previous one (for back-dated seed rows)."""
        later = self.t + timedelta(microseconds=1)
        self.t = max(later, datetime.now(UTC)) if now else later
        return self.t.strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Person:
    """What the users entered for one person: the latest non-empty value of each field (with
    the modified time it was saved with), and the app it was deleted from."""

    email: str
    values: dict[str, tuple[str, str]] = field(default_factory=dict)
    deleted_in: str | None = None

    def expected(self, name: str) -> str | None:
        return self.values[name][1] if name in self.values else None


@dataclass
class Row:
    """A live row of an app, with the canonical field values it holds."""

    app_record_id: str
    values: dict[str, Any]

    @property
    def email(self) -> str:
        return str(self.values["email"]).lower()


@dataclass
class Figures:
    """How far the apps and the store are from the expected state."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not (self.lost or self.duplicated or self.differing)

    def __str__(self) -> str:
        counts = (f"{len(self.lost)} lost, {len(self.duplicated)} duplicated, "
                  f"{len(self.differing)} differing")
        shown = (self.lost + self.duplicated + self.differing)[:12]
        return counts + ("" if not shown else ":\n  " + "\n  ".join(shown))


@dataclass
class Kill:
    """One SIGKILL and what the daemon had left undone at that moment."""

    after_s: float  # since the daemon said it had started, till the kill
    progressed: bool  # it committed something: a change-log entry or a cursor
    outbox: int  # writes decided and not confirmed
    sending: int  # of which claimed for sending: the kill may have come between send and confirm
    inbox: int  # changes received and not processed
    unread: int  # rows the daemon has not listed since they last changed
    agree: bool | None  # the apps held the expected state already (None: not asked, work waited)

    @property
    def mid_sync(self) -> bool:
        """The daemon had done some of its work and had more waiting. Apps that disagree with
        nothing waiting do not count: the daemon is idle then, and only a bug leaves them so."""
        return self.progressed and bool(self.outbox or self.inbox or self.unread)


class World:
    """Three apps, a store, the users' edit log, and the expected state it implies."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = folder
        self.rng = random.Random(seed)
        self.clock = Clock(datetime.now(UTC) - timedelta(hours=1))
        self.people: dict[str, Person] = {}
        self.user_stamps: dict[tuple[str, str], str] = {}  # (app, id) -> last time a user saved it
        self.counter = 0
        self.actions: Counter[str] = Counter()

    # -- the apps, as their users see them ----------------------------------------------------

    def db(self, name: str) -> sqlite3.Connection:
        return sqlite3.connect(self.folder / f"{name}.db", timeout=30, isolation_level=None)

    def rows(self, name: str) -> list[Row]:
        app = APPS[name]
        names = list(app.columns)
        columns = ", ".join(app.columns[f] for f in names)
        live = " where deleted_at is null" if app.deletes == "soft" else ""
        with closing(self.db(name)) as conn:
            found = conn.execute(f"select id, {columns} from {app.table}{live}").fetchall()
        return [Row(str(r[0]), dict(zip(names, r[1:], strict=True))) for r in found]

    def by_email(self, name: str) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        for row in self.rows(name):
            out.setdefault(row.email, []).append(row)
        return out

    def insert(self, name: str, email: str, values: dict[str, str | None], *, app_record_id: str,
               stamp: str, shown: str | None = None, conn: sqlite3.Connection | None = None,
               ) -> None:
        """Add a row; `shown`: the email as the user typed it (any case); `conn`: a connection
        to the app's database to use (else one of its own)."""
        app = APPS[name]
        columns = {app.email: shown or email, **{app.columns[f]: v for f, v in values.items()}}
        with closing(self.db(name)) if conn is None else nullcontext(conn) as db:
            db.execute(
                f"insert into {app.table} (id, updated_at, {', '.join(columns)}) values "
                f"(?, ?, {', '.join('?' for _ in columns)})",
                (app_record_id, stamp, *columns.values()))
        self._entered(name, app_record_id, email, values, stamp)

    def update(self, name: str, row: Row, values: dict[str, str]) -> None:
        app = APPS[name]
        stamp = self.clock.stamp()
        sets = ", ".join(f"{app.columns[f]} = ?" for f in values)
        with closing(self.db(name)) as conn:
            conn.execute(f"update {app.table} set {sets}, updated_at = ? where id = ?",
                         (*values.values(), stamp, row.app_record_id))
        self._entered(name, row.app_record_id, row.email, values, stamp)

    def delete(self, name: str, row: Row) -> None:
        app = APPS[name]
        stamp = self.clock.stamp()
        with closing(self.db(name)) as conn:
            if app.deletes == "soft":
                conn.execute(f"update {app.table} set deleted_at = ?, updated_at = ? where id = ?",
                             (stamp, stamp, row.app_record_id))
            else:
                conn.execute(f"delete from {app.table} where id = ?", (row.app_record_id,))
        self.people[row.email].deleted_in = name
        self.user_stamps[(name, row.app_record_id)] = stamp

    def _entered(self, name: str, app_record_id: str, email: str, values: dict[str, str | None],
                 stamp: str) -> None:
        person = self.people.setdefault(email, Person(email))
        for f, value in values.items():
            if value:  # the latest non-empty value wins; an app lacking one is filled in
                person.values[f] = (stamp, value)
        self.user_stamps[(name, app_record_id)] = stamp

    def value(self, f: str) -> str:
        self.counter += 1
        return f"{f.split('.')[-1][:4]}-{self.counter}"

    # -- the store -----------------------------------------------------------------------------

    def store(self) -> sqlite3.Connection:
        path = self.folder / "store.db"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)

    def store_state(self) -> dict[str, Any]:
        """What the daemon has committed: its cursors, and the work it has left waiting."""
        with closing(self.store()) as conn:
            return {
                "cursors": dict(conn.execute("select app, value from cursors").fetchall()),
                "outbox": conn.execute("select count(*) from outbox "
                                       "where state in ('pending', 'sending')").fetchone()[0],
                "sending": conn.execute(
                    "select count(*) from outbox where state = 'sending'").fetchone()[0],
                "inbox": conn.execute(
                    "select count(*) from inbox where state = 'pending'").fetchone()[0],
            }

    def links(self) -> set[tuple[str, str]]:
        """The (app, id) of every record linked to a customer."""
        with closing(self.store()) as conn:
            return set(conn.execute(
                "select app, app_record_id from links where state = 'active'").fetchall())

    def customers(self) -> list[str | None]:
        """The email of every live customer in the store."""
        with closing(self.store()) as conn:
            return [json.loads(v).get("email") for (v,) in conn.execute(
                'select "values" from customers where deleted_at is null').fetchall()]

    def progress(self) -> tuple[Any, ...]:
        """What moves when the daemon commits a step: the change log and the cursors."""
        if not (self.folder / "store.db").exists():
            return (None, ())
        with closing(self.store()) as conn:
            try:
                return (conn.execute("select max(seq) from changelog").fetchone()[0],
                        tuple(conn.execute("select app, value from cursors order by app")))
            except sqlite3.OperationalError:  # not migrated yet
                return (None, ())

    def is_read(self, name: str, row: Row, cursors: dict[str, str]) -> bool:
        """The daemon has listed the last version of this row a user saved (the app's cursor,
        `{"m": modified, "id": last id}`, is past it)."""
        stamp = self.user_stamps.get((name, row.app_record_id))
        if stamp is None:
            return True  # only the daemon ever wrote this row
        if name not in cursors:
            return False
        position = json.loads(cursors[name])
        return (position["m"] is not None
                and (stamp, row.app_record_id) <= (position["m"], str(position["id"])))

    def unread(self, cursors: dict[str, str]) -> int:
        """Rows whose latest version (a user's or the daemon's) the daemon has not listed."""
        count = 0
        for name, app in APPS.items():
            position = json.loads(cursors[name]) if name in cursors else {"m": None}
            with closing(self.db(name)) as conn:
                if position["m"] is None:
                    count += conn.execute(f"select count(*) from {app.table}").fetchone()[0]
                    continue
                count += conn.execute(
                    f"select count(*) from {app.table} "
                    "where updated_at > ? or (updated_at = ? and id > ?)",
                    (position["m"], position["m"], str(position["id"]))).fetchone()[0]
        return count

    # -- the seed and the users' edits -----------------------------------------------------

    def seed(self) -> None:
        """PEOPLE people: 40% in one app, 35% in two, 25% in all three, with differing values."""
        planned: list[tuple[str, str, dict[str, str | None]]] = []
        for i in range(PEOPLE):
            email = f"p{i:05d}@example.com"
            k = self.rng.choices((1, 2, 3), weights=(40, 35, 25))[0]
            for name in self.rng.sample(sorted(APPS), k):
                planned.append((name, email, {
                    "first_name": f"First{i}" if self.rng.random() < 0.7 else f"First{i}-{name}",
                    "last_name": f"Last{i}" if self.rng.random() < 0.9 else None,
                    "company": f"Co{i}-{name}" if self.rng.random() < 0.5 else None,
                    "address.city": f"City{i}-{name}" if self.rng.random() < 0.3 else None,
                }))
        self.rng.shuffle(planned)  # which app saved a person last varies
        conns = {name: self.db(name) for name in APPS}
        try:
            for conn in conns.values():
                conn.execute("begin")
            for n, (name, email, values) in enumerate(planned):
                self.insert(name, email, values, app_record_id=f"{name}-seed-{n:05d}",
                            stamp=self.clock.stamp(now=False), conn=conns[name])
            for conn in conns.values():
                conn.execute("commit")
        finally:
            for conn in conns.values():
                conn.close()

    def edit_while_down(self, count: int) -> None:
        """`count` things the users do while the daemon is down."""
        cursors, links = self.store_state()["cursors"], self.links()
        held = {name: self.by_email(name) for name in APPS}
        emails = sorted(self.people)
        for _ in range(count):
            roll = self.rng.random()
            email = self.rng.choice(emails)
            person = self.people[email]
            name = self.rng.choice(sorted(APPS))
            rows = held[name].get(email, [])
            if roll < 0.65:  # edit one or two fields of a record
                if len(rows) == 1 and self.is_read(name, rows[0], cursors):
                    fields = self.rng.sample(FIELDS, self.rng.choice((1, 1, 2)))
                    changed = {f: self.value(f) for f in fields}
                    self.update(name, rows[0], changed)
                    held[name][email] = [Row(rows[0].app_record_id, {**rows[0].values, **changed})]
                    self.actions["edited"] += 1
            elif roll < 0.85:  # add a person another app holds
                if not rows and person.deleted_in != name:
                    self._add(name, email, held)
                    self.actions["added a person another app holds"] += 1
            elif roll < 0.93:  # add someone new
                self.counter += 1
                email = f"new{self.counter:05d}@example.com"
                self._add(name, email, held)
                emails.append(email)
                self.actions["added a new person"] += 1
            elif APPS[name].deletes and person.deleted_in is None and len(rows) == 1:
                # delete a person the daemon knows in this app (else it could not tell a
                # record it never saw from one it had not made yet)
                row = rows[0]
                if (name, row.app_record_id) in links and self.is_read(name, row, cursors):
                    self.delete(name, row)
                    held[name].pop(email)
                    self.actions[f"deleted ({APPS[name].deletes})"] += 1

    def _add(self, name: str, email: str, held: dict[str, dict[str, list[Row]]]) -> None:
        values = {f: (self.value(f) if self.rng.random() < 0.6 else None) for f in FIELDS}
        self.counter += 1
        rid = f"{name}-user-{self.counter:05d}"
        shown = email.upper() if name == "shop" and self.rng.random() < 0.3 else email
        self.insert(name, email, values, app_record_id=rid, stamp=self.clock.stamp(), shown=shown)
        held[name][email] = [Row(rid, {"email": email, **values})]

    def save(self) -> Path:
        """The users' log, for a post-mortem of a failure."""
        path = self.folder / "expected.json"
        path.write_text(json.dumps({e: asdict(p) for e, p in self.people.items()}, indent=1))
        return path

    # -- the verdict ---------------------------------------------------------------------------

    def figures(self) -> Figures:
        out = Figures()
        held = {name: self.by_email(name) for name in APPS}
        for name, rows in held.items():
            for email, found in rows.items():
                if email not in self.people:
                    out.duplicated.append(f"{name}: {email} is nobody the users entered")
                elif len(found) > 1:
                    out.duplicated.append(f"{name}: {email} {len(found)} times")
                elif self.people[email].deleted_in == name:
                    out.duplicated.append(f"{name}: {email} was deleted there, and is back")
        for email, person in self.people.items():
            for name in APPS:
                found = held[name].get(email, [])
                if not found and person.deleted_in != name:
                    out.lost.append(f"{name}: {email} missing")
                for row in found[:1]:
                    for f in FIELDS:
                        want, have = person.expected(f), row.values[f]
                        if (want or None) != (have or None):
                            out.differing.append(
                                f"{name}: {email} {f} = {have!r}, expected {want!r}")
        customers = Counter(self.customers())
        out.duplicated += [f"store: {email} is {n} customers"
                           for email, n in customers.items() if n > 1]
        out.lost += [f"store: {email} is no customer"
                     for email in self.people if email not in customers]
        return out


async def _create_tables(folder: Path) -> None:
    """The apps' tables, made by the connector itself (`create_table`), before anyone uses them."""
    for app in APPS.values():
        settings = SqlSettings(url=f"sqlite:///{folder.as_posix()}/{app.name}.db", **_settings(app))
        async with SqlConnector(settings, app=app.name):
            pass


class Daemon:
    """`customer-sync run` as a subprocess, its stderr (JSON logs) in a file of its own."""

    def __init__(self, folder: Path, number: int) -> None:
        self.log = folder / "logs" / f"run-{number:03d}.log"
        self.log.parent.mkdir(exist_ok=True)
        config = write_config(folder)
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=err)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the last line, cut by the kill
        return out

    def wait_started(self, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while not any(e.get("event") == "sync.daemon_started" for e in self.events()):
            assert self.proc.poll() is None, f"the daemon exited at start:\n{self.tail()}"
            assert time.monotonic() < deadline, f"the daemon did not start:\n{self.tail()}"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc.poll() is None, f"the daemon died before its kill:\n{self.tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def errors(self) -> list[str]:
        return [f"{self.log.name}: {e.get('event')} {e.get('app')} {e.get('reason')}"
                for e in self.events() if e.get("level") in ("error", "critical")]


@dataclass
class Outcome:
    """What one world's loop did, and how it ended."""

    seed: int
    kills: list[Kill]
    rows_at_start: int
    rows_at_end: int
    people: int
    actions: Counter[str]
    figures: Figures
    errors: list[str]
    stopped_with: int
    folder: Path


class MidSyncKills:
    """The kills mid-sync so far, over every world; and whether a world has failed (the
    others then stop killing)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.failed = threading.Event()

    def add(self) -> None:
        with self.lock:
            self.count += 1

    @property
    def enough(self) -> bool:
        return self.count >= MIN_KILLS_MID_SYNC or self.failed.is_set()


def run_world(folder: Path, seed: int, mid_sync: MidSyncKills) -> Outcome:
    """Seed one world, kill its daemon until there have been enough kills mid-sync (in every
    world together), then let a last daemon finish and stop it."""
    try:
        return _run_world(folder, seed, mid_sync)
    except BaseException:
        mid_sync.failed.set()
        raise


def _run_world(folder: Path, seed: int, mid_sync: MidSyncKills) -> Outcome:
    seeded_at = time.monotonic()
    world = World(folder, seed)
    asyncio.run(_create_tables(folder))
    world.seed()
    rows_at_start = sum(len(world.rows(name)) for name in APPS)
    kills: list[Kill] = []
    errors: list[str] = []
    marks = world.progress()
    loop_started = time.monotonic()
    while not mid_sync.enough:
        assert len(kills) < MAX_KILLS, f"{mid_sync.count} kills mid-sync after {len(kills)} here"
        daemon = Daemon(folder, len(kills))
        try:
            daemon.wait_started()
            # Once the daemon has committed its first step, it is killed at a random moment
            # of the next few tenths of a second (a start-up takes a second or more, and a
            # kill before any step would find nothing to interrupt).
            started = time.monotonic()
            while world.progress() == marks and time.monotonic() - started < 10:
                assert daemon.proc.poll() is None, f"the daemon died:\n{daemon.tail()}"
                time.sleep(0.01)
            time.sleep(world.rng.uniform(0.0, 0.4))
            after_s = time.monotonic() - started
            daemon.kill()
        finally:
            daemon.ensure_dead()
        errors += daemon.errors()
        state = world.store_state()
        unread = world.unread(state["cursors"])
        waiting = state["outbox"] or state["inbox"] or unread
        kill = Kill(after_s=after_s, progressed=world.progress() != marks,
                    outbox=state["outbox"], sending=state["sending"], inbox=state["inbox"],
                    unread=unread, agree=None if waiting else world.figures().agree)
        kills.append(kill)
        if kill.mid_sync:
            mid_sync.add()
        marks = world.progress()
        world.edit_while_down(world.rng.randint(5, 25))

    loop_s = time.monotonic() - loop_started
    final = Daemon(folder, len(kills))
    try:
        deadline = time.monotonic() + 180
        marks, moved_at = None, time.monotonic()
        while True:
            assert final.proc.poll() is None, f"the last daemon exited:\n{final.tail()}"
            state = world.store_state()
            figures = world.figures()
            now_marks = (world.progress(), state["outbox"], state["inbox"])
            if now_marks != marks:
                marks, moved_at = now_marks, time.monotonic()
            done = not (state["outbox"] or state["inbox"] or world.unread(state["cursors"]))
            if done and (figures.agree or time.monotonic() - moved_at >= QUIET_S):
                break  # in sync; or quiet for good, out of sync (asserted below)
            assert time.monotonic() < deadline, (
                f"the last daemon never got quiet: {figures}\n{final.tail()}")
            time.sleep(0.1)
        stopped_with = final.stop()
    finally:
        final.ensure_dead()
    world.save()
    print(f"world {seed}: seeded in {loop_started - seeded_at:.1f}s, killed for {loop_s:.1f}s, "
          f"last daemon {time.monotonic() - loop_started - loop_s:.1f}s")
    return Outcome(seed=seed, kills=kills, rows_at_start=rows_at_start,
                   rows_at_end=sum(len(world.rows(name)) for name in APPS),
                   people=len(world.people), actions=world.actions, figures=world.figures(),
                   errors=errors + final.errors(), stopped_with=stopped_with, folder=folder)


def test_kill_9_loop_in_daemon_mode_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    """However often the daemon is killed mid-sync while users edit, add and delete people in
    three apps that share them, it ends with every person once in every app it belongs in,
    holding the latest value entered for every field."""
    started = time.monotonic()
    first = int(os.environ.get("KILL_LOOP_SEED", random.randrange(1 << 30)))
    mid_sync = MidSyncKills()
    with ThreadPoolExecutor(WORLDS) as pool:
        futures = [pool.submit(run_world, tmp_path / f"world-{first + i}", first + i, mid_sync)
                   for i in range(WORLDS)]
        outcomes = [f.result() for f in futures]

    kills = [k for o in outcomes for k in o.kills]
    print(f"\nKILL_LOOP_SEED={first}: {len(kills)} kills, {sum(k.mid_sync for k in kills)} "
          f"mid-sync (writes waiting at {sum(k.outbox > 0 for k in kills)}, some being sent at "
          f"{sum(k.sending > 0 for k in kills)}, inbox waiting at "
          f"{sum(k.inbox > 0 for k in kills)}, rows unread at {sum(k.unread > 0 for k in kills)}, "
          f"nothing waiting but apps apart at {sum(k.agree is False for k in kills)}); "
          f"{time.monotonic() - started:.0f}s for {WORLDS} worlds side by side")
    for o in outcomes:
        print(f"  world {o.seed}: {len(o.kills)} kills, {sum(k.mid_sync for k in o.kills)} "
              f"mid-sync; {o.people} people, {o.rows_at_start} rows at start, {o.rows_at_end} "
              f"at end; users: {dict(o.actions)}; {o.figures}")
    for o in outcomes:
        assert o.figures.agree, f"world {o.seed} ({o.folder}): {o.figures}"
        assert 0 == o.stopped_with
        assert [] == o.errors
    assert sum(k.mid_sync for k in kills) >= MIN_KILLS_MID_SYNC
