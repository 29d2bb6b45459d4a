"""ApiClient: rate limit, send, classify, retry, count and log one app's API calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
import respx
import structlog

from customer_sync.errors import (
    ConnectorError,
    RateLimited,
    RecordRejected,
    TransientError,
)
from customer_sync.sdk.http import ApiClient, classify_response
from customer_sync.sdk.ratelimit import RateLimiter
from customer_sync.sdk.retry import retry_policy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import tenacity

    from .conftest import FakeClock

BASE_URL = "https://api.example.test"
CONTACTS = "/crm/v3/objects/contacts"
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


class SpyLimiter:
    """A limiter that records what the client asked of it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float] = []

    async def acquire(self, n: int = 1) -> None:
        self.acquired += n

    def penalize(self, retry_after_s: float) -> None:
        self.penalties.append(retry_after_s)


@pytest.fixture
def limiter() -> SpyLimiter:
    return SpyLimiter()


@pytest.fixture
async def client(
    fast_retry: tenacity.AsyncRetrying, limiter: SpyLimiter
) -> AsyncIterator[ApiClient]:
    async with ApiClient(
        app="crm",
        connector="hubspot",
        base_url=BASE_URL,
        auth_headers={"Authorization": f"Bearer {TOKEN}"},
        limiter=limiter,
        retry=fast_retry,
    ) as api:
        yield api


@pytest.fixture
def api_mock() -> respx.MockRouter:
    with respx.mock(base_url=BASE_URL, assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


async def test_success_returns_the_response_and_counts_it(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter
) -> None:
    """A 200 is returned as is, after one limiter slot, and counted."""
    api_mock.get("/crm/v3/objects/contacts/51").respond(200, json={"id": "51"})

    response = await client.request("GET", "/crm/v3/objects/contacts/51", operation="contacts.read")

    assert {"id": "51"} == response.json()
    assert (1, {200: 1}, 1) == (client.request_count, dict(client.status_counts), limiter.acquired)


async def test_auth_header_is_sent(client: ApiClient, api_mock: respx.MockRouter) -> None:
    """Every request carries the app's credentials."""
    route = api_mock.get("/crm/v3/objects/contacts").respond(200, json={})

    await client.request("GET", "/crm/v3/objects/contacts", operation="contacts.list")

    assert f"Bearer {TOKEN}" == route.calls.last.request.headers["Authorization"]


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422], ids=str)
async def test_4xx_is_never_retried(
    client: ApiClient, api_mock: respx.MockRouter, status: int
) -> None:
    """A 4xx is raised after exactly one request."""
    route = api_mock.patch("/crm/v3/objects/contacts/51").respond(status, json={})

    with pytest.raises(ConnectorError) as caught:
        await client.request("PATCH", "/crm/v3/objects/contacts/51", operation="contacts.update")

    assert not isinstance(caught.value, TransientError)
    assert 1 == route.call_count


async def test_429_then_200_succeeds_and_penalizes_the_limiter(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter, clock: FakeClock
) -> None:
    """A 429 with Retry-After pauses the limiter, waits that long, and the retry succeeds."""
    route = api_mock.get("/api/v2/users/7").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json={}),
        ]
    )

    response = await client.request("GET", "/api/v2/users/7", operation="users.read")

    assert 200 == response.status_code
    assert 2 == route.call_count
    assert [3.0] == limiter.penalties
    assert [3.0] == clock.sleeps
    assert {429: 1, 200: 1} == dict(client.status_counts)


async def test_429_without_retry_after_penalizes_with_the_default_pause(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter
) -> None:
    """A 429 naming no wait (HubSpot) pauses the limiter for rate_limited_pause_s."""
    api_mock.get("/crm/v3/objects/contacts").mock(
        side_effect=[
            httpx.Response(429, json={"policyName": "SECONDLY"}),
            httpx.Response(200, json={}),
        ]
    )

    await client.request("GET", "/crm/v3/objects/contacts", operation="contacts.list")

    assert [1.0] == limiter.penalties


