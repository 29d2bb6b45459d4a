"""The key of identity hashes, apart from the engine so that the CLI's operator commands can
read it without importing the engine (standard library only)."""

from __future__ import annotations

import os

__all__ = ["default_identity_key"]


def default_identity_key() -> bytes:
    """The key of identity hashes: `CUSTOMER_SYNC_IDENTITY_KEY`, else a fixed default.

    Changing it makes existing identities unmatchable, so set it once, before the first run.
    """
    return os.environ.get("CUSTOMER_SYNC_IDENTITY_KEY", "customer-sync/identity/v1").encode()
