"""rnnreg.testing.checks and .suite: each check passes PyTorch's own references and fails realistic bugs.

The buggy implementations below are modelled on INVARIANTS.md: the mistakes public code actually made.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from torch import Tensor, nn

from rnnreg.data import PAD_ID, Batch, collate
from rnnreg.testing import checks
from rnnreg.testing import strategies as rst
from rnnreg.testing.checks import InvariantViolation
from rnnreg.testing.suite import CheckResult, load_object, run_checks

VOCAB, CLASSES = 30, 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Runs after conftest's thread setting. These models are tiny: intra-op threads only add synchronization, and
    # on a busy 2-core machine this file took 79 s with 2 threads against 7 s with 1.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_batch() -> Batch:
    """Five rows of lengths 6, 4, 2, 1, 5 (T = 6): padding in most rows, a one-token row."""
    gen = torch.Generator().manual_seed(7)
    lengths = [6, 4, 2, 1, 5]
    rows = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in lengths]
    return collate([(ids, i % CLASSES) for i, ids in enumerate(rows)])


def pack(x: Tensor, lengths: Tensor) -> nn.utils.rnn.PackedSequence:
    return nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)


# ---------------------------------------------------------------------------------------------------------------
# Models: a correct reference and one model per realistic bug
# ---------------------------------------------------------------------------------------------------------------


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


class MeanOverAllT(PackedBiLSTM):
    """Mean-pools the outputs over all T positions, pads included."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.lstm(pack(self.embedding(tokens), lengths))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out.mean(dim=1)


class DividesByBatchMaxLength(PackedBiLSTM):
    """Masked sum divided by the batch's longest length instead of each row's own."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.lstm(pack(self.embedding(tokens), lengths))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out.sum(dim=1) / lengths.max()


class NormalizesOverBatchAxis(PackedBiLSTM):
    """L2-normalizes features over dim=0 (the batch) where dim=1 (features) was meant."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return F.normalize(super().features(tokens, lengths), dim=0)


class BatchStatsInEval(PackedBiLSTM):
    """BatchNorm without running statistics: normalizes with the current batch's statistics, eval included."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(12, track_running_stats=False)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.norm(super().features(tokens, lengths))


class SortsWithoutRestoring(PackedBiLSTM):
    """Sorts the batch by length for enforce_sorted=True packing and never restores the order."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        lengths, order = lengths.sort(descending=True)
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(tokens[order]), lengths, batch_first=True)
        _, (h_n, _) = self.lstm(packed)
        return torch.cat([h_n[-2], h_n[-1]], dim=1)


class MaskFromPadToken(PackedBiLSTM):
    """Mean-pools embeddings with a mask built from tokens != PAD instead of from lengths."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        mask = (tokens != PAD_ID).unsqueeze(-1).float()  # [B, T, 1]
        pooled = (self.embedding(tokens) * mask).sum(1) / mask.sum(1)  # [B, E]
        return torch.cat([pooled, pooled[:, :4]], dim=1)  # [B, 12] to fit the head


class DropoutInEval(PackedBiLSTM):
    """Functional dropout with training=True hard-coded: still random in eval."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(F.dropout(self.features(tokens, lengths), 0.3, training=True))


class LargeOffsetLogits(PackedBiLSTM):
    """Adds and later removes a large constant inside the autocast region: bf16 rounding eats the signal."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        shifted = self.head(self.features(tokens, lengths) + 512.0)  # features near 512: bf16 spacing is 4
        return shifted - self.head(torch.full_like(self.features(tokens, lengths), 512.0))


class WithBatchNorm(PackedBiLSTM):
    """Correct, but holds running statistics that a train-mode forward updates."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(12)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.drop(self.norm(self.features(tokens, lengths))))


