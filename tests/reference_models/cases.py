"""Small models, layers and clip / loss / optimizer / step functions shared by the check tests.

Each is a correct reference (named after what it is) or one realistic bug (named after the bug); the tests that
use them are the per-module tests/test_check_*.py. Training steps are in steps.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnreg.batch import PAD_ID, Batch, collate
from rnnreg.testing import checks

VOCAB, CLASSES = 30, 3


def make_batch() -> Batch:
    """Five rows of lengths 6, 4, 2, 1, 5 (T = 6): padding in most rows, a one-token row."""
    gen = torch.Generator().manual_seed(7)
    lengths = [6, 4, 2, 1, 5]
    rows = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in lengths]
    return collate([(ids, i % CLASSES) for i, ids in enumerate(rows)])


def pack(x: Tensor, lengths: Tensor) -> nn.utils.rnn.PackedSequence:
    return nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)


class PackedBiLSTM(nn.Module):
    """The reference: packed BiLSTM, final states of both directions, dropout before the classifier."""

    def __init__(self, output_p: float = 0.3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(output_p)
        self.head = nn.Linear(12, CLASSES)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(pack(self.embedding(tokens), lengths))
        return torch.cat([h_n[-2], h_n[-1]], dim=1)  # [B, 2H]

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.drop(self.features(tokens, lengths)))


class NotebookLSTM(PackedBiLSTM):
    """The notebook's model: its only dropout is nn.LSTM(dropout=0.3) on a single layer, which does nothing."""

    def __init__(self) -> None:
        super().__init__(output_p=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PyTorch warns about exactly this bug
            self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True, dropout=0.3)


class UnpackedBiLSTM(PackedBiLSTM):
    """No packing: the reverse direction starts on the pads, and h_n of the forward one is taken after them."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(self.embedding(tokens))
        return torch.cat([h_n[-2], h_n[-1]], dim=1)


class DividesByBatchMaxLength(PackedBiLSTM):
    """Masked sum divided by the batch's longest length instead of each row's own."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.lstm(pack(self.embedding(tokens), lengths))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out.sum(dim=1) / lengths.max()


class SortsWithoutRestoring(PackedBiLSTM):
    """Sorts the batch by length for enforce_sorted=True packing and never restores the order."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        lengths, order = lengths.sort(descending=True)
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(tokens[order]), lengths, batch_first=True)
        _, (h_n, _) = self.lstm(packed)
        return torch.cat([h_n[-2], h_n[-1]], dim=1)


class DropoutInEval(PackedBiLSTM):
    """Functional dropout with training=True hard-coded: still random in eval."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(F.dropout(self.features(tokens, lengths), 0.3, training=True))


class LargeOffsetLogits(PackedBiLSTM):
    """Adds and later removes a large constant inside the autocast region: bf16 rounding eats the signal."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        shifted = self.head(self.features(tokens, lengths) + 512.0)  # features near 512: bf16 spacing is 4
        return shifted - self.head(torch.full_like(self.features(tokens, lengths), 512.0))


MODEL_CHECKS: list[Callable[[Any, Batch], Any]] = [
    checks.check_eval_deterministic,
    checks.check_dropout_active,
    checks.check_padding_invariance,
    checks.check_batch_independence,
    checks.check_amp_parity,
]


class LockedDropout(nn.Module):
    """Done right: nn.Dropout on a (B, 1, D) mask of ones, broadcast over time."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x: Tensor) -> Tensor:
        B, _, D = x.shape
        return x * self.drop(x.new_ones(B, 1, D))


class MaskedDropout(nn.Module):
    """A family of buggy locked dropouts: ``mask_shape(B, T, D)`` picks the axes, the flags pick the scaling."""

    def __init__(
        self,
        p: float,
        mask_shape: Callable[[int, int, int], tuple[int, ...]],
        *,
        inverted: bool = True,
        keep_prob: float | None = None,
        in_eval: bool = False,
    ) -> None:
        super().__init__()
        self.p, self.mask_shape, self.inverted, self.in_eval = p, mask_shape, inverted, in_eval
        self.keep_prob = 1 - p if keep_prob is None else keep_prob

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training or self.in_eval):
            return x
        mask = x.new_empty(self.mask_shape(*x.shape)).bernoulli_(self.keep_prob)
        return x * (mask / (1 - self.p) if self.inverted else mask)


