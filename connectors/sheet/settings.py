"""Settings of the spreadsheet connectors: one `[apps.NAME.settings]` block of a `csv` or an
`xlsx` app. A file is an app; the settings name the file, its id column and, for csv, how the
text is spelled (delimiter, byte order mark)."""

from __future__ import annotations

from pydantic import Field, model_validator

from customer_sync.sdk import ConnectorSettings, Seconds

__all__ = ["CsvSettings", "SheetSettings", "XlsxSettings"]


class SheetSettings(ConnectorSettings):
    """What both spreadsheet connectors share.

    Attributes:
        path: the file. A person may keep it open in a spreadsheet program, save it, or replace
            it; the connector re-reads it before every write (see the connector's docstring).
        id_column: the column holding each row's id. A row without one (a row a person added)
            gets a fresh uuid, written back into the file at the next listing; a column missing
            from the header is added as the last column.
        columns: the columns exposed as app fields (default: every named column of the header
            but the id column). A listed column missing from the header is added when a write
            first sets it.
        email_column: the column `search_by_email` matches, ignoring case (None: no search).
        create_file: create the file, with the header `id_column` + `columns`, when it is
            missing (the quickstart). Needs `columns`.
        state_path: the connector's own small state beside the file: each row's content
            fingerprint and when the daemon first saw that content (the file holds no modified
            times), and the ids of rows that vanished. Default: `.NAME.customer-sync.json` in
            the file's folder.
        page_size: records per listed page.
        write_attempts: how often one write re-reads, merges and tries again when the file
            changed while it was being written, before it gives up with a transient error (the
            engine sends it again later).
        respect_office_locks: do not write while a spreadsheet program has the file open
            (LibreOffice's `.~lock.NAME#`, Microsoft Office's `~$NAME` beside it): the program
            would save its own copy over ours when the person saves. While it writes, the
            connector holds `.~lock.NAME#` itself, for the few milliseconds a write takes.
        delete_confirm_s: a row missing from the file is listed as deleted once it has been
            missing from two reads at least this far apart (a file read half saved in place
            deletes nothing); with the daemon's poll interval that is one poll later.
        tombstone_days: how long the ids of vanished rows are remembered (a create re-sent
            within that time finds its row's id deleted instead of adding it again).
    """

    path: str = Field(min_length=1)
    id_column: str = Field("id", min_length=1)
    columns: list[str] | None = None
    email_column: str | None = "email"
    create_file: bool = False
    state_path: str | None = None
    page_size: int = Field(1000, ge=1, le=100_000)
    write_attempts: int = Field(8, ge=1, le=1000)
    respect_office_locks: bool = True
    delete_confirm_s: Seconds = Field(1.0, ge=0)
    tombstone_days: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _columns_are_sane(self) -> SheetSettings:
        if self.columns is not None:
            if self.id_column in self.columns:
                raise ValueError(f"{self.id_column!r} is the id column; leave it out of columns")
            if len(set(self.columns)) != len(self.columns) or "" in self.columns:
                raise ValueError("columns must be distinct, non-empty names")
        if self.create_file and not self.columns:
            raise ValueError("create_file needs columns: the header of the new file")
        return self


class CsvSettings(SheetSettings):
    """A `csv` app: a UTF-8 text file, read with or without a byte order mark.

    Attributes:
        delimiter: the one character between cells (`;` where Excel's list separator is one,
            `\\t` for tab-separated files).
        quotechar: the character that quotes a cell holding the delimiter or a line break.
        write_bom: start the file with a UTF-8 byte order mark when the connector writes it, so
            that Excel reads it as UTF-8 (without one, Excel reads Persian and Arabic text in the
            Windows code page and shows it garbled). False keeps a file without one as it is.
        line_terminator: the line ending of a new file; an existing file keeps its own.
    """

    delimiter: str = Field(",", min_length=1, max_length=1)
    quotechar: str = Field('"', min_length=1, max_length=1)
    write_bom: bool = True
    line_terminator: str = Field("\r\n", pattern=r"^(\r\n|\n)$")

    @model_validator(mode="after")
    def _dialect_is_sane(self) -> CsvSettings:
        if self.delimiter == self.quotechar or self.delimiter in "\r\n" or self.quotechar in "\r\n":
            raise ValueError("delimiter and quotechar must differ and be no line break")
        return self


class XlsxSettings(SheetSettings):
    """An `xlsx` app: one worksheet of an Excel workbook (read and written with openpyxl).

    Attributes:
        sheet: the worksheet's name (default: the first worksheet).
    """

    sheet: str | None = None
