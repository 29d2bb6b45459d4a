"""The HubSpot payload shapes this connector reads: contacts, pages, batch answers.

Only the keys we use are declared; everything else a payload carries is ignored. Shapes follow
HubSpot's contacts v3 OpenAPI file (`hubspot/crm-contacts-v3.json` in the shared specs); webhook
events are read with the SDK's bounded reader, in `_webhooks`. A payload that does not fit
becomes a `ConnectorError` naming the keys that were wrong, never their values (see `parse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from typing_extensions import TypedDict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

__all__ = [
    "BatchError",
    "BatchResponse",
    "Contact",
    "ContactPage",
    "HistoryEntry",
    "SearchPage",
    "ms_of",
    "parse",
    "parse_time",
    "time_of_ms",
]

M = TypeVar("M", bound=BaseModel)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# The text of times parsed lately -> their value. A contact's properties mostly change together
# (a form, an import, a workflow), so a page with property history holds each time several
# times: parsing it once and sharing the (immutable) datetime saves the parsing, and the pickle
# that carries a page to the engine's process writes a shared object once.
_TIMES: dict[str, datetime] = {}
_TIMES_MAX = 4096


def parse_time(value: Any) -> datetime | None:
    """A HubSpot time (ISO 8601, or epoch milliseconds as text or number) as aware UTC."""
    if type(value) is str and value[-1:] == "Z":  # the usual form, e.g. 2025-01-01T00:00:00.000Z
        known = _TIMES.get(value)
        if known is not None:
            return known
        try:
            parsed = datetime.fromisoformat(value)  # aware, tzinfo=UTC
        except ValueError:
            pass  # not ISO after all: the general path below says why
        else:
            if len(_TIMES) >= _TIMES_MAX:
                _TIMES.clear()
            _TIMES[value] = parsed
            return parsed
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        return time_of_ms(int(value))
    parsed = datetime.fromisoformat(str(value).strip())
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def ms_of(at: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exact."""
    return (at - _EPOCH) // _MS


def time_of_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return _EPOCH + ms * _MS


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


Time = Annotated[datetime, BeforeValidator(parse_time)]


class HistoryEntry(TypedDict):
    """One past value of a property (`ValueWithTimestamp`); HubSpot lists the newest first.

    A TypedDict, not a model: a page with history holds ~8 per contact, and plain dicts cost
    pydantic a third of what model instances do."""

    timestamp: Time


class Contact(_Shape):
    """A contact as list, search, batch and upsert answers carry it (`SimplePublicObject`)."""

    id: str
    properties: dict[str, str | None] = Field(default_factory=dict)
    updated_at: Time | None = Field(None, alias="updatedAt")
    archived: bool = False
    archived_at: Time | None = Field(None, alias="archivedAt")
    history: dict[str, list[HistoryEntry]] | None = Field(None, alias="propertiesWithHistory")
    new: bool | None = None  # batch/upsert only: created (True) or updated (False)
    trace_id: str | None = Field(None, alias="objectWriteTraceId")

    @property
    def modified_at(self) -> datetime | None:
        """`lastmodifieddate`, else `updatedAt`: the record's last change (aware UTC)."""
        return parse_time(self.properties.get("lastmodifieddate")) or self.updated_at

    def field_modified_at(self, names: Sequence[str]) -> dict[str, datetime]:
        """Per-property modified times from `propertiesWithHistory` (the newest entry)."""
        if not self.history:
            return {}
        return {
            name: max(entry["timestamp"] for entry in entries)
            for name, entries in self.history.items()
            if name in names and entries
        }

    def merged_ids(self) -> list[str]:
        """Ids merged into this contact (`hs_merged_object_ids`, `;`-separated)."""
        raw = self.properties.get("hs_merged_object_ids") or ""
        return [part.strip() for part in raw.split(";") if part.strip()]


class _Next(_Shape):
    after: str | None = None


class _Paging(_Shape):
    next: _Next | None = None


class ContactPage(_Shape):
    """A page of the list endpoint (`CollectionResponse…ForwardPaging`)."""

    results: list[Contact]
    paging: _Paging | None = None

    @property
    def next_after(self) -> str | None:
        return self.paging.next.after if self.paging and self.paging.next else None


class SearchPage(ContactPage):
    """A page of search results; `total` counts every match of the query."""

    total: int = 0


class BatchError(_Shape):
    """One item of a batch answer's `errors[]` (`StandardError`)."""

    status: str | None = None
    category: str = ""
    message: str = ""
    context: dict[str, list[str]] = Field(default_factory=dict)


class BatchResponse(_Shape):
    """A batch answer: 200/201, or 207 with some `errors[]`."""

    results: list[Contact] = Field(default_factory=list)
    errors: list[BatchError] = Field(default_factory=list)


def parse(model: type[M], payload: Any) -> M:
    """Validate a payload into `model`.

    Raises:
        ValueError: the payload does not fit; the message names the keys, never the values
            (pydantic's own message quotes the input, which may hold personal data).
    """
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        where = sorted({".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()})
        raise ValueError(f"unexpected {model.__name__} shape at {', '.join(where[:5])}") from None
