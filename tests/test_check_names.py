"""Every check names its invariant the same way in a PASS and at the head of a FAIL.

The names are an interface: `rnnreg check` prints them, JSON and JUnit reports carry them, and users grep CI logs
for them. Each row pairs code that passes a check with code that fails it; the expected names are written out here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference_models import buggy
from reference_models import correct as ref
from torch import Tensor, nn

from rnnreg.batch import Batch, collate
from rnnreg.testing import checks, regularizers
from rnnreg.testing.checks import CheckPassed, InvariantViolation


def batch() -> Batch:
    gen = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, ref.VOCAB, (n,), generator=gen).tolist() for n in (6, 4, 2, 5)]
    return collate([(ids, i % ref.CLASSES) for i, ids in enumerate(rows)])


def fresh(cls: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls()


class DropoutInEval(ref.MaskedMeanGRU):
    """Dropout that ignores self.training: eval mode is not deterministic."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.5, training=True)


class NoDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(ref.VOCAB, 8)
        self.head = nn.Linear(8, ref.CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.emb(tokens).sum(1))  # sums over pads too


class DropoutNeverTraining(NoDropout):
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.5, training=False)


class BatchNormalized(NoDropout):
    """Logits centred over the batch: one row's output depends on the others."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        y = super().forward(tokens, lengths)
        return y - 0.5 * y.mean(0)


def plain_cross_entropy(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return nn.functional.cross_entropy(logits, targets)  # eps ignored


def expect_fail(run: Callable[[], Any], name: str) -> None:
    with pytest.raises(InvariantViolation) as err:
        run()
    assert str(err.value).startswith(name + ": "), str(err.value)


def expect_pass(run: Callable[[], Any], name: str) -> None:
    passed = run()
    assert isinstance(passed, CheckPassed) and passed.invariant == name and passed.detail


# (name, passing call, failing call)
CASES: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    (
        "eval mode is deterministic",
        lambda: checks.check_eval_deterministic(fresh(ref.MaskedMeanGRU), batch()),
        lambda: checks.check_eval_deterministic(fresh(DropoutInEval), batch()),
    ),
    (
        "train mode is stochastic (dropout acts)",
        lambda: checks.check_dropout_active(fresh(ref.MaskedMeanGRU), batch()),
        lambda: checks.check_dropout_active(fresh(DropoutNeverTraining), batch()),
    ),
    (
        "padding invariance",
        lambda: checks.check_padding_invariance(fresh(ref.MaskedMeanGRU), batch()),
        lambda: checks.check_padding_invariance(fresh(NoDropout), batch()),
    ),
    (
        "pad content ignored",
        lambda: checks.check_pad_content(fresh(ref.MaskedMeanGRU), batch()),
        lambda: checks.check_pad_content(fresh(ref.MaskFromPadIds), batch()),
    ),
    (
        "batch independence",
        lambda: checks.check_batch_independence(fresh(ref.MaskedMeanGRU), batch()),
        lambda: checks.check_batch_independence(fresh(BatchNormalized), batch()),
    ),
    (
        "locked dropout",
        lambda: checks.check_locked_dropout(ref.HandLockedDropout(0.3), p=0.3),
        lambda: checks.check_locked_dropout(buggy.CachedLockedDropout(0.3), p=0.3),
    ),
    (
        "gradient clipping by global norm",
        lambda: checks.check_gradient_clipping(ref.clip_foreach),
        lambda: checks.check_gradient_clipping(buggy.clip_to_half),
    ),
    (
        "label smoothing (target (1-eps)*onehot + eps/K)",
        lambda: checks.check_label_smoothing(ref.smoothing_cross_entropy),
        lambda: checks.check_label_smoothing(plain_cross_entropy),
    ),
    (
        "decoupled weight decay",
        lambda: checks.check_weight_decay(ref.hand_adamw, decoupled=True),
        lambda: checks.check_weight_decay(ref.hand_sgd_l2, decoupled=True),
    ),
    (
        "coupled weight decay (L2 in the gradient)",
        lambda: checks.check_weight_decay(ref.hand_sgd_l2, decoupled=False),
        lambda: checks.check_weight_decay(ref.hand_adamw, decoupled=False),
    ),
    (
        "clipping acts on unscaled gradients under a GradScaler",
        lambda: checks.check_amp_clipping(ref.amp_step_bf16),
        lambda: checks.check_amp_clipping(buggy.step_twice),
    ),
    (
        "GradScaler protocol (inf skips the step, the scale updates)",
        lambda: checks.check_amp_scaler(ref.amp_step_fp16),
        lambda: checks.check_amp_scaler(buggy.step_never_updates),
    ),
    (
        "embedding dropout drops word types",
        lambda: regularizers.check_embedding_dropout(ref.AWDEmbeddingDropout(0.3), p=0.3),
        lambda: regularizers.check_embedding_dropout(buggy.PositionEmbeddingDropout(0.3), p=0.3),
    ),
    (
        "weight drop (DropConnect on weight_hh)",
        lambda: regularizers.check_weight_drop(fresh(lambda: ref.FunctionalWeightDrop(0.3)), p=0.3),
        lambda: regularizers.check_weight_drop(fresh(lambda: buggy.ForwardOnlyWeightDrop(0.3)), p=0.3),
    ),
    (
        "weight-decay groups",
        lambda: regularizers.check_decay_groups(fresh(ref.TransformerClassifier), ref.nanogpt_groups),
        lambda: regularizers.check_decay_groups(fresh(ref.TransformerClassifier), buggy.decay_everything),
    ),
]


@pytest.mark.parametrize(("name", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_each_check_names_its_invariant_in_a_pass_and_at_the_head_of_a_fail(
    name: str, good: Callable[[], Any], bad: Callable[[], Any]
) -> None:
    expect_pass(good, name)
    expect_fail(bad, name)


def test_amp_parity_names_its_invariant() -> None:
    # No planted parity bug runs on every CPU, so the name is checked on the PASS (or on "could not run").
    try:
        passed = checks.check_amp_parity(fresh(ref.MaskedMeanGRU), batch())
    except checks.CheckCouldNotRun as e:
        assert str(e).startswith("bfloat16 autocast parity: could not run"), str(e)
    else:
        assert passed.invariant == "bfloat16 autocast parity"
