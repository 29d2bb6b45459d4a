"""The config loader: every problem is one line `FILE: key.path: what is wrong`, secrets come
from the environment only, and a valid file loads into compiled apps.

Connectors come from `connectors=` (the FakeConnector and a test-only `VaultConnector` with
secret settings), so these tests do not depend on which plugins are installed.
"""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from customer_sync.canonical import LIFECYCLE_STAGES
from customer_sync.config import FieldRule, load_config
from customer_sync.errors import ConfigError
from customer_sync.sdk.connector import Connector, ConnectorSettings
from customer_sync.sdk.registry import ENTRY_POINT_GROUP
from customer_sync.testing.fake_connector import FakeConnector, FakeSettings

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

FILE = "config.toml"
SECRET = "s3cr3t-token-value"


class VaultSettings(ConnectorSettings):
    """Settings of a test-only connector that holds secrets."""

    api_token: SecretStr
    webhook_secret: SecretStr | None = None
    region: str = "eu"


class VaultConnector(Connector[VaultSettings]):
    """A test-only connector whose settings carry secrets; only loaded, never run."""

    name = "vault"
    settings_model = VaultSettings


CONNECTORS: dict[str, type[Connector[Any]]] = {"fake": FakeConnector, "vault": VaultConnector}


@pytest.fixture(autouse=True)
def _no_customer_sync_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a CUSTOMER_SYNC_* variable of the developer's shell out of these tests."""
    for name in list(os.environ):
        if name.upper().startswith("CUSTOMER_SYNC_"):
            monkeypatch.delenv(name)


def _two_apps(**extra: Any) -> dict[str, Any]:
    """A minimal valid config: two fake apps mapping the email; `extra` adds top-level keys."""
    return {
        "apps": {
            "crm": {"connector": "fake", "fields": {"email": "email"}},
            "shop": {"connector": "fake", "fields": {"email": "mail"}},
        },
        **extra,
    }


def _with_crm(**crm: Any) -> dict[str, Any]:
    """The minimal config with keys of `[apps.crm]` replaced or added."""
    data = _two_apps()
    data["apps"]["crm"].update(crm)
    return data


def _problems(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[str]:
    """The problem lines of a config that must not load."""
    with pytest.raises(ConfigError) as info:
        load_config(FILE, data=data, env=env or {}, connectors=CONNECTORS)
    return info.value.problems


def test_unknown_top_level_key_is_reported() -> None:
    """A top-level key the schema does not know is an error naming that key."""
    assert [f"{FILE}: colour: unknown key"] == _problems(_two_apps(colour="blue"))


def test_unknown_key_in_daemon_is_reported() -> None:
    """A typo inside [daemon] is an error naming daemon.KEY."""
    data = _two_apps(daemon={"store_ulr": "sqlite:///x.db"})

    assert [f"{FILE}: daemon.store_ulr: unknown key"] == _problems(data)


def test_unknown_key_in_app_is_reported() -> None:
    """A typo inside [apps.NAME] is an error naming apps.NAME.KEY."""
    assert [f"{FILE}: apps.crm.polling: unknown key"] == _problems(_with_crm(polling=10))


def test_unknown_key_in_connector_settings_is_reported() -> None:
    """A key the connector's settings model does not know is an error naming the app setting."""
    data = _with_crm(settings={"page_size": 10, "pagesize": 10})

    assert [f"{FILE}: apps.crm.settings.pagesize: unknown key"] == _problems(data)


def test_unknown_connector_lists_installed_connectors() -> None:
    """A connector name nobody registered is an error that lists the installed connectors."""
    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    expected = (
        f"{FILE}: apps.crm.connector: unknown connector 'acmecrm' "
        f"(installed: {', '.join(installed) or 'none'})"
    )

    assert [expected] == _problems(_with_crm(connector="acmecrm"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _two_apps(daemon={"store_url": "postgresql://sync:${PGPASSWORD}@db/sync"}),
            f"{FILE}: daemon.store_url: environment variable PGPASSWORD is not set",
        ),
        (
            _with_crm(connector="vault", settings={"api_token": "${CRM_TOKEN}"}),
            f"{FILE}: apps.crm.settings.api_token: environment variable CRM_TOKEN is not set",
        ),
    ],
    ids=["in daemon", "in app settings"],
)
def test_missing_environment_variable_is_reported(data: dict[str, Any], expected: str) -> None:
    """A `${VAR}` reference to an unset variable is an error naming the key and the variable."""
    assert [expected] == _problems(data, env={"UNRELATED": "1"})


