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
CHECKPOINT = 20  # every this many saves the person waits until one more write of ours lands
MIN_WRITES = 80
# No livelock is possible: every CHECKPOINT saves the person waits, lock released, for our
# next write. The timeout only turns a hang into a failure with a message.
HANG_S = 300
EDITOR = Path(__file__).with_name("_editor.py")
BOM = b"\xef\xbb\xbf"


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = path.read_bytes().removeprefix(BOM).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], [dict(zip(rows[0], r, strict=False)) for r in rows[1:] if any(r)]


class Editor:
    """The person's process: `asks` is set while it waits for a write of ours, `done` once it
    has made every save; `said` is its last line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None
        self.stdin = process.stdin
        self.asks = asyncio.Event()
        self.done = asyncio.Event()
        self.said = ""
        self.lines = 0
        self._saves = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, path: Path) -> Editor:
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, str(EDITOR), str(path), str(SAVES), str(CHECKPOINT),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))

    async def progressed(self, seen: int) -> None:
        """Wait until the person said more than `seen` lines (ended a save, so its lock is
        gone, or asked for a write), or is done."""
        async with self._saves:
            await self._saves.wait_for(
                lambda: self.lines > seen or self.asks.is_set() or self.done.is_set())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.said = line.decode().strip()
            self.lines += 1
            if self.said == "wait":
                self.asks.set()
            async with self._saves:
                self._saves.notify_all()
        self.done.set()
        async with self._saves:
            self._saves.notify_all()


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
    editor = await Editor.start(path)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(HANG_S):
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


async def _race(settings: CsvSettings, editor: Editor,
                ) -> tuple[list[AppRecord], dict[str, tuple[str, str]], dict[str, int]]:
    """The connector's side: create and update rows until the person is done and at least
    MIN_WRITES writes are confirmed; then list once more. Returns the last listing, what we
    confirmed (email -> first name, last name), and counts."""
    ours: dict[str, tuple[str, str]] = {}
    made: dict[int, str] = {}  # create number -> row id
    refused = writes = 0
    async with CsvConnector(settings, app="sheet") as sheet:
        k = 0
        while not editor.done.is_set() or k < MIN_WRITES:
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
                seen = editor.lines
                try:
                    (outcome,) = await sheet.write_many([op])
                    break
                except TransientError:
                    refused += 1
                    if op.op == "create":
                        op = op.model_copy(update={"uncertain_since": decided})
                    await editor.progressed(seen)  # the person is saving: again once it is done
            assert outcome.receipt is not None, outcome.error
            writes += 1
            if op.op == "create":
                made[k] = outcome.receipt.app_record_id
                ours[email] = (f"ما {k}", "")
            else:
                ours[email] = (ours[email][0], f"u{k}")
            if editor.asks.is_set():  # it waits, holding no lock, for a write of ours
                editor.asks.clear()
                editor.stdin.write(b"x")
                await editor.stdin.drain()
            if k % 5 == 4:
                try:
                    await collect(sheet)  # writes ids into the person's new rows
                except TransientError:
                    pass
            k += 1
        assert 0 == await editor.process.wait()
        assert f"saved {SAVES}" == editor.said
        while True:  # a last listing, once the person is done, ids the last rows
            try:
                _, listed = await collect(sheet)
                break
            except TransientError:
                await asyncio.sleep(0)

    return listed, ours, {"writes": writes, "refused": refused}
