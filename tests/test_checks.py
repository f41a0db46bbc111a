"""rnnreg.testing.checks and .suite: each check passes PyTorch's own references and fails realistic bugs.

The buggy implementations below are modelled on INVARIANTS.md: the mistakes public code actually made.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
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


def test_a_model_without_dropout_is_not_applicable_to_the_dropout_check() -> None:
    # A deterministic model is correct code: no verdict (SKIP in the suite), never a FAIL.
    with pytest.raises(checks.CheckNotApplicable, match="not applicable: the model has no dropout"):
        checks.check_dropout_active(PackedBiLSTM(output_p=0.0), make_batch())


class FunctionalDropoutNeverTraining(PackedBiLSTM):
    """F.dropout(..., training=False): the classic functional-dropout bug; no dropout module to find."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.3, training=False)


class TorchDropoutPositional(PackedBiLSTM):
    """torch.dropout(input, p, train) with every argument positional, train=False."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.dropout(super().forward(tokens, lengths), 0.3, False)


class ZeroDropoutCall(PackedBiLSTM):
    """F.dropout with p = 0: configured off, so the model is deterministic by design."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.0, True)


def test_dropout_with_p_zero_is_not_applicable_rather_than_inert() -> None:
    with pytest.raises(checks.CheckNotApplicable, match="no random draw in forward"):
        checks.check_dropout_active(fresh(lambda: ZeroDropoutCall(output_p=0.0)), make_batch())


class HandMaskNeverApplied(PackedBiLSTM):
    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits = super().forward(tokens, lengths)
        mask = torch.empty_like(logits).bernoulli_(0.7) / 0.7  # drawn, then forgotten
        del mask
        return logits


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (FunctionalDropoutNeverTraining, r"dropout\(p=0\.3, training=False\)(.|\n)*training=self\.training"),
        (HandMaskNeverApplied, r"forward draws random numbers \(bernoulli_\)(.|\n)*never applied"),
        (TorchDropoutPositional, r"forward draws random numbers \(dropout\(p=0\.3, training=False\)\)"),
    ],
)
def test_functional_dropout_that_never_acts_fails_with_the_call_named(cls: type, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_dropout_active(fresh(lambda: cls(output_p=0.0)), make_batch())


def test_small_dropout_on_one_row_is_still_detected() -> None:
    # p = 0.05 on 12 features of a single row: two passes often coincide; tiling and 6 passes make a miss
    # improbable (all 6 masks over 16 x 12 entries identical), and the seed is fixed.
    one_row = Batch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([0]))
    checks.check_dropout_active(fresh(lambda: PackedBiLSTM(output_p=0.05)), one_row)


class ConvMaxOverPads(nn.Module):
    """A CNN text classifier that max-pools over every position, pads included: appending pads to a padded row
    often changes nothing (the pads' windows are already in the max), but the row without padding differs."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(8, 6, kernel_size=3, padding=1)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = torch.relu(self.conv(self.embedding(tokens).transpose(1, 2)))  # [B, 6, T]
        return self.head(h.max(dim=2).values)


@pytest.mark.parametrize(
    ("cls", "variant"),
    [
        (UnpackedBiLSTM, "pad columns appended"),
        (MeanOverAllT, "pad columns appended"),
        (ConvMaxOverPads, r"when run alone without padding \(vs alone, padded to T\)"),
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


class StandardizesOverBatch(PackedBiLSTM):
    """Standardizes features over the batch axis: the std of a single row is NaN."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = super().features(tokens, lengths)
        return (h - h.mean(dim=0)) / h.std(dim=0)


def test_a_batch_statistic_that_is_nan_on_one_row_is_blamed_on_the_batch_not_on_an_overflow() -> None:
    with (
        pytest.warns(UserWarning, match="degrees of freedom"),
        pytest.raises(
            InvariantViolation,
            match=r"non-finite ones in rows \[0\] on a batch of one row(.|\n)*statistic over the batch axis",
        ),
    ):
        checks.check_batch_independence(fresh(StandardizesOverBatch), make_batch())


def test_a_model_that_is_nan_on_a_row_alone_is_left_to_the_batch_check_by_the_padding_check() -> None:
    with pytest.warns(UserWarning, match="degrees of freedom"):
        passed = checks.check_padding_invariance(fresh(StandardizesOverBatch), make_batch())
    assert "for 0 rows run without padding" in passed.detail


class DropoutLeftOnInEval(PackedBiLSTM):
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return F.dropout(super().forward(tokens, lengths), 0.3, training=True)


@pytest.mark.parametrize(
    "check",
    [
        checks.check_padding_invariance,
        checks.check_pad_content,
        checks.check_batch_independence,
        checks.check_amp_parity,
    ],
    ids=lambda c: c.__name__,
)
def test_eval_comparisons_do_not_run_on_a_model_whose_eval_output_is_random(check: Any) -> None:
    # Only check_eval_deterministic fails such a model; the other eval checks would blame padding or the batch.
    with pytest.raises(checks.CheckCouldNotRun, match="could not run: two eval-mode passes on the same batch differ"):
        check(fresh(DropoutLeftOnInEval), make_batch())
    with pytest.raises(InvariantViolation, match="eval mode is deterministic"):
        checks.check_eval_deterministic(fresh(DropoutLeftOnInEval), make_batch())


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
    # Failing checks must restore too: two of these models fail some, and the unpacked LSTM cannot run in bf16 on
    # CPUs without native bf16 kernels.
    with contextlib.suppress(InvariantViolation, checks.CheckCouldNotRun):
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


