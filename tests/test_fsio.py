"""fsio: atomic writes survive injected ENOSPC/EIO, appends keep whole lines, a second process is refused the lock."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import failing_os_write, temp_files

from rnnreg import fsio
from rnnreg.fsio import OutputLock, OutputLockedError, append_line, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second" * 100_000)
    assert path.read_bytes() == b"second" * 100_000
    atomic_write_text(path, "caf\u00e9\n")
    assert path.read_bytes() == "caf\u00e9\n".encode()
    assert temp_files(path.parent) == []


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("after", [0, 3])
def test_failed_atomic_write_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, after: int
) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_write_bytes(path, b"previous checkpoint")
    failing_os_write(monkeypatch, err, after=after)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(path, b"new checkpoint, longer than the budget")
    assert info.value.errno == err
    assert path.read_bytes() == b"previous checkpoint"
    assert temp_files(tmp_path) == []


def test_failed_fsync_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fsio.os, "fsync", fsync)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert temp_files(tmp_path) == []


def test_append_line_adds_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    append_line(path, '{"a": 1}')
    append_line(path, '{"b": 2}')
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'


def test_append_line_refuses_embedded_newline(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one line"):
        append_line(tmp_path / "runs.jsonl", "a\nb")


@pytest.mark.parametrize("after", [0, 4])
def test_failed_append_leaves_earlier_lines_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    path = tmp_path / "runs.jsonl"
    append_line(path, '{"run": 1}')
    failing_os_write(monkeypatch, errno.ENOSPC, after=after)
    with pytest.raises(OSError):
        append_line(path, '{"run": 2, "a long record": "that does not fit"}')
    assert path.read_text() == '{"run": 1}\n'  # a short write is cut back: no torn last line


def test_atomic_writes_get_the_permissions_a_plain_open_would_give(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "summary.md", "hello")
        (tmp_path / "plain.md").write_text("hello")
    finally:
        os.umask(old)
    assert (tmp_path / "summary.md").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "summary.md").stat().st_mode == (tmp_path / "plain.md").stat().st_mode


def test_an_interruption_after_a_whole_line_is_written_keeps_that_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.jsonl"
    append_line(path, '{"run": 1}')

    def interrupted(fd: int) -> None:  # a signal handler raising while fsync runs, after the write
        raise KeyboardInterrupt

    monkeypatch.setattr(fsio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        append_line(path, '{"run": 2}')
    assert path.read_text() == '{"run": 1}\n{"run": 2}\n'


def test_lock_creates_folder_and_writes_pid(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "out"
    with OutputLock(folder):
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
    with OutputLock(folder):  # released on exit: the same process takes it again
        pass


def test_lock_in_same_process_is_exclusive(tmp_path: Path) -> None:
    with OutputLock(tmp_path), pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"), OutputLock(tmp_path):
        pass


HOLDER = textwrap.dedent(
    """
    import sys, time
    from rnnreg.fsio import OutputLock
    with OutputLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_second_process_is_refused_with_holders_pid_and_crash_frees_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputLockedError) as info, OutputLock(folder):
            pass
        message = str(info.value)
        assert f"pid {holder.pid}" in message and str(folder) in message and "another output folder" in message
        assert isinstance(info.value, ValueError)  # the CLI turns ValueError into a one-line error
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        holder.wait(timeout=30)
    assert (folder / ".lock").exists()  # the crashed holder left its file, not its lock
    with OutputLock(folder):
        assert (folder / ".lock").read_text().strip() == str(os.getpid())


def test_unwritable_folder_is_refused_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"not writable.*another output folder") as info, OutputLock(blocker / "out"):
        pass
    assert not isinstance(info.value, OutputLockedError)


def test_check_writable_catches_a_folder_that_refuses_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Running as root ignores permission bits, so the refusal is injected where fsio creates its probe file.
    def mkstemp(**kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fsio.tempfile, "mkstemp", mkstemp)
    with pytest.raises(ValueError, match="Permission denied"):
        fsio.check_writable(tmp_path)


def test_check_output_file_accepts_a_new_or_existing_file_in_a_folder(tmp_path: Path) -> None:
    fsio.check_output_file(tmp_path / "new.json", "json path")
    (tmp_path / "old.png").write_bytes(b"")
    fsio.check_output_file(tmp_path / "old.png", "plot path", suffix=".png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]  # a check writes nothing


def test_check_output_file_names_the_parameter_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(path: Path, **kwargs: str) -> str:
        with pytest.raises(ValueError) as info:
            fsio.check_output_file(path, "report path", **kwargs)
        return str(info.value)

    folder, missing = str(tmp_path), str(tmp_path / "no")
    assert refused(tmp_path, example="r.json") == (
        f"report path {folder!r} is a folder; name a file in it, e.g. {str(tmp_path / 'r.json')!r}"
    )
    assert refused(tmp_path) == f"report path {folder!r} is a folder; name a file in it"
    assert refused(tmp_path / "no" / "r.json") == (
        f"report path {str(tmp_path / 'no' / 'r.json')!r}: the folder {missing!r} does not exist; create it or "
        "choose another path"
    )
    assert refused(tmp_path / "r.txt", suffix=".xml") == (
        f"report path must name a .xml file (got {str(tmp_path / 'r.txt')!r}); e.g. {str(tmp_path / 'r.xml')!r}"
    )
    # Running as root ignores permission bits, so the refusal is injected where fsio asks.
    monkeypatch.setattr(fsio.os, "access", lambda path, mode: False)
    assert refused(tmp_path / "r.json") == (
        f"report path {str(tmp_path / 'r.json')!r} is not writable; choose a path in a folder you can write to"
    )
