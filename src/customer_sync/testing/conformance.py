"""The connector conformance suite: one set of checks every connector must pass.

A connector's tests subclass `ConnectorConformance` and supply two pytest fixtures:

- `connector`: an opened connector (inside `async with`), configured against the fake;
- `fake_api`: the fake's control surface, an object with the `FakeApi` methods below
  (seed records as a person would, edit, remove, inject failures, sign webhooks).

```python
from customer_sync.testing.conformance import ConnectorConformance

class TestAcmeConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self): ...
    @pytest.fixture
    async def connector(self, fake_api):
        async with AcmeConnector(AcmeSettings(...), app="acme") as c:
            yield c
```

Checks that need something a fake cannot do (say, an HTTP status from a SQL table) skip with
the reason; checks for a capability the connector does not declare skip too. Everything else
must pass. The suite needs pytest-asyncio (the tests are coroutines marked for it).

A fake may also offer `lose_answers(times)`: the app carries out the next `times` requests
that write records, but their answers never reach the connector. HTTP fakes get it by putting
a `LostAnswerTransport` in front of their app. Without it, the lost-answer check sends the
same writes again without reading the first answers, which is how a lost answer looks to the
engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol, runtime_checkable

import httpx
import pytest
import structlog

from customer_sync.errors import AuthError, ConnectorError, RecordGone, RecordRejected, TransientError
from customer_sync.sdk.connector import (
    AppRecord,
    Capability,
    ChangePage,
    Connector,
    Cursor,
    WriteOp,
    WriteOutcome,
    fingerprint,
)

__all__ = ["ConnectorConformance", "FakeApi", "LostAnswerTransport", "WebhookDelivery", "collect"]

SENTINEL_EMAIL = "sentinel.conformance.7781@example.org"


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook request as the vendor sends it."""

    headers: dict[str, str]
    body: bytes
    url: str = "https://sync.example.org/webhooks/app"
    method: str = "POST"

    def verify(self, connector: Connector, *, headers: dict[str, str] | None = None,  # type: ignore[type-arg]
               body: bytes | None = None) -> bool:
        return connector.verify_webhook(self.headers if headers is None else headers,
                                        self.body if body is None else body, url=self.url, method=self.method)


@runtime_checkable
class FakeApi(Protocol):
    """What the suite needs from a connector's fake of its vendor API."""

    #: max requests per window the fake enforces with 429s, or None when it has no limit
    rate_limit: tuple[int, float] | None
    #: how late (seconds) a record may arrive with an older modified time and still be listed
    late_arrival_s: float

    def sample_fields(self, i: int) -> dict[str, Any]:
        """Valid app fields for a new record, unique per `i` (including a unique email)."""

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        """Create a record as a person using the app would; returns its id."""

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> None:
        """Change a record as a person would."""

    def remove(self, app_record_id: str) -> None:
        """Delete (or archive) a record as a person would."""

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        """A live record's current app fields, or None when it is gone."""

    def rejected_fields(self) -> dict[str, Any] | None:
        """App fields the app refuses on create (None: it accepts anything)."""

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        """Make the next request(s) fail with `status`; False when the fake cannot."""

    def statuses_served(self) -> list[int] | None:
        """Status codes of every response served so far (None: not an HTTP fake)."""

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        """A correctly signed webhook delivery about a record (None: no webhooks)."""

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        """A delivery signed correctly but too old to be accepted (None: no timestamps)."""

    # Optional: `lose_answers(times: int) -> bool` makes the app carry out the next `times`
    # requests that write records without their answers reaching the connector (False when
    # the fake cannot). See `LostAnswerTransport`.