@pytest.mark.parametrize(
    "secret_key",
    ["api_token", "webhook_secret"],
    ids=["required secret", "optional secret"],
)
def test_secret_written_literally_is_refused(secret_key: str) -> None:
    """A SecretStr setting written as a literal is refused with advice to use `${ENV_VAR}`."""
    settings = {"api_token": "${CRM_TOKEN}", secret_key: SECRET}
    data = _with_crm(connector="vault", settings=settings)

    problems = _problems(data, env={"CRM_TOKEN": "from-env"})

    assert [
        f"{FILE}: apps.crm.settings.{secret_key}: secrets come from the environment only; "
        f'write {secret_key} = "${{ENV_VAR}}" and set ENV_VAR'
    ] == problems
    assert not any(SECRET in line for line in problems)


def test_secret_from_environment_is_accepted_and_resolved() -> None:
    """A secret given as `${VAR}` loads, and the connector settings hold the variable's value."""
    data = _with_crm(connector="vault", settings={"api_token": "${CRM_TOKEN}"})

    config = load_config(FILE, data=data, env={"CRM_TOKEN": SECRET}, connectors=CONNECTORS)

    settings = config.apps["crm"].connector_settings
    assert isinstance(settings, VaultSettings)
    assert SECRET == settings.api_token.get_secret_value()


@pytest.mark.parametrize(
    ("daemon", "region", "expected"),
    [
        (
            {"log_level": "loud"},
            "eu",
            f"{FILE}: daemon.log_level: Input should be 'debug', 'info', 'warning' or 'error'",
        ),
        ({}, 7, f"{FILE}: apps.crm.settings.region: Input should be a valid string"),
    ],
    ids=["error elsewhere", "error beside the secret"],
)
def test_resolved_secret_never_appears_in_error_messages(
    daemon: dict[str, Any], region: Any, expected: str
) -> None:
    """A failing config that holds resolved secrets shows them in no problem line or message."""
    data = _two_apps(daemon=daemon)
    data["apps"]["crm"].update(
        connector="vault",
        settings={"api_token": "${CRM_TOKEN}", "webhook_secret": "${CRM_TOKEN}", "region": region},
    )

    with pytest.raises(ConfigError) as info:
        load_config(FILE, data=data, env={"CRM_TOKEN": SECRET}, connectors=CONNECTORS)

    assert [expected] == info.value.problems
    assert SECRET not in str(info.value)


def test_mistyped_secret_reference_is_refused() -> None:
    """A secret written as `${ CRM_TOKEN }` (no valid reference) is refused, not used as is."""
    data = _with_crm(connector="vault", settings={"api_token": "${ CRM_TOKEN }"})

    problems = _problems(data, env={"CRM_TOKEN": SECRET})

    assert problems
    assert all(line.startswith(f"{FILE}: apps.crm.settings.api_token: ") for line in problems)


def test_resolved_secret_is_not_shown_by_repr_of_config() -> None:
    """The loaded config can be printed or logged without showing a secret in clear."""
    data = _with_crm(connector="vault", settings={"api_token": "${CRM_TOKEN}"})

    config = load_config(FILE, data=data, env={"CRM_TOKEN": SECRET}, connectors=CONNECTORS)

    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("crm", "expected"),
    [
        (
            {"direction": "sideways"},
            f"{FILE}: apps.crm.direction: Input should be 'both', 'to_app' or 'from_app'",
        ),
        (
            {"fields": {"email": {"field": "email", "direction": "sideways"}}},
            f"{FILE}: apps.crm.fields.email.direction: must be both, to_app or from_app, "
            "not 'sideways'",
        ),
    ],
    ids=["app direction", "field direction"],
)
def test_bad_direction_is_reported(crm: dict[str, Any], expected: str) -> None:
    """A direction other than both, to_app or from_app is an error naming where it was written."""
    assert [expected] == _problems(_with_crm(**crm))


def test_unknown_transform_is_reported_with_the_known_ones() -> None:
    """A transform name not in TRANSFORMS is an error that lists the known transforms."""
    data = _with_crm(fields={"email": {"field": "email", "transform": "rot13"}})

    assert [
        f"{FILE}: apps.crm.fields.email.transform: unknown transform 'rot13' "
        "(known: csv, epoch_ms, epoch_s, json_list, lower, strip, title, upper, yes_no)"
    ] == _problems(data)


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        (
            "custom.loyalty_points",
            f"{FILE}: apps.crm.fields.\"custom.loyalty_points\": unknown canonical field "
            "'custom.loyalty_points' (declare it under [custom_fields])",
        ),
        (
            "nickname",
            f"{FILE}: apps.crm.fields.nickname: unknown canonical field 'nickname' "
            "(see the canonical fields in docs/configuration.md)",
        ),
    ],
    ids=["undeclared custom field", "not a canonical name"],
)
def test_unknown_canonical_field_is_reported_with_a_hint(canonical: str, expected: str) -> None:
    """A map key that is no canonical field is an error; for custom.* it hints [custom_fields]."""
    data = _with_crm(fields={"email": "email", canonical: "whatever"})

    assert [expected] == _problems(data)


