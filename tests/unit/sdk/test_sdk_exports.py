"""The HTTP plumbing is reachable from `customer_sync.sdk`, the connector authors' one import."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import customer_sync.sdk


@pytest.mark.parametrize("module", ["http", "pagination", "ratelimit", "retry", "settings"])
def test_every_public_name_is_reexported_from_sdk(module: str) -> None:
    """Each name in the module's __all__ is in customer_sync.sdk.__all__ and is the same object."""
    mod = importlib.import_module(f"customer_sync.sdk.{module}")

    for name in mod.__all__:
        assert name in customer_sync.sdk.__all__
        assert getattr(mod, name) is getattr(customer_sync.sdk, name)


def test_every_name_in_all_imports_from_sdk() -> None:
    """`from customer_sync.sdk import X` works in a fresh interpreter for every X in `__all__`,
    the names imported on first use included, and `dir()` lists them all."""
    names = customer_sync.sdk.__all__
    script = (f"from customer_sync.sdk import {', '.join(names)}\n"
              "import customer_sync.sdk as sdk\n"
              f"assert all(globals()[n] is getattr(sdk, n) for n in {names!r})\n"
              f"assert set({names!r}) <= set(dir(sdk))\n"
              "print('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert "ok" == done.stdout.strip(), done.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name the SDK does not export is an AttributeError (an ImportError in `from ... import`)."""
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = customer_sync.sdk.no_such_name  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="no_such_name"):
        from customer_sync.sdk import no_such_name  # type: ignore[attr-defined]  # noqa: F401


_PROBE = """
import json, sys
import customer_sync.sdk.connector, customer_sync.sdk.settings
from customer_sync.sdk import Connector, ConnectorSettings, Seconds, WriteReceipt
print(json.dumps(sorted(sys.modules)))
"""


def test_the_connector_base_imports_no_http_client() -> None:
    """Importing the connector base and its settings types (what the config loads) imports no
    httpx, tenacity or asyncio-based rate limiter: those load when a connector first uses them."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                          timeout=120)
    modules = set(json.loads(done.stdout))
    assert [] == sorted(m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "tenacity")
                        or m in ("customer_sync.sdk.http", "customer_sync.sdk.retry",
                                 "customer_sync.sdk.ratelimit", "customer_sync.sdk.pagination"))


_FIRST_READ = """
import sys, customer_sync.sdk as sdk
assert 'httpx' not in sys.modules
client = sdk.ApiClient
from customer_sync.sdk.http import ApiClient
assert client is ApiClient and 'httpx' in sys.modules
print('ok')
"""


def test_a_lazy_name_is_the_object_its_module_defines() -> None:
    """The first read of a lazily exported name imports its module and returns its object."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_READ],
        capture_output=True, text=True, timeout=120, check=False)
    assert "ok" == done.stdout.strip(), done.stderr