async def test_429_penalizes_a_real_limiter_so_the_next_call_waits(
    fast_retry: tenacity.AsyncRetrying, api_mock: respx.MockRouter, clock: FakeClock
) -> None:
    """After a 429 with Retry-After, the shared limiter holds the next attempt back that long."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    api_mock.get("/x").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "5"}), httpx.Response(200)]
    )
    async with ApiClient(
        app="crm", connector="hubspot", base_url=BASE_URL, limiter=limiter, retry=fast_retry
    ) as api:
        await api.request("GET", "/x", operation="x.read")

    assert clock() >= 5.0


# -- Retry-After beyond the cap: raised at once for the engine to park the app -------------------

A_DAY_S = 86400.0


@pytest.mark.parametrize("method", ["GET", "POST"], ids=["read", "create"])
async def test_429_asking_to_wait_a_day_raises_rate_limited_at_once(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter, clock: FakeClock,
    method: str,
) -> None:
    """Retry-After: 86400 raises RateLimited(86400) at once; the limiter pauses 900 s only."""
    route = api_mock.route(method=method, path=CONTACTS).respond(
        429, headers={"Retry-After": "86400"}
    )

    with pytest.raises(RateLimited) as caught:
        await client.request(method, CONTACTS, operation="contacts.sync")

    assert (A_DAY_S, 429, "crm") == (
        caught.value.retry_after_s, caught.value.status_code, caught.value.app
    )
    assert (1, []) == (route.call_count, clock.sleeps)
    assert [900.0] == limiter.penalties


async def test_a_day_long_429_pauses_a_real_limiter_for_the_cap_only(
    api_mock: respx.MockRouter, clock: FakeClock
) -> None:
    """After a day-long 429 the app's next call waits the cap, even under a generous policy."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    generous = retry_policy(max_total_s=10 * A_DAY_S, max_retry_after_s=10 * A_DAY_S,
                            sleep=clock.sleep)
    api_mock.get("/x").respond(429, headers={"Retry-After": "86400"})
    async with ApiClient(app="crm", connector="hubspot", base_url=BASE_URL, limiter=limiter,
                         retry=generous, max_retry_after_s=60.0) as api:
        with pytest.raises(RateLimited) as caught:
            await api.request("GET", "/x", operation="x.read")
        await limiter.acquire()

    assert A_DAY_S == caught.value.retry_after_s
    assert 60.0 == clock()  # the only wait: the limiter's pause, at the cap


async def test_429_asking_to_wait_5_s_still_waits_and_retries(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter, clock: FakeClock
) -> None:
    """A Retry-After well under the cap is waited for and retried, as before the cap."""
    route = api_mock.get(CONTACTS).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "5"}), httpx.Response(200)]
    )

    response = await client.request("GET", CONTACTS, operation="contacts.list")

    assert (200, 2) == (response.status_code, route.call_count)
    assert ([5.0], [5.0]) == (limiter.penalties, clock.sleeps)


async def test_429_asking_for_exactly_the_cap_is_waited_for(
    api_mock: respx.MockRouter, limiter: SpyLimiter, clock: FakeClock
) -> None:
    """A Retry-After equal to the cap is still waited for and retried."""
    api_mock.get("/x").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "60"}), httpx.Response(200)]
    )
    async with ApiClient(app="crm", connector="hubspot", base_url=BASE_URL, limiter=limiter,
                         retry=retry_policy(sleep=clock.sleep), max_retry_after_s=60.0) as api:
        response = await api.request("GET", "/x", operation="x.read")

    assert (200, [60.0], [60.0]) == (response.status_code, limiter.penalties, clock.sleeps)


