"""Crash-safe file primitives: atomic replace, durable append, and an exclusive lock on an output folder.

Every writer here either completes or leaves the previous file as it was: a kill, a full disk (ENOSPC) or an I/O
error (EIO) never leaves a torn file behind. The lock is an ``fcntl.flock`` on ``<folder>/.lock``; the OS drops it
when the holding process dies, so a crashed run never leaves a folder stuck.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path
from types import TracebackType


class OutputLockedError(ValueError):
    """Another live rnnreg process holds the lock on this output folder."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on a directory; the data itself was already synced
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out (a regular file may take a large buffer in several writes)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no bytes written; the disk is probably full")
        view = view[written:]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    On any error (ENOSPC, EIO, a signal) the temporary file is removed, the error propagates and the previous
    ``path`` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what open() would have given it
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_output_file(path: Path, what: str, *, suffix: str | None = None, example: str | None = None) -> None:
    """Raise ``ValueError`` saying what is wrong and the fix when the file ``path`` cannot be written.

    ``what`` names the parameter in the message (e.g. ``"json path"``); ``suffix`` (e.g. ``".png"``) is required of
    the name when given; ``example`` is a file name offered when ``path`` is a folder. Cheap: call it before long work
    that ends in a write, so a bad path is refused first, and again before the write.
    """
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        fixed = path.parent / f"{path.stem or 'out'}{suffix}"
        raise ValueError(f"{what} must name a {suffix} file (got {str(path)!r}); e.g. {str(fixed)!r}")
    if path.is_dir():
        hint = f", e.g. {str(path / example)!r}" if example else ""
        raise ValueError(f"{what} {str(path)!r} is a folder; name a file in it{hint}")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"{what} {str(path)!r}: the folder {str(parent)!r} does not exist; create it or choose another path"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{what} {str(path)!r} is not writable; choose a path in a folder you can write to")


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline with one ``write``, then fsync (and the folder, when this created the file).

    A kill loses at most this line.
    """
    if "\n" in line:
        raise ValueError(f"append_line writes one line; got text with a newline: {line[:80]!r}")
    path = Path(path)
    data = (line + "\n").encode("utf-8")
    created = not path.exists()  # one writer (the folder's lock): nothing creates it between here and the open
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write on a regular file means the disk filled up mid-line
                raise OSError(errno.ENOSPC, f"short write to {path} ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except BaseException:
            # Cut back a partly written line so the file keeps only whole lines (one writer: the folder's lock). A
            # line written whole stays, even when a signal or a failed fsync interrupts after the write.
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size != size + len(data):
                    os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if created:  # a new file's name lives in its folder: without this a power cut can lose every line in it
        _fsync_dir(path.parent)


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write_bytes` calls left in ``folder``; hold its lock."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there; raise ``ValueError`` with the fix if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(
            f"output folder {str(folder)!r} is not writable ({e.strerror or e}); "
            "fix its permissions or choose another output folder"
        ) from None


class OutputLock:
    """``with OutputLock(folder): ...`` holds an exclusive lock on ``folder/.lock`` for the block.

    Raises :class:`OutputLockedError` (naming the holder's pid) when another process holds it, and ``ValueError``
    when the folder cannot be written. The lock is released on exit, and by the OS if the process dies.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        check_writable(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"{self.folder} is in use by another rnnreg process (pid {holder}); "
                "wait for it to finish or use another output folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock; the file stays (unlinking it would race)
