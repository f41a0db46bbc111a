"""Checks of a training step under mixed precision: clipping on unscaled gradients, the GradScaler protocol."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnreg.batch import PAD_ID, Batch
from rnnreg.testing._base import (
    _AMP_RTOL,
    _SEED,
    CheckPassed,
    InvariantViolation,
    _fail,
    _pad_mask,
    _record_dtypes,
)

__all__ = ["TrainStep", "check_amp_clipping", "check_amp_scaler"]


# ---------------------------------------------------------------------------------------------------------------
# AMP: clipping under a GradScaler, and autocast parity
# ---------------------------------------------------------------------------------------------------------------


class _TinyClassifier(nn.Module):
    """Embedding -> mean over each row's length -> Linear -> tanh -> Linear: follows the protocol, no dropout.

    Only embeddings and linear layers, so autocast runs it on every device and CPU (the head in bf16/fp16).
    """

    def __init__(self, vocab_size: int = 20, embed_dim: int = 6, hidden_dim: int = 5, num_classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.hidden = nn.Linear(embed_dim, hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(tokens)  # [B, T, E]
        keep = ~_pad_mask(lengths, tokens.shape[1], tokens.device)  # [B, T]
        pooled = (x * keep[..., None]).sum(1) / lengths.to(x.device)[:, None]  # [B, E]
        return self.head(torch.tanh(self.hidden(pooled)))  # [B, C]


def _tiny_batch(gen: torch.Generator, vocab_size: int = 20, num_classes: int = 3) -> Batch:
    lengths = torch.tensor([7, 5, 3, 1, 6, 2])  # [B]; a full-length row and a single-token row
    tokens = torch.randint(1, vocab_size, (len(lengths), 7), generator=gen)  # [B, T]
    tokens[_pad_mask(lengths, 7, tokens.device)] = PAD_ID
    return Batch(tokens, lengths, torch.randint(num_classes, (len(lengths),), generator=gen))


TrainStep = Callable[[nn.Module, Batch, torch.optim.Optimizer, torch.amp.GradScaler, float], Any]
_UPDATE_RTOL = {torch.float32: 1e-4, **_AMP_RTOL}  # relative L2 error of the update, by the lowest dtype that ran


def _lowest_precision(seen: dict[str, str]) -> torch.dtype:
    names = set(seen.values())
    return torch.float16 if "float16" in names else torch.bfloat16 if "bfloat16" in names else torch.float32


def _flat_delta(model: nn.Module, start: list[Tensor]) -> Tensor:
    return torch.cat([(p.detach().float() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)])


def _call_step(train_step: TrainStep, invariant: str, what: str, *args: Any) -> None:
    """Call the user's step; a RuntimeError from GradScaler's bookkeeping is a protocol bug and is diagnosed from what
    the step did with the scaler (``args[3]``, a :class:`_RecordingScaler`)."""
    scaler = args[3]
    if isinstance(scaler, _RecordingScaler):
        scaler.events = []
    try:
        train_step(*args)
    except (RuntimeError, AssertionError) as e:
        if isinstance(e, InvariantViolation):
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        events = scaler.events if isinstance(scaler, _RecordingScaler) else []
        if "No inf checks were recorded" in message:
            cause = _protocol_cause(events)
        elif "non-finite" in message.lower():
            cause = (
                "clipping raises on a non-finite norm (error_if_nonfinite=True): with a GradScaler an overflow is "
                "routine and must skip the step, not crash"
            )
        else:
            raise
        done = f" (the step called, on the scaler: {', '.join(events)})" if events else ""
        _fail(invariant, f"train_step raised {type(e).__name__} {what}: {message}{done}", cause, _STEP_ORDER_FIX)


def _protocol_cause(events: list[str]) -> str:
    """Why GradScaler found no inf checks, from the calls the step made on it."""
    steps = [e for e in events if e.startswith("step")]
    if events.count("update") > 1:
        return (
            "scaler.update() is called twice in one step: the first update clears the inf checks that "
            "scaler.step recorded, so the second finds none"
        )
    if steps and all(e == "step (no gradients)" for e in steps):
        return (
            "the gradients were cleared between backward and scaler.step(optimizer) (optimizer.zero_grad() before "
            "the step): scaler.step found no gradient to unscale"
        )
    if not steps:
        return "scaler.update() ran without scaler.step(optimizer): optimizer.step() is called directly"
    return "scaler.step(optimizer) found no gradients to check for this optimizer"


_STEP_ORDER_FIX = (
    "order the step as scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip_grad_norm_(params, max_norm); "
    "scaler.step(optimizer); scaler.update(); optimizer.zero_grad()"
)


_AMP_INIT_SCALE = 2.0**16


@dataclass(frozen=True)
class _AmpCase:
    error: float  # relative L2 error of the update against the fp32 reference
    ratio: float  # update norm / reference update norm
    tolerance: float
    ran: str  # the lowest precision the step's forward ran in
    raw_norm: float
    max_norm: float
    batch_size: int


def _amp_step_case(
    train_step: TrainStep, loss_fn: Callable[[Tensor, Tensor], Tensor], invariant: str, *, clip: float
) -> _AmpCase:
    """One call of ``train_step`` on the tiny classifier with ``max_norm = clip * gradient norm``, against the fp32
    reference (``loss_fn``, backward, ``clip_grad_norm_``, SGD step)."""
    lr = 0.5
    batch = _tiny_batch(torch.Generator().manual_seed(_SEED))
    seen: dict[str, str] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _TinyClassifier()
        start = [p.detach().clone() for p in model.parameters()]
        reference = copy.deepcopy(model)
        loss_fn(reference(batch.tokens, batch.lengths), batch.labels).backward()
        raw_norm = float(nn.utils.get_total_norm([p.grad for p in reference.parameters() if p.grad is not None]))
        max_norm = raw_norm * clip
        nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
        torch.optim.SGD(reference.parameters(), lr=lr).step()

        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        scaler = _RecordingScaler("cpu", init_scale=_AMP_INIT_SCALE)
        model.train()
        with _record_dtypes(model, seen):
            _call_step(train_step, invariant, "on a finite step", model, batch, optimizer, scaler, max_norm)

    precision = _lowest_precision(seen)
    ref_delta, delta = _flat_delta(reference, start), _flat_delta(model, start)
    return _AmpCase(
        error=float((delta - ref_delta).norm() / ref_delta.norm()),
        ratio=float(delta.norm() / ref_delta.norm()),
        tolerance=_UPDATE_RTOL[precision],
        ran=str(precision).removeprefix("torch."),
        raw_norm=raw_norm,
        max_norm=max_norm,
        batch_size=len(batch),
    )


def check_amp_clipping(
    train_step: TrainStep, *, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
) -> CheckPassed:
    """``train_step(model, batch, optimizer, scaler, max_norm)`` clips the unscaled gradients.

    The check builds its own tiny classifier (embedding, masked mean, two linear layers: autocast runs it anywhere)
    and batch, an SGD optimizer (lr 0.5, no momentum) and an enabled ``torch.amp.GradScaler("cpu",
    init_scale=2**16)``, and sets ``max_norm`` to a third of the gradient norm so clipping is active. One call of
    ``train_step`` must give the update of the fp32 reference (``loss_fn``, backward, ``clip_grad_norm_``, step)
    within a relative L2 error set by the precision that ran, read from the model's module outputs during the step:
    1e-4 in fp32 (scaling by a power of two is exact), 12.8 eps under autocast (0.05 bf16, 0.0125 fp16; a correct
    bf16 step errs by ~5e-3). The step may run its forward under autocast, as a real AMP step does. Clipping before
    ``unscale_`` shrinks the update by about the loss scale; not clipping, or clipping after the step, makes it 3x;
    stepping twice makes it 2x; over-clipping shrinks it. A second call with ``max_norm`` at 10x the gradient norm
    (clipping inactive) must give the unclipped update: active clipping hides a gradient of the wrong size (a loss
    summed over the batch, a loss scaled twice). The loss must equal ``loss_fn`` (plain cross-entropy by default).
    """
    invariant = "clipping acts on unscaled gradients under a GradScaler"
    if not callable(train_step):
        raise TypeError(
            f"train_step must be callable as train_step(model, batch, optimizer, scaler, max_norm) (got {train_step!r})"
        )
    # A third: not clipping triples the update, stepping twice doubles it; the two stay apart.
    case = _amp_step_case(train_step, loss_fn, invariant, clip=1 / 3)
    error, ratio, tolerance, ran = case.error, case.ratio, case.tolerance, case.ran
    raw_norm, max_norm, init_scale = case.raw_norm, case.max_norm, _AMP_INIT_SCALE
    if not error <= tolerance:
        if ratio == 0.0:
            cause = "the parameters did not move: the optimizer step was skipped or never called (scaler.step)"
        elif not math.isfinite(ratio):
            cause = "the update is not finite: the optimizer stepped on scaled or overflowing gradients"
        elif ratio < 1e-2:
            cause = (
                f"the update is {1 / ratio:.3g}x too small, about the loss scale {init_scale:.0f}: clipping ran on the "
                "scaled gradients (clip_grad_norm_ before scaler.unscale_)"
            )
        elif math.isclose(ratio, raw_norm / max_norm, rel_tol=max(3 * tolerance, 1e-3)):
            cause = "the update equals the unclipped one: the step does not clip, or clips after optimizer.step()"
        elif math.isclose(ratio, 2.0, rel_tol=max(3 * tolerance, 1e-3)):
            cause = (
                "the update is twice the clipped one: the optimizer stepped twice (optimizer.step() and "
                "scaler.step(optimizer), or a step left over from a gradient that was not zeroed)"
            )
        elif 0.05 < ratio < 1.0 - 2 * tolerance:
            cause = f"the update is {ratio:.3g}x the clipped one: over-clipping (the gradients scaled below max_norm)"
        else:
            cause = "the update differs from scale -> backward -> unscale_ -> clip -> step in direction or size"
        _fail(
            invariant,
            f"the update differs from the fp32 clipped update by {error:.3g} (relative L2, tolerance {tolerance:.3g} "
            f"for a step that ran in {ran}); its norm is {ratio:.4g}x the reference's (pre-clip norm {raw_norm:.4g}, "
            f"max_norm {max_norm:.4g}, loss scale {init_scale:.0f})",
            cause,
            _STEP_ORDER_FIX,
        )
    # Clipping hides the gradient's size: with max_norm out of reach the update must equal the unclipped one.
    free = _amp_step_case(train_step, loss_fn, invariant, clip=10.0)
    if not free.error <= free.tolerance:
        if math.isclose(free.ratio, free.batch_size, rel_tol=0.05):
            cause = f"the update is {free.ratio:.3g}x the reference, the batch size: the loss is summed over the batch"
        elif math.isfinite(free.ratio) and (
            free.ratio > 100 or math.isclose(free.ratio, free.max_norm / free.raw_norm, rel_tol=0.05)
        ):
            cause = (
                f"the update is {free.ratio:.3g}x the reference (clipped at max_norm, or not at all): the gradient is "
                "about the loss scale too large: the loss is scaled twice, or the optimizer stepped on gradients "
                "that were never unscaled"
            )
        else:
            cause = "the step's loss differs from loss_fn (another reduction, weighting or scale), or the model is "
            cause += "not in train mode"
        _fail(
            invariant,
            f"with clipping inactive (max_norm {free.max_norm:.4g} = 10x the gradient norm) the update differs from "
            f"the fp32 update by {free.error:.3g} (relative L2, tolerance {free.tolerance:.3g} for a step that ran in "
            f"{free.ran}); its norm is {free.ratio:.4g}x the reference's",
            cause,
            "compute the loss as loss_fn does (cross-entropy averaged over the batch), scale it once with "
            "scaler.scale(loss), and call scaler.unscale_(optimizer) before clipping",
        )
    return CheckPassed(
        invariant,
        f"update matches the fp32 clipped update (relative L2 error {error:.2g} <= {tolerance:.2g}, ran in {ran}) "
        f"and the unclipped one ({free.error:.2g})",
    )


def _grad_state(optimizer: torch.optim.Optimizer) -> str:
    grads = [q.grad for group in optimizer.param_groups for q in group["params"]]
    if all(g is None for g in grads):
        return "step (no gradients)"
    if all(g is None or not bool(g.any()) for g in grads):
        return "step (all gradients zero)"
    return "step"


class _RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that records what a step did with it: whether it scaled a loss, and each call in order."""

    used = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[str] = []

    def scale(self, outputs: Any) -> Any:
        self.used = True
        self.events.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.events.append("unscale_")
        super().unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        self.events.append(_grad_state(optimizer))
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        self.events.append("update")
        super().update(new_scale)


