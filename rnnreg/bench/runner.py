"""``rnnreg bench``'s run: its settings (:class:`BenchConfig`) and the groups of rows, measured in order."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rnnreg.batch import Batch
from rnnreg.bench.hardware import Hardware
from rnnreg.bench.records import Record, case_record, epoch_record, quartiles, with_ratios
from rnnreg.bench.timing import StepCase, main_case, step_case, time_epochs_round_robin, time_round_robin, torch_threads
from rnnreg.bench.workloads import (
    MAIN_MODEL,
    MODELS,
    NUM_CLASSES,
    PRECISIONS,
    Workload,
    epoch_data,
    main_precisions,
    main_workload,
    make_batch,
    model_config,
    train_config,
)
from rnnreg.config import Experiment, ModelConfig
from rnnreg.cores import free_cores
from rnnreg.data import DatasetUnavailableError
from rnnreg.fit import Prepared, fit


@dataclass(frozen=True)
class BenchConfig:
    """What ``rnnreg bench`` measures; :meth:`defaults` gives the full and the quick settings."""

    device: str = "cpu"
    batch_size: int = 64
    seq_len: int = 128
    vocab_size: int = 20_000
    embed_dim: int = 128
    hidden_dim: int = 256
    repeats: int = 10  # timed steps per row (the median is reported)
    warmup: int = 2  # untimed steps per row first (oneDNN primitive creation, allocator warm-up)
    threads: int = 1
    epoch_data: str | None = "movies"  # data set of the epoch rows; None skips them
    epoch_texts: int | None = None  # use only the first N training texts for the epoch rows; None = all
    epoch_repeats: int = 2  # epochs per batching mode, alternating
    notebook: bool = True  # time the notebook's packed model (slow: ~4x the others)

    def __post_init__(self) -> None:
        if self.device not in PRECISIONS:
            raise ValueError(f"device must be one of {', '.join(PRECISIONS)} (got {self.device!r})")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch finds no CUDA GPU here; use device 'cpu'")
        for name in ("batch_size", "seq_len", "vocab_size", "embed_dim", "hidden_dim", "repeats", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1 (got {value!r})")
        for name in ("warmup", "epoch_repeats"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)!r})")
        if self.epoch_texts is not None and self.epoch_texts < 1:
            raise ValueError(f"epoch_texts must be >= 1 or None for all (got {self.epoch_texts!r})")

    @classmethod
    def defaults(cls, *, quick: bool, **overrides: Any) -> BenchConfig:
        """The full run (B=64, T=128, embed 128, hidden 256: the issue's shape) or the quick one (< 1 min on 2
        cores); ``overrides`` that are not None replace a default."""
        base: dict[str, Any] = {"threads": free_cores()}
        if quick:
            base |= {
                "batch_size": 32,
                "seq_len": 64,
                "vocab_size": 5_000,
                "embed_dim": 64,
                "hidden_dim": 128,
                "repeats": 3,
                "warmup": 1,
                "epoch_texts": 1024,
                "epoch_repeats": 1,
            }
        base |= {k: v for k, v in overrides.items() if v is not None}
        return cls(**base)

    def goal_note(self) -> str | None:
        """A caveat when this run's shape is not the one the goals are set for (the full run's defaults)."""
        full = BenchConfig(threads=1)
        fields = ("batch_size", "seq_len", "vocab_size", "embed_dim", "hidden_dim")
        if all(getattr(self, f) == getattr(full, f) for f in fields):
            return None
        return (
            f"the goals are set for B={full.batch_size}, T={full.seq_len}, embed {full.embed_dim}, hidden "
            f"{full.hidden_dim} (the full run, not the quick one); at this smaller shape fixed per-step costs weigh "
            "more, so these ratios are for information"
        )

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.vocab_size, self.embed_dim, self.hidden_dim)

    def describe(self) -> str:
        low = (self.seq_len + 1) // 2
        return (
            f"one train_step: B={self.batch_size}, T={self.seq_len} (lengths {low}..{self.seq_len}), vocab "
            f"{self.vocab_size:,}, embed {self.embed_dim}, hidden {self.hidden_dim}, one BiLSTM layer, "
            f"{NUM_CLASSES} classes; AdamW + clip + label smoothing; median of {self.repeats} steps per row "
            f"(round-robin, after {self.warmup} warm-up)"
        )


def growth_points(n: int) -> list[int]:
    """n/4, n/2, n (at least 1, no duplicates): the sizes of the cost-growth rows."""
    return sorted({max(1, n // 4), max(1, n // 2), n})


def _step_group(
    cfg: BenchConfig, group: str, names: Sequence[str], shapes: Sequence[tuple[int, int]], peaks: dict[str, Any]
) -> list[Record]:
    cases = []
    for batch_size, seq_len in shapes:
        batch = make_batch(batch_size, seq_len, cfg.vocab_size, device=cfg.device)
        for precision in PRECISIONS[cfg.device]:
            for name in names:
                if name == "notebook_packed" and precision != "fp32":
                    continue  # the packed LSTM never runs in low precision on CPU; its fp32 row is the reference
                cases.append(step_case(name, precision, batch, cfg.dims, cfg.device))
    # The notebook step is ~4x slower than the others: fewer rounds keep the run short, same interleaving.
    fast = [c for c in cases if c.name != "notebook_packed"]
    slow = [c for c in cases if c.name == "notebook_packed"]
    time_round_robin(fast, cfg.repeats, cfg.warmup)
    if slow:
        time_round_robin(slow, max(1, min(cfg.repeats, 5)), min(cfg.warmup, 1))
    return [case_record(c, group, cfg.dims, peaks) for c in cases]


def _main_cases(cfg: BenchConfig, work: Workload, precisions: Sequence[str], batch: Batch) -> list[StepCase]:
    """The floor and the default model, each in every precision."""
    return [
        main_case(name, precision, work.vocab_size, batch, cfg.device)
        for precision in precisions
        for name in ("floor", MAIN_MODEL)
    ]


def _main_step_rows(
    cfg: BenchConfig, work: Workload, precisions: Sequence[str], peaks: dict[str, float | None]
) -> list[Record]:
    """One train_step at the main job's shape: the floor and the default model on the p90 bucketed batch."""
    cases = _main_cases(cfg, work, precisions, work.batch.to(cfg.device))
    time_round_robin(cases, cfg.repeats, cfg.warmup)
    dims = (work.vocab_size, ModelConfig().embed_dim, ModelConfig().hidden_dim)
    return [case_record(c, "main", dims, peaks) for c in cases]


