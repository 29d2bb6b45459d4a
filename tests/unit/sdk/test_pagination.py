"""Paginators stop at the last page and refuse to loop on a repeated token."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
import respx

from customer_sync.errors import ConnectorError
from customer_sync.sdk.http import ApiClient
from customer_sync.sdk.pagination import CursorPaginator, LinkPaginator, OffsetPaginator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import tenacity

BASE_URL = "https://api.example.test"
CONTACTS = "/crm/v3/objects/contacts"
MEMBERS = "/lists/1/members"


@pytest.fixture
async def client(fast_retry: tenacity.AsyncRetrying) -> AsyncIterator[ApiClient]:
    async with ApiClient(app="crm", connector="acme", base_url=BASE_URL, retry=fast_retry) as api:
        yield api


@pytest.fixture
def api_mock() -> respx.MockRouter:
    with respx.mock(base_url=BASE_URL, assert_all_mocked=True) as mock:
        yield mock


async def _collect(pages: AsyncIterator[httpx.Response]) -> list[dict]:
    return [page.json() async for page in pages]


def _hubspot_page(ids: list[str], after: str | None) -> httpx.Response:
    body: dict = {"results": [{"id": i} for i in ids]}
    if after is not None:
        body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
    return httpx.Response(200, json=body)


async def test_cursor_paginator_follows_tokens_to_the_last_page(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """HubSpot-style paging sends each page's token back and stops at a page without one."""
    route = api_mock.get("/crm/v3/objects/contacts").mock(
        side_effect=[
            _hubspot_page(["1"], "a1"),
            _hubspot_page(["2"], "a2"),
            _hubspot_page(["3"], None),
        ]
    )
    paginator = CursorPaginator("paging.next.after", "after")

    pages = await _collect(
        paginator.pages(client, "GET", CONTACTS, operation="contacts.list", params={"limit": 1})
    )

    assert [["1"], ["2"], ["3"]] == [[r["id"] for r in p["results"]] for p in pages]
    assert [None, "a1", "a2"] == [c.request.url.params.get("after") for c in route.calls]
    assert all("1" == c.request.url.params["limit"] for c in route.calls)


