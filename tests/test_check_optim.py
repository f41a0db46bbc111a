"""rnnreg.testing.optim_checks: gradient clipping by global norm, decoupled and coupled weight decay, and the
weight-decay groups, each passing PyTorch's own and hand-written correct code and failing the mistakes public code
made, each with its cause.

Decay groups are judged by what the optimizer reads, not by what its groups say: groups written for another
optimizer's key names (BERT's ``weight_decay_rate``) are silently kept by torch, which decays every group by its own
default, and are caught with the key named. A decay of 0 in every group fails when the user says a decay is
configured (``expect_decay=True``) and passes otherwise. Keys other tools read (timm's ``lr_scale``) pass and are
reported.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import CAUSE, fresh
from reference_models import buggy, styles
from reference_models import correct as ref
from reference_models.cases import (
    _grads,
    adam,
    adam_l2_from_squared_norm,
    adamw,
    adamw_without_lr,
    clip_always_rescales,
    clip_crashes_on_missing_grad,
    clip_creates_missing_grads,
    clip_norm_then_value,
    clip_per_tensor,
    clip_removes_grads,
    clip_returns_nothing,
    sgd_momentum,
)
from torch import Tensor, nn

from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation

# ---------------------------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------------------------


def clip_returns_post_norm(params: list[Tensor], max_norm: float) -> Tensor:
    nn.utils.clip_grad_norm_(params, max_norm)
    return nn.utils.get_total_norm(_grads(params))


def clip_by_mean_square_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Total norm taken as the root-mean-square of the per-tensor norms (a mean where a sum belongs)."""
    norm = nn.utils.get_total_norm(_grads(params))
    wrong = torch.stack([g.norm() for g in _grads(params)]).pow(2).mean().sqrt()
    for g in _grads(params):
        g.mul_(torch.clamp(max_norm / wrong, max=1.0))
    return norm


def clip_returns_python_float(params: list[Tensor], max_norm: float) -> float:
    return float(nn.utils.clip_grad_norm_(params, max_norm))


def clip_returns_squared_norm(params: list[Tensor], max_norm: float) -> Tensor:
    return nn.utils.clip_grad_norm_(params, max_norm) ** 2


def test_clip_grad_norm_passes() -> None:
    checks.check_gradient_clipping(nn.utils.clip_grad_norm_)


@pytest.mark.parametrize(
    "clip_fn", [ref.clip_foreach, ref.clip_foreach_by_hand, ref.clip_by_hand], ids=lambda f: f.__name__
)
def test_reference_clips_pass(clip_fn: Callable[..., Any]) -> None:
    checks.check_gradient_clipping(clip_fn)


def test_clip_returning_the_norm_as_a_python_float_passes() -> None:
    checks.check_gradient_clipping(clip_returns_python_float)


