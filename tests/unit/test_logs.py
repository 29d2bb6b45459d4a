"""Tests for the logging pipeline: what redaction masks, what it leaves, and where lines go."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from structlog.testing import capture_logs

from customer_sync.logs import REDACTED, configure_logging, redact_event


def redact(**event: object) -> dict[str, object]:
    return redact_event(None, "info", dict(event))


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Leave structlog and the stdlib loggers as each test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    structlog.reset_defaults()
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


# --- masking by key -------------------------------------------------------------------------

SECRET_KEYS = [
    "password", "token", "secret", "authorization", "api_key", "apikey", "cookie",
    "access_token", "client_secret", "X-Api-Key", "Set-Cookie", "PASSWORD", "Authorization",
]
PII_KEYS = [
    "email", "phone", "first_name", "last_name", "name", "address", "street", "body",
    "payload", "value", "values", "old", "new", "Email", "customer_email", "phone_number",
    "billing_address", "display_name",
]


@pytest.mark.parametrize("key", SECRET_KEYS, ids=SECRET_KEYS)
def test_secret_keys_are_masked(key: str) -> None:
    """A value under a secret-named key, in any case or spelling, is replaced by REDACTED."""
    assert {key: REDACTED} == redact(**{key: "s3cr3t-value"})


@pytest.mark.parametrize("key", PII_KEYS, ids=PII_KEYS)
def test_personal_data_keys_are_masked(key: str) -> None:
    """A value under a personal-data or record-content key is replaced by REDACTED."""
    assert {key: REDACTED} == redact(**{key: "Jane"})


@pytest.mark.parametrize(
    "value",
    [12345, {"city": "Berlin"}, ["a", "b"], b"raw body"],
    ids=["int", "dict", "list", "bytes"],
)
def test_masked_key_hides_values_of_any_type(value: object) -> None:
    """Masking by key hides the whole value, whatever its type."""
    assert {"payload": REDACTED} == redact(payload=value)


def test_masked_key_keeps_none() -> None:
    """None under a sensitive key stays None: there is nothing to hide and 'unset' is useful."""
    assert {"password": None} == redact(password=None)


STANDARD = {
    "app": "crm",
    "connector": "hubspot",
    "customer_id": "c_01HV",
    "app_record_id": "501",
    "run_id": "r-7",
    "count": 3,
    "duration_ms": 12.5,
    "attempt": 2,
    "status_code": 429,
    "reason": "RateLimited",
    "fields": ["email", "phone", "first_name"],
    "event": "sync.pass_finished",
}


def test_standard_keys_are_kept() -> None:
    """The standard keys of STYLE.md, field names included, pass through unchanged."""
    assert STANDARD == redact(**STANDARD)


@pytest.mark.parametrize(
    "key",
    ["email_count", "phone_field", "renamed", "newsletter", "operation", "method", "wait_s"],
)
def test_metadata_keys_are_kept(key: str) -> None:
    """Keys that merely mention a personal-data word, or are about it, are not masked."""
    assert {key: "kept"} == redact(**{key: "kept"})


def test_nested_keys_are_masked() -> None:
    """Keys inside nested dicts and lists of dicts are masked too."""
    event = redact(headers={"Authorization": "Bearer abc", "Accept": "json"}, rows=[{"email": "x"}])

    assert {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "rows": [{"email": REDACTED}],
    } == event


# --- masking by shape -----------------------------------------------------------------------

EMAILS = ["jane@example.com", "Jane.Doe+news@Example.co.uk", "j_o-e@sub.example.org"]
PHONES = [
    "+14155552671", "(415) 555-2671", "0049 30 1234567", "+49 (0)30 1234567", "415-555-2671",
    "415.555.2671", "+44 20 7946 0958", "555-2671",
]


@pytest.mark.parametrize("email", EMAILS, ids=EMAILS)
def test_emails_in_free_text_are_masked(email: str) -> None:
    """An email-shaped substring of any string value becomes [email]."""
    assert {"reason": "rejected [email] by vendor"} == redact(reason=f"rejected {email} by vendor")


@pytest.mark.parametrize("phone", PHONES, ids=PHONES)
def test_phones_in_free_text_are_masked(phone: str) -> None:
    """A phone-shaped substring of any string value becomes [phone]."""
    assert {"reason": "call [phone]."} == redact(reason=f"call {phone}.")


def test_event_text_is_scrubbed() -> None:
    """The event text itself is scrubbed, not only the keys beside it."""
    assert {"event": "record for [email] and [phone]"} == redact(
        event="record for jane@example.com and +14155552671"
    )


def test_nested_strings_are_scrubbed() -> None:
    """Strings inside dicts, lists and tuples are scrubbed at any depth."""
    event = redact(detail={"errors": [("bad", "jane@example.com"), {"hint": "+14155552671"}]})

    assert {"detail": {"errors": [("bad", "[email]"), {"hint": "[phone]"}]}} == event


def test_exception_text_is_scrubbed() -> None:
    """A formatted exception carries no email."""
    assert {"exception": "ValueError: no such contact [email]"} == redact(
        exception="ValueError: no such contact jane@example.com"
    )


def test_objects_are_scrubbed_through_their_repr() -> None:
    """An object whose repr would print an email is replaced by its scrubbed repr."""

    class Contact:
        def __repr__(self) -> str:
            return "Contact(jane@example.com)"

    assert {"error": "Contact([email])"} == redact(error=Contact())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x/y?token=a", f"https://x/y?{REDACTED}"),
        ("https://api.example.com/v3/contacts?email=jane@example.com&page=2#top",
         f"https://api.example.com/v3/contacts?{REDACTED}"),
        ("see https://x/y?a=1 now", f"see https://x/y?{REDACTED} now"),
        ("https://user:pw@db.example.com/app", f"https://{REDACTED}@db.example.com/app"),
        ('"GET /webhooks/crm?signature=abc HTTP/1.1" 200',
         f'"GET /webhooks/crm?{REDACTED} HTTP/1.1" 200'),
        ("https://x/y", "https://x/y"),
    ],
    ids=["query", "query-with-email", "in-text", "credentials", "path-only", "no-query"],
)
def test_urls_lose_query_strings(url: str, expected: str) -> None:
    """Query strings (and URL credentials) are masked; the scheme, host and path stay."""
    assert {"reason": expected} == redact(reason=url)


NOT_PII = [
    "2024-05-01T12:34:56.123456+00:00",
    "2024-05-01T12:34:56Z",
    "2024-05-01 12:34:56",
    "3 records at 2024-05-01T12:00:00Z",
    str(uuid.UUID("550e8400-e29b-41d4-a716-446655440000")),
    "12345678-1234-1234-1234-123456789012",
    "12345",
    "1714567890123",
    "contact 987654321 skipped",
    "192.168.100.200",
    "3.14159265",
    "took 10 12:30:00",
    "sync.pass_finished",
    "what? no",
]


@pytest.mark.parametrize("text", NOT_PII, ids=NOT_PII)
def test_no_false_positives(text: str) -> None:
    """Timestamps, uuids, ids, counts, addresses of machines and plain text are left as they are."""
    assert {"reason": text} == redact(reason=text)


@pytest.mark.parametrize(
    "value",
    [14155552671, 3.5, True, None, datetime(2024, 5, 1, tzinfo=UTC)],
    ids=["int", "float", "bool", "none", "datetime"],
)
def test_non_string_scalars_are_untouched(value: object) -> None:
    """Numbers, booleans, None and harmless objects come back as the very same object."""
    assert redact(reason=value)["reason"] is value


def test_redaction_is_idempotent() -> None:
    """Scrubbing an already scrubbed event changes nothing."""
    once = redact(event="jane@example.com +14155552671 https://x/y?t=1", password="p")

    assert once == redact_event(None, "info", dict(once))


# --- the pipeline ---------------------------------------------------------------------------


def test_json_output_is_one_object_per_line(stream: io.StringIO) -> None:
    """In JSON mode each event is one line holding one JSON object with level and UTC time."""
    configure_logging(fmt="json", stream=stream)
    log = structlog.get_logger("customer_sync.test")

    log.info("sync.pass_started", app="crm")
    log.warning("record.skipped", app="crm", fields=["email"])

    lines = json_lines(stream)
    assert ["sync.pass_started", "record.skipped"] == [line["event"] for line in lines]
    assert ["info", "warning"] == [line["level"] for line in lines]
    assert all(str(line["timestamp"]).endswith("Z") for line in lines)


def test_auto_format_is_json_when_not_a_tty(stream: io.StringIO) -> None:
    """With fmt='auto' a stream that is not a terminal gets JSON."""
    configure_logging(stream=stream)

    structlog.get_logger().info("sync.pass_started")

    assert "sync.pass_started" == json_lines(stream)[0]["event"]


def test_auto_format_is_console_on_a_tty() -> None:
    """With fmt='auto' a terminal gets the console renderer, not JSON."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    configure_logging(stream=terminal)

    structlog.get_logger().info("sync.pass_started", app="crm")

    assert not terminal.getvalue().startswith("{")
    assert "sync.pass_started" in terminal.getvalue()


