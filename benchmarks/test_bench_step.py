"""Timings of ONE ``rnnreg.step.train_step`` call: packed notebook BiLSTM vs the padding-invariant model, fp32 vs AMP.

Shapes: B=64, T=128 (lengths 64..128, fixed by seed), vocab 20,000, embed 128, hidden 256, one BiLSTM layer,
2 classes; AdamW + clip by norm + label smoothing 0.1. Run with
``pytest benchmarks -m benchmark --benchmark-only -p no:cacheprovider``; the summary prints the medians and the
ratios the project targets (reported, never asserted: timings depend on the machine).

With one layer ``hidden_p`` must be 0 (ModelConfig rejects it: it acts between layers), so the regularized
model uses embed_p, input_p, weight_p and output_p.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from rnnreg.config import ModelConfig, TrainConfig
from rnnreg.data import PAD_ID, Batch
from rnnreg.model import NotebookBiLSTM, SequenceClassifier
from rnnreg.step import StepStats, low_precision_modules, make_optimizer, make_scaler, probe_autocast, train_step

B, T, V, E, H, C = 64, 128, 20_000, 128, 256, 2  # batch, time, vocab, embed, hidden per direction, classes
WARMUP, ROUNDS, SLOW_ROUNDS = 2, 10, 5  # the packed step takes ~2 s on 2 cores: fewer rounds for it

REGULARIZED = ModelConfig(embed_dim=E, hidden_dim=H, embed_p=0.1, input_p=0.3, hidden_p=0.0, weight_p=0.3, output_p=0.3)
UNREGULARIZED = ModelConfig(
    embed_dim=E, hidden_dim=H, embed_p=0.0, input_p=0.0, hidden_p=0.0, weight_p=0.0, output_p=0.0
)

pytestmark = pytest.mark.benchmark


def make_batch(device: str = "cpu") -> Batch:
    """A fixed-seed batch with lengths 64..128, the longest exactly T, pads = PAD_ID."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    tokens = torch.randint(PAD_ID + 2, V, (B, T), generator=g)  # real ids only; pads are set below
    tokens[torch.arange(T)[None, :] >= lengths[:, None]] = PAD_ID
    labels = torch.randint(0, C, (B,), generator=g)
    return Batch(tokens, lengths, labels).to(device)


def time_one_step(
    benchmark: BenchmarkFixture,
    record: Callable[[str, float, list[str]], None],
    model: nn.Module,
    amp: str,
    rounds: int,
    device: str,
) -> StepStats:
    """Benchmark one train_step call per round on a fixed batch and record the median; return the last stats."""
    torch.manual_seed(0)
    cfg = TrainConfig(optimizer="adamw", clip="norm", max_norm=1.0, label_smoothing=0.1, amp=amp, device=device)
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    scaler = make_scaler(device, amp)
    batch = make_batch(device)

    # train_step itself is the timed function; its float(loss) waits for the device, so CUDA timings are real.
    stats: StepStats = benchmark.pedantic(
        train_step, args=(model, batch, optimizer, scaler, cfg), rounds=rounds, warmup_rounds=WARMUP, iterations=1
    )
    assert math.isfinite(stats.loss) and not stats.skipped
    assert stats.logits.shape == (B, C)
    # Label the run by what actually ran in low precision, never by what was asked for.
    low = low_precision_modules(probe_autocast(model, batch, amp)) if amp != "off" else []
    benchmark.extra_info["low_precision_modules"] = low
    if benchmark.stats is not None:  # None under --benchmark-disable
        record(benchmark.name.removeprefix("test_"), benchmark.stats.stats.median, low)
    return stats


def test_notebook_packed_fp32(
    benchmark: BenchmarkFixture, record_step: Callable[[str, float, list[str]], None]
) -> None:
    """(a) The notebook's model: pack_padded_sequence + nn.LSTM(bidirectional), fp32."""
    torch.manual_seed(0)
    model = NotebookBiLSTM(V, E, H, C, lstm_dropout=0.0, embed_dropout=0.0)
    time_one_step(benchmark, record_step, model, "off", SLOW_ROUNDS, "cpu")


def test_regularized_fp32(benchmark: BenchmarkFixture, record_step: Callable[[str, float, list[str]], None]) -> None:
    """(b) SequenceClassifier with embedding, locked input, weight and output dropout, fp32."""
    torch.manual_seed(0)
    time_one_step(benchmark, record_step, SequenceClassifier(REGULARIZED, V, C), "off", ROUNDS, "cpu")


def test_regularized_bf16(benchmark: BenchmarkFixture, record_step: Callable[[str, float, list[str]], None]) -> None:
    """(c) As (b) under CPU bf16 autocast (the LSTM runs bf16 only where oneDNN supports it; see probe_autocast)."""
    torch.manual_seed(0)
    time_one_step(benchmark, record_step, SequenceClassifier(REGULARIZED, V, C), "bf16", ROUNDS, "cpu")


def test_unregularized_fp32(benchmark: BenchmarkFixture, record_step: Callable[[str, float, list[str]], None]) -> None:
    """(d) The same SequenceClassifier with every *_p = 0, fp32: the cost of regularization is (b)/(d)."""
    torch.manual_seed(0)
    time_one_step(benchmark, record_step, SequenceClassifier(UNREGULARIZED, V, C), "off", ROUNDS, "cpu")


@pytest.mark.gpu
def test_regularized_cuda_fp16_gradscaler(
    benchmark: BenchmarkFixture, record_step: Callable[[str, float, list[str]], None]
) -> None:
    """CUDA fp16 autocast + GradScaler on the regularized model; skipped without CUDA."""
    torch.manual_seed(0)
    time_one_step(benchmark, record_step, SequenceClassifier(REGULARIZED, V, C), "fp16", ROUNDS, "cuda")
