"""The spreadsheet connectors: `csv` and `xlsx`, customers as the rows of one file.

Registered as the `csv` and `xlsx` entry points of `customer_sync.connectors`; `mapping.toml`
beside this module is their default field map.
"""

from __future__ import annotations

from customer_sync_connectors.sheet.connector import CsvConnector, SheetConnector, XlsxConnector
from customer_sync_connectors.sheet.settings import CsvSettings, SheetSettings, XlsxSettings

__all__ = ["CsvConnector", "CsvSettings", "SheetConnector", "SheetSettings", "XlsxConnector",
           "XlsxSettings"]
