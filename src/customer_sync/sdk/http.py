"""HTTP plumbing shared by every HTTP connector: one client per app, one way to classify failures.

`ApiClient` wraps one `httpx.AsyncClient` per app. Each call waits for the app's rate limiter,
is sent, and is turned into either a response or a `ConnectorError` named for what the caller
does next; transient errors go through the one retry policy (`sdk.retry`). A connector never
writes a retry loop, a rate limiter or an error mapping of its own.

Failures are classified through an `ErrorTable` (status code -> error class, the idea of Airbyte's
`default_error_mapping`). A connector changes single entries (`table.with_entries({409: None})`)
or, for a vendor that reports errors in a 200 body, overrides `ApiClient.validate_response`
(meltano's hook). Error messages carry the vendor's error code and message, truncated and with
emails, phone numbers and credentials masked; never the request payload or headers.

A 429 pauses the app's rate limiter for the vendor's `Retry-After`, but never longer than the
client's `max_retry_after_s` (15 minutes by default, set per app in config.toml). A 429 asking
for a longer wait is not retried: its `RateLimited` is raised at once with the vendor's full
`retry_after_s`, and the engine parks the app until then.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import structlog
import tenacity

from customer_sync import __version__
from customer_sync.errors import (
    AuthError,
    ConnectorError,
    RateLimited,
    RecordGone,
    RecordRejected,
    TransientError,
)
from customer_sync.sdk.retry import DEFAULT_MAX_RETRY_AFTER_S, is_beyond_retry_cap, retry_policy

if TYPE_CHECKING:
    from customer_sync.sdk.ratelimit import Limiter

__all__ = [
    "DEFAULT_ERROR_TABLE",
    "ApiClient",
    "ErrorTable",
    "classify_response",
    "classify_transport_error",
    "json_body",
    "parse_retry_after",
    "redact_text",
]

_log = structlog.get_logger("customer_sync.http")

# Calls of every app's clients in this process, for the daemon's metrics: attempts sent
# ("requests"), 429 answers ("rate_limited") and attempts that repeated an earlier one
# ("retries"). Only ever increased, so scrapes see monotonic counters.
_API_COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)


def api_counts() -> dict[str, dict[str, int]]:
    """A copy of the API call counts of this process, by app: `requests` (attempts sent,
    retries included), `rate_limited` (429 answers) and `retries` (attempts after the first
    of one call). A listing worker's calls are counted in its own process, not here."""
    return {app: dict(counts) for app, counts in list(_API_COUNTS.items())}


def count_api_call(app: str, what: str) -> None:
    """Count a call made for `app` in another process (a listing worker asks the daemon's
    rate limiter before each attempt): `what` is a key of `api_counts`."""
    _API_COUNTS[app][what] += 1

ErrorClass = type[ConnectorError]


def parse_retry_after(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """Seconds the vendor asks us to wait, or None when the response does not say.

    Reads `Retry-After` (delta seconds or an HTTP date; Zendesk sends seconds), then the IETF
    draft `RateLimit-Reset` (delta seconds; Zendesk's list endpoints send it). Window sizes such as
    HubSpot's `X-HubSpot-RateLimit-Interval-Milliseconds` are not a wait and are ignored; a HubSpot
    429 without `Retry-After` gives None. A vendor with another header (Intercom's
    `X-RateLimit-Reset` is a Unix time) passes its own parser to `ErrorTable(retry_after=...)`.

    Args:
        response: the vendor's answer.
        now: the current time for HTTP dates; the wall clock by default.
    """
    value = response.headers.get("retry-after")
    if value is not None:
        seconds = _delta_seconds(value)
        if seconds is not None:
            return seconds
        try:
            at = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            at = None
        if at is not None and at.tzinfo is not None:
            return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())
    reset = response.headers.get("ratelimit-reset")
    return _delta_seconds(reset) if reset is not None else None


def _delta_seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None  # NaN and inf are no answer


def _default_statuses() -> Mapping[int, ErrorClass | None]:
    return MappingProxyType(
        {
            401: AuthError,
            403: AuthError,
            404: RecordGone,
            408: TransientError,  # request timeout: the server never processed it
            410: RecordGone,
            425: TransientError,  # too early: replay later
            429: RateLimited,
        }
    )


