"""The per-app API call counts the daemon's metrics serve: requests, 429s and retries."""

from __future__ import annotations

import httpx

from customer_sync.sdk.http import ApiClient, api_counts
from customer_sync.sdk.retry import retry_policy


async def _no_sleep(seconds: float) -> None:
    return None


async def test_a_429_then_success_counts_two_requests_one_429_one_retry() -> None:
    """A call answered 429 and then 200 counts two requests, one 429 and one retry."""
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, json={})])
    transport = httpx.MockTransport(lambda request: next(answers))
    before = api_counts().get("counted-app", {})
    async with ApiClient(app="counted-app", connector="test", base_url="https://api.test",
                         transport=transport, retry=retry_policy(sleep=_no_sleep)) as client:
        await client.request("GET", "/things", operation="things.list")
    after = api_counts()["counted-app"]
    assert 2 == after["requests"] - before.get("requests", 0)
    assert 1 == after["rate_limited"] - before.get("rate_limited", 0)
    assert 1 == after["retries"] - before.get("retries", 0)
