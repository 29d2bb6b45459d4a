"""Pure helpers of HubSpot batch writes: property values as text, chunking, and matching a batch
answer's results and `errors[]` back to the writes that were sent.

HubSpot answers a batch with results in any order and, on partial success, a 207 whose
`errors[]` name the failed inputs in their `context` (by id, or by the email used as id for an
upsert). Nothing here sends a request; `_writer` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from customer_sync.sdk import WriteOp, redact_text
from customer_sync_connectors.hubspot.models import BatchError, Contact, ms_of

__all__ = [
    "chunks_without_repeats",
    "email_of",
    "error_ids",
    "error_text",
    "existing_id",
    "fold",
    "group_errors",
    "match_results",
    "properties_for",
    "to_property_value",
]

T = TypeVar("T")

_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
_MAX_MESSAGE = 200


def to_property_value(value: Any) -> str:
    """An app field value as the string HubSpot properties are (spec: `properties` values are
    strings). None clears the property (""), as the batch/update description says.

    Raises:
        TypeError: a value with no text form (a mapping, for instance).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return str(ms_of(aware))  # HubSpot datetime properties take epoch milliseconds
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        # Multiple-checkbox properties hold their options separated by ";".
        return ";".join(sorted(to_property_value(v) for v in value))
    raise TypeError(f"a {type(value).__name__} has no HubSpot property form")


def properties_for(op: WriteOp, *, creating: bool) -> dict[str, str]:
    """The `properties` object of one write. A create leaves out empty values: there is
    nothing to clear on a new contact."""
    props = {name: to_property_value(value) for name, value in op.fields.items()}
    return {k: v for k, v in props.items() if v != ""} if creating else props


def email_of(op: WriteOp) -> str | None:
    """The email a create carries, which makes it an idempotent upsert; None without one."""
    value = op.fields.get("email")
    return value.strip() if isinstance(value, str) and value.strip() else None


def chunks_without_repeats(
    items: Iterable[T], *, size: int, key: Callable[[T], Hashable]
) -> list[list[T]]:
    """Chunks of at most `size` in which no key repeats (HubSpot refuses a batch naming one
    record twice); a repeat goes to the next chunk that has room for it."""
    chunks: list[tuple[list[T], set[Hashable]]] = []
    for item in items:
        k = key(item)
        for chunk, keys in chunks:
            if len(chunk) < size and k not in keys:
                chunk.append(item)
                keys.add(k)
                break
        else:
            chunks.append(([item], {k}))
    return [chunk for chunk, _ in chunks]


def match_results(
    ops: Sequence[WriteOp],
    results: Sequence[Contact],
    *,
    key_of_op: Callable[[WriteOp], str | None],
    key_of_result: Callable[[Contact], str | None],
    sent: Mapping[str, Mapping[str, str]] | None = None,
    pair_last: bool = False,
) -> tuple[dict[str, Contact], list[WriteOp], list[Contact]]:
    """Pair results with ops: by `objectWriteTraceId` (we send the op key), else by a natural
    key (id, or email for upserts), else, for creates without a key, by the properties sent
    (`sent`: op key -> properties). With `pair_last`, one op and one result left over are a
    pair.

    Returns:
        (op key -> result, unmatched ops, unmatched results).
    """
    by_key = {op.key: op for op in ops}
    matched: dict[str, Contact] = {}
    left: list[Contact] = []
    for result in results:
        if result.trace_id in by_key and result.trace_id not in matched:
            matched[result.trace_id] = result
        else:
            left.append(result)
    natural: dict[str, list[str]] = {}
    for op in ops:
        if op.key not in matched and (k := key_of_op(op)) is not None:
            natural.setdefault(k, []).append(op.key)
    unmatched_results: list[Contact] = []
    for result in left:
        k = key_of_result(result)
        waiting = natural.get(k) if k is not None else None
        if waiting:
            matched[waiting.pop(0)] = result
        else:
            unmatched_results.append(result)
    if sent is not None:
        # Creates with no natural key: equal properties mean an equal record, so any pairing
        # of look-alikes is the right one.
        still: list[Contact] = []
        for result in unmatched_results:
            op_key = next(
                (
                    op.key
                    for op in ops
                    if op.key not in matched and _holds(result, sent.get(op.key, {}))
                ),
                None,
            )
            if op_key is None:
                still.append(result)
            else:
                matched[op_key] = result
        unmatched_results = still
    unmatched_ops = [op for op in ops if op.key not in matched]
    if pair_last and len(unmatched_ops) == 1 and len(unmatched_results) == 1:
        matched[unmatched_ops[0].key] = unmatched_results[0]
        unmatched_ops, unmatched_results = [], []
    return matched, unmatched_ops, unmatched_results


def _holds(result: Contact, props: Mapping[str, str]) -> bool:
    return all((result.properties.get(k) or "") == v for k, v in props.items())


def existing_id(error: BatchError) -> str | None:
    """The id HubSpot names in a "Contact already exists. Existing ID: N" conflict."""
    for value in error.context.get("existingId", []):
        if value.isdigit():
            return value
    found = _EXISTING_ID.search(error.message)
    return found.group(1) if found else None


def error_ids(error: BatchError) -> list[str]:
    """The inputs an error names (ids, or emails for upserts by email)."""
    return [v for k in ("ids", "id") for v in error.context.get(k, [])]


def error_text(error: BatchError) -> str:
    """A short, redacted account of a batch error: category and message, no values."""
    text = ": ".join(part for part in (error.category, error.message) if part)
    text = redact_text(text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def fold(value: str | None) -> str | None:
    """Emails compare case-insensitively."""
    return value.strip().lower() if value else None


def group_errors(
    errors: Sequence[BatchError],
    ops: Sequence[WriteOp],
    *,
    key_of_op: Callable[[WriteOp], str | None],
) -> tuple[dict[str, BatchError], list[BatchError]]:
    """Errors by the op key they name, and the errors that name no op of this batch."""
    by_natural: dict[str, str] = {}
    for op in ops:
        if (k := key_of_op(op)) is not None:
            by_natural.setdefault(k, op.key)
    named: dict[str, BatchError] = {}
    unnamed: list[BatchError] = []
    for error in errors:
        hits = [by_natural[k] for k in map(fold, error_ids(error)) if k in by_natural]
        for op_key in hits:
            named.setdefault(op_key, error)
        if not hits:
            unnamed.append(error)
    return named, unnamed
