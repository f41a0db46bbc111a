"""One row of the table and of the JSON: a timed case's quartiles, what ran in low precision, FLOP rates, ratios."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rnnreg.batch import Batch
from rnnreg.bench.timing import StepCase, step_flops
from rnnreg.bench.workloads import low_precision_report
from rnnreg.config import ModelConfig


@dataclass(frozen=True)
class Record:
    """One row of the table and of the JSON file."""

    name: str  # floor | regularized | unregularized | notebook_packed | epoch_bucketed | epoch_random
    group: str  # step | length | batch | epoch
    device: str
    precision: str  # what ran: the asked-for low precision if any module ran in it, else fp32
    asked: str  # the precision asked for
    rnn_dtype: str  # the dtype the RNN kernels ran in
    low_precision: list[str]  # modules whose output was bf16/fp16
    batch_size: int
    seq_len: int  # padded length of the batch (the longest text; for an epoch, the longest of the data)
    tokens: int  # real tokens per step (per epoch for the epoch rows)
    median_ms: float  # wall time
    q1_ms: float
    q3_ms: float
    cpu_ms: float | None  # median CPU time of this process per step: on a shared machine, less disturbed than wall
    repeats: int
    tokens_per_s: float
    gflop: float | None  # per step, step_flops(); None for epochs
    gflops_per_s: float | None
    peak_fraction: float | None  # gflops_per_s / the estimated peak of this precision
    skipped_steps: int = 0
    ratio_vs_fp32: float | None = None  # this row / the same model's fp32 row, same group and shape
    ratio_vs_floor: float | None = None  # this row / the floor's row of the same precision, group and shape


def quartiles(times: Sequence[float]) -> tuple[float, float, float]:
    if len(times) == 1:
        return times[0], times[0], times[0]
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return q1, median, q3


def case_record(case: StepCase, group: str, dims: tuple[int, int, int], peaks: dict[str, float | None]) -> Record:
    """The Record of a timed case: quartiles of its times, what ran in low precision, FLOP rates."""
    _, embed_dim, hidden_dim = dims
    batch = case.batch
    lengths = batch.lengths.tolist()
    low, rnn_dtype = low_precision_report(case.model, batch, case.precision)
    ran = case.precision if low else "fp32"
    q1, median, q3 = quartiles(case.times)
    flops = step_flops(lengths, embed_dim, hidden_dim)
    rate = flops / median / 1e9
    peak = peaks.get(ran)
    return Record(
        name=case.name,
        group=group,
        device=batch.tokens.device.type,
        precision=ran,
        asked=case.precision,
        rnn_dtype=rnn_dtype,
        low_precision=low,
        batch_size=len(lengths),
        seq_len=int(batch.tokens.shape[1]),
        tokens=sum(lengths),
        median_ms=median * 1e3,
        q1_ms=q1 * 1e3,
        q3_ms=q3 * 1e3,
        cpu_ms=statistics.median(case.cpu_times) * 1e3,
        repeats=len(case.times),
        tokens_per_s=sum(lengths) / median,
        gflop=flops / 1e9,
        gflops_per_s=rate,
        peak_fraction=rate / peak if peak else None,
        skipped_steps=case.skipped,
    )


def epoch_record(case: StepCase, group: str, batches: Sequence[Batch], peaks: dict[str, float | None]) -> Record:
    """The Record of a case timed over whole epochs of ``batches`` (:func:`time_epochs_round_robin`)."""
    defaults = ModelConfig()
    low, rnn_dtype = low_precision_report(case.model, batches[0], case.precision)
    ran = case.precision if low else "fp32"
    q1, median, q3 = quartiles(case.times)
    lengths = [b.lengths.tolist() for b in batches]
    tokens = sum(sum(n) for n in lengths)
    flops = sum(step_flops(n, defaults.embed_dim, defaults.hidden_dim) for n in lengths)
    rate = flops / median / 1e9
    peak = peaks.get(ran)
    return Record(
        name=case.name,
        group=group,
        device=batches[0].tokens.device.type,
        precision=ran,
        asked=case.precision,
        rnn_dtype=rnn_dtype,
        low_precision=low,
        batch_size=max(len(n) for n in lengths),
        seq_len=max(max(n) for n in lengths),
        tokens=tokens,
        median_ms=median * 1e3,
        q1_ms=q1 * 1e3,
        q3_ms=q3 * 1e3,
        cpu_ms=statistics.median(case.cpu_times) * 1e3,
        repeats=len(case.times),
        tokens_per_s=tokens / median,
        gflop=flops / 1e9,
        gflops_per_s=rate,
        peak_fraction=rate / peak if peak else None,
        skipped_steps=case.skipped,
    )


def with_ratios(records: Sequence[Record]) -> list[Record]:
    """Fill ratio_vs_fp32 and ratio_vs_floor from rows of the same group, device and shape."""

    def key(r: Record) -> tuple[str, str, int, int]:
        return (r.group, r.device, r.batch_size, r.seq_len)

    index = {(key(r), r.name, r.asked): r for r in records}
    out = []
    for r in records:
        fp32 = index.get((key(r), r.name, "fp32"))
        floor = index.get((key(r), "floor", r.asked))
        out.append(
            dataclasses.replace(
                r,
                ratio_vs_fp32=r.median_ms / fp32.median_ms if fp32 and r.asked != "fp32" else None,
                ratio_vs_floor=r.median_ms / floor.median_ms if floor and r.name != "floor" else None,
            )
        )
    return out
