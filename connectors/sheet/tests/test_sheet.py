"""The spreadsheet connectors' own promises: text survives byte for byte, ids are written back,
a person's edits are merged and never overwritten, a write refuses a file that changed under it
and tries again, and vanished rows become deletes."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from customer_sync_connectors.sheet import (
    CsvConnector,
    CsvSettings,
    XlsxConnector,
    XlsxSettings,
    _replace,
)
from customer_sync_connectors.sheet.tests.person import BOM, SheetPerson

from customer_sync.sdk import RateLimited, RecordGone, RecordRejected, TransientError, WriteOp
from customer_sync.testing.conformance import collect

# Persian with ZWNJ (U+200C) and Persian yeh/kaf; Arabic with diacritics, Arabic yeh and kaf,
# teh marbuta; a right-to-left mark; Persian digits in a phone.
PERSIAN = "می\u200cخواهم کیان"
ARABIC = "عَلِيّ كريمة"
RTL_PHONE = "\u200f۰۹۱۲۱۲۳۴۵۶۷"

# A file as Excel saves "CSV UTF-8": BOM, CRLF, quotes only where needed, and one row quoted
# by hand the way another program writes it.
EXCEL_CSV = (
    BOM
    + b"id,email,first_name,last_name,phone\r\n"
    + f"a1,ann@example.org,{PERSIAN},\"{ARABIC}\",{RTL_PHONE}\r\n".encode()
    + b'"b2","bob@example.org","Bob","Smith, Jr.",""\r\n'
    + b"c3,cy@example.org,Cy,\"two\r\nlines\",\r\n"
)


def csv_connector(path: Path, **settings: object) -> CsvConnector:
    return CsvConnector(CsvSettings(path=str(path), delete_confirm_s=0, **settings), app="sheet")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bom", [True, False], ids=["with-bom", "without-bom"])
async def test_untouched_rows_survive_a_rewrite_byte_for_byte(tmp_path: Path, bom: bool) -> None:
    """A write to one row leaves every other byte of the file as it was read, Persian and
    Arabic text, a hand-quoted row and a cell spanning lines included; the BOM is written as
    configured."""
    path = tmp_path / "customers.csv"
    original = EXCEL_CSV if bom else EXCEL_CSV.removeprefix(BOM)
    path.write_bytes(original)
    async with csv_connector(path, write_bom=bom) as sheet:
        await sheet.update("c3", {"first_name": "Cyrus"})
    written = path.read_bytes()
    assert original.replace(b"c3,cy@example.org,Cy,", b"c3,cy@example.org,Cyrus,") == written


async def test_persian_and_arabic_round_trip_exactly(tmp_path: Path) -> None:
    """Persian and Arabic values read from a file, and written to it, are the exact text,
    stored as the exact UTF-8 bytes."""
    path = tmp_path / "customers.csv"
    path.write_bytes(EXCEL_CSV)
    async with csv_connector(path) as sheet:
        (ann,) = await sheet.read(["a1"])
        assert PERSIAN == ann.fields["first_name"]
        assert ARABIC == ann.fields["last_name"]
        assert RTL_PHONE == ann.fields["phone"]
        receipt = await sheet.create({"email": "new@example.org", "first_name": ARABIC,
                                      "last_name": PERSIAN}, idempotency_key="k-fa")
        (made,) = await sheet.read([receipt.app_record_id])
    assert (ARABIC, PERSIAN) == (made.fields["first_name"], made.fields["last_name"])
    assert f"{ARABIC},{PERSIAN}".encode() in path.read_bytes()
    assert path.read_bytes().startswith(BOM + b"id,")


async def test_a_file_without_bom_keeps_none_when_so_configured(tmp_path: Path) -> None:
    """With `write_bom = false`, a file read without a BOM is written without one, and a
    file with one is read all the same."""
    path = tmp_path / "customers.csv"
    path.write_bytes(EXCEL_CSV.removeprefix(BOM))
    async with csv_connector(path, write_bom=False) as sheet:
        await sheet.update("a1", {"last_name": ARABIC + "ة"})
    assert path.read_bytes().startswith(b"id,email")


async def test_xlsx_round_trips_persian_and_arabic(tmp_path: Path) -> None:
    """An xlsx sheet holds Persian and Arabic text exactly, and a value starting with '=' as
    text, never as a formula."""
    person = SheetPerson(tmp_path / "customers.xlsx", kind="xlsx")
    rid = person.seed({"email": "ann@example.org", "first_name": PERSIAN})
    settings = XlsxSettings(path=str(person.path), delete_confirm_s=0)
    async with XlsxConnector(settings, app="sheet") as sheet:
        await sheet.update(rid, {"last_name": ARABIC, "phone": "=1+1"})
        (ann,) = await sheet.read([rid])
    assert (PERSIAN, ARABIC, "=1+1") == (ann.fields["first_name"], ann.fields["last_name"],
                                         ann.fields["phone"])
    assert {"first_name": PERSIAN, "last_name": ARABIC, "phone": "=1+1"}.items() <= \
        person.fields_of(rid).items()


async def test_semicolon_delimited_file(tmp_path: Path) -> None:
    """The delimiter is a setting (Excel writes ';' where the list separator is one)."""
    path = tmp_path / "customers.csv"
    path.write_bytes(BOM + b"id;email;first_name\r\nx1;ann@example.org;Ann, B.\r\n")
    async with csv_connector(path, delimiter=";") as sheet:
        (ann,) = await sheet.read(["x1"])
        await sheet.update("x1", {"first_name": "Ann; B."})
    assert "Ann, B." == ann.fields["first_name"]
    assert path.read_bytes().endswith(b'x1;ann@example.org;"Ann; B."\r\n')


# -- ids --------------------------------------------------------------------------------------


async def test_rows_without_an_id_get_one_written_back(tmp_path: Path) -> None:
    """Rows a person added without an id, or with a copy of another row's, get fresh ids in
    the file at the next listing, and keep them on every later listing."""
    path = tmp_path / "customers.csv"
    path.write_bytes(BOM + (
        b"email,first_name\r\n"  # no id column at all
        b"ann@example.org,Ann\r\n"
        b"bob@example.org,Bob\r\n"))
    async with csv_connector(path) as sheet:
        _, first = await collect(sheet)
        person = SheetPerson.__new__(SheetPerson)
        person.path, person.kind = path, "csv"
        rows = person.load()
        assert "id" == rows[0][-1]
        rows.append(["cy@example.org", "Cy", rows[1][-1]])  # a copied row, id and all
        person.save(rows)
        pages, second = await collect(sheet)
        _, third = await collect(sheet, pages[-1].cursor)
    _, table = person.table()
    assert 3 == len(table)
    assert {r.app_record_id for r in first} < set(table)
    assert {r.fields["email"] for r in second} >= {"cy@example.org"}
    assert {r.app_record_id for r in second} == set(table)
    assert [] == list(third)  # nothing changed since


async def test_a_create_sent_twice_adds_one_row(tmp_path: Path) -> None:
    """A create re-sent with the same key (its answer lost) finds the row the first made, even
    after a person deleted it meanwhile."""
    path = tmp_path / "customers.csv"
    person = SheetPerson(path, kind="csv")
    async with csv_connector(path) as sheet:
        op = WriteOp(key="k", op="create", fields={"first_name": "Ann"}, idempotency_key="ck")
        first, twin = await sheet.write_many([op, op.model_copy(update={"key": "k2"})])
        assert first.receipt.app_record_id == twin.receipt.app_record_id
        assert 1 == len(person.table()[1])
        person.remove(first.receipt.app_record_id)
        await collect(sheet)
        (again,) = await sheet.write_many([op])
    assert first.receipt.app_record_id == again.receipt.app_record_id
    assert {} == person.table()[1]


async def test_writes_are_rejected_one_by_one(tmp_path: Path) -> None:
    """An unknown column or a list value rejects its own write; the others in the batch land."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    rid = person.seed({"email": "ann@example.org"})
    async with csv_connector(person.path) as sheet:
        outcomes = await sheet.write_many([
            WriteOp(key="bad", op="update", app_record_id=rid, fields={"nope": "x"}),
            WriteOp(key="list", op="update", app_record_id=rid, fields={"phone": ["a"]}),
            WriteOp(key="gone", op="update", app_record_id="missing", fields={"phone": "1"}),
            WriteOp(key="ok", op="update", app_record_id=rid, fields={"first_name": "Ann"}),
        ])
    by_key = {o.key: o for o in outcomes}
    assert isinstance(by_key["bad"].error, RecordRejected)
    assert isinstance(by_key["list"].error, RecordRejected)
    assert isinstance(by_key["gone"].error, RecordGone)
    assert "Ann" == person.fields_of(rid)["first_name"]
    assert "" == person.fields_of(rid)["phone"]


