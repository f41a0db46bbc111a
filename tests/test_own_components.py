"""rnnreg's own components pass rnnreg.testing's checks: the toolkit users run is the one the project lives by."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from helpers import fresh
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_models import correct as ref
from torch import nn

from rnnreg.batch import Batch, collate
from rnnreg.config import ModelConfig, TrainConfig
from rnnreg.layers import LockedDropout
from rnnreg.model import build_model
from rnnreg.step import loss_fn, make_optimizer, make_scaler, train_step
from rnnreg.testing import checks
from rnnreg.testing.strategies import model_configs, padded_batches

VOCAB, CLASSES = 30, 3


@settings(max_examples=10)
@given(cfg=model_configs(), batch=padded_batches(vocab_size=VOCAB, num_classes=CLASSES, max_batch=5, max_len=9))
def test_sequence_classifier_passes_every_model_check(cfg: ModelConfig, batch: Batch) -> None:
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB, CLASSES)
    checks.check_eval_deterministic(model, batch)
    checks.check_padding_invariance(model, batch)
    checks.check_batch_independence(model, batch)
    checks.check_amp_parity(model, batch)
    if any(getattr(cfg, name) > 0 for name in ("embed_p", "input_p", "weight_p", "output_p", "hidden_p")):
        checks.check_dropout_active(model, batch)


@given(p=st.sampled_from([0.1, 0.3, 0.6]))
def test_locked_dropout_layer_passes_the_locked_dropout_check(p: float) -> None:
    checks.check_locked_dropout(LockedDropout(p), p=p)


def test_project_clip_passes_the_clipping_check() -> None:
    # rnnreg clips inside train_step; the check drives it through a step on SGD(lr=1) and reads the update.
    def clip(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        from rnnreg.step import _clip

        return _clip(list(parameters), TrainConfig(clip="norm", max_norm=max_norm))

    checks.check_gradient_clipping(clip)


def test_project_loss_passes_the_label_smoothing_check() -> None:
    checks.check_label_smoothing(loss_fn)


def _optimizer(name: str, params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    holder = nn.Module()
    holder.weights = nn.ParameterList(params)  # make_optimizer takes a model; these are its matrices and vectors
    cfg = TrainConfig(optimizer=name, lr=lr, weight_decay=weight_decay, decay_bias_and_norm=True, momentum=0.0)
    return make_optimizer(holder, cfg)


def test_adamw_is_decoupled_and_adam_is_coupled() -> None:
    checks.check_weight_decay(functools.partial(_optimizer, "adamw"), decoupled=True)
    checks.check_weight_decay(functools.partial(_optimizer, "adam"), decoupled=False)


def test_train_step_passes_the_amp_clipping_check() -> None:
    def step(model, batch, optimizer, scaler, max_norm: float):
        cfg = TrainConfig(clip="norm", max_norm=max_norm, label_smoothing=0.0)
        return train_step(model, batch, optimizer, scaler, cfg)

    checks.check_amp_clipping(step)
    assert not make_scaler("cpu", "off").is_enabled()  # bf16 and fp32 need no loss scaling


def test_notebook_model_fails_dropout_active_as_the_notebook_did() -> None:
    # The user's model: nn.LSTM(dropout=0.3) with one layer. The check must catch the no-op dropout.
    cfg = ModelConfig(
        arch="notebook", embed_dim=8, hidden_dim=8, hidden_p=0.3, embed_p=0.0, input_p=0.0, weight_p=0.0, output_p=0.0
    )
    with pytest.warns(UserWarning, match="hidden_p"):
        model = build_model(cfg, VOCAB, CLASSES)
    batch = collate([([3, 4, 5, 6], 0), ([7, 8], 1), ([9, 10, 11], 2)])
    with pytest.raises(checks.InvariantViolation, match="dropout"):
        checks.check_dropout_active(model, batch)
    fixed = build_model(dataclasses.replace(cfg, hidden_p=0.0, input_p=0.3), VOCAB, CLASSES)
    checks.check_dropout_active(fixed, batch)
    checks.check_padding_invariance(fixed, batch)  # packing makes the notebook model padding-invariant


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_train_step_passes_amp_clipping_and_the_scaler_protocol_with_autocast_on_or_off(amp: str) -> None:
    def step(model, batch, optimizer, scaler, max_norm: float):
        cfg = TrainConfig(clip="norm", max_norm=max_norm, label_smoothing=0.0, amp=amp)
        return train_step(model, batch, optimizer, scaler, cfg)

    passed = checks.check_amp_clipping(step)
    assert ("ran in bfloat16" if amp == "bf16" else "ran in float32") in passed.detail
    checks.check_amp_scaler(step)


@pytest.mark.parametrize("decay_bias_and_norm", [False, True])
def test_project_param_groups_pass_the_decay_group_check_unless_told_to_decay_everything(
    decay_bias_and_norm: bool,
) -> None:

    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=8, hidden_dim=8), VOCAB, CLASSES)
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.01, decay_bias_and_norm=decay_bias_and_norm)
    if decay_bias_and_norm:  # the opt-in the config offers is exactly what the check reports
        with pytest.raises(checks.InvariantViolation, match="biases and norm parameters"):
            checks.check_decay_groups(model, make_optimizer(model, cfg))
    else:
        checks.check_decay_groups(model, make_optimizer(model, cfg))


def test_project_embedding_dropout_and_weight_drop_pass_their_checks() -> None:
    from rnnreg.layers import EmbeddingDropout, WeightDrop
    from rnnreg.testing import regularizers

    torch.manual_seed(0)
    table, drop = nn.Embedding(VOCAB, 6), EmbeddingDropout(VOCAB, 0.3)
    layer = nn.ModuleDict({"table": table, "drop": drop})
    regularizers.check_embedding_dropout(_EmbedThenDrop(layer), p=0.3)
    regularizers.check_weight_drop(
        WeightDrop(nn.GRU(5, 4, num_layers=2, batch_first=True, bidirectional=True), 0.3), p=0.3
    )


class _EmbedThenDrop(nn.Module):
    def __init__(self, parts: nn.ModuleDict) -> None:
        super().__init__()
        self.parts = parts

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.parts["drop"](self.parts["table"](tokens), tokens)


def test_rnnreg_param_groups_pass_the_decay_group_check() -> None:
    from rnnreg.config import TrainConfig
    from rnnreg.step import make_optimizer

    model = fresh(ref.TransformerClassifier)
    for decay_embedding in (True, False):
        cfg = TrainConfig(optimizer="adamw", weight_decay=0.01, decay_embedding=decay_embedding)
        checks.check_decay_groups(model, make_optimizer(model, cfg))
