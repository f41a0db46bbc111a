"""rnnreg.testing.step_checks: the GradScaler protocol judged from what the step did (issue 18).

The torch AMP recipe, fp16 on CPU, with and without clipping, passes; a GradScaler created inside every step, an
fp16 step without loss scaling, ``scaler.update()`` called twice, and ``zero_grad()`` between backward and
``scaler.step`` are each caught with their own cause (tests/reference_models/styles.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models import correct as ref
from reference_models import styles
from reference_models.cases import (
    _loss,
    adam_l2_from_squared_norm,
    adamw_without_lr,
    clip_norm_then_value,
    smoothing_summed,
    step_clips_scaled,
    step_right,
)
from torch import nn

from rnnreg.batch import Batch
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


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Runs after conftest's thread setting. These models are tiny: intra-op threads only add synchronization, and
    # on a busy 2-core machine this file took 79 s with 2 threads against 7 s with 1.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------
# The AMP step order and the GradScaler protocol
# ---------------------------------------------------------------------------------------------------------------


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
