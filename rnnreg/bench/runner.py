"""Step and epoch timings, the hardware probe and FLOP counts behind ``rnnreg bench`` and ``benchmarks/``.

Every timing calls :func:`rnnreg.step.train_step` on a model from :func:`rnnreg.model.build_model` (or on
:class:`PaddedLSTM`, the kernel floor) and checks what came back: a finite loss, and which modules really ran in
low precision (:func:`rnnreg.step.probe_autocast`), so a row is labelled by what ran, never by what was asked for.
The rows of one comparison share one batch and are timed round-robin (one step of each, then again), so a machine
that gets busier half-way slows them all alike: ratios within one run are the figures to read, never ratios
between runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnreg.batch import PAD_ID, Batch, batch_indices, collate
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.cores import free_cores
from rnnreg.data import DatasetUnavailableError
from rnnreg.fit import Prepared, fit, prepare
from rnnreg.layers import gather_last, rnn_supports_autocast, run_rnn
from rnnreg.model import build_model
from rnnreg.step import StepStats, make_optimizer, make_scaler, probe_autocast, train_step

AMP = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}  # precision name -> TrainConfig.amp
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
NUM_CLASSES = 2
FMA_UNITS = 2  # vector FMA pipes per core assumed by the peak estimate (x86 server cores since Haswell / Zen 2)

# The regularized model of the benchmarks: every dropout that can act with one layer (hidden_p needs two).
REGULARIZED_P: dict[str, Any] = {
    "embed_p": 0.1,
    "input_p": 0.3,
    "hidden_p": 0.0,
    "weight_p": 0.3,
    "output_p": 0.3,
    "recurrent_p": 0.0,
}
UNREGULARIZED_P: dict[str, Any] = dict.fromkeys(REGULARIZED_P, 0.0)


# --------------------------------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the CPU (empty fields where it is missing, e.g. on macOS)."""

    model: str
    flags: frozenset[str]
    mhz: float | None  # highest current clock over the logical CPUs; the peak estimate uses it
    logical_cpus: int

    @property
    def native_bf16(self) -> bool:
        """AVX512-BF16 dot products or AMX tiles: bf16 arithmetic in hardware, not converted to fp32 first."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def bf16_units(self) -> str:
        found = [
            name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in self.flags
        ]
        return " + ".join(found) or "none"

    @property
    def fp32_lanes(self) -> int:
        """fp32 lanes of the widest vector unit: 16 (AVX-512), 8 (AVX/AVX2), 4 otherwise (SSE, NEON)."""
        if "avx512f" in self.flags:
            return 16
        return 8 if {"avx2", "avx"} & self.flags else 4


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (x86 ``model name``/``flags``; ARM ``Features``/``CPU part``)."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    model = next(iter(fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or []), "")
    flags = frozenset(next(iter(fields.get("flags") or fields.get("features") or []), "").split())
    clocks = []
    for value in fields.get("cpu mhz", []):
        try:
            clocks.append(float(value))
        except ValueError:
            continue
    return CpuInfo(model or "unknown CPU", flags, max(clocks) if clocks else None, len(fields.get("processor", [])))


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    try:
        return parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:  # not Linux: nothing to read, the flags stay unknown
        return CpuInfo("unknown CPU", frozenset(), None, os.cpu_count() or 1)


def peak_gflops(cpu: CpuInfo, cores: int) -> tuple[float | None, float | None]:
    """Estimated (fp32, bf16) peak GFLOP/s of ``cores`` cores; None where the clock is unknown.

    fp32: cores x GHz x fp32 lanes x 2 (a fused multiply-add is 2 FLOPs) x FMA_UNITS (x 1 without FMA). bf16:
    twice that where native bf16 dot products exist (each fp32 lane multiplies two bf16 pairs; AMX can do far
    more, so this is a floor of its peak), the same as fp32 otherwise (bf16 is converted and computed in fp32).
    The clock is the current one, not a turbo clock: a rough ceiling for the distance to the hardware, no more.
    """
    if cpu.mhz is None:
        return None, None
    per_lane = 2 * FMA_UNITS if "fma" in cpu.flags or "avx512f" in cpu.flags else FMA_UNITS
    fp32 = cores * cpu.mhz / 1e3 * cpu.fp32_lanes * per_lane
    return fp32, fp32 * (2 if cpu.native_bf16 else 1)


@dataclass(frozen=True)
class Hardware:
    cpu: CpuInfo
    torch_version: str
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): the vector ISA torch's CPU kernels use
    lstm_bf16: bool  # whether an nn.LSTM really runs in bf16 under CPU autocast here (oneDNN needs native bf16)
    threads: int
    cuda: str | None  # the CUDA device's name, None without one
    peak_fp32: float | None
    peak_bf16: float | None

    def describe(self) -> list[str]:
        """The header lines of ``rnnreg bench``."""
        cpu = self.cpu
        clock = f", {cpu.mhz:.0f} MHz" if cpu.mhz else ""
        isa = ", ".join(f for f in ("avx512f", "avx2", "fma") if f in cpu.flags) or "none seen"
        lines = [
            f"CPU: {cpu.model} ({cpu.logical_cpus} logical CPUs{clock}); vector flags: {isa}; "
            f"torch CPU capability: {self.torch_capability}",
            f"torch {self.torch_version}, {self.threads} thread(s); CUDA: {self.cuda or 'none (CUDA rows skipped)'}",
        ]
        if cpu.native_bf16 and self.lstm_bf16:
            lines.append(f"bf16: native ({cpu.bf16_units}); under bf16 autocast the LSTM runs bf16 kernels (oneDNN)")
        elif cpu.native_bf16:
            lines.append(f"bf16: native ({cpu.bf16_units}), but this torch runs no bf16 LSTM here: the LSTM stays fp32")
        else:
            lines.append(
                "bf16: NOT native (no avx512_bf16 / amx_bf16 flag): under bf16 autocast the LSTM keeps its fp32 "
                "kernels (no emulated bf16 path); only small layers (the linear head) run in bf16"
            )
        if self.peak_fp32 is not None and self.peak_bf16 is not None:
            lines.append(
                f"peak estimate for {self.threads} core(s): fp32 {self.peak_fp32:.0f} GFLOP/s, bf16 "
                f"{self.peak_bf16:.0f} GFLOP/s (cores x GHz x {cpu.fp32_lanes} lanes x 2 FMA x {FMA_UNITS} units"
                f"{' x 2 for bf16' if cpu.native_bf16 else ''})"
            )
        return lines


def probe_hardware(threads: int, cpuinfo: CpuInfo | None = None) -> Hardware:
    cpu = cpuinfo or read_cpuinfo()
    cores = min(threads, cpu.logical_cpus or threads)
    peak32, peak16 = peak_gflops(cpu, cores)
    return Hardware(
        cpu=cpu,
        torch_version=torch.__version__,
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        lstm_bf16=rnn_supports_autocast("lstm", "cpu", torch.bfloat16),
        threads=threads,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        peak_fp32=peak32,
        peak_bf16=peak16,
    )


# ------------------------------------------------------------------------------------------------------ FLOPs


def step_flops(
    lengths: Sequence[int],
    embed_dim: int,
    hidden_dim: int,
    num_classes: int = NUM_CLASSES,
    *,
    rnn: str = "lstm",
    num_layers: int = 1,
    bidirectional: bool = True,
) -> int:
    """Matrix-multiply FLOPs of one training step (forward + backward) on the real tokens of a batch.

    Per real token, layer and direction the RNN computes G gate blocks (4 for an LSTM, 3 for a GRU) of H units
    from D_in inputs and H recurrent states: ``2 * G * H * (D_in + H)`` FLOPs (multiply + add), where D_in is
    the embedding size in layer 0 and ``directions * H`` above it. The head adds ``2 * directions * H * C`` per
    sequence. The backward pass computes the gradient of the inputs and of the weights, each a product of the
    same size, so a step is 3x the forward. Gate nonlinearities, embedding gathers, dropout masks and the
    optimizer update are left out: element-wise, small against the products. Padding is not counted: a model
    that computes it (the kernel floor) does more work than this for the same useful result.
    """
    gates = {"lstm": 4, "gru": 3}[rnn]
    directions = 2 if bidirectional else 1
    tokens = sum(int(n) for n in lengths)
    forward = 0
    for k in range(num_layers):
        d_in = embed_dim if k == 0 else directions * hidden_dim
        forward += tokens * directions * 2 * gates * hidden_dim * (d_in + hidden_dim)
    forward += len(lengths) * 2 * directions * hidden_dim * num_classes
    return 3 * forward


# ----------------------------------------------------------------------------------------- models and batches


class PaddedLSTM(nn.Module):
    """The kernel floor: embedding -> one fused bidirectional nn.LSTM over the whole padded batch -> linear.

    A speed reference, not a model to train: it computes every pad, and its reverse direction starts on the pads
    (not padding-invariant). It reads the forward state after each sequence's last token and the reverse state
    at step 0. Under an autocast the LSTM cannot run in low precision here, it runs in fp32 (``run_rnn``).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_dim, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        H = self.lstm.hidden_size
        out, _ = run_rnn(self.lstm, self.embedding(tokens), "lstm")  # (B, T, 2H)
        last = gather_last(out[:, :, :H], lengths)  # (B, H) forward state after the last real token
        return self.head(torch.cat([last, out[:, 0, H:]], dim=1))  # (B, C)


