"""Checks of losses: label smoothing in PyTorch's convention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rnnreg.testing._base import (
    _SEED,
    CheckPassed,
    _as_float,
    _fail,
)

__all__ = ["check_label_smoothing"]


# ---------------------------------------------------------------------------------------------------------------
# Label smoothing
# ---------------------------------------------------------------------------------------------------------------


def _soft_target_ce(logits: Tensor, targets: Tensor, on: float, off: float) -> float:
    """Mean cross-entropy, in float64, against targets with ``on`` for the true class and ``off`` elsewhere."""
    q = torch.full(logits.shape, off, dtype=torch.float64)  # [B, K]
    q[torch.arange(len(targets)), targets] = on
    return float(-(q * torch.log_softmax(logits.double(), dim=1)).sum(dim=1).mean())


def _smoothed(eps: float, K: int) -> tuple[float, float]:
    """(true-class, other-class) target mass in PyTorch's convention."""
    return 1.0 - eps + eps / K, eps / K


def _soft_target_grad(logits: Tensor, targets: Tensor, on: float, off: float, scale: float) -> Tensor:
    """d(scale * mean soft-target CE)/d logits in float64: scale * (softmax - q) / B."""
    q = torch.full(logits.shape, off, dtype=torch.float64)  # [B, K]
    q[torch.arange(len(targets)), targets] = on
    return scale * (torch.softmax(logits.double(), dim=1) - q) / len(targets)


def check_label_smoothing(loss_fn: Callable[[Tensor, Tensor, float], Any]) -> CheckPassed:
    """``loss_fn(logits, targets, smoothing)`` trains like mean cross-entropy against ``(1-eps)*onehot + eps/K``.

    PyTorch's convention: eps/K on every class, so the true class gets 1 - eps + eps/K (0.95 / 0.05 for eps = 0.1,
    K = 2), not eps/(K-1) on the wrong classes. Checked for K in {2, 3, 5, 10} and eps in {0, 0.1, 0.3}, eps = 0
    being plain cross-entropy. What training uses is compared: the gradient w.r.t. the logits, against a float64
    reference within rtol 1e-5 / atol 1e-7 (fp32 softmax rounding). A loss value offset by a constant with equal
    gradients (a KL divergence is cross-entropy minus the target's entropy) passes, and the detail reports the
    offset. A loss returned without a graph is compared by value (rtol 1.3e-6, atol 1e-5).
    """
    invariant = "label smoothing (target (1-eps)*onehot + eps/K)"
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets, smoothing) (got {loss_fn!r})")
    gen = torch.Generator().manual_seed(_SEED)
    failures: list[str] = []
    first_cause = ""
    offsets: list[float] = []
    with torch.random.fork_rng(devices=[]):
        for eps in (0.0, 0.1, 0.3):
            for K in (2, 3, 5, 10):
                logits = torch.randn(8, K, generator=gen) * 3.0  # [B, K]
                targets = torch.randint(K, (8,), generator=gen)  # [B]
                expected = _soft_target_ce(logits, targets, *_smoothed(eps, K))
                leaf = logits.clone().requires_grad_(True)
                returned = loss_fn(leaf, targets.clone(), eps)
                got = _as_float(returned)
                if got is None:
                    shape = tuple(returned.shape) if isinstance(returned, Tensor) else type(returned).__name__
                    _fail(
                        invariant,
                        f"loss_fn returned {shape} for K={K}, eps={eps}",
                        "the loss is not reduced (reduction='none') or not returned",
                        "return the mean loss over the batch as a scalar tensor",
                    )
                grad = None
                if isinstance(returned, Tensor) and returned.requires_grad:
                    (grad,) = torch.autograd.grad(returned, leaf, allow_unused=True)
                if grad is None:  # no graph: only the value can be compared
                    if abs(got - expected) <= 1e-5 + 1.3e-6 * abs(expected):
                        continue
                    failures.append(f"K={K}, eps={eps}: loss {got:.6g}, expected {expected:.6g}")
                    first_cause = first_cause or _diagnose_smoothing_value(got, logits, targets, eps)
                    continue
                ref = _soft_target_grad(logits, targets, *_smoothed(eps, K), 1.0)
                if torch.allclose(grad.double(), ref, rtol=1e-5, atol=1e-7):
                    offsets.append(got - expected)
                    continue
                err = float((grad.double() - ref).abs().max())
                failures.append(f"K={K}, eps={eps}: gradient w.r.t. the logits off by up to {err:.3g}")
                first_cause = first_cause or _diagnose_smoothing_grad(grad.double(), logits, targets, eps)
    if failures:
        _fail(
            invariant,
            f"{len(failures)} of 12 cases differ from soft-target cross-entropy: " + "; ".join(failures[:3]),
            first_cause,
            "use F.cross_entropy(logits, targets, label_smoothing=eps), which spreads eps/K over every class, and "
            "pass eps through unchanged (0 means no smoothing)",
        )
    offset = max(offsets, key=abs, default=0.0)
    note = (
        f"; the loss value is offset by a constant (up to {offset:.4g}, e.g. a KL divergence = cross-entropy - "
        "entropy of the target), which changes no gradient"
        if abs(offset) > 1e-5
        else ""
    )
    return CheckPassed(
        invariant, "12 cases (K in 2,3,5,10; eps in 0,0.1,0.3): gradients match soft-target cross-entropy" + note
    )


def _smoothing_suspects(K: int, eps: float) -> list[tuple[str, float, float, float]]:
    """(cause, true-class mass, other-class mass, scale) of the usual label-smoothing mistakes."""
    suspects = [("the loss is summed over the batch instead of averaged", *_smoothed(eps, K), 8.0)]
    if K > 1 and eps > 0:
        suspects.append(
            (
                f"the eps/(K-1) convention (eps spread over the K-1 wrong classes, true class 1-eps); PyTorch puts "
                f"eps/K on every class, so the true class gets 1-eps+eps/K ({1 - eps + eps / K:.3g} here)",
                1.0 - eps,
                eps / (K - 1),
                1.0,
            )
        )
    if eps > 0:
        suspects.append(("smoothing is ignored: the loss equals plain cross-entropy", 1.0, 0.0, 1.0))
    if eps == 0:
        for default in (0.1, 0.05, 0.2):
            suspects.append(
                (
                    f"eps=0 is replaced by a default ({default}), e.g. `eps = smoothing or {default}`: a falsy 0 "
                    "is not 'unset'",
                    *_smoothed(default, K),
                    1.0,
                )
            )
    return suspects


def _diagnose_smoothing_grad(grad: Tensor, logits: Tensor, targets: Tensor, eps: float) -> str:
    for cause, on, off, scale in _smoothing_suspects(logits.shape[1], eps):
        if torch.allclose(grad, _soft_target_grad(logits, targets, on, off, scale), rtol=1e-4, atol=1e-6):
            return cause
    if eps == 0:
        return "eps=0 does not give plain cross-entropy"
    return "a different target distribution or reduction than (1-eps)*onehot + eps/K with a mean over rows"


def _diagnose_smoothing_value(got: float, logits: Tensor, targets: Tensor, eps: float) -> str:
    for cause, on, off, scale in _smoothing_suspects(logits.shape[1], eps):
        value = scale * _soft_target_ce(logits, targets, on, off)
        if abs(got - value) <= 1e-5 + 1e-5 * abs(value):
            return cause
    if eps == 0:
        return "eps=0 does not give plain cross-entropy"
    return "a different target distribution or reduction than (1-eps)*onehot + eps/K with a mean over rows"
