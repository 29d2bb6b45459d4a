"""One duration syntax for every place a duration is configured.

A duration is a number of seconds (`15`, `0.5`) or text: a number and one unit of `s`, `m`, `h`,
`d` or `w` (`"15s"`, `"10m"`, `"2h"`, `"180d"`, `"2w"`, `"1.5h"`). Keys ending in `_s`
(`poll_interval_s`, a connector's `timeout_s`) take either, through the `Seconds` type; a
filter's `newer_than` / `older_than` takes the text form, which says its unit.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["DURATION", "Seconds", "parse_duration", "to_seconds"]

#: A number and one unit; spaces around either are allowed.
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """"180d" -> 180 days. Units: s, m, h, d, w.

    Raises:
        ValueError: not a duration.
    """
    m = DURATION.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not a duration like '180d' or '12h': {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def to_seconds(value: Any) -> Any:
    """A duration in seconds from text with a unit ("15s", "10m"); anything else (a number,
    numeric text from an environment variable, None) as it is, for the field's own type to
    check.

    Raises:
        ValueError: text that is neither a number nor a duration.
    """
    if not isinstance(value, str):
        return value
    if DURATION.match(value):
        return parse_duration(value).total_seconds()
    try:
        float(value)
    except ValueError:
        raise ValueError(
            f'not a duration: write seconds (15) or a number with a unit: "15s", "10m", "2h", '
            f'"180d", "2w"; got {value!r}'
        ) from None
    return value


#: Seconds, written as a number or as a duration with a unit (see the module docstring).
Seconds = Annotated[float, BeforeValidator(to_seconds)]
