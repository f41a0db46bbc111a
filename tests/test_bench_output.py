"""rnnreg.bench.output: output paths refused with the fix, and the JSON file and the plot written atomically."""

from __future__ import annotations

import errno
import importlib.util
import json
from pathlib import Path

import pytest
from helpers import failing_os_write, temp_files

from rnnreg import bench

CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\ncpu MHz\t\t: 2250.000\nflags\t\t: avx fma avx2\n"


def hardware() -> bench.Hardware:
    cpu = bench.parse_cpuinfo(CPUINFO)
    return bench.Hardware(cpu, "2.x", "AVX2", lstm_bf16=False, threads=1, cuda=None, peak_fp32=None, peak_bf16=None)


def record(name: str, group: str, batch_size: int, seq_len: int, median_ms: float) -> bench.Record:
    return bench.Record(
        name=name,
        group=group,
        device="cpu",
        precision="fp32",
        asked="fp32",
        rnn_dtype="fp32",
        low_precision=[],
        batch_size=batch_size,
        seq_len=seq_len,
        tokens=batch_size * seq_len,
        median_ms=median_ms,
        q1_ms=median_ms,
        q3_ms=median_ms,
        cpu_ms=median_ms,
        repeats=1,
        tokens_per_s=1000.0,
        gflop=None,
        gflops_per_s=None,
        peak_fraction=None,
    )


RECORDS = [
    record(name, group, b, t, ms)
    for name, ms in (("floor", 1.0), ("regularized", 1.5))
    for group, b, t in (("length", 4, 2), ("length", 4, 4), ("batch", 2, 4), ("batch", 4, 4))
]


# ------------------------------------------------------------------------------------------------- output paths


def test_a_folder_is_refused_naming_the_parameter_and_a_file_to_give(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        bench.check_output_path(tmp_path, "json path")
    message = str(info.value)
    assert message.startswith(f"json path {str(tmp_path)!r} is a folder; name a file in it")
    assert repr(str(tmp_path / "bench.json")) in message and "--" not in message


def test_a_missing_folder_and_a_wrong_suffix_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^json path .*: the folder .*missing' does not exist; create it or choose"):
        bench.check_output_path(tmp_path / "missing" / "out.json", "json path")
    with pytest.raises(ValueError) as info:
        bench.check_output_path(tmp_path / "out.jpg", "plot path", ".png")
    assert str(info.value) == (
        f"plot path must name a .png file (got {str(tmp_path / 'out.jpg')!r}); e.g. {str(tmp_path / 'out.png')!r}"
    )


def test_a_plot_without_matplotlib_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name))
    with pytest.raises(ValueError, match=r"^plot path .* needs matplotlib, which is not installed; pip install"):
        bench.check_output_path(tmp_path / "out.png", "plot path", ".png")


def test_writers_refuse_a_folder_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^json path .* is a folder"):
        bench.write_json(RECORDS, hardware(), tmp_path)
    with pytest.raises(ValueError, match=r"^plot path must name a \.png file"):
        bench.plot(RECORDS, hardware(), tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ atomic writes


def test_json_rows_name_the_machine_and_leave_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    bench.write_json(RECORDS, hardware(), path)
    rows = json.loads(path.read_text())
    assert [(r["name"], r["group"], r["median_ms"]) for r in rows] == [(r.name, r.group, r.median_ms) for r in RECORDS]
    assert {r["cpu"] for r in rows} == {"AMD EPYC 7B12"} and {r["torch"] for r in rows} == {"2.x"}
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_a_failed_json_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    path = tmp_path / "bench.json"
    path.write_text("[]\n")
    failing_os_write(monkeypatch, err, after=10)
    with pytest.raises(OSError) as info:
        bench.write_json(RECORDS, hardware(), path)
    assert info.value.errno == err
    assert path.read_text() == "[]\n"
    assert temp_files(tmp_path) == []


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    bench.plot(RECORDS, hardware(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert temp_files(tmp_path) == []


def test_a_failed_plot_write_leaves_no_partial_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = tmp_path / "new.png", tmp_path / "old.png"
    old.write_bytes(b"previous plot")
    failing_os_write(monkeypatch, errno.ENOSPC, after=100)  # the PNG's first 100 bytes reach the disk, then it fills
    with pytest.raises(OSError):
        bench.plot(RECORDS, hardware(), new)
    failing_os_write(monkeypatch, errno.EIO, after=100)
    with pytest.raises(OSError):
        bench.plot(RECORDS, hardware(), old)
    assert not new.exists()
    assert old.read_bytes() == b"previous plot"
    assert temp_files(tmp_path) == []
