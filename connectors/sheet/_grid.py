"""The file as a grid of cells: a header row naming the columns, then one row per record.

`Grid` is what the connector edits; `_csv` and `_xlsx` read and write it. A grid is always
built from the bytes of one read of the file, edited in memory, and dumped whole: the
connector never edits the file in place (see `_replace`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Grid", "UnreadableFile", "Unwritable"]


class UnreadableFile(ValueError):
    """The bytes are not a file of this kind (or not yet: a save half done). The message names
    the line or the problem, never a cell's value."""


class Unwritable(ValueError):
    """A value a cell of this kind of file cannot hold; the message names the column only."""


class Grid(ABC):
    """A header and rows, addressed by a row handle that stays valid until `dump`.

    Attributes:
        header: the column names, in file order ("" for an unnamed column).
        changed: a cell, row or column was changed since the grid was read.
    """

    header: list[str]
    changed: bool = False

    @abstractmethod
    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(handle, {column: value}) for every row that is not blank, in file order. An empty
        cell is None."""

    @abstractmethod
    def set(self, handle: int, values: Mapping[str, Any]) -> None:
        """Set some cells of one row; every other cell keeps what the file holds.

        Raises:
            Unwritable: a value this kind of file cannot hold.
        """

    @abstractmethod
    def append(self, values: Mapping[str, Any]) -> None:
        """Add a row after the last one (see `set`)."""

    @abstractmethod
    def remove(self, handle: int) -> None:
        """Drop a row from what `dump` writes."""

    @abstractmethod
    def add_column(self, name: str) -> None:
        """Name a new last column (empty in every row)."""

    @abstractmethod
    def dump(self) -> bytes:
        """The whole file, as it is to be written."""

    def column(self, name: str) -> int | None:
        """The position of a named column, or None."""
        try:
            return self.header.index(name)
        except ValueError:
            return None

    def check_header(self) -> None:
        """Refuse a header that names one column twice: a cell could not be told apart.

        Raises:
            UnreadableFile: a name appears twice.
        """
        named = [h for h in self.header if h]
        seen: set[str] = set()
        for name in named:
            if name in seen:
                raise UnreadableFile(f"the header names column {name!r} twice")
            seen.add(name)
