"""`rnnreg bench` end to end: the files it writes, and bad input refused in one line naming the flag, before any timing.

No timing is asserted here: speed targets belong to `tox -e bench` and `rnnreg bench`, on the machine at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnreg.cli import main


def test_bench_writes_json_records_and_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    argv = ["bench", "--quick", "--batch-size", "4", "--seq-len", "4", "--repeats", "1", "--threads", "1"]
    argv += ["--data", "toy", "--json", str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CPU:" in out and "bf16:" in out and "goals" in out
    assert "for information" in out  # a --quick shape is not the one the goals are set for

    rows = json.loads(out_json.read_text())
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"name", "device", "precision", "median_ms", "tokens_per_s"} <= row.keys()
        assert row["device"] == "cpu" and row["precision"] in ("fp32", "bf16", "fp16")
        assert row["median_ms"] > 0 and row["tokens_per_s"] > 0
        # Labelled by what ran: a row is bf16 only if some module's output was bf16.
        assert (row["precision"] == "bf16") == bool(row["low_precision"])
    step = {(r["name"], r["asked"]) for r in rows if r["group"] == "step"}
    for name in ("floor", "regularized", "unregularized"):
        assert {(name, "fp32"), (name, "bf16")} <= step
    assert ("notebook_packed", "fp32") in step
    assert {r["seq_len"] for r in rows if r["group"] == "length"} == {1, 2, 4}
    assert {r["batch_size"] for r in rows if r["group"] == "batch"} == {1, 2, 4}
    assert {r["name"] for r in rows if r["group"] == "epoch"} == {"epoch_bucketed", "epoch_random"}
    floor = next(r for r in rows if r["group"] == "step" and r["name"] == "regularized" and r["asked"] == "bf16")
    assert floor["ratio_vs_floor"] is not None and floor["ratio_vs_fp32"] is not None

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--device", "cuda"], "--device cuda"),
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1 (got 0)"),
        (["--seq-len", "0"], "--seq-len must be a whole number >= 1 (got 0)"),
        (["--threads", "0"], "--threads must be a whole number >= 1 (got 0)"),
        (["--repeats", "-1"], "--repeats must be a whole number >= 1 (got -1)"),
        (["--json", "{tmp}/missing/out.json"], "does not exist"),
        (["--json", "{tmp}"], "is a folder"),
        (["--plot", "{tmp}/missing/out.png"], "does not exist"),
        (["--plot", "{tmp}/out.jpg"], "--plot must name a .png file"),
    ],
    ids=[
        "cuda-without-cuda",
        "batch-0",
        "seq-len-0",
        "threads-0",
        "repeats-negative",
        "json-dir",
        "json-folder",
        "plot-dir",
        "plot-not-png",
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same case on machines with CUDA
    code = main(["bench", *(a.format(tmp=tmp_path) for a in argv)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnreg: error:")
    assert expected in lines[0]
    assert out == ""  # refused before any timing


def test_an_unknown_epoch_data_set_is_refused_before_any_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--quick", "--threads", "1", "--data", str(tmp_path / "nope.csv")])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nope.csv" in lines[0]
    assert "step " not in out  # no table row was timed


def test_the_flag_replaces_the_parameter_but_a_path_is_quoted_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "threads" / "repeats.json"  # words that name parameters, inside a path
    assert main(["bench", "--json", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"rnnreg: error: --json {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it or choose "
        "another path"
    )


GROUPS = ("step", "length", "batch", "main", "mainep", "epoch")  # the first column of a table row


def test_data_none_skips_the_epoch_and_main_job_rows(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--quick", "--batch-size", "2", "--seq-len", "2", "--repeats", "1", "--threads", "1"]
    assert main([*argv, "--data", "none"]) == 0
    groups = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:6].rstrip() in GROUPS}
    assert groups == {"step", "length", "batch"}  # no main, mainep or epoch row, and no data set loaded