def model_config(embed_dim: int, hidden_dim: int, *, regularized: bool, arch: str = "awd") -> ModelConfig:
    """The benchmarks' model: REGULARIZED_P's dropouts, or every ``*_p`` = 0."""
    base = ModelConfig(arch=arch, embed_dim=embed_dim, hidden_dim=hidden_dim, **UNREGULARIZED_P)
    return dataclasses.replace(base, **REGULARIZED_P) if regularized else base


def train_config(precision: str, device: str) -> TrainConfig:
    """The benchmarks' step: AdamW, clip by norm, label smoothing 0.1, autocast as ``precision`` says."""
    return TrainConfig(
        optimizer="adamw", clip="norm", max_norm=1.0, label_smoothing=0.1, amp=AMP[precision], device=device
    )


def make_batch(batch_size: int, seq_len: int, vocab_size: int, *, seed: int = 0, device: str = "cpu") -> Batch:
    """A fixed-seed batch with lengths drawn from ceil(T/2)..T, the first one exactly T; pads are PAD_ID."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint((seq_len + 1) // 2, seq_len + 1, (batch_size,), generator=g)  # (B,)
    lengths[0] = seq_len
    tokens = torch.randint(PAD_ID + 2, vocab_size, (batch_size, seq_len), generator=g)  # (B, T) real ids only
    tokens[torch.arange(seq_len)[None, :] >= lengths[:, None]] = PAD_ID
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    return Batch(tokens, lengths, labels).to(device)


MODELS = ("floor", "regularized", "unregularized", "notebook_packed")
MAIN_MODEL = "rnnreg_train"  # the main job's rows: the model `rnnreg train` builds with the default config


def build(name: str, vocab_size: int, embed_dim: int, hidden_dim: int, seed: int = 0) -> nn.Module:
    """One of MODELS, initialized from ``seed``; the project's models come from ``build_model``."""
    torch.manual_seed(seed)
    if name == "floor":
        return PaddedLSTM(vocab_size, embed_dim, hidden_dim)
    if name not in MODELS:
        raise ValueError(f"unknown benchmark model {name!r}; choose one of {', '.join(MODELS)}")
    arch = "notebook" if name == "notebook_packed" else "awd"
    cfg = model_config(embed_dim, hidden_dim, regularized=name == "regularized", arch=arch)
    return build_model(cfg, vocab_size, NUM_CLASSES)


