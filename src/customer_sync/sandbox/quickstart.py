"""`customer-sync sandbox`: the daemon at work on a new user's machine in one command.

It starts a simulator of every vendor app a bundled connector talks to (HubSpot, Zendesk,
Mailchimp, Chatwoot) on loopback, seeds them with a small business's customers (`seed`), writes
a config for them on the embedded SQLite store with every app's webhooks wired to the daemon,
and runs the daemon itself: the `run` command's own code, in this process. The simulators
deliver their webhooks as the vendors do, from a background thread, so an edit made in one of
them reaches the others by webhook, not only by the next poll.

The simulators' credentials are made fresh at every start and reach the daemon through its
environment; the config holds only `${VAR}` references to them. They are also written to
`sandbox.env` beside the config (owner-only), for commands run in another terminal while the
sandbox runs. The simulators keep their data in memory, so every start begins again from the
seed, on a new store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from customer_sync.sandbox import seed as seeding
from customer_sync.sandbox.chatwoot import ChatwootSimulator
from customer_sync.sandbox.hubspot import HubSpotSimulator
from customer_sync.sandbox.mailchimp import MailchimpSimulator
from customer_sync.sandbox.zendesk import ZendeskSimulator

__all__ = [
    "CONFIG_NAME",
    "ENV_NAME",
    "MARK",
    "STORE_NAME",
    "SandboxRefused",
    "Simulators",
    "Urls",
    "check_port",
    "claim_dir",
    "render_config",
    "run_sandbox",
    "sandbox_env",
    "write_files",
]

#: The first line of every config the sandbox writes; a config without it is not a sandbox's.
MARK = "# customer-sync sandbox: written by `customer-sync sandbox`, rewritten at every start."
CONFIG_NAME = "config.toml"
ENV_NAME = "sandbox.env"
STORE_NAME = "sandbox.db"
LOCK_NAME = "sandbox.lock"
#: How often the simulators deliver the webhooks their apps have recorded (vendors send within
#: seconds of a change).
WEBHOOK_INTERVAL_S = 1.0
HOST = "127.0.0.1"


class SandboxRefused(Exception):
    """The sandbox cannot start as asked (a directory holding another config, a taken port);
    the message says what to do."""


@dataclass(frozen=True)
class Urls:
    """Where each simulator answers, and where the daemon listens."""

    hubspot: str
    zendesk: str
    mailchimp: str  # the API root, .../3.0
    chatwoot: str
    daemon: str


def sandbox_env() -> dict[str, str]:
    """Fresh credentials for the simulators: environment variable -> value."""
    token = secrets.token_urlsafe
    return {
        "SANDBOX_HUBSPOT_TOKEN": token(24),
        "SANDBOX_HUBSPOT_APP_SECRET": token(24),
        "SANDBOX_ZENDESK_API_TOKEN": token(24),
        "SANDBOX_ZENDESK_WEBHOOK_SECRET": token(24),
        # the `-usNN` suffix is what a Mailchimp key carries (its data center)
        "SANDBOX_MAILCHIMP_API_KEY": secrets.token_hex(16) + "-us21",
        "SANDBOX_MAILCHIMP_WEBHOOK_SECRET": token(24),
        "SANDBOX_CHATWOOT_TOKEN": token(24),
        "SANDBOX_CHATWOOT_WEBHOOK_SECRET": token(24),
    }


# -- the directory -------------------------------------------------------------------------------


@contextlib.contextmanager
def claim_dir(directory: Path, *, force: bool) -> Iterator[Path]:
    """The sandbox's directory, created if needed and held for the sandbox's life; the previous
    run's store is removed (its simulators' records are gone with them).

    Raises:
        SandboxRefused: the directory holds a config that is not a sandbox's (and not `force`),
            or another sandbox runs on it.
    """
    config = directory / CONFIG_NAME
    if config.exists() and not force and not _is_sandbox_config(config):
        raise SandboxRefused(
            f"{config} is a config the sandbox did not write; the sandbox will not overwrite it. "
            "Choose another directory with --dir, or replace it with --force.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock: IO[str] = (directory / LOCK_NAME).open("w")
    except OSError as exc:
        raise SandboxRefused(f"--dir {directory}: cannot use it: {exc.strerror or exc}") from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SandboxRefused(f"another sandbox runs on {directory}; stop it first, or "
                                 "choose another directory with --dir") from None
        for name in (STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm"):
            (directory / name).unlink(missing_ok=True)
        yield directory


def _is_sandbox_config(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().rstrip("\n") == MARK
    except (OSError, UnicodeDecodeError):
        return False


def check_port(port: int) -> None:
    """Refuse a daemon port that cannot be listened on, naming the option.

    Raises:
        SandboxRefused: the port is taken or not usable.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SandboxRefused(f"--port {port}: cannot listen on {HOST}:{port}: {reason}; "
                             "choose another port with --port") from exc


