"""Vendor API contracts in tests: find them, load them, and validate httpx traffic against them.

The vendors' OpenAPI documents are reference material kept outside the project (in the shared
`specs/` folder beside the repository, or where `CUSTOMER_SYNC_SPECS_DIR` points); tests read them
from there and never copy them. When a document is missing, a test says so plainly: it skips
with the reason on a laptop and fails under CI (`CI` set), so a green CI always checked it.

Needs the test extras (PyYAML for YAML documents, openapi-core for the adapters).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

__all__ = [
    "SPECS_ENV",
    "OpenApiRequest",
    "OpenApiResponse",
    "is_ci",
    "load_spec",
    "spec_file",
    "specs_dir",
]

SPECS_ENV = "CUSTOMER_SYNC_SPECS_DIR"


def is_ci() -> bool:
    """True when running under CI (the `CI` variable set to anything but a false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def specs_dir(start: str | Path | None = None) -> Path:
    """The specs folder: `$CUSTOMER_SYNC_SPECS_DIR`, else the first `shared/specs` found beside
    an ancestor of `start` (a test file; default: the working directory)."""
    configured = os.environ.get(SPECS_ENV)
    if configured:
        return Path(configured)
    here = Path(start).resolve() if start is not None else Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "specs"
        if candidate.is_dir():
            return candidate
    return here.parent / "shared" / "specs"


def spec_file(relative: str | Path, *, start: str | Path | None = None) -> Path:
    """The path of one spec document; skips with the reason (fails under CI) when absent."""
    path = specs_dir(start) / relative
    if not path.is_file():
        reason = f"vendor spec not found at {path}; set {SPECS_ENV} to the shared specs folder"
        if is_ci():
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(reason)
    return path


def load_spec(relative: str | Path, *, start: str | Path | None = None) -> dict[str, Any]:
    """A spec document as a dict (JSON or YAML), or a skip/failure as `spec_file` says."""
    path = spec_file(relative, start=start)
    if path.suffix == ".json":
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document
    import yaml

    with path.open("rb") as fh:
        return yaml.load(fh, Loader=_spec_loader())  # noqa: S506 - a SafeLoader subclass


def _spec_loader() -> Any:
    import yaml

    base = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # C is ~10x faster

    class SpecLoader(base):  # type: ignore[misc,valid-type]
        """Zendesk's OAS has bare `=` scalars, which YAML 1.1 tags as `value`: read as strings."""

    SpecLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
    return SpecLoader


class OpenApiRequest:
    """openapi-core's Request protocol over a sent httpx request.

    `strip_suffix` removes a path suffix the vendor serves but its document omits (Zendesk's
    `.json`).
    """

    def __init__(self, request: httpx.Request, *, strip_suffix: str = "") -> None:
        self.host_url = f"{request.url.scheme}://{request.url.host}"
        self.path = request.url.path.removesuffix(strip_suffix) if strip_suffix else request.url.path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/octet-stream")


class OpenApiResponse:
    """openapi-core's Response protocol over a received httpx response (or an edited body)."""

    def __init__(self, response: httpx.Response, body: Any = None) -> None:
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        self.content_type = response.headers.get("content-type", "")
        self.data = response.content if body is None else json.dumps(body).encode()
