"""rnnreg.testing.loss_checks: label smoothing passes PyTorch's convention (target (1-eps)*onehot + eps/K) and
fails the mistakes public code made, each with its cause, judged by the gradient w.r.t. the logits or, for a loss
returned without a graph, by value."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import CAUSE
from reference_models import correct as ref
from reference_models.cases import (
    smoothing_over_wrong_classes,
    smoothing_per_row,
    smoothing_reference,
    smoothing_summed,
)
from torch import Tensor

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation


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
    "loss_fn",
    [ref.smoothing_cross_entropy, ref.smoothing_kl_divergence, ref.smoothing_soft_targets],
    ids=lambda f: f.__name__,
)
def test_reference_label_smoothing_passes(loss_fn: Callable[..., Any]) -> None:
    checks.check_label_smoothing(loss_fn)


def test_kl_divergence_smoothing_passes_and_reports_its_constant_offset() -> None:
    # KL(q || p) = CE(q, p) - H(q): the loss is lower by the target's entropy; gradients are equal.
    passed = checks.check_label_smoothing(ref.smoothing_kl_divergence)
    assert "offset by a constant" in passed.detail
    assert "offset" not in checks.check_label_smoothing(ref.smoothing_cross_entropy).detail


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (smoothing_over_wrong_classes, r"eps/\(K-1\) convention"),
        (smoothing_zero_means_default, "eps=0 is replaced by a default"),
        (smoothing_ignored, "smoothing is ignored"),
        (smoothing_summed, "summed over the batch"),
        (smoothing_per_row, r"returned \(8,\)"),
        (smoothing_returns_a_list, "loss_fn returned list"),
        (smoothing_for_two_classes, r"K=3, eps=0\.1: gradient"),  # right for K=2: every K must be checked
        (smoothing_binary_special_case, r"K=2, eps=0\.1: gradient"),  # ... and K=2 too
        (smoothing_halved, "a different target distribution or reduction"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.05), r"by a default \(0\.05\)"),
        (lambda logits, targets, eps: smoothing_reference(logits, targets, eps or 0.2), r"by a default \(0\.2\)"),
    ],
    ids=[
        "smoothing_over_wrong_classes",
        "smoothing_zero_means_default",
        "smoothing_ignored",
        "smoothing_summed",
        "smoothing_per_row",
        "returns-a-list",
        "two-classes-only",
        "binary-special-case",
        "halved",
        "default-0.05",
        "default-0.2",
    ],
)
def test_label_smoothing_bugs_fail_with_their_diagnosis(
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


def test_label_smoothing_without_a_graph_is_diagnosed_by_value() -> None:
    def summed_detached(logits: Tensor, targets: Tensor, eps: float) -> float:
        return float(F.cross_entropy(logits.detach(), targets, label_smoothing=eps, reduction="sum"))

    with pytest.raises(InvariantViolation, match=r"K=2, eps=0\.0: loss" + CAUSE + "summed over the batch"):
        checks.check_label_smoothing(summed_detached)


def test_label_smoothing_gradient_tolerance_separates_fp32_rounding_from_a_wrong_target() -> None:
    def nudged(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=eps) + 1e-4 * logits[:, 0].mean()

    with pytest.raises(InvariantViolation, match=r"gradient w\.r\.t\. the logits off by up to 1\.2\d*e-05"):
        checks.check_label_smoothing(nudged)


@pytest.mark.parametrize("graph", [True, False], ids=["by-gradient", "by-value"])
def test_label_smoothing_with_eps_zero_not_plain_cross_entropy_is_named(graph: bool) -> None:
    def doubled(logits: Tensor, targets: Tensor, eps: float) -> Any:
        loss = F.cross_entropy(logits, targets, label_smoothing=eps) * (2.0 if eps == 0 else 1.0)
        return loss if graph else float(loss.detach())

    with pytest.raises(
        InvariantViolation, match=r"^label smoothing .*K=2, eps=0\.0(.|\n)*Likely cause: eps=0 does not give plain"
    ):
        checks.check_label_smoothing(doubled)


@pytest.mark.parametrize("graph", [True, False], ids=["by-gradient", "by-value"])
def test_label_smoothing_with_a_wrong_target_is_named_generically(graph: bool) -> None:
    def too_smooth(logits: Tensor, targets: Tensor, eps: float) -> Any:
        loss = F.cross_entropy(logits, targets, label_smoothing=3 * eps)
        return loss if graph else float(loss.detach())

    with pytest.raises(
        InvariantViolation,
        match=r"Likely cause: a different target distribution or reduction than \(1-eps\)\*onehot \+ eps/K",
    ):
        checks.check_label_smoothing(too_smooth)


def test_label_smoothing_counts_every_failing_case_not_just_the_first() -> None:
    # eps ignored: plain cross-entropy is right for the 4 cases with eps = 0 and wrong for the other 8 (K in
    # 2, 3, 5, 10 x eps in 0.1, 0.3).
    def eps_ignored(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets)

    with pytest.raises(InvariantViolation, match=r"\b8 of 12 cases differ from soft-target cross-entropy"):
        checks.check_label_smoothing(eps_ignored)
