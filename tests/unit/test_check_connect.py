"""`check --connect` verifies that every mapped app field exists in the app, per connector that
can list its fields (the optional `Connector.app_fields` hook): a typo in an app field is
caught before the first run instead of syncing nothing into it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from customer_sync.cli import app

SQL = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.crm]
connector = "sql"

[apps.crm.settings]
url = "sqlite:///{tmp}/crm.db"
table = "contacts"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.crm.fields]
email = "email"
first_name = "{first_name}"
"""

CSV = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.sheet]
connector = "csv"

[apps.sheet.settings]
path = "{tmp}/people.csv"

[apps.sheet.fields]
email = "email"
first_name = "{first_name}"
"""


ZENDESK = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.desk]
connector = "zendesk"

[apps.desk.settings]
base_url = "{base_url}"
email = "admin@example.com"
api_token = "${{CS_TEST_ZD_TOKEN}}"

[apps.desk.fields]
email = "email"
first_name = "{first_name}"
"""


MAILCHIMP = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.news]
connector = "mailchimp"

[apps.news.settings]
base_url = "{base_url}"
list_id = "a6b5da1054"
api_key = "${{CS_TEST_MC_KEY}}"

[apps.news.fields]
email = "email_address"
first_name = "{first_name}"
"""


HUBSPOT = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.crm]
connector = "hubspot"

[apps.crm.settings]
base_url = "{base_url}"
access_token = "${{CS_TEST_HS_TOKEN}}"

[apps.crm.fields]
email = "email"
first_name = "{first_name}"
"""


CHATWOOT = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"

[apps.inbox]
connector = "chatwoot"

[apps.inbox.settings]
base_url = "{base_url}"
account_id = 1
api_access_token = "${{CS_TEST_CW_TOKEN}}"

[apps.inbox.fields]
email = "email"
first_name = "{first_name}"
company = "additional_attributes.company_name"
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> None:
    import structlog

    yield  # type: ignore[misc]
    structlog.reset_defaults()


def _check(tmp: Path, template: str, first_name: str) -> tuple[int, str, str]:
    config = tmp / "config.toml"
    config.write_text(template.format(tmp=tmp.as_posix(), first_name=first_name), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", "--connect", "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


XLSX = CSV.replace('connector = "csv"', 'connector = "xlsx"').replace("people.csv", "people.xlsx")


def _workbook(path: Path, header: list[str]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(header)
    book.save(path)


@pytest.mark.parametrize(("template", "name", "prepare"), [
    (SQL, "crm", None),
    (CSV, "sheet", "csv"),
    (XLSX, "sheet", "xlsx"),
], ids=["sql", "csv", "xlsx"])
def test_check_connect_catches_an_unknown_app_field(
    tmp_path: Path, template: str, name: str, prepare: str | None,
) -> None:
    if prepare == "csv":
        (tmp_path / "people.csv").write_text("id,email,first_name\r\n", encoding="utf-8")
    elif prepare == "xlsx":
        _workbook(tmp_path / "people.xlsx", ["id", "email", "first_name"])

    code, out, err = _check(tmp_path, template, "first_nme")

    assert 1 == code, (out, err)
    [line] = [ln for ln in err.splitlines() if ln.startswith(f"app {name}:")]
    assert line.startswith(f"app {name}: apps.{name}.fields maps app field(s) the app does not have: "
                           "first_nme (it has: "), line

    code, out, err = _check(tmp_path, template, "first_name")

    assert 0 == code, (out, err)
    assert f"ok app {name}: connected, every mapped field exists" in out.splitlines()


def test_check_connect_catches_an_unknown_zendesk_user_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Zendesk: the user attributes the connector reads, and `user_fields.KEY` for each custom
    user field the account defines (ListUserFields, served by the simulator on loopback)."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.zendesk import ZendeskSimulator

    sim = ZendeskSimulator(user_fields=["plan"])
    monkeypatch.setenv("CS_TEST_ZD_TOKEN", sim.api_token)
    served = serve(sim.app)
    try:
        template = ZENDESK.replace("{base_url}", served.base_url)
        code, out, err = _check(tmp_path, template, "user_fields.plna")
        assert 1 == code, (out, err)
        assert ("app desk: apps.desk.fields maps app field(s) the app does not have: "
                "user_fields.plna (it has: ") in err
        assert "user_fields.plan" in err

        code, out, err = _check(tmp_path, template, "user_fields.plan")
        assert 0 == code, (out, err)
        assert "ok app desk: connected, every mapped field exists" in out.splitlines()
    finally:
        served.stop()


def test_check_connect_catches_an_unknown_mailchimp_merge_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mailchimp: the member attributes the connector reads, and the audience's merge tags
    (getListsIdMergeFields, served by the simulator on loopback)."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.mailchimp import MailchimpSimulator

    sim = MailchimpSimulator()
    monkeypatch.setenv("CS_TEST_MC_KEY", sim.api_key)
    served = serve(sim.app)
    try:
        template = MAILCHIMP.replace("{base_url}", served.base_url + "/3.0")
        code, out, err = _check(tmp_path, template, "FNAM")
        assert 1 == code, (out, err)
        assert "app news: apps.news.fields maps app field(s) the app does not have: FNAM (it has: " in err
        assert "ADDRESS.city" in err

        code, out, err = _check(tmp_path, template, "FNAME")
        assert 0 == code, (out, err)
        assert "ok app news: connected, every mapped field exists" in out.splitlines()
    finally:
        served.stop()


def test_check_connect_catches_an_unknown_chatwoot_custom_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chatwoot: the contact's attributes, `custom_attributes.KEY` per contact attribute the
    account defines, and any key of the free `additional_attributes` hash."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.chatwoot import ChatwootSimulator

    sim = ChatwootSimulator(contact_attributes=["plan"])
    monkeypatch.setenv("CS_TEST_CW_TOKEN", sim.api_access_token)
    served = serve(sim.app)
    try:
        template = CHATWOOT.replace("{base_url}", served.base_url)
        code, out, err = _check(tmp_path, template, "custom_attributes.plna")
        assert 1 == code, (out, err)
        assert ("app inbox: apps.inbox.fields maps app field(s) the app does not have: "
                "custom_attributes.plna (it has: ") in err

        code, out, err = _check(tmp_path, template, "custom_attributes.plan")
        assert 0 == code, (out, err)
        assert "ok app inbox: connected, every mapped field exists" in out.splitlines()
    finally:
        served.stop()


def test_check_connect_catches_an_unknown_hubspot_property(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HubSpot: the account's contact properties by internal name (the Properties API, "Read
    all properties", served by the simulator on loopback), custom ones included."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.hubspot import HubSpotSimulator

    sim = HubSpotSimulator(access_token="hs-check-token", custom_properties=["plan_tier"],
                           rate_limit=None)
    monkeypatch.setenv("CS_TEST_HS_TOKEN", "hs-check-token")
    served = serve(sim.app)
    try:
        template = HUBSPOT.replace("{base_url}", served.base_url)
        code, out, err = _check(tmp_path, template, "firstnme")
        assert 1 == code, (out, err)
        assert ("app crm: apps.crm.fields maps app field(s) the app does not have: "
                "firstnme (it has: ") in err
        assert "plan_tier" in err  # the custom property is listed among what it has

        code, out, err = _check(tmp_path, template, "firstname")
        assert 0 == code, (out, err)
        assert "ok app crm: connected, every mapped field exists" in out.splitlines()
    finally:
        served.stop()
