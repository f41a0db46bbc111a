"""rnnreg.testing.step_checks: the GradScaler protocol judged from what the step did (issue 18).

The torch AMP recipe, fp16 on CPU, with and without clipping, passes; a GradScaler created inside every step, an
fp16 step without loss scaling, ``scaler.update()`` called twice, and ``zero_grad()`` between backward and
``scaler.step`` are each caught with their own cause (tests/reference_models/styles.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models import correct as ref
from reference_models import styles

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation

CAUSE = r"(.|\n)*Likely cause: .*"


@pytest.mark.parametrize(
    "step",
    [styles.torch_recipe_with_clipping, styles.torch_recipe, ref.amp_step_bf16, ref.amp_step_fp16],
    ids=lambda f: f.__name__,
)
def test_the_torch_amp_recipe_passes_the_scaler_check(step: Callable[..., Any]) -> None:
    passed = checks.check_amp_scaler(step)
    assert "grow the scale" in passed.detail


def test_the_torch_amp_recipe_with_clipping_passes_the_clipping_check() -> None:
    passed = checks.check_amp_clipping(styles.torch_recipe_with_clipping)
    assert "ran in float16" in passed.detail


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (
            styles.buggy_scaler_per_step,
            r"forward ran in float16 but never called scaler\.scale .* \(3 GradScaler\(s\) were created during the 3 "
            r"steps\)" + CAUSE + "created inside the step .* never grows",
        ),
        (
            styles.buggy_update_twice,
            r"No inf checks were recorded prior to update\. \(the step called, on the scaler: scale, unscale_, step, "
            r"update, update\)" + CAUSE + r"scaler\.update\(\) is called twice",
        ),
        (
            styles.buggy_zero_grad_before_step,
            r"No inf checks were recorded for this optimizer\." + CAUSE + "cleared between backward and scaler.step",
        ),
        (
            styles.buggy_zero_grad_keep_tensors,
            "finite step 1 did not change the parameters" + CAUSE + "zeroed between backward and scaler.step",
        ),
        (
            styles.buggy_fp16_without_scaler,
            "held an inf changed the parameters" + CAUSE + r"optimizer\.step\(\) is called directly",
        ),
    ],
    ids=["scaler-per-step", "update-twice", "zero-grad-before-step", "zero-grad-keep-tensors", "fp16-no-scaler"],
)
def test_scaler_protocol_bugs_are_caught_with_their_cause(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_scaler(step)


def test_an_fp16_step_without_any_scaler_that_skips_infs_is_told_to_scale() -> None:
    def skips_infs_itself(model: Any, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
        styles._fp16_loss(model, batch).backward()
        if all(p.grad is None or p.grad.isfinite().all() for p in model.parameters()):
            optimizer.step()
        optimizer.zero_grad()

    with pytest.raises(InvariantViolation, match="never called scaler.scale" + CAUSE + "no loss scaling under float16"):
        checks.check_amp_scaler(skips_infs_itself)


def test_a_bf16_step_without_loss_scaling_passes_and_says_what_ran() -> None:
    def bf16_no_scaler(model: Any, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = F.cross_entropy(model(batch.tokens, batch.lengths).float(), batch.labels)
        out.backward()
        if all(p.grad is None or p.grad.isfinite().all() for p in model.parameters()):
            optimizer.step()
        optimizer.zero_grad()

    passed = checks.check_amp_scaler(bf16_no_scaler)
    assert "no loss scaling and ran in bfloat16" in passed.detail
