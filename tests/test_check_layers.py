"""rnnreg.testing.layer_checks: locked dropout, embedding dropout (word types) and weight drop (DropConnect on
weight_hh), on layers written in the styles of public code (AWD-LSTM, fastai, salesforce, PyTorch-NLP,
``torch.nn.utils.parametrize``, ``torch.func.functional_call``) and on planted bugs.

Each correct style passes at the p users train with (fastai's language-model default embed_p = 0.02 included) and
at any vocabulary size; each planted bug (tests/reference_models/styles.py, buggy.py, or beside its test) is caught
with its own cause. A p too small for the probe's budget is "not enough evidence", never a FAIL.
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
from helpers import CAUSE, fresh
from hypothesis import given
from reference_models import buggy, styles
from reference_models import correct as ref
from reference_models.cases import (
    LockedDropout,
    MaskedDropout,
    per_sequence,
)
from torch import Tensor, nn

from rnnreg.testing import checks, layer_checks
from rnnreg.testing import strategies as rst
from rnnreg.testing.checks import InvariantViolation, NotEnoughEvidence

# ---------------------------------------------------------------------------------------------------------------
# Every layer check: one probability rule, the seed, the modes, train -> eval -> train, the probe's budget
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


LAYERS_AND_CHECKS: list[tuple[Callable[[], nn.Module], Callable[[nn.Module], Any]]] = [
    (lambda: ref.HandLockedDropout(0.3), lambda m: checks.check_locked_dropout(m, p=0.3)),
    (lambda: ref.AWDEmbeddingDropout(0.3), lambda m: checks.check_embedding_dropout(m, p=0.3)),
    (lambda: ref.FunctionalWeightDrop(0.3), lambda m: checks.check_weight_drop(m, p=0.3)),
]


@pytest.mark.parametrize("training", [True, False], ids=["given-in-train-mode", "given-in-eval-mode"])
@pytest.mark.parametrize(("build", "check"), LAYERS_AND_CHECKS, ids=["locked", "embedding", "weight-drop"])
def test_layer_checks_set_the_modes_they_need_and_give_the_layer_back_as_it_was(
    build: Callable[[], nn.Module], check: Callable[[nn.Module], Any], training: bool
) -> None:
    layer = fresh(build)
    layer.train(training)
    before = {n: t.detach().clone() for n, t in layer.state_dict().items()}
    check(layer)  # passes from either mode: it switches to train mode for the dropout and to eval for identity
    assert all(m.training is training for m in layer.modules())
    assert all(torch.equal(before[n], t) for n, t in layer.state_dict().items())


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
# Locked dropout
# ---------------------------------------------------------------------------------------------------------------


@given(p=rst.dropout_probs(max_p=0.9, min_p=0.01))
def test_locked_dropout_done_right_passes(p: float) -> None:
    checks.check_locked_dropout(LockedDropout(p), p=p)


@pytest.mark.parametrize("build", [ref.HandLockedDropout, ref.project_locked_dropout], ids=["by-hand", "rnnreg"])
def test_reference_locked_dropouts_pass(build: Callable[[float], nn.Module]) -> None:
    checks.check_locked_dropout(build(0.3), p=0.3)


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


def test_a_locked_dropout_mask_cached_across_calls_is_caught() -> None:
    with pytest.raises(InvariantViolation, match="same mask" + CAUSE + "cached across calls"):
        checks.check_locked_dropout(buggy.CachedLockedDropout(0.3), p=0.3)


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


# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize(
    "build",
    [ref.AWDEmbeddingDropout, ref.PerSequenceEmbeddingDropout, ref.ProjectEmbeddingDropout],
    ids=["awd-per-batch", "gal-per-sequence", "rnnreg"],
)
def test_reference_embedding_dropouts_pass(build: Callable[[float], nn.Module], p: float) -> None:
    checks.check_embedding_dropout(build(p), p=p)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("vocab", [40, 1_000, 30_000])
def test_fastai_embedding_dropout_passes_at_any_p_and_vocabulary(p: float, vocab: int) -> None:
    # A false alarm once: EmbeddingDropout(embed_p=0.02) was flagged with vocabularies of 1,000 and 30,000.
    checks.check_embedding_dropout(fresh(lambda: styles.fastai_embedding_dropout(vocab, p)), p=p)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5])
def test_awd_embedded_dropout_passes(p: float) -> None:
    passed = checks.check_embedding_dropout(fresh(lambda: styles.AWDEncoder(1_000, 8, p)), p=p)
    assert "per batch" in passed.detail and "trains again after eval" in passed.detail


class CachedEmbeddingMask(ref.AWDEmbeddingDropout):
    def forward(self, tokens: Tensor) -> Tensor:
        if not self.training:
            return self.embed(tokens)
        if not hasattr(self, "mask"):
            self.mask = self.embed.weight.new_empty(ref.VOCAB, 1).bernoulli_(1 - self.p) / (1 - self.p)
        return F.embedding(tokens, self.embed.weight * self.mask)


class NoisyEmbedding(ref.AWDEmbeddingDropout):
    def forward(self, tokens: Tensor) -> Tensor:
        out = self.embed(tokens)
        return out * 1.7 if self.training else out


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (buggy.PositionEmbeddingDropout, "some occurrences dropped" + CAUSE + "per position"),
        (buggy.ElementEmbeddingDropout, "lost only some features" + CAUSE + "elementwise dropout"),
        (buggy.InPlaceEmbeddingDropout, "eval output changed" + CAUSE + "modified in place"),
        (buggy.NonInvertedEmbeddingDropout, r"outside \{0, 1/\(1-p\)" + CAUSE + "non-inverted"),
        (buggy.KeepProbEmbeddingDropout, "word-type masks dropped" + CAUSE + "keep probability"),
        (buggy.EvalDroppingEmbedding, "two eval passes under different seeds differ" + CAUSE + "training=True"),
        (CachedEmbeddingMask, r"\d+ train-mode calls applied the same mask" + CAUSE + "cached"),
        (NoisyEmbedding, r"values \[1\.7" + CAUSE + "does more than mask"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_embedding_dropout_bugs_are_caught_with_their_cause(build: Callable[[float], nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_embedding_dropout(fresh(functools.partial(build, 0.3)), p=0.3)


def test_awd_embedded_dropout_without_the_rescale_is_non_inverted() -> None:
    with pytest.raises(InvariantViolation, match=r"values \[1\.0\] outside" + CAUSE + "not rescaled"):
        checks.check_embedding_dropout(fresh(lambda: styles.BuggyAWDEncoderNoRescale(1_000, 8, 0.3)), p=0.3)


@pytest.mark.parametrize("p", [0.02, 0.05, 0.3])
def test_an_embedding_dropout_that_drops_nothing_is_caught_at_small_p(p: float) -> None:
    with pytest.raises(InvariantViolation, match="equals the eval output" + CAUSE + "never applied"):
        checks.check_embedding_dropout(fresh(lambda: buggy.NeverDrops(1_000)), p=p)


def test_embedding_dropout_reports_how_masks_are_shared_and_the_rate() -> None:
    per_batch = checks.check_embedding_dropout(fresh(functools.partial(ref.AWDEmbeddingDropout, 0.3)), p=0.3)
    per_seq = checks.check_embedding_dropout(fresh(functools.partial(ref.PerSequenceEmbeddingDropout, 0.3)), p=0.3)
    assert "(per batch)" in per_batch.detail and "(per sequence)" in per_seq.detail
    assert "for p=0.3" in per_batch.detail


def test_embedding_dropout_takes_a_plain_function_with_vocab_size() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(12, 4)
    state = {"training": True}

    def layer(tokens: Tensor) -> Tensor:
        return ref.AWDEmbeddingDropout.forward(holder, tokens)  # type: ignore[arg-type]

    holder = type("Holder", (), {"p": 0.3, "embed": table, "training": True})()
    del state
    with pytest.raises(InvariantViolation, match="two eval passes"):  # a function has no train/eval switch
        checks.check_embedding_dropout(layer, p=0.3, vocab_size=12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p": 0.0}, ValueError, r"p must be .* in \(0, 1\)"),
        ({"p": 1.0}, ValueError, "p must be"),
        ({"p": True}, ValueError, "p must be"),
        ({"p": 0.3, "vocab_size": 2}, ValueError, "vocab_size must be >= 3"),
    ],
)
def test_embedding_dropout_argument_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        checks.check_embedding_dropout(ref.AWDEmbeddingDropout(0.3), **kwargs)


def test_embedding_dropout_needs_a_vocab_size_without_an_embedding() -> None:
    with pytest.raises(ValueError, match="pass vocab_size"):
        checks.check_embedding_dropout(lambda tokens: tokens[..., None].float(), p=0.3)
    with pytest.raises(TypeError, match="callable"):
        checks.check_embedding_dropout(3, p=0.3)  # type: ignore[arg-type]


def test_embedding_dropout_output_must_be_b_t_d() -> None:
    with pytest.raises(TypeError, match=r"\[B, T, D\]; in eval mode it returned \(32, 60\)"):
        checks.check_embedding_dropout(lambda tokens: tokens.float(), p=0.3, vocab_size=10)


# ---------------------------------------------------------------------------------------------------------------
# Weight drop
# ---------------------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize(
    "build",
    [ref.FunctionalWeightDrop, ref.ProjectedWeightDrop, ref.project_weight_drop],
    ids=["functional-call", "behind-a-projection", "rnnreg"],
)
def test_reference_weight_drops_pass(build: Callable[[float], nn.Module], p: float) -> None:
    passed = checks.check_weight_drop(fresh(functools.partial(build, p)), p=p)
    assert "reverse" in passed.detail  # both directions were measured


def test_a_step_loop_with_one_mask_per_forward_passes_weight_drop() -> None:
    # The per-step bug's correct twin: same loop, mask drawn once per forward.
    checks.check_weight_drop(fresh(functools.partial(buggy.PerForwardStepLoop, 0.3)), p=0.3)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            buggy.ForwardOnlyWeightDrop,
            r"weight_hh_l0_reverse(.|\n)*reverse direction's weight_hh_l0_reverse is not dropped",
        ),
        (buggy.ReverseMissedWeightDrop, "reverse direction's .* is not dropped"),
        (buggy.PerStepWeightDrop, "redrawn at every time step"),
        (buggy.CachedMaskWeightDrop, "same entries" + CAUSE + "drawn once"),
        (buggy.SurgeryWeightDrop, "were modified by a forward pass" + CAUSE + "parameter surgery"),
        (buggy.EvalDroppingWeightDrop, "two eval passes" + CAUSE + "training=True hard-coded"),
        (buggy.DetachedWeightDrop, "received no gradient" + CAUSE + "detached weight"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_weight_drop_bugs_are_caught_with_their_cause(build: Callable[[float], nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_weight_drop(fresh(functools.partial(build, 0.3)), p=0.3)


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


class KeepProbWeightDrop(ref.FunctionalWeightDrop):
    def drop_weight(self, w: Tensor) -> Tensor:
        return w * torch.empty_like(w).bernoulli_(self.p) / (1 - self.p)


def test_weight_drop_with_p_as_keep_probability_is_caught() -> None:
    with pytest.raises(InvariantViolation, match=r"rate 0\.[6-8]\d*\), outside p=0\.3" + CAUSE + "keep probability"):
        checks.check_weight_drop(fresh(functools.partial(KeepProbWeightDrop, 0.3)), p=0.3)


class RateWeightDrop(ref.FunctionalWeightDrop):
    """Drops weight_hh entries with its own rate `q`, whatever p the check is told."""

    def __init__(self, p: float, q: float) -> None:
        super().__init__(p)
        self.q = q

    def drop_weight(self, w: Tensor) -> Tensor:
        return F.dropout(w, self.q, training=True)


@pytest.mark.parametrize(
    ("q", "match"),
    [
        (0.1, r"\(rate 0\.(0|1)\d*\), outside p=0\.3" + CAUSE + "fewer entries than p are dropped"),
        (0.7, r"\(rate 0\.(6|7)\d*\), outside p=0\.3" + CAUSE + "p used as the keep probability"),
    ],
    ids=["too-few", "keep-probability"],
)
def test_weight_drop_at_another_rate_is_caught_with_the_rate_it_drew(q: float, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_weight_drop(fresh(lambda: RateWeightDrop(0.3, q)), p=0.3)


def test_weight_drop_reports_every_rate_and_the_number_of_passes() -> None:
    passed = checks.check_weight_drop(fresh(functools.partial(ref.FunctionalWeightDrop, 0.3)), p=0.3)
    # GRU(5, 4): weight_hh is 12 x 4 = 48 entries, so ~50 expected drops take ceil(50 / (0.3 * 48)) = 4 passes.
    assert "over 4 passes for p=0.3" in passed.detail
    assert passed.detail.count("rnn.weight_hh") == 4


def test_weight_drop_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        checks.check_weight_drop(lambda x: x, p=0.3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no trainable parameter named like 'weight_hh'"):
        checks.check_weight_drop(nn.Linear(3, 3), p=0.3)
    holder = nn.Module()
    holder.weight_hh = nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="pass input_size"):
        checks.check_weight_drop(holder, p=0.3)


def test_weight_drop_input_size_comes_from_weight_ih_without_an_rnn_module() -> None:
    # PerForwardStepLoop holds a GRUCell (not nn.RNNBase): the size is read from weight_ih.
    checks.check_weight_drop(fresh(functools.partial(buggy.PerForwardStepLoop, 0.3)), p=0.3)


class ProjectionRegisteredLast(ref.FunctionalWeightDrop):
    """A 10 -> 5 projection in front of the GRU, but registered after it: the input size cannot be read off."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.proj = nn.Linear(10, 5)

    def forward(self, x: Tensor) -> Any:
        return super().forward(self.proj(x))


def test_an_explicit_input_size_overrides_the_one_read_from_the_layers() -> None:
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # read from the GRU: 5, wrong here
        checks.check_weight_drop(fresh(lambda: ProjectionRegisteredLast(0.3)), p=0.3)
    checks.check_weight_drop(fresh(lambda: ProjectionRegisteredLast(0.3)), p=0.3, input_size=10)


def test_the_earlier_module_name_still_exports_the_layer_and_group_checks() -> None:
    from rnnreg.testing import layer_checks, optim_checks, regularizers

    assert regularizers.check_embedding_dropout is layer_checks.check_embedding_dropout
    assert regularizers.check_weight_drop is layer_checks.check_weight_drop
    assert regularizers.check_decay_groups is optim_checks.check_decay_groups
