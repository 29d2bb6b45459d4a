"""The HubSpot simulator speaks the vendor's contract: every request these tests send and every
answer the simulator gives is validated with openapi-core against HubSpot's own OpenAPI file
(`hubspot/crm-contacts-v3.json` in the shared specs folder, read in place, never copied).

Known, deliberate deviations (each also noted where the simulator implements it):

* 429 answers: the spec declares no 429 response nor the `X-HubSpot-RateLimit-*` headers; they come
  from HubSpot's usage-guidelines page (CONTRACTS.md §1 "Rate limits"). The 429 body still
  validates against the spec's `default` Error schema.
* Unset properties are left out of `properties` rather than sent as null: the spec types values
  as non-nullable strings; HubSpot sending null is UNVERIFIED (CONTRACTS.md §1 "Records").
* Search `sorts` are strings in the spec; the simulator also takes HubSpot's documented
  `{propertyName, direction}` objects, which this spec would reject, so only strings are sent here.
* `associations` are accepted and ignored (no associated objects are simulated).
* Webhook deliveries are not in any spec (CONTRACTS.md §1 "Webhooks"); the unit tests cover them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.security.exceptions import SecurityProviderError
from openapi_core.security.factories import SecurityProviderFactory
from openapi_core.security.providers import BaseProvider
from openapi_core.validation.response.exceptions import MissingData
from starlette.datastructures import QueryParams

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.hubspot import CONTACTS, HubSpotSimulator
from customer_sync.testing.specs import load_spec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SPEC_FILE = Path("hubspot") / "crm-contacts-v3.json"
BASE = "https://api.hubapi.com"  # the spec's `servers` URL, so paths resolve against it


class _BearerProvider(BaseProvider):
    """The spec declares only `oauth2`, which openapi-core cannot check (it warns instead, and
    warnings are errors here); HubSpot takes OAuth and private-app tokens as a Bearer header."""

    def __call__(self, parameters: RequestParameters) -> Any:
        scheme, _, token = str(parameters.header.get("Authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise SecurityProviderError("Missing bearer token.")
        return token


class _SecurityProviders(SecurityProviderFactory):
    PROVIDERS: ClassVar = {**SecurityProviderFactory.PROVIDERS, "oauth2": _BearerProvider}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """HubSpot's contacts v3 OpenAPI document, or a loud skip (a failure under CI) when absent."""
    return load_spec(SPEC_FILE, start=__file__)


@pytest.fixture(scope="module")
def openapi(spec: dict[str, Any]) -> OpenAPI:
    config = Config(
        security_provider_factory=_SecurityProviders(),
        # The spec's error responses are typed `*/*`, which openapi-core leaves as raw bytes; the
        # schema is a JSON object, so decode it as JSON to check it at all.
        extra_media_type_deserializers={"*/*": _json_loads},
    )
    return OpenAPI.from_dict(spec, config=config)


def _json_loads(value: bytes, **_parameters: str) -> Any:
    return json.loads(value)


class _SpecRequest:
    """An httpx request as openapi-core's request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        self.host_url = f"{request.url.scheme}://{request.url.host}"
        self.path = request.url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/octet-stream")
        self.parameters = RequestParameters(
            query=QueryParams(request.url.query.decode()), header=request.headers, cookie={}
        )


class _SpecResponse:
    """An httpx response as openapi-core's response protocol."""

    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.headers = response.headers
        self.content_type = response.headers.get("content-type", "")


class Contract:
    """Sends requests to the simulator and checks both directions against the spec."""

    def __init__(self, openapi: OpenAPI, http: httpx.AsyncClient) -> None:
        self.openapi = openapi
        self.http = http

    async def call(
        self, method: str, url: str, *, check_request: bool = True, **kwargs: Any
    ) -> httpx.Response:
        response = await self.http.request(method, url, **kwargs)
        request = _SpecRequest(response.request)
        if check_request:
            request_errors = list(self.openapi.iter_request_errors(request))
            assert [] == request_errors, f"request breaks the spec: {request_errors}"
        response_errors = [
            error
            for error in self.openapi.iter_response_errors(request, _SpecResponse(response))
            # 204s are declared with an empty `content: {}`, which openapi-core reads as "a body
            # is required"; no body is what the spec means, and what is checked below.
            if not (response.status_code == 204 and isinstance(error, MissingData))
        ]
        assert [] == response_errors, f"response breaks the spec: {response_errors}"
        if response.status_code == 204:
            assert b"" == response.content
        return response


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> HubSpotSimulator:
    return HubSpotSimulator(clock=clock, rate_limit=None, search_rate_limit=None)


