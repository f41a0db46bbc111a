"""What each regularizer did in a run: how often clipping acted, how much decay shrank the weights, the dropout gap,
and calibration (what label smoothing changes).

A trick can be switched on and still do nothing: the notebook's one-layer ``nn.LSTM(dropout=0.3)`` is the classic
case, and a decay or a clipping threshold chosen far from the run's scale is the same thing in quieter form. These
pure functions turn what a run recorded into numbers, and :func:`inert` names each trick that barely acted, with the
number and the threshold below.

Definitions:
- clip rate: share of optimizer steps whose pre-clip global gradient norm exceeded ``train.max_norm`` (norm clipping
  only: with value clipping the step does not record the largest gradient element, so the rate is not measured).
- decay shrink: ``1 - prod_t (1 - lr_t * wd)`` over the optimizer steps actually taken, for decoupled decay (AdamW):
  the share by which decay alone shrank every decayed weight. Coupled L2 (Adam, SGD) adds ``wd * p`` to the gradient,
  where Adam's normalisation rescales it, so it has no closed-form shrink and is not judged.
- dropout gap: on a fixed sample of training examples, the mean loss in train mode (dropout on) minus the loss in
  eval mode; and the generalization gap, training-sample accuracy (eval mode) minus validation accuracy.
- expected calibration error (ECE): predictions binned by their top probability into 15 equal-width bins,
  bin ``b`` holding confidences in ``(b/15, (b+1)/15]`` (a confidence of 0 goes in the first bin);
  ``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnreg.config import Experiment

ECE_BINS = 15
# Below these a trick is called inert at its settings (each a mechanism metric of this module).
CLIP_INERT_BELOW = 0.05  # clipping acted on fewer than 5% of steps: Adam is invariant to a rare rescale
DECAY_INERT_BELOW = 0.05  # decoupled decay shrank the decayed weights by less than 5% over the whole run
DROPOUT_INERT_BELOW = 0.01  # train-mode loss above eval-mode loss by less than 0.01 nats: the masks barely bite
SMOOTHING_INERT_BELOW = 0.01  # smoothing lowered the mean top validation probability by less than 0.01 (vs without)


def stopping(epoch: int, best_epoch: int, patience: int) -> tuple[bool, bool]:
    """``(stop, truncated)`` after ``epoch`` epochs whose best validation score came at ``best_epoch``.

    ``stop``: ``patience`` epochs in a row without a better score (never with patience 0). ``truncated``: had training
    ended here, it would have been cut while still improving, the best epoch being within the last ``patience``
    epochs (the last epoch itself when patience is 0).
    """
    since = epoch - best_epoch
    stop = patience > 0 and since >= patience
    return stop, not stop and since < max(patience, 1)


def clip_rate(grad_norms: Sequence[float], max_norm: float) -> float | None:
    """Share of steps whose pre-clip norm exceeded ``max_norm`` (what ``clip_grad_norm_`` rescales); None if no step."""
    norms = np.asarray([n for n in grad_norms if math.isfinite(n)], dtype=np.float64)
    return float(np.mean(norms > max_norm)) if norms.size else None


def norm_quantiles(grad_norms: Sequence[float]) -> tuple[float | None, float | None]:
    """Median and 90th percentile of the finite pre-clip gradient norms."""
    norms = np.asarray([n for n in grad_norms if math.isfinite(n)], dtype=np.float64)
    if not norms.size:
        return None, None
    median, p90 = np.quantile(norms, [0.5, 0.9])
    return float(median), float(p90)


def decay_step_log_factor(optimizer: torch.optim.Optimizer) -> float | None:
    """``log(1 - lr * wd)`` of the decoupled decay one step of ``optimizer`` applies; None where decay is coupled.

    Read from the optimizer's own groups (the first group that decays), so a schedule's current lr counts.
    """
    if not isinstance(optimizer, torch.optim.AdamW):
        return None
    for group in optimizer.param_groups:
        wd = float(group["weight_decay"])
        if wd > 0:
            factor = 1.0 - float(group["lr"]) * wd  # <= 0 only at absurd settings (lr * wd >= 1): weights zeroed
            return math.log(abs(factor)) if factor != 0 else -math.inf
    return 0.0


def matrix_norm(model: nn.Module) -> float:
    """L2 norm over the model's matrices (``dim >= 2``, embeddings included): what the decay rule decays.

    Taken over the same parameters whether or not the run decayed them, so runs with and without decay compare.
    """
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.dim() >= 2))


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of the top probability (see the module docstring for the bin edges)."""
    if probs.ndim != 2 or len(probs) != len(labels) or not len(labels):
        raise ValueError(
            f"probs must be [N, K] and labels [N] with N >= 1 (got {tuple(probs.shape)} and {tuple(labels.shape)})"
        )
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == labels).double()
    # (b/bins, (b+1)/bins] -> b; a confidence of exactly 0 joins bin 0.
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        n_b = int(in_bin.sum())
        if n_b:
            total += n_b * abs(float(correct[in_bin].mean()) - float(confidence[in_bin].mean()))
    return total / len(labels)


