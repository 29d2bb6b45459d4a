"""Plain-text and JSON rendering for the CLI: aligned tables, `old → new` diffs, times and lags.

Output is plain text on purpose (no colours, no box drawing) so that it reads the same in a
terminal, in `docker logs` and through `grep`. Machine output is JSON with ISO times.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EMPTY",
    "diff_lines",
    "format_change",
    "format_lag",
    "format_raw",
    "format_time",
    "format_value",
    "table",
    "to_json",
]

EMPTY = "(none)"
ARROW = "→"


def stored_utc(value: datetime) -> datetime:
    """A stored time as aware UTC (SQLite hands them back naive); `store.tables.stored_utc`,
    repeated here so that rendering does not import the store's tables."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return stored_utc(value).isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def to_json(data: Any) -> str:
    """Pretty JSON; datetimes become ISO 8601 UTC strings."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=_json_default)


def format_time(value: datetime | str | None) -> str:
    """`2024-05-01 12:00:03Z`, from a datetime or an ISO string; `(none)` for None."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return stored_utc(value).strftime("%Y-%m-%d %H:%M:%SZ")


def format_lag(seconds: float | None) -> str:
    """A duration for people: `42s`, `5m 02s`, `3h 10m`, `2d 4h`."""
    if seconds is None:
        return EMPTY
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def format_value(value: Any) -> str:
    """One canonical value on one line."""
    if value is None or value == "" or value == []:
        return EMPTY
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def format_raw(value: Any) -> str:
    """A value exactly as an app sent it, on one line: JSON (text in quotes), with characters
    that print as nothing or as a blank (bidi marks, no-break spaces, zero-width joiners, line
    breaks) written as `\\uXXXX`, so the operator sees what was refused; `(none)` for None."""
    if value is None:
        return EMPTY
    text = json.dumps(value, ensure_ascii=False, default=_json_default)
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_change(old: Any, new: Any) -> str:
    """`old → new`."""
    return f"{format_value(old)} {ARROW} {format_value(new)}"


def diff_lines(diff: Mapping[str, Any] | None) -> list[str]:
    """A change-log diff as lines, by its shape. The change log holds two:

    - changes, `{field: [old, new]}`: a line `field: old → new` each; fields whose old and new
      read the same (a first observation lists every mapped field) are left out;
    - a list of field names, `{"fields": [name, ...]}` (a new customer's decision, an error, a
      dead letter): one line `fields: a, b`, however many names it holds.

    Any two-item list is not a change: `{"fields": ["email", "first_name"]}` lists two names.
    (Only a custom field named `fields`, changed from text to text and alone in its diff,
    would read as names; no built-in field has that name.)
    """
    if not diff:
        return []
    out = []
    for name, change in diff.items():
        if name == "fields" and _is_name_list(change) and len(diff) == 1:
            out.append(f"{name}: {', '.join(change)}")
        elif isinstance(change, list) and len(change) == 2:
            if format_value(change[0]) != format_value(change[1]):
                out.append(f"{name}: {format_change(change[0], change[1])}")
        else:
            out.append(f"{name}: {format_value(change)}")
    return out


def _is_name_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned plain-text table. A cell holding a list spreads over several lines, the other
    cells of that row staying on its first line."""
    lines: list[list[str]] = []
    for row in rows:
        cells = [cell if isinstance(cell, list) else [str(cell)] for cell in row]
        height = max((len(c) for c in cells), default=1) or 1
        for i in range(height):
            lines.append([c[i] if i < len(c) else "" for c in cells])
    widths = [len(h) for h in headers]
    for line in lines:
        for i, cell in enumerate(line):
            widths[i] = max(widths[i], len(cell))

    def render(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render([h.upper() for h in headers]), *(render(line) for line in lines)])
