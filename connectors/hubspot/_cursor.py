"""Where HubSpot listing resumes: the cursor, as JSON text the engine stores and hands back.

Two phases. A *full pass* (no cursor yet) walks the list endpoint by its `after` token; its
cursor holds that token, plus the watermark the pass will hand over to incremental listing (the
newest `lastmodifieddate` when the pass began). *Incremental* listing searches
`lastmodifieddate >= since - lookback`; its cursor holds `since` (the newest modified time
listed so far) and the ids already listed at exactly that time, which are the only ones skipped
when the search starts again from `since`. Archived contacts have their own pair of the same
kind, over `archivedAt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from customer_sync.sdk import Cursor

__all__ = ["CursorError", "ListingState", "Watermark"]

_VERSION = 1


class CursorError(ValueError):
    """The stored cursor is not one this connector wrote."""


@dataclass(frozen=True)
class Watermark:
    """The newest time listed (epoch ms) and the ids listed at exactly that time."""

    at_ms: int = 0
    ids: frozenset[str] = field(default_factory=frozenset)

    def is_listed(self, app_record_id: str, at_ms: int) -> bool:
        """True when this record, at this modified time, was listed already."""
        return at_ms == self.at_ms and app_record_id in self.ids

    def advance(self, app_record_id: str, at_ms: int) -> Watermark:
        """The watermark after listing one more record; it never moves back."""
        if at_ms > self.at_ms:
            return Watermark(at_ms, frozenset({app_record_id}))
        if at_ms == self.at_ms:
            return Watermark(at_ms, self.ids | {app_record_id})
        return self

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at_ms, "ids": sorted(self.ids, key=_id_order)}

    @classmethod
    def from_json(cls, raw: Any) -> Watermark:
        if not isinstance(raw, dict) or not isinstance(raw.get("at"), int):
            raise CursorError("watermark without a time")
        ids = raw.get("ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CursorError("watermark ids are not a list of strings")
        return cls(raw["at"], frozenset(ids))


@dataclass(frozen=True)
class ListingState:
    """Everything a cursor holds.

    Attributes:
        modified: watermark over `lastmodifieddate` (search).
        archived: watermark over `archivedAt` (the archived listing).
        full_after: while a full pass is under way, the list token to resume from ("" for the
            first page); None once incremental listing has begun.
    """

    modified: Watermark = Watermark()
    archived: Watermark = Watermark()
    full_after: str | None = None

    @property
    def is_full_pass(self) -> bool:
        return self.full_after is not None

    def encode(self) -> Cursor:
        body: dict[str, Any] = {
            "v": _VERSION,
            "modified": self.modified.to_json(),
            "archived": self.archived.to_json(),
        }
        if self.full_after is not None:
            body["full_after"] = self.full_after
        return Cursor(value=json.dumps(body, separators=(",", ":"), sort_keys=True))

    @classmethod
    def decode(cls, cursor: Cursor) -> ListingState:
        """Read a stored cursor.

        Raises:
            CursorError: not JSON, another version, or a missing part.
        """
        try:
            body = json.loads(cursor.value)
        except ValueError:
            raise CursorError("the cursor is not JSON") from None
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise CursorError(f"the cursor is not a version {_VERSION} HubSpot cursor")
        full_after = body.get("full_after")
        if full_after is not None and not isinstance(full_after, str):
            raise CursorError("full_after is not a string")
        return cls(
            modified=Watermark.from_json(body.get("modified")),
            archived=Watermark.from_json(body.get("archived")),
            full_after=full_after,
        )

    def with_changes(self, **changes: Any) -> ListingState:
        return replace(self, **changes)


def _id_order(app_record_id: str) -> tuple[int, str]:
    return (len(app_record_id), app_record_id)  # numeric ids sort numerically
