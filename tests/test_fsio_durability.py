"""Durability: what fsio syncs, and in which order, observed through wrappers on the os calls it makes.

A rename is durable only once the folder holding it is synced: an atomic write must fsync the file's data before
``os.replace`` and the folder after it; an append that creates its file must sync the folder too, or a power cut
can lose the whole file though every line was synced.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from rnnreg import fsio
from rnnreg.fsio import append_line, atomic_write_bytes, atomic_write_text


class Calls:
    """Every os.open / os.fsync / os.replace / os.close while installed, with the path each descriptor names."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, str]] = []  # (call, resolved path it concerns)
        self.paths: dict[int, str] = {}
        real_open, real_fsync, real_replace, real_close = os.open, os.fsync, os.replace, os.close

        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            self.paths[fd] = str(Path(os.fsdecode(path)).resolve())
            self.log.append(("open", self.paths[fd]))
            return fd

        def fsync(fd: Any) -> None:
            fd = fd if isinstance(fd, int) else fd.fileno()
            real_fsync(fd)
            self.log.append(("fsync", self.paths.get(fd, f"fd {fd}")))

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            real_replace(src, dst, **kwargs)
            self.log.append(("replace", str(Path(os.fsdecode(dst)).resolve())))

        def close(fd: int) -> None:
            self.log.append(("close", self.paths.pop(fd, f"fd {fd}")))
            real_close(fd)

        # fsio.os is the os module: tempfile.mkstemp's own os.open is seen too.
        monkeypatch.setattr(fsio.os, "open", open_)
        monkeypatch.setattr(fsio.os, "fsync", fsync)
        monkeypatch.setattr(fsio.os, "replace", replace)
        monkeypatch.setattr(fsio.os, "close", close)

    def index(self, call: str, path: Path | str, start: int = 0) -> int:
        target = str(Path(path).resolve())
        for i in range(start, len(self.log)):
            if self.log[i] == (call, target):
                return i
        raise AssertionError(f"no {call} of {target} after call {start}: {self.log}")

    def fsyncs_of(self, path: Path) -> list[int]:
        target = str(path.resolve())
        return [i for i, entry in enumerate(self.log) if entry == ("fsync", target)]


@pytest.mark.parametrize("write", [atomic_write_bytes, atomic_write_text])
def test_an_atomic_write_syncs_its_data_before_the_rename_and_the_folder_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Any
) -> None:
    path = tmp_path / "sub" / "summary.json"
    path.parent.mkdir()
    path.write_text("old")
    calls = Calls(monkeypatch)
    write(path, b"new" if write is atomic_write_bytes else "new")
    assert path.read_text() == "new"
    renamed = calls.index("replace", path)
    temp_fsyncs = [i for i, (call, p) in enumerate(calls.log) if call == "fsync" and p.endswith(".tmp")]
    assert temp_fsyncs and temp_fsyncs[0] < renamed, calls.log  # the data are on disk before the name points there
    folder_syncs = [i for i in calls.fsyncs_of(path.parent) if i > renamed]
    assert folder_syncs, f"the folder was not fsynced after the rename: {calls.log}"
    # The folder descriptor was opened for it and closed again: nothing leaks.
    assert calls.index("close", path.parent, calls.index("open", path.parent)) > folder_syncs[0]


def test_a_folder_that_refuses_fsync_still_gets_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some filesystems answer EINVAL to fsync on a directory; the data were synced already, so the write stands.
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(fsio.os, "fsync", fsync)
    atomic_write_text(tmp_path / "a.txt", "kept")
    assert (tmp_path / "a.txt").read_text() == "kept"


def test_an_append_that_creates_its_file_syncs_the_line_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.jsonl"
    calls = Calls(monkeypatch)
    append_line(path, '{"key": "a"}')
    line_synced = calls.index("fsync", path)
    assert [i for i in calls.fsyncs_of(tmp_path) if i > line_synced], calls.log
    calls.log.clear()
    append_line(path, '{"key": "b"}')  # the file exists now: its folder entry is durable already
    assert calls.fsyncs_of(path) and not calls.fsyncs_of(tmp_path), calls.log
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'
