"""Modules loaded on their first use, so that a command pays only for what it runs.

`lazy_module(name)` returns the module at once, without running it; the first attribute read
runs it (the standard library's `importlib.util.LazyLoader`). The CLI holds the engine's admin
functions this way: `customer-sync --help` never imports the store or the engine.

`import_hiding(name, *hidden)` imports a module while some optional dependencies of it look
absent, for a module that imports them only in case they are installed and that we never use
them through (structlog and rich: see `customer_sync.logs`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

__all__ = ["import_hiding", "lazy_module"]


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


def import_hiding(name: str, *hidden: str) -> ModuleType:
    """The module `name`, imported as if the modules `hidden` were not installed, unless either is
    imported already (then nothing is hidden: hiding a loaded module saves nothing).

    A None in `sys.modules` makes `import hidden` raise ImportError (the import system's own
    convention), which a module that imports an optional dependency in `try`/`except ImportError`
    takes as "not installed". Only that import of `name` (and what it imports) is affected: the
    hidden modules are importable again when this returns.
    """
    if name in sys.modules:
        return sys.modules[name]
    hiding = [module for module in hidden if module not in sys.modules]
    if len(hiding) < len(hidden):
        return importlib.import_module(name)
    for module in hiding:
        sys.modules[module] = None  # type: ignore[assignment]
    try:
        return importlib.import_module(name)
    finally:
        for module in hiding:
            del sys.modules[module]
