"""The Mailchimp simulator against the Marketing API's OpenAPI description (3.0.55).

Every request the tests send and every response the simulator gives is validated with
openapi-core against the vendor file read from the shared specs folder (never copied into this
repository); a missing file skips with the reason, and fails under CI. The file is Mailchimp's
spec converted by openapi-generator (see specs/README.md), which left two marks that the tests
work around, each asserted narrowly:

1. Member bodies: the generator typed a member (`GET`/`PUT`/`PATCH` of one member, and each
   item of `members`) as `List_Members_2`, the *collection* schema, which checks nearly nothing.
   Every member the simulator renders is therefore also validated against `List_Members`, the
   member schema, strictly.
2. An archived member reads as `status: "archived"`, a value of the list filter's enum but not
   of the member schema's; only that one value is tolerated.

3. Merge field values: the generator typed each value of `merge_fields` as an object, where
   Mailchimp's own documentation and every real answer carry text (`"FNAME": "Ann"`), and an
   object only for an address. The documents are validated with that one `type` removed from
   the four schemas that carry it (`test_merge_field_values_are_the_one_patched_type`).

Error answers are `default` responses with `Problem_Detail_Document` in
`application/problem+json`, validated as JSON. 204 answers have no body: the request is
validated and the status must be the declared one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_schema_validator import OAS30Validator

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.mailchimp import MailchimpSimulator, subscriber_hash
from customer_sync.testing.specs import OpenApiRequest, OpenApiResponse, load_spec

SPEC_FILE = Path("mailchimp") / "marketing-3.0.55.openapi-generator-normalized.yaml"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LIST = "a6b5da1054"
MEMBERS = f"/lists/{LIST}/members"


@pytest.fixture(scope="session")
def oas_dict() -> dict[str, Any]:
    """The Mailchimp OAS as a dict, loaded once per session (1.6 MB of YAML)."""
    return load_spec(SPEC_FILE, start=__file__)


MERGE_SCHEMAS = ("List_Members", "Add_List_Members_1", "Add_List_Members_2", "Add_List_Members_3")


def _patched(oas_dict: dict[str, Any]) -> dict[str, Any]:
    """Deviation 3: the spec with merge field values untyped, and nothing else changed."""
    patched = copy.deepcopy(oas_dict)
    for name in MERGE_SCHEMAS:
        values = patched["components"]["schemas"][name]["properties"]["merge_fields"][
            "additionalProperties"]
        assert "object" == values.pop("type")
    return patched


@pytest.fixture(scope="session")
def patched_dict(oas_dict: dict[str, Any]) -> dict[str, Any]:
    return _patched(oas_dict)


@pytest.fixture(scope="session")
def oas(patched_dict: dict[str, Any]) -> OpenAPI:
    # The OAS server is https://server.api.mailchimp.com/3.0; requests go to that host.
    config = Config(spec_validator_cls=None,
                    extra_media_type_deserializers={"application/problem+json": json.loads})
    return OpenAPI.from_dict(patched_dict, config=config)


def _member_validator(spec: dict[str, Any]) -> OAS30Validator:
    schema = {**spec["components"]["schemas"]["List_Members"], "components": spec["components"]}
    return OAS30Validator(schema)


@pytest.fixture(scope="session")
def member_schema(patched_dict: dict[str, Any]) -> OAS30Validator:
    """Deviation 1: the member schema, with its references resolvable."""
    return _member_validator(patched_dict)


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, sim: MailchimpSimulator) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        return response


def assert_conforms(oas: OpenAPI, response: httpx.Response, body: Any = None) -> None:
    """Both halves of the exchange validate against the OAS, with no tolerance."""
    request = OpenApiRequest(response.request)
    assert [] == [repr(e) for e in oas.iter_request_errors(request)]
    if response.status_code == 204:
        assert b"" == response.content
        return
    errors = oas.iter_response_errors(request, OpenApiResponse(response, body))
    assert [] == [f"{e!r}: {e.__cause__!r}"[:2000] for e in errors]


def assert_members_conform(validator: OAS30Validator, members: list[dict[str, Any]]) -> None:
    """Deviation 1: each member against `List_Members` itself."""
    assert members
    for member in members:
        assert [] == [e.message[:300] for e in validator.iter_errors(member)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def sim(clock: ManualClock) -> MailchimpSimulator:
    sim = MailchimpSimulator(clock=clock, list_id=LIST)
    sim.base_url = "https://server.api.mailchimp.com/3.0"
    sim.add_member("ann@example.com", merge_fields={
        "FNAME": "Ann", "LNAME": "Lee", "PHONE": "۰۹۱۲ ۱۲۳ ۴۵۶۷", "BIRTHDAY": "03/21",
        "ADDRESS": {"addr1": "Valiasr 12", "city": "Tehran", "state": "Tehran", "zip": "1234567890",
                    "country": "IR"}}, tags=["vip"])
    sim.add_member("bob@example.com", status="pending")
    clock.advance(120)
    return sim


@pytest.fixture
async def api(sim: MailchimpSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Recorder(sim), base_url=sim.base_url,
                                 auth=("anystring", sim.api_key)) as c:
        yield c


ANN = subscriber_hash("ann@example.com")


# ---------------------------------------------------------------------------- reads


async def test_ping_conforms(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """getPing: the health status."""
    response = await api.get("/ping")

    assert {"health_status": "Everything's Chimpy!"} == response.json()
    assert_conforms(oas, response)


async def test_merge_fields_conform(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """getListsIdMergeFields, paged as the connector pages it."""
    first = await api.get(MEMBERS.replace("/members", "/merge-fields"), params={"count": 2, "offset": 0})
    rest = await api.get(MEMBERS.replace("/members", "/merge-fields"), params={"count": 1000, "offset": 2})

    assert 2 == len(first.json()["merge_fields"])
    assert first.json()["total_items"] == 2 + len(rest.json()["merge_fields"])
    assert_conforms(oas, first)
    assert_conforms(oas, rest)


async def test_incremental_member_listing_conforms(oas: OpenAPI, member_schema: OAS30Validator,
                                                   api: httpx.AsyncClient) -> None:
    """getListsIdMembers with the parameters the connector sends, and the id-only form."""
    listed = await api.get(MEMBERS, params={
        "count": 1000, "offset": 0, "sort_field": "last_changed", "sort_dir": "ASC",
        "since_last_changed": "2026-03-01T11:59:59+00:00"})
    archived = await api.get(MEMBERS, params={"status": "archived", "count": 1,
                                              "sort_field": "last_changed", "sort_dir": "DESC"})

    assert (2, 0) == (listed.json()["total_items"], archived.json()["total_items"])
    assert_conforms(oas, listed)
    assert_conforms(oas, archived)
    assert_members_conform(member_schema, listed.json()["members"])


async def test_get_member_conforms_by_hash_and_by_address(
        oas: OpenAPI, member_schema: OAS30Validator, api: httpx.AsyncClient) -> None:
    """getListsIdMembersId: "also accepts a list member's email address"."""
    by_hash = await api.get(f"{MEMBERS}/{ANN}")
    by_email = await api.get(f"{MEMBERS}/ann@example.com")

    assert by_hash.json() == by_email.json()
    assert_conforms(oas, by_hash)
    assert_members_conform(member_schema, [by_hash.json()])


async def test_search_members_conforms(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """getSearchMembers by address."""
    response = await api.get("/search-members", params={"query": "ann@example.com",
                                                        "list_id": LIST})

    assert 1 == response.json()["exact_matches"]["total_items"]
    assert_conforms(oas, response)


# ---------------------------------------------------------------------------- writes


async def test_member_writes_conform(oas: OpenAPI, member_schema: OAS30Validator,
                                     api: httpx.AsyncClient) -> None:
    """postListsIdMembers, putListsIdMembersId (both outcomes), patchListsIdMembersId."""
    created = await api.post(MEMBERS, json={
        "email_address": "cy@example.com", "status": "subscribed", "tags": ["new"],
        "merge_fields": {"FNAME": "Cy"}})
    upserted = await api.put(f"{MEMBERS}/{subscriber_hash('di@example.com')}", json={
        "email_address": "di@example.com", "status_if_new": "transactional",
        "merge_fields": {"LNAME": "Dee"}})
    updated = await api.put(f"{MEMBERS}/{ANN}", json={
        "email_address": "ann@example.com", "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "Ann-Marie"}})
    patched = await api.patch(f"{MEMBERS}/{ANN}", json={"status": "unsubscribed",
                                                        "merge_fields": {"PHONE": "+989121234567"}})

    for response in (created, upserted, updated, patched):
        assert 200 == response.status_code, response.text
        assert_conforms(oas, response)
        assert_members_conform(member_schema, [response.json()])
    assert "unsubscribed" == patched.json()["status"]


async def test_tags_archive_and_permanent_delete_conform(oas: OpenAPI, api: httpx.AsyncClient,
                                                        sim: MailchimpSimulator) -> None:
    """postListMemberTags, deleteListsIdMembersId, postListsIdMembersHashActionsDeletePermanent:
    204 with no body."""
    bob = subscriber_hash("bob@example.com")
    tags = await api.post(f"{MEMBERS}/{ANN}/tags", json={"tags": [
        {"name": "vip", "status": "inactive"}, {"name": "fa", "status": "active"}]})
    archived = await api.delete(f"{MEMBERS}/{bob}")
    erased = await api.post(f"{MEMBERS}/{ANN}/actions/delete-permanent")

    assert [204, 204, 204] == [r.status_code for r in (tags, archived, erased)]
    for response in (tags, archived, erased):
        assert_conforms(oas, response)
    assert sim.is_forgotten("ann@example.com")


async def test_an_archived_member_differs_only_in_its_status(
        oas: OpenAPI, member_schema: OAS30Validator, api: httpx.AsyncClient) -> None:
    """Deviation 2: an archived member reads as status "archived"; with any other status the
    body conforms."""
    bob = subscriber_hash("bob@example.com")
    await api.delete(f"{MEMBERS}/{bob}")
    response = await api.get(f"{MEMBERS}/{bob}")
    body = response.json()
    fixed = {**copy.deepcopy(body), "status": "unsubscribed"}

    assert "archived" == body["status"]
    assert [] != list(member_schema.iter_errors(body))
    assert_members_conform(member_schema, [fixed])
    assert_conforms(oas, response)


async def test_batches_conform_from_pending_to_finished(oas: OpenAPI, api: httpx.AsyncClient
                                                        ) -> None:
    """postBatches and getBatchesId; the results archive holds one result per operation, its
    `response` a JSON string."""
    started = await api.post("/batches", json={"operations": [
        {"method": "PUT", "path": f"{MEMBERS}/{subscriber_hash('eve@example.com')}",
         "operation_id": "0", "body": json.dumps({"email_address": "eve@example.com",
                                                  "status_if_new": "subscribed"})},
        {"method": "PATCH", "path": f"{MEMBERS}/{ANN}", "operation_id": "1",
         "body": json.dumps({"status": "subscribed", "merge_fields": {"BIRTHDAY": "1999-03-21"}})},
    ]})
    polls = [await api.get(f"/batches/{started.json()['id']}") for _ in range(2)]
    finished = polls[-1].json()

    assert ["pending", "started", "finished"] == [started.json()["status"],
                                                  *(p.json()["status"] for p in polls)]
    assert (2, 1) == (finished["total_operations"], finished["errored_operations"])
    for response in (started, *polls):
        assert_conforms(oas, response)
    archive = await api.get(finished["response_body_url"])
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.content))) as tar:
        rows = [r for m in tar.getmembers() if m.isfile()
                for r in json.loads(tar.extractfile(m).read())]  # type: ignore[union-attr]
    assert {"0": 200, "1": 400} == {r["operation_id"]: r["status_code"] for r in rows}
    assert "Invalid Resource" == json.loads(
        next(r for r in rows if r["operation_id"] == "1")["response"])["title"]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case", ["compliance", "member_exists", "not_found", "bad_key"])
async def test_error_answers_are_problem_documents(oas: OpenAPI, api: httpx.AsyncClient,
                                                   sim: MailchimpSimulator, case: str) -> None:
    """Refusals come as `Problem_Detail_Document` with `application/problem+json`."""
    if case == "compliance":
        sim.unsubscribe(ANN)
        response = await api.patch(f"{MEMBERS}/{ANN}", json={"status": "subscribed"})
        expected = (400, "Member In Compliance State")
    elif case == "member_exists":
        response = await api.post(MEMBERS, json={"email_address": "ann@example.com",
                                                 "status": "subscribed"})
        expected = (400, "Member Exists")
    elif case == "not_found":
        response = await api.get(f"{MEMBERS}/{subscriber_hash('nobody@example.com')}")
        expected = (404, "Resource Not Found")
    else:
        response = await api.get("/ping", auth=("anystring", "wrong-us21"))
        expected = (401, "API Key Invalid")

    assert expected == (response.status_code, response.json()["title"])
    assert "application/problem+json" == response.headers["content-type"]
    assert_conforms(oas, response)


async def test_too_many_connections_is_a_problem_document(
        oas: OpenAPI, sim: MailchimpSimulator) -> None:
    """Past 10 requests in flight the simulator answers 429, as CONTRACTS.md says."""
    import asyncio

    sim.latency_s = 0.01
    async with httpx.AsyncClient(transport=Recorder(sim), base_url=sim.base_url,
                                 auth=("anystring", sim.api_key)) as c:
        responses = await asyncio.gather(*(c.get("/ping") for _ in range(12)))

    limited = [r for r in responses if r.status_code == 429]
    assert 2 == len(limited)
    assert_conforms(oas, limited[0])


def test_merge_field_values_are_the_one_patched_type(oas_dict: dict[str, Any],
                                                     sim: MailchimpSimulator) -> None:
    """Deviation 3: against the unpatched member schema, a member fails only on its text merge
    field values; the address, an object, passes."""
    member = sim.get_member(ANN)
    assert member is not None
    errors = list(_member_validator(oas_dict).iter_errors(member))

    assert errors
    assert {("merge_fields",)} == {tuple(e.absolute_path)[:1] for e in errors}
    assert "ADDRESS" not in {tuple(e.absolute_path)[1] for e in errors}


def test_basic_auth_is_the_declared_scheme(oas_dict: dict[str, Any]) -> None:
    """The simulator's Basic auth (any user, the key as password) is the declared scheme."""
    assert {"basicAuth": {"scheme": "basic", "type": "http"}} == (
        oas_dict["components"]["securitySchemes"])