def test_pipeline_redacts(stream: io.StringIO) -> None:
    """Lines written through the pipeline are redacted by default."""
    configure_logging(fmt="json", stream=stream)

    structlog.get_logger().info("record.skipped for jane@example.com", email="jane@example.com")

    [line] = json_lines(stream)
    assert ("record.skipped for [email]", REDACTED) == (line["event"], line["email"])


def test_contextvars_are_merged(stream: io.StringIO) -> None:
    """Keys bound with bound_contextvars appear on every line inside the block."""
    configure_logging(fmt="json", stream=stream)

    with structlog.contextvars.bound_contextvars(app="crm", run_id="r-1"):
        structlog.get_logger().info("app.page_fetched", count=2)

    [line] = json_lines(stream)
    assert ("crm", "r-1", 2) == (line["app"], line["run_id"], line["count"])


def test_exceptions_are_rendered_and_scrubbed(stream: io.StringIO) -> None:
    """log.exception writes the traceback as text, with emails in the message masked."""
    configure_logging(fmt="json", stream=stream)

    try:
        raise LookupError("no contact jane@example.com")
    except LookupError:
        structlog.get_logger().exception("sync.pass_failed")

    [line] = json_lines(stream)
    assert "LookupError: no contact [email]" in str(line["exception"])
    assert "jane@example.com" not in stream.getvalue()