@pytest.fixture
async def api(openapi: OpenAPI, sim: HubSpotSimulator) -> AsyncIterator[Contract]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE, headers={"Authorization": "Bearer t"}
    ) as http:
        yield Contract(openapi, http)


def seed(sim: HubSpotSimulator, n: int) -> list[str]:
    return [sim.add_contact({"email": f"c{i}@example.com", "firstname": f"C{i}"}) for i in range(n)]


def search_request(after: str = "0", limit: int = 2) -> dict[str, Any]:
    """A search body with every field the spec marks required."""
    return {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}
        ],
        "sorts": ["lastmodifieddate"],
        "properties": ["email", "firstname"],
        "limit": limit,
        "after": after,
    }


# --------------------------------------------------------------------------- reads


async def test_list_pages_conform(api: Contract, sim: HubSpotSimulator) -> None:
    """List pages, with properties, history and paging, match CollectionResponse…ForwardPaging."""
    seed(sim, 3)
    params = [
        ("limit", "2"),
        ("properties", "email"),
        ("properties", "firstname"),
        ("propertiesWithHistory", "firstname"),
    ]
    first = await api.call("GET", CONTACTS, params=params)
    second = await api.call(
        "GET", CONTACTS, params=[*params, ("after", first.json()["paging"]["next"]["after"])]
    )
    assert (200, 200, 1) == (first.status_code, second.status_code, len(second.json()["results"]))


async def test_list_archived_conforms(api: Contract, sim: HubSpotSimulator) -> None:
    """Archived listings carry archived/archivedAt in the documented shape."""
    sim.archive(seed(sim, 1)[0])
    response = await api.call("GET", CONTACTS, params={"archived": "true"})
    assert (200, True) == (response.status_code, response.json()["results"][0]["archived"])


@pytest.mark.parametrize("by_email", [False, True], ids=["by-id", "by-email"])
async def test_get_one_conforms(api: Contract, sim: HubSpotSimulator, by_email: bool) -> None:
    """Reading one contact, by id or by `idProperty=email`, matches SimplePublicObjectWithAssociations."""
    contact_id = seed(sim, 1)[0]
    path, params = (
        (f"{CONTACTS}/c0@example.com", {"idProperty": "email"})
        if by_email
        else (f"{CONTACTS}/{contact_id}", {})
    )
    response = await api.call("GET", path, params={**params, "propertiesWithHistory": "email"})
    assert (200, contact_id) == (response.status_code, response.json()["id"])


async def test_not_found_conforms(api: Contract) -> None:
    """A 404 body matches the spec's default Error."""
    assert 404 == (await api.call("GET", f"{CONTACTS}/123456789")).status_code


# --------------------------------------------------------------------------- single writes


async def test_create_update_archive_conform(api: Contract) -> None:
    """Create (201), update by id and by email (200) and archive (204) match their operations."""
    created = await api.call(
        "POST",
        CONTACTS,
        json={"properties": {"email": "n@example.com", "firstname": "N"}, "associations": []},
    )
    contact_id = created.json()["id"]
    updated = await api.call(
        "PATCH", f"{CONTACTS}/{contact_id}", json={"properties": {"lastname": "L"}}
    )
    by_email = await api.call(
        "PATCH",
        f"{CONTACTS}/n@example.com",
        params={"idProperty": "email"},
        json={"properties": {"city": "Oslo"}},
    )
    archived = await api.call("DELETE", f"{CONTACTS}/{contact_id}")
    assert [201, 200, 200, 204] == [r.status_code for r in (created, updated, by_email, archived)]


async def test_duplicate_create_conforms(api: Contract, sim: HubSpotSimulator) -> None:
    """The 409 for a taken email matches the default Error schema."""
    seed(sim, 1)
    response = await api.call(
        "POST", CONTACTS, json={"properties": {"email": "c0@example.com"}, "associations": []}
    )
    assert (409, "CONFLICT") == (response.status_code, response.json()["category"])


async def test_merge_and_gdpr_delete_conform(api: Contract, sim: HubSpotSimulator) -> None:
    """merge (200 SimplePublicObject) and gdpr-delete (204) match their operations."""
    primary, secondary, third = seed(sim, 3)
    merged = await api.call(
        "POST", f"{CONTACTS}/merge", json={"primaryObjectId": primary, "objectIdToMerge": secondary}
    )
    purged = await api.call("POST", f"{CONTACTS}/gdpr-delete", json={"objectId": third})
    assert (200, primary, 204) == (merged.status_code, merged.json()["id"], purged.status_code)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("partial", [False, True], ids=["all-found-200", "some-missing-207"])
