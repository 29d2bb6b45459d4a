"""A person saves the csv file a thousand times, from another process, while the connector
writes it; at the end nothing is lost: every row and edit the person saved, and every write
the connector confirmed, is in the file, once.

The person (`_editor.py`) saves as spreadsheet programs do, half the time by renaming a new
file over the old one and half the time by rewriting it in place, holding its lock file while
it reads and saves. The connector creates rows and updates them through its own write path
(`write_many`, as the engine's dispatch calls it), retrying a write that ended in a transient
error as the engine does (a create with `uncertain_since`), and lists the file now and then,
which writes ids into the person's new rows.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import structlog
from customer_sync_connectors.sheet import CsvConnector, CsvSettings

from customer_sync.sdk import AppRecord, TransientError, WriteOp
from customer_sync.testing.conformance import collect

SAVES = 1000
CHECKPOINT = 20  # the person waits for one more write of ours every this many saves
MIN_WRITES = 80
MAX_TRIES = 200_000  # a bound on retries instead of a time limit
EDITOR = Path(__file__).with_name("_editor.py")
BOM = b"\xef\xbb\xbf"


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = path.read_bytes().removeprefix(BOM).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], [dict(zip(rows[0], r, strict=False)) for r in rows[1:] if any(r)]


def expected_editor_rows(saves: int) -> dict[str, str]:
    """email -> last name, after the person's `saves` saves (see _editor.py)."""
    out = {}
    for k in range(0, saves, 3):
        last = max((i for i in (k + 1, k + 2) if i < saves), default=None)
        out[f"editor{k}@example.org"] = "v0" if last is None else f"v{last}"
    return out


async def test_a_thousand_saves_by_another_process_lose_nothing(tmp_path: Path) -> None:
    """Every row and edit of a person saving 1000 times (rename and in-place) while the
    connector creates and updates rows is in the file at the end, once, beside every write
    of the connector."""
    path = tmp_path / "customers.csv"
    path.write_bytes(BOM + b"id,email,first_name,last_name,phone\r\n")
    settings = CsvSettings(path=str(path), write_attempts=3, delete_confirm_s=0)
    editor = await asyncio.create_subprocess_exec(
        sys.executable, str(EDITOR), str(path), str(SAVES), str(CHECKPOINT),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert editor.stdin is not None
    with structlog.testing.capture_logs() as logs:
        listed, ours, stats = await _race(settings, editor)
    events = Counter(e["event"] for e in logs)

    _, rows = read_table(path)
    ids = [r["id"] for r in rows]
    assert all(ids) and len(ids) == len(set(ids)), "every row has its own id"
    by_email: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_email.setdefault(row["email"], []).append(row)
    editor_rows = expected_editor_rows(SAVES)
    assert set(editor_rows) | set(ours) == set(by_email)
    assert [] == [e for e, found in by_email.items() if len(found) != 1], "a row twice"
    for email, last_name in editor_rows.items():
        (row,) = by_email[email]
        number = email.removeprefix("editor").split("@")[0]
        assert (f"ویرایشگر {number}", last_name) == (row["first_name"], row["last_name"]), email
    for email, (first_name, last_name) in ours.items():
        (row,) = by_email[email]
        assert (first_name, last_name) == (row["first_name"], row["last_name"]), email
    assert {r["id"] for r in rows} == {r.app_record_id for r in listed if not r.deleted}
    assert [] == sorted(p.name for p in tmp_path.iterdir()
                        if p.name.endswith(".tmp") or ".conflict-" in p.name)
    assert stats["writes"] >= MIN_WRITES
    # What the race looked like (not asserted: it depends on the machine's timing).
    print(f"saves={SAVES} writes={stats['writes']} refused={stats['refused']} "
          f"changed_during_write={events['app.file_changed_during_write']}")


async def _race(settings: CsvSettings, editor: asyncio.subprocess.Process,
                ) -> tuple[list[AppRecord], dict[str, tuple[str, str]], dict[str, int]]:
    """The connector's side: create and update rows until the person is done and at least
    MIN_WRITES writes are confirmed; then list once more. Returns the last listing, what we
    confirmed (email -> first name, last name), and counts."""
    assert editor.stdin is not None
    ours: dict[str, tuple[str, str]] = {}
    made: dict[int, str] = {}  # create number -> row id
    tries = refused = writes = 0
    async with CsvConnector(settings, app="sheet") as sheet:
        k = 0
        while editor.returncode is None or k < MIN_WRITES:
            if k % 2 == 0:
                email = f"ours{k}@example.org"
                op = WriteOp(key=f"c{k}", op="create", idempotency_key=f"c{k}",
                             fields={"email": email, "first_name": f"ما {k}"})
            else:
                email = f"ours{k - 1}@example.org"
                op = WriteOp(key=f"u{k}", op="update", app_record_id=made[k - 1],
                             fields={"last_name": f"u{k}"})
            decided = datetime.now(UTC)
            while True:
                tries += 1
                assert tries < MAX_TRIES, "the connector never got a write in"
                try:
                    (outcome,) = await sheet.write_many([op])
                    break
                except TransientError:
                    refused += 1
                    if op.op == "create":
                        op = op.model_copy(update={"uncertain_since": decided})
                    await asyncio.sleep(0)
            assert outcome.receipt is not None, outcome.error
            writes += 1
            if op.op == "create":
                made[k] = outcome.receipt.app_record_id
                ours[email] = (f"ما {k}", "")
            else:
                ours[email] = (ours[email][0], f"u{k}")
            if editor.returncode is None:
                try:
                    editor.stdin.write(b"x")
                    await editor.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            if k % 5 == 4:
                try:
                    await collect(sheet)  # writes ids into the person's new rows
                except TransientError:
                    pass
            k += 1
        out, _ = await editor.communicate()
        assert 0 == editor.returncode
        assert f"saved {SAVES}".encode() in out
        while True:  # a last listing, once the person is done, ids the last rows
            try:
                _, listed = await collect(sheet)
                break
            except TransientError:
                await asyncio.sleep(0)

    return listed, ours, {"writes": writes, "refused": refused}
