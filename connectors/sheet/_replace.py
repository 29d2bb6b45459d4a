"""Reading the file consistently and replacing it atomically, without ever discarding a
version someone else saved.

A write takes the file's lock (`file_lock`), reads the file (`read_file`), builds the new
content from exactly those bytes, writes it to a temporary file in the same folder (fsync), and
puts it in place (`replace`):

- On Linux the new file is swapped with the current one in one step (`renameat2` with
  `RENAME_EXCHANGE`). The version swapped out is then compared with the bytes the new content
  was built from. If they differ, someone saved in between: the swap is undone (their version
  goes back in place) and `FileChanged` asks the caller to read and merge again. Nothing
  another program saved is ever unlinked unread.
- Elsewhere (or on a file system without the swap) the file is read again just before
  `os.replace`, and `FileChanged` is raised when it changed. A save landing in the microseconds
  between that check and the rename can still be replaced; docs/connectors/csv.md says so.

The lock is the one spreadsheet programs use. LibreOffice creates `.~lock.NAME#` beside a file
it opens and refuses (or offers read-only) a file whose lock is there; Microsoft Office creates
`~$NAME`. A program that has the file open holds its own copy and saves it over ours, so while
either lock is there the connector does not write (`FileBusy`); while the connector writes, it
holds `.~lock.NAME#` itself for those few milliseconds, so a program opening the file then is
told it is in use instead of reading a version about to be replaced.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["FileBusy", "FileChanged", "FileMissing", "Snapshot", "file_lock", "office_lock",
           "read_file", "replace"]

#: What the connector writes into the lock file it holds while writing: LibreOffice shows the
#: first field as who has the file open. The third field (LibreOffice's user folder) holds the
#: process id, so that a lock left by a daemon that died can be told apart and removed.
_OWNER = "customer-sync"

_READ_TRIES = 50


class FileBusy(Exception):
    """A spreadsheet program has the file open, or the system refuses to replace it."""


class FileChanged(Exception):
    """The file changed between the read a write was built on and the replace.

    Attributes:
        kept: a version that could be neither kept in place nor proven to be superseded, saved
            beside the file under this name (None almost always).
    """

    def __init__(self, message: str, *, kept: str | None = None) -> None:
        super().__init__(message)
        self.kept = kept


class FileMissing(Exception):
    """The file is not there (or is empty: a save half done)."""


@dataclass(frozen=True)
class Snapshot:
    """One consistent read of the file: its bytes and what it was when read."""

    data: bytes
    exists: bool
    inode: int = 0
    mode: int = 0o644


def read_file(path: Path) -> Snapshot:
    """The file's bytes, read while nobody wrote it (the size, time and inode before and after
    the read agree); a missing file is `Snapshot(exists=False)`.

    Raises:
        FileChanged: it kept changing under every read.
    """
    for _ in range(_READ_TRIES):
        try:
            with open(path, "rb") as f:
                before = os.fstat(f.fileno())
                data = f.read()
                after = os.fstat(f.fileno())
            now = os.stat(path)
        except FileNotFoundError:
            return Snapshot(data=b"", exists=False)
        if not (_same_stat(before, after) and _same_stat(after, now)
                and len(data) == after.st_size):
            continue
        # A file rewritten in place within one tick of the file system's clock keeps its size
        # and time: a second read that agrees byte for byte rules out a torn first one.
        try:
            again = path.read_bytes()
        except FileNotFoundError:
            continue
        if again == data:
            return Snapshot(data=data, exists=True, inode=after.st_ino,
                            mode=stat.S_IMODE(after.st_mode))
    raise FileChanged("the file kept changing while it was read")


def office_lock(path: Path) -> str | None:
    """The name of a spreadsheet program's lock file beside `path`, when one is there:
    LibreOffice's `.~lock.NAME#`, Microsoft Office's `~$NAME` (also with the name's first two
    characters dropped, as Office does for long names)."""
    names = [f".~lock.{path.name}#", f"~${path.name}"]
    if len(path.name) > 2:
        names.append(f"~${path.name[2:]}")
    for name in names:
        if (path.parent / name).exists():
            return name
    return None


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the file's LibreOffice lock (`.~lock.NAME#`) for the block.

    Raises:
        FileBusy: a spreadsheet program (or another writer) holds a lock on the file.
    """
    lock = path.parent / f".~lock.{path.name}#"
    if (other := office_lock(path)) and other != lock.name:
        raise FileBusy(f"the file is open in a spreadsheet program ({other} is beside it)")
    mine = f"{_OWNER},{socket.gethostname()},{os.getpid()},{datetime.now(UTC).isoformat()};"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _remove_if_stale(lock):
                continue
            raise FileBusy(f"the file is open in a spreadsheet program ({lock.name} is beside "
                           "it)") from None
        break
    else:
        raise FileBusy(f"the file is open in a spreadsheet program ({lock.name} is beside it)")
    try:
        os.write(fd, mine.encode())
    finally:
        os.close(fd)
    try:
        yield
    finally:
        try:
            if lock.read_text(encoding="utf-8", errors="replace") == mine:
                lock.unlink()
        except FileNotFoundError:
            pass


