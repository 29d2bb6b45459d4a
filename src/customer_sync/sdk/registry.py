"""Connector discovery through the `customer_sync.connectors` entry-point group.

Bundled connectors register exactly as a third-party plugin does, so a package installed beside
customer-sync shows up in `customer-sync connectors` with no change to our code. The engine
never imports `customer_sync_connectors.*` directly; it asks the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from customer_sync.errors import ConfigError
from customer_sync.sdk.connector import Connector

__all__ = ["ENTRY_POINT_GROUP", "ConnectorInfo", "discover_connectors", "load_connector"]

ENTRY_POINT_GROUP = "customer_sync.connectors"


@dataclass(frozen=True)
class ConnectorInfo:
    """A discovered connector: its name, class and the distribution that provides it."""

    name: str
    cls: type[Connector]  # type: ignore[type-arg]
    distribution: str | None


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _load(ep: EntryPoint) -> type[Connector]:  # type: ignore[type-arg]
    dist = ep.dist.name if ep.dist else "?"
    try:
        cls = ep.load()
    except Exception as exc:  # any import failure of a plugin is a config problem, named
        raise ConfigError(
            f"connector plugin {ep.name!r} ({ep.value}, from {dist}) failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(
            f"connector plugin {ep.name!r} ({ep.value}) is not a customer_sync.sdk.Connector subclass"
        )
    if getattr(cls, "name", None) != ep.name:
        raise ConfigError(
            f"connector plugin {ep.name!r} ({ep.value}) declares name={getattr(cls, 'name', None)!r}; "
            "the entry-point name and the class's `name` must agree"
        )
    return cls


def discover_connectors() -> dict[str, ConnectorInfo]:
    """Every installed connector by name.

    Raises:
        ConfigError: two distributions register the same name, or a plugin fails to import.
    """
    found: dict[str, ConnectorInfo] = {}
    seen: dict[str, str] = {}
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist else None
        if ep.name in seen and seen[ep.name] != ep.value:
            raise ConfigError(
                f"connector name {ep.name!r} is registered twice: by {seen[ep.name]} and {ep.value}"
            )
        seen[ep.name] = ep.value
        found[ep.name] = ConnectorInfo(ep.name, _load(ep), dist)
    return dict(sorted(found.items()))


def load_connector(name: str) -> type[Connector]:  # type: ignore[type-arg]
    """The connector class registered as `name`; loads only that plugin.

    Raises:
        ConfigError: no such connector is installed (the message lists the installed ones).
    """
    eps = [ep for ep in _entry_points() if ep.name == name]
    if not eps:
        installed = sorted({ep.name for ep in _entry_points()})
        raise ConfigError(
            f"unknown connector {name!r} (installed: {', '.join(installed) or 'none'})"
        )
    if len({ep.value for ep in eps}) > 1:
        raise ConfigError(f"connector name {name!r} is registered twice: {[e.value for e in eps]}")
    return _load(eps[0])