def test_declared_custom_field_is_mapped_with_its_type() -> None:
    """A field declared under [custom_fields] maps as custom.NAME and normalizes to its type."""
    data = _two_apps(custom_fields={"loyalty_points": "int"})
    data["apps"]["crm"]["fields"] = {"custom.loyalty_points": "points"}

    config = load_config(FILE, data=data, env={}, connectors=CONNECTORS)

    mapping = config.apps["crm"].mapping
    assert "int" == mapping.by_canonical["custom.loyalty_points"].spec.kind
    assert ({"custom.loyalty_points": 42}, []) == mapping.to_canonical({"points": "42"})


def test_unknown_custom_field_type_is_reported() -> None:
    """A [custom_fields] type that is not one of the custom types is an error naming the field."""
    data = _two_apps(custom_fields={"loyalty_points": "integer"})

    assert [
        f"{FILE}: custom_fields.loyalty_points: Input should be 'str', 'int', 'float', 'bool', "
        "'date', 'datetime' or 'tags'"
    ] == _problems(data)


def test_value_map_with_invalid_canonical_target_is_reported() -> None:
    """An enum `values` entry whose canonical value is invalid names the app value's key path."""
    data = _with_crm(
        fields={"lifecycle_stage": {"field": "stage", "values": {"L": "lead", "P": "prospect"}}}
    )

    assert [
        f"{FILE}: apps.crm.fields.lifecycle_stage.values.P: lifecycle_stage: not a known "
        f"lifecycle stage (one of {', '.join(LIFECYCLE_STAGES)})"
    ] == _problems(data)


def test_value_map_on_set_field_is_reported_not_crashing() -> None:
    """A `values` map on a set field (tags) is a config problem, not a crash of the loader."""
    data = _with_crm(fields={"tags": {"field": "labels", "values": {"Gold": "vip"}}})

    problems = _problems(data)

    assert problems
    assert all(line.startswith(f"{FILE}: apps.crm.fields.tags.values") for line in problems)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            {"field": "email", "op": "like", "value": "x"},
            f"{FILE}: apps.crm.filters[0].op: Input should be 'eq', 'ne', 'in', 'not_in', "
            "'exists', 'not_exists', 'contains', 'newer_than' or 'older_than'",
        ),
        (
            {"field": "signup_date", "op": "exists"},
            f"{FILE}: apps.crm.filters[0].field: unknown canonical field 'signup_date'",
        ),
        (
            {"field": "created_at", "op": "newer_than", "value": "2y"},
            f"{FILE}: apps.crm.filters[0].value: not a duration like '180d' or '12h': '2y'",
        ),
        (
            {"field": "email", "op": "newer_than", "value": "30d"},
            f"{FILE}: apps.crm.filters[0].value: newer_than needs a date or date-time field; "
            "email is email",
        ),
    ],
    ids=["unknown op", "unknown field", "bad duration", "newer_than on a non-date field"],
)
def test_bad_filter_is_reported(condition: dict[str, Any], expected: str) -> None:
    """A filter condition with a bad op, field or value is an error naming filters[i].KEY."""
    assert [expected] == _problems(_with_crm(filters=[condition]))


def test_an_age_in_hours_on_a_date_field_is_refused_by_the_config_check() -> None:
    """`newer_than 12h` on a custom date field is a config problem saying to use days."""
    data = _with_crm(filters=[{"field": "custom.signup", "op": "newer_than", "value": "12h"}])
    data["custom_fields"] = {"signup": "date"}

    assert [
        f"{FILE}: apps.crm.filters[0].value: newer_than on the date field custom.signup needs an "
        "age in whole days or weeks (like '7d' or '2w'), not '12h'"
    ] == _problems(data)


def test_a_date_field_with_an_age_in_days_loads() -> None:
    """`newer_than 30d` on a custom date field is a valid filter."""
    data = _with_crm(filters=[{"field": "custom.signup", "op": "newer_than", "value": "30d"}])
    data["custom_fields"] = {"signup": "date"}

    config = load_config(FILE, data=data, env={}, connectors=CONNECTORS)

    assert frozenset({"custom.signup"}) == config.apps["crm"].filter.fields


def test_conflict_priority_naming_unknown_app_is_reported() -> None:
    """An app in [conflicts] priority that is not configured is an error naming its index."""
    data = _two_apps(conflicts={"priority": ["crm", "erp"]})

    assert [f"{FILE}: conflicts.priority[1]: 'erp' is not a configured app"] == _problems(data)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"nickname": {"rule": "manual"}},
            [f"{FILE}: conflicts.fields.nickname: unknown canonical field 'nickname'"],
        ),
        (
            {"custom.tier": {"rule": "last_writer"}},
            [f"{FILE}: conflicts.fields.\"custom.tier\": unknown canonical field 'custom.tier'"],
        ),
        (
            {"phone": {"rule": "priority", "apps": ["shop", "erp"]}},
            [f"{FILE}: conflicts.fields.phone.apps[1]: 'erp' is not a configured app"],
        ),
        (
            {"phone": {"rule": "priority"}},
            [f'{FILE}: conflicts.fields.phone.apps: required for rule = "priority"'],
        ),
    ],
    ids=["unknown field", "undeclared custom field", "unknown app", "priority without apps"],
)
def test_bad_per_field_conflict_rule_is_reported(
    fields: dict[str, Any], expected: list[str]
) -> None:
    """A per-field conflict rule on an unknown field, or naming unknown apps, is an error."""
    assert expected == _problems(_two_apps(conflicts={"fields": fields}))