def _remove_if_stale(lock: Path) -> bool:
    """Remove a lock this connector left in a process of this machine that is gone."""
    try:
        fields = lock.read_text(encoding="utf-8", errors="replace").split(",")
    except FileNotFoundError:
        return True
    if len(fields) < 3 or fields[0] != _OWNER or fields[1] != socket.gethostname():
        return False
    if os.name != "posix":
        return False  # os.kill(pid, 0) would end the process on Windows, not probe it
    try:
        pid = int(fields[2])
        os.kill(pid, 0)
    except (ValueError, OverflowError):
        return False
    except ProcessLookupError:
        lock.unlink(missing_ok=True)
        return True
    except PermissionError:
        return False
    return False


def replace(path: Path, base: Snapshot, content: bytes) -> None:
    """Put `content` at `path`, where `base` is the read it was built from (call it while
    holding `file_lock`, unless the operator switched locks off).

    Raises:
        FileChanged: the file is no longer `base`; read, merge and try again.
        FileBusy: the system refused the replace (Windows, while Excel holds the file).
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    tmp_is_ours = True
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        ours = os.stat(tmp).st_ino
        if not base.exists:
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, path)  # creates, never replaces
            except FileExistsError:
                raise FileChanged("the file appeared while it was being created") from None
            _fsync_dir(directory)
            return
        os.chmod(tmp, base.mode)
        swapped = _exchange(tmp, path)
        if not swapped:
            if read_file(path).data != base.data:
                raise FileChanged("the file changed while it was being written")
            _rename(tmp, path)
            tmp_is_ours = False
            _fsync_dir(directory)
            return
        tmp_is_ours = False  # tmp now holds the version that was in place
        displaced = tmp.read_bytes()
        if displaced == base.data:
            tmp.unlink()
            _fsync_dir(directory)
            return
        _undo(path, tmp, ours=ours, content=content, displaced=displaced, base=base)
        raise FileChanged("the file changed while it was being written")
    finally:
        if tmp_is_ours:
            tmp.unlink(missing_ok=True)


def _undo(path: Path, tmp: Path, *, ours: int, content: bytes, displaced: bytes,
          base: Snapshot) -> None:
    """After a swap that should not have happened: put the displaced version back when our file
    is still in place as we wrote it; drop the displaced version only when it is the one our
    write was built from; keep anything else beside the file. A save that lands during the
    undo itself is put back in place, never unlinked.

    Raises:
        FileChanged: with `kept` naming a version kept beside the file.
    """
    if _holds(path, ours, content):
        _exchange(tmp, path)  # tmp holds our file again, unless someone saved in between
        if _holds(tmp, ours, content):
            tmp.unlink()
            _fsync_dir(path.parent)
            return
        _exchange(tmp, path)  # their save back in place; tmp holds the displaced version
    if tmp.read_bytes() == base.data:
        tmp.unlink()
        _fsync_dir(path.parent)
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = path.with_name(f"{path.stem}.conflict-{stamp}{path.suffix}")
    os.rename(tmp, kept)
    _fsync_dir(path.parent)
    raise FileChanged("two saves raced the write; one is kept beside the file", kept=kept.name)


def _holds(path: Path, inode: int, content: bytes) -> bool:
    """`path` is the file of this inode, holding exactly `content`."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_ino == inode and f.read() == content
    except FileNotFoundError:
        return False


# -- the system calls ----------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: object | None = None
_exchange_works: bool | None = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); False when the system
    or file system cannot."""
    global _renameat2, _exchange_works
    if _exchange_works is False:
        return False
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError, TypeError):  # not Linux, or a libc without it
            _exchange_works = False
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
        fn.restype = ctypes.c_int
        _renameat2 = fn
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),  # type: ignore[operator]
                    _RENAME_EXCHANGE)
    if rc == 0:
        _exchange_works = True
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and _exchange_works is None:
        _exchange_works = False
        return False
    if err == errno.ENOENT:
        raise FileChanged("the file vanished while it was being written")
    if err in (errno.EACCES, errno.EPERM, errno.EBUSY):
        raise FileBusy("the system refused to replace the file")
    raise OSError(err, os.strerror(err))


def _rename(a: Path, b: Path) -> None:
    try:
        os.replace(a, b)
    except PermissionError:
        raise FileBusy("the system refused to replace the file (is it open in Excel?)") from None


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)
