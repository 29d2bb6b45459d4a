"""The HTTP plumbing is reachable from `customer_sync.sdk`, the connector authors' one import."""

from __future__ import annotations

import importlib

import pytest

import customer_sync.sdk


@pytest.mark.parametrize("module", ["http", "pagination", "ratelimit", "retry", "settings"])
def test_every_public_name_is_reexported_from_sdk(module: str) -> None:
    """Each name in the module's __all__ is in customer_sync.sdk.__all__ and is the same object."""
    mod = importlib.import_module(f"customer_sync.sdk.{module}")

    for name in mod.__all__:
        assert name in customer_sync.sdk.__all__
        assert getattr(mod, name) is getattr(customer_sync.sdk, name)