async def test_cursor_paginator_stops_on_a_repeated_token(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A vendor handing back a token it already gave stops paging with a ConnectorError."""
    api_mock.get("/crm/v3/objects/contacts").mock(
        side_effect=[
            _hubspot_page(["1"], "a1"),
            _hubspot_page(["2"], "a2"),
            _hubspot_page(["3"], "a1"),
        ]
    )
    paginator = CursorPaginator("paging.next.after", "after")
    seen = []

    with pytest.raises(ConnectorError, match="repeated a cursor token"):
        async for page in paginator.pages(client, "GET", CONTACTS, operation="contacts.list"):
            seen.append(page)

    assert 3 == len(seen)


async def test_cursor_paginator_sends_the_token_in_a_json_body(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """HubSpot search takes the token as `after` in the POST body, next to the filters."""
    route = api_mock.post("/crm/v3/objects/contacts/search").mock(
        side_effect=[_hubspot_page(["1"], "a1"), _hubspot_page(["2"], None)]
    )
    paginator = CursorPaginator("paging.next.after", "after", send_in="json")
    query = {"filterGroups": [], "limit": 1}

    await _collect(
        paginator.pages(
            client, "POST", f"{CONTACTS}/search", operation="contacts.search", json=query
        )
    )

    assert [query, {**query, "after": "a1"}] == [json.loads(c.request.content) for c in route.calls]


async def test_cursor_paginator_stops_at_end_of_stream(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Zendesk's last export page still carries a cursor; end_of_stream stops paging."""
    api_mock.get("/api/v2/incremental/users/cursor").mock(
        side_effect=[
            httpx.Response(200, json={"users": [], "after_cursor": "c1", "end_of_stream": False}),
            httpx.Response(200, json={"users": [], "after_cursor": "c2", "end_of_stream": True}),
        ]
    )
    paginator = CursorPaginator("after_cursor", "cursor", end_path="end_of_stream")

    pages = await _collect(
        paginator.pages(client, "GET", "/api/v2/incremental/users/cursor", operation="users.list")
    )

    assert 2 == len(pages)


async def test_cursor_paginator_stops_when_has_more_is_false(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A page whose has_more flag is false is the last one, whatever cursor it carries."""
    api_mock.get("/api/v2/users").mock(
        side_effect=[
            httpx.Response(200, json={"meta": {"has_more": True, "after_cursor": "x"}}),
            httpx.Response(200, json={"meta": {"has_more": False, "after_cursor": "y"}}),
        ]
    )
    paginator = CursorPaginator("meta.after_cursor", "page[after]", has_more_path="meta.has_more")

    pages = await _collect(paginator.pages(client, "GET", "/api/v2/users", operation="users.list"))

    assert 2 == len(pages)


async def test_paginator_rejects_a_page_that_is_not_a_json_object(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A page that is not a JSON object stops paging with a ConnectorError."""
    api_mock.get("/x").respond(200, text="<html>maintenance</html>")

    with pytest.raises(ConnectorError, match="not a JSON object"):
        await _collect(
            CursorPaginator("next", "cursor").pages(client, "GET", "/x", operation="x.list")
        )


async def test_link_paginator_follows_next_links_to_the_last_page(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Zendesk-style next_page URLs are followed until one is null; params go to page one only."""
    route = api_mock.get("/api/v2/users.json").mock(
        side_effect=[
            httpx.Response(
                200, json={"users": [1], "next_page": f"{BASE_URL}/api/v2/users.json?page=2"}
            ),
            httpx.Response(200, json={"users": [2], "next_page": None}),
        ]
    )
    paginator = LinkPaginator("next_page")

    pages = await _collect(
        paginator.pages(
            client, "GET", "/api/v2/users.json", operation="users.list", params={"per_page": 1}
        )
    )

    assert [[1], [2]] == [p["users"] for p in pages]
    assert ["per_page=1", "page=2"] == [c.request.url.query.decode() for c in route.calls]


async def test_link_paginator_reads_the_link_header(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """With next_path=None the RFC 8288 Link header's rel="next" gives the next page."""
    api_mock.get("/items").mock(
        side_effect=[
            httpx.Response(200, json={"n": 1}, headers={"Link": '</items?cursor=b>; rel="next"'}),
            httpx.Response(200, json={"n": 2}),
        ]
    )

    paginator = LinkPaginator(next_path=None)

    pages = await _collect(paginator.pages(client, "GET", "/items", operation="items.list"))

    assert [{"n": 1}, {"n": 2}] == pages


async def test_link_paginator_stops_on_a_repeated_link(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A next link pointing back to a page already read stops paging with a ConnectorError."""
    api_mock.get("/items").mock(
        side_effect=[
            httpx.Response(200, json={"links": {"next": "/items?page=2"}}),
            httpx.Response(200, json={"links": {"next": "/items?page=2"}}),
        ]
    )

    with pytest.raises(ConnectorError, match="repeated a next-page link"):
        await _collect(LinkPaginator().pages(client, "GET", "/items", operation="items.list"))


async def test_link_paginator_refuses_a_link_to_another_origin(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A next link on another host is not followed, so credentials stay with the app."""
    next_url = "https://evil.example.test/items?page=2"
    api_mock.get("/items").respond(200, json={"links": {"next": next_url}})

    with pytest.raises(ConnectorError, match="another origin"):
        await _collect(LinkPaginator().pages(client, "GET", "/items", operation="items.list"))


def _members(start: int, count: int, total: int | None = None) -> httpx.Response:
    body: dict = {"members": [{"id": str(i)} for i in range(start, start + count)]}
    if total is not None:
        body["total_items"] = total
    return httpx.Response(200, json=body)


async def test_offset_paginator_stops_at_a_short_page(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """Offsets advance by the records read, and a page shorter than the limit is the last."""
    route = api_mock.get(MEMBERS).mock(side_effect=[_members(0, 2), _members(2, 2), _members(4, 1)])
    paginator = OffsetPaginator("members", limit=2, limit_param="count")

    pages = await _collect(paginator.pages(client, "GET", MEMBERS, operation="members.list"))

    assert 3 == len(pages)
    assert [("0", "2"), ("2", "2"), ("4", "2")] == [
        (c.request.url.params["offset"], c.request.url.params["count"]) for c in route.calls
    ]


async def test_offset_paginator_stops_at_the_reported_total(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """A full page that reaches the reported total is the last; no empty page is fetched."""
    api_mock.get(MEMBERS).mock(side_effect=[_members(0, 2, total=4), _members(2, 2, total=4)])
    paginator = OffsetPaginator("members", limit=2, limit_param="count", total_path="total_items")

    pages = await _collect(paginator.pages(client, "GET", MEMBERS, operation="members.list"))

    assert 2 == len(pages)


async def test_offset_paginator_stops_on_a_repeated_page(
    client: ApiClient, api_mock: respx.MockRouter
) -> None:
    """An API that ignores the offset and repeats a page stops paging with a ConnectorError."""
    api_mock.get(MEMBERS).mock(side_effect=[_members(0, 2), _members(0, 2)])
    paginator = OffsetPaginator("members", limit=2)

    with pytest.raises(ConnectorError, match="repeated a page"):
        await _collect(paginator.pages(client, "GET", MEMBERS, operation="members.list"))
