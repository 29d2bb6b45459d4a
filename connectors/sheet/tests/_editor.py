"""A person saving a csv file over and over, run as its own process by test_concurrent_saves.

Each save is what a spreadsheet program does: take its lock file (LibreOffice's
`.~lock.NAME#`, waiting while the connector holds it), read the whole file, change it, save it whole (odd saves write a new file and
rename it over the old one; even saves rewrite the file in place), and drop the lock. Save `i`
adds a row without an id when `i % 3 == 0`, else edits the cells of the row added at
`i - i % 3`: the row's last name becomes `v{i}`. Every `checkpoint` saves it says `wait` on
stdout and waits, holding no lock, for one byte on stdin: the test sends it once a write of
its own has landed since, so the two interleave whatever the machine's speed. After each save
it says `saved N`.

Usage: python _editor.py FILE SAVES CHECKPOINT
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

BOM = b"\xef\xbb\xbf"


def load(path: Path) -> list[list[str]]:
    text = path.read_bytes().removeprefix(BOM).decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline="")))


def render(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return BOM + out.getvalue().encode("utf-8")


def edit(rows: list[list[str]], i: int) -> None:
    header = rows[0]
    col = {name: header.index(name) for name in ("id", "email", "first_name", "last_name")}
    if i % 3 == 0:
        row = [""] * len(header)
        row[col["email"]] = f"editor{i}@example.org"
        row[col["first_name"]] = f"ویرایشگر {i}"
        row[col["last_name"]] = "v0"
        rows.append(row)
        return
    email = f"editor{i - i % 3}@example.org"
    (row,) = [r for r in rows[1:] if len(r) > col["email"] and r[col["email"]] == email]
    row[col["last_name"]] = f"v{i}"


def main() -> None:
    path, saves, checkpoint = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    lock = path.parent / f".~lock.{path.name}#"
    for i in range(saves):
        if i and i % checkpoint == 0:
            print("wait", flush=True)
            if not sys.stdin.buffer.read(1):
                raise SystemExit("the test went away")
        while True:  # wait until nobody (the connector) holds the lock, as LibreOffice would
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                os.sched_yield()
        os.write(fd, b"editor,localhost,,;")
        os.close(fd)
        try:
            rows = load(path)
            edit(rows, i)
            data = render(rows)
            if i % 2:
                tmp = path.with_name(f"{path.name}.editor.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            else:
                with open(path, "r+b") as f:
                    f.write(data)
                    f.truncate()
        finally:
            lock.unlink()
        print("saved", i + 1, flush=True)


if __name__ == "__main__":
    main()
