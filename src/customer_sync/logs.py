"""The one structlog pipeline of customer-sync, its redaction processor and the stdlib bridge.

`configure_logging` is called once at startup (the CLI does it from `[daemon]`). Every log line,
from structlog or from a stdlib logger (httpx, apscheduler, sqlalchemy, alembic, uvicorn), passes
through the same processors: contextvars merge, log level, ISO UTC timestamp, exception
formatting, **redaction**, then a JSON or console renderer.

Redaction is a safety net, not a licence: callers still log ids, counts and field *names*, never
values (see STYLE.md, Logging). `redact_event` masks the values of secret- and PII-named keys, and
in every other string it masks email- and phone-shaped text and URL query strings.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from customer_sync._lazy import import_hiding

if TYPE_CHECKING:
    import structlog
    from structlog.typing import EventDict, Processor, WrappedLogger

else:
    # structlog's package imports `structlog.dev`, which imports rich when it is installed (typer
    # brings it) for rich tracebacks. We never use them: the console renderer below formats
    # exceptions as plain text (`plain_traceback`), JSON lines through `format_exc_info`. Hidden
    # from that one import, rich costs a command nothing (about 30 ms) unless something draws
    # with it: the progress bar at a terminal, typer's help.
    structlog = import_hiding("structlog", "rich")

__all__ = ["REDACTED", "configure_logging", "redact_event"]

REDACTED = "[redacted]"
_EMAIL_MASK = "[email]"
_PHONE_MASK = "[phone]"

# The standard keys of STYLE.md and structlog's own keys: never masked by name (their string
# values are still scanned for emails, phones and query strings).
_KEEP_KEYS = frozenset({
    "app", "connector", "customer_id", "app_record_id", "run_id", "count", "duration_ms",
    "attempt", "status_code", "reason", "fields", "field", "event", "level", "timestamp",
    "logger", "exception", "stack",
})
# Secrets come in many spellings (api_token, x-api-key, client_secret): match anywhere in the key.
_SECRET_PARTS = (
    "password", "passwd", "token", "secret", "authorization", "api_key", "apikey", "cookie",
    "credential",
)
# Personal data and record contents: match the whole key or its first or last `_` part
# (`email`, `customer_email`, `email_address`), so `app_name` is masked but `renamed` is not.
_PII_WORDS = frozenset({
    "email", "phone", "first_name", "last_name", "name", "address", "street", "body",
    "payload", "value", "values", "old", "new",
})
# A PII word followed by one of these names metadata about the data, not the data itself.
_META_SUFFIXES = frozenset({"count", "counts", "total", "id", "ids", "field", "fields", "kind"})
# Keys the stdlib bridge and exception formatting own: passed through untouched.
_PASS_KEYS = frozenset({"exc_info", "_record", "_from_structlog"})

# Every pattern starts only where a run of its characters starts (lookbehind), so scanning a
# long string stays linear instead of retrying from each position inside a run.
_URL = re.compile(r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
# A query string on a path without a scheme, e.g. in an access log: `/hook?token=abc`.
_PATH_QUERY = re.compile(r"(?<=[\w/~%.-])\?[\w.~%+\[\]-]*=[^\s\"'<>]*")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]+(?:\.[\w-]+)+")
# A phone-shaped run: a leading `+` or `(` or digit, then digits with at most one separator
# (space . - /) or a parenthesised group between them. `_phone_or_keep` decides on the digits.
# A run never starts inside a word, number, path, time or uuid, never steps into an ISO date,
# and never ends before a letter, digit or colon (so `2024-05-01T12:00` is not cut into a match).
_PHONE = re.compile(
    r"(?:(?<![\w+])\+\ ?|(?<![\w+/.:-]))"
    r"(?!\d{4}-\d\d-\d\d)\(?\d"
    r"(?:[ ./-]?\(?(?!\d{4}-\d\d-\d\d)\d|\)[ .-]?\d)*+"
    r"(?![\w:])"
)
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DECIMAL = re.compile(r"\d+\.\d+")
_SEPARATORS = frozenset(" ./-()")


def redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret and personal data in an event dict (a new dict).

    Values of secret- or PII-named keys become `REDACTED`. In every other value, recursively
    through dicts, lists and tuples and including `event` and `exception`, email-shaped text
    becomes `[email]`, phone-shaped text `[phone]`, and URL query strings `?[redacted]`.
    Numbers, booleans and None are left alone; other objects are scanned through their `repr`
    and kept as they are when it holds nothing to mask.
    """
    return {
        key: value if key in _PASS_KEYS else _redact_item(key, value)
        for key, value in event_dict.items()
    }


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and value is not None and _is_sensitive_key(key):
        return REDACTED
    return _redact_value(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if value is None or isinstance(value, int | float):  # bool is an int
        return value
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | set | frozenset):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return _scrub(repr(value))
    # Renderers fall back to repr() for anything else; scan what they would print.
    text = repr(value)
    scrubbed = _scrub(text)
    return value if scrubbed == text else scrubbed