@given(p=rst.dropout_probs(max_p=0.9, min_p=0.01))
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
    [(adamw, True), (sgd, True), (adam, False), (sgd, False), (sgd_momentum, False), (AdamWDecayAfterUpdate, True)],
    ids=["AdamW-decoupled", "SGD-decoupled", "Adam-coupled", "SGD-coupled", "SGD-momentum-coupled", "decay-after"],
)
def test_pytorch_optimizers_pass_weight_decay_check(make: Callable[..., Any], decoupled: bool) -> None:
    checks.check_weight_decay(make, decoupled=decoupled)


@pytest.mark.parametrize(
    ("make", "decoupled", "match"),
    [
        (adam, True, "moved by about lr(.|\n)*Adam with coupled L2"),  # "AdamW" implemented as coupled L2
        (adamw_without_lr, True, "not multiplied by lr"),
        (sgd_momentum, True, "at step 2 the update differs"),  # the decay enters the momentum buffer
        (adamw, False, "decays p directly"),
        (adam_l2_from_squared_norm, False, "the weights differ"),  # Adam's first step is sign-like: step 2,
    ],
    ids=["Adam-as-AdamW", "AdamW-no-lr", "SGD-momentum", "AdamW-as-L2", "L2-doubled"],
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
        "pad_content": "PASS",
        "batch_independence": "PASS",
        "amp_parity": "PASS",
        "gradient_clipping": "PASS",
        "label_smoothing": "PASS",
        "weight_decay": "PASS",
        "amp_clipping": "SKIP",
        "amp_scaler": "SKIP",
        "locked_dropout": "SKIP",
        "embedding_dropout": "SKIP",
        "weight_drop": "SKIP",
        "decay_groups": "SKIP",
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
    # ... and names the line of the user's code that raised it
    assert all(re.search(r"raised at .*test_checks\.py:\d+ \(broken\): raise RuntimeError", r.detail) for r in rows[:5])


def test_run_checks_names_the_users_line_when_a_checked_function_crashes() -> None:
    def loss(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="nonsense")

    (row,) = run_checks(loss_fn=loss, only=["label_smoothing"])
    assert row.status == "FAIL" and row.detail.startswith("ValueError: nonsense is not a valid value for reduction")
    assert re.search(r"raised at .*test_checks\.py:\d+ \(loss\): return F\.cross_entropy", row.detail)


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
    assert rows["dropout_active"].status == "SKIP"  # no dropout at all: not applicable, not a FAIL


def test_checks_import_without_hypothesis() -> None:
    # `rnnreg check` must work without the test extras: only rnnreg.testing.strategies needs Hypothesis.
    code = "import sys, rnnreg.testing; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# Cases mutation testing found untested (tox -e mutation): diagnoses no test reached, argument validation, the
# documented tolerances and bounds, and the promises every check makes (names its invariant, reproducible)
# ---------------------------------------------------------------------------------------------------------------


class NaNRows(PackedBiLSTM):
    """Produces NaN logits in rows 1 and 3, e.g. a division by a zero count."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out.index_fill(0, torch.tensor([1, 3]), float("nan"))


class DropoutNotCalled(PackedBiLSTM):
    """Holds nn.Dropout(0.3) as ``drop`` but its forward never calls it."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.features(tokens, lengths))


class StackedLSTMUnused(PackedBiLSTM):
    """Builds a two-layer LSTM with dropout=0.3 but classifies from mean-pooled embeddings: the LSTM is dead code."""

    def __init__(self) -> None:
        super().__init__(output_p=0.0)
        self.lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        pooled = self.embedding(tokens).sum(1) / lengths[:, None]  # [B, E]
        return torch.cat([pooled, pooled[:, :4]], dim=1)  # [B, 12] to fit the head


class FirstRowForAll(PackedBiLSTM):
    """Every row gets the first row's logits: rows mixed (e.g. indexing h_n[-1][0] where h_n[-1] was meant)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out[:1].expand_as(out)


class FailsOnOneRow(PackedBiLSTM):
    """Raises on a batch of one row, with a two-line message (only its first line belongs in the report)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if len(tokens) == 1:
            raise RuntimeError("needs at least two rows\nsecond line of the traceback text")
        return super().forward(tokens, lengths)


class FailsSilentlyOnOneRow(PackedBiLSTM):
    """Raises an exception without a message on a batch of one row."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if len(tokens) == 1:
            raise ValueError
        return super().forward(tokens, lengths)


class FailsUnderAutocast(PackedBiLSTM):
    """An op without a low-precision kernel: raises as soon as autocast is on."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("no bf16 kernel for this op")
        return super().forward(tokens, lengths)


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


class TinyLargeOffsetLogits(LargeOffsetLogits):
    """LargeOffsetLogits scaled down to max|logit| ~ 1e-3: the autocast bound is relative, so it must still fail."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return super().forward(tokens, lengths) * 1e-3


def sorted_batch() -> Batch:
    """make_batch's rows ordered by decreasing length: a model that sorts rows internally is right on this order."""
    batch = make_batch()
    order = batch.lengths.argsort(descending=True)
    return Batch(batch.tokens[order], batch.lengths[order], batch.labels[order])


class FixedCountDropout(nn.Module):
    """Inverted locked dropout that drops exactly ``count`` of the B*D (sequence, feature) entries (a fixed set)."""

    def __init__(self, p: float, count: int) -> None:
        super().__init__()
        self.p, self.count = p, count

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        B, _, D = x.shape
        self.calls = getattr(self, "calls", 0) + 1  # another fixed set on each call: the mask is not cached
        order = torch.randperm(B * D, generator=torch.Generator().manual_seed(3 + self.calls))
        keep = torch.ones(B * D).index_fill(0, order[: self.count], 0.0).view(B, 1, D)
        return x * keep / (1 - self.p)


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


def clip_by_mean_square_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Total norm taken as the root-mean-square of the per-tensor norms (a mean where a sum belongs)."""
    norm = nn.utils.get_total_norm(_grads(params))
    wrong = torch.stack([g.norm() for g in _grads(params)]).pow(2).mean().sqrt()
    for g in _grads(params):
        g.mul_(torch.clamp(max_norm / wrong, max=1.0))
    return norm


def clip_returns_python_float(params: list[Tensor], max_norm: float) -> float:
    return float(nn.utils.clip_grad_norm_(params, max_norm))


def clip_returns_squared_norm(params: list[Tensor], max_norm: float) -> Tensor:
    return nn.utils.clip_grad_norm_(params, max_norm) ** 2


def smoothing_returns_a_list(logits: Tensor, targets: Tensor, eps: float) -> list[float]:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="none").tolist()


def smoothing_for_two_classes(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """eps/2 on every class, written for binary problems: right for K = 2 only."""
    q = torch.full_like(logits, eps / 2).scatter_(1, targets[:, None], 1 - eps + eps / 2)
    return F.cross_entropy(logits, q)


def smoothing_binary_special_case(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Right for K > 2, but two classes get the notebook's 1-eps / eps targets (0.9 / 0.1 for eps = 0.1)."""
    if logits.shape[1] == 2:
        return smoothing_over_wrong_classes(logits, targets, eps)
    return F.cross_entropy(logits, targets, label_smoothing=eps)


def smoothing_halved(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps / 2)


def adamw_ignoring_wd(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def adamw_decaying_twice(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=2 * wd)


def sgd_l2_doubled(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=2 * wd)


def step_never_steps(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.update()  # scaler.step(optimizer) forgotten


def step_clips_by_value(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_value_(model.parameters(), max_norm)  # clip='value' where clip='norm' was configured
    scaler.step(optimizer)
    scaler.update()


def step_with_label_smoothing(model: nn.Module, batch: Batch, optimizer: Any, scaler: Any, max_norm: float) -> None:
    loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels, label_smoothing=0.1)  # not loss_fn
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()


def _model(check: Callable[..., Any], cls: Callable[[], nn.Module], batch: Callable[[], Batch] = make_batch) -> Any:
    return lambda: check(fresh(cls), batch())


# (passing call, failing call) per check and failure path: the failure must name the invariant the pass reports.
NAMED_FAILURES: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "eval-nondeterministic": (
        _model(checks.check_eval_deterministic, PackedBiLSTM),
        _model(checks.check_eval_deterministic, DropoutInEval),
    ),
    "dropout-inert": (
        _model(checks.check_dropout_active, PackedBiLSTM),
        _model(checks.check_dropout_active, NotebookLSTM),
    ),
    "padding-appended": (
        _model(checks.check_padding_invariance, PackedBiLSTM),
        _model(checks.check_padding_invariance, UnpackedBiLSTM),
    ),
    "batch-alone": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, DividesByBatchMaxLength),
    ),
    "batch-permuted": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, SortsWithoutRestoring, sorted_batch),
    ),
    "batch-one-row-raises": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, FailsOnOneRow),
    ),
    "batch-one-row-nan": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, NaNOnOneRow),
    ),
    "batch-reversed-raises": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, FailsWhenReversed),
    ),
    "padding-wider-raises": (
        _model(checks.check_padding_invariance, PackedBiLSTM),
        _model(checks.check_padding_invariance, FailsOnWiderBatch),
    ),
    "amp-bound": (_model(checks.check_amp_parity, PackedBiLSTM), _model(checks.check_amp_parity, LargeOffsetLogits)),
    "amp-nan": (_model(checks.check_amp_parity, PackedBiLSTM), _model(checks.check_amp_parity, NaNUnderAutocast)),
    **{f"nan-logits-{check.__name__}": (_model(check, PackedBiLSTM), _model(check, NaNRows)) for check in MODEL_CHECKS},
    **{
        f"locked-{name}": (
            lambda: checks.check_locked_dropout(LockedDropout(0.3), p=0.3),
            functools.partial(checks.check_locked_dropout, layer, p=0.3),
        )
        for name, layer in [
            ("eval", MaskedDropout(0.3, per_sequence, in_eval=True)),
            ("scale", MaskedDropout(0.3, per_sequence, inverted=False)),
            ("time", nn.Dropout(0.3)),
            ("shared", MaskedDropout(0.3, lambda B, T, D: (1, 1, D))),
            ("features", MaskedDropout(0.3, lambda B, T, D: (B, 1, 1))),
            ("rate", MaskedDropout(0.3, per_sequence, keep_prob=0.3)),
        ]
    },
    **{
        f"clip-{clip_fn.__name__}": (
            lambda: checks.check_gradient_clipping(nn.utils.clip_grad_norm_),
            functools.partial(checks.check_gradient_clipping, clip_fn),
        )
        for clip_fn in [
            clip_per_tensor,
            clip_returns_nothing,
            clip_always_rescales,
            clip_crashes_on_missing_grad,
            clip_removes_grads,
            clip_norm_then_value,
            clip_creates_missing_grads,
        ]
    },
    **{
        f"smoothing-{loss_fn.__name__}": (
            lambda: checks.check_label_smoothing(smoothing_reference),
            functools.partial(checks.check_label_smoothing, loss_fn),
        )
        for loss_fn in [smoothing_summed, smoothing_per_row]
    },
    "decoupled-zero-grad": (
        lambda: checks.check_weight_decay(adamw, decoupled=True),
        lambda: checks.check_weight_decay(adam, decoupled=True),
    ),
    "decoupled-steps": (
        lambda: checks.check_weight_decay(adamw, decoupled=True),
        lambda: checks.check_weight_decay(sgd_momentum, decoupled=True),
    ),
    "coupled": (
        lambda: checks.check_weight_decay(adam, decoupled=False),
        lambda: checks.check_weight_decay(adamw, decoupled=False),
    ),
    "amp-clipping": (
        lambda: checks.check_amp_clipping(step_right),
        lambda: checks.check_amp_clipping(step_clips_scaled),
    ),
}