# -- merging and concurrent saves -------------------------------------------------------------


async def test_a_persons_saved_edit_is_merged_not_overwritten(tmp_path: Path) -> None:
    """A person's edits saved while the daemon runs (another cell of the row the daemon writes,
    another row, a new row) are all in the file after the daemon's write."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org", "first_name": "Ann"})
    bob = person.seed({"email": "bob@example.org", "first_name": "Bob"})
    async with csv_connector(person.path) as sheet:
        await collect(sheet)
        person.edit(ann, {"phone": "+989121234567"})
        person.edit(bob, {"last_name": "Brown"})
        new = person.seed({"email": "cy@example.org"})
        await sheet.update(ann, {"first_name": "Anna"})
        _, listed = await collect(sheet)
    table = person.table()[1]
    assert ("Anna", "+989121234567") == (table[ann]["first_name"], table[ann]["phone"])
    assert "Brown" == table[bob]["last_name"]
    assert new in table
    assert {ann, bob, new} <= {r.app_record_id for r in listed}


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "check-then-rename"])
@pytest.mark.parametrize("how", ["replace", "in-place"])
async def test_a_save_during_the_write_is_kept_and_the_write_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: bool, how: str) -> None:
    """When a person saves (a new file renamed in, or the file rewritten in place) after the
    daemon read the file and before its new file is in place, the write is refused, read and
    merged again: both the person's edit and the daemon's are in the file."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org", "first_name": "Ann"})
    if not swap:
        monkeypatch.setattr(_replace, "_exchange_works", False)
    real_exchange = _replace._exchange
    saved: list[bool] = []

    def person_saves() -> None:
        if saved:
            return
        saved.append(True)
        rows = person.load()
        rows.append(["p1", "pat@example.org", "Pat", "", ""])
        if how == "replace":
            person.save(rows)
        else:
            with open(person.path, "r+b") as f:  # same file, truncated and written
                f.write(BOM + "\r\n".join(",".join(r) for r in rows).encode() + b"\r\n")
                f.truncate()

    def exchange(a: Path, b: Path) -> bool:
        # The last step before the new file goes in place (the swap, or without it the check
        # and the rename): the person saves right then, once.
        person_saves()
        return real_exchange(a, b)

    monkeypatch.setattr(_replace, "_exchange", exchange)
    async with csv_connector(person.path) as sheet:
        with structlog.testing.capture_logs() as logs:
            await sheet.update(ann, {"first_name": "Anna"})
    table = person.table()[1]
    assert "Anna" == table[ann]["first_name"]
    assert "Pat" == table["p1"]["first_name"]
    assert any(e["event"] == "app.file_changed_during_write" for e in logs)
    assert [] == [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


async def test_a_file_changing_under_every_attempt_is_a_transient_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `write_attempts` refusals the write fails as transient (the engine sends it again
    later) and the file holds the person's last save."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org", "first_name": "Ann"})
    real_exchange = _replace._exchange
    calls = iter(range(1000))

    def exchange(a: Path, b: Path) -> bool:
        call = next(calls)
        if call % 2 == 0:  # before each attempt's swap; odd calls swap the person's save back
            person.edit(ann, {"phone": f"+1415555{call // 2:04d}"})
        return real_exchange(a, b)

    monkeypatch.setattr(_replace, "_exchange", exchange)
    async with csv_connector(person.path, write_attempts=3) as sheet:
        with pytest.raises(TransientError):
            await sheet.update(ann, {"first_name": "Anna"})
    assert ("Ann", "+14155550002") == (person.fields_of(ann)["first_name"],
                                       person.fields_of(ann)["phone"])


async def test_no_write_while_a_spreadsheet_program_has_the_file_open(tmp_path: Path) -> None:
    """While LibreOffice's or Office's lock file is beside the file, writes are refused as
    rate limited (not yet, not failed) and leave the file alone; reads go on."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org", "first_name": "Ann"})
    before = person.path.read_bytes()
    async with csv_connector(person.path) as sheet:
        for lock in (".~lock.customers.csv#", "~$customers.csv"):
            (tmp_path / lock).write_text("someone,host,,2026-03-01;")
            with pytest.raises(RateLimited):  # spends no write attempt in the engine
                await sheet.update(ann, {"first_name": "Anna"})
            assert before == person.path.read_bytes()
            assert 1 == len(await sheet.read([ann]))
            (tmp_path / lock).unlink()
        await sheet.update(ann, {"first_name": "Anna"})
    assert "Anna" == person.fields_of(ann)["first_name"]


# -- modified times and deletes ---------------------------------------------------------------


async def test_a_changed_row_is_stamped_when_first_seen(tmp_path: Path) -> None:
    """A row whose content changed since the last read is modified at the time of that read;
    an unchanged row keeps its time, also across a restart (the state file)."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org"})
    bob = person.seed({"email": "bob@example.org"})
    clock = Clock()
    settings = CsvSettings(path=str(person.path))
    async with CsvConnector(settings, app="sheet", clock=clock) as sheet:
        _, first = await collect(sheet)
    clock.now += timedelta(minutes=5)
    person.edit(bob, {"first_name": "Bob"})
    async with CsvConnector(settings, app="sheet", clock=clock) as sheet:
        pages, _ = await collect(sheet)
        (ann_rec, bob_rec) = sorted(await sheet.read([ann, bob]), key=lambda r: r.app_record_id != ann)
        _, since = await collect(sheet, pages[-1].cursor)
    assert {datetime(2026, 3, 1, 12, 0, tzinfo=UTC)} == {r.modified_at for r in first}
    assert datetime(2026, 3, 1, 12, 0, tzinfo=UTC) == ann_rec.modified_at
    assert datetime(2026, 3, 1, 12, 5, tzinfo=UTC) == bob_rec.modified_at
    assert [] == list(since)


