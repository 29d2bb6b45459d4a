"""Creates HubSpot carried out but whose answers were lost make one contact each.

The incident behind these tests: a batch/create of 30 contacts without an email whose answer
was lost was sent four times and made 120 contacts. Here the simulator carries each write out
and `LostAnswerTransport` then drops the answer (a read timeout, or the connection closing
before the answer), the connector raises `TransientError`, and the same writes are sent again
as the engine sends them, with `uncertain_since` set. Requests are counted by route, and the
rate limiters and retries sleep on the portal's manual clock, so nothing waits.
"""

from __future__ import annotations

import pytest

from customer_sync.sdk import TransientError, WriteOp, WriteOutcome
from customer_sync.testing.conformance import LostAnswerTransport

from .test_hubspot import START, Portal  # noqa: TID252


def uncertain(ops: list[WriteOp]) -> list[WriteOp]:
    """The same writes as the engine sends them again: possibly sent already, decided at START."""
    return [op.model_copy(update={"uncertain_since": START}) for op in ops]


def assert_one_contact_each(
    portal: Portal, ops: list[WriteOp], outcomes: list[WriteOutcome]
) -> None:
    """Exactly one live contact per create, the one its receipt names, holding its values."""
    by_key = {o.key: o for o in outcomes}
    assert len(ops) == len(portal.sim.contact_ids())
    for op in ops:
        receipt = by_key[op.key].receipt
        assert receipt is not None, by_key[op.key].error
        stored = portal.sim.get_contact(receipt.app_record_id)
        assert stored is not None and not stored["archived"]
        assert op.fields.items() <= stored["properties"].items()
    receipts = [by_key[op.key].receipt for op in ops]
    assert len(ops) == len({r.app_record_id for r in receipts if r is not None})


# --------------------------------------------------------------------------- a lost answer


async def test_look_alike_creates_each_find_their_own_contact() -> None:
    """Five creates holding the same values, whose batch/create answer was lost, are not all
    taken for the oldest look-alike when sent again: each finds a contact of its own."""
    portal = Portal()
    losing = LostAnswerTransport(portal.transport)
    losing.lose(1, when=lambda r: r.url.path.endswith("/batch/create"))
    ops = [
        WriteOp(key=f"row-{i}", op="create", fields={"firstname": "Anon"},
                idempotency_key=f"customer-{i}:crm")
        for i in range(5)
    ]
    async with portal.connector(transport=losing) as connector:
        with pytest.raises(TransientError):
            await connector.create_many(ops)
        outcomes = await connector.create_many(uncertain(ops))
    assert_one_contact_each(portal, ops, outcomes)
