"""Every training step the step checks are held to, correct and buggy: ``train_step(model, batch, optimizer, scaler,
max_norm)``, as ``check_amp_clipping`` and ``check_amp_scaler`` call it.

The correct steps come first (scale -> backward -> unscale_ -> clip -> step -> update -> zero_grad, written the way
rnnreg, the torch AMP recipe and other public code write it); every later step is one realistic mistake away from
one of them, and its docstring or comment says the mistake. The tests that use them are tests/test_check_step.py
(what each check reports), tests/test_check_base.py (the invariant names) and tests/test_check_corpus.py.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fp32_loss(model: nn.Module, batch: Any) -> Tensor:
    return F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)


def _bf16_loss(model: nn.Module, batch: Any) -> Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return F.cross_entropy(model(batch.tokens, batch.lengths).float(), batch.labels)


def _fp16_loss(model: nn.Module, batch: Any) -> Tensor:
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        output = model(batch.tokens, batch.lengths)
        return F.cross_entropy(output, batch.labels)


# ---------------------------------------------------------------------------------------------------------------
# Correct steps
# ---------------------------------------------------------------------------------------------------------------


def step_right(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _amp_step(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float, dtype: torch.dtype) -> None:
    with torch.autocast("cpu", dtype=dtype):
        logits = model(batch.tokens, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def amp_step_bf16(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    _amp_step(model, batch, optimizer, scaler, max_norm, torch.bfloat16)


def amp_step_fp16(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    _amp_step(model, batch, optimizer, scaler, max_norm, torch.float16)


def amp_step_skips_by_norm(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """Autocast bf16, the loss inside autocast, foreach clipping, and its own skip when the norm is not finite."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
    if torch.isfinite(norm):
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


def torch_recipe_with_clipping(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """The torch AMP recipe (https://pytorch.org/docs/stable/notes/amp_examples.html), fp16 on CPU."""
    loss = _fp16_loss(model, batch)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


def torch_recipe(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """The recipe without clipping (``max_norm`` unused)."""
    loss = _fp16_loss(model, batch)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


def bf16_step_without_scaler(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """bf16 needs no loss scaling: the scaler is ignored, and a non-finite norm skips the step by hand."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if torch.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad()


def bf16_no_scaler(model: Any, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """bf16 without loss scaling or clipping; skips a step whose gradients are not all finite."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = F.cross_entropy(model(batch.tokens, batch.lengths).float(), batch.labels)
    out.backward()
    if all(p.grad is None or p.grad.isfinite().all() for p in model.parameters()):
        optimizer.step()
    optimizer.zero_grad()


# ---------------------------------------------------------------------------------------------------------------
# Buggy steps: the order of scale, unscale_, clip and step
# ---------------------------------------------------------------------------------------------------------------


def step_clips_scaled(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # before unscale_: clips gradients x 65536
    scaler.step(optimizer)
    scaler.update()


def step_never_clips(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.step(optimizer)
    scaler.update()


def step_clips_after_step(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.update()


def step_never_steps(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.update()  # scaler.step(optimizer) forgotten


def step_clips_by_value(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_value_(model.parameters(), max_norm)  # clip='value' where clip='norm' was configured
    scaler.step(optimizer)
    scaler.update()


def step_with_label_smoothing(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels, label_smoothing=0.1)  # not loss_fn
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()


def step_without_unscale(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    optimizer.step()
    scaler.update()
    optimizer.zero_grad()


def step_skipping_everything(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    scaler.update()
    optimizer.zero_grad()


def step_twice(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """scaler.step(optimizer) followed by a leftover optimizer.step(): the update is applied twice."""
    scaler.scale(_bf16_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    optimizer.step()
    scaler.update()
    optimizer.zero_grad()


def step_overclips(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """Clips to half of max_norm."""
    scaler.scale(_bf16_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), 0.5 * max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


# ---------------------------------------------------------------------------------------------------------------
# Buggy steps: the size of the loss
# ---------------------------------------------------------------------------------------------------------------


def step_sums_the_loss(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """reduction='sum': the gradient is batch-size times too large, which active clipping hides."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths).float(), batch.labels, reduction="sum")
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


def step_scales_twice(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """The loss multiplied by the scale by hand and then by scaler.scale: unscale_ removes only one factor."""
    scaler.scale(_bf16_loss(model, batch) * scaler.get_scale()).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


# ---------------------------------------------------------------------------------------------------------------
# Buggy steps: the GradScaler protocol (an inf skips the step, the scale updates once a step)
# ---------------------------------------------------------------------------------------------------------------


def step_optimizer_not_scaler(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """optimizer.step() instead of scaler.step(optimizer): an overflowing step is applied."""
    scaler.scale(_bf16_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scaler.update()
    optimizer.zero_grad()


def step_never_updates(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """scaler.update() never called."""
    scaler.scale(_bf16_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    optimizer.zero_grad()


def step_crashes_on_overflow(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """error_if_nonfinite=True: a routine fp16 overflow becomes a crash."""
    scaler.scale(_bf16_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm, error_if_nonfinite=True)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()


def step_sets_scale_by_hand(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update(new_scale=1024.0)
    optimizer.zero_grad()


def step_never_zeroes(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(_fp32_loss(model, batch)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


def bf16_step_without_scaler_or_guard(
    model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float
) -> None:
    """bf16 without loss scaling and without a skip of its own: a step whose gradient holds an inf is applied."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad()


def buggy_scaler_per_step(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """A GradScaler created inside every step: the one passed in is never used, the scale never adapts."""
    own = torch.amp.GradScaler("cpu")
    loss = _fp16_loss(model, batch)
    own.scale(loss).backward()
    own.step(optimizer)
    own.update()
    optimizer.zero_grad()


def buggy_fp16_without_scaler(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """fp16 autocast and a plain backward: no loss scaling at all."""
    _fp16_loss(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad()


def fp16_skips_infs_without_scaler(model: Any, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """fp16 autocast without loss scaling, skipping non-finite steps by hand: small gradients underflow."""
    _fp16_loss(model, batch).backward()
    if all(p.grad is None or p.grad.isfinite().all() for p in model.parameters()):
        optimizer.step()
    optimizer.zero_grad()


def buggy_update_twice(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """``scaler.update()`` called twice (once in the step, once in a logging hook)."""
    torch_recipe_with_clipping(model, batch, optimizer, scaler, max_norm)
    scaler.update()


def buggy_zero_grad_before_step(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """``optimizer.zero_grad()`` between backward and ``scaler.step``: the step finds no gradients."""
    scaler.scale(_fp16_loss(model, batch)).backward()
    optimizer.zero_grad()
    scaler.step(optimizer)
    scaler.update()


def buggy_zero_grad_keep_tensors(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """``zero_grad(set_to_none=False)`` between backward and ``scaler.step``: the step applies zero gradients."""
    scaler.scale(_fp16_loss(model, batch)).backward()
    optimizer.zero_grad(set_to_none=False)
    scaler.step(optimizer)
    scaler.update()
