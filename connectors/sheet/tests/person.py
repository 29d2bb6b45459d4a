"""A person editing the sheet: the control surface the spreadsheet connectors' tests use.

`SheetPerson` reads and writes the file as a person saving from a spreadsheet program would,
with its own code (the csv module, openpyxl), never the connector's.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook

HEADER = ["id", "email", "first_name", "last_name", "phone"]
BOM = b"\xef\xbb\xbf"


class SheetPerson:
    """Edits a csv or xlsx file by reading it whole and saving it whole (a new file renamed
    over the old one, as spreadsheet programs save)."""

    rate_limit = None
    late_arrival_s = 0.0

    def __init__(self, path: Path, *, kind: str, header: list[str] | None = None) -> None:
        self.path = path
        self.kind = kind
        self.save([list(header or HEADER)])

    # -- the file ---------------------------------------------------------------------------

    def load(self) -> list[list[str]]:
        if self.kind == "csv":
            text = self.path.read_bytes().removeprefix(BOM).decode("utf-8")
            return [row for row in csv.reader(io.StringIO(text, newline=""))]
        book = load_workbook(self.path)
        return [["" if v is None else str(v) for v in row]
                for row in book.worksheets[0].iter_rows(values_only=True)]

    def save(self, rows: list[list[str]]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.person.tmp")
        if self.kind == "csv":
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator="\r\n").writerows(rows)
            tmp.write_bytes(BOM + out.getvalue().encode("utf-8"))
        else:
            book = Workbook()
            for row in rows:
                book.active.append([v if v != "" else None for v in row])
            book.save(tmp)
        os.replace(tmp, self.path)

    def table(self) -> tuple[list[str], dict[str, dict[str, str]]]:
        rows = self.load()
        header = rows[0]
        out: dict[str, dict[str, str]] = {}
        for row in rows[1:]:
            cells = dict(zip(header, row + [""] * (len(header) - len(row)), strict=False))
            if any(cells.values()):
                out[cells.get("id", "")] = cells
        return header, out

    # -- FakeApi ----------------------------------------------------------------------------

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email": f"person{i}@example.org", "first_name": f"First{i}",
                "last_name": f"Last{i}"}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        rows = self.load()
        header = rows[0]
        rid = uuid.uuid4().hex
        values = {"id": rid, **fields}
        rows.append([str(values.get(h, "") or "") for h in header])
        self.save(rows)
        return rid

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *,
             modified_at: datetime | None = None) -> None:
        rows = self.load()
        header = rows[0]
        for row in rows[1:]:
            if row and row[header.index("id")] == app_record_id:
                for key, value in fields.items():
                    row[header.index(key)] = str(value)
        self.save(rows)

    def remove(self, app_record_id: str) -> None:
        rows = self.load()
        i = rows[0].index("id")
        self.save([rows[0]] + [r for r in rows[1:] if not r or r[i] != app_record_id])

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        return self.table()[1].get(app_record_id)

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"no_such_column": "x", "email": "refused@example.org"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        return False  # a file answers no HTTP statuses

    def statuses_served(self) -> list[int] | None:
        return None

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> None:
        return None  # a file sends no webhooks

    def stale_webhook(self, app_record_id: str) -> None:
        return None
