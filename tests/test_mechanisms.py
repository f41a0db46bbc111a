"""rnnreg.mechanisms: each measurement against hand-computed values, the inert thresholds at their edges, and the
stopping rule on constructed validation curves."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnreg import mechanisms as mech
from rnnreg.config import Experiment, ModelConfig, TrainConfig
from rnnreg.step import make_optimizer


def test_clip_rate_counts_norms_strictly_above_max_norm_and_ignores_non_finite_steps() -> None:
    # 1.5 and 2.0 exceed 1.0; 1.0 itself is not rescaled; the inf step was skipped, never clipped: 2 of 4.
    assert mech.clip_rate([0.5, 1.5, 1.0, 2.0, math.inf], 1.0) == 0.5
    assert mech.clip_rate([0.1, 0.2], 1.0) == 0.0
    assert mech.clip_rate([], 1.0) is None


def test_norm_quantiles_are_the_median_and_linear_90th_percentile() -> None:
    # 1..5: median 3; the 90th percentile sits 0.6 of the way from 4 to 5 (numpy's linear rule).
    median, p90 = mech.norm_quantiles([5.0, 1.0, 4.0, 2.0, 3.0, math.nan])
    assert median == 3.0 and p90 == pytest.approx(4.6)
    assert mech.norm_quantiles([]) == (None, None)


def test_decay_factor_of_a_zero_gradient_adamw_run_equals_the_closed_form() -> None:
    # With zero gradients Adam's moments stay 0, so AdamW moves each decayed weight only by (1 - lr*wd) per step.
    lr, wd, steps = 0.01, 0.1, 50
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    optimizer = make_optimizer(model, TrainConfig(lr=lr, weight_decay=wd, optimizer="adamw"))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    log_factor = 0.0
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        log_factor += mech.decay_step_log_factor(optimizer) or 0.0
    closed_form = (1 - lr * wd) ** steps  # 0.999 ** 50 = 0.95121...
    assert math.exp(log_factor) == pytest.approx(closed_form, rel=1e-12)
    for name, p in model.named_parameters():
        expected = before[name] * (closed_form if p.dim() >= 2 else 1.0)  # biases are in the no-decay group
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)


def test_coupled_l2_has_no_decay_factor_and_no_decay_group_gives_factor_one() -> None:
    model = nn.Linear(4, 2)
    assert mech.decay_step_log_factor(make_optimizer(model, TrainConfig(optimizer="adam"))) is None
    assert mech.decay_step_log_factor(make_optimizer(model, TrainConfig(optimizer="sgd"))) is None
    assert mech.decay_step_log_factor(make_optimizer(model, TrainConfig(weight_decay=0.0))) == 0.0


def test_decay_factor_follows_the_optimizers_current_lr() -> None:
    optimizer = make_optimizer(nn.Linear(4, 2), TrainConfig(lr=0.1, weight_decay=0.5))
    for group in optimizer.param_groups:
        group["lr"] = 0.2  # as a scheduler would set it
    assert mech.decay_step_log_factor(optimizer) == pytest.approx(math.log(0.9))


def test_matrix_norm_takes_every_matrix_and_no_vector() -> None:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        model.bias.fill_(100.0)
    assert mech.matrix_norm(model) == 5.0


def test_ece_on_a_small_table_computed_by_hand() -> None:
    # Confidences 0.94 (right) and 0.96 (wrong) share the top bin (14/15, 1]: accuracy 0.5, confidence 0.95.
    # 0.70 (right) is alone in (10/15, 11/15]. ECE = (2 * |0.5 - 0.95| + 1 * |1 - 0.70|) / 3 = 0.4.
    probs = torch.tensor([[0.94, 0.06], [0.04, 0.96], [0.30, 0.70]])
    labels = torch.tensor([0, 0, 1])
    assert mech.expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_ece_is_zero_when_confidence_matches_accuracy_in_every_bin() -> None:
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])  # 3 of 4 right at confidence 0.75
    assert mech.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_bins_are_closed_on_the_right() -> None:
    # Four bins: 0.75 is the upper edge of (0.5, 0.75], so 0.75 (right) and 0.76 (wrong) fall in different bins:
    # ECE = (|1 - 0.75| + |0 - 0.76|) / 2 = 0.505. Had they shared a bin: |0.5 - 0.755| = 0.255.
    probs = torch.tensor([[0.75, 0.25], [0.24, 0.76]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    assert mech.expected_calibration_error(probs, labels, bins=4) == pytest.approx(0.505)


def test_ece_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        mech.expected_calibration_error(torch.ones(3, 2) / 2, torch.zeros(2, dtype=torch.long))


def test_calibration_nll_is_on_hard_labels() -> None:
    out = mech.calibration(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert out["nll"] == pytest.approx(math.log(2))
    assert out["mean_max_prob"] == 0.5


def test_smoothing_cap_is_one_minus_eps_plus_eps_over_k() -> None:
    assert mech.smoothing_cap(0.1, 2) == pytest.approx(0.95)
    assert mech.smoothing_cap(0.3, 3) == pytest.approx(0.8)


def _replay(curve: list[float], patience: int) -> tuple[int, bool, bool]:
    """What fit's loop does with a validation curve: (epochs run, stopped, truncated)."""
    best_epoch, best, stop, cut = 0, -math.inf, False, False
    for epoch, score in enumerate(curve, start=1):
        if score > best:
            best_epoch, best = epoch, score
        stop, cut = mech.stopping(epoch, best_epoch, patience)
        if stop:
            return epoch, stop, cut
    return len(curve), stop, cut


