"""The inbox: records (or bare change notifications) received from an app, not yet processed.

Polls decide most records as they read them; the inbox holds what arrives between polls
(webhooks), what must wait behind an older change of the same record, and what the
dispatcher sends back for the merge to decide (a record changed in the app since its base, a
record found in the app instead of creating one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from customer_sync.sdk.connector import AppRecord

__all__ = ["inbox_row"]


def inbox_row(
    app: str, rec: AppRecord | None, source: str, now: datetime, *, app_record_id: str | None = None,
) -> dict[str, Any]:
    """An inbox row for `rec`, or for a bare notification about `app_record_id` (no payload:
    the engine reads the record from the app before processing it).

    Args:
        source: where it came from: poll, scan, webhook, recheck, adopt.
    """
    return {
        "app": app,
        "app_record_id": rec.app_record_id if rec is not None else app_record_id,
        "payload": rec.model_dump(mode="json") if rec is not None else None,
        "deleted": bool(rec is not None and rec.deleted),
        "source": source, "received_at": now, "state": "pending", "error": None,
    }