@pytest.mark.parametrize(
    ("clip_fn", "match"),
    [
        (clip_per_tensor, "each tensor's own norm is <= max_norm(.|\n)*like tf.keras clipnorm"),
        (clip_returns_post_norm, "that is the post-clip norm"),
        (clip_returns_nothing, "returned None instead of the pre-clip global norm"),
        (clip_always_rescales, "changed although the norm is below max_norm"),
        (clip_crashes_on_missing_grad, "one .grad = None"),
        (clip_removes_grads, "gradients were removed or reshaped"),
        (clip_norm_then_value, r"gradient \d was scaled by .* the direction changed"),
        (clip_by_mean_square_norm, "the scaling factor is not max_norm / total_norm"),
        (buggy.clip_consumes_generator_twice, "parameters as a generator" + CAUSE + "generator is consumed twice"),
        (buggy.clip_to_half, r"0\.5x max_norm: over-clipped" + CAUSE + "scaled by more than max_norm / total_norm"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_clipping_bugs_fail_with_their_diagnosis(clip_fn: Callable[[list[Tensor], float], Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_gradient_clipping(clip_fn)


def test_clip_failure_names_max_norm_and_the_pre_clip_norm() -> None:
    # The first case's tensors have norms 6, 4, 5, 3 (x max_norm = 1): pre-clip norm sqrt(86) = 9.27362.
    with pytest.raises(InvariantViolation, match=r"max_norm=1\.0, pre-clip norm 9\.27362\] clip_fn returned None"):
        checks.check_gradient_clipping(clip_returns_nothing)


def test_a_frozen_parameter_must_keep_grad_none() -> None:
    with pytest.raises(InvariantViolation, match=r"a parameter whose \.grad was None got a gradient"):
        checks.check_gradient_clipping(clip_creates_missing_grads)


def test_a_wrong_return_value_is_not_called_the_post_clip_norm() -> None:
    with pytest.raises(InvariantViolation, match="instead of the pre-clip global norm") as err:
        checks.check_gradient_clipping(clip_returns_squared_norm)
    assert "post-clip" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# Weight decay: decoupled (AdamW) or coupled (L2 in the gradient)
# ---------------------------------------------------------------------------------------------------------------


def sgd(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


class AdamWDecayAfterUpdate(torch.optim.Adam):
    """Hand-written AdamW that decays the already-updated weights."""

    def __init__(self, params: list[Tensor], lr: float, wd: float) -> None:
        super().__init__(params, lr=lr)
        self.wd = wd

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * self.wd)


def adamw_ignoring_wd(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def adamw_decaying_twice(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=2 * wd)


def sgd_l2_doubled(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=2 * wd)


@pytest.mark.parametrize(
    ("make", "decoupled"),
    [(adamw, True), (sgd, True), (adam, False), (sgd, False), (sgd_momentum, False), (AdamWDecayAfterUpdate, True)],
    ids=["AdamW-decoupled", "SGD-decoupled", "Adam-coupled", "SGD-coupled", "SGD-momentum-coupled", "decay-after"],
)
def test_pytorch_optimizers_pass_weight_decay_check(make: Callable[..., Any], decoupled: bool) -> None:
    checks.check_weight_decay(make, decoupled=decoupled)


@pytest.mark.parametrize(
    ("make", "decoupled"),
    [(ref.hand_adamw, True), (ref.hand_adamw_decay_after, True), (ref.hand_sgd_l2, False)],
    ids=["adamw-by-hand", "adamw-decay-after-update", "sgd-momentum-l2-by-hand"],
)
def test_hand_written_optimizers_pass_weight_decay(make: Callable[..., Any], decoupled: bool) -> None:
    checks.check_weight_decay(make, decoupled=decoupled)


@pytest.mark.parametrize(
    ("make", "decoupled", "match"),
    [
        (adam, True, "moved by about lr(.|\n)*Adam with coupled L2"),  # "AdamW" implemented as coupled L2
        (adamw_without_lr, True, "not multiplied by lr"),
        (sgd_momentum, True, "at step 2 the update differs"),  # the decay enters the momentum buffer
        (adamw, False, "decays p directly"),
        (adam_l2_from_squared_norm, False, "the weights differ"),  # Adam's first step is sign-like: step 2,
        (adamw_ignoring_wd, True, "nothing decayed"),
        (adamw_decaying_twice, True, r"the decay factor is not 1 - lr\*wd"),
        (sgd_l2_doubled, False, "at step 1 the weights differ"),
    ],
    ids=[
        "Adam-as-AdamW",
        "AdamW-no-lr",
        "SGD-momentum",
        "AdamW-as-L2",
        "L2-doubled",
        "wd-ignored",
        "decayed-twice",
        "SGD-L2-doubled",
    ],
)
def test_weight_decay_bugs_fail_with_their_diagnosis(make: Callable[..., Any], decoupled: bool, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_weight_decay(make, decoupled=decoupled)


def test_weight_decay_needs_a_declared_kind() -> None:
    with pytest.raises(TypeError, match="decoupled must be True"):
        checks.check_weight_decay(adamw, decoupled=None)  # type: ignore[arg-type]


def test_weight_decay_result_names_the_kind_it_verified() -> None:
    decoupled = checks.check_weight_decay(adamw, decoupled=True)
    coupled = checks.check_weight_decay(adam, decoupled=False)
    assert decoupled.invariant.startswith("decoupled") and decoupled.detail.startswith("decoupled")
    assert coupled.invariant.startswith("coupled") and coupled.detail.startswith("coupled")


# ---------------------------------------------------------------------------------------------------------------
# Decay groups: the recipes pass, planted bugs are caught with their cause
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups",
    [styles.bert_groups, ref.nanogpt_groups, ref.hf_trainer_groups, ref.timm_style_groups],
    ids=lambda f: f.__name__,
)
def test_decay_recipes_pass_when_a_decay_is_expected(groups: Callable[[nn.Module], Any]) -> None:
    checks.check_decay_groups(fresh(ref.TransformerClassifier), groups, expect_decay=True)


@pytest.mark.parametrize("groups", [ref.nanogpt_groups, ref.named_groups_sparing_embeddings], ids=lambda f: f.__name__)
def test_reference_decay_groups_pass(groups: Callable[[nn.Module], Any]) -> None:
    passed = checks.check_decay_groups(fresh(ref.TransformerClassifier), groups)
    assert "biases and gains spared" in passed.detail


@pytest.mark.parametrize(
    ("build", "groups", "own"),
    [
        (ref.ClassTokenEncoder, ref.timm_style_groups, "own parameters: no decay"),  # class token, position table
        (ref.ContextAttentionGRU, ref.hf_trainer_groups, "own parameters: decay"),  # a 1-D context vector
        (ref.ContextAttentionGRU, ref.timm_style_groups, "own parameters: no decay"),
    ],
    ids=["timm-class-token", "hf-context-vector", "timm-context-vector"],
)
def test_libraries_conventions_for_the_models_own_parameters_pass(
    build: Callable[[], nn.Module], groups: Callable[[nn.Module], Any], own: str
) -> None:
    # timm spares a class token and a position table by name, Hugging Face decays a 1-D context vector: both are
    # conventions, not bugs; the PASS says which one the groups follow.
    passed = checks.check_decay_groups(fresh(build), groups)
    assert passed.detail.endswith(own), passed.detail


def test_decay_groups_without_any_decay_pass_and_say_so() -> None:
    model = fresh(ref.TransformerClassifier)
    passed = checks.check_decay_groups(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert "none decays" in passed.detail


def test_decay_group_pass_counts_the_decaying_parameters() -> None:
    model = fresh(ref.TransformerClassifier)
    matrices = sum(1 for p in model.parameters() if p.dim() >= 2)
    total = sum(1 for _ in model.parameters())
    passed = checks.check_decay_groups(model, ref.nanogpt_groups)
    assert passed.invariant == "weight-decay groups"
    assert passed.detail == (
        f"{matrices} of {total} parameters decay (all matrices), biases and gains spared; embeddings: decay"
    )


def test_groups_without_a_weight_decay_key_do_not_decay() -> None:
    model = fresh(ref.MaskedMeanGRU)
    groups = types.SimpleNamespace(param_groups=[{"params": list(model.parameters())}])
    passed = checks.check_decay_groups(model, groups)
    assert passed.detail == f"{len(list(model.parameters()))} parameters, none decays (weight_decay = 0 in every group)"


def test_nested_embedding_names_are_recognized() -> None:
    # The embedding lives one module down: its parameter is "inner.table.weight", and it may go undecayed.
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Module()
            self.inner.table = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 2)

    model = fresh(Nested)
    opt = torch.optim.AdamW(
        [
            {"params": [model.head.weight], "weight_decay": 0.1},
            {"params": [model.inner.table.weight, model.head.bias], "weight_decay": 0.0},
        ]
    )
    passed = checks.check_decay_groups(model, opt)
    assert passed.detail.endswith("embeddings: no decay") and passed.detail.startswith("1 of 3")


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (buggy.decay_everything, "biases and norm parameters .* decay" + CAUSE + "one group for all parameters"),
        (buggy.spare_only_bias_names, r"norm.*weight.*decay" + CAUSE + "misses the norm gains"),
        (buggy.spare_every_weight, "do not" + CAUSE + "inverted rule"),
        (buggy.spare_matrices, "do not" + CAUSE + "inverted rule"),
        (buggy.drops_the_head, r"\['head.weight', 'head.bias'\] are in no parameter group"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_decay_group_bugs_are_caught_with_their_cause(groups: Callable[[nn.Module], Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_decay_groups(fresh(ref.TransformerClassifier), groups)


def spare_head_bias_only(model: nn.Module) -> torch.optim.Optimizer:
    """A hand-made list of no-decay names that covers one bias and decays the other 1-D parameters."""
    decay = [p for n, p in model.named_parameters() if n != "head.bias"]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": [model.head.bias], "weight_decay": 0.0}]  # type: ignore[list-item]
    )


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (spare_head_bias_only, "misses some biases or norm parameters"),
        (lambda model: torch.optim.AdamW(model.parameters(), weight_decay=0.1), "decays every bias"),
    ],
)
def test_decay_group_failures_carry_the_invariant_and_the_decay_value(groups: Any, match: str) -> None:
    with pytest.raises(
        InvariantViolation, match=r"^weight-decay groups: biases and norm parameters .* decay \(weight_decay 0\.1\)"
    ) as err:
        checks.check_decay_groups(fresh(ref.TransformerClassifier), groups)
    assert match in str(err.value)


def test_a_rule_sparing_only_the_name_bias_is_told_it_misses_the_rnn_biases() -> None:
    def spare_exact_bias(model: nn.Module) -> torch.optim.Optimizer:
        named = list(model.named_parameters())
        return torch.optim.AdamW(
            [
                {"params": [p for n, p in named if not n.endswith(".bias")], "weight_decay": 0.1},
                {"params": [p for n, p in named if n.endswith(".bias")], "weight_decay": 0.0},
            ]
        )

    with pytest.raises(InvariantViolation, match=r"\['rnn.bias_ih_l0', 'rnn.bias_hh_l0'\](.|\n)*misses the RNN biases"):
        checks.check_decay_groups(fresh(ref.ContextAttentionGRU), spare_exact_bias)


def test_a_parameter_in_two_groups_is_caught() -> None:
    model = fresh(ref.MaskedMeanGRU)

    twice = types.SimpleNamespace(
        param_groups=[{"params": list(model.parameters()), "weight_decay": 0.0}, {"params": [model.head.bias]}]
    )

    with pytest.raises(InvariantViolation, match=r"\['head.bias'\] are in more than one group"):
        checks.check_decay_groups(model, twice)


# ---------------------------------------------------------------------------------------------------------------
# Decay groups: what the optimizer reads, and the arguments
# ---------------------------------------------------------------------------------------------------------------


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


def test_decay_groups_take_an_optimizer_or_a_factory_and_report_embeddings() -> None:
    model = fresh(ref.TransformerClassifier)
    passed = checks.check_decay_groups(model, ref.named_groups_sparing_embeddings(model))
    assert "embeddings: decay, no decay" in passed.detail  # the position table decays, the token table does not
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        checks.check_decay_groups(lambda: 0, ref.nanogpt_groups)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        checks.check_decay_groups(model, 3)
