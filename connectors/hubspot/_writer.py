"""Batch writes to HubSpot: creates (as upserts by email, or by the operator's unique key
property, where possible), updates and archives, 100 inputs per call, each answer turned into
one outcome per write.

A batch HubSpot refuses whole (one bad input fails it with a 4xx) is halved and sent again until
the refused writes stand alone, so one bad record never holds back the others. Matching results
and `errors[]` back to writes is in `_writes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from customer_sync.sdk import (
    ConnectorError,
    RecordGone,
    RecordRejected,
    WriteOp,
    WriteOutcome,
    WriteReceipt,
    fingerprint,
)
from customer_sync_connectors.hubspot import _writes as w
from customer_sync_connectors.hubspot.models import BatchResponse, Contact, SearchPage, ms_of

if TYPE_CHECKING:
    import structlog

__all__ = ["ContactWriter"]


class _Post(Protocol):
    async def __call__(self, action: str, body: Any, *, idempotent: bool) -> BatchResponse: ...


class _SearchCreated(Protocol):
    async def __call__(
        self, since_ms: int | None, equal: Mapping[str, str], properties: Sequence[str], limit: int
    ) -> SearchPage: ...


class _ErrorFactory(Protocol):
    def __call__(self, cls: type[ConnectorError], message: str, **kw: Any) -> ConnectorError: ...


class ContactWriter:
    """Sends one app's batch writes.

    Args:
        post: sends a JSON body to `/crm/v3/objects/contacts/<action>` and parses the batch
            answer; `idempotent` says whether resending after an unclear failure is safe.
        archive: archives contacts by id (batch/archive).
        search_created: searches contacts created since a time with some properties equal
            (`HubSpotClient.search_created`).
        error: builds an error naming the app and connector (`Connector.error`).
        log: the connector's logger.
        batch_size: inputs per call.
        id_property: the custom contact property with unique values that keys creates without
            an email (`HubSpotSettings.id_property`); None sends them to batch/create.
    """

    def __init__(
        self,
        *,
        post: _Post,
        archive: Callable[[list[str]], Awaitable[None]],
        search_created: _SearchCreated,
        error: _ErrorFactory,
        log: structlog.stdlib.BoundLogger,
        batch_size: int,
        id_property: str | None = None,
    ) -> None:
        self._post = post
        self._id_property = id_property
        self._archive = archive
        self._search_created = search_created
        self._error = error
        self._log = log
        self._batch_size = batch_size

    async def create_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Create contacts, 100 per call.

        Writes that carry an email go to batch/upsert keyed by email: sending one again
        updates the contact it made instead of making a second one, which is what makes a
        retried create safe. Writes without an email go, with `id_property` set, to
        batch/upsert keyed by that property, holding the write's idempotency key: exactly-once
        in the same way. Without it they go to batch/create, which is not idempotent: one the
        daemon may already have sent (`uncertain_since`) is first looked for (`_made_before`),
        which is only as good as the search index is current. A conflict naming an existing
        contact ("Existing ID: N") is resolved by writing the fields to that contact (adopting
        it).
        """
        outcomes, valid = self._prepare(ops, creating=True)
        with_email = [op for op in valid if w.email_of(op) is not None]
        without = [op for op in valid if w.email_of(op) is None]
        keyed: list[WriteOp] = []
        if self._id_property is not None:
            keyed, without = without, []
        else:
            made, without = await self._made_before(without)
            outcomes += await self._adopt(made, reason="made by an unconfirmed create")
        for chunk in w.chunks_without_repeats(with_email, size=self._batch_size, key=_email_key):
            outcomes += await self._split_on_refusal(chunk, self._upsert_by_email)
        for chunk in w.chunks_without_repeats(keyed, size=self._batch_size, key=self._key_of):
            outcomes += await self._split_on_refusal(chunk, self._upsert_by_key)
        for start in range(0, len(without), self._batch_size):
            outcomes += await self._split_on_refusal(
                without[start : start + self._batch_size], self._create_chunk
            )
        return outcomes

    async def _made_before(self, ops: Sequence[WriteOp]) -> tuple[list[WriteOp], list[WriteOp]]:
        """Split creates without an email into those an earlier, unconfirmed send already made
        (turned into updates of that contact) and those still to create.

        batch/create has no key, so a create re-sent after a crash would make a second contact.
        A create sent before (`uncertain_since`) is looked for first: a contact created since
        then holding every property the create sends. Two of them (the most telling) go to
        search as EQ filters, the rest are compared here: HubSpot's limit on filters per group
        is not in CONTRACTS.md, and three stays under every figure it has published. A contact
        the search index has not taken in yet is not found, and is created again (the index
        lag is UNVERIFIED; it is seconds, and a restart after a crash usually takes longer).
        A contact found for one write is not taken for another: look-alikes in one batch each
        find their own. Each uncertain write costs one search (HubSpot allows about 4 a
        second); `id_property` makes all of this unnecessary.
        """
        made: list[WriteOp] = []
        rest: list[WriteOp] = []
        claimed: set[str] = set()
        for op in ops:
            found = await self._find_made(op, claimed) if op.uncertain_since is not None else None
            if found is None:
                rest.append(op)
            else:
                claimed.add(found)
                made.append(_update_of(op, found))
        return made, rest

    async def _find_made(self, op: WriteOp, claimed: set[str]) -> str | None:
        assert op.uncertain_since is not None
        sent = w.properties_for(op, creating=True)
        if not sent:
            return None  # nothing to recognise it by
        # A create that sets createdate itself makes a contact dated then, not now.
        since = None if "createdate" in sent else ms_of(op.uncertain_since) - _CLOCK_SKEW_MS
        telling = [name for name in _TELLING if name in sent] or sorted(sent)
        # Enough results to get past the look-alikes other writes of this batch claimed.
        limit = min(_SEARCH_LIMIT, _SEARCH_SPARE + len(claimed))
        page = await self._search_created(
            since, {k: sent[k] for k in telling[:2]}, list(sent), limit
        )
        for contact in page.results:  # oldest first
            if contact.id in claimed:
                continue
            if all(w.fold(contact.properties.get(k)) == w.fold(v) for k, v in sent.items()):
                return contact.id
        return None

    async def update_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Update contacts with batch/update, 100 per call; a missing contact is RecordGone."""
        outcomes, valid = self._prepare(ops, creating=False)
        for chunk in w.chunks_without_repeats(
            valid, size=self._batch_size, key=lambda op: op.app_record_id
        ):
            outcomes += await self._split_on_refusal(chunk, self._update_chunk)
        return outcomes

    async def delete_many(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """Archive contacts with batch/archive, 100 per call; already gone counts as done."""
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(ops), self._batch_size):
            outcomes += await self._split_on_refusal(
                list(ops[start : start + self._batch_size]), self._archive_chunk, gone_is_done=True
            )
        return outcomes

    def _prepare(
        self, ops: Sequence[WriteOp], *, creating: bool
    ) -> tuple[list[WriteOutcome], list[WriteOp]]:
        """Refuse writes whose values have no HubSpot form before anything is sent."""
        refused: list[WriteOutcome] = []
        valid: list[WriteOp] = []
        for op in ops:
            try:
                w.properties_for(op, creating=creating)
            except TypeError as exc:
                error = self._op_error(RecordRejected, str(exc), op, operation=f"contacts.{op.op}")
                refused.append(WriteOutcome(key=op.key, error=error))
            else:
                valid.append(op)
        return refused, valid

    async def _split_on_refusal(
        self,
        ops: list[WriteOp],
        send: Callable[[list[WriteOp]], Awaitable[list[WriteOutcome]]],
        *,
        gone_is_done: bool = False,
    ) -> list[WriteOutcome]:
        """Send a batch; when HubSpot refuses it whole (one bad input fails a batch with a
        4xx), send each half again until the refused writes stand alone."""
        try:
            return await send(ops)
        except (RecordRejected, RecordGone) as exc:
            if len(ops) > 1:
                mid = len(ops) // 2
                first = await self._split_on_refusal(ops[:mid], send, gone_is_done=gone_is_done)
                return first + await self._split_on_refusal(
                    ops[mid:], send, gone_is_done=gone_is_done
                )
            (op,) = ops
            if gone_is_done and isinstance(exc, RecordGone):
                return [_done(op)]
            error = self._op_error(
                type(exc), _message_of(exc), op, operation=exc.operation, status=exc.status_code
            )
            return [WriteOutcome(key=op.key, error=error)]

    async def _upsert_by_email(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        inputs = [
            {
                "id": w.email_of(op),
                "idProperty": "email",
                "properties": w.properties_for(op, creating=True),
                "objectWriteTraceId": op.key,
            }
            for op in ops
        ]
        # Idempotent by email: resending after a timeout cannot make a second contact.
        answer = await self._post("batch/upsert", {"inputs": inputs}, idempotent=True)
        return await self._settle(
            ops,
            answer,
            key_of_op=_email_key,
            key_of_result=_result_email,
            operation="contacts.create",
        )

    async def _upsert_by_key(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        """Creates without an email, as upserts keyed by `id_property` (CONTRACTS.md §1: batch
        upsert `{inputs:[{id, idProperty, properties}]}`; the spec's `idProperty` is "The name
        of a property whose values are unique for this object")."""
        name = self._id_property
        assert name is not None
        inputs = []
        for op in ops:
            key = self._id_of(op)
            # The key goes in `properties` too: that HubSpot copies `id` into the property of
            # a contact the upsert creates is UNVERIFIED, and a contact made without it would
            # not be found by the next send.
            properties = {**w.properties_for(op, creating=True), name: key}
            inputs.append(
                {
                    "id": key,
                    "idProperty": name,
                    "properties": properties,
                    "objectWriteTraceId": op.key,
                }
            )
        # Idempotent by the key: resending after a timeout updates the contact it made.
        answer = await self._post("batch/upsert", {"inputs": inputs}, idempotent=True)
        return await self._settle(
            ops,
            answer,
            key_of_op=self._key_of,
            key_of_result=lambda contact: w.fold(contact.properties.get(name)),
            operation="contacts.create",
        )

    def _id_of(self, op: WriteOp) -> str:
        """The unique key of a create without an email: the value the write itself gives
        `id_property` (a field map may fill it), else the engine's idempotency key."""
        assert self._id_property is not None
        own = w.to_property_value(op.fields.get(self._id_property)).strip()
        return own or op.idempotency_key or op.key

    def _key_of(self, op: WriteOp) -> str | None:
        return w.fold(self._id_of(op))

    async def _create_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        sent = {op.key: w.properties_for(op, creating=True) for op in ops}
        inputs = [
            {"properties": sent[op.key], "associations": [], "objectWriteTraceId": op.key}
            for op in ops
        ]
        answer = await self._post("batch/create", {"inputs": inputs}, idempotent=False)
        return await self._settle(
            ops,
            answer,
            key_of_op=lambda op: None,
            key_of_result=lambda c: None,
            operation="contacts.create",
            sent=sent,
        )

    async def _update_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        inputs = [
            {
                "id": op.app_record_id,
                "properties": w.properties_for(op, creating=False),
                "objectWriteTraceId": op.key,
            }
            for op in ops
        ]
        # Setting the same values twice leaves the same contact: safe to resend.
        answer = await self._post("batch/update", {"inputs": inputs}, idempotent=True)
        return await self._settle(
            ops,
            answer,
            key_of_op=lambda op: op.app_record_id,
            key_of_result=lambda c: c.id,
            operation="contacts.update",
            updating=True,
        )

    async def _archive_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        await self._archive([op.app_record_id for op in ops if op.app_record_id])
        return [_done(op) for op in ops]

    async def _settle(
        self,
        ops: list[WriteOp],
        answer: BatchResponse,
        *,
        key_of_op: Callable[[WriteOp], str | None],
        key_of_result: Callable[[Contact], str | None],
        operation: str,
        updating: bool = False,
        sent: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[WriteOutcome]:
        """One outcome per op from a batch answer: receipts for results, errors for the
        inputs `errors[]` names, and for creates, adoption of the contact a conflict names.
        An update whose id answers as another contact was merged away (RecordGone)."""
        matched, left, extra = w.match_results(
            ops,
            answer.results,
            key_of_op=key_of_op,
            key_of_result=key_of_result,
            sent=sent,
            pair_last=not updating,
        )
        outcomes = [
            WriteOutcome(key=k, receipt=_receipt(r, _op(ops, k))) for k, r in matched.items()
        ]
        named, unnamed = w.group_errors(answer.errors, left, key_of_op=key_of_op)
        adopt: list[WriteOp] = []
        for op in left:
            error = named.get(op.key) or (unnamed[0] if unnamed and not updating else None)
            if (
                error is not None
                and (existing := w.existing_id(error)) is not None
                and not updating
            ):
                adopt.append(_update_of(op, existing))
            elif error is not None:
                cls = RecordGone if error.category == "OBJECT_NOT_FOUND" else RecordRejected
                outcomes.append(
                    WriteOutcome(
                        key=op.key,
                        error=self._op_error(cls, w.error_text(error), op, operation=operation),
                    )
                )
            elif updating and extra:
                # The id now answers as another contact: it was merged away.
                outcomes.append(
                    WriteOutcome(
                        key=op.key,
                        error=self._op_error(
                            RecordGone, "contact was merged into another", op, operation=operation
                        ),
                    )
                )
            else:
                outcomes.append(
                    WriteOutcome(
                        key=op.key,
                        error=self._op_error(
                            ConnectorError,
                            "HubSpot answered without a result for this write",
                            op,
                            operation=operation,
                        ),
                    )
                )
        outcomes += await self._adopt(adopt, reason="existing contact with this email")
        return outcomes

    async def _adopt(self, ops: list[WriteOp], *, reason: str) -> list[WriteOutcome]:
        """Write creates to the contacts they turned out to have (ops from `_update_of`)."""
        if not ops:
            return []
        self._log.info("record.adopted", count=len(ops), reason=reason)
        return await self._split_on_refusal(ops, self._update_chunk)

    def _op_error(
        self,
        cls: type[ConnectorError],
        message: str,
        op: WriteOp,
        *,
        operation: str | None,
        status: int | None = None,
    ) -> ConnectorError:
        return self._error(
            cls, message, operation=operation, status_code=status, app_record_id=op.app_record_id
        )


# How far HubSpot's clock may run behind ours, for `createdate >= decided - skew`.
_CLOCK_SKEW_MS = 5 * 60 * 1000
# Search results asked for when looking for a create's contact: a few more than the contacts
# already claimed in the batch, at most the spec's "up to 200".
_SEARCH_SPARE = 10
_SEARCH_LIMIT = 200
# Properties that tell one contact without an email from another, most telling first.
_TELLING = ("phone", "mobilephone", "lastname", "firstname", "company", "address", "city")


def _update_of(op: WriteOp, contact_id: str) -> WriteOp:
    """A create turned into an update of the contact it is found to have already."""
    return op.model_copy(update={"op": "update", "app_record_id": contact_id})


def _email_key(op: WriteOp) -> str | None:
    return w.fold(w.email_of(op))


def _result_email(contact: Contact) -> str | None:
    return w.fold(contact.properties.get("email"))


def _op(ops: Sequence[WriteOp], key: str) -> WriteOp:
    return next(op for op in ops if op.key == key)


def _receipt(contact: Contact, op: WriteOp) -> WriteReceipt:
    return WriteReceipt(
        app_record_id=contact.id,
        modified_at=contact.modified_at,
        fingerprint=fingerprint(op.fields),
    )


def _done(op: WriteOp) -> WriteOutcome:
    assert op.app_record_id is not None
    return WriteOutcome(
        key=op.key, receipt=WriteReceipt(app_record_id=op.app_record_id, fingerprint="")
    )


def _message_of(exc: ConnectorError) -> str:
    return exc.args[0] if exc.args else type(exc).__name__
