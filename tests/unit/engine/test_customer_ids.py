"""Customer ids: version-7 UUIDs, unique, and growing with time (they key the store's indexes)."""

from __future__ import annotations

import time
import uuid

from customer_sync.engine.process import new_customer_id


def test_ids_are_canonical_version_7_uuids():
    for _ in range(1000):
        cid = new_customer_id()
        parsed = uuid.UUID(cid)
        assert str(parsed) == cid, "the canonical lower-case 8-4-4-4-12 text"
        assert 7 == parsed.version
        assert uuid.RFC_4122 == parsed.variant


def test_ids_are_unique_and_carry_the_time_they_were_made():
    before = time.time_ns() // 1_000_000
    ids = [new_customer_id() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    stamps = [uuid.UUID(c).int >> 80 for c in ids]
    assert all(before <= ms <= after for ms in stamps)
    assert stamps == sorted(stamps), "ids made later never sort before earlier ones' milliseconds"