async def test_5xx_is_retried_until_attempts_run_out(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A persistent 503 is sent max_attempts times, then raised as TransientError."""
    route = api_mock.get("/crm/v3/objects/contacts").respond(503)

    with pytest.raises(TransientError) as caught:
        await client.request("GET", "/crm/v3/objects/contacts", operation="contacts.list")

    assert 6 == route.call_count
    assert 503 == caught.value.status_code


async def test_429_raises_rate_limited_when_attempts_run_out(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A 429 that never clears is raised as RateLimited with the vendor's wait."""
    api_mock.get("/x").respond(429, headers={"Retry-After": "2"})

    with pytest.raises(RateLimited) as caught:
        await client.request("GET", "/x", operation="x.read")

    assert 2.0 == caught.value.retry_after_s


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
    ids=["connect", "read-timeout", "protocol"],
)
async def test_network_errors_are_transient_and_retried(
    client: ApiClient, api_mock: respx.MockRouter, exc: Exception
) -> None:
    """A network failure is retried and then succeeds."""
    route = api_mock.get("/x").mock(side_effect=[exc, httpx.Response(200)])

    response = await client.request("GET", "/x", operation="x.read")

    assert (200, 2, 1) == (response.status_code, route.call_count, client.transport_error_count)


async def test_post_is_not_resent_after_an_unclear_failure(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A create that got a 502 may have been applied, so it is not sent again."""
    route = api_mock.post("/crm/v3/objects/contacts").respond(502)

    with pytest.raises(TransientError):
        await client.request("POST", CONTACTS, operation="contacts.create", json={})

    assert 1 == route.call_count


async def test_post_is_resent_after_a_429(client: ApiClient, api_mock: respx.MockRouter) -> None:
    """A 429 means the create was not applied, so it is retried."""
    route = api_mock.post("/crm/v3/objects/contacts").mock(
        side_effect=[httpx.Response(429), httpx.Response(201, json={"id": "52"})]
    )

    response = await client.request("POST", CONTACTS, operation="contacts.create", json={})

    assert (201, 2) == (response.status_code, route.call_count)


async def test_post_marked_idempotent_is_retried_on_5xx(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A read sent as POST (search) is retried like a GET when marked idempotent."""
    route = api_mock.post("/crm/v3/objects/contacts/search").mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json={})]
    )

    await client.request(
        "POST",
        "/crm/v3/objects/contacts/search",
        operation="contacts.search",
        json={},
        idempotent=True,
    )

    assert 2 == route.call_count


