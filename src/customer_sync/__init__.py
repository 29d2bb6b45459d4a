"""customer-sync: a self-hosted two-way sync daemon for customer data."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
