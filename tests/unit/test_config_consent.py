"""Configuration of consent and email lists: the `consent` rule is email_consent's default,
`consent_source` names configured apps, and `requires_email` comes from the app or its
connector."""

from __future__ import annotations

from typing import Any

import pytest

from customer_sync.config import FieldRule, load_config
from customer_sync.errors import ConfigError
from customer_sync.sdk.connector import Capability
from customer_sync.testing.fake_connector import FakeConnector

FILE = "config.toml"


class ListConnector(FakeConnector):
    """A fake email list: its records are addresses."""

    name = "fake_list"
    capabilities = FakeConnector.capabilities | Capability.REQUIRES_EMAIL


CONNECTORS: dict[str, Any] = {"fake": FakeConnector, "fake_list": ListConnector}


def _config(conflicts: dict[str, Any] | None = None, **apps: dict[str, Any]) -> dict[str, Any]:
    """Two apps, crm and list (more or other ones through `apps`), and a [conflicts] table."""
    base = {"crm": {"connector": "fake", "fields": {"email": "email"}},
            "list": {"connector": "fake", "fields": {"email": "email"}}}
    return {"apps": {**base, **apps}, "conflicts": conflicts or {}}


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(FILE, data=data, env={}, connectors=CONNECTORS)
    return info.value.problems


def test_consent_is_the_default_rule_of_email_consent_whatever_the_default() -> None:
    """Unless [conflicts.fields] names it, email_consent is decided by `consent`, with the
    [conflicts] consent_source; other fields keep the default rule."""
    config = load_config(data=_config({"default": "priority", "priority": ["crm"], "consent_source": ["list"]}),
                         connectors=CONNECTORS)

    assert FieldRule(rule="consent", consent_source=["list"]) == config.conflicts.rule_for("email_consent")
    assert FieldRule(rule="priority", apps=["crm"]) == config.conflicts.rule_for("email")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [({"rule": "manual"}, FieldRule(rule="manual")),
     ({"rule": "consent"}, FieldRule(rule="consent", consent_source=["crm"])),
     ({"rule": "consent", "consent_source": ["list"]}, FieldRule(rule="consent", consent_source=["list"]))],
    ids=["another rule, named explicitly", "consent with [conflicts]'s source", "consent with its own source"],
)
def test_a_rule_named_for_email_consent_is_used(rule: dict[str, Any], expected: FieldRule) -> None:
    """An explicit rule for email_consent replaces the default; a `consent` rule without its
    own consent_source takes [conflicts]'s."""
    data = _config({"consent_source": ["crm"], "fields": {"email_consent": rule}})

    assert expected == load_config(data=data, connectors=CONNECTORS).conflicts.rule_for("email_consent")


@pytest.mark.parametrize(
    ("conflicts", "expected"),
    [
        ({"consent_source": ["list", "mailer"]}, "conflicts.consent_source[1]: 'mailer' is not a configured app"),
        ({"fields": {"email_consent": {"rule": "consent", "consent_source": ["mailer"]}}},
         "conflicts.fields.email_consent.consent_source[0]: 'mailer' is not a configured app"),
        ({"fields": {"first_name": {"rule": "consent"}}},
         'conflicts.fields.first_name.rule: "consent" decides consent fields only (such as email_consent)'),
        ({"fields": {"email_consent": {"rule": "last_writer", "consent_source": ["list"]}}},
         'conflicts.fields.email_consent.consent_source: applies to rule = "consent" only'),
        ({"default": "consent"}, "conflicts.default: Input should be 'last_writer', 'priority' or 'manual'"),
    ],
    ids=["unknown app in consent_source", "unknown app in the field's consent_source",
         "consent on another field", "consent_source on another rule", "consent as the default"],
)
def test_bad_consent_configuration_is_reported(conflicts: dict[str, Any], expected: str) -> None:
    """consent_source names configured apps, and the consent rule decides consent only."""
    assert [f"{FILE}: {expected}"] == _problems(_config(conflicts))


@pytest.mark.parametrize(
    ("connector", "setting", "expected"),
    [("fake", None, False), ("fake_list", None, True), ("fake", True, True), ("fake_list", False, False)],
    ids=["plain connector", "connector with REQUIRES_EMAIL", "app says so", "app overrides its connector"],
)
def test_requires_email_comes_from_the_app_else_its_connector(
    connector: str, setting: bool | None, expected: bool
) -> None:
    """`requires_email` in [apps.NAME] overrides the connector's REQUIRES_EMAIL capability."""
    app: dict[str, Any] = {"connector": connector, "fields": {"email": "email"}}
    if setting is not None:
        app["requires_email"] = setting

    config = load_config(data=_config(list=app), connectors=CONNECTORS)

    assert (expected, False) == (config.apps["list"].requires_email, config.apps["crm"].requires_email)


def test_requires_email_must_be_a_toml_boolean() -> None:
    """`requires_email = "yes"` is refused like every other boolean written as text."""
    data = _config(list={"connector": "fake", "fields": {"email": "email"}, "requires_email": "yes"})

    assert [f"{FILE}: apps.list.requires_email: must be true or false (a TOML boolean, no quotes), "
            "not a string"] == _problems(data)
