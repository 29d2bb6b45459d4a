"""Validly signed junk to `POST /webhooks/{app}`, for HubSpot and Zendesk: never a 5xx, and
nothing but well-formed changes in the inbox.

Every delivery here carries a correct signature, so what is tested is what happens after the
signature check: the bounded reading, the typed events and the inbox write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from customer_sync.api.app import MAX_BODY_BYTES
from customer_sync.store.db import Store

from .conftest import BASE_URL, inbox, signed  # noqa: TID252

HUBSPOT_TYPES = ["contact.creation", "contact.propertyChange", "contact.deletion",
                 "contact.privacyDeletion", "contact.merge", "contact.restore",
                 "contact.associationChange", "company.creation"]
ZENDESK_TYPES = ["zen:event-type:user.created", "zen:event-type:user.deleted",
                 "zen:event-type:user.active_changed", "zen:event-type:user.name_changed",
                 "zen:event-type:organization.created"]


async def post(http: httpx.AsyncClient, app: str, body: bytes) -> httpx.Response:
    return await http.post(f"/webhooks/{app}", content=body, headers=signed(app, BASE_URL, body))


def is_well_formed_id(text: str) -> bool:
    """A vendor id as the inbox should hold one: a positive 64-bit integer, written plainly."""
    return text.isascii() and text.isdigit() and str(int(text)) == text and 0 < int(text) < 2**63


async def check_delivery(http: httpx.AsyncClient, store: Store, app: str, body: bytes) -> int:
    """Post `body` signed; assert no 5xx, nothing stored unless accepted, and that what was
    stored is well formed. Returns the status."""
    before = len(inbox(store))
    response = await post(http, app, body)
    added = inbox(store)[before:]
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 413), response.text  # signed: never a 401
    if response.status_code != 200:
        assert [] == added
        return response.status_code
    assert response.json()["accepted"] == len(added)
    assert all(row["app"] == app and row["source"] == "webhook" for row in added)
    assert all(is_well_formed_id(row["app_record_id"]) for row in added)
    if app == "crm":
        assert len(added) <= 100 * 101  # 100 events, a merge adds at most 100 merged ids
    else:
        assert len(added) <= 1  # one event per Zendesk delivery
    return response.status_code


# -- hypothesis ---------------------------------------------------------------------------------

# JSON text of any value, or a raw number literal (`1e400`, 30-digit integers...), which no
# Python value serializes to.
NUMBER_LITERAL = r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,6})?([eE][+-]?[0-9]{1,4})?"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
tokens = st.from_regex(NUMBER_LITERAL, fullmatch=True) | json_values.map(json.dumps)
plausible_ids = st.integers(min_value=1, max_value=10**13).map(str)
ids = (plausible_ids | st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.sampled_from(
    ["0", "-1", "1", "9223372036854775807", "9223372036854775808", "18446744073709551617",
     "1e400", "-1e400", "1.5", "Infinity", "NaN", "true", "null", '"12"', '"-3"']) | tokens)
times = st.integers(0, 4_102_444_799_999).map(str) | ids | st.sampled_from(
    ['"2026-03-02T09:00:00Z"', '"9999-12-31T23:59:59-14:00"', '"0001-01-01T00:00:00+14:00"',
     '"2026-02-30T00:00:00Z"', '"1969-12-31T23:59:59Z"', '"2100-01-01T00:00:00Z"', '""'])


def members(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(key)}:{token}" for key, token in pairs) + "}"


@st.composite
def hubspot_bodies(draw: st.DrawFn) -> bytes:
    def event() -> str:
        pairs = [("subscriptionType", json.dumps(draw(st.sampled_from(HUBSPOT_TYPES)))),
                 ("objectId", draw(plausible_ids | ids)), ("occurredAt", draw(times))]
        if draw(st.booleans()):
            pairs.append(("propertyName", draw(tokens)))
        if draw(st.booleans()):
            merged = draw(st.lists(ids, max_size=4))
            pairs += [("mergedObjectIds", "[" + ",".join(merged) + "]"),
                      ("primaryObjectId", draw(ids))]
        return members(draw(st.permutations(pairs)))

    body = "[" + ",".join(event() for _ in range(draw(st.integers(0, 4)))) + "]"
    return draw(st.sampled_from([body, body, json.dumps(draw(json_values))])).encode()


@st.composite
def zendesk_bodies(draw: st.DrawFn) -> bytes:
    user_id = draw(plausible_ids | ids)
    detail = members([("id", draw(st.sampled_from([f'"{user_id}"', user_id]))),
                      ("role", draw(st.sampled_from(['"end-user"', '"agent"']) | tokens))])
    pairs = [("type", json.dumps(draw(st.sampled_from(ZENDESK_TYPES)))),
             ("subject", draw(st.sampled_from([f'"zen:user:{user_id}"', "null"]) | tokens)),
             ("time", draw(times)), ("detail", detail),
             ("event", members([("current", draw(tokens)), ("previous", draw(tokens))]))]
    body = members(draw(st.permutations(pairs)))
    return draw(st.sampled_from([body, body, json.dumps(draw(json_values))])).encode()


FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=hubspot_bodies() | st.binary(max_size=300))
async def test_signed_hubspot_junk_is_never_a_5xx(intake: tuple[httpx.AsyncClient, Store],
                                                  body: bytes) -> None:
    """Signed HubSpot-shaped junk and random bytes: 200, 400 or 413, and only well-formed
    changes stored (the same engine and store take every example)."""
    http, store = intake
    event(f"answered {await check_delivery(http, store, 'crm', body)}")


@FUZZ
@given(body=zendesk_bodies() | st.binary(max_size=300))
async def test_signed_zendesk_junk_is_never_a_5xx(intake: tuple[httpx.AsyncClient, Store],
                                                  body: bytes) -> None:
    """Signed Zendesk-shaped junk and random bytes: 200, 400 or 413, and only well-formed
    changes stored (the same engine and store take every example)."""
    http, store = intake
    event(f"answered {await check_delivery(http, store, 'desk', body)}")


# -- explicit cases -----------------------------------------------------------------------------

def hubspot(**fields: Any) -> dict[str, Any]:
    return {"subscriptionType": "contact.creation", "objectId": 1, "occurredAt": 1764000000000,
            **fields}


def zendesk(user_id: Any = "6500000000002", **fields: Any) -> bytes:
    event = {"type": "zen:event-type:user.created", "time": "2026-03-02T09:00:00Z",
             "subject": f"zen:user:{user_id}", "detail": {"id": user_id, "role": "end-user"},
             "event": {}, **fields}
    return json.dumps(event).encode()


JUNK = [
    ("crm", b"[" * 200_000 + b"]" * 200_000, "deep-nesting-arrays"),
    ("crm", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "deep-nesting-objects"),
    ("crm", f'[{{"subscriptionType":"contact.creation","objectId":{2**64 + 1}}}]'.encode(),
     "id-2**64+1"),
    ("crm", f'[{{"subscriptionType":"contact.creation","objectId":{10**4000}}}]'.encode(),
     "id-4000-digits"),
    ("crm", b'[{"subscriptionType":"contact.creation","objectId":1e400}]', "id-1e400"),
    ("crm", b'[{"subscriptionType":"contact.creation","objectId":1,"occurredAt":1e400}]',
     "time-1e400"),
    ("crm", b'[{"subscriptionType":"contact.creation","objectId":1,"occurredAt":Infinity}]',
     "time-infinity"),
    ("crm", b'[{"subscriptionType":"contact.creation","objectId":NaN}]', "id-nan"),
    ("crm", b'[{"subscriptionType":"contact.creation","objectId":-Infinity}]', "id-minus-infinity"),
    ("crm", json.dumps([hubspot(occurredAt=2**63 - 1)]).encode(), "time-int64-max"),
    ("crm", json.dumps([hubspot(occurredAt=-(2**63))]).encode(), "time-int64-min"),
    ("crm", json.dumps([hubspot(occurredAt="9999-12-31T23:59:59-14:00")]).encode(), "time-9999"),
    ("crm", json.dumps([hubspot(occurredAt="0001-01-01T00:00:00+14:00")]).encode(), "time-0001"),
    ("crm", json.dumps([hubspot(occurredAt="2026-13-45T99:00:00Z")]).encode(), "time-bad-date"),
    ("crm", json.dumps([hubspot(objectId=i) for i in range(1, 2001)]).encode(), "2000-events"),
    ("crm", json.dumps([hubspot(objectId=-5)]).encode(), "negative-id"),
    ("crm", json.dumps([hubspot(objectId=0)]).encode(), "zero-id"),
    ("crm", json.dumps([hubspot(subscriptionType="contact.merge", mergedObjectIds=[-1])]).encode(),
     "negative-merged-id"),
    ("crm", json.dumps([hubspot(subscriptionType="contact.merge",
                                mergedObjectIds=list(range(2, 103)))]).encode(), "101-merged-ids"),
    ("crm", b'[{"subscriptionType":"contact.creation\xff\xfe","objectId":1}]', "not-utf8"),
    ("crm", b'[{"subscriptionType":"\\ud800","objectId":1}]', "lone-surrogate"),
    ("crm", b"\xef\xbb\xbf[]", "bom"),
    ("crm", b"", "empty"),
    ("desk", b"[" * 200_000 + b"]" * 200_000, "deep-nesting"),
    ("desk", zendesk("-5"), "negative-id"),
    ("desk", zendesk(str(2**64 + 1)), "id-2**64+1"),
    ("desk", zendesk(2**64 + 1), "int-id-2**64+1"),
    ("desk", zendesk(time="9999-12-31T23:59:59-14:00"), "time-9999"),
    ("desk", zendesk(time="0001-01-01T00:00:00+14:00"), "time-0001"),
    ("desk", zendesk(time="2026-02-30T00:00:00Z"), "time-bad-date"),
    ("desk", zendesk(time=10**18), "time-huge-number"),
    ("desk", zendesk().replace(b'"event": {}', b'"event": {"current": 1e400}'), "1e400"),
    ("desk", zendesk().replace(b'"event": {}', b'"event": {"current": -Infinity}'), "infinity"),
    ("desk", zendesk().replace(b'"event": {}', b'"event": {"n": ' + str(2**64 + 1).encode() + b"}"),
     "int-2**64+1"),
    ("desk", b'{"type": "zen:event-type:user.created\xff"}', "not-utf8"),
    ("desk", json.dumps([json.loads(zendesk())] * 2000).encode(), "2000-events"),
]


@pytest.mark.parametrize(("app", "body"), [(a, b) for a, b, _ in JUNK],
                         ids=[f"{a}-{i}" for a, _, i in JUNK])
async def test_explicit_signed_junk_is_a_400_and_stores_nothing(
    intake: tuple[httpx.AsyncClient, Store], app: str, body: bytes
) -> None:
    """The bodies seen to crash intake or flood the inbox are each refused with a 400 and a
    short reason, and the inbox stays empty."""
    http, store = intake
    response = await post(http, app, body)
    assert (400, "malformed delivery") == (response.status_code, response.json()["error"])
    assert response.json()["reason"]
    assert [] == inbox(store)


async def chunks_of(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"[" * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("app", ["crm", "desk"])
async def test_a_chunked_body_over_the_cap_is_a_413(intake: tuple[httpx.AsyncClient, Store],
                                                    app: str) -> None:
    """A body streamed without Content-Length is cut off at the cap with a 413; a body that
    declares its oversize length is refused before it is read."""
    http, store = intake
    streamed = await http.post(f"/webhooks/{app}", content=chunks_of(20 * MAX_BODY_BYTES))
    declared = await http.post(f"/webhooks/{app}", content=b" " * (MAX_BODY_BYTES + 1))
    assert (413, 413) == (streamed.status_code, declared.status_code)
    assert [] == inbox(store)


async def test_valid_deliveries_of_both_vendors_are_stored_as_sent(
    intake: tuple[httpx.AsyncClient, Store]
) -> None:
    """The bounds refuse nothing real: a full HubSpot batch of 100 events and a Zendesk event at
    the largest id are stored, one change each."""
    http, store = intake
    batch = json.dumps([hubspot(objectId=i) for i in range(1, 101)]).encode()
    assert {"accepted": 100} == (await post(http, "crm", batch)).json()
    assert {"accepted": 1} == (await post(http, "desk", zendesk(str(2**63 - 1)))).json()
    rows = inbox(store)
    assert [("crm", str(i)) for i in range(1, 101)] + [("desk", str(2**63 - 1))] == [
        (r["app"], r["app_record_id"]) for r in rows]
