"""rnnreg.testing.loss_checks: label smoothing passes PyTorch's convention and fails the mistakes public code
made, each with its cause."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models.cases import (
    smoothing_over_wrong_classes,
    smoothing_per_row,
    smoothing_reference,
    smoothing_summed,
)
from torch import Tensor

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Runs after conftest's thread setting. These models are tiny: intra-op threads only add synchronization, and
    # on a busy 2-core machine this file took 79 s with 2 threads against 7 s with 1.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def smoothing_soft_targets(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Written out by hand with soft targets: the same convention as PyTorch."""
    K = logits.shape[1]
    q = torch.full_like(logits, eps / K).scatter_(1, targets[:, None], 1 - eps + eps / K)
    return F.cross_entropy(logits, q)


def smoothing_zero_means_default(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps or 0.1)


def smoothing_ignored(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("loss_fn", [smoothing_reference, smoothing_soft_targets], ids=lambda f: f.__name__)
def test_pytorch_label_smoothing_passes(loss_fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    checks.check_label_smoothing(loss_fn)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (smoothing_over_wrong_classes, r"eps/\(K-1\) convention"),
        (smoothing_zero_means_default, "eps=0 is replaced by a default"),
        (smoothing_ignored, "smoothing is ignored"),
        (smoothing_summed, "summed over the batch"),
        (smoothing_per_row, r"returned \(8,\)"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_buggy_label_smoothing_fails(loss_fn: Callable[[Tensor, Tensor, float], Tensor], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_label_smoothing(loss_fn)


def smoothing_returns_a_list(logits: Tensor, targets: Tensor, eps: float) -> list[float]:
    return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="none").tolist()


def smoothing_for_two_classes(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """eps/2 on every class, written for binary problems: right for K = 2 only."""
    q = torch.full_like(logits, eps / 2).scatter_(1, targets[:, None], 1 - eps + eps / 2)
    return F.cross_entropy(logits, q)


def smoothing_binary_special_case(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Right for K > 2, but two classes get the notebook's 1-eps / eps targets (0.9 / 0.1 for eps = 0.1)."""
    if logits.shape[1] == 2:
        return smoothing_over_wrong_classes(logits, targets, eps)
    return F.cross_entropy(logits, targets, label_smoothing=eps)


def smoothing_halved(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps / 2)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (smoothing_returns_a_list, "loss_fn returned list"),
        (smoothing_for_two_classes, r"K=3, eps=0\.1: gradient"),  # right for K=2: every K must be checked
        (smoothing_binary_special_case, r"K=2, eps=0\.1: gradient"),  # ... and K=2 too
        (smoothing_halved, "a different target distribution or reduction"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.05), r"by a default \(0\.05\)"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.2), r"by a default \(0\.2\)"),
    ],
    ids=["returns-a-list", "two-classes-only", "binary-special-case", "halved", "default-0.05", "default-0.2"],
)
def test_more_label_smoothing_bugs_fail_with_their_diagnosis(
    loss_fn: Callable[[Tensor, Tensor, float], Any], match: str
) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_label_smoothing(loss_fn)


@pytest.mark.parametrize(("offset", "passes"), [(8e-6, True), (3e-5, False)])
def test_label_smoothing_tolerance_is_fp32_atol(offset: float, passes: bool) -> None:
    # The docstring's value tolerance for a loss returned without a graph: atol 1e-5 (+ rtol 1.3e-6): a loss off by
    # 0.8 atol passes, by 3 atol fails.
    context = contextlib.nullcontext() if passes else pytest.raises(InvariantViolation, match="12 cases differ")
    with context:
        checks.check_label_smoothing(
            lambda logits, targets, eps: float(smoothing_reference(logits.detach(), targets, eps)) + offset
        )
