"""rnnreg.testing.optim_checks: what the optimizer reads, not what its groups say (issue 18).

Decay groups written for another optimizer's key names (BERT's ``weight_decay_rate``) are silently kept by torch,
which decays every group by its own default: caught with the key named. A decay of 0 in every group fails when the
user says a decay is configured (``expect_decay=True``) and passes otherwise. Keys other tools read (timm's
``lr_scale``) pass and are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference_models import correct as ref
from reference_models import styles
from torch import nn

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation

CAUSE = r"(.|\n)*Likely cause: .*"


def fresh(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


@pytest.mark.parametrize(
    "groups", [styles.bert_groups, ref.nanogpt_groups, ref.hf_trainer_groups, ref.timm_style_groups], ids=str
)
def test_decay_recipes_pass_when_a_decay_is_expected(groups: Callable[[nn.Module], Any]) -> None:
    checks.check_decay_groups(fresh(ref.TransformerClassifier), groups, expect_decay=True)


@pytest.mark.parametrize(
    ("groups", "optimizer", "value"),
    [
        (styles.buggy_bert_groups_weight_decay_rate, "AdamW", "0.01"),  # AdamW's default weight_decay
        (styles.buggy_bert_groups_weight_decay_rate_adam, "Adam", "0"),  # Adam's default: nothing decays
    ],
    ids=["AdamW", "Adam"],
)
def test_a_group_key_torch_ignores_is_caught_naming_the_key_it_reads(
    groups: Callable[[nn.Module], Any], optimizer: str, value: str
) -> None:
    with pytest.raises(
        InvariantViolation,
        match=rf"group 0 sets 'weight_decay_rate' = 0\.01, a key {optimizer} never reads; it reads 'weight_decay', "
        rf"which is {value} in that group \(2 such keys in all\)" + CAUSE + "another optimizer's key names",
    ):
        checks.check_decay_groups(fresh(ref.TransformerClassifier), groups)


def test_a_key_close_to_one_torch_reads_is_caught_and_other_keys_are_reported() -> None:
    model = fresh(ref.TransformerClassifier)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]

    def misspelled(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW([{"params": decay, "weight_decy": 0.1}, {"params": rest, "weight_decay": 0.0}])

    with pytest.raises(InvariantViolation, match=r"'weight_decy' = 0\.1, a key AdamW never reads; it reads "):
        checks.check_decay_groups(model, misspelled)
    passed = checks.check_decay_groups(model, styles.timm_layer_decay_groups)
    assert passed.detail.endswith("group keys the optimizer does not read: lr_scale")


def test_nothing_decaying_fails_only_when_a_decay_is_expected() -> None:
    model = fresh(ref.TransformerClassifier)
    with pytest.raises(
        InvariantViolation,
        match=r"weight_decay is 0 in every one of the 2 parameter groups \(28 parameters\), but expect_decay=True"
        + CAUSE
        + "never reached the groups",
    ):
        checks.check_decay_groups(model, styles.buggy_hf_groups_config_default, expect_decay=True)
    for expect in (None, False):
        passed = checks.check_decay_groups(model, styles.buggy_hf_groups_config_default, expect_decay=expect)
        assert "none decays" in passed.detail


@pytest.mark.parametrize("bad", [1, "yes", 0.0])
def test_expect_decay_must_be_a_bool_or_none(bad: Any) -> None:
    with pytest.raises(TypeError, match=rf"expect_decay must be True .* \(got {bad!r}\)"):
        checks.check_decay_groups(fresh(ref.TransformerClassifier), ref.nanogpt_groups, expect_decay=bad)


def test_an_optimizer_without_defaults_is_judged_by_its_groups_only() -> None:
    model = fresh(ref.TransformerClassifier)
    real = ref.nanogpt_groups(model)

    class Duck:
        def __init__(self) -> None:
            self.param_groups = [dict(g, note="mine") for g in real.param_groups]

    passed = checks.check_decay_groups(model, Duck())
    assert "does not read" not in passed.detail
