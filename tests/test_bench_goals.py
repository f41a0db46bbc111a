"""rnnreg.bench.goals: each goal a ratio of two rows of one run, from wall and CPU times, with its verdict."""

from __future__ import annotations

import pytest

from rnnreg import bench


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
