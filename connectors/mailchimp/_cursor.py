"""Where Mailchimp listing resumes: a watermark over members' `last_changed`, as JSON text.

Listing asks for members sorted by `last_changed` ascending, changed after a time
(`since_last_changed`). `last_changed` has whole seconds and many members share one (an import
touches thousands at once), and whether `since_last_changed` is exclusive is not documented, so
a query always starts a second before the time it means and the members seen then are told
apart by what is kept here: every member listed within `late_arrival_s` of the newest
`last_changed` listed, with that `last_changed` and a fingerprint of its fields. The
fingerprint is what tells a second edit within the same second from the one already listed.
The same window lets a member that shows up late (its `last_changed` older than members already
listed) still be listed, once.

Two watermarks: live members, and archived ones (how archives are seen).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from customer_sync.sdk import Cursor

__all__ = ["CursorError", "ListingState", "Watermark"]

_VERSION = 1


class CursorError(ValueError):
    """The stored cursor is not one this connector wrote."""


@dataclass
class Watermark:
    """The newest `last_changed` listed (epoch seconds) and the recent members listed:
    id -> (last_changed, fingerprint of the fields listed)."""

    at: int | None = None
    recent: dict[str, tuple[int, str]] = field(default_factory=dict)

    def since(self, late_arrival_s: float) -> int | None:
        """Where a query resumes: the window before `at`, and a second more."""
        return None if self.at is None else self.at - int(late_arrival_s) - 1

    def is_new(self, member_id: str, changed_at: int, digest: str, late_arrival_s: float) -> bool:
        """True unless this member, at this `last_changed` and with these fields, was listed
        already (or is older than the window, which only a query asked too early returns)."""
        if self.at is None:
            return True
        if changed_at < self.at - late_arrival_s:
            return False
        return self.recent.get(member_id) != (changed_at, digest)

    def advance(self, member_id: str, changed_at: int, digest: str) -> None:
        self.recent[member_id] = (changed_at, digest)
        if self.at is None or changed_at > self.at:
            self.at = changed_at

    def prune(self, late_arrival_s: float) -> None:
        if self.at is not None:
            floor = self.at - late_arrival_s
            self.recent = {k: v for k, v in self.recent.items() if v[0] >= floor}

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "recent": {k: list(v) for k, v in sorted(self.recent.items())}}

    @classmethod
    def from_json(cls, raw: Any) -> Watermark:
        if not isinstance(raw, dict):
            raise CursorError("watermark is not an object")
        at, recent = raw.get("at"), raw.get("recent", {})
        if at is not None and not isinstance(at, int):
            raise CursorError("watermark time is not an integer")
        if not isinstance(recent, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and len(v) == 2
                and isinstance(v[0], int) and isinstance(v[1], str) for k, v in recent.items()):
            raise CursorError("watermark ids are not a map of id to [time, fingerprint]")
        return cls(at, {k: (v[0], v[1]) for k, v in recent.items()})


@dataclass
class ListingState:
    """Everything a cursor holds."""

    live: Watermark = field(default_factory=Watermark)
    archived: Watermark = field(default_factory=Watermark)

    def encode(self) -> Cursor:
        body = {"v": _VERSION, "live": self.live.to_json(), "archived": self.archived.to_json()}
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
            raise CursorError(f"the cursor is not a version {_VERSION} Mailchimp cursor")
        return cls(Watermark.from_json(body.get("live")), Watermark.from_json(body.get("archived")))
