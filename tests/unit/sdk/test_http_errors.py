"""The error table: every vendor answer becomes the error named for what the caller does next."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from customer_sync.errors import (
    AuthError,
    ConnectorError,
    RateLimited,
    RecordGone,
    RecordRejected,
    TransientError,
)
from customer_sync.sdk.http import (
    DEFAULT_ERROR_TABLE,
    classify_response,
    classify_transport_error,
    parse_retry_after,
    redact_text,
)

_REQUEST = httpx.Request("PATCH", "https://api.example.test/crm/v3/objects/contacts/51")


def _response(
    status: int, *, json: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=json, headers=headers, request=_REQUEST)


def _classify(response: httpx.Response, **kw: object) -> ConnectorError | None:
    return classify_response(
        response,
        app="crm",
        connector="hubspot",
        operation="contacts.update",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (204, None),
        (207, None),
        (302, ConnectorError),
        (400, RecordRejected),
        (401, AuthError),
        (403, AuthError),
        (404, RecordGone),
        (408, TransientError),
        (409, RecordRejected),
        (410, RecordGone),
        (418, RecordRejected),
        (422, RecordRejected),
        (429, RateLimited),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else getattr(v, "__name__", "none"),
)
def test_status_maps_to_error_class(status: int, expected: type[ConnectorError] | None) -> None:
    """Each status code becomes the error class of the default table (None for a success)."""
    error = _classify(_response(status))

    assert expected == (type(error) if error is not None else None)


def test_error_names_app_connector_operation_status_and_record() -> None:
    """The error carries where it happened: app, connector, operation, status and record id."""
    error = _classify(_response(404), app_record_id="51")

    assert isinstance(error, RecordGone)
    assert ("crm", "hubspot", "contacts.update", 404, "51") == (
        error.app,
        error.connector,
        error.operation,
        error.status_code,
        error.app_record_id,
    )


def test_with_entries_overrides_one_status_only() -> None:
    """A connector's table override changes the listed status and leaves the others alone."""
    table = DEFAULT_ERROR_TABLE.with_entries({409: None, 403: RateLimited})

    assert (None, RateLimited, AuthError, RecordRejected) == (
        table.error_class(409),
        table.error_class(403),
        table.error_class(401),
        table.error_class(422),
    )
    assert RecordRejected == DEFAULT_ERROR_TABLE.error_class(409)


def test_429_carries_retry_after_seconds() -> None:
    """A 429 with Retry-After in seconds (Zendesk) becomes RateLimited with retry_after_s."""
    error = _classify(_response(429, headers={"Retry-After": "30"}))

    assert isinstance(error, RateLimited)
    assert 30.0 == error.retry_after_s


def test_429_without_retry_after_has_none() -> None:
    """A HubSpot 429 with only window headers has no retry_after_s."""
    headers = {
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Remaining": "0",
    }
    body = {"status": "error", "policyName": "SECONDLY"}

    error = _classify(_response(429, json=body, headers=headers))

    assert isinstance(error, RateLimited)
    assert error.retry_after_s is None


def test_retry_after_reads_an_http_date() -> None:
    """Retry-After as an HTTP date is the time left until that date."""
    response = _response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    seconds = parse_retry_after(response, now=datetime(2015, 10, 21, 7, 27, 15, tzinfo=UTC))

    assert 45.0 == seconds


def test_retry_after_in_the_past_is_zero() -> None:
    """An HTTP date already past means no wait, never a negative one."""
    response = _response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    assert 0.0 == parse_retry_after(response, now=datetime(2016, 1, 1, tzinfo=UTC))


def test_retry_after_falls_back_to_ratelimit_reset() -> None:
    """Without Retry-After, the IETF RateLimit-Reset delta (Zendesk list endpoints) is the wait."""
    response = _response(429, headers={"ratelimit-limit": "700", "ratelimit-reset": "41"})

    assert 41.0 == parse_retry_after(response)


def test_unparseable_retry_after_is_none() -> None:
    """A Retry-After that is neither seconds nor a date gives no wait rather than an error."""
    assert parse_retry_after(_response(429, headers={"Retry-After": "soon"})) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "-inf"], ids=str)
def test_retry_after_that_is_not_a_finite_number_is_none(value: str) -> None:
    """`Retry-After: inf` (or nan) gives no wait: an infinite pause would never end."""
    assert parse_retry_after(_response(429, headers={"Retry-After": value})) is None


