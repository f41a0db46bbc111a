"""What every check shares (rnnreg.testing._base): a PASS and a FAIL under the same invariant name, a failure message
that says the likely cause and the fix, and numbers that do not depend on the caller's RNG.

The names are an interface: `rnnreg check` prints them, JSON and JUnit reports carry them, and users grep CI logs
for them. Each row below pairs code that passes a check with code that fails it, one row per failure path; the
expected names are written out here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import fresh
from reference_models import buggy, cases, steps
from reference_models import correct as ref
from torch import Tensor, nn

from rnnreg.batch import Batch, collate
from rnnreg.testing import checks
from rnnreg.testing.checks import CheckPassed, InvariantViolation


def batch() -> Batch:
    gen = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, ref.VOCAB, (n,), generator=gen).tolist() for n in (6, 4, 2, 5)]
    return collate([(ids, i % ref.CLASSES) for i, ids in enumerate(rows)])


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


EVAL = "eval mode is deterministic"
DROPOUT = "train mode is stochastic (dropout acts)"
PADDING = "padding invariance"
PAD_CONTENT = "pad content ignored"
BATCH = "batch independence"
AMP_PARITY = "bfloat16 autocast parity"
LOCKED = "locked dropout"
CLIPPING = "gradient clipping by global norm"
SMOOTHING = "label smoothing (target (1-eps)*onehot + eps/K)"
DECOUPLED = "decoupled weight decay"
COUPLED = "coupled weight decay (L2 in the gradient)"
AMP_CLIPPING = "clipping acts on unscaled gradients under a GradScaler"
SCALER = "GradScaler protocol (inf skips the step, the scale updates)"
EMBEDDING = "embedding dropout drops word types"
WEIGHT_DROP = "weight drop (DropConnect on weight_hh)"
GROUPS = "weight-decay groups"

MODEL_CHECK_NAMES = {
    checks.check_eval_deterministic: EVAL,
    checks.check_dropout_active: DROPOUT,
    checks.check_padding_invariance: PADDING,
    checks.check_batch_independence: BATCH,
    checks.check_amp_parity: AMP_PARITY,
}


def _model(
    check: Callable[..., Any], build: Callable[[], nn.Module], batch: Callable[[], Batch] = cases.make_batch
) -> Callable[[], Any]:
    return lambda: check(fresh(build), batch())


def _model_case(
    id: str, check: Callable[..., Any], good: Callable[[], nn.Module], bad: Callable[[], nn.Module], **kw: Any
) -> Any:
    return pytest.param(MODEL_CHECK_NAMES[check], _model(check, good), _model(check, bad, **kw), id=id)


def _gru_case(id: str, name: str, check: Callable[..., Any], bad: Callable[[], nn.Module]) -> Any:
    """A row for a model check: a masked-mean GRU passes, ``bad`` fails, both on ``batch()``."""
    return pytest.param(
        name, lambda: check(fresh(ref.MaskedMeanGRU), batch()), lambda: check(fresh(bad), batch()), id=id
    )


def _pair(id: str, name: str, check: Callable[..., Any], good: Any, bad: Any, **kwargs: Any) -> Any:
    """A row for a check of a function: the same call on the correct and on the buggy one."""
    return pytest.param(name, functools.partial(check, good, **kwargs), functools.partial(check, bad, **kwargs), id=id)


def _layers(id: str, name: str, check: Callable[..., Any], good: Callable[..., Any], bad: Callable[..., Any]) -> Any:
    """A row for a layer check at p = 0.3: each layer is built when the row runs."""
    return pytest.param(
        name,
        lambda: check(fresh(functools.partial(good, 0.3)), p=0.3),
        lambda: check(fresh(functools.partial(bad, 0.3)), p=0.3),
        id=id,
    )


def _groups(id: str, bad: Callable[[nn.Module], Any]) -> Any:
    return pytest.param(
        GROUPS,
        lambda: checks.check_decay_groups(fresh(ref.TransformerClassifier), ref.nanogpt_groups),
        lambda: checks.check_decay_groups(fresh(ref.TransformerClassifier), bad),
        id=id,
    )


# (the invariant's name, a passing call, a failing call): one row per failure path of every check.
CASES = [
    # model checks
    _gru_case("eval-functional-dropout", EVAL, checks.check_eval_deterministic, DropoutInEval),
    _model_case("eval-nondeterministic", checks.check_eval_deterministic, cases.PackedBiLSTM, cases.DropoutInEval),
    _gru_case("dropout-never-training", DROPOUT, checks.check_dropout_active, DropoutNeverTraining),
    _model_case("dropout-inert", checks.check_dropout_active, cases.PackedBiLSTM, cases.NotebookLSTM),
    _gru_case("padding-summed", PADDING, checks.check_padding_invariance, NoDropout),
    _model_case("padding-appended", checks.check_padding_invariance, cases.PackedBiLSTM, cases.UnpackedBiLSTM),
    _model_case("padding-wider-raises", checks.check_padding_invariance, cases.PackedBiLSTM, cases.FailsOnWiderBatch),
    _gru_case("pad-content", PAD_CONTENT, checks.check_pad_content, ref.MaskFromPadIds),
    _gru_case("batch-normalized", BATCH, checks.check_batch_independence, BatchNormalized),
    _model_case("batch-alone", checks.check_batch_independence, cases.PackedBiLSTM, cases.DividesByBatchMaxLength),
    _model_case(
        "batch-permuted",
        checks.check_batch_independence,
        cases.PackedBiLSTM,
        cases.SortsWithoutRestoring,
        batch=cases.sorted_batch,
    ),
    _model_case("batch-one-row-raises", checks.check_batch_independence, cases.PackedBiLSTM, cases.FailsOnOneRow),
    _model_case("batch-one-row-nan", checks.check_batch_independence, cases.PackedBiLSTM, cases.NaNOnOneRow),
    _model_case("batch-reversed-raises", checks.check_batch_independence, cases.PackedBiLSTM, cases.FailsWhenReversed),
    _model_case("amp-bound", checks.check_amp_parity, cases.PackedBiLSTM, cases.LargeOffsetLogits),
    _model_case("amp-nan", checks.check_amp_parity, cases.PackedBiLSTM, cases.NaNUnderAutocast),
    *[
        _model_case(f"nan-logits-{check.__name__}", check, cases.PackedBiLSTM, cases.NaNRows)
        for check in cases.MODEL_CHECKS
    ],
    # layer checks
    *[
        pytest.param(
            LOCKED,
            lambda: checks.check_locked_dropout(cases.LockedDropout(0.3), p=0.3),
            functools.partial(checks.check_locked_dropout, layer, p=0.3),
            id=f"locked-{name}",
        )
        for name, layer in [
            ("eval", cases.MaskedDropout(0.3, cases.per_sequence, in_eval=True)),
            ("scale", cases.MaskedDropout(0.3, cases.per_sequence, inverted=False)),
            ("time", nn.Dropout(0.3)),
            ("shared", cases.MaskedDropout(0.3, lambda B, T, D: (1, 1, D))),
            ("features", cases.MaskedDropout(0.3, lambda B, T, D: (B, 1, 1))),
            ("rate", cases.MaskedDropout(0.3, cases.per_sequence, keep_prob=0.3)),
        ]
    ],
    pytest.param(
        LOCKED,
        lambda: checks.check_locked_dropout(ref.HandLockedDropout(0.3), p=0.3),
        lambda: checks.check_locked_dropout(buggy.CachedLockedDropout(0.3), p=0.3),
        id="locked-cached",
    ),
    _layers(
        "embedding-dropout",
        EMBEDDING,
        checks.check_embedding_dropout,
        ref.AWDEmbeddingDropout,
        buggy.PositionEmbeddingDropout,
    ),
    _layers(
        "embedding-dropout-eval",
        EMBEDDING,
        checks.check_embedding_dropout,
        ref.AWDEmbeddingDropout,
        buggy.EvalDroppingEmbedding,
    ),
    _layers(
        "embedding-dropout-inplace",
        EMBEDDING,
        checks.check_embedding_dropout,
        ref.AWDEmbeddingDropout,
        buggy.InPlaceEmbeddingDropout,
    ),
    *[
        _layers(f"weight-drop-{id}", WEIGHT_DROP, checks.check_weight_drop, ref.FunctionalWeightDrop, bad)
        for id, bad in [
            ("rate", buggy.ForwardOnlyWeightDrop),
            ("surgery", buggy.SurgeryWeightDrop),
            ("cached", buggy.CachedMaskWeightDrop),
            ("detached", buggy.DetachedWeightDrop),
            ("eval", buggy.EvalDroppingWeightDrop),
        ]
    ],
    # clipping, label smoothing, weight decay, decay groups
    *[
        _pair(f"clip-{bad.__name__}", CLIPPING, checks.check_gradient_clipping, nn.utils.clip_grad_norm_, bad)
        for bad in [
            cases.clip_per_tensor,
            cases.clip_returns_nothing,
            cases.clip_always_rescales,
            cases.clip_crashes_on_missing_grad,
            cases.clip_removes_grads,
            cases.clip_norm_then_value,
            cases.clip_creates_missing_grads,
        ]
    ],
    _pair(
        "clip-generator",
        CLIPPING,
        checks.check_gradient_clipping,
        ref.clip_foreach,
        buggy.clip_consumes_generator_twice,
    ),
    _pair("clip-over", CLIPPING, checks.check_gradient_clipping, ref.clip_foreach, buggy.clip_to_half),
    _pair(
        "smoothing-ignored", SMOOTHING, checks.check_label_smoothing, ref.smoothing_cross_entropy, plain_cross_entropy
    ),
    *[
        _pair(f"smoothing-{bad.__name__}", SMOOTHING, checks.check_label_smoothing, cases.smoothing_reference, bad)
        for bad in [cases.smoothing_summed, cases.smoothing_per_row]
    ],
    _pair("decoupled-l2", DECOUPLED, checks.check_weight_decay, ref.hand_adamw, ref.hand_sgd_l2, decoupled=True),
    _pair("decoupled-zero-grad", DECOUPLED, checks.check_weight_decay, cases.adamw, cases.adam, decoupled=True),
    _pair("decoupled-steps", DECOUPLED, checks.check_weight_decay, cases.adamw, cases.sgd_momentum, decoupled=True),
    _pair("coupled", COUPLED, checks.check_weight_decay, cases.adam, cases.adamw, decoupled=False),
    _pair("coupled-decoupled", COUPLED, checks.check_weight_decay, ref.hand_sgd_l2, ref.hand_adamw, decoupled=False),
    _groups("decay-groups-vectors", buggy.decay_everything),
    _groups("decay-groups-inverted", buggy.spare_matrices),
    _groups("decay-groups-missing", buggy.drops_the_head),
    # training steps
    _pair("amp-clipping", AMP_CLIPPING, checks.check_amp_clipping, steps.step_right, steps.step_clips_scaled),
    _pair("amp-clipping-twice", AMP_CLIPPING, checks.check_amp_clipping, steps.amp_step_bf16, steps.step_twice),
    _pair(
        "amp-clipping-missing", AMP_CLIPPING, checks.check_amp_clipping, steps.amp_step_bf16, steps.step_without_unscale
    ),
    _pair("amp-scaler-fp16-update", SCALER, checks.check_amp_scaler, steps.amp_step_fp16, steps.step_never_updates),
    *[
        _pair(f"amp-scaler-{id}", SCALER, checks.check_amp_scaler, steps.amp_step_bf16, bad)
        for id, bad in [
            ("inf-applied", steps.step_optimizer_not_scaler),
            ("update", steps.step_never_updates),
            ("crash", steps.step_crashes_on_overflow),
            ("skips", steps.step_skipping_everything),
        ]
    ],
]


@pytest.mark.parametrize(("name", "passes", "fails"), CASES)
def test_each_failure_is_reported_under_the_invariant_its_pass_names_with_a_cause_and_a_fix(
    name: str, passes: Callable[[], Any], fails: Callable[[], Any]
) -> None:
    # `rnnreg check` lines up passes and failures by this name, and the message format puts it first.
    passed = passes()
    assert isinstance(passed, CheckPassed) and passed.invariant == name and passed.detail
    with pytest.raises(InvariantViolation) as err:
        fails()
    message = str(err.value)
    assert message.startswith(name + ": "), message
    cause = re.search(r"\n  Likely cause: (.+)\.\n  Fix: (.+)\.$", message, flags=re.S)
    assert cause is not None and cause.group(1) != "None" and cause.group(2) != "None"


def test_amp_parity_names_its_invariant() -> None:
    # No planted parity bug runs on every CPU, so the name is checked on the PASS (or on "could not run").
    try:
        passed = checks.check_amp_parity(fresh(ref.MaskedMeanGRU), batch())
    except checks.CheckCouldNotRun as e:
        assert str(e).startswith("bfloat16 autocast parity: could not run"), str(e)
    else:
        assert passed.invariant == "bfloat16 autocast parity"


@pytest.mark.parametrize(
    "fails",
    [
        functools.partial(checks.check_weight_decay, cases.adamw_without_lr, decoupled=True),
        functools.partial(checks.check_weight_decay, cases.adam_l2_from_squared_norm, decoupled=False),
        functools.partial(checks.check_label_smoothing, cases.smoothing_summed),
        functools.partial(checks.check_gradient_clipping, cases.clip_norm_then_value),
        functools.partial(checks.check_amp_clipping, steps.step_never_clips),
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
