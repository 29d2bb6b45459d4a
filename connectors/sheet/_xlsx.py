"""XLSX workbooks, through openpyxl: one worksheet is the table, its first row the header.

The workbook is loaded whole, the changed cells are set, and it is saved whole: the other
worksheets, column widths and cell styles stay. What openpyxl does not read (shapes: images,
charts, drawings; macros) can be lost on the first write; docs/connectors/csv.md says so.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from customer_sync_connectors.sheet._grid import Grid, UnreadableFile, Unwritable
from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils.exceptions import InvalidFileException

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

__all__ = ["XlsxGrid"]


class XlsxGrid(Grid):
    """One worksheet of a workbook read from bytes (empty bytes: a new workbook).

    Args:
        data: the file's bytes.
        sheet: the worksheet's name (None: the first).
        header: the header of a new workbook.
    """

    def __init__(self, data: bytes, *, sheet: str | None, header: list[str] | None = None) -> None:
        if data:
            try:
                self._book = load_workbook(io.BytesIO(data))
            except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
                raise UnreadableFile(f"not an xlsx workbook ({type(exc).__name__})") from None
        else:
            self._book = Workbook()
            if sheet:
                self._book.active.title = sheet
        if sheet is None:
            self._ws: Worksheet = self._book.worksheets[0]
        elif sheet in self._book.sheetnames:
            self._ws = self._book[sheet]
        else:
            raise UnreadableFile(f"the workbook has no worksheet {sheet!r}")
        if not data and header:
            self._ws.append(list(header))
        first = next(self._ws.iter_rows(min_row=1, max_row=1, values_only=True), ())
        self.header = ["" if v is None else str(v) for v in first]
        while self.header and self.header[-1] == "":
            self.header.pop()
        self._removed: set[int] = set()
        self.check_header()

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        width = len(self.header)
        if width == 0:
            return
        for number, values in enumerate(
                self._ws.iter_rows(min_row=2, max_col=width, values_only=True), start=2):
            if number in self._removed:
                continue
            cells = [_value(v) for v in values]
            if all(c is None for c in cells):
                continue
            yield number, {name: (cells[i] if i < len(cells) else None)
                           for i, name in enumerate(self.header) if name}

    def set(self, handle: int, values: Mapping[str, Any]) -> None:
        cells = {name: _cell(name, value) for name, value in values.items()}  # all or nothing
        self.changed = True
        for name, value in values.items():
            i = self.column(name)
            if i is None:
                self.add_column(name)
                i = len(self.header) - 1
            cell = self._ws.cell(row=handle, column=i + 1)
            cell.value = cells[name]
            if isinstance(value, str):
                cell.data_type = "s"  # text, never a formula: a name may begin with "="

    def append(self, values: Mapping[str, Any]) -> None:
        self.set(self._last_row() + 1, values)

    def remove(self, handle: int) -> None:
        self._removed.add(handle)
        self.changed = True

    def add_column(self, name: str) -> None:
        self.changed = True
        self.header.append(name)
        self._ws.cell(row=1, column=len(self.header)).value = name

    def dump(self) -> bytes:
        for number in sorted(self._removed, reverse=True):
            self._ws.delete_rows(number)
        self._removed.clear()
        out = io.BytesIO()
        self._book.save(out)
        return out.getvalue()

    def _last_row(self) -> int:
        """The last row holding a value, removed rows included (they go only at `dump`);
        openpyxl's max_row counts styled empty rows too."""
        for number in range(self._ws.max_row, 1, -1):
            if any(c.value is not None for c in self._ws[number][: max(1, len(self.header))]):
                return number
        return 1


def _value(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _cell(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if ILLEGAL_CHARACTERS_RE.search(value):
            raise Unwritable(f"column {name!r}: the text holds a control character an xlsx "
                             "cell cannot store")
        return value
    raise Unwritable(f"column {name!r} takes text, a number or a boolean; map a set or a list "
                     "with a transform such as csv")