def fresh(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


# ---------------------------------------------------------------------------------------------------------------
# Model checks
# ---------------------------------------------------------------------------------------------------------------

MODEL_CHECKS: list[Callable[[Any, Batch], Any]] = [
    checks.check_eval_deterministic,
    checks.check_dropout_active,
    checks.check_padding_invariance,
    checks.check_batch_independence,
    checks.check_amp_parity,
]


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
def test_packed_bilstm_passes_every_model_check(check: Callable[[Any, Batch], Any]) -> None:
    info = check(fresh(PackedBiLSTM), make_batch())
    assert isinstance(info, checks.CheckPassed) and info.detail


def test_eval_nondeterminism_fails_eval_check() -> None:
    with pytest.raises(InvariantViolation, match=r"eval mode is deterministic(.|\n)*training=self.training"):
        checks.check_eval_deterministic(fresh(DropoutInEval), make_batch())


def test_one_layer_lstm_dropout_fails_dropout_check_naming_the_layer() -> None:
    with pytest.raises(InvariantViolation, match=r"lstm: nn.LSTM\(dropout=0.3\) with num_layers=1"):
        checks.check_dropout_active(fresh(NotebookLSTM), make_batch())


def test_model_without_dropout_fails_dropout_check() -> None:
    with pytest.raises(InvariantViolation, match="no dropout with p > 0"):
        checks.check_dropout_active(PackedBiLSTM(output_p=0.0), make_batch())


def test_small_dropout_on_one_row_is_still_detected() -> None:
    # p = 0.05 on 12 features of a single row: two passes often coincide; tiling and 6 passes make a miss
    # improbable (all 6 masks over 16 x 12 entries identical), and the seed is fixed.
    one_row = Batch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([0]))
    checks.check_dropout_active(fresh(lambda: PackedBiLSTM(output_p=0.05)), one_row)


