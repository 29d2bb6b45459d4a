"""The unit of work's reads: what it looks up, and how often it asks the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event, insert

from customer_sync.store.db import open_store
from customer_sync.store.tables import LinkRow
from customer_sync.store.uow import UnitOfWork

links_t = LinkRow.__table__
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_links_are_looked_up_once_per_batch_found_or_not(store_url):
    """The echo check and the processing both ask for the batch's links: the second ask must
    not query again, neither for links found nor for records that have none."""
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            conn.execute(insert(links_t), [{"app": "crm", "app_record_id": "1", "customer_id": "c1",
                                            "state": "active", "linked_at": NOW}])
        with store.transaction() as conn:
            selects: list[str] = []

            def count(_conn, _cursor, statement, *_args):
                if statement.lstrip().upper().startswith("SELECT"):
                    selects.append(statement)

            event.listen(conn, "before_cursor_execute", count)
            uow = UnitOfWork(conn, identity_key=b"k" * 32, now=NOW, run_id="r")
            keys = [("crm", "1"), ("crm", "2")]
            uow.prefetch_links(keys)
            assert len(selects) == 1
            assert uow.link("crm", "1")["customer_id"] == "c1"
            assert uow.link("crm", "2") is None
            uow.prefetch_links(keys)
            assert len(selects) == 1  # nothing asked again
            uow.prefetch_links([("crm", "2"), ("crm", "3")])
            assert len(selects) == 2  # only the new record is asked for
            # what the batch did still wins over a later ask
            uow.add_link("crm", "2", "c2")
            uow.drop_link("crm", "1")
            uow.prefetch_links(keys)
            assert uow.link("crm", "2")["customer_id"] == "c2"
            assert uow.link("crm", "1") is None
    finally:
        store.close()