def test_stdlib_loggers_go_through_redaction(stream: io.StringIO) -> None:
    """A stdlib logger (as sqlalchemy or apscheduler use) is rendered and redacted the same way."""
    configure_logging(fmt="json", stream=stream)

    logging.getLogger("sqlalchemy.engine").warning("params (%r,)", "jane@example.com")

    [line] = json_lines(stream)
    assert {"event": "params ('[email]',)", "level": "warning", "logger": "sqlalchemy.engine"} == {
        k: line[k] for k in ("event", "level", "logger")
    }


def test_httpx_info_is_silenced(stream: io.StringIO) -> None:
    """httpx and httpcore log below WARNING never reach the stream, so request URLs do not leak."""
    configure_logging(level="debug", fmt="json", stream=stream)

    logging.getLogger("httpx").info("HTTP Request: GET https://x/y?token=abc")
    logging.getLogger("httpcore.http11").debug("send_request_headers")
    logging.getLogger("httpx").warning("httpx.warned")

    assert ["httpx.warned"] == [line["event"] for line in json_lines(stream)]


def test_level_filters_structlog_and_stdlib(stream: io.StringIO) -> None:
    """Events below the configured level are dropped on both paths."""
    configure_logging(level="warning", fmt="json", stream=stream)

    structlog.get_logger().info("dropped")
    logging.getLogger("apscheduler").info("dropped")
    structlog.get_logger().warning("kept")

    assert ["kept"] == [line["event"] for line in json_lines(stream)]


def test_redact_false_leaves_values(stream: io.StringIO) -> None:
    """With redact=False values are written as given."""
    configure_logging(fmt="json", redact=False, stream=stream)

    structlog.get_logger().info("debug jane@example.com", token="abc")

    [line] = json_lines(stream)
    assert ("debug jane@example.com", "abc") == (line["event"], line["token"])


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    """A second configure_logging call writes to the new stream only, never twice."""
    configure_logging(fmt="json", stream=io.StringIO())
    configure_logging(fmt="json", stream=stream)

    structlog.get_logger().info("once")

    assert ["once"] == [line["event"] for line in json_lines(stream)]


def test_capture_logs_sees_events_before_redaction() -> None:
    """capture_logs records raw events, so tests can assert that nobody logs PII at all."""
    configure_logging(fmt="json", stream=io.StringIO())

    with capture_logs() as logs:
        structlog.get_logger().info("record.written", app_record_id="501")

    assert [{"event": "record.written", "app_record_id": "501", "log_level": "info"}] == logs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"level": "loud"}, "level"), ({"fmt": "xml"}, "format")],
    ids=["level", "format"],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, str], message: str) -> None:
    """An unknown level or format raises ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=message):
        configure_logging(stream=io.StringIO(), **kwargs)


_FRESH = """
import io, json, sys
from customer_sync.logs import configure_logging
import structlog

class Terminal(io.StringIO):
    def isatty(self):
        return True

terminal = Terminal()
configure_logging(stream=terminal)
try:
    raise LookupError("no contact jane@example.com")
except LookupError:
    structlog.get_logger().exception("sync.pass_failed")
loaded = "rich" in sys.modules
import rich.console  # still installed and importable for the progress bar and typer
print(json.dumps({"rich_loaded": loaded, "text": terminal.getvalue()}))
"""


def test_logging_loads_no_rich_and_console_tracebacks_stay_plain() -> None:
    """In a fresh interpreter, logging (at a terminal, with a traceback) imports no rich: the
    console renderer writes the plain traceback it always wrote, scrubbed."""
    done = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["rich_loaded"]
    assert "Traceback (most recent call last)" in result["text"]
    assert "LookupError: no contact [email]" in result["text"]
    assert "jane@example.com" not in result["text"]
