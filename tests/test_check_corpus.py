"""No false alarms: every check passes correct code written in styles other than rnnreg's own.

The corpus (tests/reference_models/correct.py): GRU, packed and masked RNNs, a Transformer encoder with a
key-padding mask, Hugging Face-style and PackedSequence call conventions through adapters, hand-written optimizers,
foreach clipping, label smoothing through a KL divergence, AMP steps under CPU autocast in bf16 and fp16, and
locked / embedding / weight-drop layers written several ways.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference_models import correct as ref
from torch import nn

from rnnreg.batch import Batch, collate
from rnnreg.testing import adapters, checks, regularizers
from rnnreg.testing.suite import run_checks


def make_batch() -> Batch:
    """Six rows of lengths 7, 5, 3, 1, 6, 2 over the corpus vocabulary (T = 7)."""
    gen = torch.Generator().manual_seed(11)
    rows = [torch.randint(1, ref.VOCAB, (n,), generator=gen).tolist() for n in (7, 5, 3, 1, 6, 2)]
    return collate([(ids, i % ref.CLASSES) for i, ids in enumerate(rows)])


def fresh(cls: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls()


HF_CALL = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
PACKED_CALL = adapters.adapter(inputs=adapters.packed_tokens)

MODELS: dict[str, tuple[Callable[[], nn.Module], Any]] = {
    "packed-bigru": (ref.PackedGRU, None),
    "masked-mean-gru": (ref.MaskedMeanGRU, None),
    "last-state-lstm": (ref.LastStateLSTM, None),
    "transformer-key-padding": (ref.TransformerClassifier, None),
    "hf-style-adapter": (ref.HFStyleClassifier, HF_CALL),
    "packed-input-adapter": (ref.PackedInputClassifier, PACKED_CALL),
    "mask-from-pad-ids": (ref.MaskFromPadIds, None),
}
MODEL_CHECKS = [
    checks.check_eval_deterministic,
    checks.check_dropout_active,
    checks.check_padding_invariance,
    checks.check_batch_independence,
]


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("build", "call"), MODELS.values(), ids=MODELS.keys())
def test_reference_models_pass_every_model_check(
    build: Callable[[], nn.Module], call: Any, check: Callable[..., Any]
) -> None:
    check(fresh(build), make_batch(), call=call)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("build", "call"), MODELS.values(), ids=MODELS.keys())
def test_reference_models_pass_amp_parity_or_report_could_not_run(
    build: Callable[[], nn.Module], call: Any, dtype: torch.dtype
) -> None:
    # An unpadded nn.LSTM has no CPU kernel in low precision on CPUs without native bf16: that is "could not run"
    # (with torch's message), never a FAIL. Which models run depends on the CPU, so both outcomes are allowed here
    # and the parity bound is what must hold when it runs.
    try:
        checks.check_amp_parity(fresh(build), make_batch(), dtype=dtype, call=call)
    except checks.CheckCouldNotRun as e:
        assert "could not run" in str(e) and "LSTM" in type(fresh(build).rnn).__name__  # type: ignore[union-attr]


def test_pad_content_is_the_only_thing_a_model_masking_by_pad_ids_trips_and_the_suite_warns() -> None:
    rows = {r.name: r for r in run_checks(ref.MaskFromPadIds, num_classes=ref.CLASSES)}
    assert rows["padding_invariance"].status == "PASS"
    assert rows["pad_content"].status == "WARN" and "tokens != 0" in rows["pad_content"].detail
    assert not [r.name for r in rows.values() if r.status == "FAIL"]


@pytest.mark.parametrize(("build", "call"), [v for k, v in MODELS.items() if k != "mask-from-pad-ids"])
def test_reference_models_ignore_pad_content(build: Callable[[], nn.Module], call: Any) -> None:
    checks.check_pad_content(fresh(build), make_batch(), call=call)


@pytest.mark.parametrize(
    "clip_fn", [ref.clip_foreach, ref.clip_foreach_by_hand, ref.clip_by_hand], ids=lambda f: f.__name__
)
def test_reference_clips_pass(clip_fn: Callable[..., Any]) -> None:
    checks.check_gradient_clipping(clip_fn)


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
    ("make", "decoupled"),
    [(ref.hand_adamw, True), (ref.hand_adamw_decay_after, True), (ref.hand_sgd_l2, False)],
    ids=["adamw-by-hand", "adamw-decay-after-update", "sgd-momentum-l2-by-hand"],
)
def test_hand_written_optimizers_pass_weight_decay(make: Callable[..., Any], decoupled: bool) -> None:
    checks.check_weight_decay(make, decoupled=decoupled)


AMP_STEPS = [ref.amp_step_bf16, ref.amp_step_fp16, ref.amp_step_skips_by_norm]


@pytest.mark.parametrize("step", AMP_STEPS, ids=lambda f: f.__name__)
def test_amp_steps_under_autocast_pass_amp_clipping(step: Callable[..., Any]) -> None:
    passed = checks.check_amp_clipping(step)
    assert "ran in bfloat16" in passed.detail or "ran in float16" in passed.detail  # autocast really ran


@pytest.mark.parametrize("step", AMP_STEPS, ids=lambda f: f.__name__)
def test_amp_steps_under_autocast_pass_the_scaler_protocol(step: Callable[..., Any]) -> None:
    checks.check_amp_scaler(step)


@pytest.mark.parametrize("build", [ref.HandLockedDropout, ref.project_locked_dropout], ids=["by-hand", "rnnreg"])
def test_reference_locked_dropouts_pass(build: Callable[[float], nn.Module]) -> None:
    checks.check_locked_dropout(build(0.3), p=0.3)


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize(
    "build",
    [ref.AWDEmbeddingDropout, ref.PerSequenceEmbeddingDropout, ref.ProjectEmbeddingDropout],
    ids=["awd-per-batch", "gal-per-sequence", "rnnreg"],
)
def test_reference_embedding_dropouts_pass(build: Callable[[float], nn.Module], p: float) -> None:
    regularizers.check_embedding_dropout(build(p), p=p)


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize(
    "build",
    [ref.FunctionalWeightDrop, ref.ProjectedWeightDrop, ref.project_weight_drop],
    ids=["functional-call", "behind-a-projection", "rnnreg"],
)
def test_reference_weight_drops_pass(build: Callable[[float], nn.Module], p: float) -> None:
    passed = regularizers.check_weight_drop(fresh(functools.partial(build, p)), p=p)
    assert "reverse" in passed.detail  # both directions were measured


@pytest.mark.parametrize("groups", [ref.nanogpt_groups, ref.named_groups_sparing_embeddings], ids=lambda f: f.__name__)
def test_reference_decay_groups_pass(groups: Callable[[nn.Module], Any]) -> None:
    passed = regularizers.check_decay_groups(fresh(ref.TransformerClassifier), groups)
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
    passed = regularizers.check_decay_groups(fresh(build), groups)
    assert passed.detail.endswith(own), passed.detail


@pytest.mark.parametrize("build", [ref.ClassTokenEncoder, ref.ContextAttentionGRU], ids=lambda c: c.__name__)
def test_models_with_their_own_parameters_pass_every_model_check(build: Callable[[], nn.Module]) -> None:
    for check in MODEL_CHECKS:
        check(fresh(build), make_batch())


def test_rnnreg_param_groups_pass_the_decay_group_check() -> None:
    from rnnreg.config import TrainConfig
    from rnnreg.step import make_optimizer

    model = fresh(ref.TransformerClassifier)
    for decay_embedding in (True, False):
        cfg = TrainConfig(optimizer="adamw", weight_decay=0.01, decay_embedding=decay_embedding)
        regularizers.check_decay_groups(model, make_optimizer(model, cfg))


def test_the_whole_suite_passes_a_reference_setup() -> None:
    rows = run_checks(ref.TransformerClassifier, **ref.whole_suite_setup())
    assert {r.name: r.status for r in rows if r.status != "PASS"} == {}


@pytest.mark.parametrize(("build", "call"), [MODELS["hf-style-adapter"], MODELS["packed-input-adapter"]])
def test_unpadded_rows_run_through_the_adapter_too(build: Callable[[], nn.Module], call: Any) -> None:
    # make_batch has lengths 7, 5, 3, 1, 6, 2 with T = 7: five rows carry padding, and each runs alone unpadded.
    passed = checks.check_padding_invariance(fresh(build), make_batch(), call=call)
    assert passed.detail.endswith("for 5 rows run without padding")