@pytest.mark.parametrize(("passes", "fails"), NAMED_FAILURES.values(), ids=NAMED_FAILURES.keys())
def test_a_failure_is_reported_under_the_invariant_a_pass_reports(
    passes: Callable[[], Any], fails: Callable[[], Any]
) -> None:
    # `rnnreg check` lines up passes and failures by this name, and the message format puts it first.
    passed = passes()
    assert isinstance(passed.invariant, str) and passed.invariant
    assert isinstance(passed.detail, str) and passed.detail
    with pytest.raises(InvariantViolation) as err:
        fails()
    assert str(err.value).startswith(passed.invariant)


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
def test_non_finite_logits_fail_naming_the_rows(check: Callable[[Any, Batch], Any]) -> None:
    with pytest.raises(InvariantViolation, match=r"non-finite logits in rows \[1, 3\]"):
        check(fresh(NaNRows), make_batch())


def test_eval_nondeterminism_names_its_size_and_the_rows() -> None:
    with pytest.raises(
        InvariantViolation, match=r"two eval passes differ by up to (\S+) \(rows \[0, 1, 2, 3, 4\]\)"
    ) as err:
        checks.check_eval_deterministic(fresh(DropoutInEval), make_batch())  # dropout on every row's features
    size = re.search(r"up to (\S+) ", str(err.value))
    assert size is not None and float(size.group(1)) > 0


