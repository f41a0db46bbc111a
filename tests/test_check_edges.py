"""Edges of the issue-10 checks: argument errors, rarer diagnoses, and the numbers their messages report."""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models import correct as ref
from torch import Tensor, nn

from rnnreg.testing import checks, regularizers
from rnnreg.testing.checks import InvariantViolation

CAUSE = r"(.|\n)*Likely cause: .*"


def fresh(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout
# ---------------------------------------------------------------------------------------------------------------


class EvalDroppingEmbedding(ref.AWDEmbeddingDropout):
    def forward(self, tokens: Tensor) -> Tensor:
        mask = self.embed.weight.new_empty(ref.VOCAB, 1).bernoulli_(1 - self.p) / (1 - self.p)
        return F.embedding(tokens, self.embed.weight * mask)


class CachedEmbeddingMask(ref.AWDEmbeddingDropout):
    def forward(self, tokens: Tensor) -> Tensor:
        if not self.training:
            return self.embed(tokens)
        if not hasattr(self, "mask"):
            self.mask = self.embed.weight.new_empty(ref.VOCAB, 1).bernoulli_(1 - self.p) / (1 - self.p)
        return F.embedding(tokens, self.embed.weight * self.mask)


class NoisyEmbedding(ref.AWDEmbeddingDropout):
    def forward(self, tokens: Tensor) -> Tensor:
        out = self.embed(tokens)
        return out * 1.7 if self.training else out


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (EvalDroppingEmbedding, "two eval passes under different seeds differ" + CAUSE + "training=True"),
        (CachedEmbeddingMask, r"\d+ train-mode calls applied the same mask" + CAUSE + "cached"),
        (NoisyEmbedding, r"values \[1\.7" + CAUSE + "does more than mask"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_more_embedding_dropout_bugs(build: Callable[[float], nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        regularizers.check_embedding_dropout(fresh(functools.partial(build, 0.3)), p=0.3)


def test_embedding_dropout_reports_how_masks_are_shared_and_the_rate() -> None:
    per_batch = regularizers.check_embedding_dropout(fresh(functools.partial(ref.AWDEmbeddingDropout, 0.3)), p=0.3)
    per_seq = regularizers.check_embedding_dropout(
        fresh(functools.partial(ref.PerSequenceEmbeddingDropout, 0.3)), p=0.3
    )
    assert "(per batch)" in per_batch.detail and "(per sequence)" in per_seq.detail
    assert "for p=0.3" in per_batch.detail


def test_embedding_dropout_takes_a_plain_function_with_vocab_size() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(12, 4)
    state = {"training": True}

    def layer(tokens: Tensor) -> Tensor:
        return ref.AWDEmbeddingDropout.forward(holder, tokens)  # type: ignore[arg-type]

    holder = type("Holder", (), {"p": 0.3, "embed": table, "training": True})()
    del state
    with pytest.raises(InvariantViolation, match="two eval passes"):  # a function has no train/eval switch
        regularizers.check_embedding_dropout(layer, p=0.3, vocab_size=12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p": 0.0}, ValueError, r"p must be .* in \(0, 1\)"),
        ({"p": 1.0}, ValueError, "p must be"),
        ({"p": True}, ValueError, "p must be"),
        ({"p": 0.3, "vocab_size": 2}, ValueError, "vocab_size must be >= 3"),
    ],
)
def test_embedding_dropout_argument_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        regularizers.check_embedding_dropout(ref.AWDEmbeddingDropout(0.3), **kwargs)


def test_embedding_dropout_needs_a_vocab_size_without_an_embedding() -> None:
    with pytest.raises(ValueError, match="pass vocab_size"):
        regularizers.check_embedding_dropout(lambda tokens: tokens[..., None].float(), p=0.3)
    with pytest.raises(TypeError, match="callable"):
        regularizers.check_embedding_dropout(3, p=0.3)  # type: ignore[arg-type]


def test_embedding_dropout_output_must_be_b_t_d() -> None:
    with pytest.raises(TypeError, match=r"\[B, T, D\]; in eval mode it returned \(32, 60\)"):
        regularizers.check_embedding_dropout(lambda tokens: tokens.float(), p=0.3, vocab_size=10)


# ---------------------------------------------------------------------------------------------------------------
# Weight drop
# ---------------------------------------------------------------------------------------------------------------


class KeepProbWeightDrop(ref.FunctionalWeightDrop):
    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        dropped = {
            name: w * torch.empty_like(w).bernoulli_(self.p) / (1 - self.p)
            for name, w in self.rnn.named_parameters()
            if name.startswith("weight_hh")
        }
        return torch.func.functional_call(self.rnn, dropped, (x,))


def test_weight_drop_with_p_as_keep_probability_is_caught() -> None:
    with pytest.raises(InvariantViolation, match=r"rate 0\.[6-8]\d*\), outside p=0\.3" + CAUSE + "keep probability"):
        regularizers.check_weight_drop(fresh(functools.partial(KeepProbWeightDrop, 0.3)), p=0.3)


def test_weight_drop_reports_every_rate_and_the_number_of_passes() -> None:
    passed = regularizers.check_weight_drop(fresh(functools.partial(ref.FunctionalWeightDrop, 0.3)), p=0.3)
    # GRU(5, 4): weight_hh is 12 x 4 = 48 entries, so ~50 expected drops take ceil(50 / (0.3 * 48)) = 4 passes.
    assert "over 4 passes for p=0.3" in passed.detail
    assert passed.detail.count("rnn.weight_hh") == 4


def test_weight_drop_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        regularizers.check_weight_drop(lambda x: x, p=0.3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no trainable parameter named like 'weight_hh'"):
        regularizers.check_weight_drop(nn.Linear(3, 3), p=0.3)
    holder = nn.Module()
    holder.weight_hh = nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="pass input_size"):
        regularizers.check_weight_drop(holder, p=0.3)


def test_weight_drop_input_size_comes_from_weight_ih_without_an_rnn_module() -> None:
    # PerForwardStepLoop holds a GRUCell (not nn.RNNBase): the size is read from weight_ih.
    regularizers.check_weight_drop(fresh(functools.partial(ref_step_loop(), 0.3)), p=0.3)


def ref_step_loop() -> type[nn.Module]:
    from reference_models.buggy import PerForwardStepLoop

    return PerForwardStepLoop


# ---------------------------------------------------------------------------------------------------------------
# Decay groups, AMP steps, label smoothing by value, locked dropout, pad content
# ---------------------------------------------------------------------------------------------------------------


def test_decay_groups_take_an_optimizer_or_a_factory_and_report_embeddings() -> None:
    model = fresh(ref.TransformerClassifier)
    passed = regularizers.check_decay_groups(model, ref.named_groups_sparing_embeddings(model))
    assert "embeddings: decay, no decay" in passed.detail  # the position table decays, the token table does not
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        regularizers.check_decay_groups(lambda: 0, ref.nanogpt_groups)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        regularizers.check_decay_groups(model, 3)


def step_without_unscale(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)).backward()
    optimizer.step()
    scaler.update()
    optimizer.zero_grad()


def step_skipping_everything(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)).backward()
    scaler.unscale_(optimizer)
    scaler.update()
    optimizer.zero_grad()


def step_sets_scale_by_hand(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update(new_scale=1024.0)
    optimizer.zero_grad()


def step_never_zeroes(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    scaler.scale(F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (step_without_unscale, r"raised AssertionError on finite step 1" + CAUSE + r"optimizer\.step\(\) is called"),
        (step_skipping_everything, "finite step 1 did not change the parameters" + CAUSE + r"never called\.\n"),
        (step_sets_scale_by_hand, "scale is 1024, expected 131072" + CAUSE + "set or updated by hand"),
        (step_never_zeroes, "finite step 3 did not change" + CAUSE + "never cleared"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_more_scaler_protocol_bugs(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_scaler(step)


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (step_skipping_everything, "did not move"),
        (step_without_unscale, r"raised AssertionError on a finite step"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_amp_clipping_diagnoses_a_missing_step(step: Callable[..., Any], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_amp_clipping(step)


def test_amp_steps_must_be_callable() -> None:
    for check in (checks.check_amp_clipping, checks.check_amp_scaler):
        with pytest.raises(TypeError, match="must be callable"):
            check(3)  # type: ignore[arg-type]


def test_a_step_that_raises_something_else_propagates() -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checks.check_amp_scaler(broken)


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


def test_pad_content_rejects_no_extra_columns() -> None:
    with pytest.raises(ValueError, match="extra must be >= 1"):
        checks.check_pad_content(fresh(ref.PackedGRU), _batch(), extra=0)


def _batch() -> Any:
    from rnnreg.batch import collate

    return collate([([3, 4, 5], 0), ([6], 1)])


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
        regularizers.check_decay_groups(fresh(ref.TransformerClassifier), groups)
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
        regularizers.check_decay_groups(fresh(ref.ContextAttentionGRU), spare_exact_bias)


def test_decay_group_pass_counts_the_decaying_parameters() -> None:
    model = fresh(ref.TransformerClassifier)
    matrices = sum(1 for p in model.parameters() if p.dim() >= 2)
    total = sum(1 for _ in model.parameters())
    passed = regularizers.check_decay_groups(model, ref.nanogpt_groups)
    assert passed.invariant == "weight-decay groups"
    assert passed.detail == (
        f"{matrices} of {total} parameters decay (all matrices), biases and gains spared; embeddings: decay"
    )


def test_groups_without_a_weight_decay_key_do_not_decay() -> None:
    model = fresh(ref.MaskedMeanGRU)
    groups = types.SimpleNamespace(param_groups=[{"params": list(model.parameters())}])
    passed = regularizers.check_decay_groups(model, groups)
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
    passed = regularizers.check_decay_groups(model, opt)
    assert passed.detail.endswith("embeddings: no decay") and passed.detail.startswith("1 of 3")


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


def bf16_step_without_scaler(model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float) -> None:
    """bf16 needs no loss scaling: the scaler is ignored, and a non-finite norm skips the step by hand."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if torch.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad()


def bf16_step_without_scaler_or_guard(
    model: nn.Module, batch: Any, optimizer: Any, scaler: Any, max_norm: float
) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad()


def test_a_step_without_loss_scaling_is_held_only_to_skipping_inf_steps() -> None:
    passed = checks.check_amp_scaler(bf16_step_without_scaler)
    assert "uses no loss scaling" in passed.detail
    checks.check_amp_clipping(bf16_step_without_scaler)
    with pytest.raises(InvariantViolation, match="held an inf changed the parameters"):
        checks.check_amp_scaler(bf16_step_without_scaler_or_guard)


def _pair(check: Callable[..., Any], good: Any, bad: Any, **kwargs: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    return functools.partial(check, good, **kwargs), functools.partial(check, bad, **kwargs)


def _layer(build: Callable[[float], nn.Module]) -> nn.Module:
    return fresh(functools.partial(build, 0.3))


def _named_pairs() -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    from reference_models import buggy

    model = fresh(ref.TransformerClassifier)
    return {
        "amp-scaler": _pair(checks.check_amp_scaler, ref.amp_step_bf16, buggy.step_optimizer_not_scaler),
        "amp-scaler-update": _pair(checks.check_amp_scaler, ref.amp_step_bf16, buggy.step_never_updates),
        "amp-scaler-crash": _pair(checks.check_amp_scaler, ref.amp_step_bf16, buggy.step_crashes_on_overflow),
        "amp-scaler-skips": _pair(checks.check_amp_scaler, ref.amp_step_bf16, step_skipping_everything),
        "amp-clipping-twice": _pair(checks.check_amp_clipping, ref.amp_step_bf16, buggy.step_twice),
        "amp-clipping-missing": _pair(checks.check_amp_clipping, ref.amp_step_bf16, step_without_unscale),
        "embedding-dropout": _pair(
            regularizers.check_embedding_dropout,
            _layer(ref.AWDEmbeddingDropout),
            _layer(buggy.PositionEmbeddingDropout),
            p=0.3,
        ),
        "embedding-dropout-eval": _pair(
            regularizers.check_embedding_dropout, _layer(ref.AWDEmbeddingDropout), _layer(EvalDroppingEmbedding), p=0.3
        ),
        "embedding-dropout-inplace": _pair(
            regularizers.check_embedding_dropout,
            _layer(ref.AWDEmbeddingDropout),
            _layer(buggy.InPlaceEmbeddingDropout),
            p=0.3,
        ),
        "weight-drop-rate": _pair(
            regularizers.check_weight_drop, _layer(ref.FunctionalWeightDrop), _layer(buggy.ForwardOnlyWeightDrop), p=0.3
        ),
        "weight-drop-surgery": _pair(
            regularizers.check_weight_drop, _layer(ref.FunctionalWeightDrop), _layer(buggy.SurgeryWeightDrop), p=0.3
        ),
        "weight-drop-cached": _pair(
            regularizers.check_weight_drop, _layer(ref.FunctionalWeightDrop), _layer(buggy.CachedMaskWeightDrop), p=0.3
        ),
        "weight-drop-detached": _pair(
            regularizers.check_weight_drop, _layer(ref.FunctionalWeightDrop), _layer(buggy.DetachedWeightDrop), p=0.3
        ),
        "weight-drop-eval": _pair(
            regularizers.check_weight_drop,
            _layer(ref.FunctionalWeightDrop),
            _layer(buggy.EvalDroppingWeightDrop),
            p=0.3,
        ),
        "decay-groups-vectors": (
            functools.partial(regularizers.check_decay_groups, model, ref.nanogpt_groups),
            functools.partial(regularizers.check_decay_groups, model, buggy.decay_everything),
        ),
        "decay-groups-inverted": (
            functools.partial(regularizers.check_decay_groups, model, ref.nanogpt_groups),
            functools.partial(regularizers.check_decay_groups, model, buggy.spare_matrices),
        ),
        "decay-groups-missing": (
            functools.partial(regularizers.check_decay_groups, model, ref.nanogpt_groups),
            functools.partial(regularizers.check_decay_groups, model, buggy.drops_the_head),
        ),
        "clip-generator": _pair(checks.check_gradient_clipping, ref.clip_foreach, buggy.clip_consumes_generator_twice),
        "clip-over": _pair(checks.check_gradient_clipping, ref.clip_foreach, buggy.clip_to_half),
        "locked-cached": _pair(
            checks.check_locked_dropout, ref.HandLockedDropout(0.3), buggy.CachedLockedDropout(0.3), p=0.3
        ),
    }


@pytest.mark.parametrize("name", list(_named_pairs()))
def test_each_new_failure_is_reported_under_its_invariant_with_a_cause_and_a_fix(name: str) -> None:
    passes, fails = _named_pairs()[name]
    passed = passes()
    assert isinstance(passed.invariant, str) and passed.invariant and passed.detail
    with pytest.raises(InvariantViolation) as err:
        fails()
    message = str(err.value)
    assert message.startswith(passed.invariant + ": ")
    cause = re.search(r"\n  Likely cause: (.+)\.\n  Fix: (.+)\.$", message, flags=re.S)
    assert cause is not None and cause.group(1) != "None" and cause.group(2) != "None"


class RateWeightDrop(ref.FunctionalWeightDrop):
    """Drops weight_hh entries with its own rate `q`, whatever p the check is told."""

    def __init__(self, p: float, q: float) -> None:
        super().__init__(p)
        self.q = q

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        dropped = {n: F.dropout(w, self.q, training=True) for n, w in self.rnn.named_parameters() if "weight_hh" in n}
        return torch.func.functional_call(self.rnn, dropped, (x,))


@pytest.mark.parametrize(
    ("q", "match"),
    [
        (0.1, r"\(rate 0\.(0|1)\d*\), outside p=0\.3" + CAUSE + "fewer entries than p are dropped"),
        (0.7, r"\(rate 0\.(6|7)\d*\), outside p=0\.3" + CAUSE + "p used as the keep probability"),
    ],
    ids=["too-few", "keep-probability"],
)
def test_weight_drop_at_another_rate_is_caught_with_the_rate_it_drew(q: float, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        regularizers.check_weight_drop(fresh(lambda: RateWeightDrop(0.3, q)), p=0.3)


LAYER_CHECKS: list[tuple[Callable[[], nn.Module], Callable[[nn.Module], Any]]] = [
    (lambda: ref.HandLockedDropout(0.3), lambda m: checks.check_locked_dropout(m, p=0.3)),
    (lambda: ref.AWDEmbeddingDropout(0.3), lambda m: regularizers.check_embedding_dropout(m, p=0.3)),
    (lambda: ref.FunctionalWeightDrop(0.3), lambda m: regularizers.check_weight_drop(m, p=0.3)),
]


@pytest.mark.parametrize("training", [True, False], ids=["given-in-train-mode", "given-in-eval-mode"])
@pytest.mark.parametrize(("build", "check"), LAYER_CHECKS, ids=["locked", "embedding", "weight-drop"])
def test_layer_checks_set_the_modes_they_need_and_give_the_layer_back_as_it_was(
    build: Callable[[], nn.Module], check: Callable[[nn.Module], Any], training: bool
) -> None:
    layer = fresh(build)
    layer.train(training)
    before = {n: t.detach().clone() for n, t in layer.state_dict().items()}
    check(layer)  # passes from either mode: it switches to train mode for the dropout and to eval for identity
    assert all(m.training is training for m in layer.modules())
    assert all(torch.equal(before[n], t) for n, t in layer.state_dict().items())


def test_label_smoothing_counts_every_failing_case_not_just_the_first() -> None:
    # eps ignored: plain cross-entropy is right for the 4 cases with eps = 0 and wrong for the other 8 (K in
    # 2, 3, 5, 10 x eps in 0.1, 0.3).
    def eps_ignored(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets)

    with pytest.raises(InvariantViolation, match=r"\b8 of 12 cases differ from soft-target cross-entropy"):
        checks.check_label_smoothing(eps_ignored)


def test_a_step_that_raises_a_bare_runtime_error_propagates_it_unchanged() -> None:
    # Only GradScaler's own errors are diagnosed; anything else is the user's bug and reaches them as raised.
    def broken(*args: Any) -> None:
        raise RuntimeError()

    with pytest.raises(RuntimeError) as err:
        checks.check_amp_scaler(broken)
    assert type(err.value) is RuntimeError and str(err.value) == ""


class ProjectionRegisteredLast(ref.FunctionalWeightDrop):
    """A 10 -> 5 projection in front of the GRU, but registered after it: the input size cannot be read off."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.proj = nn.Linear(10, 5)

    def forward(self, x: Tensor) -> Any:
        return super().forward(self.proj(x))


def test_an_explicit_input_size_overrides_the_one_read_from_the_layers() -> None:
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # read from the GRU: 5, wrong here
        regularizers.check_weight_drop(fresh(lambda: ProjectionRegisteredLast(0.3)), p=0.3)
    regularizers.check_weight_drop(fresh(lambda: ProjectionRegisteredLast(0.3)), p=0.3, input_size=10)
