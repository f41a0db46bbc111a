"""What the benchmarks time: the kernel floor and the project's models, fixed-seed batches, the main job's bucketed
epoch of a real data set, and the precisions each runs in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnnreg.batch import PAD_ID, Batch, batch_indices, collate
from rnnreg.bench.hardware import Hardware
from rnnreg.config import DataConfig, ModelConfig, TrainConfig
from rnnreg.fit import Prepared, prepare
from rnnreg.layers import gather_last, run_rnn
from rnnreg.model import build_model
from rnnreg.step import probe_autocast

AMP = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}  # precision name -> TrainConfig.amp
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
NUM_CLASSES = 2


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


MODELS = ("floor", "regularized", "unregularized", "notebook_packed")
MAIN_MODEL = "rnnreg_train"  # the main job's rows: the model `rnnreg train` builds with the default config


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


def main_precisions(device: str, hardware: Hardware) -> tuple[str, ...]:
    """The main job's precisions: fp32, and bf16 on a CPU only where the LSTM really runs bf16 kernels (probed)."""
    if device != "cpu":
        return PRECISIONS[device]
    return ("fp32", "bf16") if hardware.lstm_bf16 else ("fp32",)


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