def _main_epoch_rows(
    cfg: BenchConfig, work: Workload, precisions: Sequence[str], peaks: dict[str, float | None]
) -> list[Record]:
    """One epoch of the main job's bucketed batches, the floor and the default model on the very same batches."""
    batches = [b.to(cfg.device) for b in work.epoch]
    cases = _main_cases(cfg, work, precisions, batches[0])
    time_epochs_round_robin(cases, batches, max(1, cfg.epoch_repeats))
    return [epoch_record(c, "mainep", batches, peaks) for c in cases]


def train_one_epoch(data: Prepared, cfg: BenchConfig, *, bucket: bool, seed: int = 0) -> tuple[float, float]:
    """(wall seconds of the epoch, CPU seconds of the call) of one fp32 epoch of ``rnnreg.fit.fit`` on ``data``."""
    model = model_config(cfg.embed_dim, cfg.hidden_dim, regularized=True)
    tc = dataclasses.replace(train_config("fp32", cfg.device), epochs=1, batch_size=cfg.batch_size, bucket=bucket)
    c0 = time.process_time()
    result = fit(Experiment(model=model, train=tc), data, seed=seed)
    cpu = time.process_time() - c0  # the epoch plus building the model (small)
    record = result.history.epochs[0]
    if not math.isfinite(record.train_loss):
        raise RuntimeError(f"benchmark epoch (bucket={bucket}): training loss {record.train_loss}")
    return record.seconds, cpu


