"""pytest-benchmark timings of ``rnnreg.step.train_step`` and of one ``fit`` epoch: what ``rnnreg bench`` measures.

Shapes (``rnnreg bench``'s full run): B=64, T=128 (lengths 64..128, fixed by seed), vocab 20,000, embed 128,
hidden 256, one BiLSTM layer, 2 classes; AdamW + clip by norm + label smoothing 0.1. Rows: the kernel floor (one
fused padded nn.LSTM, :class:`rnnreg.bench.PaddedLSTM`), the regularized model, the same with every ``*_p`` = 0,
the notebook's packed model; fp32 and bf16 autocast on CPU, fp16 + GradScaler and bf16 on CUDA (``gpu``); step
time over lengths and batch sizes; the main job's own work (``rnnreg train``'s default model against the floor at
its sizes: one step on the p90 bucketed batch of ``movies`` and one epoch of the same bucketed batches, fp32, and
bf16 where the LSTM runs bf16 kernels); one epoch on ``movies`` with and without length bucketing. Run with
``tox -e bench``; the summary prints the goal ratios (reported, never asserted: timings belong to the machine).

pytest-benchmark times each case on its own, one after another; ``rnnreg bench`` interleaves the cases of a
comparison, which suits a shared machine better. Compare ratios within one run only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from rnnreg import bench
from rnnreg.batch import Batch
from rnnreg.data import DatasetUnavailableError
from rnnreg.fit import Prepared
from rnnreg.step import StepStats, train_step

CFG = bench.BenchConfig(threads=1)  # the full run's shapes; the threads fixture in conftest sets the thread count
WARMUP, ROUNDS, SLOW_ROUNDS = 2, 10, 5  # the packed notebook step is ~4x slower: fewer rounds for it
EPOCH_ROUNDS = 2

pytestmark = pytest.mark.benchmark

Record = Callable[[str, str, float], None]


def time_step(
    benchmark: BenchmarkFixture, record: Record, name: str, precision: str, device: str, **shape: int
) -> None:
    """Benchmark ``train_step`` on model ``name`` in ``precision``; check and record what ran."""
    batch_size, seq_len = shape.get("batch_size", CFG.batch_size), shape.get("seq_len", CFG.seq_len)
    batch = bench.make_batch(batch_size, seq_len, CFG.vocab_size, device=device)
    case = bench.step_case(name, precision, batch, CFG.dims, device)
    rounds = SLOW_ROUNDS if name == "notebook_packed" else ROUNDS

    def step() -> StepStats:
        stats = train_step(case.model, case.batch, case.optimizer, case.scaler, case.cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        return stats

    stats = benchmark.pedantic(step, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    assert math.isfinite(stats.loss)
    assert stats.logits.shape == (batch_size, bench.NUM_CLASSES)
    # Label the row by what actually ran in low precision, never by what was asked for.
    low, rnn_dtype = bench.low_precision_report(case.model, batch, precision)
    assert (rnn_dtype == "fp32") if precision == "fp32" else bool(low)  # autocast reached at least the head
    benchmark.extra_info.update(precision=precision, low_precision=low, rnn_dtype=rnn_dtype, **shape)
    benchmark.extra_info["tokens"] = int(batch.lengths.sum())
    if benchmark.stats is not None and not shape:  # None under --benchmark-disable; growth rows are not goals
        record(name, precision, benchmark.stats.stats.median)


CPU_STEPS = [(name, precision) for precision in ("fp32", "bf16") for name in ("floor", "regularized", "unregularized")]


@pytest.mark.parametrize(("name", "precision"), [*CPU_STEPS, ("notebook_packed", "fp32")])
def test_step_cpu(benchmark: BenchmarkFixture, record_step: Record, name: str, precision: str) -> None:
    time_step(benchmark, record_step, name, precision, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "precision"), [(n, p) for p in ("fp32", "fp16", "bf16") for n in ("floor", "regularized")]
)
def test_step_cuda(benchmark: BenchmarkFixture, record_step: Record, name: str, precision: str) -> None:
    """CUDA: fp16 autocast + GradScaler and bf16; skipped without CUDA."""
    time_step(benchmark, record_step, name, precision, "cuda")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["floor", "regularized"])
@pytest.mark.parametrize("seq_len", bench.growth_points(CFG.seq_len))
def test_step_over_length(
    benchmark: BenchmarkFixture, record_step: Record, name: str, precision: str, seq_len: int
) -> None:
    time_step(benchmark, record_step, name, precision, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["floor", "regularized"])
@pytest.mark.parametrize("batch_size", bench.growth_points(CFG.batch_size))
def test_step_over_batch_size(
    benchmark: BenchmarkFixture, record_step: Record, name: str, precision: str, batch_size: int
) -> None:
    time_step(benchmark, record_step, name, precision, "cpu", batch_size=batch_size)


@pytest.fixture(scope="module")
def movies() -> Prepared:
    try:
        return bench.epoch_data("movies")
    except DatasetUnavailableError as e:  # no network and no cached copy: the timing cannot be taken here
        pytest.skip(f"movies is not available: {e}")


@pytest.mark.parametrize("bucket", [True, False], ids=["bucketed", "random"])
def test_epoch_movies(benchmark: BenchmarkFixture, record_step: Record, movies: Prepared, bucket: bool) -> None:
    """One fp32 epoch of ``rnnreg.fit.fit`` on the movie snippets, with and without length bucketing."""
    walls: list[float] = []

    def epoch() -> None:
        walls.append(bench.train_one_epoch(movies, CFG, bucket=bucket)[0])

    # One untimed epoch first: whichever case runs first would otherwise pay oneDNN's one-time kernel set-up.
    benchmark.pedantic(epoch, rounds=EPOCH_ROUNDS, warmup_rounds=1, iterations=1)
    assert walls and all(w > 0 for w in walls)  # one call under --benchmark-disable, warm-up + rounds otherwise
    if benchmark.stats is not None:
        record_step("epoch_bucketed" if bucket else "epoch_random", "fp32", benchmark.stats.stats.median)


# ------------------------------------------------------------------------------------------- the main job's work

# fp32, and bf16 only where the LSTM really runs bf16 kernels (probed at run time, as `rnnreg bench` does).
MAIN_PRECISIONS = bench.main_precisions("cpu", bench.probe_hardware(1))


@pytest.fixture(scope="module")
def main_work(movies: Prepared) -> bench.Workload:
    return bench.main_workload(movies, "movies")


def main_step_case(name: str, precision: str, work: bench.Workload, batch: Batch) -> bench.StepCase:
    if precision not in MAIN_PRECISIONS:
        pytest.skip("bf16 is not native on this CPU: the LSTM would run its fp32 kernels")
    return bench.main_case(name, precision, work.vocab_size, batch, "cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["floor", bench.MAIN_MODEL])
def test_step_main_job(
    benchmark: BenchmarkFixture, record_step: Record, main_work: bench.Workload, name: str, precision: str
) -> None:
    """One train_step of the default model (or the floor at its sizes) on the p90 bucketed movies batch."""
    case = main_step_case(name, precision, main_work, main_work.batch)

    def step() -> StepStats:
        return train_step(case.model, case.batch, case.optimizer, case.scaler, case.cfg)

    stats = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert math.isfinite(stats.loss) and stats.logits.shape == (len(main_work.batch), bench.NUM_CLASSES)
    if benchmark.stats is not None:
        record_step(f"main:{name}", precision, benchmark.stats.stats.median)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["floor", bench.MAIN_MODEL])
def test_epoch_main_job(
    benchmark: BenchmarkFixture, record_step: Record, main_work: bench.Workload, name: str, precision: str
) -> None:
    """One epoch of train_step over the main job's bucketed movies batches (the same batches for every case)."""
    case = main_step_case(name, precision, main_work, main_work.epoch[0])
    losses: list[float] = []

    def epoch() -> None:
        for batch in main_work.epoch:
            losses.append(train_step(case.model, batch, case.optimizer, case.scaler, case.cfg).loss)

    # One untimed epoch first: it creates the kernels of every batch shape.
    benchmark.pedantic(epoch, rounds=EPOCH_ROUNDS, warmup_rounds=1, iterations=1)
    assert losses and all(math.isfinite(x) for x in losses)
    if benchmark.stats is not None:
        record_step(f"mainep:{name}", precision, benchmark.stats.stats.median)
