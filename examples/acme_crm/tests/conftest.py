"""Make `customer_sync_acmecrm` importable from this checkout without installing it.

An installed plugin (`pip install -e .[test]`) does not need this; it lets the example's tests
run from customer-sync's own test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