def test_priority_default_without_list_is_reported() -> None:
    """`default = "priority"` without a priority list is an error on conflicts.priority."""
    data = _two_apps(conflicts={"default": "priority"})

    assert [
        f'{FILE}: conflicts.priority: required when default = "priority" (list of apps)'
    ] == _problems(data)


@pytest.mark.parametrize("data", [{}, {"apps": {}}], ids=["no apps table", "empty apps table"])
def test_config_without_apps_is_reported(data: dict[str, Any]) -> None:
    """A config with no [apps.NAME] table is an error on `apps`."""
    assert [
        f"{FILE}: apps: no app configured (add at least two [apps.NAME] tables)"
    ] == _problems(data)


def test_every_problem_is_reported_at_once() -> None:
    """Problems in several apps and in [conflicts] are all reported, one line each, in one error."""
    data = _two_apps(conflicts={"priority": ["erp"]})
    data["apps"]["crm"]["fields"] = {"nickname": "nick"}
    data["apps"]["shop"]["filters"] = [{"field": "email", "op": "older_than", "value": "1d"}]

    assert [
        f"{FILE}: apps.crm.fields.nickname: unknown canonical field 'nickname' "
        "(see the canonical fields in docs/configuration.md)",
        f"{FILE}: apps.shop.filters[0].value: older_than needs a date or date-time field; email is email",
        f"{FILE}: conflicts.priority[0]: 'erp' is not a configured app",
    ] == _problems(data)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A file that is not valid TOML is one error naming the file and the parser's position."""
    text = '[daemon]\nstore_url = "sqlite:///unterminated\n'
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(tomllib.TOMLDecodeError) as parsed:
        tomllib.loads(text)

    with pytest.raises(ConfigError) as info:
        load_config(path, connectors=CONNECTORS)

    assert [f"{path}: not valid TOML: {parsed.value}"] == info.value.problems
    assert "line 2" in info.value.problems[0]


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A config path that does not exist is one error naming the file."""
    path = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as info:
        load_config(path, connectors=CONNECTORS)

    assert [f"{path}: file not found"] == info.value.problems


FULL_CONFIG = """
[daemon]
store_url = "sqlite:///state/sync.db"
poll_interval_s = 30
default_region = "DE"

[custom_fields]
loyalty_points = "int"

[conflicts]
default = "priority"
priority = ["crm", "shop"]

[conflicts.fields.email_consent]
rule = "manual"

[apps.crm]
connector = "fake"
poll_interval_s = 15

[apps.crm.settings]
page_size = 10
data = "crm"

[apps.crm.fields]
email = "email"
phone = "phone"
tags = { field = "labels", transform = "csv" }
lifecycle_stage = { field = "stage", values = { L = "lead", C = "customer" } }
"custom.loyalty_points" = { field = "points", direction = "from_app" }

[[apps.crm.filters]]
field = "address.country"
op = "in"
value = ["de", "at"]

[apps.shop]
connector = "vault"
direction = "to_app"

[apps.shop.settings]
api_token = "${SHOP_TOKEN}"