async def test_batch_read_conforms(api: Contract, sim: HubSpotSimulator, partial: bool) -> None:
    """batch/read answers 200, or 207 with StandardError items when an id is missing."""
    ids = seed(sim, 2)
    inputs = [{"id": i} for i in ids] + ([{"id": "987654321"}] if partial else [])
    body = {"inputs": inputs, "properties": ["email"], "propertiesWithHistory": ["firstname"]}
    response = await api.call("POST", f"{CONTACTS}/batch/read", json=body)
    assert (207 if partial else 200) == response.status_code


@pytest.mark.parametrize("partial", [False, True], ids=["all-new-201", "duplicate-207"])
async def test_batch_create_conforms(api: Contract, sim: HubSpotSimulator, partial: bool) -> None:
    """batch/create answers 201, or 207 when one email is taken."""
    seed(sim, 1)
    emails = ["x@example.com"] + (["c0@example.com"] if partial else [])
    body = {"inputs": [{"properties": {"email": e}, "associations": []} for e in emails]}
    response = await api.call("POST", f"{CONTACTS}/batch/create", json=body)
    assert (207 if partial else 201) == response.status_code


@pytest.mark.parametrize("partial", [False, True], ids=["all-found-200", "some-missing-207"])
async def test_batch_update_conforms(api: Contract, sim: HubSpotSimulator, partial: bool) -> None:
    """batch/update answers 200, or 207 when an id is missing."""
    ids = seed(sim, 1) + (["987654321"] if partial else [])
    body = {"inputs": [{"id": i, "properties": {"city": "Oslo"}} for i in ids]}
    response = await api.call("POST", f"{CONTACTS}/batch/update", json=body)
    assert (207 if partial else 200) == response.status_code


async def test_batch_upsert_conforms(api: Contract, sim: HubSpotSimulator) -> None:
    """batch/upsert by email answers 200 with SimplePublicUpsertObject results."""
    seed(sim, 1)
    body = {
        "inputs": [
            {"id": "c0@example.com", "idProperty": "email", "properties": {"firstname": "Again"}},
            {"id": "up@example.com", "idProperty": "email", "properties": {"firstname": "Up"}},
        ]
    }
    response = await api.call("POST", f"{CONTACTS}/batch/upsert", json=body)
    assert (200, [False, True]) == (
        response.status_code,
        [r["new"] for r in response.json()["results"]],
    )


@pytest.fixture
async def keyed_api(openapi: OpenAPI, clock: ManualClock) -> AsyncIterator[Contract]:
    """A portal with a unique-value custom property, `customer_sync_id`."""
    sim = HubSpotSimulator(
        clock=clock, rate_limit=None, search_rate_limit=None, unique_properties=["customer_sync_id"]
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app),
        base_url=BASE,
        headers={"Authorization": "Bearer t"},
    ) as http:
        yield Contract(openapi, http)


async def test_upsert_and_reads_by_a_unique_property_conform(keyed_api: Contract) -> None:
    """batch/upsert, batch/read and GET/PATCH by a unique custom `idProperty` match their
    operations, created (new: true) and found again (new: false)."""
    key = {"id": "c-1", "idProperty": "customer_sync_id"}
    upsert = f"{CONTACTS}/batch/upsert"
    inputs = [{**key, "properties": {"customer_sync_id": "c-1", "firstname": "A"}}]
    first = await keyed_api.call("POST", upsert, json={"inputs": inputs})
    again = await keyed_api.call("POST", upsert, json={"inputs": inputs})
    read = await keyed_api.call(
        "POST",
        f"{CONTACTS}/batch/read",
        json={
            "inputs": [{"id": "c-1"}, {"id": "c-2"}],
            "idProperty": "customer_sync_id",
            "properties": ["firstname"],
            "propertiesWithHistory": [],
        },
    )
    params = {"idProperty": "customer_sync_id"}
    one = await keyed_api.call("GET", f"{CONTACTS}/c-1", params=params)
    patched = await keyed_api.call(
        "PATCH", f"{CONTACTS}/c-1", params=params, json={"properties": {"city": "Oslo"}}
    )
    assert [200, 200, 207, 200, 200] == [r.status_code for r in (first, again, read, one, patched)]
    assert [True, False] == [r.json()["results"][0]["new"] for r in (first, again)]


