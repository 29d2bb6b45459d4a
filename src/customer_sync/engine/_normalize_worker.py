"""What the normalizing worker process runs (see `engine.normalizing`).

Kept apart, with nothing imported at module level beyond the standard library, so that a worker
starts quickly: it loads only the canonical schema and the field maps it is sent, not the
engine, the store or the logging stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_sync.mapping.compile import AppMapping

__all__ = ["Wire", "normalize_fields", "warm_up"]

# what crosses the process boundary: per record, the canonical values and the field errors as
# (field, message) pairs, since exceptions pickle poorly
Wire = list[tuple[dict[str, Any], list[tuple[str | None, str]]]]


def normalize_fields(mapping: AppMapping, records: Sequence[Mapping[str, Any]]) -> Wire:
    """Canonical values and field errors for each record's app fields."""
    out: Wire = []
    for fields in records:
        values, errors = mapping.to_canonical(fields)
        out.append((values, [(e.field, str(e)) for e in errors]))
    return out


def warm_up() -> bool:
    """Load what normalizing needs (email-validator, phonenumbers and its metadata), so the
    first real page does not pay for it."""
    from customer_sync.canonical import FIELDS, normalize_value
    from customer_sync.mapping import compile as _compile  # noqa: F401  (field maps unpickle into it)

    normalize_value(FIELDS["email"], "warm.up@example.com")
    normalize_value(FIELDS["phone"], "+14155552671")
    return True
