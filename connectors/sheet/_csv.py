"""CSV files: UTF-8 text, with or without a byte order mark, in a configurable dialect.

Rows the connector does not change are written back as the very bytes they were read as, with
their own quoting and line endings, so text in any script (Persian, Arabic, with ZWNJ and
bidi marks) and a person's own formatting survive a rewrite byte for byte. A changed or new
row is spelled with Python's `csv` module (minimal quoting) and the file's own line ending.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from customer_sync_connectors.sheet._grid import Grid, UnreadableFile, Unwritable

__all__ = ["BOM", "CsvGrid"]

BOM = b"\xef\xbb\xbf"


@dataclass
class _Row:
    cells: list[str]
    raw: str | None  # the text it was read as; None once changed (or new)
    removed: bool = False


class _Tap:
    """The lines the csv reader consumed for its last row (a quoted cell can span lines)."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.taken: list[str] = []

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        return line

    def pop(self) -> str:
        text, self.taken = "".join(self.taken), []
        return text


class CsvGrid(Grid):
    """A CSV file read from bytes (see the module docstring).

    Args:
        data: the file's bytes (empty for a new file).
        delimiter, quotechar: the dialect.
        write_bom: start the dumped file with a byte order mark.
        line_terminator: the line ending of new rows when the file has none to copy.
        header: the header of a new (empty) file.
    """

    def __init__(self, data: bytes, *, delimiter: str, quotechar: str, write_bom: bool,
                 line_terminator: str, header: list[str] | None = None) -> None:
        self._dialect = {"delimiter": delimiter, "quotechar": quotechar}
        self._bom = write_bom
        body = data.removeprefix(BOM)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(
                f"not UTF-8 at byte {exc.start + len(data) - len(body)}; save it as "
                "'CSV UTF-8'") from None
        tap = _Tap(text)
        reader = csv.reader(tap, strict=True, **self._dialect)
        self._rows: list[_Row] = []
        self._header_raw: str | None = None
        self.header = list(header or [])
        try:
            for cells in reader:
                raw = tap.pop()
                if self._header_raw is None:
                    self.header, self._header_raw = cells, raw
                else:
                    self._rows.append(_Row(cells, raw))
        except csv.Error as exc:
            raise UnreadableFile(f"not valid CSV at line {reader.line_num}: {exc}") from None
        self._eol = _line_ending(self._header_raw) or line_terminator
        self.check_header()

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for handle, row in enumerate(self._rows):
            if row.removed or not any(c.strip() for c in row.cells):
                continue
            yield handle, {name: (row.cells[i] if i < len(row.cells) and row.cells[i] != ""
                                  else None)
                           for i, name in enumerate(self.header) if name}

    def set(self, handle: int, values: Mapping[str, Any]) -> None:
        row = self._rows[handle]
        cells = list(row.cells)
        for name, value in values.items():
            i = self._position(name)
            cells.extend([""] * (i + 1 - len(cells)))
            cells[i] = _cell(name, value)
        row.cells, row.raw = cells, None
        self.changed = True

    def append(self, values: Mapping[str, Any]) -> None:
        self._rows.append(_Row([""] * len(self.header), None))
        self.set(len(self._rows) - 1, values)

    def remove(self, handle: int) -> None:
        self._rows[handle].removed = True
        self.changed = True

    def add_column(self, name: str) -> None:
        self.header.append(name)
        self._header_raw = None
        self.changed = True

    def dump(self) -> bytes:
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator=self._eol, **self._dialect)
        pieces: list[str] = []
        for raw, cells in [(self._header_raw, self.header)] + [
                (r.raw, r.cells) for r in self._rows if not r.removed]:
            if pieces and not _line_ending(pieces[-1]):
                pieces[-1] += self._eol  # a last line without its line ending, now followed
            if raw is not None:
                pieces.append(raw)
            else:
                writer.writerow(cells)
                pieces.append(out.getvalue())
                out.seek(0)
                out.truncate()
        return (BOM if self._bom else b"") + "".join(pieces).encode("utf-8")

    def _position(self, name: str) -> int:
        i = self.column(name)
        if i is None:
            self.add_column(name)
            i = len(self.header) - 1
        return i


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise Unwritable(f"column {name!r} takes text, a number or a boolean; map a set or a list "
                     "with a transform such as csv")


def _line_ending(text: str | None) -> str | None:
    if not text:
        return None
    if text.endswith("\r\n"):
        return "\r\n"
    if text.endswith(("\n", "\r")):
        return text[-1]
    return None