async def test_a_duplicate_unique_value_error_conforms(keyed_api: Contract) -> None:
    """The 400 for a unique value another contact holds fits the default Error schema (its
    exact text is UNVERIFIED: the spec shows no example)."""
    body = {"properties": {"customer_sync_id": "c-1"}, "associations": []}
    await keyed_api.call("POST", CONTACTS, json=body)
    response = await keyed_api.call("POST", CONTACTS, json=body)
    assert (400, "VALIDATION_ERROR") == (response.status_code, response.json()["category"])


async def test_batch_archive_conforms(api: Contract, sim: HubSpotSimulator) -> None:
    """batch/archive answers 204 with no body."""
    ids = seed(sim, 2)
    response = await api.call(
        "POST", f"{CONTACTS}/batch/archive", json={"inputs": [{"id": i} for i in ids]}
    )
    assert (204, []) == (response.status_code, sim.contact_ids())


# --------------------------------------------------------------------------- search


async def test_search_pages_conform(api: Contract, sim: HubSpotSimulator) -> None:
    """Search requests and answers (total, results, paging) match the search operation."""
    seed(sim, 3)
    first = await api.call("POST", f"{CONTACTS}/search", json=search_request())
    second = await api.call(
        "POST",
        f"{CONTACTS}/search",
        json=search_request(after=first.json()["paging"]["next"]["after"]),
    )
    assert (3, 1) == (first.json()["total"], len(second.json()["results"]))


async def test_search_past_cap_error_conforms(openapi: OpenAPI, clock: ManualClock) -> None:
    """The 400 for paging past the search cap matches the default Error schema."""
    sim = HubSpotSimulator(clock=clock, search_result_cap=2)
    seed(sim, 3)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app),
        base_url=BASE,
        headers={"Authorization": "Bearer t"},
    ) as http:
        response = await Contract(openapi, http).call(
            "POST", f"{CONTACTS}/search", json=search_request(after="2")
        )
    assert (400, "VALIDATION_ERROR") == (response.status_code, response.json()["category"])


# --------------------------------------------------------------------------- errors the spec barely covers


async def test_unauthorized_body_conforms(api: Contract) -> None:
    """The 401 body matches the default Error schema (the request itself lacks the token on purpose)."""
    response = await api.call("GET", CONTACTS, headers={"Authorization": ""}, check_request=False)
    assert (401, "INVALID_AUTHENTICATION") == (response.status_code, response.json()["category"])


async def test_rate_limited_body_conforms(api: Contract, sim: HubSpotSimulator) -> None:
    """Deviation: the spec has no 429 (CONTRACTS.md "Rate limits"); the body fits the default Error."""
    sim.fail_next(1, 429)
    response = await api.call("GET", CONTACTS)
    assert (429, "TEN_SECONDLY_ROLLING") == (response.status_code, response.json()["policyName"])


# --------------------------------------------------------------------------- the checks themselves


def test_every_simulated_route_is_a_spec_operation(
    spec: dict[str, Any], sim: HubSpotSimulator
) -> None:
    """The simulator invents no endpoint: each of its routes is an operation in the spec, but
    for the Properties API's "Read all properties" (`check --connect` lists the account's
    contact properties with it). No spec file here holds that API; its path and answer
    (`{"results": [{"name", "label", "type", "fieldType", ...}]}`) follow HubSpot's public
    reference (developers.hubspot.com, CRM API | Properties), and stay the only exception."""
    outside_specs = {("/crm/v3/properties/contacts", "get")}
    simulated = {
        (route.path, method.lower())
        for route in sim.app.routes
        for method in getattr(route, "methods", ()) or ()
        if method != "HEAD"
    }
    declared = {
        (path, method) for path, operations in spec["paths"].items() for method in operations
    }
    assert outside_specs == simulated - declared
    assert 14 == len(simulated)


async def test_validation_catches_a_broken_answer(
    openapi: OpenAPI, api: Contract, sim: HubSpotSimulator
) -> None:
    """The validator is not vacuous: a contact without its required `id` is reported."""
    contact_id = seed(sim, 1)[0]
    good = await api.call("GET", f"{CONTACTS}/{contact_id}")
    broken = {key: value for key, value in good.json().items() if key != "id"}
    response = httpx.Response(200, json=broken, request=good.request)
    errors = list(openapi.iter_response_errors(_SpecRequest(good.request), _SpecResponse(response)))
    assert 1 == len(errors)