def test_dropout_check_switches_an_eval_mode_model_to_train_mode() -> None:
    checks.check_dropout_active(fresh(PackedBiLSTM).eval(), make_batch())


@pytest.mark.parametrize(("cls", "name"), [(DropoutNotCalled, "drop"), (StackedLSTMUnused, "lstm")])
def test_dropout_modules_that_change_nothing_are_named(cls: type[nn.Module], name: str) -> None:
    with pytest.raises(InvariantViolation, match=rf"dropout modules with p > 0 exist \({name}\) but change nothing"):
        checks.check_dropout_active(fresh(cls), make_batch())


def test_a_mask_from_pad_ids_is_padding_invariant_but_reads_pad_content() -> None:
    # Correct while pads hold PAD_ID: padding invariance passes, the separate pad-content check names the cause.
    checks.check_padding_invariance(fresh(MaskFromPadToken), make_batch())
    with pytest.raises(InvariantViolation, match=r"pad content ignored(.|\n)*mask built from tokens != 0") as err:
        checks.check_pad_content(fresh(MaskFromPadToken), make_batch())
    assert "reads past each row's length" not in str(err.value)


def test_pad_content_failure_of_a_padding_leak_points_to_padding_invariance() -> None:
    with pytest.raises(InvariantViolation, match=r"pad content ignored(.|\n)*reads past each row's length"):
        checks.check_pad_content(fresh(UnpackedBiLSTM), make_batch())


def test_padding_failure_names_the_rows_their_lengths_and_the_variant() -> None:
    with pytest.raises(
        InvariantViolation,
        match=r"rows \[0, 1, 2, 3, 4\] \(lengths \[6, 4, 2, 1, 5\] of T=6\) changed by up to \S+ with 3 pad columns",
    ):
        checks.check_padding_invariance(fresh(UnpackedBiLSTM), make_batch())  # the reverse direction reads them all