[apps.shop.fields]
email = "mail"
"address.country" = "country"
"""


def test_valid_full_config_loads(tmp_path: Path) -> None:
    """A full config file loads: apps with their settings, compiled maps, filters and rules."""
    path = tmp_path / "config.toml"
    path.write_text(FULL_CONFIG, encoding="utf-8")
    now = datetime(2026, 1, 1, tzinfo=UTC)

    config = load_config(path, env={"SHOP_TOKEN": SECRET}, connectors=CONNECTORS)

    assert path == config.path
    assert ["crm", "shop"] == list(config.apps)
    crm, shop = config.apps["crm"], config.apps["shop"]
    assert FakeSettings(page_size=10, data="crm") == crm.connector_settings
    assert isinstance(shop.connector_settings, VaultSettings)
    assert SECRET == shop.connector_settings.api_token.get_secret_value()
    assert (15.0, 30.0) == (config.poll_interval_s("crm"), config.poll_interval_s("shop"))
    assert (
        {
            "phone": "+49301234567",
            "tags": ["b2b", "vip"],
            "lifecycle_stage": "customer",
            "custom.loyalty_points": 7,
        },
        [],
    ) == crm.mapping.to_canonical(
        {"phone": "030 1234567", "labels": "vip, b2b", "stage": "C", "points": "7"}
    )
    assert {"stage": "L", "labels": "b2b,vip"} == crm.mapping.to_app(
        {"lifecycle_stage": "lead", "tags": ["b2b", "vip"], "custom.loyalty_points": 7}
    )
    assert () == shop.mapping.inbound
    assert {"mail": "a@example.com"} == shop.mapping.to_app({"email": "a@example.com"})
    assert frozenset({"address.country"}) == crm.filter.fields
    assert crm.filter.matches({"address.country": "AT"}, now)
    assert not crm.filter.matches({"address.country": "FR"}, now)
    assert not shop.filter
    assert FieldRule(rule="manual") == config.conflicts.rule_for("email_consent")
    assert FieldRule(rule="priority", apps=["crm", "shop"]) == config.conflicts.rule_for("phone")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUSTOMER_SYNC_DAEMON__STORE_URL beats store_url in the file; other [daemon] keys stay."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[daemon]\nstore_url = "sqlite:///from-file.db"\npoll_interval_s = 5\n\n'
        '[apps.crm]\nconnector = "fake"\nfields = { email = "email" }\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CUSTOMER_SYNC_DAEMON__STORE_URL", "postgresql://sync@db/from-env")

    config = load_config(path, connectors=CONNECTORS)

    assert "postgresql://sync@db/from-env" == config.daemon.store_url
    assert 5.0 == config.daemon.poll_interval_s


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"CUSTOMER_SYNC_DAEMON__POLL_INTERVAL_S": "often"},
         ("CUSTOMER_SYNC_DAEMON__POLL_INTERVAL_S (environment): daemon.poll_interval_s: "
         "not a duration: write seconds (15) or a number with a unit: "
         '"15s", "10m", "2h", "180d", "2w"; got \'often\'')),
        ({"customer_sync_daemon__listen": "nowhere"},
         ('customer_sync_daemon__listen (environment): daemon.listen: must be HOST:PORT with a '
         'port from 1 to 65535, e.g. "127.0.0.1:8080"')),
        ({"CUSTOMER_SYNC_APPS__CRM__ENABLED": "maybe"},
         ("CUSTOMER_SYNC_APPS__CRM__ENABLED (environment): apps.crm.enabled: "
         "Input should be a valid boolean, unable to interpret input")),
        ({"CUSTOMER_SYNC_APPS__TYPO__ENABLED": "false"},  # an app the file does not have
         ("CUSTOMER_SYNC_APPS__TYPO__ENABLED (environment): apps.typo.connector: "
         "required key is missing")),
        ({"CUSTOMER_SYNC_DAEMON": '{"colour": "blue"}'},
         "CUSTOMER_SYNC_DAEMON (environment): daemon.colour: unknown key"),
    ],
    ids=["number", "any case", "boolean", "new block", "json block"],
)
def test_an_invalid_environment_override_names_the_variable_not_the_file(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    """A value the environment overrides is blamed on its variable, the file's on the file."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    data = _two_apps()
    data["daemon"] = {"log_level": "loud"}
    from_file = f"{FILE}: daemon.log_level: Input should be 'debug', 'info', 'warning' or 'error'"

    problems = _problems(data)

    assert [expected, from_file] == sorted(problems, key=lambda p: p.startswith(FILE))


# -- values checked for what they are used as: each is refused by `check` and by `run` ---------

HS_TOKEN = {"HS_TOKEN": "hs-token-from-env"}
ZD_TOKEN = {"ZD_TOKEN": "zd-token-from-env"}


def _with_hubspot(**settings: Any) -> dict[str, Any]:
    """The minimal config with `[apps.crm]` on the bundled hubspot connector."""
    return _with_crm(
        connector="hubspot", fields=None,
        settings={"access_token": "${HS_TOKEN}", **settings},
    )


