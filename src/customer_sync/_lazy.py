"""Modules loaded on their first use, so that a command pays only for what it runs.

`lazy_module(name)` returns the module at once, without running it; the first attribute read
runs it (the standard library's `importlib.util.LazyLoader`). The CLI holds the engine's admin
functions this way: `customer-sync --help` never imports the store or the engine.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_module"]


def lazy_module(name: str) -> ModuleType:
    """The module `name`, imported on its first attribute read (at once if already imported).

    Raises:
        ModuleNotFoundError: there is no such module.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # as a real import binds it on its package
    return module