def test_a_single_pad_position_is_filled_with_garbage() -> None:
    # Each padded row has exactly one pad, at position == length: the garbage variant must reach it.
    lengths = torch.tensor([5, 4, 5, 4, 5])
    tokens = torch.randint(1, VOCAB, (5, 5), generator=torch.Generator().manual_seed(7))
    tokens[lengths == 4, 4] = PAD_ID
    batch = Batch(tokens, lengths, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(InvariantViolation, match="with random tokens in its pad positions"):
        checks.check_pad_content(fresh(MaskFromPadToken), batch)


def test_pad_content_check_reports_how_many_variants_it_compared() -> None:
    padded = checks.check_pad_content(fresh(PackedBiLSTM), make_batch())
    full = make_batch()
    unpadded = Batch(full.tokens[:1], full.lengths[:1], full.labels[:1])  # the full-length row: no pad positions
    assert "2 pad-content variants" in padded.detail
    assert "1 pad-content variants" in checks.check_pad_content(fresh(PackedBiLSTM), unpadded).detail


def test_padding_check_accepts_one_extra_column_and_rejects_none() -> None:
    checks.check_padding_invariance(fresh(PackedBiLSTM), make_batch(), extra=1)
    with pytest.raises(ValueError, match="extra must be >= 1"):
        checks.check_padding_invariance(fresh(PackedBiLSTM), make_batch(), extra=0)


def test_batch_statistics_failure_gives_the_per_row_fix() -> None:
    with pytest.raises(InvariantViolation, match=r"Fix: compute every statistic per row"):
        checks.check_batch_independence(fresh(DividesByBatchMaxLength), make_batch())


def test_sorting_without_restoring_is_caught_by_the_permutations_when_rows_alone_agree() -> None:
    # On rows already sorted by length the model is right row by row; only a permuted batch exposes it.
    with pytest.raises(
        InvariantViolation, match=r"do not follow their rows when the batch is permuted \(reversed batch: rows \["
    ) as err:
        checks.check_batch_independence(fresh(SortsWithoutRestoring), sorted_batch())
    assert "rows reordered inside forward" in str(err.value)


def test_rows_mixed_across_the_batch_are_not_diagnosed_as_a_reordering() -> None:
    with pytest.raises(InvariantViolation, match="rows mixed by a view/transpose") as err:
        checks.check_batch_independence(fresh(FirstRowForAll), make_batch())
    assert "reordered" not in str(err.value)


@pytest.mark.parametrize(
    ("check", "cls", "match"),
    [
        (checks.check_batch_independence, FailsOnOneRow, "RuntimeError on a batch of one row: needs at least two rows"),
        (checks.check_batch_independence, FailsWhenReversed, "RuntimeError on the reversed batch: rows must be sorted"),
        (checks.check_padding_invariance, FailsOnWiderBatch, "ValueError on the batch with 3 pad columns appended"),
        (checks.check_batch_independence, FailsSilentlyOnOneRow, r"ValueError on a batch of one row: \."),  # no text
    ],
    ids=["one-row", "reversed", "wider", "no-message"],
)
def test_an_exception_on_a_derived_batch_names_the_batch_and_the_first_line(
    check: Callable[[Any, Batch], Any], cls: type[nn.Module], match: str
) -> None:
    with pytest.raises(InvariantViolation, match="the model ran on the batch but raised " + match) as err:
        check(fresh(cls), make_batch())
    assert "second line" not in str(err.value)


def test_an_exception_under_autocast_is_could_not_run_with_torchs_message() -> None:
    with pytest.raises(
        checks.CheckCouldNotRun, match=r"could not run(.|\n)*raised RuntimeError: no bf16 kernel for this op"
    ):
        checks.check_amp_parity(fresh(FailsUnderAutocast), make_batch())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_amp_parity_runs_the_requested_dtype_and_names_the_low_precision_modules(dtype: torch.dtype) -> None:
    model = fresh(PackedBiLSTM)
    seen: set[torch.dtype] = set()

    def record(*_: Any) -> None:
        if torch.is_autocast_enabled("cpu"):
            seen.add(torch.get_autocast_dtype("cpu"))

    model.head.register_forward_pre_hook(record)
    passed = checks.check_amp_parity(model, make_batch(), dtype=dtype)
    assert seen == {dtype}  # every autocast forward (the comparison and the probe) ran in this dtype
    assert str(dtype).removeprefix("torch.") in passed.invariant
    assert passed.detail.endswith("low precision in: head")  # the packed LSTM stays fp32 on CPU


def test_amp_parity_of_a_plain_function_reports_no_low_precision_module() -> None:
    model = fresh(PackedBiLSTM).eval()  # the check cannot switch a plain function to eval mode
    passed = checks.check_amp_parity(lambda tokens, lengths: model(tokens, lengths), make_batch())
    assert passed.detail.endswith("low precision in: none")  # no modules to probe


def test_amp_parity_rtol_overrides_the_bound_and_the_bound_is_inclusive() -> None:
    checks.check_amp_parity(fresh(LargeOffsetLogits), make_batch(), rtol=100.0)
    with pytest.raises(InvariantViolation, match="> bound"):
        checks.check_amp_parity(fresh(PackedBiLSTM), make_batch(), rtol=0.0)  # its head runs in bf16: diff > 0
    # Autocast leaves an embedding lookup alone: identical logits pass even a zero bound.
    embedding = fresh(PackedBiLSTM).embedding
    checks.check_amp_parity(lambda tokens, lengths: embedding(tokens)[:, 0, :], make_batch(), rtol=0.0)


def test_amp_parity_bound_is_relative_to_the_logits_at_any_scale() -> None:
    with pytest.raises(InvariantViolation, match="> bound"):
        checks.check_amp_parity(fresh(TinyLargeOffsetLogits), make_batch())


def _shifted_by_width(scale: float, dtype: torch.dtype) -> Callable[[Tensor, Tensor], Tensor]:
    """A padding-sensitive model whose logits move by ``scale`` per appended column, in ``dtype``."""
    base = fresh(PackedBiLSTM).eval()

    def model(tokens: Tensor, lengths: Tensor) -> Tensor:
        return base(tokens, lengths).to(dtype) + scale * tokens.shape[1]

    return model


@pytest.mark.parametrize(
    ("scale", "dtype", "passes"),
    [(1e-6, torch.float32, True), (1e-4, torch.float32, False), (1e-6, torch.float64, False)],
    ids=["fp32-within-tolerance", "fp32-beyond", "fp64-beyond"],
)
def test_padding_check_tolerance_is_assert_close_default_for_the_logits_dtype(
    scale: float, dtype: torch.dtype, passes: bool
) -> None:
    # 3 appended columns shift the logits by 3*scale: 3e-6 is inside fp32's atol (1e-5) and outside fp64's (1e-7).
    # The report gives the size of the change: 3 columns x scale.
    context = (
        contextlib.nullcontext()
        if passes
        else pytest.raises(InvariantViolation, match=f"changed by up to {3 * scale:.3g} with 3 pad columns appended")
    )
    with context:
        checks.check_padding_invariance(_shifted_by_width(scale, dtype), make_batch())


def one_arg_model(tokens: Tensor) -> Tensor:
    return tokens.float()


def test_a_callable_without_a_name_is_described_by_its_repr() -> None:
    with pytest.raises(TypeError, match=r"functools\.partial\(<function one_arg_model"):
        checks.check_eval_deterministic(functools.partial(one_arg_model), make_batch())


def test_model_checks_hand_the_model_int64_tokens_and_lengths() -> None:
    model = fresh(PackedBiLSTM).eval()
    seen: set[torch.dtype] = set()

    def int64_only(tokens: Tensor, lengths: Tensor) -> Tensor:
        seen.update({tokens.dtype, lengths.dtype})
        return model(tokens, lengths)

    batch = make_batch()
    checks.check_eval_deterministic(int64_only, Batch(batch.tokens.int(), batch.lengths.int(), batch.labels))
    assert seen == {torch.int64}


@pytest.mark.parametrize(
    ("model", "batch", "error", "match"),
    [
        (one_arg_model, make_batch(), TypeError, r"one_arg_model takes \(tokens"),
        (PackedBiLSTM(), (torch.ones(2, 3),), TypeError, "got tuple without tokens, lengths, labels"),
        (PackedBiLSTM(), Batch(torch.ones(2, 3), torch.tensor([3, 3]), torch.tensor([0, 1])), ValueError, "integer"),
        (PackedBiLSTM(), Batch(torch.ones(3).long(), torch.tensor([3]), torch.tensor([0])), ValueError, r"\[B, T\]"),
        (
            PackedBiLSTM(),
            Batch(torch.ones(0, 3).long(), torch.ones(0).long(), torch.ones(0).long()),
            ValueError,
            "one row",
        ),
        (PackedBiLSTM(), Batch(torch.ones(2, 3).long(), torch.ones(2), torch.tensor([0, 1])), ValueError, "lengths"),
    ],
    ids=["one-argument-function", "not-a-batch", "float-tokens", "1-D-tokens", "no-rows", "float-lengths"],
)
def test_model_checks_reject_bad_arguments_saying_what_is_wrong(
    model: Any, batch: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        checks.check_eval_deterministic(model, batch)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda out: out.long(), r"got a torch\.int64 tensor of shape \(5, 3\)"),
        (lambda out: out[:, 0], r"got a torch\.float32 tensor of shape \(5,\)"),
        (lambda out: out[:4], r"with B=5 \(got a torch\.float32 tensor of shape \(4, 3\)"),
        (lambda out: out.tolist(), r"got a list"),
    ],
    ids=["integer", "1-D", "rows-missing", "not-a-tensor"],
)
def test_logits_breaking_the_protocol_are_a_type_error_naming_what_came_back(
    output: Callable[[Tensor], Any], match: str
) -> None:
    model = fresh(PackedBiLSTM).eval()
    with pytest.raises(TypeError, match=match):
        checks.check_eval_deterministic(lambda tokens, lengths: output(model(tokens, lengths)), make_batch())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": 1.0}, "p must be"),
        ({"p": -0.1}, "p must be"),
        ({"p": False}, "p must be"),
        ({"p": "0.3"}, "p must be"),
        ({"p": 0.3, "shape": (4, 1, 4)}, "T >= 2"),
        ({"p": 0.3, "shape": (0, 4, 4)}, "positive sides"),
    ],
    ids=["p-one", "p-negative", "p-bool", "p-string", "one-step", "no-rows"],
)
def test_locked_dropout_check_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        checks.check_locked_dropout(LockedDropout(0.3), **kwargs)