def build_main(name: str, vocab_size: int, seed: int = 0) -> nn.Module:
    """The main job's model (``MAIN_MODEL``: ``build_model(ModelConfig())``) or the floor at its sizes."""
    torch.manual_seed(seed)
    defaults = ModelConfig()
    if name == "floor":
        return PaddedLSTM(vocab_size, defaults.embed_dim, defaults.hidden_dim)
    if name != MAIN_MODEL:
        raise ValueError(f"unknown main-job model {name!r}; choose floor or {MAIN_MODEL}")
    return build_model(defaults, vocab_size, NUM_CLASSES)


def low_precision_report(model: nn.Module, batch: Batch, precision: str) -> tuple[list[str], str]:
    """(modules whose output was bf16/fp16, the dtype the RNN produced), from one probe forward."""
    if precision == "fp32":
        return [], "fp32"
    report = probe_autocast(model, batch, AMP[precision])
    low = [name for name, dtype in report.items() if dtype in ("bfloat16", "float16")]
    rnn_names = [name for name, mod in model.named_modules() if isinstance(mod, nn.RNNBase)]
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    rnn_dtypes = {short.get(report[n], report[n]) for n in rnn_names if n in report}
    return low, "/".join(sorted(rnn_dtypes)) or "?"


# ----------------------------------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class StepCase:
    """One model, batch and precision, ready to time with :func:`time_round_robin`."""

    name: str
    precision: str  # asked for: fp32 | bf16 | fp16
    model: nn.Module
    batch: Batch
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    times: list[float] = field(default_factory=list)  # wall seconds per timed step
    cpu_times: list[float] = field(default_factory=list)  # CPU seconds of this process per timed step
    skipped: int = 0
    last: StepStats | None = None

    def __post_init__(self) -> None:
        self.model.train()
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scaler = make_scaler(self.batch.tokens.device.type, self.cfg.amp)

    def step(self, batch: Batch | None = None) -> tuple[float, float]:
        """One ``train_step`` on ``batch`` (default: the case's own); its (wall, process CPU) time in seconds, the
        device synchronized on both sides."""
        batch = self.batch if batch is None else batch
        device = batch.tokens.device.type
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = train_step(self.model, batch, self.optimizer, self.scaler, self.cfg)
        _sync(device)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        if not math.isfinite(stats.loss):
            raise RuntimeError(f"benchmark {self.name} ({self.precision}): train_step returned loss {stats.loss}")
        self.skipped += stats.skipped  # an fp16 scaler skips a step while it backs off; counted, not hidden
        self.last = stats
        return seconds, cpu_seconds


