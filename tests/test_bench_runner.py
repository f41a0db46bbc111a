"""rnnreg.bench.runner: BenchConfig's checks name parameters, the growth sizes, and one tiny run of every group."""

from __future__ import annotations

import pytest
import torch

from rnnreg import bench


def test_growth_points_are_quarters_halves_and_the_size() -> None:
    assert bench.growth_points(128) == [32, 64, 128]
    assert bench.growth_points(2) == [1, 2]
    assert bench.growth_points(1) == [1]


@pytest.mark.parametrize("name", ["batch_size", "seq_len", "threads", "repeats"])
def test_bench_config_errors_name_the_parameter_not_a_flag(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a whole number >= 1 \(got 0\)$"):
        bench.BenchConfig(**{name: 0})


def test_cuda_without_a_device_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device 'cuda' was asked for, but .* no CUDA GPU here; use device 'cpu'$"):
        bench.BenchConfig(device="cuda")


def test_run_benchmarks_times_every_step_group_and_reports_each_as_it_finishes() -> None:
    dims = {"vocab_size": 20, "embed_dim": 4, "hidden_dim": 4}
    cfg = bench.BenchConfig(batch_size=2, seq_len=2, **dims, repeats=1, warmup=0, epoch_data=None, notebook=False)
    reported: list[list[bench.Record]] = []
    records = bench.run_benchmarks(cfg, bench.probe_hardware(1), progress=reported.append)
    assert [{r.group for r in rows} for rows in reported] == [{"step"}, {"length"}, {"batch"}]
    assert [r for rows in reported for r in rows] == records
    # step: 3 models x 2 CPU precisions; length and batch: 2 models x 2 precisions x growth_points(2) = [1, 2].
    assert [len(rows) for rows in reported] == [6, 8, 8]
    assert {r.seq_len for r in records if r.group == "length"} == {1, 2}
    assert all(r.median_ms > 0 and r.repeats == 1 for r in records)
    regularized = next(r for r in records if (r.group, r.name, r.asked) == ("step", "regularized", "fp32"))
    assert regularized.ratio_vs_floor is not None and regularized.ratio_vs_fp32 is None
