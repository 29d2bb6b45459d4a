"""Which outbox rows dispatch marks as possibly sent already (`WriteOp.uncertain_since`)."""

from __future__ import annotations

from datetime import UTC, datetime

from customer_sync.engine.dispatch import _uncertain_since

DECIDED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_row_claimed_for_the_first_time_is_certain() -> None:
    """A pending row never handed to the app cannot have reached it."""
    assert _uncertain_since({"state": "pending", "created_at": DECIDED, "sent_at": None}) is None


def test_a_row_whose_send_had_no_clear_answer_is_uncertain() -> None:
    """A create sent before without a clear answer (a timeout, a dropped connection) may have
    been made: it stays uncertain, even after it went back to pending for its backoff."""
    row = {"state": "pending", "created_at": DECIDED, "sent_at": datetime(2026, 3, 1, 12, 5)}
    assert DECIDED == _uncertain_since(row)


def test_a_row_left_sending_is_uncertain_since_it_was_decided() -> None:
    """A row found in `sending` was claimed before the daemon stopped: its write may have
    landed, not before it was decided. SQLite gives the UTC time back naive."""
    assert DECIDED == _uncertain_since({"state": "sending", "created_at": DECIDED, "sent_at": None})
    naive = DECIDED.replace(tzinfo=None)
    assert DECIDED == _uncertain_since({"state": "sending", "created_at": naive, "sent_at": None})