@functools.lru_cache(maxsize=2048)
def _is_sensitive_key(key: str) -> bool:
    name = key.lower().replace("-", "_").replace(" ", "_")
    if name in _KEEP_KEYS:
        return False
    if any(part in name for part in _SECRET_PARTS):
        return True
    if name in _PII_WORDS:
        return True
    parts = name.split("_")
    if parts[-1] in _META_SUFFIXES:
        return False
    head, tail = parts[0], parts[-1]
    return any(
        word in _PII_WORDS
        for word in (head, tail, "_".join(parts[:2]), "_".join(parts[-2:]))
    )


def _scrub(text: str) -> str:
    """Mask URL queries and credentials, emails and phone numbers in one string."""
    if "://" in text:
        text = _URL.sub(_url_without_query, text)
    if "?" in text:
        text = _PATH_QUERY.sub("?" + REDACTED, text)
    if "@" in text:
        text = _EMAIL.sub(_EMAIL_MASK, text)
    return _PHONE.sub(_phone_or_keep, text)


def _url_without_query(match: re.Match[str]) -> str:
    url = match.group()
    scheme, _, rest = url.partition("://")
    rest, question, _ = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:  # user:password@host
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return f"{scheme}://{netloc}{slash}{path}" + (f"?{REDACTED}" if question else "")


def _phone_or_keep(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    prefixed = text[0] in "+(" or text.startswith("00")
    if text.startswith("00"):
        digits -= 2
    if not 7 <= digits <= 15:
        return text
    # A bare run of digits is an id, a count or an epoch far more often than a phone number.
    if not prefixed and not any(c in _SEPARATORS for c in text):
        return text
    if _DATE.search(text) or _IPV4.fullmatch(text) or _DECIMAL.fullmatch(text):
        return text
    return _PHONE_MASK


_HANDLER_NAME = "customer_sync"
_QUIET_LOGGERS = (
    "httpx", "httpcore",  # they log full request URLs at INFO and DEBUG
    "alembic",  # a dozen setup lines on every start say nothing an operator needs
    "apscheduler",  # a line per job run, every few seconds; sync.pass_finished says what happened
)


def configure_logging(
    *, level: str = "info", fmt: str = "auto", redact: bool = True, stream: TextIO | None = None
) -> None:
    """Build the structlog pipeline and route the stdlib root logger through it.

    Safe to call again: the handler installed by an earlier call is replaced, and handlers that
    others installed on the root logger are left alone.

    Args:
        level: the lowest level written: debug, info, warning or error.
        fmt: `json`, `console`, or `auto` (JSON unless `stream` is a terminal).
        redact: run `redact_event` before rendering; turn off only to debug locally.
        stream: where lines go; standard error when None.

    Raises:
        ValueError: `level` or `fmt` is not one of the names above.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (auto, json or console)")
    stream = sys.stderr if stream is None else stream
    is_tty = _is_tty(stream)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if fmt == "json" or (fmt == "auto" and not is_tty):
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=is_tty, exception_formatter=structlog.dev.plain_traceback
        )
    # Exceptions become text before redaction, so their messages are scrubbed like the rest
    # (and no pretty traceback prints local variables).
    final: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        *([redact_event] if redact else []),
        renderer,
    ]

    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later configure_logging (tests, `--log-level`) must reach every logger.
        cache_logger_on_first_use=False,
    )


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False