@pytest.mark.parametrize("shape", [(1, 2, 1), (1, 8, 64), (64, 8, 1), (4, 2, 3)], ids=str)
def test_locked_dropout_done_right_passes_at_the_smallest_shapes(shape: tuple[int, int, int]) -> None:
    # One sequence, one feature or two steps: the shared-mask and whole-sequence tests need B > 1 and D > 1.
    checks.check_locked_dropout(LockedDropout(0.3), p=0.3, shape=shape)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (lambda x: x.mean(dim=1), r"in train mode it returned \(64, 64\)"),
        (lambda x: (x, None), "in train mode it returned tuple"),
    ],
    ids=["wrong-shape", "tuple"],
)
def test_locked_dropout_layer_returning_another_shape_is_a_type_error(
    layer: Callable[[Tensor], Any], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        checks.check_locked_dropout(layer, p=0.3)


class ShapeChangingInEval(LockedDropout):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.training else x[:, :1]


def test_locked_dropout_layer_changing_shape_in_eval_is_a_type_error_naming_the_mode() -> None:
    with pytest.raises(TypeError, match=r"in eval mode it returned \(64, 1, 64\)"):
        checks.check_locked_dropout(ShapeChangingInEval(0.3), p=0.3)


class FlipsHalfTheFeatures(LockedDropout):
    """Locked dropout, except that at time step 1 the first half of the features take the opposite keep/drop."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self.training:
            D = x.shape[2]
            mask = out[:, 1, : D // 2] / x[:, 1, : D // 2]  # [B, D/2] in {0, 1/(1-p)}
            out[:, 1, : D // 2] = x[:, 1, : D // 2] * torch.where(mask == 0, 1 / (1 - self.drop.p), 0.0)
        return out


def test_locked_dropout_report_says_how_many_pairs_change_over_time() -> None:
    with pytest.raises(InvariantViolation, match=r"changes over time for 50% of \(sequence, feature\) pairs"):
        checks.check_locked_dropout(FlipsHalfTheFeatures(0.3), p=0.3)


class ScalesByKeepInEval(LockedDropout):
    """Non-inverted dropout's eval: multiplies by 1 - p instead of returning the input."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.training else x * (1 - self.drop.p)


def test_eval_scaling_is_reported_as_the_output_input_ratio() -> None:
    with pytest.raises(InvariantViolation, match=r"eval mode is not the identity: .*\(mean output/input 0\.7\)"):
        checks.check_locked_dropout(ScalesByKeepInEval(0.3), p=0.3)


def test_locked_dropout_check_restores_a_layer_in_train_mode() -> None:
    layer = LockedDropout(0.3).train()
    checks.check_locked_dropout(layer, p=0.3)
    assert layer.training and layer.drop.training


def test_a_wrongly_scaled_mask_is_not_diagnosed_as_non_inverted() -> None:
    class ScaledByOneOverP(MaskedDropout):
        def forward(self, x: Tensor) -> Tensor:
            scale = (1 - self.p) / self.p if self.training else 1.0  # 1/p where 1/(1-p) belongs
            return super().forward(x) * scale

    with pytest.raises(InvariantViolation, match="does more than multiply by a 0/1 mask"):
        checks.check_locked_dropout(ScaledByOneOverP(0.3, per_sequence), p=0.3)


@pytest.mark.parametrize(
    ("mask_shape", "shape", "match"),
    [
        (lambda B, T, D: (1, 1, D), (2, 8, 64), "all 2 sequences got the same mask"),
        (lambda B, T, D: (B, 1, 1), (64, 8, 2), "keeps or drops all its features together"),
    ],
    ids=["two-sequences", "two-features"],
)
def test_shared_masks_are_caught_from_two_sequences_or_two_features(
    mask_shape: Callable[[int, int, int], tuple[int, ...]], shape: tuple[int, int, int], match: str
) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_locked_dropout(MaskedDropout(0.3, mask_shape), p=0.3, shape=shape)


@pytest.mark.parametrize(("sigmas", "passes"), [(4.5, True), (-4.5, True), (5.5, False), (-5.5, False)])
def test_locked_dropout_drop_rate_bound_is_five_binomial_sigma(sigmas: float, passes: bool) -> None:
    # The docstring's bound, probed with a layer that drops an exact count per call: at p = 0.3 one call of 64*64
    # entries already expects ~1,229 drops, so the check makes its minimum of 2 calls: n = 2*64*64 entries.
    n, p = 2 * 64 * 64, 0.3
    per_call = round((n * p + sigmas * math.sqrt(n * p * (1 - p))) / 2)
    if passes:
        passed = checks.check_locked_dropout(FixedCountDropout(p, per_call), p=p)
        assert f"drop rate {2 * per_call / n:.4f}" in passed.detail
    else:
        with pytest.raises(InvariantViolation, match=rf"{2 * per_call} of {n} .* entries dropped over 2 calls"):
            checks.check_locked_dropout(FixedCountDropout(p, per_call), p=p)


@pytest.mark.parametrize(
    ("clip_fn", "match"),
    [
        (clip_removes_grads, "gradients were removed or reshaped"),
        (clip_norm_then_value, r"gradient \d was scaled by .* the direction changed"),
        (clip_by_mean_square_norm, "the scaling factor is not max_norm / total_norm"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_more_clipping_bugs_fail_with_their_diagnosis(
    clip_fn: Callable[[list[Tensor], float], Any], match: str
) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_gradient_clipping(clip_fn)


def test_clip_failure_names_max_norm_and_the_pre_clip_norm() -> None:
    # The first case's tensors have norms 6, 4, 5, 3 (x max_norm = 1): pre-clip norm sqrt(86) = 9.27362.
    with pytest.raises(InvariantViolation, match=r"max_norm=1\.0, pre-clip norm 9\.27362\] clip_fn returned None"):
        checks.check_gradient_clipping(clip_returns_nothing)


def test_a_frozen_parameter_must_keep_grad_none() -> None:
    with pytest.raises(InvariantViolation, match=r"a parameter whose \.grad was None got a gradient"):
        checks.check_gradient_clipping(clip_creates_missing_grads)


def test_clip_returning_the_norm_as_a_python_float_passes() -> None:
    checks.check_gradient_clipping(clip_returns_python_float)


def test_a_wrong_return_value_is_not_called_the_post_clip_norm() -> None:
    with pytest.raises(InvariantViolation, match="instead of the pre-clip global norm") as err:
        checks.check_gradient_clipping(clip_returns_squared_norm)
    assert "post-clip" not in str(err.value)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (smoothing_returns_a_list, "loss_fn returned list"),
        (smoothing_for_two_classes, r"K=3, eps=0\.1: gradient"),  # right for K=2: every K must be checked
        (smoothing_binary_special_case, r"K=2, eps=0\.1: gradient"),  # ... and K=2 too
        (smoothing_halved, "a different target distribution or reduction"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.05), r"by a default \(0\.05\)"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.2), r"by a default \(0\.2\)"),
    ],
    ids=["returns-a-list", "two-classes-only", "binary-special-case", "halved", "default-0.05", "default-0.2"],
)
def test_more_label_smoothing_bugs_fail_with_their_diagnosis(
    loss_fn: Callable[[Tensor, Tensor, float], Any], match: str
) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_label_smoothing(loss_fn)


