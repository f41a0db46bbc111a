"""rnnreg.testing.layer_checks on the styles of issue 18: AWD-LSTM, fastai, salesforce, PyTorch-NLP, parametrize.

Each correct style passes at the p users train with (fastai's language-model default embed_p = 0.02 included) and
at any vocabulary size; each planted bug in tests/reference_models/styles.py is caught with its own cause: weight
drop without the 1/(1-p) rescale, a layer that cannot train again after an eval pass, a mask without the rescale.
A p too small for the probe's budget is "not enough evidence", never a FAIL.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models import correct as ref
from reference_models import styles
from torch import Tensor, nn

from rnnreg.testing import checks, layer_checks
from rnnreg.testing.checks import InvariantViolation, NotEnoughEvidence

CAUSE = r"(.|\n)*Likely cause: .*"


def fresh(build: Callable[[], Any]) -> Any:
    torch.manual_seed(0)
    return build()


# ---------------------------------------------------------------------------------------------------------------
# Correct styles pass
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("vocab", [40, 1_000, 30_000])
def test_fastai_embedding_dropout_passes_at_any_p_and_vocabulary(p: float, vocab: int) -> None:
    # The false alarm: EmbeddingDropout(embed_p=0.02) flagged with vocabularies of 1,000 and 30,000.
    checks.check_embedding_dropout(fresh(lambda: styles.fastai_embedding_dropout(vocab, p)), p=p)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5])
def test_awd_embedded_dropout_passes(p: float) -> None:
    passed = checks.check_embedding_dropout(fresh(lambda: styles.AWDEncoder(1_000, 8, p)), p=p)
    assert "per batch" in passed.detail and "trains again after eval" in passed.detail


@pytest.mark.parametrize(
    "build",
    [
        styles.fastai_weight_dropout,
        styles.salesforce_weight_drop_fixed,
        styles.parametrized_weight_drop,
        ref.FunctionalWeightDrop,
    ],
    ids=["fastai-WeightDropout", "salesforce-fixed", "parametrize", "functional_call"],
)
@pytest.mark.parametrize("p", [0.02, 0.25, 0.5, 0.9])
def test_weight_drop_styles_pass_with_their_scale(build: Callable[[float], nn.Module], p: float) -> None:
    passed = checks.check_weight_drop(fresh(functools.partial(build, p)), p=p)
    assert "kept entries x 1/(1-p)" in passed.detail and "trains again after eval" in passed.detail


# ---------------------------------------------------------------------------------------------------------------
# Weight drop without the 1/(1-p) rescale
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 0.8])
@pytest.mark.parametrize(
    "build", [styles.buggy_parametrized_no_rescale, styles.BuggyMaskOnlyWeightDrop], ids=["parametrize", "where"]
)
def test_weight_drop_without_the_rescale_is_caught_at_any_p(build: Callable[[float], nn.Module], p: float) -> None:
    # The zero-gradient rate of these layers is right; only the scale is wrong.
    with pytest.raises(
        InvariantViolation,
        match=rf"kept entry .* used as it is \(x1, expected x 1/\(1-p\) = {1 / (1 - p):.4g}\)"
        + rf".* averages 1-p = {1 - p:.3g}"
        + CAUSE
        + "not divided by 1-p",
    ):
        checks.check_weight_drop(fresh(functools.partial(build, p)), p=p)


class BlurredNoRescale(nn.Module):
    """No rescale, plus an inverted output dropout on the RNN's output: the exact ratios blur, the mean still shows."""

    def __init__(self, p: float, rescale: bool) -> None:
        super().__init__()
        self.p, self.rescale = p, rescale
        self.rnn = nn.LSTM(5, 16, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.rnn(x)[0]
        w = self.rnn.weight_hh_l0
        mask = torch.bernoulli(torch.full_like(w, 1 - self.p))
        dropped = w * (mask / (1 - self.p) if self.rescale else mask)
        out = torch.func.functional_call(self.rnn, {"weight_hh_l0": dropped}, (x,))[0]
        return F.dropout(out, 0.1, training=True)


def test_a_missing_rescale_is_caught_from_the_mean_when_other_dropout_blurs_the_ratios() -> None:
    with pytest.raises(InvariantViolation, match=r"averages 0\.[3-6]\d* x the eval weight" + CAUSE + "not divided"):
        checks.check_weight_drop(fresh(lambda: BlurredNoRescale(0.5, rescale=False)), p=0.5)
    passed = checks.check_weight_drop(fresh(lambda: BlurredNoRescale(0.5, rescale=True)), p=0.5)
    assert "mean training/eval weight ratio" in passed.detail


# ---------------------------------------------------------------------------------------------------------------
# train -> eval -> train
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "line"),
    [
        (lambda: styles.buggy_salesforce_weight_drop(0.3), r"setattr\(self\.module, name_w, w\)"),
        (
            lambda: styles.BuggyTorchNLPWeightDropLSTM(5, 6, batch_first=True, weight_dropout=0.3),
            r"setattr\(self, name_w, F\.dropout",
        ),
    ],
    ids=["salesforce-published", "torchnlp"],
)
def test_a_weight_drop_that_cannot_train_after_eval_fails_naming_the_line(
    build: Callable[[], nn.Module], line: str
) -> None:
    with pytest.raises(
        InvariantViolation,
        match=r"train-mode call after an eval pass raised TypeError: cannot assign .* as parameter 'weight_hh_l0'"
        + rf".*raised at .*styles\.py:\d+ \(\w+\): {line}"
        + CAUSE
        + "returns the raw Parameter itself",
    ):
        checks.check_weight_drop(fresh(build), p=0.3)


