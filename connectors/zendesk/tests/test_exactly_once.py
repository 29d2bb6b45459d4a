"""Creates of users without an email that Zendesk carried out but whose answers were lost make
one user each.

A user without an email is created with the engine's idempotency key as `external_id`, through
`create_or_update` (one user) or `create_or_update_many` (a background job, up to 100), both of
which match an existing user "by e-mail address or external ID" (CONTRACTS.md §2). Here the
simulator carries each request out and `LostAnswerTransport` drops the answer: of the upsert
itself, or of the job status poll. The connector either re-sends on its own (the upserts are
idempotent, so the retry policy may) or raises `TransientError`, and the same writes are then
sent again with `uncertain_since` set, as the engine sends them. The simulator and the
connector share a manual clock that the connector's sleep moves, so nothing waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.zendesk import ZendeskSimulator
from customer_sync.sdk import TransientError, WriteOp, WriteOutcome
from customer_sync.testing.conformance import LostAnswerTransport
from customer_sync_connectors.zendesk import ZendeskConnector

from .conftest import T0, FakeSleep, RecordingTransport, settings_for  # noqa: TID252

ONE = "POST /api/v2/users/create_or_update"
MANY = "POST /api/v2/users/create_or_update_many"
POLL = "GET /api/v2/job_statuses/{id}"
LOST_ERRORS = [httpx.ReadTimeout, httpx.RemoteProtocolError]


def emailless(n: int) -> list[WriteOp]:
    """`n` creates of customers with a phone and no email, keyed as the engine keys them."""
    return [
        WriteOp(
            key=f"row-{i}",
            op="create",
            fields={"first_name": f"Anon{i}", "last_name": "Walk-in", "phone": f"+1415555{i:04d}"},
            idempotency_key=f"customer-{i}:helpdesk",
        )
        for i in range(n)
    ]


def uncertain(ops: list[WriteOp]) -> list[WriteOp]:
    return [op.model_copy(update={"uncertain_since": T0}) for op in ops]


def is_upsert(request: httpx.Request) -> bool:
    return request.method == "POST" and "/create_or_update" in request.url.path


def is_poll(request: httpx.Request) -> bool:
    return request.method == "GET" and "/job_statuses/" in request.url.path


class Desk:
    """A simulated account, the transport that can lose its answers, and a connector on both."""

    def __init__(self, clock: ManualClock, fake_sleep: FakeSleep, *,
                 run_lost_jobs: bool = True, lost_as: type[httpx.TransportError] = httpx.ReadTimeout
                 ) -> None:
        self.sim = ZendeskSimulator(clock=clock)
        self.recording = RecordingTransport(self.sim)
        # A lost create_or_update_many was queued before its answer was lost; Zendesk works
        # its queue whether anyone polls or not. `run_lost_jobs=False` leaves the job queued
        # until `sim.complete_jobs()`, as when Zendesk gets to it only after the re-send's job.
        after = (lambda request: self._run_lost_job(request)) if run_lost_jobs else None
        self.losing = LostAnswerTransport(self.recording, error=lost_as, after_lost=after)
        self.connector = ZendeskConnector(
            settings_for(self.sim, job_poll_interval_s=1.0), app="helpdesk",
            transport=self.losing, clock=clock, sleep=fake_sleep)

    def _run_lost_job(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/create_or_update_many"):
            self.sim.complete_jobs()

    def routes(self) -> Counter[str]:
        """Upserts and job polls sent, by route."""
        return Counter(p for p in self.recording.paths() if p in (ONE, MANY, POLL))

    def assert_one_user_each(self, ops: list[WriteOp], outcomes: list[WriteOutcome]) -> None:
        """One user per create (the account owner besides), found by the create's key, named
        by its receipt and holding its phone."""
        assert 1 + len(ops) == self.sim.user_count
        by_key = {o.key: o for o in outcomes}
        for op in ops:
            receipt = by_key[op.key].receipt
            assert receipt is not None, by_key[op.key].error
            user_id = self.sim.find_user_id(external_id=op.idempotency_key)
            assert str(user_id) == receipt.app_record_id
            user = self.sim.get_user(int(receipt.app_record_id))
            assert user is not None and user["phone"] == op.fields["phone"]


@pytest.fixture
def make_desk(clock: ManualClock, fake_sleep: FakeSleep) -> Callable[..., Desk]:
    return lambda **options: Desk(clock, fake_sleep, **options)


# ---------------------------------------------------------------------------- one user


@pytest.mark.parametrize("lost_as", LOST_ERRORS, ids=["read-timeout", "connection-closed"])
async def test_a_single_upsert_whose_answer_was_lost_is_resent_by_the_retry_policy(
    make_desk: Callable[..., Desk], lost_as: type[httpx.TransportError]
) -> None:
    """create_or_update is idempotent by external id, so the retry policy re-sends it after a
    lost answer; the second send matches the user the first made (200, not 201)."""
    desk = make_desk(lost_as=lost_as)
    desk.losing.lose(1, when=is_upsert)
    (op,) = emailless(1)
    async with desk.connector as connector:
        receipt = await connector.create(op.fields, idempotency_key=op.idempotency_key or "")
    desk.assert_one_user_each([op], [WriteOutcome(key=op.key, receipt=receipt)])
    assert {ONE: 2} == desk.routes()
    assert [201, 200] == [r.status_code for q, r in desk.recording.exchanges
                          if q.url.path.endswith("/create_or_update")]


async def test_a_single_upsert_lost_four_sends_in_a_row_makes_one_user(
    make_desk: Callable[..., Desk],
) -> None:
    """Every answer lost, the retry policy's re-sends included, four times over (the engine
    re-sending with `uncertain_since`), then answered: one user, 4 × 6 + 1 upserts."""
    desk = make_desk()
    desk.losing.lose(None, when=is_upsert)
    ops = emailless(1)
    async with desk.connector as connector:
        for attempt in range(4):
            with pytest.raises(TransientError):
                await connector.create_many(ops if attempt == 0 else uncertain(ops))
        assert 2 == desk.sim.user_count, "the first send made the user"
        desk.losing.heal()
        outcomes = await connector.create_many(uncertain(ops))
    desk.assert_one_user_each(ops, outcomes)
    assert 4 * 6 + 1 == desk.recording.paths().count(ONE)


# ---------------------------------------------------------------------------- a bulk job


@pytest.mark.parametrize("lost_as", LOST_ERRORS, ids=["read-timeout", "connection-closed"])
@pytest.mark.parametrize("lost_job_runs", ["before", "after"],
                         ids=["lost-job-runs-first", "lost-job-runs-last"])
async def test_thirty_users_whose_bulk_upsert_answer_was_lost_are_thirty_users(
    make_desk: Callable[..., Desk], lost_job_runs: str, lost_as: type[httpx.TransportError]
) -> None:
    """create_or_update_many's answer (the job status) is lost: the job exists but its id never
    arrived. The retry policy queues the same 30 upserts again and polls that job. Whether
    Zendesk runs the lost job before the second one or after it, each user is made once and
    the other job updates it by external id: 30 users, receipts naming them."""
    desk = make_desk(run_lost_jobs=lost_job_runs == "before", lost_as=lost_as)
    desk.losing.lose(1, when=is_upsert)
    ops = emailless(30)
    async with desk.connector as connector:
        outcomes = await connector.create_many(ops)
    desk.sim.complete_jobs()  # the lost job, if Zendesk had not got to it yet
    desk.assert_one_user_each(ops, outcomes)
    assert {MANY: 2, POLL: 2} == desk.routes()


async def test_thirty_users_whose_job_poll_answers_were_lost_are_thirty_users(
    make_desk: Callable[..., Desk],
) -> None:
    """The job ran but every answer to its status polls is lost, the retry policy's re-polls
    included: TransientError. The engine sends the 30 writes again with `uncertain_since`; the
    new job updates the users the first one made."""
    desk = make_desk()
    desk.losing.lose(None, when=is_poll)
    ops = emailless(30)
    async with desk.connector as connector:
        with pytest.raises(TransientError):
            await connector.create_many(ops)
        assert 31 == desk.sim.user_count, "the first job made the users"
        desk.losing.heal()
        outcomes = await connector.create_many(uncertain(ops))
    desk.assert_one_user_each(ops, outcomes)
    assert {MANY: 2, POLL: 6 + 2} == desk.routes()


async def test_thirty_users_whose_upserts_were_lost_four_sends_in_a_row_are_thirty_users(
    make_desk: Callable[..., Desk],
) -> None:
    """Four sends of the 30 writes, each losing every answer of create_or_update_many (six
    queued jobs per send, by the retry policy), then a fifth answered: 30 users, made by the
    first job and updated by the 24 others."""
    desk = make_desk()
    desk.losing.lose(None, when=is_upsert)
    ops = emailless(30)
    async with desk.connector as connector:
        for attempt in range(4):
            with pytest.raises(TransientError):
                await connector.create_many(ops if attempt == 0 else uncertain(ops))
        desk.losing.heal()
        outcomes = await connector.create_many(uncertain(ops))
    desk.assert_one_user_each(ops, outcomes)
    assert {MANY: 4 * 6 + 1, POLL: 2} == desk.routes()
