"""Webhook acceptance: verify a delivery, parse it into changes, commit them to the inbox."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import insert

from customer_sync.errors import AuthError, ConnectorError
from customer_sync.sdk.connector import AppRecord, Capability
from customer_sync.store.inbox import inbox_row
from customer_sync.store.tables import InboxItem

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine

__all__ = ["accept_webhook"]

log = structlog.get_logger("customer_sync.engine")
inbox_t = InboxItem.__table__


async def accept_webhook(
    engine: Engine, app: str, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
) -> int:
    """Verify a webhook delivery and store its changes in the inbox; returns how many.

    Raises:
        ConnectorError: the app is unknown, takes no webhooks, or the body is malformed.
        AuthError: the signature does not verify (or is stale).
    """
    connector = engine.connectors.get(app)
    if connector is None:
        raise ConnectorError("no such app is open", app=app)
    if Capability.WEBHOOKS not in connector.capabilities:
        raise ConnectorError("app does not take webhooks", app=app, connector=connector.name)
    if not connector.verify_webhook(headers, body, url=url, method=method):
        log.warning("webhook.rejected", app=app, reason="bad signature")
        raise AuthError("webhook signature rejected", app=app, connector=connector.name)
    changes = connector.parse_webhook(body)
    now = engine.clock()
    rows = []
    for ch in changes:
        rec = ch.record
        if ch.kind == "delete":
            rec = AppRecord(app_record_id=ch.app_record_id, deleted=True, modified_at=ch.occurred_at)
        rows.append(inbox_row(app, rec, "webhook", now, app_record_id=ch.app_record_id))
    with engine.store.transaction() as conn:
        if rows:
            conn.execute(insert(inbox_t), rows)
    return len(rows)