@pytest.mark.parametrize(
    ("cls", "variant"),
    [
        (UnpackedBiLSTM, "pad columns appended"),
        (MeanOverAllT, "pad columns appended"),
        (MaskFromPadToken, "random tokens in its pad positions"),
    ],
)
def test_padding_leaks_fail_padding_check(cls: type[nn.Module], variant: str) -> None:
    with pytest.raises(InvariantViolation, match=f"padding invariance(.|\n)*{variant}(.|\n)*pack the sequence"):
        checks.check_padding_invariance(fresh(cls), make_batch())


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (DividesByBatchMaxLength, "computed alone differ"),
        (NormalizesOverBatchAxis, "computed alone differ"),
        (SortsWithoutRestoring, "rows reordered inside forward"),
    ],
)
def test_batch_dependence_fails_batch_check(cls: type[nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_batch_independence(fresh(cls), make_batch())


def test_batchnorm_without_running_stats_fails_batch_check_on_a_single_row() -> None:
    # BatchNorm refuses a batch of one in this mode; the check reports that as the model's batch dependence.
    with pytest.raises(
        InvariantViolation, match=r"raised ValueError on a batch of one row(.|\n)*statistics over the batch"
    ):
        checks.check_batch_independence(fresh(BatchStatsInEval), make_batch())


def test_padding_bugs_do_not_trip_batch_check() -> None:
    # Rows alone keep the batch's width, so a padding leak is reported by the padding check only.
    checks.check_batch_independence(fresh(UnpackedBiLSTM), make_batch())


def test_signal_lost_in_bf16_fails_amp_parity() -> None:
    with pytest.raises(InvariantViolation, match=r"bfloat16 autocast parity(.|\n)*> bound"):
        checks.check_amp_parity(fresh(LargeOffsetLogits), make_batch())


def test_large_offset_model_is_fine_in_fp32() -> None:
    # The planted bug above is an autocast bug only: the same model passes the fp32 checks.
    checks.check_eval_deterministic(fresh(LargeOffsetLogits), make_batch())
    checks.check_padding_invariance(fresh(LargeOffsetLogits), make_batch())


@given(batch=rst.padded_batches(vocab_size=VOCAB, num_classes=CLASSES, max_batch=4, max_len=6))
def test_packed_bilstm_is_padding_invariant_and_batch_independent_on_any_batch(batch: Batch) -> None:
    model = fresh(PackedBiLSTM)
    checks.check_padding_invariance(model, batch)
    checks.check_batch_independence(model, batch)


@given(batch=rst.padded_batches(vocab_size=VOCAB, num_classes=CLASSES, max_batch=4, max_len=6))
def test_unpacked_bilstm_fails_padding_check_on_any_batch(batch: Batch) -> None:
    # Appended pads reach every row's reverse direction, full-length rows included.
    with pytest.raises(InvariantViolation):
        checks.check_padding_invariance(fresh(UnpackedBiLSTM), batch)


# ---------------------------------------------------------------------------------------------------------------
# Checks leave the model as they found it
# ---------------------------------------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> tuple[list[bool], list[Tensor], Tensor]:
    state = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    return [m.training for m in model.modules()], state, torch.get_rng_state()


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", [WithBatchNorm, UnpackedBiLSTM, NotebookLSTM], ids=lambda c: c.__name__)
def test_model_checks_leave_modes_parameters_buffers_and_rng_unchanged(
    check: Callable[[Any, Batch], Any], cls: type[nn.Module]
) -> None:
    model = fresh(cls)
    model.train()
    model.lstm.eval()  # a deliberate mixed mode must survive, not be flattened by model.train(flag)
    torch.manual_seed(123)
    modes, state, rng = snapshot(model)
    with contextlib.suppress(InvariantViolation):  # failing checks must restore too: two of these models fail some
        check(model, make_batch())
    after_modes, after_state, after_rng = snapshot(model)
    assert after_modes == modes
    assert all(torch.equal(a, b) for a, b in zip(after_state, state, strict=True))
    assert torch.equal(after_rng, rng)


def test_train_mode_check_restores_batchnorm_running_stats() -> None:
    model = fresh(WithBatchNorm)
    before = model.norm.running_mean.clone()
    checks.check_dropout_active(model, make_batch())  # train-mode passes update running_mean on the way
    assert torch.equal(model.norm.running_mean, before)
    assert int(model.norm.num_batches_tracked) == 0


def test_non_callable_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"model must be callable as model\(tokens, lengths\)"):
        checks.check_eval_deterministic("not a model", make_batch())  # type: ignore[arg-type]


def test_model_taking_one_argument_is_a_type_error() -> None:
    class TokensOnly(nn.Module):
        def forward(self, tokens: Tensor) -> Tensor:
            return tokens.float()

    with pytest.raises(TypeError, match=r"TokensOnly takes \(tokens"):
        checks.check_padding_invariance(TokensOnly(), make_batch())


def test_model_returning_a_tuple_is_a_type_error() -> None:
    def model(tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return tokens.float(), lengths

    with pytest.raises(TypeError, match=r"must return float logits of shape \[B, C\]"):
        checks.check_eval_deterministic(model, make_batch())  # type: ignore[arg-type]


def test_batch_with_length_beyond_width_is_a_value_error() -> None:
    bad = Batch(torch.ones(2, 3, dtype=torch.int64), torch.tensor([3, 4]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=3\]"):
        checks.check_eval_deterministic(fresh(PackedBiLSTM), bad)


# ---------------------------------------------------------------------------------------------------------------
# Locked dropout
# ---------------------------------------------------------------------------------------------------------------


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


@given(p=rst.dropout_probs(max_p=0.9))
def test_locked_dropout_done_right_passes(p: float) -> None:
    checks.check_locked_dropout(LockedDropout(p), p=p)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.Dropout(0.3), "changes over time"),  # a fresh mask per step
        (MaskedDropout(0.3, lambda B, T, D: (1, T, D)), "changes over time"),  # awd-lstm's time-first mask
        (MaskedDropout(0.3, lambda B, T, D: (B, T, 1)), "changes over time"),  # whole time steps dropped
        (MaskedDropout(0.3, lambda B, T, D: (1, 1, D)), "all 64 sequences got the same mask"),
        (MaskedDropout(0.3, lambda B, T, D: (B, 1, 1)), "keeps or drops all its features together"),
        (MaskedDropout(0.3, per_sequence, inverted=False), "not rescaled"),
        (MaskedDropout(0.3, per_sequence, keep_prob=0.3), "entries dropped"),  # p taken as the keep probability
        (MaskedDropout(0.3, per_sequence, in_eval=True), "eval mode is not the identity"),
    ],
    ids=["nn.Dropout", "time-first", "time-steps", "shared-batch", "whole-sequence", "non-inverted", "keep-p", "eval"],
)
def test_buggy_locked_dropouts_fail(layer: nn.Module, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_locked_dropout(layer, p=0.3)


@given(p=rst.dropout_probs(max_p=0.9, min_p=0.05))
def test_time_first_locked_dropout_fails_on_batch_first_input_for_any_p(p: float) -> None:
    with pytest.raises(InvariantViolation, match="changes over time"):
        checks.check_locked_dropout(MaskedDropout(p, lambda B, T, D: (1, T, D)), p=p)


def test_locked_dropout_check_leaves_layer_mode_and_rng_unchanged() -> None:
    layer = LockedDropout(0.5).eval()
    rng = torch.get_rng_state()
    checks.check_locked_dropout(layer, p=0.5)
    assert not layer.training and not layer.drop.training
    assert torch.equal(torch.get_rng_state(), rng)


# ---------------------------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------------------------


def _grads(params: Iterable[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def clip_per_tensor(params: list[Tensor], max_norm: float) -> Tensor:
    """tf.keras ``clipnorm``: each tensor clipped to max_norm on its own."""
    norms = []
    for g in _grads(params):
        norms.append(g.norm())
        g.mul_(torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0))
    return torch.stack(norms).norm()


def clip_returns_post_norm(params: list[Tensor], max_norm: float) -> Tensor:
    nn.utils.clip_grad_norm_(params, max_norm)
    return nn.utils.get_total_norm(_grads(params))


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


def test_clip_grad_norm_passes() -> None:
    checks.check_gradient_clipping(nn.utils.clip_grad_norm_)


@pytest.mark.parametrize(
    ("clip_fn", "match"),
    [
        (clip_per_tensor, "each tensor's own norm is <= max_norm(.|\n)*like tf.keras clipnorm"),
        (clip_returns_post_norm, "that is the post-clip norm"),
        (clip_returns_nothing, "returned None instead of the pre-clip global norm"),
        (clip_always_rescales, "changed although the norm is below max_norm"),
        (clip_crashes_on_missing_grad, "one .grad = None"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[:30],
)
def test_buggy_clipping_fails(clip_fn: Callable[[list[Tensor], float], Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_gradient_clipping(clip_fn)


# ---------------------------------------------------------------------------------------------------------------
# Label smoothing
# ---------------------------------------------------------------------------------------------------------------


def smoothing_reference(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps)


def smoothing_soft_targets(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Written out by hand with soft targets: the same convention as PyTorch."""
    K = logits.shape[1]
    q = torch.full_like(logits, eps / K).scatter_(1, targets[:, None], 1 - eps + eps / K)
    return F.cross_entropy(logits, q)


def smoothing_over_wrong_classes(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    K = logits.shape[1]
    q = torch.full_like(logits, eps / (K - 1)).scatter_(1, targets[:, None], 1 - eps)
    return F.cross_entropy(logits, q)


def smoothing_zero_means_default(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps or 0.1)


def smoothing_ignored(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets)


def smoothing_summed(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="sum")


def smoothing_per_row(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="none")


@pytest.mark.parametrize("loss_fn", [smoothing_reference, smoothing_soft_targets], ids=lambda f: f.__name__)
def test_pytorch_label_smoothing_passes(loss_fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    checks.check_label_smoothing(loss_fn)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (smoothing_over_wrong_classes, r"eps/\(K-1\) convention"),
        (smoothing_zero_means_default, "eps=0 is replaced by a default"),
        (smoothing_ignored, "smoothing is ignored"),
        (smoothing_summed, "summed over the batch"),
        (smoothing_per_row, r"returned \(8,\)"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_buggy_label_smoothing_fails(loss_fn: Callable[[Tensor, Tensor, float], Tensor], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_label_smoothing(loss_fn)


# ---------------------------------------------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------------------------------------------


def adamw(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def adam(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def sgd(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


def sgd_momentum(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


def adamw_without_lr(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    """Decays by 1 - wd per step: the decay is not multiplied by lr."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd / lr)


def adam_l2_from_squared_norm(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    """L2 added as wd * ||p||^2 to the loss: its gradient is 2*wd*p, twice the declared coupling."""
    return torch.optim.Adam(params, lr=lr, weight_decay=2 * wd)


class AdamWDecayAfterUpdate(torch.optim.Adam):
    """Hand-written AdamW that decays the already-updated weights."""

    def __init__(self, params: list[Tensor], lr: float, wd: float) -> None:
        super().__init__(params, lr=lr)
        self.wd = wd

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * self.wd)


@pytest.mark.parametrize(
    ("make", "decoupled"),
    [(adamw, True), (sgd, True), (adam, False), (sgd, False), (sgd_momentum, False)],
    ids=["AdamW-decoupled", "SGD-decoupled", "Adam-coupled", "SGD-coupled", "SGD-momentum-coupled"],
)
def test_pytorch_optimizers_pass_weight_decay_check(make: Callable[..., Any], decoupled: bool) -> None:
    checks.check_weight_decay(make, decoupled=decoupled)


@pytest.mark.parametrize(
    ("make", "decoupled", "match"),
    [
        (adam, True, "moved by about lr(.|\n)*Adam with coupled L2"),  # "AdamW" implemented as coupled L2
        (adamw_without_lr, True, "not multiplied by lr"),
        (AdamWDecayAfterUpdate, True, "at step 1 the update differs"),
        (sgd_momentum, True, "at step 2 the update differs"),  # the decay enters the momentum buffer
        (adamw, False, "decays p directly"),
        (adam_l2_from_squared_norm, False, "the weights differ"),  # Adam's first step is sign-like: step 2,
    ],
    ids=["Adam-as-AdamW", "AdamW-no-lr", "decay-after-update", "SGD-momentum", "AdamW-as-L2", "L2-doubled"],
)
def test_buggy_weight_decay_fails(make: Callable[..., Any], decoupled: bool, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_weight_decay(make, decoupled=decoupled)


def test_weight_decay_needs_a_declared_kind() -> None:
    with pytest.raises(TypeError, match="decoupled must be True"):
        checks.check_weight_decay(adamw, decoupled=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# AMP: GradScaler and clipping order
# ---------------------------------------------------------------------------------------------------------------


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)


def step_right(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def step_clips_scaled(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # before unscale_: clips gradients x 65536
    scaler.step(optimizer)
    scaler.update()


def step_never_clips(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    scaler.step(optimizer)
    scaler.update()


def step_clips_after_step(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.update()


def test_scale_unscale_clip_step_passes_amp_clipping() -> None:
    checks.check_amp_clipping(step_right)


@pytest.mark.parametrize(
    ("train_step", "match"),
    [
        (step_clips_scaled, "about the loss scale 65536(.|\n)*before scaler.unscale_"),
        (step_never_clips, "equals the unclipped one"),
        (step_clips_after_step, "equals the unclipped one"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_wrong_step_order_fails_amp_clipping(train_step: Callable[..., None], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_clipping(train_step)


def test_amp_clipping_leaves_global_rng_unchanged() -> None:
    rng = torch.get_rng_state()
    checks.check_amp_clipping(step_right)
    assert torch.equal(torch.get_rng_state(), rng)


# ---------------------------------------------------------------------------------------------------------------
# Suite: load_object and run_checks
# ---------------------------------------------------------------------------------------------------------------


def test_load_object_resolves_module_and_dotted_attribute() -> None:
    assert load_object("torch.nn.utils:clip_grad_norm_") is nn.utils.clip_grad_norm_
    assert load_object("torch.nn:Linear.forward") is nn.Linear.forward


def test_load_object_resolves_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "my_models.py"
    path.write_text("def build():\n    return 42\n")
    assert load_object(f"{path}:build")() == 42


def test_load_object_lets_a_file_import_its_siblings(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_rnnreg_test.py").write_text("SIZE = 7\n")
    (tmp_path / "models.py").write_text("from helpers_for_rnnreg_test import SIZE\n\ndef build():\n    return SIZE\n")
    assert load_object(f"{tmp_path / 'models.py'}:build")() == 7
    assert str(tmp_path) not in sys.path  # the folder was importable only while loading


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("torch.nn.utils.clip_grad_norm_", "expected MODULE:ATTR"),
        ("no_such_module_xyz:build", "could not import 'no_such_module_xyz'(.|\n)*ModuleNotFoundError"),
        ("torch.nn.utils:clip_grad_nrom_", "has no attribute 'clip_grad_nrom_'(.|\n)*clip_grad_norm_"),
        ("missing/dir/models.py:build", "no such file"),
    ],
)
def test_load_object_errors_say_what_is_wrong(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_object(spec)


def test_load_object_reports_errors_raised_while_importing(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("import not_installed_pkg_xyz\n")
    with pytest.raises(ValueError, match=r"ModuleNotFoundError.*not_installed_pkg_xyz"):
        load_object(f"{path}:build")
    assert not any(name.startswith("_rnnreg_user_broken") for name in sys.modules)


def by_name(rows: list[CheckResult]) -> dict[str, CheckResult]:
    return {row.name: row for row in rows}


def test_run_checks_passes_references_and_skips_what_is_missing() -> None:
    rows = by_name(
        run_checks(
            lambda: PackedBiLSTM(),
            loss_fn=smoothing_reference,
            clip_fn=nn.utils.clip_grad_norm_,
            optimizer_factory=adamw,
            decoupled=True,
            num_classes=CLASSES,
        )
    )
    assert {name: row.status for name, row in rows.items()} == {
        "eval_deterministic": "PASS",
        "dropout_active": "PASS",
        "padding_invariance": "PASS",
        "batch_independence": "PASS",
        "amp_parity": "PASS",
        "gradient_clipping": "PASS",
        "label_smoothing": "PASS",
        "weight_decay": "PASS",
        "amp_clipping": "SKIP",
    }
    assert "train_step" in rows["amp_clipping"].detail


def test_run_checks_reports_the_notebook_bugs() -> None:
    rows = by_name(
        run_checks(NotebookLSTM, loss_fn=smoothing_over_wrong_classes, train_step=step_clips_scaled, num_classes=2)
    )
    assert rows["dropout_active"].status == "FAIL" and "num_layers=1" in rows["dropout_active"].detail
    assert rows["padding_invariance"].status == "PASS"  # the notebook packs its sequences
    assert rows["label_smoothing"].status == "FAIL"
    assert rows["amp_clipping"].status == "FAIL"


def test_run_checks_turns_crashes_into_failures_with_the_exception_type() -> None:
    def broken() -> nn.Module:
        raise RuntimeError("no weights file")

    rows = run_checks(broken)
    assert all(r.status == "FAIL" and "RuntimeError: no weights file" in r.detail for r in rows[:5])


def test_run_checks_skips_model_checks_without_an_embedding() -> None:
    def no_embedding() -> Callable[[Tensor, Tensor], Tensor]:
        return lambda tokens, lengths: tokens.float()

    rows = run_checks(no_embedding)
    assert all(r.status == "SKIP" and "pass vocab_size" in r.detail for r in rows[:5])


def test_run_checks_needs_decoupled_with_an_optimizer_factory() -> None:
    with pytest.raises(ValueError, match="decoupled=True"):
        run_checks(optimizer_factory=adamw)


def test_run_checks_builds_the_model_without_moving_the_global_rng() -> None:
    rng = torch.get_rng_state()
    run_checks(functools.partial(PackedBiLSTM, 0.3))
    assert torch.equal(torch.get_rng_state(), rng)


def test_run_checks_on_a_user_file_finds_an_embedding_bag_padding_leak(tmp_path: Path) -> None:
    # What `rnnreg check path/to/models.py:build` does, end to end on a user file.
    path = tmp_path / "user_models.py"
    path.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Bag(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.embedding = nn.EmbeddingBag(20, 4)  # not an nn.Embedding: vocab must be passed
                    self.head = nn.Linear(4, 2)

                def forward(self, tokens, lengths):
                    return self.head(self.embedding(tokens))

            def build():
                return Bag()
            """
        )
    )
    rows = by_name(run_checks(load_object(f"{path}:build"), vocab_size=20))
    assert rows["eval_deterministic"].status == "PASS"
    assert rows["padding_invariance"].status == "FAIL"  # EmbeddingBag averages the pads in
    assert rows["dropout_active"].status == "FAIL"


def test_checks_import_without_hypothesis() -> None:
    # `rnnreg check` must work without the test extras: only rnnreg.testing.strategies needs Hypothesis.
    code = "import sys, rnnreg.testing; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