@contextlib.contextmanager
def _scalers_created() -> Iterator[list[int]]:
    """Count the GradScalers constructed while the block runs (a step that builds its own instead of using ours)."""
    count = [0]
    original = torch.amp.GradScaler.__init__

    def counting_init(self: torch.amp.GradScaler, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        original(self, *args, **kwargs)

    torch.amp.GradScaler.__init__ = counting_init  # type: ignore[method-assign]
    try:
        yield count
    finally:
        torch.amp.GradScaler.__init__ = original  # type: ignore[method-assign]


def check_amp_scaler(train_step: TrainStep) -> CheckPassed:
    """``train_step(model, batch, optimizer, scaler, max_norm)`` follows the GradScaler protocol over three steps.

    With an enabled ``torch.amp.GradScaler("cpu", init_scale=2**16, growth_interval=1)``: a finite step moves the
    parameters and doubles the scale (so ``scaler.update()`` ran); a step whose gradients hold an injected inf
    leaves every parameter unchanged and halves the scale (``scaler.step`` skipped it and ``update`` backed off);
    the next finite step moves the parameters again. ``max_norm`` is large, so clipping does not act. What the step
    did is judged, not what it was given: the precision its forward ran in is read from the model's module outputs,
    and a step whose forward ran in float16 must scale its loss with the scaler it is given (fp16 gradients
    underflow without loss scaling, and a GradScaler created inside the step starts over every step, so its scale
    never grows nor backs off). A step in bf16 or fp32 may use no loss scaling; it is then held only to skipping
    the inf step. Protocol errors are named from the calls the step made on the scaler (``update()`` twice,
    gradients cleared before ``scaler.step``, ``optimizer.step()`` called directly).
    """
    invariant = "GradScaler protocol (inf skips the step, the scale updates)"
    if not callable(train_step):
        raise TypeError(
            f"train_step must be callable as train_step(model, batch, optimizer, scaler, max_norm) (got {train_step!r})"
        )
    gen = torch.Generator().manual_seed(_SEED + 1)
    batch = _tiny_batch(gen)
    seen: dict[str, str] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _TinyClassifier().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = _RecordingScaler("cpu", init_scale=2.0**16, growth_interval=1)
        with _scalers_created() as created, _record_dtypes(model, seen):
            for step, poison in enumerate((False, True, False), start=1):
                _scaler_step(train_step, invariant, model, batch, optimizer, scaler, step, poison)
    ran = _lowest_precision(seen)
    if not scaler.used and ran == torch.float16:
        _fail(
            invariant,
            "the step's forward ran in float16 but never called scaler.scale on the GradScaler it was given"
            + (f" ({created[0]} GradScaler(s) were created during the 3 steps)" if created[0] else ""),
            f"a GradScaler created inside the step ({created[0]} over 3 steps): it starts over at every step, so its "
            "scale never grows after good steps nor backs off after an overflow"
            if created[0]
            else "no loss scaling under float16 autocast: small fp16 gradients underflow to zero",
            "create the GradScaler once, outside the step, pass it in, and use it: scaler.scale(loss).backward(); "
            "scaler.step(optimizer); scaler.update()",
        )
    if not scaler.used:
        return CheckPassed(
            invariant,
            f"the step uses no loss scaling and ran in {str(ran).removeprefix('torch.')} (fine in bf16/fp32; fp16 "
            "needs it); an inf step is skipped",
        )
    return CheckPassed(
        invariant, "finite steps move the parameters and grow the scale; an inf step is skipped and backs off"
    )


def _scaler_step(
    train_step: TrainStep,
    invariant: str,
    model: _TinyClassifier,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scaler: _RecordingScaler,
    step: int,
    poison: bool,
) -> None:
    """One call of the user's step, with an inf injected into the head's gradient when ``poison``, judged."""
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    hook = model.head.weight.register_hook(lambda g: torch.full_like(g, math.inf)) if poison else None
    what = "on a step with an inf gradient" if poison else f"on finite step {step}"
    try:
        _call_step(train_step, invariant, what, model, batch, optimizer, scaler, 1e6)
    finally:
        if hook is not None:
            hook.remove()
    moved = not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))
    new_scale = scaler.get_scale()
    if poison and moved:
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        stepped = any(e.startswith("step") for e in scaler.events)
        _fail(
            invariant,
            "a step whose gradients held an inf changed the parameters"
            + ("" if finite else " (they are no longer finite)"),
            "optimizer.step() is called as well as scaler.step(optimizer), so the step scaler.step skipped runs anyway"
            if stepped
            else "optimizer.step() is called directly instead of scaler.step(optimizer), so nothing skips a step "
            "whose gradients overflowed",
            "call scaler.step(optimizer) only: it skips the step when unscale_ found an inf or NaN",
        )
    if not poison and not moved:
        if "step (all gradients zero)" in scaler.events or "step (no gradients)" in scaler.events:
            cause = (
                "the gradients were zeroed between backward and scaler.step(optimizer) (optimizer.zero_grad() "
                "before the step), so the step applied nothing"
            )
        else:
            cause = "the optimizer step is skipped or never called" + (
                ", or gradients are never cleared (optimizer.zero_grad()), so the inf of the previous step "
                "stays and every later step is skipped"
                if step == 3
                else ""
            )
        _fail(invariant, f"finite step {step} did not change the parameters", cause, _STEP_ORDER_FIX)
    expected = scale * (0.5 if poison else 2.0)
    if scaler.used and new_scale != expected:
        _fail(
            invariant,
            f"after {what} the loss scale is {new_scale:g}, expected {expected:g} (from {scale:g}; "
            "growth_interval=1, backoff 0.5)",
            "scaler.update() is not called after every step, so the scale never backs off after an "
            "overflow nor grows after good steps"
            if new_scale == scale
            else "the scale is set or updated by hand instead of by scaler.update()",
            "call scaler.update() once at the end of every step, after scaler.step(optimizer)",
        )