class LostAnswerTransport(httpx.AsyncBaseTransport):
    """An httpx transport in front of a fake API that can lose answers the way a network does.

    A request chosen by `lose` is passed to the fake, which carries it out, and then the client
    gets `error` (`httpx.ReadTimeout` by default, or `httpx.RemoteProtocolError`) instead of
    the answer: the vendor committed the write, the caller never learned it. Everything else
    goes through untouched. `after_lost` runs after each lost request (a fake whose writes
    finish in a background job runs that job there, as the vendor would).

    Args:
        inner: the transport to the fake (`httpx.ASGITransport(app=fake)`).
        error: the `httpx.TransportError` class raised instead of an answer.
        after_lost: called with each request whose answer was lost.

    Attributes:
        lost: the requests whose answers were lost, in order.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        error: type[httpx.TransportError] = httpx.ReadTimeout,
        after_lost: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self.inner = inner
        self.error = error
        self.after_lost = after_lost
        self.lost: list[httpx.Request] = []
        self._remaining: int | None = 0
        self._when: Callable[[httpx.Request], bool] = lambda request: False

    def lose(self, times: int | None, *, when: Callable[[httpx.Request], bool]) -> None:
        """Lose the answers to the next `times` requests `when` accepts (None: every one until
        `heal()`)."""
        self._remaining, self._when = times, when

    def heal(self) -> None:
        """Answer every request again."""
        self._remaining = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self._remaining == 0 or not self._when(request):
            return response
        await response.aread()
        await response.aclose()
        if self._remaining is not None:
            self._remaining -= 1
        self.lost.append(request)
        if self.after_lost is not None:
            self.after_lost(request)
        raise self.error("the answer was lost (simulated)", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def collect(connector: Connector, since: Cursor | None = None) -> tuple[list[ChangePage], list[AppRecord]]:  # type: ignore[type-arg]
    """Every page and record `list_changes(since)` yields."""
    pages: list[ChangePage] = []
    async for page in connector.list_changes(since):
        pages.append(page)
        if len(pages) > 10_000:
            raise AssertionError("listing did not terminate")
    return pages, [r for p in pages for r in p.records]


def _last_cursor(pages: list[ChangePage], since: Cursor | None = None) -> Cursor | None:
    return pages[-1].cursor if pages else since


class ConnectorConformance:
    """The checks; subclass as `Test<Vendor>Conformance` and provide `connector` and `fake_api`."""

    #: canonical fields the connector's default mapping.toml must map
    required_canonical_fields: tuple[str, ...] = ("email",)

    # -- check() -----------------------------------------------------------------------------------

    async def test_check_passes(self, connector: Connector) -> None:  # type: ignore[type-arg]
        """check() succeeds against a healthy app."""
        await connector.check()

    async def test_check_raises_auth_error_when_credentials_are_refused(self, connector, fake_api) -> None:
        """A 401 from the app becomes AuthError, the error that parks the app."""
        if not fake_api.fail_next(401, times=10):
            pytest.skip("this fake cannot refuse credentials")
        with pytest.raises(AuthError):
            await connector.check()

    # -- listing ----------------------------------------------------------------------------------

    async def test_full_listing_pages_to_the_end(self, connector, fake_api) -> None:
        """Listing from no cursor yields every record, and every page carries a cursor."""
        seeded = {fake_api.seed(fake_api.sample_fields(i)) for i in range(23)}
        pages, records = await collect(connector)
        assert all(p.cursor is not None and p.cursor.value for p in pages)
        assert seeded <= {r.app_record_id for r in records}

    async def test_incremental_listing_returns_only_newer_changes(self, connector, fake_api) -> None:
        """From a stored cursor, only records changed after it come back."""
        if Capability.INCREMENTAL not in connector.capabilities:
            pytest.skip("connector does not list incrementally")
        old = [fake_api.seed(fake_api.sample_fields(i)) for i in range(5)]
        pages, _ = await collect(connector)
        cursor = _last_cursor(pages)
        newer = fake_api.seed(fake_api.sample_fields(100))
        fake_api.edit(old[0], fake_api.sample_fields(101))
        _, records = await collect(connector, cursor)
        ids = {r.app_record_id for r in records}
        assert {newer, old[0]} <= ids
        assert not ({old[1], old[2]} & ids) or fake_api.late_arrival_s > 0  # re-reads only in the lag window

    async def test_equal_timestamps_are_never_skipped(self, connector, fake_api) -> None:
        """Records sharing one modified time across page boundaries are all listed, whichever
        page the daemon last committed before it stopped and resumed."""
        if Capability.INCREMENTAL not in connector.capabilities:
            pytest.skip("connector does not list incrementally")
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        seeded = {fake_api.seed(fake_api.sample_fields(200 + i), modified_at=at) for i in range(12)}
        pages, _ = await collect(connector)
        seen_before: set[str] = set()
        for page in pages:  # stop after this page, resume from its cursor, read to the end
            seen_before |= {r.app_record_id for r in page.records}
            _, rest = await collect(connector, page.cursor)
            missing = seeded - seen_before - {r.app_record_id for r in rest}
            assert set() == missing, "records were skipped when resuming after a page"

    async def test_late_arriving_record_is_listed(self, connector, fake_api) -> None:
        """A record committed late with a slightly older modified time is still listed."""
        if Capability.INCREMENTAL not in connector.capabilities:
            pytest.skip("connector does not list incrementally")
        if fake_api.late_arrival_s <= 0:
            pytest.skip("connector declares no lag window")
        now = datetime.now(UTC)
        fake_api.seed(fake_api.sample_fields(300), modified_at=now)
        pages, _ = await collect(connector)
        cursor = _last_cursor(pages)
        late = fake_api.seed(fake_api.sample_fields(301), modified_at=now - timedelta(seconds=fake_api.late_arrival_s / 2))
        _, records = await collect(connector, cursor)
        assert late in {r.app_record_id for r in records}

    # -- writes -----------------------------------------------------------------------------------

    async def test_create_read_update_read_delete_round_trip(self, connector, fake_api) -> None:
        """A record created, read, updated, read and deleted behaves as the receipts say."""
        fields = fake_api.sample_fields(400)
        receipt = await connector.create(fields, idempotency_key="conformance-400")
        assert fingerprint(fields) == receipt.fingerprint
        assert receipt.modified_at is not None or receipt.version is not None
        (read,) = await connector.read([receipt.app_record_id])
        changed = {k: v for k, v in fake_api.sample_fields(401).items() if k not in _identity_keys(fields)}
        assert changed, "sample_fields must vary some non-identity field"
        for key in fields:
            if key in read.fields and key not in changed:
                assert _loose(fields[key]) == _loose(read.fields[key]), key
        update = await connector.update(receipt.app_record_id, changed)
        assert fingerprint(changed) == update.fingerprint
        (after,) = await connector.read([receipt.app_record_id])
        for key, value in changed.items():
            assert _loose(value) == _loose(after.fields.get(key)), key
        if Capability.DELETE in connector.capabilities:
            await connector.delete(receipt.app_record_id)
            assert [] == await connector.read([receipt.app_record_id])

    async def test_create_is_idempotent_by_key(self, connector, fake_api) -> None:
        """Re-sending a create with the same idempotency key makes no second record."""
        fields = fake_api.sample_fields(450)
        first = await connector.create(fields, idempotency_key="conformance-450")
        again = await connector.create(fields, idempotency_key="conformance-450")
        assert first.app_record_id == again.app_record_id

    async def test_a_create_resent_after_a_crash_makes_no_second_record(self, connector, fake_api) -> None:
        """A create without an email, sent again as the engine re-sends one it was sending when
        the daemon stopped (`uncertain_since` set, same idempotency key), answers with the record
        the first send made. An app whose create honours no key must look for that record."""
        sample = fake_api.sample_fields(470)
        fields = {k: v for k, v in sample.items() if k not in _identity_keys(sample)}
        op = WriteOp(key="k", op="create", fields=fields, idempotency_key="conformance-470")
        (first,) = await connector.write_many([op])
        if isinstance(first.error, RecordRejected):
            pytest.skip("this app creates no record without an email")
        assert first.receipt is not None, first.error
        resent = op.model_copy(update={"uncertain_since": datetime(2000, 1, 1, tzinfo=UTC)})
        (again,) = await connector.write_many([resent])
        assert again.receipt is not None, again.error
        assert first.receipt.app_record_id == again.receipt.app_record_id
        assert [again.receipt.app_record_id] == await _live_ids_holding(connector, fields)

    @pytest.mark.parametrize("lost", [1, 3], ids=["lost-once", "lost-three-times"])
    async def test_creates_whose_answers_were_lost_make_one_record_each(self, connector, fake_api,
                                                                         lost: int) -> None:
        """Creates without an email that the app carried out but whose answers never arrived,
        sent again as the engine sends them (`uncertain_since` set, same keys) until answered,
        and once more after that, leave exactly one record per create, and the receipts name
        those records.

        With the fake's `lose_answers`, answers are lost on the wire, `lost` times in a row
        (the connector's own retries included). Without it, the writes are sent `lost` times
        with their answers thrown away, which is what a lost answer leaves the engine knowing."""
        ops = []
        for i in range(3):
            sample = fake_api.sample_fields(480 + 10 * lost + i)
            fields = {k: v for k, v in sample.items() if k not in _identity_keys(sample)}
            ops.append(WriteOp(key=f"k{i}", op="create", fields=fields,
                               idempotency_key=f"conformance-lost-{lost}-{i}"))
        decided = datetime.now(UTC)
        lose_answers = getattr(fake_api, "lose_answers", None)
        on_the_wire = lose_answers is not None and lose_answers(times=lost)
        outcomes: list[WriteOutcome] | None = None
        attempts = 0
        for attempt in range(lost + 3):
            again = [op.model_copy(update={"uncertain_since": decided}) for op in ops]
            sent = ops if attempt == 0 else again
            attempts += 1
            try:
                answered = await connector.write_many(sent)
            except TransientError:
                continue  # the engine keeps the rows and sends them again
            if not on_the_wire and attempt < lost:
                continue  # this answer is the one "lost": never read
            outcomes = answered
            break
        assert outcomes is not None, f"no answer after {attempts} sends"
        if all(isinstance(o.error, RecordRejected) for o in outcomes):
            pytest.skip("this app creates no record without an email")
        # Once more, as after a crash between the answer and its confirmation.
        again = {o.key: o for o in await connector.write_many(
            [op.model_copy(update={"uncertain_since": decided}) for op in ops])}
        by_key = {o.key: o for o in outcomes}
        for op in ops:
            outcome = by_key[op.key]
            assert outcome.receipt is not None, outcome.error
            assert again[op.key].receipt is not None, again[op.key].error
            assert outcome.receipt.app_record_id == again[op.key].receipt.app_record_id, op.key
            holding = await _live_ids_holding(connector, op.fields)
            assert [outcome.receipt.app_record_id] == holding, op.key
        assert len(ops) == len({o.receipt.app_record_id for o in outcomes if o.receipt})

    async def test_search_by_emails_finds_the_live_records_holding_them(self, connector, fake_api) -> None:
        """`search_by_emails` returns each live record holding one of the emails once, and no
        record deleted, holding another email, or holding none asked for."""
        if Capability.SEARCH_BY_EMAIL not in connector.capabilities:
            pytest.skip("connector does not search by email")
        samples = [fake_api.sample_fields(1100 + i) for i in range(4)]
        email_keys = sorted(_identity_keys(samples[0]))
        if not email_keys:
            pytest.skip("sample_fields carry no email")
        email_key = email_keys[0]
        wanted, also_wanted, other, gone = (fake_api.seed(s) for s in samples)
        fake_api.remove(gone)
        emails = [samples[0][email_key], samples[1][email_key], samples[3][email_key],
                  "nobody.1199@example.org", samples[0][email_key]]
        found = await connector.search_by_emails(emails)
        ids = [r.app_record_id for r in found]
        assert sorted([wanted, also_wanted]) == sorted(ids)
        for record in found:
            if email_key in record.fields:
                assert _loose(record.fields[email_key]) in {_loose(e) for e in emails}
        assert [] == await connector.search_by_emails(["nobody.1198@example.org"])

    async def test_batch_write_with_a_partial_failure(self, connector, fake_api) -> None:
        """One refused record in a batch fails alone; the others are written."""
        bad = fake_api.rejected_fields()
        if bad is None:
            pytest.skip("this app accepts any values")
        ops = [WriteOp(key=f"k{i}", op="create", fields=fake_api.sample_fields(500 + i),
                       idempotency_key=f"conformance-50{i}") for i in range(3)]
        ops.insert(1, WriteOp(key="bad", op="create", fields=bad, idempotency_key="conformance-bad"))
        outcomes = {o.key: o for o in await connector.write_many(ops)}
        assert {"k0", "k1", "k2", "bad"} == set(outcomes)
        assert isinstance(outcomes["bad"].error, RecordRejected)
        for key in ("k0", "k1", "k2"):
            assert outcomes[key].receipt is not None, outcomes[key].error
            assert fake_api.fields_of(outcomes[key].receipt.app_record_id) is not None

    async def test_update_of_a_missing_record_is_record_gone(self, connector, fake_api) -> None:
        """Updating a record that no longer exists raises RecordGone."""
        rid = fake_api.seed(fake_api.sample_fields(600))
        fake_api.remove(rid)
        changed = {k: v for k, v in fake_api.sample_fields(601).items() if k not in _identity_keys(fake_api.sample_fields(601))}
        with pytest.raises((RecordGone, RecordRejected)):
            await connector.update(rid, changed)

    # -- failures and rate limits -----------------------------------------------------------------

    async def test_rate_limited_response_is_retried_after_the_delay(self, connector, fake_api) -> None:
        """A 429 with Retry-After is waited out and retried, not surfaced."""
        rid = fake_api.seed(fake_api.sample_fields(700))
        if not fake_api.fail_next(429, retry_after_s=0.2):
            pytest.skip("this fake cannot answer 429")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        (record,) = await connector.read([rid])
        assert rid == record.app_record_id
        assert loop.time() - t0 >= 0.2  # the vendor's Retry-After was honoured

    async def test_server_error_is_retried(self, connector, fake_api) -> None:
        """A 5xx is transient: retried, and the call succeeds."""
        rid = fake_api.seed(fake_api.sample_fields(710))
        if not fake_api.fail_next(503):
            pytest.skip("this fake cannot answer 5xx")
        (record,) = await connector.read([rid])
        assert rid == record.app_record_id

    async def test_permanent_error_is_reported_not_retried(self, connector, fake_api) -> None:
        """A 4xx that will fail again is raised at once as a ConnectorError."""
        if not fake_api.fail_next(400, times=1):
            pytest.skip("this fake cannot answer 400")
        before = len(fake_api.statuses_served() or [])
        with pytest.raises(ConnectorError):
            await connector.create(fake_api.sample_fields(720), idempotency_key="conformance-720")
        served = fake_api.statuses_served() or []
        assert 1 == len(served) - before

    async def test_no_burst_past_the_documented_rate_limit(self, connector, fake_api) -> None:
        """Many concurrent calls stay under the app's limit: the fake never has to answer 429."""
        if fake_api.rate_limit is None:
            pytest.skip("this fake enforces no rate limit")
        rid = fake_api.seed(fake_api.sample_fields(800))
        calls, _window = fake_api.rate_limit
        before = len(fake_api.statuses_served() or [])
        await asyncio.gather(*(connector.read([rid]) for _ in range(calls + calls // 2)))
        served = (fake_api.statuses_served() or [])[before:]
        assert 429 not in served

    # -- webhooks ---------------------------------------------------------------------------------

    def _webhook_or_skip(self, connector, fake_api, rid):  # type: ignore[no-untyped-def]
        if Capability.WEBHOOKS not in connector.capabilities:
            pytest.skip("connector takes no webhooks")
        delivery = fake_api.webhook(rid)
        if delivery is None:
            pytest.skip("this fake sends no webhooks")
        return delivery

    async def test_webhook_with_a_good_signature_verifies_and_parses(self, connector, fake_api) -> None:
        """A correctly signed delivery verifies and parses into changes naming the record."""
        rid = fake_api.seed(fake_api.sample_fields(900))
        delivery = self._webhook_or_skip(connector, fake_api, rid)
        assert delivery.verify(connector)
        assert rid in {c.app_record_id for c in connector.parse_webhook(delivery.body)}

    async def test_webhook_with_a_bad_missing_or_stale_signature_is_rejected(self, connector, fake_api) -> None:
        """Tampered bodies, wrong or missing signatures, and stale deliveries do not verify."""
        rid = fake_api.seed(fake_api.sample_fields(910))
        delivery = self._webhook_or_skip(connector, fake_api, rid)
        headers = delivery.headers
        assert not delivery.verify(connector, body=delivery.body + b" ")
        assert not delivery.verify(connector, headers={k: (v[:-2] + "xx" if "sign" in k.lower() else v)
                                                       for k, v in headers.items()})
        assert not delivery.verify(connector, headers={k: v for k, v in headers.items() if "sign" not in k.lower()})
        stale = fake_api.stale_webhook(rid)
        if stale is not None:
            assert not stale.verify(connector)

    async def test_malformed_webhook_payload_is_a_clear_error(self, connector, fake_api) -> None:
        """A body that is not the vendor's shape raises ConnectorError, not a crash."""
        if Capability.WEBHOOKS not in connector.capabilities:
            pytest.skip("connector takes no webhooks")
        for body in (b"not json", b"{}", b"[{\"unexpected\": true}]"):
            with pytest.raises(ConnectorError):
                connector.parse_webhook(body)

    # -- deletes ----------------------------------------------------------------------------------

    async def test_deletes_are_visible_as_declared(self, connector, fake_api) -> None:
        """A removed record shows up as deleted in listing (DELETES_VISIBLE) or vanishes from the id scan (ID_SCAN)."""
        caps = connector.capabilities
        if not (Capability.DELETES_VISIBLE in caps or Capability.ID_SCAN in caps):
            pytest.skip("connector declares no way to see deletes")
        rid = fake_api.seed(fake_api.sample_fields(950))
        pages, _ = await collect(connector)
        cursor = _last_cursor(pages)
        fake_api.remove(rid)
        if Capability.DELETES_VISIBLE in caps:
            _, records = await collect(connector, cursor)
            assert any(r.app_record_id == rid and r.deleted for r in records)
        if Capability.ID_SCAN in caps:
            live = [i async for chunk in connector.list_ids() for i in chunk]
            assert rid not in live

    # -- merges -----------------------------------------------------------------------------------

    async def test_merge_leaves_the_survivor_and_is_safe_to_ask_again(self, connector, fake_api) -> None:
        """`merge` (MERGE) folds one record into another: the survivor answers, the merged one
        is gone or answers as the survivor, and asking again (a lost answer) answers the same."""
        if Capability.MERGE not in connector.capabilities:
            pytest.skip("connector does not merge records")
        keep = fake_api.seed(fake_api.sample_fields(980))
        fold = fake_api.seed(fake_api.sample_fields(981))
        survivor = await connector.merge(keep, fold)
        assert survivor == await connector.merge(keep, fold)
        records = await connector.read([survivor, fold])
        live = [r for r in records if not r.deleted and r.merged_into is None]
        assert [survivor] == [r.app_record_id for r in live]
        assert all(r.merged_into in (None, survivor) for r in records)

    # -- mapping and privacy ----------------------------------------------------------------------

    def test_default_mapping_covers_required_fields(self, connector) -> None:
        """The connector's default mapping.toml compiles and maps the required canonical fields."""
        import tomllib

        from customer_sync.mapping.compile import compile_mapping

        package = type(connector).__module__.rpartition(".")[0] or type(connector).__module__
        try:
            text = (resources.files(package) / "mapping.toml").read_text(encoding="utf-8")
        except (FileNotFoundError, ModuleNotFoundError):
            pytest.fail(f"{package} ships no mapping.toml")
        entries = tomllib.loads(text).get("fields", {})
        mapping, problems = compile_mapping(connector.app, entries, custom_fields={})
        assert [] == problems
        assert set(self.required_canonical_fields) <= set(mapping.by_canonical)

    async def test_personal_data_never_reaches_the_logs(self, connector, fake_api) -> None:
        """A sentinel email planted in the app never appears in anything the connector logs."""
        fields = {**fake_api.sample_fields(990), **_email_field(fake_api, SENTINEL_EMAIL)}
        with structlog.testing.capture_logs() as logs:
            rid = fake_api.seed(fields)
            await collect(connector)
            await connector.read([rid])
            receipt = await connector.create({**fake_api.sample_fields(991), **_email_field(fake_api, "x." + SENTINEL_EMAIL)},
                                             idempotency_key="conformance-991")
            await connector.read([receipt.app_record_id])
        assert SENTINEL_EMAIL not in repr(logs)


# Mark the coroutine checks for pytest-asyncio, whatever the plugin author's asyncio_mode.
for _name, _fn in list(vars(ConnectorConformance).items()):
    if _name.startswith("test_") and asyncio.iscoroutinefunction(_fn):
        setattr(ConnectorConformance, _name, pytest.mark.asyncio(_fn))


def _identity_keys(fields: Mapping[str, Any]) -> set[str]:
    return {k for k, v in fields.items() if isinstance(v, str) and "@" in v}


async def _live_ids_holding(connector: Connector, fields: Mapping[str, Any]) -> list[str]:  # type: ignore[type-arg]
    """Ids of the live records a full listing shows holding every one of `fields` the
    records carry (at least one must be carried)."""
    _, records = await collect(connector)
    latest: dict[str, AppRecord] = {}
    for record in records:  # a record listed twice counts once, as its last listing shows it
        latest[record.app_record_id] = record
    return sorted(rid for rid, record in latest.items()
                  if not record.deleted and _holds(record.fields, fields))


def _holds(record_fields: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    shared = [k for k in sent if k in record_fields]
    return bool(shared) and all(_loose(sent[k]) == _loose(record_fields[k]) for k in shared)


def _email_field(fake_api: Any, email: str) -> dict[str, Any]:
    sample = fake_api.sample_fields(0)
    keys = [k for k, v in sample.items() if isinstance(v, str) and "@" in v]
    return {keys[0]: email} if keys else {}


def _loose(value: Any) -> Any:
    """Compare values the way apps echo them (case of emails, numbers as text)."""
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value