@dataclass(frozen=True)
class ErrorTable:
    """Which error a status code becomes; None means "not an error, return the response".

    Attributes:
        by_status: exact entries; they win over the ranges below.
        client_error: any other 4xx (the record was refused: 400, 409, 422...).
        server_error: any other 5xx.
        unexpected: anything else that is not 2xx (1xx, 3xx: redirects are not followed).
        retry_after: reads the wait from a 429 (see `parse_retry_after`).

    Example:
        A vendor that answers 409 to a create of an existing record, handled by the connector:
        `DEFAULT_ERROR_TABLE.with_entries({409: None})`.
    """

    by_status: Mapping[int, ErrorClass | None] = field(default_factory=_default_statuses)
    client_error: ErrorClass = RecordRejected
    server_error: ErrorClass = TransientError
    unexpected: ErrorClass = ConnectorError
    retry_after: Callable[[httpx.Response], float | None] = parse_retry_after

    def error_class(self, status_code: int) -> ErrorClass | None:
        """The error class for a status code, or None when it is a success."""
        if status_code in self.by_status:
            return self.by_status[status_code]
        if 200 <= status_code < 300:
            return None
        if 400 <= status_code < 500:
            return self.client_error
        if 500 <= status_code < 600:
            return self.server_error
        return self.unexpected

    def with_entries(self, entries: Mapping[int, ErrorClass | None]) -> ErrorTable:
        """A copy of this table with some status codes mapped differently."""
        return replace(self, by_status=MappingProxyType({**self.by_status, **entries}))


DEFAULT_ERROR_TABLE = ErrorTable()

# Both patterns only start where a run of their characters starts, so a long vendor body costs
# linear time, not quadratic.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\d+])\+?\(?\d[\d\s().\-/]{5,}\d")
_MAX_DETAIL = 200
_MAX_SCANNED = 1000
_TRAILING_WORD = re.compile(r"[\w.+@-]*\Z")
# Where vendors put a machine-readable code and a human message in an error body:
# HubSpot {category, errorType, policyName, message}; Zendesk {error, description} or
# {error: {title, message}}; Mailchimp (RFC 9457) {title, detail}; Chatwoot {error} or {message}.
_CODE_KEYS = ("category", "errorType", "policyName", "error", "code", "title", "type")
_MESSAGE_KEYS = ("message", "description", "detail", "error_description")


