"""Planted bugs for the checks added in issue 10: each is caught, and the likely cause names the real cause.

The bugs live in tests/reference_models/buggy.py, each next to a correct version in correct.py that passes the
same check (tests/test_check_corpus.py), so a check that failed everything would be caught too.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference_models import buggy
from reference_models import correct as ref
from torch import nn

from rnnreg.testing import checks, regularizers
from rnnreg.testing.checks import InvariantViolation

CAUSE = r"(.|\n)*Likely cause: .*"


def fresh(cls: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls()


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (
            buggy.step_optimizer_not_scaler,
            "held an inf changed the parameters" + CAUSE + r"optimizer\.step\(\) is called directly",
        ),
        (buggy.step_never_updates, "scale is 65536, expected 131072" + CAUSE + r"scaler\.update\(\) is not called"),
        (
            buggy.step_crashes_on_overflow,
            "raised RuntimeError on a step with an inf gradient" + CAUSE + "error_if_nonfinite",
        ),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_scaler_protocol_bugs_are_caught_with_their_cause(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_scaler(step)


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (buggy.step_twice, r"norm is (2|1\.99\d*|2\.00\d*)x" + CAUSE + "stepped twice"),
        (buggy.step_overclips, r"norm is 0\.(5|49)\d*x" + CAUSE + "over-clipping"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_amp_clipping_tells_a_double_step_and_over_clipping_apart(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match) as err:
        checks.check_amp_clipping(step)
    assert "does not clip" not in str(err.value)  # a double step is not "does not clip"


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (buggy.step_sums_the_loss, r"clipping inactive(.|\n)*Likely cause: .*batch size: the loss is summed"),
        (buggy.step_scales_twice, r"clipping inactive(.|\n)*Likely cause: .*too large: the loss is scaled twice"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_a_wrong_loss_size_that_active_clipping_hides_is_caught_unclipped(step: Callable[..., Any], match: str) -> None:
    # Clipped to max_norm, a gradient of the wrong size gives the right update: only the unclipped case sees it.
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_clipping(step)


def test_amp_clipping_tolerance_follows_the_precision_that_ran() -> None:
    # The same wrong step fails in fp32 and under bf16 autocast, with each precision's tolerance in the message.
    with pytest.raises(InvariantViolation, match=r"tolerance 0\.05 for a step that ran in bfloat16"):
        checks.check_amp_clipping(buggy.step_overclips)


@pytest.mark.parametrize(
    ("clip_fn", "match"),
    [
        (buggy.clip_consumes_generator_twice, "parameters as a generator" + CAUSE + "generator is consumed twice"),
        (buggy.clip_to_half, r"0\.5x max_norm: over-clipped" + CAUSE + "scaled by more than max_norm / total_norm"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_clipping_bugs_are_caught_with_their_cause(clip_fn: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_gradient_clipping(clip_fn)


def test_a_locked_dropout_mask_cached_across_calls_is_caught() -> None:
    with pytest.raises(InvariantViolation, match="same mask" + CAUSE + "cached across calls"):
        checks.check_locked_dropout(buggy.CachedLockedDropout(0.3), p=0.3)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (buggy.PositionEmbeddingDropout, "some occurrences dropped" + CAUSE + "per position"),
        (buggy.ElementEmbeddingDropout, "lost only some features" + CAUSE + "elementwise dropout"),
        (buggy.InPlaceEmbeddingDropout, "eval output changed" + CAUSE + "modified in place"),
        (buggy.NonInvertedEmbeddingDropout, r"outside \{0, 1/\(1-p\)" + CAUSE + "non-inverted"),
        (buggy.KeepProbEmbeddingDropout, "word-type masks dropped" + CAUSE + "keep probability"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_embedding_dropout_bugs_are_caught_with_their_cause(build: Callable[[float], nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        regularizers.check_embedding_dropout(fresh(functools.partial(build, 0.3)), p=0.3)


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
        regularizers.check_weight_drop(fresh(functools.partial(build, 0.3)), p=0.3)


def test_a_step_loop_with_one_mask_per_forward_passes_weight_drop() -> None:
    # The per-step bug's correct twin: same loop, mask drawn once per forward.
    regularizers.check_weight_drop(fresh(functools.partial(buggy.PerForwardStepLoop, 0.3)), p=0.3)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (buggy.decay_everything, "biases and norm parameters .* decay" + CAUSE + "one group for all parameters"),
        (buggy.spare_only_bias_names, r"norm.*weight.*decay" + CAUSE + "misses the norm gains"),
        (buggy.spare_every_weight, "do not" + CAUSE + "inverted rule"),
        (buggy.spare_matrices, "do not" + CAUSE + "inverted rule"),
        (buggy.drops_the_head, r"\['head.weight', 'head.bias'\] are in no parameter group"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_decay_group_bugs_are_caught_with_their_cause(groups: Callable[[nn.Module], Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        regularizers.check_decay_groups(fresh(ref.TransformerClassifier), groups)


def test_decay_groups_without_any_decay_pass_and_say_so() -> None:
    model = fresh(ref.TransformerClassifier)
    passed = regularizers.check_decay_groups(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert "none decays" in passed.detail


def test_a_parameter_in_two_groups_is_caught() -> None:
    model = fresh(ref.MaskedMeanGRU)

    twice = types.SimpleNamespace(
        param_groups=[{"params": list(model.parameters()), "weight_decay": 0.0}, {"params": [model.head.bias]}]
    )

    with pytest.raises(InvariantViolation, match=r"\['head.bias'\] are in more than one group"):
        regularizers.check_decay_groups(model, twice)


def test_a_step_applied_despite_an_inf_says_the_parameters_are_no_longer_finite() -> None:
    # SGD stepping on an inf gradient writes inf/NaN into the weights: the message says so.
    with pytest.raises(InvariantViolation, match=r"held an inf changed the parameters \(they are no longer finite\)"):
        checks.check_amp_scaler(buggy.step_optimizer_not_scaler)