def _with_zendesk(**settings: Any) -> dict[str, Any]:
    """The minimal config with `[apps.crm]` on the bundled zendesk connector."""
    base = {"base_url": "https://example.zendesk.com", "email": "admin@example.com",
            "api_token": "${ZD_TOKEN}"}
    return _with_crm(connector="zendesk", fields=None, settings={**base, **settings})


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: drop keys set to None (here, `fields` to use the default map)."""
    for app in data["apps"].values():
        for key in [k for k, v in app.items() if v is None]:
            del app[key]
    return data


def test_app_field_mapped_by_two_canonical_fields_is_refused() -> None:
    """An app field mapped again, even `to_app` only, is refused on the second key."""
    data = _with_crm(fields={
        "email": "contact",
        "other_emails": {"field": "contact", "direction": "to_app"},
    })

    assert [
        f"{FILE}: apps.crm.fields.other_emails.field: app field 'contact' is already mapped "
        "from 'email'; map each app field from one canonical field"
    ] == _problems(data)


def test_vendor_base_url_that_is_no_url_is_refused() -> None:
    """`base_url = "not a url"` on a vendor connector is refused at load, naming the key."""
    data = _without_none(_with_hubspot(base_url="not a url"))

    assert [
        f"{FILE}: apps.crm.settings.base_url: must be an http(s) URL with a host, "
        "e.g. https://api.example.com"
    ] == _problems(data, env=HS_TOKEN)


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254", "http://[fe80::1]:8080", "http://[fd00:ec2::254]",
     "http://metadata.google.internal"],
    ids=["IPv4 metadata", "IPv6 link-local", "AWS IPv6 metadata", "GCP metadata name"],
)
def test_metadata_address_as_vendor_url_is_refused_unless_the_app_allows_it(url: str) -> None:
    """A metadata base URL is refused naming the key, and loads with allow_private_urls."""
    data = _without_none(_with_hubspot(base_url=url))

    problems = _problems(data, env=HS_TOKEN)
    data["apps"]["crm"]["allow_private_urls"] = True
    config = load_config(FILE, data=data, env=HS_TOKEN, connectors=CONNECTORS)

    assert 1 == len(problems)
    assert problems[0].startswith(f"{FILE}: apps.crm.settings.base_url: ")
    assert "set allow_private_urls = true on the app" in problems[0]
    assert url == config.apps["crm"].connector_settings.base_url  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123", "http://localhost:8123", "http://[::1]:8123"],
    ids=["127.0.0.1", "localhost", "::1"],
)
def test_loopback_vendor_url_loads_without_allow_private_urls(url: str) -> None:
    """Loopback stays allowed by default: the sandbox simulators and the tests run there."""
    data = _without_none(_with_zendesk(base_url=url))

    config = load_config(FILE, data=data, env=ZD_TOKEN, connectors=CONNECTORS)

    assert url == config.apps["crm"].connector_settings.base_url  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_two_apps(daemon={"default_region": "XX"}), "daemon.default_region"),
        (_with_crm(default_region="XX"), "apps.crm.default_region"),
    ],
    ids=["daemon", "app"],
)
def test_unknown_default_region_is_refused(data: dict[str, Any], key: str) -> None:
    """A `default_region` phonenumbers does not know is refused where it is written."""
    assert [
        f"{FILE}: {key}: 'XX' is not a phone region; write an ISO 3166-1 alpha-2 code such "
        "as US or DE"
    ] == _problems(data)


def test_known_default_region_loads_in_upper_case() -> None:
    """A known region loads whatever its case, and normalization gets it in upper case."""
    data = _with_crm(default_region="de", fields={"phone": "phone"})

    config = load_config(FILE, data=data, env={}, connectors=CONNECTORS)

    assert "DE" == config.apps["crm"].mapping.ctx.default_region


def test_boolean_written_as_a_string_is_refused() -> None:
    """`enabled = "yes"` is refused in one line: booleans in the file are TOML booleans."""
    assert [
        f"{FILE}: apps.crm.enabled: must be true or false (a TOML boolean, no quotes), "
        "not a string"
    ] == _problems(_with_crm(enabled="yes"))


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        (_two_apps(daemon={"redact_logs": "maybe"}), {},
         "daemon.redact_logs: must be true or false (a TOML boolean, no quotes), not a string"),
        (_two_apps(daemon={"list_in_worker": 1}), {},
         "daemon.list_in_worker: must be true or false (a TOML boolean, no quotes), not int"),
        (_without_none(_with_hubspot(field_history="no")), HS_TOKEN,
         "apps.crm.settings.field_history: must be true or false (a TOML boolean, no quotes), "
         "not a string"),
    ],
    ids=["daemon, not even lax", "optional bool as 1", "connector setting"],
)
def test_boolean_not_written_as_a_toml_boolean_is_refused_everywhere(
    data: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    """Strict booleans hold in [daemon], for optional booleans and in connector settings."""
    assert [f"{FILE}: {expected}"] == _problems(data, env=env)


def test_boolean_from_the_environment_is_still_read_from_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A boolean from an env variable or a `${VAR}` reference is still read from its text."""
    monkeypatch.setenv("CUSTOMER_SYNC_DAEMON__REDACT_LOGS", "false")
    data = _without_none(_with_hubspot(field_history="${HS_HISTORY}"))

    config = load_config(
        FILE, data=data, env={**HS_TOKEN, "HS_HISTORY": "false"}, connectors=CONNECTORS
    )

    settings: Any = config.apps["crm"].connector_settings
    assert config.daemon.redact_logs is False
    assert settings.field_history is False