# -- the config ----------------------------------------------------------------------------------


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def render_config(*, urls: Urls, store_path: Path, listen: str, list_id: str,
                  zendesk_agent: str, chatwoot_account: int) -> str:
    """The sandbox's config.toml: the four simulated apps, the embedded store, the rules."""
    return f"""{MARK}
# Four simulated vendor apps on loopback, synced both ways by the daemon. The credentials are
# ${{VAR}} references: the sandbox passes them to the daemon in its environment, and writes them
# to {ENV_NAME} beside this file for commands you run while the sandbox runs.
# Every app's webhooks are delivered to the daemon's /webhooks/APP.

[daemon]
store_url = {_q("sqlite:///" + str(store_path))}
listen = {_q(listen)}
public_url = {_q(urls.daemon)}
poll_interval_s = 10
default_region = "US"
# 40 customers: no worker processes needed
normalize_workers = 0
list_in_worker = false
# "info" logs every page read and every webhook; the dashboard and `customer-sync log` show them
log_level = "warning"

[conflicts]
default = "last_writer"
# unsubscribes and opt-ins count when they come from the email list
consent_source = ["list"]

# A phone two apps disagree on: the helpdesk's wins, then the CRM's (see `customer-sync conflicts --all`).
[conflicts.fields.phone]
rule = "priority"
apps = ["desk", "crm", "inbox", "list"]

[apps.crm]
connector = "hubspot"

[apps.crm.settings]
base_url = {_q(urls.hubspot)}
access_token = "${{SANDBOX_HUBSPOT_TOKEN}}"
app_secret = "${{SANDBOX_HUBSPOT_APP_SECRET}}"

[apps.crm.fields]
email = "email"
first_name = "firstname"
last_name = "lastname"
phone = "phone"
# a custom contact property of this portal
email_consent = "email_consent"

[apps.desk]
connector = "zendesk"

[apps.desk.settings]
base_url = {_q(urls.zendesk)}
email = {_q(zendesk_agent)}
api_token = "${{SANDBOX_ZENDESK_API_TOKEN}}"
webhook_secret = "${{SANDBOX_ZENDESK_WEBHOOK_SECRET}}"
job_poll_interval_s = 0.5

[apps.list]
connector = "mailchimp"

[apps.list.settings]
base_url = {_q(urls.mailchimp)}
list_id = {_q(list_id)}
api_key = "${{SANDBOX_MAILCHIMP_API_KEY}}"
webhook_signing_secret = "${{SANDBOX_MAILCHIMP_WEBHOOK_SECRET}}"
batch_poll_interval_s = 0.5

[apps.inbox]
connector = "chatwoot"

[apps.inbox.settings]
base_url = {_q(urls.chatwoot)}
account_id = {chatwoot_account}
api_access_token = "${{SANDBOX_CHATWOOT_TOKEN}}"
webhook_secret = "${{SANDBOX_CHATWOOT_WEBHOOK_SECRET}}"
"""


def write_files(directory: Path, *, config_text: str, env: dict[str, str]) -> Path:
    """Write config.toml and sandbox.env (owner-only: it holds the simulators' credentials)."""
    config = directory / CONFIG_NAME
    config.write_text(config_text, encoding="utf-8")
    env_file = directory / ENV_NAME
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# The sandbox simulators' credentials, valid while the sandbox runs: "
                f". {ENV_NAME}\n")
        f.writelines(f"export {var}={value}\n" for var, value in env.items())
    return config


# -- the simulators ------------------------------------------------------------------------------