class BreaksAfterEval(nn.Module):
    """Works until it has run in eval once; then every train-mode call raises (a flag never reset)."""

    def __init__(self, inner: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.inner = inner
        self.seen_eval = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            self.seen_eval = True
        elif self.seen_eval:
            raise RuntimeError("state from the eval pass")
        return self.inner(x)


@pytest.mark.parametrize(
    "check",
    [
        lambda: checks.check_locked_dropout(BreaksAfterEval(ref.HandLockedDropout(0.3)), p=0.3),
        lambda: checks.check_embedding_dropout(BreaksAfterEval(ref.AWDEmbeddingDropout(0.3)), p=0.3),
    ],
    ids=["locked", "embedding"],
)
def test_every_layer_check_trains_again_after_its_eval_pass(check: Callable[[], Any]) -> None:
    with pytest.raises(InvariantViolation, match=r"after an eval pass raised RuntimeError: state from the eval pass"):
        check()


def test_the_train_call_after_eval_must_still_draw_a_valid_mask() -> None:
    class UnscaledAfterEval(ref.HandLockedDropout):
        seen_eval = False

        def forward(self, x: Tensor) -> Tensor:
            self.seen_eval = self.seen_eval or not self.training
            if self.training and self.seen_eval:
                return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p)
            return super().forward(x)

    with pytest.raises(InvariantViolation, match=r"outside \{0, 1/\(1-p\).* in the train-mode call after an eval"):
        checks.check_locked_dropout(UnscaledAfterEval(0.3), p=0.3)


# ---------------------------------------------------------------------------------------------------------------
# Other AWD / fastai bugs keep their cause
# ---------------------------------------------------------------------------------------------------------------


def test_awd_embedded_dropout_without_the_rescale_is_non_inverted() -> None:
    with pytest.raises(InvariantViolation, match=r"values \[1\.0\] outside" + CAUSE + "not rescaled"):
        checks.check_embedding_dropout(fresh(lambda: styles.BuggyAWDEncoderNoRescale(1_000, 8, 0.3)), p=0.3)