def calibration(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Validation calibration: ECE, mean top probability and the NLL on hard labels (no smoothing)."""
    probs = torch.softmax(logits.double(), dim=1)
    return {
        "ece": expected_calibration_error(probs, labels),
        "mean_max_prob": float(probs.max(dim=1).values.mean()),
        "nll": float(F.cross_entropy(logits.double(), labels)),
    }


def smoothing_cap(epsilon: float, num_classes: int) -> float:
    """The top target probability under label smoothing: ``1 - eps + eps / K`` (0.95 for eps 0.1, K 2)."""
    return 1.0 - epsilon + epsilon / num_classes


def _on(experiment: Experiment, trick: str) -> bool:
    m, t = experiment.model, experiment.train
    if trick == "dropout":
        return any(getattr(m, name) > 0 for name in m.dropout_fields())
    if trick == "weight_decay":
        return t.weight_decay > 0
    if trick == "clipping":
        return t.clip != "none"
    return t.label_smoothing > 0


def inert(mechanisms: dict[str, Any], experiment: Experiment) -> dict[str, str]:
    """Each trick that is switched on in ``experiment`` but barely acted, with the number that says so.

    ``mechanisms`` holds one run's measurements (or their means over seeds): the keys ``clip_rate``,
    ``decay_shrink`` and ``dropout_loss_gap``. A measurement that is None (not measured) judges nothing. Label
    smoothing needs a run without it to compare with: see :func:`smoothing_inert`.
    """
    out: dict[str, str] = {}
    rate = mechanisms.get("clip_rate")
    if _on(experiment, "clipping") and rate is not None and rate < CLIP_INERT_BELOW:
        out["clipping"] = (
            f"clipping acted on {rate:.1%} of steps (inert below {CLIP_INERT_BELOW:.0%}): "
            f"train.max_norm={experiment.train.max_norm:g} is above almost every gradient norm"
        )
    shrink = mechanisms.get("decay_shrink")
    if _on(experiment, "weight_decay") and shrink is not None and shrink < DECAY_INERT_BELOW:
        out["weight_decay"] = (
            f"weight decay shrinks weights by {shrink:.1%} over the run (inert below {DECAY_INERT_BELOW:.0%}): "
            f"lr x weight_decay = {experiment.train.lr * experiment.train.weight_decay:.2g} per step"
        )
    gap = mechanisms.get("dropout_loss_gap")
    if _on(experiment, "dropout") and gap is not None and gap < DROPOUT_INERT_BELOW:
        out["dropout"] = (
            f"dropout raises the training loss by {gap:.3f} nats over eval mode (inert below {DROPOUT_INERT_BELOW})"
        )
    return out


def smoothing_inert(with_smoothing: float | None, without: float | None) -> str | None:
    """Label smoothing is inert when it lowers the mean top validation probability by less than the threshold."""
    if with_smoothing is None or without is None:
        return None
    drop = without - with_smoothing
    if drop < SMOOTHING_INERT_BELOW:
        return (
            f"label smoothing lowers the mean top validation probability by {drop:+.3f} "
            f"(inert below {SMOOTHING_INERT_BELOW})"
        )
    return None