class Simulators:
    """The four vendor simulators, seeded, served on loopback from one thread with its own event
    loop (their state is touched by that thread only), delivering their webhooks every
    `WEBHOOK_INTERVAL_S` once the daemon is up."""

    def __init__(self, env: dict[str, str], *, daemon_url: str) -> None:
        self.hubspot = HubSpotSimulator(
            access_token=env["SANDBOX_HUBSPOT_TOKEN"], app_secret=env["SANDBOX_HUBSPOT_APP_SECRET"],
            custom_properties=["email_consent"])
        self.zendesk = ZendeskSimulator(
            api_token=env["SANDBOX_ZENDESK_API_TOKEN"], oauth_token=None,
            webhook_secret=env["SANDBOX_ZENDESK_WEBHOOK_SECRET"])
        self.mailchimp = MailchimpSimulator(
            api_key=env["SANDBOX_MAILCHIMP_API_KEY"], oauth_token=None,
            webhook_signing_secret=env["SANDBOX_MAILCHIMP_WEBHOOK_SECRET"])
        self.chatwoot = ChatwootSimulator(
            api_access_token=env["SANDBOX_CHATWOOT_TOKEN"],
            webhook_secret=env["SANDBOX_CHATWOOT_WEBHOOK_SECRET"])
        # seeded before any webhook is set up: the business had these customers already
        seeding.seed(hubspot=self.hubspot, zendesk=self.zendesk, mailchimp=self.mailchimp,
                     chatwoot=self.chatwoot, at=datetime.now(UTC))
        self.mailchimp.take_webhooks()  # its audience webhook did not exist yet either
        self.daemon_url = daemon_url.rstrip("/")
        self.hubspot.webhook_url = f"{self.daemon_url}/webhooks/crm"
        self.zendesk.webhook_url = f"{self.daemon_url}/webhooks/desk"
        self.chatwoot.webhook_url = f"{self.daemon_url}/webhooks/inbox"
        self._mailchimp_hook = f"{self.daemon_url}/webhooks/list"
        self._mailchimp_retry: list[list[tuple[str, str]]] = []

        self._sockets = {name: _listen() for name in ("hubspot", "zendesk", "mailchimp", "chatwoot")}
        base = {name: f"http://{HOST}:{sock.getsockname()[1]}" for name, sock in self._sockets.items()}
        # Mailchimp serves batch results from another host; here, from its own simulator.
        self.mailchimp.results_base = base["mailchimp"]
        self.urls = Urls(hubspot=base["hubspot"], zendesk=base["zendesk"],
                         mailchimp=base["mailchimp"] + "/3.0", chatwoot=base["chatwoot"],
                         daemon=self.daemon_url)
        self.daemon_ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-simulators", daemon=True)

    def contact_id(self, email: str) -> str:
        """The HubSpot contact id holding `email` (for the printed example)."""
        for cid in self.hubspot.contact_ids():
            props = (self.hubspot.get_contact(cid) or {}).get("properties", {})
            if str(props.get("email", "")).lower() == email:
                return cid
        raise KeyError(email)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self) -> None:
        """Stop serving and delivering; returns once the thread has ended."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        for sock in self._sockets.values():
            sock.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        import uvicorn

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        apps = {"hubspot": self.hubspot.app, "zendesk": self.zendesk.app,
                "mailchimp": self.mailchimp.app, "chatwoot": self.chatwoot.app}
        servers = []
        for name, app in apps.items():
            # log_config=None: the daemon in this process owns the logging setup
            config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
            server = uvicorn.Server(config)
            servers.append((server, asyncio.create_task(server.serve(sockets=[self._sockets[name]]))))
        self._started.set()
        async with httpx.AsyncClient(timeout=10.0) as client:
            while not self._stop.is_set():
                if self.daemon_ready.is_set():
                    await self._deliver(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), WEBHOOK_INTERVAL_S)
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in servers), return_exceptions=True)

    async def _deliver(self, client: httpx.AsyncClient) -> None:
        """One round of every vendor's webhook deliveries; what fails stays for the next."""
        with contextlib.suppress(httpx.HTTPError):
            await self.hubspot.flush_webhooks(client)
        with contextlib.suppress(httpx.HTTPError):
            await self.zendesk.flush_webhooks(client)
        with contextlib.suppress(httpx.HTTPError):
            await self.chatwoot.flush_webhooks(client)
        events, self._mailchimp_retry = self._mailchimp_retry + self.mailchimp.take_webhooks(), []
        for pairs in events:
            headers, body = self.mailchimp.webhook_delivery(pairs)
            try:
                response = await client.post(self._mailchimp_hook, content=body, headers=headers)
                delivered = response.is_success
            except httpx.HTTPError:
                delivered = False
            if not delivered:
                self._mailchimp_retry.append(pairs)