@pytest.mark.parametrize(
    ("daemon", "expected"),
    [
        ({"public_url": "sync.example.com"},
         'daemon.public_url: must be an http(s) URL with a host, e.g. "https://sync.example.com"'),
        ({"public_url": "https://sync.example.com/?via=proxy"},
         "daemon.public_url: must be a base URL, without a query or fragment"),
        ({"listen": "8080"},
         'daemon.listen: must be HOST:PORT with a port from 1 to 65535, e.g. "127.0.0.1:8080"'),
        ({"listen": "127.0.0.1:http"},
         'daemon.listen: must be HOST:PORT with a port from 1 to 65535, e.g. "127.0.0.1:8080"'),
        ({"listen": "127.0.0.1:70000"},
         'daemon.listen: must be HOST:PORT with a port from 1 to 65535, e.g. "127.0.0.1:8080"'),
        ({"listen": "my host:8080"},
         'daemon.listen: the host must be a name or an IP address, e.g. "0.0.0.0:8080"'),
    ],
    ids=["public_url without scheme", "public_url with query", "listen without host",
         "listen with a port name", "listen port too high", "listen host with a space"],
)
def test_public_url_or_listen_that_cannot_be_used_is_refused(
    daemon: dict[str, Any], expected: str
) -> None:
    """A `public_url` that is no http(s) base URL or a `listen` that is no HOST:PORT is refused."""
    assert [f"{FILE}: {expected}"] == _problems(_two_apps(daemon=daemon))


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("0.0.0.0:8080", "0.0.0.0:8080"), ("[::1]:8080", "::1:8080"), (":8080", ":8080"),
     ("localhost:08080", "localhost:8080")],
    ids=["IPv4", "bracketed IPv6", "no host (the server's default)", "leading zero"],
)
def test_listen_address_loads_as_the_api_server_splits_it(listen: str, expected: str) -> None:
    """A good `listen` loads as HOST:PORT split at the last colon, IPv6 without brackets."""
    config = load_config(FILE, data=_two_apps(daemon={"listen": listen}), env={},
                         connectors=CONNECTORS)

    assert expected == config.daemon.listen


def test_unknown_store_scheme_is_refused_naming_the_key() -> None:
    """A `store_url` on a store customer-sync does not support names daemon.store_url."""
    data = _two_apps(daemon={"store_url": "mysql://sync@db/sync"})

    assert [
        f"{FILE}: daemon.store_url: unsupported store 'mysql': use sqlite:///path/to/file.db or "
        "postgresql://user@host/database"
    ] == _problems(data)


@pytest.mark.parametrize(
    ("data", "env"),
    [
        (_without_none(_with_hubspot(webhook_max_age_s=365 * 86400)), HS_TOKEN),
        (_without_none(_with_zendesk(webhook_max_age_s=365 * 86400)), ZD_TOKEN),
    ],
    ids=["hubspot", "zendesk"],
)
def test_webhook_max_age_of_a_year_is_refused(data: dict[str, Any], env: dict[str, str]) -> None:
    """`webhook_max_age_s` of a year is refused, naming the setting and the bound."""
    assert [
        f"{FILE}: apps.crm.settings.webhook_max_age_s: at most 3600 s: a captured delivery can "
        "be replayed for as long as it is accepted (HubSpot's own SDK accepts 300 s)"
    ] == _problems(data, env=env)


# -- max_retry_after_s: the longest vendor Retry-After an app's calls wait for -----------------


def test_max_retry_after_defaults_to_fifteen_minutes() -> None:
    """Without the key, every app's connector is built with a 900 s cap."""
    config = load_config(FILE, data=_two_apps(), env={}, connectors=CONNECTORS)

    assert 900.0 == config.daemon.max_retry_after_s
    assert [900.0, 900.0] == [rt.make_connector().max_retry_after_s for rt in config.apps.values()]


def test_max_retry_after_comes_from_the_daemon_table_and_the_app_overrides_it() -> None:
    """`[daemon] max_retry_after_s` is every app's cap unless `[apps.NAME]` sets its own."""
    data = _two_apps(daemon={"max_retry_after_s": 120})
    data["apps"]["crm"]["max_retry_after_s"] = 30

    config = load_config(FILE, data=data, env={}, connectors=CONNECTORS)

    assert {"crm": 30.0, "shop": 120.0} == {
        name: rt.make_connector().max_retry_after_s for name, rt in config.apps.items()
    }


@pytest.mark.parametrize(
    ("data", "key"),
    [(_two_apps(daemon={"max_retry_after_s": 0}), "daemon.max_retry_after_s"),
     (_with_crm(max_retry_after_s=-5), "apps.crm.max_retry_after_s")],
    ids=["daemon", "app"],
)
def test_max_retry_after_of_zero_or_less_is_refused(data: dict[str, Any], key: str) -> None:
    """A cap of zero or less is refused where it is written."""
    assert [f"{FILE}: {key}: Input should be greater than 0"] == _problems(data)


