"""An id scan that misses a live record never deletes it: the record is read once more first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from customer_sync.engine.reconcile import scan_ids
from customer_sync.store.tables import InboxItem

from .conftest import World


async def test_a_record_the_id_scan_missed_but_that_still_reads_is_not_taken_for_gone(
    world: Callable[..., World],
) -> None:
    """A linked record left out of `list_ids` (a page shifted under a delete, a record the app's
    listing hides) but read back by id queues no delete; a record really gone still does."""
    w = world(apps=("crm", "desk"))
    kept = w.apps["crm"].put({"email": "kept@example.com", "first": "Kept"})
    gone = w.apps["crm"].put({"email": "gone@example.com", "first": "Gone"})
    await w.run()
    w.apps["crm"].remove(gone)

    async with w.engine() as engine:
        connector = engine.connectors["crm"]

        async def list_ids_missing_kept() -> AsyncIterator[list[str]]:
            yield [rid for rid in w.apps["crm"].live() if rid != kept]

        connector.list_ids = list_ids_missing_kept  # type: ignore[method-assign]
        queued = await scan_ids(engine, "crm")

    deletes = [r["app_record_id"] for r in w.rows(InboxItem) if r["app"] == "crm"]
    assert 1 == queued
    assert [gone] == deletes