@pytest.mark.parametrize(("offset", "passes"), [(8e-6, True), (3e-5, False)])
def test_label_smoothing_tolerance_is_fp32_atol(offset: float, passes: bool) -> None:
    # The docstring's value tolerance for a loss returned without a graph: atol 1e-5 (+ rtol 1.3e-6): a loss off by
    # 0.8 atol passes, by 3 atol fails.
    context = contextlib.nullcontext() if passes else pytest.raises(InvariantViolation, match="12 cases differ")
    with context:
        checks.check_label_smoothing(
            lambda logits, targets, eps: float(smoothing_reference(logits.detach(), targets, eps)) + offset
        )


@pytest.mark.parametrize(
    ("make", "decoupled", "match"),
    [
        (adamw_ignoring_wd, True, "nothing decayed"),
        (adamw_decaying_twice, True, r"the decay factor is not 1 - lr\*wd"),
        (sgd_l2_doubled, False, "at step 1 the weights differ"),
    ],
    ids=["wd-ignored", "decayed-twice", "SGD-L2-doubled"],
)
def test_more_weight_decay_bugs_fail_with_their_diagnosis(
    make: Callable[..., Any], decoupled: bool, match: str
) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_weight_decay(make, decoupled=decoupled)


def test_weight_decay_result_names_the_kind_it_verified() -> None:
    decoupled = checks.check_weight_decay(adamw, decoupled=True)
    coupled = checks.check_weight_decay(adam, decoupled=False)
    assert decoupled.invariant.startswith("decoupled") and decoupled.detail.startswith("decoupled")
    assert coupled.invariant.startswith("coupled") and coupled.detail.startswith("coupled")