@pytest.mark.parametrize(
    ("data", "env", "client_of"),
    [
        (_without_none(_with_hubspot()), HS_TOKEN, lambda c: c.client.api),
        (_without_none(_with_zendesk()), ZD_TOKEN, lambda c: c.http),
    ],
    ids=["hubspot", "zendesk"],
)
async def test_max_retry_after_from_the_toml_reaches_the_connectors_http_client(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str], client_of: Any
) -> None:
    """The cap written in config.toml is what the opened connector's ApiClient enforces."""
    app = data["apps"]["crm"]
    path = tmp_path / "config.toml"
    path.write_text(
        "[daemon]\nmax_retry_after_s = 60\n\n[apps.crm]\nmax_retry_after_s = 45\n"
        f'connector = "{app["connector"]}"\n[apps.crm.settings]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in app["settings"].items())
        + '\n[apps.shop]\nconnector = "fake"\nfields = { email = "mail" }\n',
        encoding="utf-8",
    )

    config = load_config(path, env=env, connectors=CONNECTORS)
    async with config.apps["crm"].make_connector() as connector:
        assert 45.0 == client_of(connector).max_retry_after_s


def test_hubspot_reads_the_properties_its_field_map_names() -> None:
    """A custom property mapped in an app's own field map is read: HubSpot returns only the
    properties asked for, so before, `email_consent` mapped here was written and never read
    (a stale edit in HubSpot went unseen). Properties named in the settings stay as given."""
    fields = {"email": "email", "first_name": "firstname", "email_consent": "email_consent"}

    def properties(settings: dict[str, Any]) -> list[str]:
        data = {"daemon": {"store_url": "sqlite://"},
                "apps": {"crm": {"connector": "hubspot", "fields": fields,
                                 "settings": {"access_token": "${T}", **settings}}}}
        return list(load_config(data=data, env={"T": "t"}).apps["crm"].connector_settings.properties)

    assert ["email", "firstname", "email_consent"] == properties({})
    assert ["email", "firstname"] == properties({"properties": ["email", "firstname"]})


# -- durations: one syntax wherever a duration is configured -------------------------------------


def test_every_duration_takes_seconds_or_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`poll_interval_s = "15s"` is read as filters read "180d": numbers stay seconds, and text
    with a unit (s, m, h, d, w) is accepted in [daemon], in an app, from the environment and in
    a connector's settings."""
    monkeypatch.setenv("CUSTOMER_SYNC_DAEMON__POLL_SLICE_S", "2m")
    data = _without_none(_with_hubspot(webhook_max_age_s="5m"))
    data["daemon"] = {"poll_interval_s": "15s", "max_retry_after_s": "1.5h"}
    data["apps"]["crm"].update(poll_interval_s="10m", reconcile_interval_s="1d")
    data["apps"]["shop"].update(poll_interval_s=30, max_retry_after_s="2w")

    config = load_config(FILE, data=data, env=HS_TOKEN, connectors=CONNECTORS)

    daemon = config.daemon
    assert (15.0, 120.0, 5400.0) == (daemon.poll_interval_s, daemon.poll_slice_s, daemon.max_retry_after_s)
    assert (600.0, 30.0) == (config.poll_interval_s("crm"), config.poll_interval_s("shop"))
    assert 86400.0 == config.reconcile_interval_s("crm")
    assert 14 * 86400.0 == config.apps["shop"].max_retry_after_s
    settings: Any = config.apps["crm"].connector_settings
    assert 300.0 == settings.webhook_max_age_s


NOT_A_DURATION = 'not a duration: write seconds (15) or a number with a unit: "15s", "10m", "2h", "180d", "2w"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15 minutes", f"{NOT_A_DURATION}; got '15 minutes'"),
        ("0s", "Input should be greater than 0"),
        ("-5m", f"{NOT_A_DURATION}; got '-5m'"),
    ],
    ids=["words", "zero", "negative"],
)
def test_a_duration_that_cannot_work_is_refused_naming_the_key(value: str, expected: str) -> None:
    """A duration is checked like the number it stands for, and text that is not one says
    what to write."""
    assert [f"{FILE}: daemon.poll_interval_s: {expected}"] == _problems(
        _two_apps(daemon={"poll_interval_s": value}))


def test_a_connectors_durations_take_the_same_syntax() -> None:
    """A connector's own duration settings (`timeout_s`, `rate_limit_window_s`) read text with a
    unit like every other duration."""
    data = _without_none(_with_zendesk(timeout_s="2m", rate_limit_window_s="1m", job_timeout_s=90))

    config = load_config(FILE, data=data, env=ZD_TOKEN, connectors=CONNECTORS)

    settings: Any = config.apps["crm"].connector_settings
    assert (120.0, 60.0, 90.0) == (settings.timeout_s, settings.rate_limit_window_s, settings.job_timeout_s)