def _epoch_rows(cfg: BenchConfig, data: Prepared, note: Callable[[str], None]) -> list[Record]:
    """One training epoch with length bucketing vs random batching, fp32, alternating ``epoch_repeats`` times."""
    lengths = [len(ids) for ids, _ in data.train]
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(max(1, cfg.epoch_repeats)):
        for bucket in (True, False):
            times[bucket].append(train_one_epoch(data, cfg, bucket=bucket))
    records = []
    for bucket, timed in times.items():
        seconds = [wall for wall, _ in timed]
        q1, median, q3 = quartiles(seconds)
        records.append(
            Record(
                name="epoch_bucketed" if bucket else "epoch_random",
                group="epoch",
                device=cfg.device,
                precision="fp32",
                asked="fp32",
                rnn_dtype="fp32",
                low_precision=[],
                batch_size=cfg.batch_size,
                seq_len=max(lengths),
                tokens=sum(lengths),
                median_ms=median * 1e3,
                q1_ms=q1 * 1e3,
                q3_ms=q3 * 1e3,
                cpu_ms=statistics.median(cpu for _, cpu in timed) * 1e3,
                repeats=len(seconds),
                tokens_per_s=sum(lengths) / median,
                gflop=None,
                gflops_per_s=None,
                peak_fraction=None,
            )
        )
    texts = f"{len(lengths):,} training texts ({sum(lengths):,} tokens)"
    note(f"epoch rows: {cfg.epoch_data}, {texts}, batch {cfg.batch_size}")
    return records


def run_benchmarks(
    cfg: BenchConfig,
    hardware: Hardware,
    *,
    progress: Callable[[list[Record]], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> list[Record]:
    """Every measurement of ``rnnreg bench``, group by group; ``progress`` gets each group's rows as they finish.

    Groups: ``step`` (the floor, the regularized and the unregularized model in every precision of the device,
    the notebook's packed model in fp32), ``length`` and ``batch`` (the floor and the regularized model over
    :func:`growth_points` of T and B), ``main`` (one step of the default model and of the floor at its sizes on
    the epoch data's p90 bucketed batch), ``mainep`` (one epoch of those two on the very same bucketed batches,
    fp32 and bf16 where native), ``epoch`` (one epoch of ``fit`` with and without length bucketing).
    """
    peaks: dict[str, float | None] = {}
    if cfg.device == "cpu":
        peaks = {"fp32": hardware.peak_fp32, "bf16": hardware.peak_bf16}
    note = note or (lambda _line: None)
    B, T = cfg.batch_size, cfg.seq_len
    groups: list[tuple[str, Callable[[], list[Record]]]] = [
        ("step", lambda: _step_group(cfg, "step", _step_models(cfg), [(B, T)], peaks)),
        (
            "length",
            lambda: _step_group(cfg, "length", ("floor", "regularized"), [(B, t) for t in growth_points(T)], peaks),
        ),
        (
            "batch",
            lambda: _step_group(cfg, "batch", ("floor", "regularized"), [(b, T) for b in growth_points(B)], peaks),
        ),
    ]
    if cfg.epoch_data is not None:
        # Loaded first: a data set that does not exist is refused before minutes of timing, not after.
        try:
            data = epoch_data(cfg.epoch_data, cfg.epoch_texts)
        except DatasetUnavailableError as e:
            note(f"epoch and main-job rows skipped: {cfg.epoch_data} is not available ({e})")
        else:
            work = main_workload(data, cfg.epoch_data)
            precisions = main_precisions(cfg.device, hardware)
            note(work.describe())
            if "bf16" not in precisions:
                note("main-job rows in fp32 only: the LSTM runs no bf16 kernel on this CPU (bf16 is not native)")
            groups += [
                ("main", lambda: _main_step_rows(cfg, work, precisions, peaks)),
                ("mainep", lambda: _main_epoch_rows(cfg, work, precisions, peaks)),
                ("epoch", lambda: _epoch_rows(cfg, data, note)),
            ]
    records: list[Record] = []
    with torch_threads(cfg.threads):
        for _group, measure in groups:
            rows = with_ratios(measure())
            records += rows
            if progress is not None:
                progress(rows)
    return records


def _step_models(cfg: BenchConfig) -> tuple[str, ...]:
    return MODELS if cfg.notebook else tuple(m for m in MODELS if m != "notebook_packed")
