"""The Chatwoot simulator, and the requests the connector sends it, against Chatwoot's swagger.

The document (`chatwoot/chatwoot-swagger-v1.0.0-copy-2024-09.json`, an OpenAPI 3.0.1 document
converted from Swagger 2.0) is read from the shared specs folder, never copied here. Requests and
responses are validated with openapi-core; where the document's own schema says too little (it
wraps a contact as `payload.contact` everywhere), each contact is also validated with the OAS 3.0
JSON-schema validator against the document's contact schema. Deviations are deliberate, listed
here and asserted narrowly, each with its reason:

1. The copy keeps Swagger 2.0 references (`#/definitions/generic_id`, `#/definitions/contact`)
   that point nowhere in an OpenAPI 3 document; they are read as `#/components/schemas/...`.
2. Request bodies are declared only as `application/json; charset=utf-8`; httpx sends
   `application/json`, which Rails takes the same. Requests are validated under the declared
   type.
3. Attributes a contact does not have render as `null` (Rails renders nil); the document types
   them as non-nullable strings. Nulls are left out before a contact is validated.
4. The list answers `{meta: {count, current_page}, payload: [...]}` and the inbox list
   `{payload: [...]}`, as Chatwoot's views do and the current source documents
   (`contacts_list_response`); the 2024 copy types both as bare arrays. The `payload` arrays are
   validated against the copy's array schemas, `meta` against the current source's shape.
5. An update answers 200 with `{payload: contact}` (current source, `contact_update_response`);
   the copy says 204. The body is validated under the copy's 204 schema.
6. Errors: 404 is declared without content, yet Chatwoot renders `{"error": ...}`; 401, 422 and
   429 are not declared. Their bodies are compared with the shapes of Chatwoot's exception
   handler and rack-attack instead. A delete's 200 has an empty body (`head :ok`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from customer_sync_connectors.chatwoot import ChatwootConnector, ChatwootSettings
from openapi_core import Config, OpenAPI
from openapi_schema_validator import OAS30Validator
from pydantic import SecretStr

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.chatwoot import ChatwootSimulator
from customer_sync.testing.specs import OpenApiRequest, OpenApiResponse, load_spec

SPEC_FILE = Path("chatwoot") / "chatwoot-swagger-v1.0.0-copy-2024-09.json"
BASE_URL = "https://app.chatwoot.com"
ROOT = "/api/v1/accounts/1"
DECLARED_JSON = "application/json; charset=utf-8"


@pytest.fixture(scope="session")
def oas_dict() -> dict[str, Any]:
    document = load_spec(SPEC_FILE, start=__file__)
    # deviation 1: Swagger 2.0 references left in the converted document
    return json.loads(json.dumps(document).replace('"#/definitions/', '"#/components/schemas/'))


@pytest.fixture(scope="session")
def oas(oas_dict: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(oas_dict, config=Config(spec_validator_cls=None))


@pytest.fixture(scope="session")
def contact_validator(oas_dict: dict[str, Any]) -> OAS30Validator:
    """The document's schema of one contact's attributes (inside its `payload.contact`)."""
    schemas = oas_dict["components"]["schemas"]
    schema = schemas["contact"]["properties"]["payload"]["properties"]["contact"]
    return OAS30Validator({**schema, "components": oas_dict["components"]})


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the simulator's ASGI app and keeps every exchange for validation."""

    def __init__(self, sim: ChatwootSimulator) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self.exchanges.append((request, response))
        return response


def _as_declared(request: httpx.Request) -> httpx.Request:
    """The request with its JSON body labelled as the document declares it (deviation 2)."""
    if not request.content:
        return request
    headers = {**request.headers, "content-type": DECLARED_JSON}
    return httpx.Request(request.method, request.url, headers=headers, content=request.content)


def request_errors(oas: OpenAPI, request: httpx.Request) -> list[str]:
    return [f"{e!r}: {e.__cause__!r}"[:2000]
            for e in oas.iter_request_errors(OpenApiRequest(_as_declared(request)))]


class _Answer:
    """A response as openapi-core reads it, with another status or body (deviations 4, 5)."""

    def __init__(self, response: httpx.Response, *, status_code: int | None = None,
                 body: Any = None) -> None:
        self.status_code = status_code or response.status_code
        inner = OpenApiResponse(response, body)
        self.headers, self.content_type, self.data = inner.headers, inner.content_type, inner.data


def response_errors(oas: OpenAPI, response: httpx.Response, *, status_code: int | None = None,
                    body: Any = None) -> list[str]:
    answer = _Answer(response, status_code=status_code, body=body)
    errors = oas.iter_response_errors(OpenApiRequest(_as_declared(response.request)), answer)
    return [f"{e!r}: {e.__cause__!r}"[:2000] for e in errors]