def per_sequence(B: int, T: int, D: int) -> tuple[int, ...]:
    return (B, 1, D)


def _grads(params: Iterable[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def clip_per_tensor(params: list[Tensor], max_norm: float) -> Tensor:
    """tf.keras ``clipnorm``: each tensor clipped to max_norm on its own."""
    norms = []
    for g in _grads(params):
        norms.append(g.norm())
        g.mul_(torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0))
    return torch.stack(norms).norm()


def clip_returns_nothing(params: list[Tensor], max_norm: float) -> None:
    nn.utils.clip_grad_norm_(params, max_norm)


def clip_always_rescales(params: list[Tensor], max_norm: float) -> Tensor:
    norm = nn.utils.get_total_norm(_grads(params))
    for g in _grads(params):
        g.mul_(max_norm / norm)  # also scales small gradients up to max_norm
    return norm


def clip_crashes_on_missing_grad(params: list[Tensor], max_norm: float) -> Tensor:
    norm = torch.stack([p.grad.norm() for p in params]).norm()  # type: ignore[union-attr]
    for p in params:
        p.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))  # type: ignore[union-attr]
    return norm


def smoothing_reference(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps)


def smoothing_over_wrong_classes(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    K = logits.shape[1]
    q = torch.full_like(logits, eps / (K - 1)).scatter_(1, targets[:, None], 1 - eps)
    return F.cross_entropy(logits, q)


def smoothing_summed(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="sum")


def smoothing_per_row(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="none")


def adamw(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def adam(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def sgd_momentum(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


def adamw_without_lr(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    """Decays by 1 - wd per step: the decay is not multiplied by lr."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd / lr)


def adam_l2_from_squared_norm(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    """L2 added as wd * ||p||^2 to the loss: its gradient is 2*wd*p, twice the declared coupling."""
    return torch.optim.Adam(params, lr=lr, weight_decay=2 * wd)


class NaNRows(PackedBiLSTM):
    """Produces NaN logits in rows 1 and 3, e.g. a division by a zero count."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out.index_fill(0, torch.tensor([1, 3]), float("nan"))


class FailsOnOneRow(PackedBiLSTM):
    """Raises on a batch of one row, with a two-line message (only its first line belongs in the report)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if len(tokens) == 1:
            raise RuntimeError("needs at least two rows\nsecond line of the traceback text")
        return super().forward(tokens, lengths)


class FailsWhenReversed(PackedBiLSTM):
    """Raises when the last row is longer than the first (it assumed rows sorted by decreasing length)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if lengths[-1] > lengths[0]:
            raise RuntimeError("rows must be sorted by length")
        return super().forward(tokens, lengths)


class FailsOnWiderBatch(PackedBiLSTM):
    """Raises on any width but the one it was written for (a fixed T)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if tokens.shape[1] != 6:
            raise ValueError("expected 6 steps")
        return super().forward(tokens, lengths)


def sorted_batch() -> Batch:
    """make_batch's rows ordered by decreasing length: a model that sorts rows internally is right on this order."""
    batch = make_batch()
    order = batch.lengths.argsort(descending=True)
    return Batch(batch.tokens[order], batch.lengths[order], batch.labels[order])


def clip_removes_grads(params: list[Tensor], max_norm: float) -> Tensor:
    norm = nn.utils.get_total_norm(_grads(params))
    for p in params:
        p.grad = None  # "clipped to nothing"
    return norm


def clip_norm_then_value(params: list[Tensor], max_norm: float) -> Tensor:
    """Both clipping modes applied: the value clip after the norm clip changes the gradient's direction."""
    norm = nn.utils.clip_grad_norm_(params, max_norm)
    nn.utils.clip_grad_value_(params, 0.01 * max_norm)
    return norm


def clip_creates_missing_grads(params: list[Tensor], max_norm: float) -> Tensor:
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # "every parameter has a gradient", frozen ones included
    return nn.utils.clip_grad_norm_(params, max_norm)


class NaNOnOneRow(PackedBiLSTM):
    """NaN logits for a batch of one row only (a variance over the batch divides by B - 1 = 0)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out * float("nan") if len(tokens) == 1 else out


class NaNUnderAutocast(PackedBiLSTM):
    """NaN logits under autocast only (an overflow in low precision)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out
