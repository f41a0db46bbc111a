"""rnnreg.bench and `rnnreg bench`: FLOP counts, the hardware probe, goals, the files written, bad input.

No timing is asserted here: speed targets belong to `tox -e bench` and `rnnreg bench`, on the machine at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnreg import bench
from rnnreg.cli import main

# Two logical CPUs of an AVX2-only CPU, and one of a CPU with AVX512-BF16 and AMX (flags trimmed to the ones that
# matter, in /proc/cpuinfo's layout).
CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
cpu MHz\t\t: 2249.998
flags\t\t: fpu sse sse2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
"""
CPUINFO_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 3000.000
flags\t\t: fpu avx fma avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 bf16
CPU part\t: 0xd0c
"""


# ------------------------------------------------------------------------------------------------ FLOP formula


def test_step_flops_matches_a_hand_count_for_a_tiny_bilstm() -> None:
    # lengths 3 and 1 -> 4 real tokens; E=2, H=3, C=2, one bidirectional LSTM layer.
    # Forward, per token and direction: 4 gates x 3 units x (2 inputs + 3 recurrent) x 2 FLOPs = 120.
    # 4 tokens x 2 directions x 120 = 960; head: 2 sequences x (6 features x 2 classes x 2 FLOPs = 24) = 48.
    # Forward 1008; backward twice that; step 3 x 1008 = 3024.
    assert bench.step_flops([3, 1], embed_dim=2, hidden_dim=3, num_classes=2) == 3024


def test_step_flops_matches_a_hand_count_for_a_two_layer_gru() -> None:
    # lengths [2], E=4, H=2, C=3, unidirectional GRU, two layers.
    # Layer 0: 3 gates x 2 units x (4 + 2) x 2 = 72 per token, x 2 tokens = 144.
    # Layer 1 (input = H = 2): 3 x 2 x (2 + 2) x 2 = 48 per token, x 2 = 96. Head: 2 x 2 x 3 = 12.
    # Forward 252; step 3 x 252 = 756.
    got = bench.step_flops([2], embed_dim=4, hidden_dim=2, num_classes=3, rnn="gru", num_layers=2, bidirectional=False)
    assert got == 756


def test_step_flops_counts_real_tokens_not_padding() -> None:
    batch = bench.make_batch(8, 10, 50)
    lengths = batch.lengths.tolist()
    assert sum(lengths) < 8 * 10  # the batch has padding
    # E=3, H=5: per real token 2 directions x 4 gates x 5 x (3 + 5) x 2 = 640; per sequence 2 x 10 x 2 = 40.
    assert bench.step_flops(lengths, 3, 5) == 3 * (sum(lengths) * 640 + 8 * 40)


# ---------------------------------------------------------------------------------------------- hardware probe


def test_cpuinfo_of_an_avx2_cpu_has_no_native_bf16() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_AVX2)
    assert cpu.model == "AMD EPYC 7B12"
    assert cpu.logical_cpus == 2
    assert cpu.mhz == pytest.approx(2249.998)  # the highest clock over the CPUs
    assert {"avx2", "fma"} <= cpu.flags
    assert not cpu.native_bf16
    assert cpu.bf16_units == "none"
    assert cpu.fp32_lanes == 8


def test_cpuinfo_with_avx512_bf16_and_amx_is_native_bf16() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_BF16)
    assert cpu.native_bf16
    assert cpu.bf16_units == "AVX512-BF16 + AMX-BF16"
    assert cpu.fp32_lanes == 16
    assert cpu.logical_cpus == 1


def test_cpuinfo_without_model_name_or_clock() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_ARM)
    assert cpu.model == "unknown CPU"
    assert cpu.mhz is None
    assert "bf16" in cpu.flags and not cpu.native_bf16  # only the x86 flags are read as native bf16
    assert bench.peak_gflops(cpu, 4) == (None, None)


def test_peak_estimate_is_cores_ghz_lanes_fma_units() -> None:
    # AVX2 at 2.25 GHz, 2 cores: 2 x 2.25 x 8 lanes x 2 (FMA) x 2 units = 144 GFLOP/s; no native bf16: same.
    fp32, bf16 = bench.peak_gflops(bench.parse_cpuinfo(CPUINFO_AVX2), 2)
    assert fp32 == pytest.approx(144.0, rel=1e-5)
    assert bf16 == pytest.approx(fp32)
    # AVX-512 at 3 GHz, 1 core: 3 x 16 x 2 x 2 = 192; native bf16 doubles it.
    fp32, bf16 = bench.peak_gflops(bench.parse_cpuinfo(CPUINFO_BF16), 1)
    assert (fp32, bf16) == (pytest.approx(192.0), pytest.approx(384.0))


def test_header_says_when_bf16_is_not_native() -> None:
    hw = bench.probe_hardware(1, bench.parse_cpuinfo(CPUINFO_AVX2))
    text = "\n".join(hw.describe())
    assert "NOT native" in text and "AMD EPYC 7B12" in text and torch.__version__ in text
    native = bench.probe_hardware(1, bench.parse_cpuinfo(CPUINFO_BF16))
    assert "bf16: native (AVX512-BF16 + AMX-BF16)" in "\n".join(native.describe())


# ------------------------------------------------------------------------------------------------------ goals


def test_goals_are_ratios_of_rows_of_one_run() -> None:
    step = {
        ("floor", "fp32"): (100.0, 100.0),
        ("regularized", "fp32"): (80.0, 90.0),
        ("unregularized", "fp32"): (78.0, 80.0),
        ("floor", "bf16"): (70.0, 70.0),
        ("regularized", "bf16"): (60.0, 70.0),
    }
    epoch = {("epoch_bucketed", "fp32"): (6.0, 6.0), ("epoch_random", "fp32"): (10.0, 8.0)}
    found = {g.what: g for g in bench.goals_from(step, epoch)}
    fp32 = found["regularized step / kernel floor, fp32"]
    assert (fp32.value, fp32.cpu_value, fp32.met) == (pytest.approx(0.8), pytest.approx(0.9), True)
    bf16 = found["regularized step / kernel floor, bf16"]
    assert bf16.value == pytest.approx(60 / 70) and bf16.met is False  # 0.857 > 0.85
    mix = found["bf16/fp32 ratio: regularized minus floor"]
    assert mix.value == pytest.approx(0.75 - 0.70) and mix.cpu_value == pytest.approx(70 / 90 - 0.70)
    assert bench.Goal("x", 0.05, "|x|<=", -0.06).met is False  # the absolute difference counts
    overhead = found["regularization overhead (all *_p > 0 / all 0), fp32"]
    assert overhead.value == pytest.approx(80 / 78) and overhead.met
    bucket = found["epoch speed-up of length bucketing (random / bucketed)"]
    assert bucket.value == pytest.approx(10 / 6) and bucket.met and bucket.cpu_value == pytest.approx(8 / 6)
    assert bench.Goal("z", 1.30, ">=", 1.29).met is False
    assert "MISSES" in bench.Goal("y", 0.70, "<=", 0.75, None).describe()


def test_goals_without_the_rows_are_not_measured() -> None:
    found = bench.goals_from({}, {})
    assert found and all(g.value is None and g.met is None for g in found)


def test_growth_points_are_quarters_halves_and_the_size() -> None:
    assert bench.growth_points(128) == [32, 64, 128]
    assert bench.growth_points(2) == [1, 2]
    assert bench.growth_points(1) == [1]


# --------------------------------------------------------------------------------------------------- the CLI


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