async def test_a_vanished_row_is_a_delete_once_confirmed(tmp_path: Path) -> None:
    """A row missing from the file is listed as deleted once it has been missing from two
    reads `delete_confirm_s` apart (a half-saved file deletes nothing); until then the id
    scan still counts it live. A row back in time is no delete at all."""
    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org"})
    bob = person.seed({"email": "bob@example.org"})
    clock = Clock()
    settings = CsvSettings(path=str(person.path), delete_confirm_s=1.0)
    async with CsvConnector(settings, app="sheet", clock=clock) as sheet:
        pages, _ = await collect(sheet)
        cursor = pages[-1].cursor
        saved = person.path.read_bytes()
        person.remove(ann)
        person.remove(bob)
        _, seen = await collect(sheet, cursor)
        assert [] == [r for r in seen if r.deleted]
        assert {ann, bob} == {i async for chunk in sheet.list_ids() for i in chunk}
        rows = person.load()
        person.path.write_bytes(saved)  # a person restores ann (and bob) ...
        person.remove(bob)  # ... and deletes bob for good
        clock.now += timedelta(seconds=2)
        _, later = await collect(sheet, cursor)
    assert [bob] == [r.app_record_id for r in later if r.deleted]
    assert ann not in {r.app_record_id for r in later}
    assert rows  # the person's file was read