def redact_text(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Mask credentials, email addresses and phone-shaped numbers (7+ digits) in a message."""
    text = _mask_secrets(text, secrets)
    text = _EMAIL.sub("<email>", text)
    return _PHONE.sub(
        lambda m: "<phone>" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text
    )


def _mask_secrets(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text


def json_body(response: httpx.Response) -> Any:
    """The response body parsed as JSON, with orjson (several times faster than
    `response.json()` on the large pages an initial pull reads).

    Raises:
        ValueError: the body is not JSON (`orjson.JSONDecodeError` is a ValueError); JSON
            must be UTF-8 (RFC 8259), which is what every vendor API sends.
    """
    return orjson.loads(response.content)


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        return ""
    if not isinstance(body, dict):
        return ""
    nested = body.get("error")
    if isinstance(nested, dict):  # Zendesk: {"error": {"title": ..., "message": ...}}
        body = {**body, **nested, "error": None}
    codes: list[str] = []
    for key in _CODE_KEYS:
        value = body.get(key)
        if isinstance(value, str | int) and str(value) not in codes and len(codes) < 2:
            codes.append(str(value))
    message = next((body[k] for k in _MESSAGE_KEYS if isinstance(body.get(k), str)), "")
    return ": ".join(part for part in (" / ".join(codes), message) if part)


def classify_response(
    response: httpx.Response,
    *,
    app: str | None,
    connector: str | None,
    operation: str | None,
    table: ErrorTable = DEFAULT_ERROR_TABLE,
    app_record_id: str | None = None,
    secrets: Iterable[str] = (),
) -> ConnectorError | None:
    """Turn a vendor's answer into the error it means, or None when it is a success.

    Args:
        response: the vendor's answer (read, not streamed).
        app: the configured app name.
        connector: the connector name.
        operation: what was attempted, e.g. `contacts.update`.
        table: the status-to-error table; connectors pass a modified copy.
        app_record_id: the record the call was about, when there was one.
        secrets: credential values to mask should the vendor echo them.

    Returns:
        The error to raise, with the vendor's error code and message (redacted, truncated) and,
        for `RateLimited`, `retry_after_s`; None for a success.
    """
    cls = table.error_class(response.status_code)
    if cls is None:
        return None
    message = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    # Credentials are masked in the whole text, before any cut could leave half of one.
    detail = _mask_secrets(_error_detail(response), _secret_parts(secrets))
    if len(detail) > _MAX_SCANNED:
        # Cut before the regexes run, and drop the cut word: half an email is not email-shaped.
        detail = _TRAILING_WORD.sub("", detail[:_MAX_SCANNED]) + " …"
    detail = redact_text(detail)
    if detail:
        message += f": {_truncate(detail)}"
    where: dict[str, Any] = {
        "app": app,
        "connector": connector,
        "operation": operation,
        "status_code": response.status_code,
        "app_record_id": app_record_id,
    }
    if issubclass(cls, RateLimited):
        return cls(message, retry_after_s=table.retry_after(response), **where)
    return cls(message, **where)


def classify_transport_error(
    exc: httpx.TransportError,
    *,
    app: str | None,
    connector: str | None,
    operation: str | None,
    app_record_id: str | None = None,
) -> TransientError:
    """A network failure or timeout as a `TransientError` naming only the kind of failure."""
    return TransientError(
        f"network error: {type(exc).__name__}",
        app=app,
        connector=connector,
        operation=operation,
        app_record_id=app_record_id,
    )


def _truncate(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _secret_parts(values: Iterable[str]) -> list[str]:
    # "Bearer <token>": mask the header value and its token, never short words like "Bearer".
    parts = {p for v in values for p in (v, *v.split()) if len(p) >= 8}
    return sorted(parts, key=len, reverse=True)


_DEFAULT_PORTS = {"http": 80, "https": 443}
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Failures where the request certainly never reached the vendor, so even a create may be resent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _is_safe_to_resend(exc: BaseException) -> bool:
    return isinstance(exc, RateLimited) or isinstance(exc.__cause__, _NOT_SENT)


class ApiClient:
    """One app's HTTP client: base URL, credentials, timeouts, rate limit, retries, counters.

    Args:
        app: the configured app name (named in every error and log line).
        connector: the connector name.
        base_url: the vendor API root; request paths are relative to it.
        auth_headers: credential headers sent with every request; never logged, and masked
            should the vendor echo them in an error body.
        timeout_s: connect/read/write/pool timeout of each attempt.
        limiter: the app's rate limiter, acquired before every attempt.
        retry: the retry policy (`retry_policy()` by default); copied for each request.
        transport: the test seam: respx, `httpx.MockTransport` or `httpx.ASGITransport` over a
            simulator. None uses the network.
        error_table: the status-to-error table (`DEFAULT_ERROR_TABLE` by default).
        headers: other headers sent with every request (e.g. an API version header).
        rate_limited_pause_s: how long the limiter pauses after a 429 that names no wait.
        max_retry_after_s: the longest vendor `Retry-After` honoured: the limiter never pauses
            longer, and a 429 asking for more is raised at once as `RateLimited` (with the
            vendor's full `retry_after_s`), never slept on or retried, whatever `retry` says.
            Connectors pass their `Connector.max_retry_after_s` (the app's config).
        clock: monotonic clock for `duration_ms`.

    Attributes:
        request_count: attempts sent, retries included (benchmarks read it).
        status_counts: attempts by response status code.
        transport_error_count: attempts that failed without a response.
    """

    def __init__(
        self,
        *,
        app: str,
        connector: str,
        base_url: str,
        auth_headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        limiter: Limiter | None = None,
        retry: tenacity.AsyncRetrying | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        error_table: ErrorTable = DEFAULT_ERROR_TABLE,
        headers: Mapping[str, str] | None = None,
        rate_limited_pause_s: float = 1.0,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.connector = connector
        self.limiter = limiter
        self.error_table = error_table
        self.rate_limited_pause_s = rate_limited_pause_s
        self.max_retry_after_s = max_retry_after_s
        self.request_count = 0
        self.status_counts: Counter[int] = Counter()
        self.transport_error_count = 0
        self._retry = retry if retry is not None else retry_policy()
        self._clock = clock
        self._secrets = _secret_parts((auth_headers or {}).values())
        self._base_url = httpx.URL(base_url)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "User-Agent": f"customer-sync/{__version__}",
                "Accept": "application/json",
                **(headers or {}),
                **(auth_headers or {}),
            },
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        limiter: Limiter | None = None,
        app_record_id: str | None = None,
        accept: Collection[int] = (),
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one API call, retrying transient failures, and return the successful response.

        Args:
            method: HTTP method.
            path: path relative to `base_url`, or an absolute URL on the same origin (a next-page
                link); credentials are never sent to another origin.
            operation: what is attempted, e.g. `contacts.search`; named in errors and logs.
            params: query parameters.
            json: JSON body.
            headers: extra headers for this call.
            limiter: a limiter for this endpoint instead of the app's (e.g. a `MultiLimiter`
                adding a search limit).
            app_record_id: the record the call is about; errors carry it.
            accept: status codes returned instead of raised, for a connector that reads the
                body of, say, a 409 "already exists".
            idempotent: whether resending after an unclear failure is harmless. By default
                GET, HEAD, OPTIONS, PUT and DELETE are; POST and PATCH are only retried when the
                vendor certainly did not process them (429, connection refused). Pass True for a
                read sent as POST (search, batch read) or a create keyed by an idempotency key.

        Raises:
            AuthError, RecordGone, RecordRejected: per the error table; never retried.
            TransientError: retries are exhausted (`RateLimited` for a 429).
            RateLimited: at once, without a retry, when the vendor asks to wait longer than
                `max_retry_after_s`; `retry_after_s` is the vendor's full wait.
            ConnectorError: the URL leaves the app's origin, or the response is unexpected.
        """
        method = method.upper()
        self._check_origin(path, operation=operation)
        # The cap holds whatever policy the connector passed in.
        retrying = self._retry.copy(
            retry=tenacity.retry_all(
                self._retry.retry,
                tenacity.retry_if_exception(
                    lambda exc: not is_beyond_retry_cap(exc, self.max_retry_after_s)
                ),
            )
        )
        is_idempotent = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        if not is_idempotent:
            retrying = retrying.copy(
                retry=tenacity.retry_all(
                    retrying.retry, tenacity.retry_if_exception(_is_safe_to_resend)
                )
            )
        attempts = 0

        async def attempt(*args: Any, **kw: Any) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                _API_COUNTS[self.app]["retries"] += 1
            return await self._send_once(*args, **kw)

        response: httpx.Response = await retrying(
            attempt,
            method,
            path,
            operation=operation,
            params=params,
            json=json,
            headers=headers,
            limiter=limiter or self.limiter,
            app_record_id=app_record_id,
            accept=accept,
        )
        return response

    def validate_response(
        self, response: httpx.Response, *, operation: str, app_record_id: str | None = None
    ) -> ConnectorError | None:
        """Return the error a response means, or None when it is a success.

        Override when the vendor reports failures the status code does not show, such as a 200
        with `{"ok": false}`: inspect the body, return an error built with `classify_response`
        or an error class, and fall back to `super().validate_response(...)`. Return
        `RateLimited` or `TransientError` for the retry policy to try again.
        """
        return classify_response(
            response,
            app=self.app,
            connector=self.connector,
            operation=operation,
            table=self.error_table,
            app_record_id=app_record_id,
            secrets=self._secrets,
        )

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        limiter: Limiter | None,
        app_record_id: str | None,
        accept: Collection[int],
    ) -> httpx.Response:
        if limiter is not None:
            await limiter.acquire()
        log_path = redact_text(httpx.URL(path).path)
        self.request_count += 1
        counts = _API_COUNTS[self.app]
        counts["requests"] += 1
        started = self._clock()
        try:
            response = await self._http.request(
                method, path, params=params, json=json, headers=headers
            )
        except httpx.TransportError as exc:
            self.transport_error_count += 1
            _log.debug(
                "http.request_failed",
                app=self.app,
                connector=self.connector,
                operation=operation,
                method=method,
                path=log_path,
                error=type(exc).__name__,
                duration_ms=round((self._clock() - started) * 1000, 1),
            )
            raise classify_transport_error(
                exc,
                app=self.app,
                connector=self.connector,
                operation=operation,
                app_record_id=app_record_id,
            ) from exc
        self.status_counts[response.status_code] += 1
        if response.status_code == 429:
            counts["rate_limited"] += 1
        _log.debug(
            "http.request_finished",
            app=self.app,
            connector=self.connector,
            operation=operation,
            method=method,
            path=log_path,
            status_code=response.status_code,
            duration_ms=round((self._clock() - started) * 1000, 1),
        )
        if response.status_code in accept:
            return response
        error = self.validate_response(response, operation=operation, app_record_id=app_record_id)
        if error is None:
            return response
        if isinstance(error, RateLimited) and limiter is not None:
            pause_s = error.retry_after_s
            if pause_s is None:
                pause_s = self.rate_limited_pause_s
            # A day-long pause would stop every call of the app while it still looks healthy;
            # past the cap the error goes up at once and the engine parks the app instead.
            limiter.penalize(min(pause_s, self.max_retry_after_s))
        raise error

    def _check_origin(self, path: str, *, operation: str) -> None:
        url = httpx.URL(path)
        if not url.is_absolute_url:
            return
        if _origin(url) != _origin(self._base_url):
            raise ConnectorError(
                "refused to send credentials to another origin",
                app=self.app,
                connector=self.connector,
                operation=operation,
            )