class NeverDrops(nn.Module):
    """An embedding dropout whose mask is drawn and thrown away: the vectors pass unchanged."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 6)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens)


@pytest.mark.parametrize("p", [0.02, 0.05, 0.3])
def test_an_embedding_dropout_that_drops_nothing_is_caught_at_small_p(p: float) -> None:
    with pytest.raises(InvariantViolation, match="equals the eval output" + CAUSE + "never applied"):
        checks.check_embedding_dropout(fresh(lambda: NeverDrops(1_000)), p=p)


# ---------------------------------------------------------------------------------------------------------------
# Sizing: enough masks for ~50 expected drops, else "not enough evidence"
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "types", "calls"), [(0.5, 198, 2), (0.1, 198, 3), (0.02, 198, 13), (0.9, 198, 3)])
def test_embedding_dropout_makes_enough_calls_for_fifty_expected_drops(p: float, types: int, calls: int) -> None:
    # 32 x 60 tokens from ids 1..199 cover all 199 types, less fastai's padding row (id 1, all zero: no mask shows);
    # calls = max(2, ceil(50 / (min(p, 1-p) * 198))).
    assert calls == max(2, math.ceil(50 / (min(p, 1 - p) * types)))
    passed = checks.check_embedding_dropout(fresh(lambda: styles.fastai_embedding_dropout(1_000, p)), p=p)
    assert f"over {calls} calls ({calls * types} masks)" in passed.detail


@pytest.mark.parametrize(
    ("check", "p"),
    [
        # 200 calls x 4,096 entries expect 8.2 drops at p = 1e-5 (82 at 1e-4: judged).
        (lambda p: checks.check_locked_dropout(ref.HandLockedDropout(p), p=p), 1e-5),
        # 400 calls x 198 types expect 7.9 drops.
        (lambda p: checks.check_embedding_dropout(styles.fastai_embedding_dropout(1_000, p), p=p), 1e-4),
        # 200 passes x 144 entries expect 2.9 drops.
        (lambda p: checks.check_weight_drop(styles.fastai_weight_dropout(p), p=p), 1e-4),
    ],
    ids=["locked", "embedding", "weight-drop"],
)
def test_a_p_too_small_for_the_budget_is_not_enough_evidence(check: Callable[[float], Any], p: float) -> None:
    with pytest.raises(NotEnoughEvidence, match=rf"not enough evidence at p = {p:g}: .* fewer than 50"):
        check(p)


def test_not_enough_evidence_names_the_p_range_that_can_be_judged() -> None:
    # The locked check at shape (2, 2, 3) sees 6 entries a call, 1,200 in 200 calls: 50 drops need p >= 1/24.
    with pytest.raises(NotEnoughEvidence, match=re.escape("Check the same layer at 0.042 <= p <= 0.96")):
        checks.check_locked_dropout(ref.HandLockedDropout(0.01), p=0.01, shape=(2, 2, 3))
    checks.check_locked_dropout(ref.HandLockedDropout(0.05), p=0.05, shape=(2, 2, 3))


def test_not_enough_evidence_is_reported_as_not_run_by_the_suite() -> None:
    assert issubclass(NotEnoughEvidence, checks.CheckCouldNotRun)


# ---------------------------------------------------------------------------------------------------------------
# One probability rule, and the seed
# ---------------------------------------------------------------------------------------------------------------

LAYER_CHECKS = {
    "locked": lambda **kw: checks.check_locked_dropout(ref.HandLockedDropout(0.3), **kw),
    "embedding": lambda **kw: checks.check_embedding_dropout(ref.AWDEmbeddingDropout(0.3), **kw),
    "weight-drop": lambda **kw: checks.check_weight_drop(fresh(lambda: ref.FunctionalWeightDrop(0.3)), **kw),
}


@pytest.mark.parametrize("bad", [0, 0.0, 1.0, -0.1, True, "0.3", math.nan])
@pytest.mark.parametrize("check", LAYER_CHECKS.values(), ids=LAYER_CHECKS.keys())
def test_every_layer_check_takes_p_in_the_open_unit_interval(check: Callable[..., Any], bad: Any) -> None:
    with pytest.raises(ValueError, match=r"p must be the layer's dropout probability in \(0, 1\) \(got "):
        check(p=bad)


@pytest.mark.parametrize("check", LAYER_CHECKS.values(), ids=LAYER_CHECKS.keys())
def test_every_layer_check_takes_a_seed_and_refuses_a_non_int(check: Callable[..., Any]) -> None:
    assert check(p=0.3, seed=7).detail != ""
    with pytest.raises(TypeError, match=r"seed must be an int \(got 1\.5\)"):
        check(p=0.3, seed=1.5)


def test_the_probability_rule_is_one_function() -> None:
    assert layer_checks._check_probability(0.25) == 0.25
    with pytest.raises(ValueError, match="p = 0 drops nothing"):
        layer_checks._check_probability(0)