def _without_nulls(value: Any) -> Any:
    """Deviation 3: unset attributes are null in Chatwoot's answers."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def assert_contact(validator: OAS30Validator, contact: Any) -> None:
    errors = [e.message for e in validator.iter_errors(_without_nulls(contact))]
    assert [] == errors
    assert isinstance(contact["id"], int)


@pytest.fixture
def sim() -> ChatwootSimulator:
    sim = ChatwootSimulator()
    sim.add_contact(name="Ann Lee", email="ann@example.com", phone_number="+4915112345678",
                    identifier="crm-1", custom_attributes={"plan": "gold", "seats": 5},
                    additional_attributes={"city": "Berlin", "country_code": "DE",
                                           "social_profiles": {"twitter": "annlee"}},
                    inboxes=[(3, "4915112345678")])
    sim.add_contact(name="Bob Roe", email="bob@example.com")
    sim.add_contact(name="Only Insta", inboxes=[(2, "17841400000000001")],
                    additional_attributes={"social_instagram_user_name": "only.insta"})
    return sim


@pytest.fixture
async def api(sim: ChatwootSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Recorder(sim), base_url=BASE_URL,
                                 headers={"api_access_token": sim.api_access_token}) as client:
        yield client


# ---------------------------------------------------------------------------- reads


async def test_custom_attribute_definitions_conform(oas: OpenAPI, api: httpx.AsyncClient,
                                                    sim: ChatwootSimulator) -> None:
    """get-account-custom-attribute: the contact attributes (attribute_model=1), a bare array."""
    sim.contact_attribute_keys[:] = ["plan"]

    response = await api.get(f"{ROOT}/custom_attribute_definitions", params={"attribute_model": "1"})

    assert 200 == response.status_code
    assert ["plan"] == [a["attribute_key"] for a in response.json()]
    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response)


async def test_list_conforms(oas: OpenAPI, contact_validator: OAS30Validator,
                             api: httpx.AsyncClient) -> None:
    """contactList: resolved contacts only, `meta` and a `payload` of contacts."""
    response = await api.get(f"{ROOT}/contacts", params={"page": 1})
    body = response.json()

    assert 200 == response.status_code
    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response, body=_without_nulls(body["payload"]))
    assert {"count": 2, "current_page": "1"} == body["meta"]
    for contact in body["payload"]:
        assert_contact(contact_validator, contact)


async def test_sorted_and_past_the_end_pages_conform(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """A documented sort is accepted; a page past the end is empty, not an error."""
    sorted_page = await api.get(f"{ROOT}/contacts", params={"sort": "-email", "page": 1})
    past = await api.get(f"{ROOT}/contacts", params={"page": 9})

    assert [] == request_errors(oas, sorted_page.request)
    assert ["bob@example.com", "ann@example.com"] == [
        c["email"] for c in sorted_page.json()["payload"]]
    assert [] == past.json()["payload"]


async def test_search_conforms(oas: OpenAPI, contact_validator: OAS30Validator,
                               api: httpx.AsyncClient) -> None:
    """contactSearch: matches name, email, phone and identifier; resolved contacts only."""
    by_phone = await api.get(f"{ROOT}/contacts/search", params={"q": "15112345678", "page": 1})
    hidden = await api.get(f"{ROOT}/contacts/search", params={"q": "Only Insta"})

    for response in (by_phone, hidden):
        assert [] == request_errors(oas, response.request)
        assert [] == response_errors(oas, response, body=_without_nulls(response.json()))
    assert ["ann@example.com"] == [c["email"] for c in by_phone.json()["payload"]]
    assert [] == hidden.json()["payload"]
    assert_contact(contact_validator, by_phone.json()["payload"][0])


async def test_show_conforms_for_a_contact_that_is_never_listed(
        oas: OpenAPI, contact_validator: OAS30Validator, api: httpx.AsyncClient) -> None:
    """contactDetails: the Instagram-only contact reads by id, with its contact inbox."""
    response = await api.get(f"{ROOT}/contacts/3")
    contact = response.json()["payload"]

    assert 200 == response.status_code
    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response, body=_without_nulls(response.json()))
    assert_contact(contact_validator, contact)
    assert "Channel::Instagram" == contact["contact_inboxes"][0]["inbox"]["channel_type"]


async def test_inbox_list_conforms(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """The inbox list (the connector's check): `payload` validated as the document's array."""
    response = await api.get(f"{ROOT}/inboxes")

    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response, body=response.json()["payload"])


# ---------------------------------------------------------------------------- writes


async def test_create_conforms(oas: OpenAPI, contact_validator: OAS30Validator,
                               api: httpx.AsyncClient) -> None:
    """contactCreate: `{payload: {contact, contact_inbox}}`, the contact in its inbox."""
    response = await api.post(f"{ROOT}/contacts", json={
        "inbox_id": 1, "name": "Neda", "email": "Neda@Example.com",
        "phone_number": "+989121234567", "identifier": "customer-sync:c1",
        "custom_attributes": {"plan": "silver"}})
    payload = response.json()["payload"]

    assert 200 == response.status_code
    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response, body=_without_nulls(response.json()))
    assert_contact(contact_validator, payload["contact"])
    assert "neda@example.com" == payload["contact"]["email"]  # Chatwoot lower-cases
    assert 1 == payload["contact_inbox"]["inbox"]["id"]


async def test_update_merges_attribute_hashes_and_conforms(
        oas: OpenAPI, contact_validator: OAS30Validator, api: httpx.AsyncClient) -> None:
    """contactUpdate: the attribute hashes merge one level deep; the answer is 200 with the
    contact (deviation 5)."""
    response = await api.put(f"{ROOT}/contacts/1", json={
        "name": "Ann K. Lee", "custom_attributes": {"seats": 6},
        "additional_attributes": {"social_profiles": {"instagram": "ann.k"}}})
    contact = response.json()["payload"]

    assert 200 == response.status_code
    assert [] == request_errors(oas, response.request)
    assert [] == response_errors(oas, response, status_code=204,
                                 body=_without_nulls(response.json()))
    assert_contact(contact_validator, contact)
    assert {"plan": "gold", "seats": 6} == contact["custom_attributes"]
    assert {"instagram": "ann.k"} == contact["additional_attributes"]["social_profiles"]
    assert "Berlin" == contact["additional_attributes"]["city"]


async def test_delete_conforms(oas: OpenAPI, api: httpx.AsyncClient) -> None:
    """contactDelete: 200 with an empty body, then the contact is gone (404)."""
    response = await api.delete(f"{ROOT}/contacts/2")
    again = await api.get(f"{ROOT}/contacts/2")

    assert (200, b"") == (response.status_code, response.content)
    assert [] == request_errors(oas, response.request)
    assert 404 == again.status_code


# ---------------------------------------------------------------------------- errors


async def test_error_bodies_have_chatwoots_shapes(api: httpx.AsyncClient,
                                                  sim: ChatwootSimulator) -> None:
    """Deviation 6: 404 and 401 render `{"error"}`, a refused record 422
    `{"message", "attributes"}`, a blank search 422 `{"error"}`, a throttle plain text."""
    missing = await api.get(f"{ROOT}/contacts/999")
    refused = await api.post(f"{ROOT}/contacts", json={
        "name": "Dup", "email": "ANN@example.com", "phone_number": "09121234567"})
    blank = await api.get(f"{ROOT}/contacts/search", params={"q": " "})
    unauthorized = await api.get(f"{ROOT}/contacts", headers={"api_access_token": "wrong"})
    sim.fail_next(1, 429)
    throttled = await api.get(f"{ROOT}/contacts")

    assert (404, {"error": "Resource could not be found"}) == (missing.status_code,
                                                               missing.json())
    assert 422 == refused.status_code
    assert {"attributes": ["email", "phone_number"],
            "message": "Email has already been taken, Phone number should be in e164 format"
            } == refused.json()
    assert (422, ["error"]) == (blank.status_code, list(blank.json()))
    assert (401, {"error": "Invalid Access Token"}) == (unauthorized.status_code,
                                                        unauthorized.json())
    assert (429, "Retry later\n", None) == (throttled.status_code, throttled.text,
                                            throttled.headers.get("retry-after"))


async def test_the_rate_limit_counts_in_windows_aligned_to_the_clock() -> None:
    """rack-attack counts per `now // period`: the limit holds inside a window and a new window
    starts afresh."""
    clock = ManualClock()
    sim = ChatwootSimulator(clock=clock, rate_limit=(3, 60.0), search_rate_limit=(1, 60.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=BASE_URL,
                                 headers={"api_access_token": sim.api_access_token}) as api:
        first = [(await api.get(f"{ROOT}/contacts")).status_code for _ in range(4)]
        clock.advance(60)
        searches = [(await api.get(f"{ROOT}/contacts/search", params={"q": "x"})).status_code
                    for _ in range(2)]

    assert [200, 200, 200, 429] == first
    assert [200, 429] == searches


# ---------------------------------------------------------------------------- the connector


async def test_every_request_the_connector_sends_conforms(oas: OpenAPI,
                                                          sim: ChatwootSimulator) -> None:
    """Check, scan, id scan, search, read, create, update and delete, as the connector sends
    them, validate against the document."""
    recorder = Recorder(sim)
    settings = ChatwootSettings(base_url=BASE_URL, account_id=1, inbox_id=1,
                                api_access_token=SecretStr(sim.api_access_token))
    async with ChatwootConnector(settings, app="inbox", transport=recorder) as connector:
        await connector.check()
        await connector.app_fields()
        [page async for page in connector.list_changes(None)]
        [ids async for ids in connector.list_ids()]
        await connector.search_by_email("ann@example.com")
        await connector.read(["1", "3"])
        receipt = await connector.create({"name": "Neda Rad", "phone_number": "+989121234567",
                                          "social_profiles.instagram": "neda.r"},
                                         idempotency_key="c1:inbox")
        await connector.update(receipt.app_record_id, {"social_profiles.twitter": "neda",
                                                        "custom_attributes.plan": "gold"})
        await connector.delete(receipt.app_record_id)

    sent = {f"{r.method} {r.url.path}" for r, _ in recorder.exchanges}
    assert len(sent) >= 7
    for request, response in recorder.exchanges:
        assert [] == request_errors(oas, request), f"{request.method} {request.url.path}"
        assert response.status_code < 400