@pytest.mark.parametrize(
    ("train_step", "match"),
    [
        (step_never_steps, "the parameters did not move"),
        (step_clips_by_value, "differs from scale -> backward -> unscale_ -> clip -> step in direction or size"),
        # Clipped to the same max_norm, so the update has the reference's size: neither too small nor unclipped.
        (step_with_label_smoothing, "differs from scale -> backward -> unscale_ -> clip -> step in direction or size"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_more_step_bugs_fail_amp_clipping_with_their_diagnosis(train_step: Callable[..., None], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_clipping(train_step)


@pytest.mark.parametrize(
    "fails",
    [
        functools.partial(checks.check_weight_decay, adamw_without_lr, decoupled=True),
        functools.partial(checks.check_weight_decay, adam_l2_from_squared_norm, decoupled=False),
        functools.partial(checks.check_label_smoothing, smoothing_summed),
        functools.partial(checks.check_gradient_clipping, clip_norm_then_value),
        functools.partial(checks.check_amp_clipping, step_never_clips),
    ],
    ids=["weight-decay-zero-grad", "weight-decay-steps", "label-smoothing", "clipping", "amp-clipping"],
)
def test_a_failure_reads_the_same_whatever_the_global_seed(fails: Callable[[], Any]) -> None:
    # Checks draw from fixed internal seeds: the numbers in a report do not depend on the caller's RNG.
    messages = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with pytest.raises(InvariantViolation) as err:
            fails()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