@pytest.mark.parametrize(
    ("curve", "patience", "expected"),
    [
        ([0.5, 0.6, 0.7], 3, (3, False, True)),  # still rising at the cap
        ([0.5, 0.7, 0.6, 0.6, 0.6, 0.9], 3, (5, True, False)),  # 3 epochs after the best: stopped, converged
        ([0.5, 0.7, 0.6, 0.6], 3, (4, False, True)),  # best 2 epochs ago, patience 3: could still improve
        ([0.5, 0.7, 0.7, 0.7], 2, (4, True, False)),  # a tie is no improvement
        ([0.5, 0.6, 0.7], 0, (3, False, True)),  # patience 0: cut when the last epoch was the best
        ([0.5, 0.7, 0.6], 0, (3, False, False)),
    ],
)
def test_stopping_rule_on_constructed_curves(curve: list[float], patience: int, expected: tuple) -> None:
    assert _replay(curve, patience) == expected


ON = Experiment(
    model=ModelConfig(),
    train=TrainConfig(lr=0.002, weight_decay=0.01, clip="norm", max_norm=1.0, label_smoothing=0.1),
)
OFF = Experiment(
    model=ModelConfig(**dict.fromkeys(ModelConfig.dropout_fields(), 0.0)),
    train=TrainConfig(weight_decay=0.0, clip="none", label_smoothing=0.0),
)


def test_inert_flags_each_trick_just_below_its_threshold_and_not_at_it() -> None:
    below = {"clip_rate": 0.049, "decay_shrink": 0.049, "dropout_loss_gap": 0.0099}
    at = {"clip_rate": 0.05, "decay_shrink": 0.05, "dropout_loss_gap": 0.01}
    flags = mech.inert(below, ON)
    assert set(flags) == {"clipping", "weight_decay", "dropout"}
    assert "4.9% of steps" in flags["clipping"] and "by 4.9% over the run" in flags["weight_decay"]
    assert mech.inert(at, ON) == {}


def test_a_trick_that_is_off_or_unmeasured_is_never_called_inert() -> None:
    assert mech.inert({"clip_rate": 0.0, "decay_shrink": 0.0, "dropout_loss_gap": 0.0}, OFF) == {}
    assert mech.inert({"clip_rate": None, "decay_shrink": None, "dropout_loss_gap": None}, ON) == {}


def test_smoothing_is_inert_when_it_barely_lowers_the_top_probability() -> None:
    assert mech.smoothing_inert(0.905, 0.91) is not None  # lowered by 0.005 < 0.01
    assert mech.smoothing_inert(0.90, 0.91) is None  # lowered by 0.01: acts
    assert mech.smoothing_inert(None, 0.9) is None
