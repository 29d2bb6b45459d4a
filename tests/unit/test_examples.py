"""The shipped examples load: config.example.toml (with its commented vendor apps switched on)
and every installed connector's default mapping.toml. An example that no longer loads is a bug."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from customer_sync.config import load_config
from customer_sync.mapping.compile import compile_mapping
from customer_sync.sdk.registry import discover_connectors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
SECRETS = {"HUBSPOT_TOKEN": "pat-na1-secret-7f3c", "HUBSPOT_APP_SECRET": "hs-app-secret-9d1e",
           "ZENDESK_API_TOKEN": "zd-token-4b2a",
           "ZENDESK_WEBHOOK_SECRET": "zd-hook-secret-8c5f",
           "MAILCHIMP_API_KEY": "mc-key-0c7d-us21", "MAILCHIMP_WEBHOOK_SECRET": "mc-hook-3e9a",
           "MAILCHIMP_URL_SECRET": "mc-url-6b1f", "CHATWOOT_TOKEN": "cw-token-2e6d",
           "CHATWOOT_WEBHOOK_SECRET": "cw-hook-secret-5a1b"}


def test_config_example_loads_as_shipped() -> None:
    """config.example.toml validates with no environment at all."""
    config = load_config(EXAMPLE, env={})
    assert {"crm", "shop"} == set(config.apps)


def test_config_example_vendor_apps_load_when_uncommented() -> None:
    """The commented HubSpot, Zendesk, Mailchimp and Chatwoot apps are valid once uncommented and their
    secrets set."""
    text = EXAMPLE.read_text(encoding="utf-8")
    vendor = text[text.index("# [apps.hubspot]"):]
    switched_on = "\n".join(line[2:] if line.startswith("# ") else line for line in vendor.splitlines())
    config = load_config(data=tomllib.loads(text + "\n" + switched_on), env=SECRETS)
    assert {"crm", "shop", "hubspot", "helpdesk", "list", "inbox"} == set(config.apps)
    assert not [s for s in SECRETS.values() if s in repr(config)]  # secrets never print


@pytest.mark.parametrize("name", sorted(discover_connectors()))
def test_every_connector_ships_a_default_map_that_compiles(name: str) -> None:
    """Each installed connector's mapping.toml compiles and maps an email."""
    cls = discover_connectors()[name].cls
    package = cls.__module__.rpartition(".")[0] or cls.__module__
    entries = tomllib.loads((resources.files(package) / "mapping.toml").read_text(encoding="utf-8"))["fields"]
    mapping, problems = compile_mapping(name, entries, custom_fields={})
    assert [] == problems
    assert "email" in mapping.by_canonical
