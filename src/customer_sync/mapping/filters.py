"""Per-app filters: which customers an app takes part with.

Conditions are structured data (`field`, `op`, `value`) over canonical values, all of which must
hold: `eq`, `ne`, `in`, `not_in`, `exists`, `not_exists`, `contains` (text or set),
`newer_than` / `older_than` (a date or date-time field against a duration such as "180d", "12h").
A record failing its app's filter is not read from that app; a customer failing an app's filter
is not written to that app.

Ages in days or weeks compare whole UTC days: "newer_than 7d" holds for a value whose UTC date
is today's UTC date or up to 7 days before it, whatever the time of day on either side (a
signup exactly 7 days ago is in "the last 7 days"). Ages in seconds, minutes or hours compare
instants, and are refused on a date field (a date has no time of day to compare).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from customer_sync.canonical import (
    NormalizeContext,
    field_spec,
    is_set_field,
    normalize_value,
    parse_datetime,
)
from customer_sync.durations import DURATION as _DURATION
from customer_sync.durations import parse_duration
from customer_sync.errors import MappingError

__all__ = ["OPS", "Filter", "compile_filter", "parse_duration"]

OPS = ("eq", "ne", "in", "not_in", "exists", "not_exists", "contains", "newer_than", "older_than")

Predicate = Callable[[Mapping[str, Any], datetime], bool]


def _whole_days(text: str) -> int | None:
    """The number of days in a duration written in days or weeks ("7d", "2w"), or None when
    it is written in a smaller unit or is not a whole number of days ("12h", "1.5d")."""
    m = _DURATION.match(text)
    if m is None or m.group(2) not in ("d", "w"):
        return None
    age = parse_duration(text)
    return age.days if age == timedelta(days=age.days) else None


def _utc_date(value: Any) -> date | None:
    """The UTC calendar date of a canonical date ("2026-01-03") or date-time value; None when
    the value is not one."""
    try:
        if isinstance(value, str) and len(value.strip()) == 10:
            return date.fromisoformat(value.strip())
        return parse_datetime(value).date()
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _instant(value: Any) -> datetime | None:
    try:
        return parse_datetime(value)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


class Filter:
    """A compiled filter; `matches(values, now)` is True when every condition holds."""

    def __init__(self, predicates: Sequence[Predicate], fields: frozenset[str]) -> None:
        self._predicates = tuple(predicates)
        self.fields = fields

    def __bool__(self) -> bool:
        return bool(self._predicates)

    def matches(self, values: Mapping[str, Any], now: datetime) -> bool:
        return all(p(values, now) for p in self._predicates)


def compile_filter(
    app: str, conditions: Sequence[Mapping[str, Any]], *, custom_fields: Mapping[str, str]
) -> tuple[Filter, list[str]]:
    """Compile `[[apps.APP.filters]]`; returns the filter and problems (`key.path: what`)."""
    predicates: list[Predicate] = []
    problems: list[str] = []
    fields: set[str] = set()
    for i, cond in enumerate(conditions):
        where = f"apps.{app}.filters[{i}]"
        name, op, value = cond.get("field"), cond.get("op"), cond.get("value")
        spec = field_spec(name, custom_fields) if isinstance(name, str) else None
        if spec is None:
            problems.append(f"{where}.field: unknown canonical field {name!r}")
            continue
        if op not in OPS:
            problems.append(f"{where}.op: unknown op {op!r} (one of {', '.join(OPS)})")
            continue
        try:
            predicates.append(_predicate(spec, op, value))
        except (ValueError, TypeError, MappingError) as exc:
            problems.append(f"{where}.value: {exc}")
            continue
        fields.add(name)
    return Filter(predicates, frozenset(fields)), problems


def _predicate(spec: Any, op: str, value: Any) -> Predicate:
    name = spec.name
    ctx = NormalizeContext()
    if op in ("exists", "not_exists"):
        want = op == "exists"
        return lambda v, now: (v.get(name) not in (None, [], "")) is want
    if op in ("newer_than", "older_than"):
        return _age_predicate(spec, op, value)
    if is_set_field(spec) and op in ("in", "not_in", "eq", "ne"):
        # Sets: `in` holds when any element is listed, `eq` when the sets are equal.
        items = value if isinstance(value, list) else [value]
        wanted = frozenset(normalize_value(spec, items, ctx))
        if op == "in":
            return lambda v, now: bool(wanted & frozenset(v.get(name) or ()))
        if op == "not_in":
            return lambda v, now: not (wanted & frozenset(v.get(name) or ()))
        if op == "eq":
            return lambda v, now: wanted == frozenset(v.get(name) or ())
        return lambda v, now: wanted != frozenset(v.get(name) or ())
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ValueError(f"{op} needs a list value")
        allowed = {_norm_scalar(spec, x, ctx) for x in value}
        if op == "in":
            return lambda v, now: v.get(name) in allowed
        return lambda v, now: v.get(name) not in allowed
    if op == "contains":
        if not isinstance(value, str):
            raise ValueError("contains needs a text value")
        needle = value.lower()
        return lambda v, now: _contains(v.get(name), needle)
    target = _norm_scalar(spec, value, ctx)
    if op == "eq":
        return lambda v, now: v.get(name) == target
    return lambda v, now: v.get(name) != target


def _age_predicate(spec: Any, op: str, value: Any) -> Predicate:
    """`newer_than` / `older_than`: whole UTC days for an age in days or weeks, instants for a
    smaller unit (date-time fields only)."""
    name = spec.name
    if spec.kind not in ("date", "datetime"):
        raise ValueError(f"{op} needs a date or date-time field; {name} is {spec.kind}")
    age = parse_duration(value)
    days = _whole_days(value)
    if days is None:
        if spec.kind == "date":
            raise ValueError(f"{op} on the date field {name} needs an age in whole days or weeks "
                             f"(like '7d' or '2w'), not {value!r}")

        def instant_holds(v: Mapping[str, Any], now: datetime) -> bool:
            at = _instant(v.get(name)) if v.get(name) is not None else None
            return at is not None and (at >= now - age if op == "newer_than" else at < now - age)

        return instant_holds

    def day_holds(v: Mapping[str, Any], now: datetime) -> bool:
        day = _utc_date(v.get(name)) if v.get(name) is not None else None
        if day is None:
            return False
        oldest_inside = now.astimezone(UTC).date() - timedelta(days=days)
        return day >= oldest_inside if op == "newer_than" else day < oldest_inside

    return day_holds


def _norm_scalar(spec: Any, value: Any, ctx: NormalizeContext) -> Any:
    norm = normalize_value(spec, value, ctx)
    return tuple(norm) if isinstance(norm, list) else norm


def _contains(current: Any, needle: str) -> bool:
    if current is None:
        return False
    if isinstance(current, list):
        return any(needle == str(x).lower() for x in current)
    return needle in str(current).lower()
