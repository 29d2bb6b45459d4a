"""Every request the Zendesk connector sends is a valid operation of Zendesk's OpenAPI description.

The connector runs a scenario that touches every call it makes (check, export paging, reads,
identities, search, single and bulk upserts with job polls, updates, deletes) against the
simulator; each recorded request is then validated with openapi-core against the vendor file,
read from the shared specs folder (`CUSTOMER_SYNC_SPECS_DIR`, else `<repo root>/../shared/specs`)
and never copied into this repository. Without the file the test fails when `CI` is set and is
skipped otherwise.

One deviation is tolerated, the one the simulator's contract test also names: the OAS marks
`start_time` required on IncrementalUserExportCursor, yet follow-up pages carry only `cursor`
(as Zendesk's own `after_url` does, and CONTRACTS.md says: "first call start_time, then cursor").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.validation.request.exceptions import MissingRequiredParameter

from customer_sync.sandbox.zendesk import ZendeskSimulator
from customer_sync.sdk import WriteOp
from customer_sync.testing.specs import OpenApiRequest, load_spec
from customer_sync_connectors.zendesk import ZendeskConnector

from .conftest import RecordingTransport  # noqa: TID252

SPEC_FILE = Path("zendesk") / "support-api-oas.yaml"
EXPORT_OPERATION = "IncrementalUserExportCursor"


@pytest.fixture(scope="module")
def oas_dict() -> dict[str, Any]:
    return load_spec(SPEC_FILE, start=__file__)


@pytest.fixture(scope="module")
def oas(oas_dict: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(oas_dict, config=Config(spec_validator_cls=None))


def _operation_ids(oas_dict: dict[str, Any]) -> Callable[[httpx.Request], str | None]:
    """The OAS operationId of a request: the matching path template with the fewest
    parameters wins (`/users/show_many` over `/users/{user_id}`)."""
    routes = []
    for template, item in oas_dict["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + r"\Z")
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                routes.append((template.count("{"), method.upper(), pattern, op["operationId"]))
    routes.sort(key=lambda r: r[0])

    def find(request: httpx.Request) -> str | None:
        path = request.url.path.removesuffix(".json")
        return next((op for _, method, pattern, op in routes
                     if method == request.method and pattern.match(path)), None)

    return find


async def _scenario(connector: ZendeskConnector, sim: ZendeskSimulator) -> None:
    ann = sim.add_user(name="Ann Lee", email="ann@example.com", phone="+15551234567")
    sim.add_identity(ann, "email", "ann.work@example.com")
    sim.add_user(name="Bob Roe", email="bob@example.com")
    await connector.check()
    pages = [p async for p in connector.list_changes(None)]
    [p async for p in connector.list_changes(pages[-1].cursor)]
    await connector.read([str(ann)])
    await connector.search_by_email("ann.work@example.com")
    created = await connector.create({"email": "cy@example.com", "first_name": "Cy",
                                      "tags": ["new"]}, idempotency_key="k1")
    await connector.write_many([
        WriteOp(key="d", op="create", fields={"email": "di@example.com", "first_name": "Di",
                                              "last_name": "Eve", "phone": "+15550001111"},
                idempotency_key="k2"),
        WriteOp(key="e", op="create", fields={"phone": "+15550002222"}, idempotency_key="k3"),
        WriteOp(key="u", op="update", app_record_id=str(ann),
                fields={"last_name": "Lee-Park", "user_fields.plan": "gold", "phone": None}),
        WriteOp(key="x", op="delete", app_record_id=created.app_record_id),
    ])


async def test_every_request_is_a_valid_oas_operation(
    oas: OpenAPI, oas_dict: dict[str, Any], sim: ZendeskSimulator,
    make_connector: Callable[..., ZendeskConnector], transport: RecordingTransport,
) -> None:
    """Each request validates against Zendesk's OAS (but for the one documented deviation),
    and together they cover every operation the connector uses."""
    async with make_connector(page_size=2) as connector:
        await _scenario(connector, sim)
    operation_of = _operation_ids(oas_dict)

    used: set[str | None] = set()
    problems: list[str] = []
    for request, response in transport.exchanges:
        operation = operation_of(request)
        used.add(operation)
        assert response.status_code < 400, (operation, response.status_code)
        errors = list(oas.iter_request_errors(OpenApiRequest(request, strip_suffix=".json")))
        if operation == EXPORT_OPERATION and "cursor" in request.url.params:
            errors = [e for e in errors if not (isinstance(e, MissingRequiredParameter)
                                                and e.name == "start_time")]
        problems += [f"{operation}: {e!r}: {e.__cause__!r}"[:500] for e in errors]

    assert [] == problems
    assert {
        "ShowCurrentUser", "IncrementalUserExportCursor", "ShowManyUsers", "ListUserIdentities",
        "SearchUsers", "CreateOrUpdateUser", "CreateOrUpdateManyUsers", "ShowJobStatus",
        "UpdateUser", "DeleteUser",
    } == used
