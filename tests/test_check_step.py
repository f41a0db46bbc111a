"""rnnreg.testing.step_checks: the AMP training step, judged from what it did.

``check_amp_clipping``: scale -> backward -> unscale_ -> clip -> step gives the reference update; a step that clips
the scaled gradients, never clips, clips after the step, steps twice, over-clips or sums the loss does not, and
each is told apart. ``check_amp_scaler``: the GradScaler protocol (an inf skips the step, the scale updates once a
step); the torch AMP recipe in fp16 on CPU, with and without clipping, passes, and every protocol bug is caught
with its own cause. The steps, correct and buggy, are in tests/reference_models/steps.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import CAUSE
from reference_models import steps

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation

# ---------------------------------------------------------------------------------------------------------------
# check_amp_clipping
# ---------------------------------------------------------------------------------------------------------------


def test_scale_unscale_clip_step_passes_amp_clipping() -> None:
    checks.check_amp_clipping(steps.step_right)


def test_the_torch_amp_recipe_with_clipping_passes_the_clipping_check() -> None:
    passed = checks.check_amp_clipping(steps.torch_recipe_with_clipping)
    assert "ran in float16" in passed.detail


AMP_STEPS = [steps.amp_step_bf16, steps.amp_step_fp16, steps.amp_step_skips_by_norm]


@pytest.mark.parametrize("step", AMP_STEPS, ids=lambda f: f.__name__)
def test_amp_steps_under_autocast_pass_amp_clipping(step: Callable[..., Any]) -> None:
    passed = checks.check_amp_clipping(step)
    assert "ran in bfloat16" in passed.detail or "ran in float16" in passed.detail  # autocast really ran


@pytest.mark.parametrize("step", AMP_STEPS, ids=lambda f: f.__name__)
def test_amp_steps_under_autocast_pass_the_scaler_protocol(step: Callable[..., Any]) -> None:
    checks.check_amp_scaler(step)


@pytest.mark.parametrize(
    ("train_step", "match"),
    [
        # the step order
        (steps.step_clips_scaled, "about the loss scale 65536(.|\n)*before scaler.unscale_"),
        (steps.step_never_clips, "equals the unclipped one"),
        (steps.step_clips_after_step, "equals the unclipped one"),
        # a missing step
        (steps.step_never_steps, "the parameters did not move"),
        (steps.step_skipping_everything, "did not move"),
        (steps.step_without_unscale, r"raised AssertionError on a finite step"),
        # another clip or another loss
        (steps.step_clips_by_value, "differs from scale -> backward -> unscale_ -> clip -> step in direction or size"),
        # Clipped to the same max_norm, so the update has the reference's size: neither too small nor unclipped.
        (
            steps.step_with_label_smoothing,
            "differs from scale -> backward -> unscale_ -> clip -> step in direction or size",
        ),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_step_bugs_fail_amp_clipping_with_their_diagnosis(train_step: Callable[..., None], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_clipping(train_step)


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (steps.step_twice, r"norm is (2|1\.99\d*|2\.00\d*)x" + CAUSE + "stepped twice"),
        (steps.step_overclips, r"norm is 0\.(5|49)\d*x" + CAUSE + "over-clipping"),
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
        (steps.step_sums_the_loss, r"clipping inactive(.|\n)*Likely cause: .*batch size: the loss is summed"),
        (steps.step_scales_twice, r"clipping inactive(.|\n)*Likely cause: .*too large: the loss is scaled twice"),
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
        checks.check_amp_clipping(steps.step_overclips)


def test_amp_clipping_leaves_global_rng_unchanged() -> None:
    rng = torch.get_rng_state()
    checks.check_amp_clipping(steps.step_right)
    assert torch.equal(torch.get_rng_state(), rng)


# ---------------------------------------------------------------------------------------------------------------
# check_amp_scaler
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [steps.torch_recipe_with_clipping, steps.torch_recipe, steps.amp_step_bf16, steps.amp_step_fp16],
    ids=lambda f: f.__name__,
)
def test_the_torch_amp_recipe_passes_the_scaler_check(step: Callable[..., Any]) -> None:
    passed = checks.check_amp_scaler(step)
    assert "grow the scale" in passed.detail


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (
            steps.buggy_scaler_per_step,
            r"forward ran in float16 but never called scaler\.scale .* \(3 GradScaler\(s\) were created during the 3 "
            r"steps\)" + CAUSE + "created inside the step .* never grows",
        ),
        (
            steps.buggy_update_twice,
            r"No inf checks were recorded prior to update\. \(the step called, on the scaler: scale, unscale_, step, "
            r"update, update\)" + CAUSE + r"scaler\.update\(\) is called twice",
        ),
        (
            steps.buggy_zero_grad_before_step,
            r"No inf checks were recorded for this optimizer\." + CAUSE + "cleared between backward and scaler.step",
        ),
        (
            steps.buggy_zero_grad_keep_tensors,
            "finite step 1 did not change the parameters" + CAUSE + "zeroed between backward and scaler.step",
        ),
        (
            steps.buggy_fp16_without_scaler,
            "held an inf changed the parameters" + CAUSE + r"optimizer\.step\(\) is called directly",
        ),
        (
            steps.step_optimizer_not_scaler,
            "held an inf changed the parameters" + CAUSE + r"optimizer\.step\(\) is called directly",
        ),
        (steps.step_never_updates, "scale is 65536, expected 131072" + CAUSE + r"scaler\.update\(\) is not called"),
        (
            steps.step_crashes_on_overflow,
            "raised RuntimeError on a step with an inf gradient" + CAUSE + "error_if_nonfinite",
        ),
        (
            steps.step_without_unscale,
            r"raised AssertionError on finite step 1" + CAUSE + r"optimizer\.step\(\) is called",
        ),
        (steps.step_skipping_everything, "finite step 1 did not change the parameters" + CAUSE + r"never called\.\n"),
        (steps.step_sets_scale_by_hand, "scale is 1024, expected 131072" + CAUSE + "set or updated by hand"),
        (steps.step_never_zeroes, "finite step 3 did not change" + CAUSE + "never cleared"),
    ],
    ids=[
        "scaler-per-step",
        "update-twice",
        "zero-grad-before-step",
        "zero-grad-keep-tensors",
        "fp16-no-scaler",
        "step_optimizer_not_scaler",
        "step_never_updates",
        "step_crashes_on_overflow",
        "step_without_unscale",
        "step_skipping_everything",
        "step_sets_scale_by_hand",
        "step_never_zeroes",
    ],
)
def test_scaler_protocol_bugs_are_caught_with_their_cause(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_scaler(step)


def test_a_step_applied_despite_an_inf_says_the_parameters_are_no_longer_finite() -> None:
    # SGD stepping on an inf gradient writes inf/NaN into the weights: the message says so.
    with pytest.raises(InvariantViolation, match=r"held an inf changed the parameters \(they are no longer finite\)"):
        checks.check_amp_scaler(steps.step_optimizer_not_scaler)


def test_an_fp16_step_without_any_scaler_that_skips_infs_is_told_to_scale() -> None:
    with pytest.raises(InvariantViolation, match="never called scaler.scale" + CAUSE + "no loss scaling under float16"):
        checks.check_amp_scaler(steps.fp16_skips_infs_without_scaler)


def test_a_bf16_step_without_loss_scaling_passes_and_says_what_ran() -> None:
    passed = checks.check_amp_scaler(steps.bf16_no_scaler)
    assert "no loss scaling and ran in bfloat16" in passed.detail


def test_a_step_without_loss_scaling_is_held_only_to_skipping_inf_steps() -> None:
    passed = checks.check_amp_scaler(steps.bf16_step_without_scaler)
    assert "uses no loss scaling" in passed.detail
    checks.check_amp_clipping(steps.bf16_step_without_scaler)
    with pytest.raises(InvariantViolation, match="held an inf changed the parameters"):
        checks.check_amp_scaler(steps.bf16_step_without_scaler_or_guard)


# ---------------------------------------------------------------------------------------------------------------
# Both checks: what they accept, and errors that are the user's own
# ---------------------------------------------------------------------------------------------------------------


def test_amp_steps_must_be_callable() -> None:
    for check in (checks.check_amp_clipping, checks.check_amp_scaler):
        with pytest.raises(TypeError, match="must be callable"):
            check(3)  # type: ignore[arg-type]


def test_a_step_that_raises_something_else_propagates() -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checks.check_amp_scaler(broken)


def test_a_step_that_raises_a_bare_runtime_error_propagates_it_unchanged() -> None:
    # Only GradScaler's own errors are diagnosed; anything else is the user's bug and reaches them as raised.
    def broken(*args: Any) -> None:
        raise RuntimeError()

    with pytest.raises(RuntimeError) as err:
        checks.check_amp_scaler(broken)
    assert type(err.value) is RuntimeError and str(err.value) == ""