def step_case(name: str, precision: str, batch: Batch, dims: tuple[int, int, int], device: str) -> StepCase:
    """A :class:`StepCase` for model ``name`` (see :func:`build`); ``dims`` = (vocab, embed, hidden)."""
    vocab_size, embed_dim, hidden_dim = dims
    model = build(name, vocab_size, embed_dim, hidden_dim).to(device)
    return StepCase(name, precision, model, batch, train_config(precision, device))


def time_round_robin(cases: Sequence[StepCase], repeats: int, warmup: int, seed: int = 0) -> None:
    """Time ``repeats`` steps of every case, one step of each per round, after ``warmup`` untimed ones each.

    The order within a round is shuffled (seeded): a case that always ran first, right after another shape's
    buffers were freed, would pay the allocator's page faults every time and carry a bias instead of noise.
    """
    order = list(cases)
    rng = random.Random(seed)
    for _ in range(warmup):
        for case in order:
            case.step()
    for _ in range(repeats):
        rng.shuffle(order)
        for case in order:
            wall, cpu = case.step()
            case.times.append(wall)
            case.cpu_times.append(cpu)


def time_epochs_round_robin(cases: Sequence[StepCase], batches: Sequence[Batch], epochs: int, seed: int = 0) -> None:
    """Time ``epochs`` passes of every case over the same ``batches``, after one untimed pass each.

    Round-robin by step: each batch is stepped by every case (in a seeded shuffled order) before the next, so a
    machine that gets busier slows all cases alike. A case's epoch time is the sum of its step times; each epoch
    appends one entry to ``times`` and ``cpu_times``. The untimed pass creates the kernels of every batch shape.
    """
    rng = random.Random(seed)
    order = list(cases)
    for epoch in range(epochs + 1):
        totals = {id(case): [0.0, 0.0] for case in cases}
        for batch in batches:
            rng.shuffle(order)
            for case in order:
                wall, cpu = case.step(batch)
                totals[id(case)][0] += wall
                totals[id(case)][1] += cpu
        if epoch > 0:
            for case in cases:
                case.times.append(totals[id(case)][0])
                case.cpu_times.append(totals[id(case)][1])


