"""The SDK's bounded JSON reader: untrusted bodies become typed values or one `WebhookRefused`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter

import customer_sync.sdk
from customer_sync.sdk import (
    EventTime,
    JsonLimits,
    PositiveId,
    WebhookRefused,
    _bounded_json,
    read_json,
    read_webhook,
)


class Event(BaseModel):
    object_id: PositiveId
    at: EventTime | None = None


EVENTS = TypeAdapter(Annotated[list[Event], Field(max_length=3)])


def test_every_public_name_is_reexported_from_sdk() -> None:
    """Each name in the reader's __all__ is in customer_sync.sdk.__all__ and is the same object."""
    for name in _bounded_json.__all__:
        assert name in customer_sync.sdk.__all__
        assert getattr(_bounded_json, name) is getattr(customer_sync.sdk, name)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 32"),
        (b"[1e400]", "too large to be a float"),
        (b"[-1e400]", "too large to be a float"),
        (b"[NaN]", "not JSON"),
        (b"[Infinity]", "not JSON"),
        (b"[-Infinity]", "not JSON"),
        (str(2**64 + 1).encode(), "does not fit in 64 bits"),
        (str(2**63).encode(), "does not fit in 64 bits"),
        (str(-(2**63) - 1).encode(), "does not fit in 64 bits"),
        (b"1" * 5000, "not JSON"),
        (b'"\xff\xfe"', "not JSON"),
        (b'"\\ud800"', "not JSON"),
        (b"\xef\xbb\xbf[]", "not JSON"),
        (b"[1,]", "not JSON"),
        (b"[" + b"0," * 10_000 + b"0]", "more than 10000 items"),
        (b" " * 1_000_001, "over 1000000 bytes"),
    ],
    ids=["deep-100k", "deep-33", "deep-objects", "1e400", "-1e400", "nan", "infinity",
         "-infinity", "2**64+1", "2**63", "-2**63-1", "5000-digits", "not-utf8",
         "lone-surrogate", "bom", "trailing-comma", "10001-items", "over-1mb"],
)
def test_out_of_bounds_json_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    """Every body beyond a bound is one WebhookRefused naming the bound, never another error."""
    with pytest.raises(WebhookRefused, match=reason):
        read_json(body)


def test_values_at_the_bounds_are_read() -> None:
    """The largest 64-bit integers, 32 levels of nesting and finite floats are accepted."""
    body = json.dumps([2**63 - 1, -(2**63), 1.5e308, 1e-400, [[[]]]]).encode()
    assert [2**63 - 1, -(2**63), 1.5e308, 0.0, [[[]]]] == read_json(body)
    assert read_json(b"[" * 32 + b"]" * 32) is not None


def test_limits_are_the_callers_to_choose() -> None:
    """A connector may tighten the limits for its own vendor."""
    with pytest.raises(WebhookRefused, match="nested deeper than 2"):
        read_json(b"[[[]]]", limits=JsonLimits(max_depth=2))
    with pytest.raises(WebhookRefused, match="more than 2 items"):
        read_json(b"[1,2,3]", limits=JsonLimits(max_items=2))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'[{"object_id": 0}]', "0.object_id: greater_than"),
        (b'[{"object_id": -7}]', "0.object_id: greater_than"),
        (b'[{"object_id": true}]', "0.object_id: int_type"),
        (b'[{"object_id": 7.0}]', "0.object_id: int_type"),
        (b'[{"object_id": "7"}]', "0.object_id: int_type"),
        (b'[{"object_id": 1, "at": "9999-12-31T23:59:59-14:00"}]', "0.at: time out of range"),
        (b'[{"object_id": 1, "at": "0001-01-01T00:00:00+14:00"}]', "0.at: time out of range"),
        (b'[{"object_id": 1, "at": "2024-02-30T00:00:00Z"}]', "0.at: datetime"),
        (b'[{"object_id": 1}, {"object_id": 2}, {"object_id": 3}, {"object_id": 4}]', "too_long"),
        (b'{"object_id": 1}', "list_type"),
    ],
    ids=["zero-id", "negative-id", "bool-id", "float-id", "text-id", "year-9999",
         "year-1", "no-such-day", "too-many-events", "not-a-list"],
)
def test_bodies_that_do_not_fit_the_shape_are_refused(body: bytes, where: str) -> None:
    """Ids must be positive JSON integers, times in range, event lists within their bound."""
    with pytest.raises(WebhookRefused, match=where):
        read_webhook(body, EVENTS)


def test_refusals_never_quote_the_body() -> None:
    """A refusal names keys and kinds of problem; values, and keys that are not plain names
    (a junk key may be an email address), are left out."""
    body = b'{"person@example.org": "9999-12-31T00:00:00Z"}'
    with pytest.raises(WebhookRefused) as caught:
        read_webhook(body, TypeAdapter(dict[str, EventTime]))
    assert "<key>: time out of range (1970 to 2099)" == str(caught.value)
    with pytest.raises(WebhookRefused) as caught:
        read_webhook(b'[{"object_id": "person@example.org"}]', EVENTS)
    assert "person" not in str(caught.value)


def test_a_fitting_body_becomes_typed_values() -> None:
    """Ids stay integers, times become aware UTC datetimes."""
    body = b'[{"object_id": 42, "at": "2026-03-02T10:00:00+01:00"}]'
    expected = [Event(object_id=42, at=datetime(2026, 3, 2, 9, tzinfo=UTC))]
    assert expected == read_webhook(body, EVENTS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_any_bytes_are_read_or_refused(body: bytes) -> None:
    """No body makes the reader raise anything but WebhookRefused, and what it reads fits."""
    try:
        events = read_webhook(body, EVENTS)
    except WebhookRefused:
        return
    assert len(events) <= 3
    assert all(0 < e.object_id < 2**63 for e in events)