def test_message_carries_hubspot_category_and_message() -> None:
    """A HubSpot error body gives its category and message to the error text."""
    body = {"category": "VALIDATION_ERROR", "message": "Property values were not valid"}

    error = _classify(_response(400, json=body))

    assert "HTTP 400 Bad Request: VALIDATION_ERROR: Property values were not valid" in str(error)


def test_message_carries_zendesk_error_and_description() -> None:
    """A Zendesk error body gives its error code and description to the error text."""
    body = {"error": "RecordInvalid", "description": "Record validation errors", "details": {}}

    error = _classify(_response(422, json=body))

    assert "RecordInvalid: Record validation errors" in str(error)


def test_message_carries_zendesk_nested_error() -> None:
    """Zendesk's nested {"error": {"title", "message"}} form is read too."""
    body = {"error": {"title": "Forbidden", "message": "You do not have access to this page"}}

    error = _classify(_response(403, json=body))

    assert "Forbidden: You do not have access to this page" in str(error)


def test_message_masks_emails_and_phone_numbers() -> None:
    """Emails and phone numbers the vendor echoes never reach the error text."""
    body = {"category": "CONFLICT", "message": "Contact ada@example.com / +44 20 7946 0958 exists"}

    message = str(_classify(_response(409, json=body)))

    assert "ada@example.com" not in message and "7946" not in message
    assert "Contact <email> / <phone> exists" in message


def test_message_masks_an_echoed_credential() -> None:
    """A vendor echoing the access token in its error body does not leak it into the error."""
    token = "pat-na1-11111111-2222-3333-4444-555555555555"
    body = {"category": "INVALID_AUTHENTICATION", "message": f"Bearer {token} is not valid"}

    message = str(_classify(_response(401, json=body), secrets=[f"Bearer {token}"]))

    assert token not in message
    assert "INVALID_AUTHENTICATION" in message


def test_message_detail_is_truncated() -> None:
    """A long vendor message is cut so an error line stays short."""
    error = _classify(_response(400, json={"message": "x" * 5000}))

    assert len(str(error)) < 300


def test_long_message_never_leaks_part_of_an_email() -> None:
    """An email cut where a long body is shortened is dropped, not left half-visible."""
    filler = "a" * 37 + "@mail.example.org "  # 55 characters, 8 once redacted
    message = filler * 18 + "xx ada.lovelace@example.com"  # the email crosses character 1000

    error = str(_classify(_response(400, json={"message": message})))

    assert "ada" not in error and "lovelace" not in error


def test_message_ignores_non_json_bodies() -> None:
    """An HTML or text error page is not copied into the error."""
    html = "<html>Bad gateway for ada@example.com</html>"
    response = httpx.Response(502, text=html, request=_REQUEST)

    message = str(_classify(response))

    assert "HTTP 502 Bad Gateway (" in message and "html" not in message


def test_transport_error_becomes_transient_without_details() -> None:
    """A network failure is a TransientError naming only the kind of failure."""
    exc = httpx.ConnectTimeout("timed out connecting to https://api.example.test/?token=abc")

    error = classify_transport_error(exc, app="crm", connector="hubspot", operation="contacts.read")

    assert isinstance(error, TransientError)
    assert "network error: ConnectTimeout" in str(error) and "token" not in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id 12345 at 10:30", "id 12345 at 10:30"),
        ("call (555) 123-4567 now", "call <phone> now"),
        ("mail a.b+c@mail.example.org", "mail <email>"),
    ],
    ids=["short-numbers-kept", "phone", "email"],
)
def test_redact_text(text: str, expected: str) -> None:
    """Redaction masks email- and phone-shaped strings and keeps short numbers."""
    assert expected == redact_text(text)


def test_json_body_parses_json_and_refuses_the_rest() -> None:
    """json_body reads what response.json() reads, and raises ValueError (not another
    exception type) for a body that is not JSON or not UTF-8."""
    from customer_sync.sdk import json_body

    ok = httpx.Response(200, content='{"name": "Zoë", "n": [1, 2.5, null, true]}'.encode())
    assert ok.json() == json_body(ok)
    for bad in (b"<html>busy</html>", b'{"a": 1', '{"name": "Zoë"}'.encode("latin-1"), b""):
        with pytest.raises(ValueError):
            json_body(httpx.Response(502, content=bad))