# ----------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One row of the table and of ``--json``."""

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


def _quartiles(times: Sequence[float]) -> tuple[float, float, float]:
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
    q1, median, q3 = _quartiles(case.times)
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
    q1, median, q3 = _quartiles(case.times)
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


# ------------------------------------------------------------------------------------------------ the bench run


@dataclass(frozen=True)
class BenchConfig:
    """What ``rnnreg bench`` measures; :meth:`defaults` gives the full and the ``--quick`` settings."""

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
            raise ValueError("--device cuda, but torch sees no CUDA device here; use --device cpu")
        flags = {"batch_size": "--batch-size", "seq_len": "--seq-len", "threads": "--threads", "repeats": "--repeats"}
        for name in ("batch_size", "seq_len", "vocab_size", "embed_dim", "hidden_dim", "repeats", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                flag = flags.get(name, name)
                raise ValueError(f"{flag} must be a whole number >= 1 (got {value!r})")
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
            f"{full.hidden_dim} (run without --quick); at this smaller shape fixed per-step costs weigh more, so "
            "these ratios are for information"
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


def main_precisions(device: str, hardware: Hardware) -> tuple[str, ...]:
    """The main job's precisions: fp32, and bf16 on a CPU only where the LSTM really runs bf16 kernels (probed)."""
    if device != "cpu":
        return PRECISIONS[device]
    return ("fp32", "bf16") if hardware.lstm_bf16 else ("fp32",)


def main_case(name: str, precision: str, vocab_size: int, batch: Batch, device: str) -> StepCase:
    """A :class:`StepCase` of the main job: ``build_main(name)`` trained with the default TrainConfig."""
    cfg = dataclasses.replace(TrainConfig(), amp=AMP[precision], device=device)
    return StepCase(name, precision, build_main(name, vocab_size).to(device), batch, cfg)


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


def epoch_data(source: str, limit: int | None = None) -> Prepared:
    """The data of the epoch rows: ``source`` prepared as ``rnnreg train`` does, training split only.

    ``limit`` keeps the first N training texts. Without validation and test splits ``fit`` times the training
    loop alone.
    """
    data = prepare(DataConfig(source=source))
    train = data.train[:limit] if limit else data.train
    return Prepared(data.corpus, data.vocab, train, [], [])


@dataclass(frozen=True)
class Workload:
    """The main job's own work on one data set: bucketed batches of ``rnnreg train``'s default batch size."""

    source: str
    vocab_size: int
    p90: int  # 90th percentile of the training texts' lengths
    batch: Batch  # one batch of the epoch whose longest text is the p90 length (the nearest above, else below)
    epoch: list[Batch]  # one epoch of length-bucketed, shuffled batches, as fit draws them (fixed seed)

    @property
    def tokens(self) -> int:
        return sum(int(b.lengths.sum()) for b in self.epoch)

    def describe(self) -> str:
        lengths = self.batch.lengths
        return (
            f"main job: {self.source}, {len(self.epoch)} bucketed batches of {TrainConfig().batch_size} "
            f"({self.tokens:,} tokens); the step row's batch: B={len(lengths)}, lengths "
            f"{int(lengths.min())}..{int(lengths.max())} (p90 of the texts: {self.p90}); vocab {self.vocab_size:,}, "
            f"the default model (embed {ModelConfig().embed_dim}, hidden {ModelConfig().hidden_dim}, BiLSTM)"
        )


def main_workload(data: Prepared, source: str, seed: int = 0) -> Workload:
    """``data``'s training split batched as ``rnnreg train`` batches it (length bucketing, shuffled, seeded)."""
    lengths = [len(ids) for ids, _ in data.train]
    if not lengths:
        raise ValueError(f"{source} has no training texts to time")
    p90 = sorted(lengths)[min(len(lengths) - 1, (9 * len(lengths)) // 10)]
    size = TrainConfig().batch_size
    order = batch_indices(lengths, size, shuffle=True, bucket=True, generator=torch.Generator().manual_seed(seed))
    epoch = [collate([data.train[i] for i in idx]) for idx in order]
    full = [b for b in epoch if len(b) == max(len(x) for x in epoch)]  # not the short last batch
    longest = [int(b.lengths.max()) for b in full]
    above = [t for t in longest if t >= p90]
    target = min(above) if above else max(longest)
    batch = full[longest.index(target)]
    return Workload(source, len(data.vocab), p90, batch, epoch)


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
        q1, median, q3 = _quartiles(seconds)
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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
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


# ------------------------------------------------------------------------------------------------------ goals


@dataclass(frozen=True)
class Goal:
    what: str
    target: float
    compare: str  # "<=": value <= target; ">=": value >= target; "|x|<=": abs(value) <= target
    value: float | None  # from median wall times; None: not measured in this run
    cpu_value: float | None = None  # the same from median CPU times of the process (less disturbed when shared)

    def _met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        if self.compare == "|x|<=":
            return abs(value) <= self.target
        return value >= self.target if self.compare == ">=" else value <= self.target

    @property
    def met(self) -> bool | None:
        return self._met(self.value)

    def describe(self, *, cpu: bool = True) -> str:
        """One line: what, target, the wall-time ratio with its verdict and (``cpu``) the CPU-time one."""

        def shown(value: float | None) -> str:
            verdict = {True: "meets", False: "MISSES", None: "not measured"}[self._met(value)]
            return f"     - {verdict}" if value is None else f"{value:6.3f} {verdict:<6}"

        target = f"|x| <= {self.target}" if self.compare == "|x|<=" else f"{self.compare} {self.target}"
        line = f"{self.what:<56} {target:<11} wall {shown(self.value):<13}"
        return line + f" cpu {shown(self.cpu_value)}" if cpu else line


Timed = dict[tuple[str, str], tuple[float, float | None]]  # (name, precision asked) -> (wall ms, CPU ms or None)


def goals(records: Sequence[Record]) -> list[Goal]:
    """The issue's speed goals from this run's rows (see :func:`goals_from`)."""

    def timed(*groups: str) -> Timed:
        return {(r.name, r.asked): (r.median_ms, r.cpu_ms) for r in records if r.group in groups}

    shapes = sorted({(r.group, r.batch_size, r.seq_len) for r in records if r.group in ("length", "batch")})
    sweeps = [
        {(r.name, r.asked): (r.median_ms, r.cpu_ms) for r in records if (r.group, r.batch_size, r.seq_len) == shape}
        for shape in shapes
    ]
    return goals_from(timed("step"), timed("epoch"), main=timed("main"), main_epoch=timed("mainep"), sweeps=sweeps)


def _ratio(rows: Timed, a: tuple[str, str], b: tuple[str, str]) -> tuple[float | None, float | None]:
    """(wall, CPU) time of row ``a`` over row ``b``; None where a row or a CPU time is missing."""
    if a not in rows or b not in rows:
        return None, None
    (wall_a, cpu_a), (wall_b, cpu_b) = rows[a], rows[b]
    return wall_a / wall_b, cpu_a / cpu_b if cpu_a and cpu_b else None


def _mixed_precision_gap(rows: Timed, name: str, precision: str) -> list[float | None] | None:
    """``name``'s precision/fp32 ratio minus the floor's, from wall and CPU times; None without the rows."""
    model = _ratio(rows, (name, precision), (name, "fp32"))
    floor = _ratio(rows, ("floor", precision), ("floor", "fp32"))
    if model[0] is None or floor[0] is None:
        return None
    return [a - b if a is not None and b is not None else None for a, b in zip(model, floor, strict=True)]


def goals_from(
    step: Timed,
    epoch: Timed,
    *,
    main: Timed | None = None,
    main_epoch: Timed | None = None,
    sweeps: Sequence[Timed] = (),
) -> list[Goal]:
    """The speed goals, each a ratio of two timings of one run (never across runs), from wall and CPU times.

    ``step`` and ``epoch``: the goals' shape and the bucketing epochs; ``main`` and ``main_epoch``: the main job's
    step and epoch (the default model against the floor, :data:`MAIN_MODEL`); ``sweeps``: one ``Timed`` per shape
    of the length and batch sweeps, of which the worst regularized / floor ratio counts.
    "Length bucketing >= 30 % faster per epoch" is read as a speed-up: random-batching time / bucketed time
    >= 1.30 (an epoch in <= 0.77 of the time).
    """
    main, main_epoch = main or {}, main_epoch or {}
    out = []
    for precision in [p for p in AMP if ("floor", p) in step]:
        wall, cpu = _ratio(step, ("regularized", precision), ("floor", precision))
        out.append(Goal(f"regularized step / kernel floor, {precision}", 0.85, "<=", wall, cpu))
    for precision in ("bf16", "fp16"):
        gap = _mixed_precision_gap(step, "regularized", precision)
        if gap is not None:
            out.append(Goal(f"{precision}/fp32 ratio: regularized minus floor", 0.05, "|x|<=", *gap))
    wall, cpu = _ratio(step, ("regularized", "fp32"), ("unregularized", "fp32"))
    out.append(Goal("regularization overhead (all *_p > 0 / all 0), fp32", 1.05, "<=", wall, cpu))
    wall, cpu = _ratio(epoch, ("epoch_random", "fp32"), ("epoch_bucketed", "fp32"))
    out.append(Goal("epoch speed-up of length bucketing (random / bucketed)", 1.30, ">=", wall, cpu))
    for precision in [p for p in AMP if ("floor", p) in main] or ["fp32"]:
        wall, cpu = _ratio(main, (MAIN_MODEL, precision), ("floor", precision))
        out.append(Goal(f"main job step (defaults, p90 bucketed batch) / floor, {precision}", 1.0, "<=", wall, cpu))
    for precision in [p for p in AMP if ("floor", p) in main_epoch] or ["fp32"]:
        wall, cpu = _ratio(main_epoch, (MAIN_MODEL, precision), ("floor", precision))
        out.append(Goal(f"main job epoch (same bucketed batches) / floor, {precision}", 1.0, "<=", wall, cpu))
    for precision in ("bf16", "fp16"):
        gap = _mixed_precision_gap(main_epoch, MAIN_MODEL, precision)
        if gap is not None:
            out.append(Goal(f"{precision}/fp32 ratio, main job epoch: rnnreg minus floor", 0.05, "|x|<=", *gap))
    for precision in [p for p in AMP if any(("floor", p) in rows for rows in sweeps)] or ["fp32"]:
        pairs = [_ratio(rows, ("regularized", precision), ("floor", precision)) for rows in sweeps]
        walls = [w for w, _ in pairs if w is not None]
        cpus = [c for _, c in pairs if c is not None]
        worst = (max(walls) if walls else None, max(cpus) if cpus else None)
        out.append(Goal(f"worst regularized / floor over the length and batch sweeps, {precision}", 1.0, "<=", *worst))
    return out


# ------------------------------------------------------------------------------------------------ table, files

TABLE_HEADER = (
    f"{'group':<6} {'model':<16} {'B x T':>9} {'precision':<16} {'LSTM':<5} {'median ms (IQR)':>26} "
    f"{'cpu ms':>9} {'tokens/s':>10} {'x fp32':>7} {'x floor':>7} {'GFLOP/s':>8} {'peak':>5}"
)


def format_row(r: Record) -> str:
    shape = f"{r.batch_size}x{r.seq_len}"
    precision = r.precision if r.precision == r.asked else f"{r.precision} (asked {r.asked})"
    if r.group == "epoch":
        timing = f"{r.median_ms / 1e3:.2f} s ({r.q1_ms / 1e3:.2f}-{r.q3_ms / 1e3:.2f})"
    else:
        timing = f"{r.median_ms:.1f} ({r.q1_ms:.1f}-{r.q3_ms:.1f})"

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    peak = "-" if r.peak_fraction is None else f"{100 * r.peak_fraction:.0f}%"

    return (
        f"{r.group:<6} {r.name:<16} {shape:>9} {precision:<16} {r.rnn_dtype:<5} {timing:>26} "
        f"{num(r.cpu_ms, '.1f'):>9} {r.tokens_per_s:>10,.0f} {num(r.ratio_vs_fp32, '.3f'):>7} "
        f"{num(r.ratio_vs_floor, '.3f'):>7} {num(r.gflops_per_s, '.1f'):>8} {peak:>5}"
    )


def check_output_path(path: Path, flag: str, suffix: str | None = None) -> None:
    """Raise ValueError now, not after minutes of timing, when ``path`` cannot be written."""
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{flag} must name a {suffix} file (got {str(path)!r}); e.g. {flag} bench{suffix}")
    if path.is_dir():
        raise ValueError(
            f"{flag} {str(path)!r} is a folder; give a file name, e.g. {flag} {path / ('bench' + (suffix or '.json'))}"
        )
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"{flag} {str(path)!r}: the folder {str(parent)!r} does not exist; create it or choose another path"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{flag} {str(path)!r} is not writable; choose a path in a folder you can write to")
    if suffix == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"{flag} needs matplotlib, which is not installed; pip install matplotlib, or drop {flag}")


def write_json(records: Sequence[Record], hardware: Hardware, path: Path) -> None:
    """A JSON list with one object per row, each also naming the machine it was measured on."""
    machine = {
        "cpu": hardware.cpu.model,
        "native_bf16": hardware.cpu.native_bf16,
        "lstm_bf16": hardware.lstm_bf16,
        "threads": hardware.threads,
        "torch": hardware.torch_version,
    }
    rows = [dataclasses.asdict(r) | machine for r in records]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, path)


def plot(records: Sequence[Record], hardware: Hardware, path: Path) -> None:
    """Step time against sequence length and against batch size, per precision, the project's model vs the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:green"}
    for ax, group, axis in ((axes[0], "length", "seq_len"), (axes[1], "batch", "batch_size")):
        rows = [r for r in records if r.group == group]
        for name, style in (("regularized", "-o"), ("floor", "--s")):
            for asked in colors:
                line = sorted((getattr(r, axis), r.median_ms) for r in rows if r.name == name and r.asked == asked)
                if line:
                    label = "rnnreg (regularized)" if name == "regularized" else "kernel floor (padded nn.LSTM)"
                    ran = next(r.rnn_dtype for r in rows if r.name == name and r.asked == asked)
                    xs, ys = zip(*line, strict=True)
                    ax.plot(xs, ys, style, color=colors[asked], label=f"{label}, {asked} (LSTM {ran})", markersize=4)
        fixed = rows[0].batch_size if group == "length" and rows else (rows[0].seq_len if rows else 0)
        ax.set_xlabel("padded length T" if group == "length" else "batch size B")
        ax.set_title(f"one train_step, {'B' if group == 'length' else 'T'}={fixed}", fontsize=10)
        ax.set_ylabel("median ms")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{hardware.cpu.model}, {hardware.threads} thread(s), torch {hardware.torch_version}", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)