async def test_accepted_status_is_returned_not_raised(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A status listed in accept comes back as a response for the connector to read."""
    api_mock.post("/crm/v3/objects/contacts").respond(409, json={"message": "Existing ID: 51"})

    response = await client.request(
        "POST", "/crm/v3/objects/contacts", operation="contacts.create", json={}, accept={409}
    )

    assert 409 == response.status_code


async def test_error_carries_the_record_id(client: ApiClient, api_mock: respx.MockRouter) -> None:
    """An error raised for a call about one record names that record."""
    api_mock.patch("/crm/v3/objects/contacts/51").respond(404)

    with pytest.raises(ConnectorError) as caught:
        await client.request(
            "PATCH", "/crm/v3/objects/contacts/51", operation="contacts.update", app_record_id="51"
        )

    assert ("51", "contacts.update", "crm") == (
        caught.value.app_record_id,
        caught.value.operation,
        caught.value.app,
    )


async def test_error_and_logs_carry_no_secret_payload_or_email(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Neither the error nor any log line holds the token, the request payload or an email."""
    api_mock.post("/crm/v3/objects/contacts").respond(
        400,
        json={
            "category": "VALIDATION_ERROR",
            "message": f"Email ada@example.com invalid; token {TOKEN}",
        },
    )
    payload = {"properties": {"email": "ada@example.com", "firstname": "Ada-Lovelace-Sentinel"}}

    with structlog.testing.capture_logs() as logs, pytest.raises(RecordRejected) as caught:
        await client.request("POST", CONTACTS, operation="contacts.create", json=payload)

    text = str(caught.value) + repr(logs)
    for leaked in (TOKEN, "Bearer", "ada@example.com", "Ada-Lovelace-Sentinel"):
        assert leaked not in text
    assert "VALIDATION_ERROR" in str(caught.value)


async def test_request_finished_is_logged_without_query_string(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Each attempt logs http.request_finished with method, path without query, status, duration."""
    api_mock.get("/crm/v3/objects/contacts").respond(200, json={})

    with structlog.testing.capture_logs() as logs:
        await client.request(
            "GET", CONTACTS, operation="contacts.list", params={"after": "secret-cursor"}
        )

    [entry] = [e for e in logs if e["event"] == "http.request_finished"]
    assert ("debug", "GET", "/crm/v3/objects/contacts", 200) == (
        entry["log_level"],
        entry["method"],
        entry["path"],
        entry["status_code"],
    )
    assert "duration_ms" in entry and "secret-cursor" not in repr(entry)


async def test_logged_path_masks_an_email_in_the_path(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A path that holds an email (HubSpot idProperty=email reads) is logged masked."""
    api_mock.get("/crm/v3/objects/contacts/ada@example.com").respond(200, json={})

    with structlog.testing.capture_logs() as logs:
        await client.request(
            "GET", "/crm/v3/objects/contacts/ada@example.com", operation="contacts.read",
            params={"idProperty": "email"},
        )

    assert "ada@example.com" not in repr(logs)


async def test_absolute_url_on_another_origin_is_refused(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Credentials are never sent to a host other than the app's base URL."""
    with pytest.raises(ConnectorError, match="another origin"):
        await client.request("GET", "https://evil.example.test/steal", operation="contacts.list")

    assert 0 == client.request_count


async def test_absolute_url_on_the_same_origin_is_sent(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A next-page link on the app's own origin is followed."""
    route = api_mock.get("/api/v2/users.json").respond(200, json={})

    await client.request("GET", f"{BASE_URL}:443/api/v2/users.json?page=2", operation="users.list")

    assert "page=2" == route.calls.last.request.url.query.decode()


async def test_per_request_limiter_replaces_the_app_limiter(
    client: ApiClient, api_mock: respx.MockRouter, limiter: SpyLimiter
) -> None:
    """A limiter passed to request() is acquired instead of the client's own."""
    search_limiter = SpyLimiter()
    api_mock.post("/search").respond(200, json={})

    await client.request("POST", "/search", operation="contacts.search", limiter=search_limiter)

    assert (1, 0) == (search_limiter.acquired, limiter.acquired)


async def test_validate_response_override_turns_an_error_body_into_an_error(
    fast_retry: tenacity.AsyncRetrying, api_mock: respx.MockRouter
) -> None:
    """A connector's validate_response can reject a 200 whose body reports a failure."""

    class OkFalseClient(ApiClient):
        def validate_response(
            self, response: httpx.Response, *, operation: str, app_record_id: str | None = None
        ) -> ConnectorError | None:
            if response.status_code == 200 and response.json().get("ok") is False:
                return RecordRejected(
                    "ok=false", app=self.app, connector=self.connector, operation=operation
                )
            return classify_response(
                response, app=self.app, connector=self.connector, operation=operation
            )

    api_mock.post("/lists/1/members").respond(200, json={"ok": False})

    async with OkFalseClient(
        app="list", connector="acme", base_url=BASE_URL, retry=fast_retry
    ) as api:
        with pytest.raises(RecordRejected, match="ok=false"):
            await api.request("POST", "/lists/1/members", operation="members.create", json={})


async def test_transport_seam_reaches_a_simulator(fast_retry: tenacity.AsyncRetrying) -> None:
    """A transport passed to ApiClient serves every request, so tests never reach the network."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"path": request.url.path})

    async with ApiClient(
        app="crm",
        connector="hubspot",
        base_url=BASE_URL,
        transport=httpx.MockTransport(handle),
        retry=fast_retry,
    ) as api:
        response = await api.request("GET", "/crm/v3/objects/contacts", operation="contacts.list")

    assert {"path": "/crm/v3/objects/contacts"} == response.json()