IMPLEMENTED = {
    "getPing", "getListsIdMembers", "postListsIdMembers", "getListsIdMembersId",
    "putListsIdMembersId", "patchListsIdMembersId", "deleteListsIdMembersId",
    "postListMemberTags", "postListsIdMembersHashActionsDeletePermanent", "getSearchMembers",
    "postBatches", "getBatchesId", "getListsIdMergeFields",
}


def test_every_simulated_route_is_an_oas_operation(oas_dict: dict[str, Any]) -> None:
    """The routes the tests above validate are OAS operations, and are all the simulator
    implements."""
    declared = {
        f"{method.upper()} {path}": op["operationId"]
        for path, item in oas_dict["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op
    }
    served = {
        "GET /ping", "GET /lists/{list_id}/members", "POST /lists/{list_id}/members",
        "GET /lists/{list_id}/members/{subscriber_hash}",
        "PUT /lists/{list_id}/members/{subscriber_hash}",
        "PATCH /lists/{list_id}/members/{subscriber_hash}",
        "DELETE /lists/{list_id}/members/{subscriber_hash}",
        "POST /lists/{list_id}/members/{subscriber_hash}/tags",
        "POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent",
        "GET /search-members", "POST /batches", "GET /batches/{batch_id}",
        "GET /lists/{list_id}/merge-fields",
    }

    assert served <= set(declared), sorted(served - set(declared))
    assert IMPLEMENTED == {declared[name] for name in served}