def _listen() -> socket.socket:
    """A loopback socket on a free port, listening (connections queue until served)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(128)
    return sock


def wait_until_up(url: str, *, stopped: threading.Event, every_s: float = 0.2) -> bool:
    """Poll `url` until it answers 200 (True) or `stopped` is set (False)."""
    with httpx.Client(timeout=2.0) as client:
        while not stopped.is_set():
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return True
            stopped.wait(every_s)
    return False


def banner(*, urls: Urls, token: str, token_generated: bool, config: Path, sims: Simulators,
           people: int, echo: Callable[[str], Any]) -> None:
    """What the user sees once the daemon answers."""
    shown_config = _shown(config)
    env_file = _shown(config.parent / ENV_NAME)
    ann = sims.contact_id("ann.lee@example.com")
    token_note = "generated for this run" if token_generated else "from CUSTOMER_SYNC_ADMIN_TOKEN"
    lines = [
        "",
        f"customer-sync sandbox: {people} customers in 4 simulated apps, synced by the daemon.",
        "",
        f"dashboard: {urls.daemon}/",
        f"admin token: {token}  ({token_note})",
        f"config: {shown_config}",
        (f"simulators: HubSpot {urls.hubspot}  Zendesk {urls.zendesk}  "
         f"Mailchimp {urls.mailchimp}  Chatwoot {urls.chatwoot}"),
        "",
        "In another terminal:",
        f"  . {env_file}",
        f"  customer-sync status --config {shown_config}",
        "  # edit Ann in HubSpot as a person would; HubSpot's webhook brings it to the daemon:",
        (f"  curl -s -X PATCH {urls.hubspot}/crm/v3/objects/contacts/{ann} "
         '-H "Authorization: Bearer $SANDBOX_HUBSPOT_TOKEN" -H "Content-Type: application/json" '
         "-d '{\"properties\": {\"lastname\": \"Lee-Smith\"}}'"),
        "  # and watch it written to Zendesk, Mailchimp and Chatwoot:",
        f"  customer-sync log ann.lee@example.com --config {shown_config}",
        "",
        "Stop with Ctrl-C.",
        "",
    ]
    for line in lines:
        echo(line)


def _shown(path: Path) -> str:
    """A path as short as it can be said from here."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


# -- the command ---------------------------------------------------------------------------------


class _Interrupted(BaseException):
    """SIGINT or SIGTERM before the daemon's own handlers took over (a BaseException, as
    KeyboardInterrupt is, so that no `except Exception` on the way swallows it)."""


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def _ignore(signum: int, frame: object) -> None:
    """A second stop while the sandbox is stopping already: it is stopping."""


def run_sandbox(directory: Path, *, port: int, force: bool, run_daemon: Callable[[Path], None],
                echo: Callable[[str], Any], err: Callable[[str], Any]) -> int:
    """Start the simulators, write the config, run the daemon until SIGTERM or Ctrl-C, then stop
    everything. Returns the exit code: 0 when stopped, 2 when refused (the reason printed).

    Args:
        run_daemon: runs the daemon on a config file until it is stopped (`customer-sync run`'s
            own code); raises `typer.Exit` with its exit code when it cannot start.
    """
    from customer_sync.api.auth import ADMIN_TOKEN_ENV, admin_auth
    from customer_sync.errors import ConfigError

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    sims: Simulators | None = None
    try:
        check_port(port)
        try:
            admin_auth()  # a token set too short is refused before anything starts
        except ConfigError as exc:
            raise SandboxRefused(str(exc).removeprefix("error: ")) from None
        with claim_dir(directory, force=force) as folder:
            env = sandbox_env()
            token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
            generated = not token
            token = token or secrets.token_urlsafe(32)
            err(f"sandbox: seeding {len(seeding.PEOPLE)} customers into 4 simulated apps")
            sims = Simulators(env, daemon_url=f"http://{HOST}:{port}")
            config = write_files(folder, env=env, config_text=render_config(
                urls=sims.urls, store_path=(folder / STORE_NAME).resolve(),
                listen=f"{HOST}:{port}", list_id=sims.mailchimp.list_id,
                zendesk_agent=sims.zendesk.agent_email, chatwoot_account=sims.chatwoot.account_id))
            os.environ.update(env)  # the daemon's environment: the only place the secrets go
            os.environ[ADMIN_TOKEN_ENV] = token
            sims.start()
            stopped = threading.Event()
            ready_sims = sims

            def announce() -> None:
                if wait_until_up(f"{ready_sims.urls.daemon}/healthz", stopped=stopped):
                    ready_sims.daemon_ready.set()
                    banner(urls=ready_sims.urls, token=token, token_generated=generated,
                           config=config, sims=ready_sims, people=len(seeding.PEOPLE), echo=echo)

            threading.Thread(target=announce, name="sandbox-announce", daemon=True).start()
            try:
                run_daemon(config)  # until SIGTERM or Ctrl-C
            finally:
                stopped.set()
                for sig in previous:
                    signal.signal(sig, _ignore)
                sims.stop()
                sims = None
                err("sandbox: stopped")
    except SandboxRefused as exc:
        err(f"error: {exc}")
        return 2
    except _Interrupted:
        err("sandbox: stopped")
        return 0  # stopped before the daemon ran
    finally:
        for sig in previous:
            signal.signal(sig, _ignore)
        if sims is not None:
            sims.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
