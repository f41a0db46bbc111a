"""FLOPs of a training step, and the round-robin timer: one step of every case per round, so load slows all alike."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rnnreg.batch import Batch
from rnnreg.bench.workloads import AMP, NUM_CLASSES, build, build_main, train_config
from rnnreg.config import TrainConfig
from rnnreg.step import StepStats, make_optimizer, make_scaler, train_step


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


def main_case(name: str, precision: str, vocab_size: int, batch: Batch, device: str) -> StepCase:
    """A :class:`StepCase` of the main job: ``build_main(name)`` trained with the default TrainConfig."""
    cfg = dataclasses.replace(TrainConfig(), amp=AMP[precision], device=device)
    return StepCase(name, precision, build_main(name, vocab_size).to(device), batch, cfg)


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
