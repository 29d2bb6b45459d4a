"""Shared parts of the vendor simulators: a settable clock, time formats, a server-side
sliding-window rate limit and a loopback server for end-to-end tests.

Nothing here knows a vendor. Simulators take a `Clock` (a callable returning an aware UTC
datetime, the same shape the engine takes) so tests move time instead of sleeping.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = [
    "Clock",
    "ManualClock",
    "Served",
    "SlidingWindow",
    "epoch_ms",
    "iso_from_ms",
    "ms_from_text",
    "serve",
    "utcnow",
]

Clock = Callable[[], datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def utcnow() -> datetime:
    """The wall clock, timezone-aware UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; pass it as `clock=` and call `advance()`."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self.now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta | float) -> datetime:
        """Move forward by a timedelta or a number of seconds; returns the new time."""
        self.now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self.now


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, exact (no float rounding)."""
    return (at - _EPOCH) // _MS


_NAIVE_EPOCH = datetime(1970, 1, 1)


@functools.lru_cache(maxsize=1 << 16)
def iso_from_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds and a `Z`, the form vendors put in JSON.

    Memoized: a listing renders the same few times (created, modified, history) many times
    over, and this was half of what a simulator spent serving a page with property history.
    """
    return (_NAIVE_EPOCH + ms * _MS).isoformat(timespec="milliseconds") + "Z"


def ms_from_text(value: str) -> int:
    """Parse epoch milliseconds (all digits) or an ISO 8601 datetime into epoch milliseconds.

    Raises:
        ValueError: neither form.
    """
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return epoch_ms(parsed)


class SlidingWindow:
    """A server-side sliding-window log: at most `max_calls` admitted in any `per_s` seconds.

    The log holds only admitted calls, so a client hammering a full window does not extend it.
    """

    __slots__ = ("_starts", "max_calls", "per_s")

    def __init__(self, max_calls: int, per_s: float) -> None:
        if max_calls < 1 or per_s <= 0:
            raise ValueError("a rate limit needs max_calls >= 1 and per_s > 0")
        self.max_calls = max_calls
        self.per_s = per_s
        self._starts: deque[float] = deque()

    def _expire(self, now_s: float) -> None:
        while self._starts and self._starts[0] + self.per_s <= now_s:
            self._starts.popleft()

    def is_full(self, now_s: float) -> bool:
        self._expire(now_s)
        return len(self._starts) >= self.max_calls

    def record(self, now_s: float) -> None:
        self._starts.append(now_s)

    def remaining(self, now_s: float) -> int:
        self._expire(now_s)
        return max(0, self.max_calls - len(self._starts))

    def retry_after_s(self, now_s: float) -> float:
        """Seconds until one more call would be admitted; 0 when one would be now."""
        if not self.is_full(now_s):
            return 0.0
        return self._starts[0] + self.per_s - now_s


class Served(NamedTuple):
    """A running loopback server: its base URL and the function that stops it."""

    base_url: str
    stop: Callable[[], None]


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Served:
    """Run an ASGI app under uvicorn in a background thread, on loopback only.

    The socket is bound and listening before this returns, so the URL is usable at once
    (connections queue in the backlog until uvicorn accepts them); nothing polls or sleeps.

    Args:
        app: any ASGI app, e.g. `HubSpotSimulator().app`.
        host: a loopback address; anything else is refused so a sandbox never faces a network.
        port: 0 picks a free port.

    Returns:
        `Served(base_url, stop)`; `stop()` shuts the server down and joins its thread.

    Raises:
        ValueError: `host` is not a loopback address.
    """
    import uvicorn  # the sandbox extra; imported here so the module loads without it

    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError("the sandbox serves on loopback only")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
    # says TCP, and accepted sockets inherit this one's. With proto 0 a response written as
    # headers then body waited ~40 ms for the client's delayed ACK on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox-server", daemon=True
    )
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    return Served(f"http://{url_host}:{bound_port}", stop)
