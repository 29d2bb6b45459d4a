"""`GET /metrics` over the webhook intake: a verified delivery counts as observed changes and
shows in the inbox depth; a refused one counts nothing."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.api.test_webhook_intake import client, sign  # noqa: F401 (fixture)


async def scrape(http) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await http.get("/metrics")
    assert 200 == response.status_code
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


async def test_a_verified_delivery_is_observed_and_waits_in_the_inbox(client):  # noqa: F811
    """Two changes delivered to crm: observed 2 by webhook, inbox depth 2; a bad signature adds nothing."""
    http, _ = client
    body = json.dumps([{"id": 7}, {"id": 8, "kind": "delete"}]).encode()
    url = "http://sync.test/webhooks/crm"
    assert 200 == (await http.post("/webhooks/crm", content=body,
                                   headers={"X-Signature": sign(url, body)})).status_code
    assert 401 == (await http.post("/webhooks/crm", content=body,
                                   headers={"X-Signature": "0" * 64})).status_code

    samples = await scrape(http)

    observed = ("customer_sync_changes_observed_total", (("app", "crm"), ("source", "webhook")))
    assert 2 == samples[observed]
    assert 2 == samples[("customer_sync_inbox_depth", (("app", "crm"),))]
    assert 0 == samples[("customer_sync_inbox_depth", (("app", "desk"),))]
    assert 0 == samples[("customer_sync_conflicts_open", (("kind", "field"),))]
    assert 1 == samples[("customer_sync_store_read_ok", ())]
    assert [] == [name for name, _ in samples if name.endswith("_created")]
