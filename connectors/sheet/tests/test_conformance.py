"""The csv and xlsx connectors pass the connector conformance suite, against a file a person
edits and saves as a spreadsheet program would."""

from __future__ import annotations

from pathlib import Path

import pytest
from customer_sync_connectors.sheet import CsvConnector, CsvSettings, XlsxConnector, XlsxSettings
from customer_sync_connectors.sheet.tests.person import SheetPerson

from customer_sync.testing.conformance import ConnectorConformance


class TestCsvConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self, tmp_path: Path) -> SheetPerson:
        return SheetPerson(tmp_path / "customers.csv", kind="csv")

    @pytest.fixture
    async def connector(self, fake_api: SheetPerson):
        settings = CsvSettings(path=str(fake_api.path), page_size=5, delete_confirm_s=0)
        async with CsvConnector(settings, app="sheet") as sheet:
            yield sheet


class TestXlsxConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self, tmp_path: Path) -> SheetPerson:
        return SheetPerson(tmp_path / "customers.xlsx", kind="xlsx")

    @pytest.fixture
    async def connector(self, fake_api: SheetPerson):
        settings = XlsxSettings(path=str(fake_api.path), page_size=5, delete_confirm_s=0)
        async with XlsxConnector(settings, app="sheet") as sheet:
            yield sheet
