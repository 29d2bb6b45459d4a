"""Named transforms for field maps: anything cleverer than a rename or an enum map.

Each transform is a pair of functions: `to_canonical` (app value -> value handed to canonical
normalization) and `to_app` (canonical value -> app value). A map names one with
`transform = "csv"`. Adding a transform means adding one entry to `TRANSFORMS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from customer_sync.canonical import parse_datetime

__all__ = ["TRANSFORMS", "Transform"]


@dataclass(frozen=True, slots=True)
class Transform:
    """A reversible value conversion between an app field and a canonical field."""

    name: str
    to_canonical: Callable[[Any], Any]
    to_app: Callable[[Any], Any]
    doc: str

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by name (its functions are closures, which do not pickle), so a field map can
        # be sent to a normalizing worker process.
        return (_by_name, (self.name,))


def _none_safe(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        return None if value is None else fn(value)

    return wrapped


def _text(fn: Callable[[str], str]) -> Callable[[Any], Any]:
    return _none_safe(lambda v: fn(v) if isinstance(v, str) else v)


def _csv_in(value: Any) -> Any:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


def _csv_out(value: Any) -> Any:
    if isinstance(value, list | tuple | set):
        return ",".join(sorted(str(v) for v in value))
    return value


def _json_list_in(value: Any) -> Any:
    if isinstance(value, str):
        parsed = json.loads(value) if value.strip() else []
        if not isinstance(parsed, list):
            raise ValueError("expected a JSON array")
        return parsed
    return value


def _json_list_out(value: Any) -> Any:
    return json.dumps(sorted(value)) if isinstance(value, list | tuple | set) else value


def _epoch(scale: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def to_canonical(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return parse_datetime(value / scale * 1.0 if scale != 1 else value)
        return value

    def to_app(value: Any) -> Any:
        # round, not int(): float error would otherwise turn ...455 ms into ...454 ms
        return round(parse_datetime(value).timestamp() * scale)

    return _none_safe(to_canonical), _none_safe(to_app)


def _yes_no_out(value: Any) -> Any:
    return "yes" if value else "no"


_epoch_s = _epoch(1)
_epoch_ms = _epoch(1000)

TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("strip", _text(str.strip), _text(str.strip), "trim surrounding white space"),
        Transform("lower", _text(str.lower), _text(str.lower), "lower-case both ways"),
        Transform("upper", _text(str.upper), _text(str.upper), "upper-case both ways"),
        Transform("title", _text(str.title), _text(str.title), "Title Case both ways"),
        Transform("csv", _none_safe(_csv_in), _none_safe(_csv_out), "comma-separated text <-> set"),
        Transform("json_list", _none_safe(_json_list_in), _none_safe(_json_list_out),
                  "JSON array text <-> set"),
        Transform("epoch_s", *_epoch_s, "Unix seconds <-> date-time"),
        Transform("epoch_ms", *_epoch_ms, "Unix milliseconds <-> date-time"),
        Transform("yes_no", lambda v: v, _none_safe(_yes_no_out), '"yes"/"no" text <-> bool'),
    )
}


def _by_name(name: str) -> Transform:
    return TRANSFORMS[name]
