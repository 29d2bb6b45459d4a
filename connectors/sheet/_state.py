"""The connector's own small state beside the file: the modified times the file does not hold.

A spreadsheet has no modified time per row, so the daemon keeps one: each live row's content
fingerprint and when the daemon first saw that content, and the rows that vanished. A row
whose fingerprint changed since the last read is modified at the time of that read; a row
missing from the file is deleted once it has been missing from reads `confirm_s` apart (a
file read while a program was half way through saving it in place must not delete the rows
it had not written yet). Stamps only ever grow, even when the clock steps back, so a cursor
(the last stamp and id listed) never skips a later change.

The state is JSON, written atomically (temporary file, fsync, rename). Losing it costs one
full re-listing, every row stamped "now"; the engine recognises unchanged rows by content.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from customer_sync.sdk import fingerprint

__all__ = ["SheetState"]

_VERSION = 1
_TICK = timedelta(microseconds=1)


class SheetState:
    """Row stamps and tombstones of one file.

    Attributes:
        rows: live row id -> (content fingerprint, modified time).
        missing: row id -> when it was first found missing (not yet deleted).
        gone: deleted row id -> when its deletion was seen.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, tuple[str, datetime]] = {}
        self.missing: dict[str, datetime] = {}
        self.gone: dict[str, datetime] = {}
        self.last: datetime = datetime.min.replace(tzinfo=UTC)
        self._dirty = False

    @classmethod
    def load(cls, path: Path) -> SheetState:
        """The state saved at `path`; an empty state when there is none or it is unreadable."""
        state = cls(path)
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            if blob.get("version") != _VERSION:
                return state
            state.rows = {k: (v[0], _time(v[1])) for k, v in blob["rows"].items()}
            state.missing = {k: _time(v) for k, v in blob["missing"].items()}
            state.gone = {k: _time(v) for k, v in blob["gone"].items()}
            state.last = _time(blob["last"])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return cls(path)
        return state

    def stamp(self, now: datetime) -> datetime:
        """A modified time later than every one given before (`now` unless the clock stepped
        back or ticked too coarsely)."""
        self.last = max(now, self.last + _TICK)
        self._dirty = True
        return self.last

    def observe(self, live: Mapping[str, Mapping[str, Any]], now: datetime, *,
                confirm_s: float, keep_gone_s: float) -> None:
        """Compare the file's live rows (id -> fields) with the state, stamping what changed."""
        at: datetime | None = None
        for rid, fields in live.items():
            fp = fingerprint(fields)
            known = self.rows.get(rid)
            if known is None or known[0] != fp:
                at = at or self.stamp(now)
                self.rows[rid] = (fp, at)
            if self.missing.pop(rid, None) is not None or self.gone.pop(rid, None) is not None:
                self._dirty = True
        for rid in [r for r in self.rows if r not in live]:
            first = self.missing.setdefault(rid, now)
            self._dirty = True
            if (now - first).total_seconds() >= confirm_s:
                at = at or self.stamp(now)
                del self.rows[rid], self.missing[rid]
                self.gone[rid] = at
        horizon = now - timedelta(seconds=keep_gone_s)
        for rid in [r for r, t in self.gone.items() if t < horizon]:
            del self.gone[rid]
            self._dirty = True

    def modified_at(self, rid: str) -> datetime | None:
        known = self.rows.get(rid)
        return known[1] if known else None

    def save(self) -> None:
        """Write the state when it changed (atomically)."""
        if not self._dirty:
            return
        blob = {
            "version": _VERSION,
            "last": self.last.isoformat(),
            "rows": {k: [fp, t.isoformat()] for k, (fp, t) in self.rows.items()},
            "missing": {k: t.isoformat() for k, t in self.missing.items()},
            "gone": {k: t.isoformat() for k, t in self.gone.items()},
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(blob, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
