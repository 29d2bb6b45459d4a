"""Reading an untrusted JSON body into bounded, typed values: where `parse_webhook` starts.

A verified webhook delivery is still untrusted input. A vendor bug, a test payload sent by hand
or anyone holding the secret can post valid JSON that breaks naive code: deep nesting raises
`RecursionError`, `1e400` and `2**64+1` and year-9999 dates raise `OverflowError` somewhere
downstream, and thousands of events flood the inbox. `read_webhook` parses the body with
pydantic-core's JSON reader, checks the whole value against `JsonLimits` without recursing
(depth, container length, integers within 64 bits, finite floats), then validates it into the
connector's pydantic shape. Every failure is one `WebhookRefused` (the daemon answers 400) whose
message says what is wrong and never quotes the body.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, Strict, TypeAdapter, ValidationError
from pydantic_core import from_json

from customer_sync.errors import WebhookRefused

__all__ = [
    "EARLIEST_EVENT_AT",
    "LATEST_EVENT_AT",
    "EventTime",
    "JsonLimits",
    "PositiveId",
    "read_json",
    "read_webhook",
]

T = TypeVar("T")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Event times outside [EARLIEST_EVENT_AT, LATEST_EVENT_AT) are refused. Both vendors count from
#: the Unix epoch, and a change cannot have happened before it; 2100 is far enough ahead for any
#: clock, and near enough that moving it to UTC or adding a lag window never leaves the range
#: `datetime` can hold (year 9999 with a negative offset overflows on the way to UTC).
EARLIEST_EVENT_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_AT = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a JSON body, checked before any connector code sees it.

    Attributes:
        max_bytes: the largest body read; the daemon's intake refuses larger ones earlier (413).
        max_depth: how deeply arrays and objects may nest (the top-level container is depth 1).
            Webhook bodies are 3 to 4 deep; 32 leaves room and keeps every walk shallow.
        max_items: the most elements of any one array or members of any one object. Bound the
            number of events with the shape (`Field(max_length=...)`); this bounds the rest.
    """

    max_bytes: int = 1_000_000
    max_depth: int = 32
    max_items: int = 10_000


def read_json(body: bytes, *, limits: JsonLimits = JsonLimits()) -> Any:
    """The JSON value of `body`, checked against `limits`.

    Numbers must be integers within a signed 64-bit integer's range or finite floats
    (`NaN`/`Infinity` are not JSON; `1e400` reads as infinity and is refused too). Text must be
    valid UTF-8 without a byte-order mark.

    Raises:
        WebhookRefused: the body is not JSON, or breaks a limit; the message says which.
    """
    if len(body) > limits.max_bytes:
        raise WebhookRefused(f"body over {limits.max_bytes} bytes")
    try:
        value = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        # jiter's messages name the problem and its line and column, never the text there
        if "recursion limit" in str(exc):
            raise WebhookRefused(f"nested deeper than {limits.max_depth}") from None
        raise WebhookRefused(f"body is not JSON: {exc}") from None
    _check_bounds(value, limits)
    return value


def read_webhook(
    body: bytes, shape: type[T] | TypeAdapter[T], *, limits: JsonLimits = JsonLimits()
) -> T:
    """`body` read with `read_json` and validated into `shape`: the one call `parse_webhook` makes.

    Args:
        body: the raw body, exactly as delivered.
        shape: a pydantic model, or a `TypeAdapter` built once at import for anything else
            (e.g. `TypeAdapter(Annotated[list[Event], Field(max_length=100)])` for a batch).
            Validators in the shape may raise `ValueError` with a message naming the problem,
            never the value; pydantic turns it into a validation error.
        limits: bounds on the raw JSON; the default suits webhook bodies.

    Raises:
        WebhookRefused: the body is not JSON, breaks a limit, or does not fit the shape. The
            message names the keys and the kind of each problem (at most three), never values.
    """
    payload = read_json(body, limits=limits)
    try:
        if isinstance(shape, TypeAdapter):
            return shape.validate_python(payload)
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            return shape.model_validate(payload)  # type: ignore[return-value]
        return TypeAdapter(shape).validate_python(payload)
    except ValidationError as exc:
        raise WebhookRefused(_describe(exc)) from None
    except ArithmeticError:
        # A validator that let an OverflowError through (pydantic wraps only ValueError and
        # AssertionError): still a value out of range, not a crash.
        raise WebhookRefused("a value is out of range") from None


def _check_bounds(value: Any, limits: JsonLimits) -> None:
    """Walk `value` with an explicit stack (no recursion, whatever the depth)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            if depth > limits.max_depth:
                raise WebhookRefused(f"nested deeper than {limits.max_depth}")
            if len(item) > limits.max_items:
                raise WebhookRefused(f"an array or object has more than {limits.max_items} items")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise WebhookRefused("an integer does not fit in 64 bits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise WebhookRefused("a number is too large to be a float")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _describe(exc: ValidationError) -> str:
    """`loc: kind` of the first three problems. pydantic's own messages may quote the input,
    so only the error type is kept (with the message of a validator's own `ValueError`, which
    must not quote it either); keys that are not plain names (a junk key may be an email)
    are masked."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(
            str(part) if isinstance(part, int) or _NAME.fullmatch(part) else "<key>"
            for part in error["loc"]
        ) or "(body)"
        kind = error["type"]
        if kind == "value_error":
            kind = str(error.get("ctx", {}).get("error", kind))
        problems.append(f"{where}: {kind}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _in_event_range(at: datetime) -> datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # naive times are UTC by the vendors' conventions
    if not EARLIEST_EVENT_AT <= at < LATEST_EVENT_AT:
        raise ValueError("time out of range (1970 to 2099)")
    return at.astimezone(UTC)


#: A datetime from a webhook, as aware UTC within [EARLIEST_EVENT_AT, LATEST_EVENT_AT).
EventTime = Annotated[datetime, AfterValidator(_in_event_range)]

#: A vendor's numeric id: a JSON integer (not a bool, float or text), 1 to 2**63-1.
PositiveId = Annotated[int, Strict(), Field(gt=0, le=INT64_MAX)]