async def test_a_lock_left_by_a_dead_daemon_is_removed(tmp_path: Path) -> None:
    """A lock file this connector left behind in a process that is gone does not block writes;
    one held by a live process (or by a person's program) does."""
    import socket
    import sys

    person = SheetPerson(tmp_path / "customers.csv", kind="csv")
    ann = person.seed({"email": "ann@example.org"})
    gone = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=asyncio.subprocess.PIPE)
    out, _ = await gone.communicate()
    lock = tmp_path / ".~lock.customers.csv#"
    lock.write_text(f"customer-sync,{socket.gethostname()},{out.decode().strip()},x;")
    async with csv_connector(person.path) as sheet:
        await sheet.update(ann, {"first_name": "Ann"})
        assert not lock.exists()
        lock.write_text(f"customer-sync,{socket.gethostname()},{os.getpid()},x;")
        with pytest.raises(TransientError):
            await sheet.update(ann, {"first_name": "Anna"})
    assert "Ann" == person.fields_of(ann)["first_name"]


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
async def test_ids_written_back_survive_a_persons_next_save(tmp_path: Path, kind: str) -> None:
    """Ids written into a person's new rows are in the file the person saves next, and the
    rows keep them (csv and xlsx alike)."""
    person = SheetPerson(tmp_path / f"customers.{kind}", kind=kind)
    rows = person.load()
    rows.append(["", "new@example.org", "New", "", ""])
    person.save(rows)
    connector = (csv_connector(person.path) if kind == "csv" else XlsxConnector(
        XlsxSettings(path=str(person.path), delete_confirm_s=0), app="sheet"))
    async with connector as sheet:
        _, first = await collect(sheet)
        (rid,) = [r.app_record_id for r in first]
        person.edit(rid, {"last_name": "Row"})
        _, second = await collect(sheet)
    assert [rid] == [r.app_record_id for r in second]
    assert "Row" == person.fields_of(rid)["last_name"]
