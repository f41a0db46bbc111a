"""rnnreg.step against PyTorch references: step order, clipping, skipped steps, loss scaling, weight-decay groups,
label smoothing, CPU autocast and determinism.

Every model here is a tiny one defined in this file (vocab 30, width 8, T <= 8) that follows the project's model
protocol ``model(tokens, lengths) -> logits``; rnnreg.model is deliberately not imported, so these tests pin the
step, not a particular architecture.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnreg.batch import PAD_ID, Batch, collate
from rnnreg.config import TrainConfig
from rnnreg.step import (
    autocast,
    loss_fn,
    low_precision_modules,
    make_optimizer,
    make_scaler,
    param_groups,
    probe_autocast,
    resolve_device,
    train_step,
)

VOCAB, EMBED, HIDDEN, CLASSES = 30, 8, 8, 3

seeds = st.integers(0, 2**31 - 1)
batch_sizes = st.integers(1, 5)


# ---------------------------------------------------------------------------------------------------------------
# Tiny models and helpers
# ---------------------------------------------------------------------------------------------------------------


class PackedBiLSTM(nn.Module):
    """Embedding -> packed bidirectional LSTM -> both final states -> Linear: the notebook's model, shrunk.

    ``grad_poison`` (inf or nan) multiplies the logits' gradient in backward: the forward pass and the loss stay
    finite while every parameter gradient becomes non-finite, which is what an fp16 overflow looks like.
    """

    def __init__(self, dropout_p: float = 0.0, num_classes: int = CLASSES) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED, padding_idx=PAD_ID)
        self.rnn = nn.LSTM(EMBED, HIDDEN, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout_p)
        self.head = nn.Linear(2 * HIDDEN, num_classes)
        self.grad_poison: float | None = None

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.dropout(self.embedding(tokens))  # B, T, E
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)  # h_n: 2, B, H (batch order restored by the packing)
        features = torch.cat([h_n[0], h_n[1]], dim=1)  # B, 2H
        logits = self.head(self.dropout(features))  # B, C
        poison = self.grad_poison
        if poison is not None and logits.requires_grad:
            logits.register_hook(lambda g: g * poison)
        return logits


class MeanPoolMLP(nn.Module):
    """Embedding -> masked mean -> Linear -> tanh -> Linear: every matmul is a Linear, so CPU autocast applies."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED, padding_idx=PAD_ID)
        self.hidden = nn.Linear(EMBED, 2 * HIDDEN)
        self.out = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        mask = (tokens != PAD_ID).unsqueeze(-1)  # B, T, 1
        summed = (self.embedding(tokens) * mask).sum(dim=1)  # B, E
        pooled = summed / lengths.to(summed.device).unsqueeze(1)  # B, E
        return self.out(torch.tanh(self.hidden(pooled)))  # B, C


class DecayZoo(nn.Module):
    """One parameter of every kind the decay rule tells apart, named so that a rule keyed on names would fail.

    The embedding sits in a Sequential (``encoder.0.weight``: no "embed" in the name), the LayerNorm holds 1-D
    gains and biases, the LSTM holds matrices and biases of both directions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Embedding(VOCAB, EMBED, padding_idx=PAD_ID))
        self.rnn = nn.LSTM(EMBED, HIDDEN, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * HIDDEN)
        self.head = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(self.encoder(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)  # 2, B, H
        return self.head(self.norm(torch.cat([h_n[0], h_n[1]], dim=1)))  # B, C


def build(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """A model initialised from ``seed`` without disturbing torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def make_batch(seed: int, batch_size: int, num_classes: int = CLASSES, max_len: int = 8) -> Batch:
    """A random batch through the project's own collate: token ids in [1, VOCAB) (UNK included), ragged lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch_size,), generator=gen).tolist()
    labels = torch.randint(num_classes, (batch_size,), generator=gen).tolist()
    examples = [
        (torch.randint(1, VOCAB, (n,), generator=gen).tolist(), y) for n, y in zip(lengths, labels, strict=True)
    ]
    return collate(examples)


def config(**overrides: Any) -> TrainConfig:
    """A TrainConfig for the tests: no smoothing and SGD unless asked, so each test states what it exercises."""
    base: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "label_smoothing": 0.0}
    return TrainConfig(**{**base, **overrides})


def off_scaler() -> torch.amp.GradScaler:
    return make_scaler("cpu", "off")


def snapshot(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_bitwise_equal(actual: list[Tensor], expected: list[Tensor]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def global_norm(tensors: list[Tensor]) -> Tensor:
    """Reference global L2 norm over all tensors, computed on one flat vector (not clip_grad_norm_'s code path)."""
    return torch.linalg.vector_norm(flat(tensors).double()).float()


def reference_grads(
    model: nn.Module, batch: Batch, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Loss, logits and raw gradients of a deepcopy: torch's plain forward -> F.cross_entropy -> backward."""
    ref = copy.deepcopy(model)
    logits = ref(batch.tokens, batch.lengths)
    loss = F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)
    loss.backward()
    return loss.detach(), logits.detach(), [p.grad.detach().clone() for p in ref.parameters() if p.grad is not None]


def record_applied_grads(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[Tensor]]:
    """Copies of the gradients each ``optimizer.step()`` receives (post-clip), in ``model.parameters()`` order
    (the optimizer holds them grouped by decay); an empty list means it never stepped."""
    seen: list[list[Tensor]] = []

    def hook(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        seen.append([p.grad.detach().clone() for p in model.parameters() if p.grad is not None])

    optimizer.register_step_pre_hook(hook)
    return seen


def seeded_step(
    model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, cfg: TrainConfig, rng_seed: int
) -> Any:
    """train_step with torch's global RNG (dropout) seeded, then restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng_seed)
        return train_step(model, batch, optimizer, off_scaler(), cfg)


# ---------------------------------------------------------------------------------------------------------------
# Step order: train_step == forward -> cross_entropy -> backward -> clip -> step, on a deepcopy
# ---------------------------------------------------------------------------------------------------------------


@given(
    seed=seeds,
    batch_size=batch_sizes,
    clip=st.sampled_from(["norm", "value", "none"]),
    threshold_ratio=st.floats(0.05, 3.0),
    label_smoothing=st.floats(0.0, 0.5),
    optimizer=st.sampled_from(["adam", "adamw", "sgd"]),
)
def test_train_step_equals_torch_reference_step(
    seed: int, batch_size: int, clip: str, threshold_ratio: float, label_smoothing: float, optimizer: str
) -> None:
    model = build(lambda: PackedBiLSTM(dropout_p=0.2), seed)
    batch = make_batch(seed, batch_size)
    # Thresholds relative to this batch's own gradients, so both sides of every threshold get drawn.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, raw = reference_grads(model, batch, label_smoothing)
    max_norm = threshold_ratio * float(global_norm(raw))
    max_value = threshold_ratio * float(flat(raw).abs().max())
    cfg = config(
        optimizer=optimizer,
        momentum=0.9,
        lr=1e-2,
        weight_decay=0.01,
        clip=clip,
        max_norm=max_norm,
        max_value=max_value,
        label_smoothing=label_smoothing,
    )

    ref = copy.deepcopy(model)
    ref_opt = make_optimizer(ref, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref_logits = ref(batch.tokens, batch.lengths)
    ref_loss = F.cross_entropy(ref_logits, batch.labels, label_smoothing=label_smoothing)
    ref_loss.backward()
    ref_norm = global_norm([p.grad for p in ref.parameters() if p.grad is not None])
    if clip == "norm":
        # In the optimizer's (decay-grouped) order, as train_step does: the per-tensor norms are summed in that
        # order, and summing in model order instead may move the clip factor by one ulp.
        ref_norm = nn.utils.clip_grad_norm_([p for g in ref_opt.param_groups for p in g["params"]], max_norm)
    elif clip == "value":
        nn.utils.clip_grad_value_(ref.parameters(), max_value)
    ref_opt.step()

    stats = seeded_step(model, batch, make_optimizer(model, cfg), cfg, rng_seed=seed)

    assert_bitwise_equal(snapshot(model), snapshot(ref))  # same primitives in the same order: bit for bit
    assert stats.loss == float(ref_loss.detach())
    torch.testing.assert_close(stats.logits, ref_logits.detach(), rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(stats.grad_norm), ref_norm.detach().float())  # pre-clip norm
    assert not stats.skipped
    assert stats.scale == 1.0
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Clipping, observed through the gradients the optimizer actually receives
# ---------------------------------------------------------------------------------------------------------------


@given(seed=seeds, batch_size=batch_sizes, ratio=st.floats(0.01, 0.95))
def test_clip_norm_bounds_the_global_norm_with_one_common_factor(seed: int, batch_size: int, ratio: float) -> None:
    model = build(PackedBiLSTM, seed)
    batch = make_batch(seed, batch_size)
    _, _, raw = reference_grads(model, batch)
    norm = float(global_norm(raw))
    cfg = config(clip="norm", max_norm=ratio * norm)
    opt = make_optimizer(model, cfg)
    applied = record_applied_grads(opt, model)

    stats = train_step(model, batch, opt, off_scaler(), cfg)

    (clipped,) = applied
    assert float(global_norm(clipped)) <= cfg.max_norm * (1 + 1e-6)
    # Direction preserved and clipping global (not per tensor): every tensor is scaled by one common factor,
    # estimated here by least squares over all gradients together.
    factor = float(flat(clipped).double() @ flat(raw).double() / (flat(raw).double() @ flat(raw).double()))
    assert 0 < factor <= cfg.max_norm / norm * (1 + 1e-6)
    for c, r in zip(clipped, raw, strict=True):
        torch.testing.assert_close(c, factor * r)
    torch.testing.assert_close(torch.tensor(stats.grad_norm), torch.tensor(norm))


@given(seed=seeds, batch_size=batch_sizes, ratio=st.floats(1.01, 100.0))
def test_clip_norm_leaves_gradients_below_threshold_bitwise_unchanged(seed: int, batch_size: int, ratio: float) -> None:
    model = build(PackedBiLSTM, seed)
    batch = make_batch(seed, batch_size)
    _, _, raw = reference_grads(model, batch)
    cfg = config(clip="norm", max_norm=ratio * float(global_norm(raw)))
    opt = make_optimizer(model, cfg)
    applied = record_applied_grads(opt, model)

    train_step(model, batch, opt, off_scaler(), cfg)

    assert_bitwise_equal(applied[0], raw)


@given(seed=seeds, batch_size=batch_sizes, ratio=st.floats(0.05, 1.5))
def test_clip_value_bounds_every_element_and_equals_clip_grad_value(seed: int, batch_size: int, ratio: float) -> None:
    model = build(PackedBiLSTM, seed)
    batch = make_batch(seed, batch_size)
    _, _, raw = reference_grads(model, batch)
    cfg = config(clip="value", max_value=ratio * float(flat(raw).abs().max()))
    opt = make_optimizer(model, cfg)
    applied = record_applied_grads(opt, model)

    stats = train_step(model, batch, opt, off_scaler(), cfg)

    (clipped,) = applied
    # The bound as torch applies it: max_value rounded to fp32 (which may round up past the float64 value).
    assert flat(clipped).abs().max() <= torch.tensor(cfg.max_value, dtype=torch.float32)
    expected_params = [nn.Parameter(torch.zeros_like(r)) for r in raw]
    for p, r in zip(expected_params, raw, strict=True):
        p.grad = r.clone()
    nn.utils.clip_grad_value_(expected_params, cfg.max_value)
    assert_bitwise_equal(clipped, [p.grad for p in expected_params if p.grad is not None])
    torch.testing.assert_close(torch.tensor(stats.grad_norm), global_norm(raw))  # the pre-clip norm


@given(seed=seeds, batch_size=batch_sizes)
def test_clip_none_leaves_gradients_untouched_and_still_reports_the_norm(seed: int, batch_size: int) -> None:
    model = build(PackedBiLSTM, seed)
    batch = make_batch(seed, batch_size)
    _, _, raw = reference_grads(model, batch)
    # Tiny thresholds that would bite if 'none' clipped anyway.
    cfg = config(clip="none", max_norm=1e-6, max_value=1e-6)
    opt = make_optimizer(model, cfg)
    applied = record_applied_grads(opt, model)

    stats = train_step(model, batch, opt, off_scaler(), cfg)

    assert_bitwise_equal(applied[0], raw)
    torch.testing.assert_close(torch.tensor(stats.grad_norm), global_norm(raw))


# ---------------------------------------------------------------------------------------------------------------
# Non-finite gradients: skipped, parameters and optimizer state untouched, counted
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("poison", [math.inf, math.nan])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("clip", ["norm", "value", "none"])
def test_non_finite_gradients_skip_the_step_and_touch_nothing(poison: float, optimizer: str, clip: str) -> None:
    model = build(PackedBiLSTM, 0)
    cfg = config(optimizer=optimizer, momentum=0.9, weight_decay=0.1, clip=clip)
    opt = make_optimizer(model, cfg)
    train_step(model, make_batch(1, 4), opt, off_scaler(), cfg)  # a good step first, so there is state to guard
    params_before = snapshot(model)
    state_before = copy.deepcopy(opt.state_dict())
    applied = record_applied_grads(opt, model)

    model.grad_poison = poison
    stats = train_step(model, make_batch(2, 4), opt, off_scaler(), cfg)

    assert stats.skipped
    assert not math.isfinite(stats.grad_norm)
    assert math.isfinite(stats.loss)  # the forward was fine; only the gradients overflowed
    assert applied == []  # optimizer.step() was never called
    assert_bitwise_equal(snapshot(model), params_before)
    state_after = opt.state_dict()["state"]
    assert state_after.keys() == state_before["state"].keys()
    for key, per_param in state_before["state"].items():
        for name, value in per_param.items():  # Adam's step counter and moments, SGD's momentum buffer
            torch.testing.assert_close(state_after[key][name], value, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


@given(seed=seeds, poisoned=st.lists(st.booleans(), min_size=1, max_size=5))
def test_skipped_steps_are_counted_and_training_equals_the_good_steps_alone(seed: int, poisoned: list[bool]) -> None:
    model = build(PackedBiLSTM, seed)
    reference = copy.deepcopy(model)
    cfg = config(optimizer="adam", lr=1e-2)
    batches = [make_batch(seed + i, 3) for i in range(len(poisoned))]

    opt = make_optimizer(model, cfg)
    skipped = []
    for batch, bad in zip(batches, poisoned, strict=True):
        model.grad_poison = math.inf if bad else None
        skipped.append(train_step(model, batch, opt, off_scaler(), cfg).skipped)

    ref_opt = make_optimizer(reference, cfg)
    for batch, bad in zip(batches, poisoned, strict=True):
        if not bad:
            train_step(reference, batch, ref_opt, off_scaler(), cfg)

    assert skipped == poisoned
    assert sum(skipped) == sum(poisoned)  # what fit counts
    assert_bitwise_equal(snapshot(model), snapshot(reference))


# ---------------------------------------------------------------------------------------------------------------
# GradScaler mechanics on CPU
# ---------------------------------------------------------------------------------------------------------------


def expected_scales(init_scale: float, growth_interval: int, poisoned: list[bool]) -> tuple[list[float], float]:
    """GradScaler's documented rule: x0.5 after an inf step (streak reset); x2 after growth_interval good steps."""
    scale, streak, used = init_scale, 0, []
    for bad in poisoned:
        used.append(scale)
        if bad:
            scale, streak = scale * 0.5, 0
        else:
            streak += 1
            if streak == growth_interval:
                scale, streak = scale * 2.0, 0
    return used, scale


@given(
    seed=seeds,
    log2_scale=st.integers(2, 16),
    growth_interval=st.integers(1, 3),
    poisoned=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_grad_scaler_grows_after_good_steps_and_backs_off_on_inf(
    seed: int, log2_scale: int, growth_interval: int, poisoned: list[bool]
) -> None:
    model = build(PackedBiLSTM, seed)
    cfg = config()
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**log2_scale, growth_interval=growth_interval)

    used = []
    for i, bad in enumerate(poisoned):
        model.grad_poison = math.inf if bad else None
        before = snapshot(model)
        stats = train_step(model, make_batch(seed + i, 3), opt, scaler, cfg)
        used.append(stats.scale)
        assert stats.skipped == bad
        if bad:
            assert_bitwise_equal(snapshot(model), before)

    want_used, want_final = expected_scales(2.0**log2_scale, growth_interval, poisoned)
    assert used == want_used
    assert scaler.get_scale() == want_final


def test_unscale_twice_before_update_raises() -> None:
    model = build(PackedBiLSTM, 0)
    batch = make_batch(0, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_"):
        scaler.unscale_(opt)


def is_power_of_two(x: float) -> bool:
    return math.frexp(x)[0] == 0.5


@given(
    seed=seeds,
    batch_size=batch_sizes,
    init_scale=st.one_of(st.integers(0, 24).map(lambda k: 2.0**k), st.floats(1.5, 2.0**16)),
    clip=st.sampled_from(["norm", "value"]),
    ratio=st.floats(0.05, 0.95),
    optimizer=st.sampled_from(["adam", "adamw", "sgd"]),
)
def test_scaled_step_equals_the_fp32_clipped_step(
    seed: int, batch_size: int, init_scale: float, clip: str, ratio: float, optimizer: str
) -> None:
    """Clipping must see unscaled gradients: a clip on scaled ones shrinks the update by about the scale."""
    model = build(PackedBiLSTM, seed)
    batch = make_batch(seed, batch_size)
    _, _, raw = reference_grads(model, batch)
    # ratio < 1: the clip always bites, which is where clipping scaled gradients would go wrong.
    cfg = config(
        optimizer=optimizer,
        momentum=0.9,
        clip=clip,
        max_norm=ratio * float(global_norm(raw)),
        max_value=ratio * float(flat(raw).abs().max()),
    )
    fp32 = copy.deepcopy(model)
    fp32_opt = make_optimizer(fp32, cfg)
    fp32_applied = record_applied_grads(fp32_opt, fp32)
    fp32_stats = train_step(fp32, batch, fp32_opt, off_scaler(), cfg)

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    opt = make_optimizer(model, cfg)
    applied = record_applied_grads(opt, model)
    stats = train_step(model, batch, opt, scaler, cfg)

    assert stats.scale == init_scale
    assert not stats.skipped
    assert stats.loss == fp32_stats.loss  # the reported loss is the unscaled one
    torch.testing.assert_close(torch.tensor(stats.grad_norm), torch.tensor(fp32_stats.grad_norm))
    for a, b in zip(applied[0], fp32_applied[0], strict=True):
        torch.testing.assert_close(a, b)
    if is_power_of_two(init_scale):
        # GradScaler's own scales are powers of two (2**16, x2, x0.5): multiplying by one commutes with fp32
        # rounding, so the whole update is bit for bit. Other scales round differently in the backward, and
        # Adam magnifies that on near-zero gradients (g / (|g| + eps)), so only the gradients are compared.
        assert_bitwise_equal(snapshot(model), snapshot(fp32))


def test_make_scaler_is_enabled_only_for_fp16() -> None:
    assert make_scaler("cpu", "fp16").is_enabled()
    assert not make_scaler("cpu", "bf16").is_enabled()
    assert not make_scaler("cpu", "off").is_enabled()


# ---------------------------------------------------------------------------------------------------------------
# Weight decay: groups and the three optimizers
# ---------------------------------------------------------------------------------------------------------------

ZOO_NAMES = [name for name, _ in DecayZoo().named_parameters()]


def should_decay(model: nn.Module, name: str, p: Tensor, cfg: TrainConfig) -> bool:
    """The rule re-derived from the config's words: embeddings per decay_embedding; otherwise matrices decay,
    1-D tensors (biases, norm gains) only with decay_bias_and_norm."""
    owner = model.get_submodule(name.rpartition(".")[0])
    if isinstance(owner, nn.Embedding):
        return cfg.decay_embedding
    return cfg.decay_bias_and_norm or p.dim() >= 2


@given(
    decay_embedding=st.booleans(),
    decay_bias_and_norm=st.booleans(),
    weight_decay=st.floats(0.0, 1.0),
    frozen=st.sets(st.sampled_from(ZOO_NAMES)),
)
def test_param_groups_follow_the_decay_rule_and_partition_trainable_params(
    decay_embedding: bool, decay_bias_and_norm: bool, weight_decay: float, frozen: set[str]
) -> None:
    model = DecayZoo()
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    cfg = config(weight_decay=weight_decay, decay_embedding=decay_embedding, decay_bias_and_norm=decay_bias_and_norm)

    groups = param_groups(model, cfg)

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    want_decay = [p for n, p in trainable if should_decay(model, n, p, cfg)]
    want_no_decay = [p for n, p in trainable if not should_decay(model, n, p, cfg)]
    want = [(want_decay, weight_decay), (want_no_decay, 0.0)]
    want = [(ps, wd) for ps, wd in want if ps]  # empty groups are dropped
    assert len(groups) == len(want)
    for group, (ps, wd) in zip(groups, want, strict=True):
        assert [id(p) for p in group["params"]] == [id(p) for p in ps]  # membership and model order
        assert group["weight_decay"] == wd
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for _, p in trainable)  # each trainable param exactly once
    assert len(grouped) == len(set(grouped))


def test_embedding_is_decayed_by_default_and_biases_are_not() -> None:
    """The documented defaults, spelled out once by name (nanoGPT's rule: every matrix, the embedding included)."""
    model = DecayZoo()
    groups = param_groups(model, TrainConfig())
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in groups)
    assert {"encoder.0.weight", "rnn.weight_hh_l0", "rnn.weight_hh_l0_reverse", "head.weight"} <= decay
    assert {"rnn.bias_ih_l0", "rnn.bias_hh_l0_reverse", "norm.weight", "norm.bias", "head.bias"} <= no_decay


def split_by_decay(model: nn.Module, cfg: TrainConfig) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    named = list(model.named_parameters())
    return (
        [p for n, p in named if should_decay(model, n, p, cfg)],
        [p for n, p in named if not should_decay(model, n, p, cfg)],
    )


@given(lr=st.floats(1e-4, 1e-1), weight_decay=st.floats(1e-3, 1.0), seed=seeds)
def test_adamw_with_zero_gradient_shrinks_decayed_params_by_exactly_one_minus_lr_wd(
    lr: float, weight_decay: float, seed: int
) -> None:
    model = build(DecayZoo, seed)
    cfg = config(optimizer="adamw", lr=lr, weight_decay=weight_decay)
    opt = make_optimizer(model, cfg)
    decay, no_decay = split_by_decay(model, cfg)
    decay_before, no_decay_before = [p.detach().clone() for p in decay], [p.detach().clone() for p in no_decay]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    opt.step()

    assert_bitwise_equal([p.detach() for p in decay], [p * (1 - lr * weight_decay) for p in decay_before])
    assert_bitwise_equal([p.detach() for p in no_decay], no_decay_before)


@given(lr=st.floats(1e-4, 1e-2), weight_decay=st.floats(1e-2, 1.0), seed=seeds, steps=st.integers(1, 3))
def test_adam_weight_decay_is_coupled_l2_added_to_the_gradient(
    lr: float, weight_decay: float, seed: int, steps: int
) -> None:
    model = build(DecayZoo, seed)
    cfg = config(optimizer="adam", lr=lr, weight_decay=weight_decay)
    reference = copy.deepcopy(model)
    opt = make_optimizer(model, cfg)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=lr, weight_decay=0.0)
    decay_ids = {id(p) for p in split_by_decay(reference, cfg)[0]}
    gen = torch.Generator().manual_seed(seed)

    for _ in range(steps):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            g = 1e-2 * torch.randn(p.shape, generator=gen)
            p.grad = g.clone()
            q.grad = g + weight_decay * q.detach() if id(q) in decay_ids else g.clone()  # L2 on the current value
        opt.step()
        ref_opt.step()

    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@given(lr=st.floats(1e-4, 1e-2), wd_a=st.floats(1e-3, 1.0), wd_b=st.floats(1e-3, 1.0), seed=seeds)
def test_adam_with_zero_gradient_moves_decayed_weights_by_about_lr_whatever_wd(
    lr: float, wd_a: float, wd_b: float, seed: int
) -> None:
    """Adam normalises the L2 gradient wd*p away: the first step is lr*sign(p), not a shrink proportional to wd."""
    model = build(DecayZoo, seed)
    for wd in (wd_a, wd_b):
        trial = copy.deepcopy(model)
        cfg = config(optimizer="adam", lr=lr, weight_decay=wd)
        opt = make_optimizer(trial, cfg)
        decay, _ = split_by_decay(trial, cfg)
        before = [p.detach().clone() for p in decay]
        for p in trial.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for p, b in zip(decay, before, strict=True):
            big = b.abs() >= 1e-2  # |wd*p| >= 1e-5 = 1000*eps: eps costs at most 0.1% of the step
            delta = (p.detach() - b)[big]
            # Tolerance: 0.1% from eps, plus fp32 rounding of p (<= 1.2e-7 absolute for |p| < 2).
            torch.testing.assert_close(delta.abs(), torch.full_like(delta, lr), rtol=2e-3, atol=2e-7)
            assert torch.equal(torch.sign(delta), -torch.sign(b[big]))  # towards zero


@given(
    lr=st.floats(1e-3, 1e-1),
    momentum=st.floats(0.0, 0.99),
    weight_decay=st.floats(0.0, 0.5),
    seed=seeds,
    steps=st.integers(1, 3),
)
def test_sgd_uses_momentum_from_config_with_coupled_decay(
    lr: float, momentum: float, weight_decay: float, seed: int, steps: int
) -> None:
    model = build(DecayZoo, seed)
    cfg = config(optimizer="sgd", lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt = make_optimizer(model, cfg)
    assert all(g["momentum"] == momentum for g in opt.param_groups)
    decay_ids = {id(p) for p in split_by_decay(model, cfg)[0]}
    # Manual heavy-ball reference: buf = m*buf + (g + wd*p) (buf = g + wd*p at first); p -= lr*buf.
    params = [p.detach().clone() for p in model.parameters()]
    bufs: list[Tensor | None] = [None] * len(params)
    gen = torch.Generator().manual_seed(seed)

    for _ in range(steps):
        for i, p in enumerate(model.parameters()):
            g = 0.1 * torch.randn(p.shape, generator=gen)
            p.grad = g.clone()
            d = g + weight_decay * params[i] if id(p) in decay_ids else g
            prev = bufs[i]
            bufs[i] = d if prev is None else momentum * prev + d
            params[i] = params[i] - lr * bufs[i]
        opt.step()

    for p, want in zip(model.parameters(), params, strict=True):
        torch.testing.assert_close(p.detach(), want)


# ---------------------------------------------------------------------------------------------------------------
# Label smoothing
# ---------------------------------------------------------------------------------------------------------------


def soft_target_ce(logits: Tensor, labels: Tensor, eps: float) -> Tensor:
    """Reference: cross-entropy against (1-eps)*onehot + eps/K, computed from log_softmax in float64."""
    k = logits.shape[1]
    target = (1 - eps) * F.one_hot(labels, k).double() + eps / k  # B, K
    return -(target * F.log_softmax(logits.double(), dim=1)).sum(dim=1).mean()


@given(
    k=st.integers(2, 7),
    batch_size=st.integers(1, 6),
    eps=st.floats(0.0, 0.95),
    logit_scale=st.floats(0.1, 10.0),
    seed=seeds,
)
def test_loss_fn_equals_soft_target_cross_entropy_with_eps_over_k(
    k: int, batch_size: int, eps: float, logit_scale: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = logit_scale * torch.randn(batch_size, k, generator=gen)
    labels = torch.randint(k, (batch_size,), generator=gen)

    loss = loss_fn(logits, labels, eps)

    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, soft_target_ce(logits, labels, eps).float())


@given(k=st.integers(2, 7), batch_size=st.integers(1, 6), seed=seeds)
def test_loss_fn_without_smoothing_is_plain_cross_entropy(k: int, batch_size: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch_size, k, generator=gen)
    labels = torch.randint(k, (batch_size,), generator=gen)

    nll = -F.log_softmax(logits, dim=1).gather(1, labels[:, None]).mean()  # B, 1 -> scalar

    torch.testing.assert_close(loss_fn(logits, labels), nll)
    torch.testing.assert_close(loss_fn(logits, labels, 0.0), nll)


def true_class_optimum(k: int, eps: float) -> float:
    """Numerically minimise loss_fn over the true class's logit margin (the other K-1 logits equal by symmetry)
    and return the optimal true-class probability.

    Root-finds d loss / d margin with brentq instead of minimising the loss itself: the fp32 loss is flat to
    rounding noise (~1e-7) over a margin interval of ~1e-3 around a quadratic minimum, its gradient is not.
    """

    def slope(margin: float) -> float:
        logits = torch.zeros(1, k, dtype=torch.float64)
        logits[0, 0] = margin
        logits.requires_grad_()
        loss_fn(logits, torch.tensor([0]), eps).backward()
        assert logits.grad is not None
        return float(logits.grad[0, 0])

    margin = brentq(slope, -30.0, 30.0, xtol=1e-12)
    logits = torch.zeros(k, dtype=torch.float64)
    logits[0] = margin
    return float(torch.softmax(logits, dim=0)[0])


@given(k=st.integers(2, 7), eps=st.floats(0.01, 0.9))
def test_smoothed_loss_is_minimised_at_true_class_probability_one_minus_eps_plus_eps_over_k(k: int, eps: float) -> None:
    want = 1 - eps + eps / k
    # 1e-5: the slope is computed in fp32 (loss_fn casts), so the root is only good to ~1e-6 in probability.
    assert abs(true_class_optimum(k, eps) - want) <= 1e-5
    # Analytic check: at logits = log(target) the gradient vanishes; at the eps/(K-1) target it does not.
    labels = torch.tensor([0])
    ours = torch.full((1, k), eps / k)
    ours[0, 0] = want
    theirs = torch.full((1, k), eps / (k - 1))
    theirs[0, 0] = 1 - eps
    grads = []
    for target in (ours, theirs):
        logits = target.log().requires_grad_()
        loss_fn(logits, labels, eps).backward()
        assert logits.grad is not None
        grads.append(logits.grad.abs().max())
    assert grads[0] <= 1e-6
    # softmax(log(theirs)) - ours: the true class is off by exactly eps/K.
    torch.testing.assert_close(grads[1], torch.tensor(eps / k))


def test_notebook_claim_0_9_over_0_1_is_wrong_for_two_classes() -> None:
    """The notebook says eps=0.1 gives targets 0.9/0.1; with K=2 the minimiser is 0.95/0.05."""
    assert abs(true_class_optimum(2, 0.1) - 0.95) <= 1e-5
    assert abs(true_class_optimum(2, 0.1) - 0.9) > 0.04
    assert TrainConfig().label_smoothing == 0.1  # the default the claim is about


@given(batch_size=st.integers(1, 6), seed=seeds, eps=st.floats(0.0, 0.5))
def test_loss_is_fp32_for_bf16_logits(batch_size: int, seed: int, eps: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch_size, CLASSES, generator=gen)).bfloat16()
    labels = torch.randint(CLASSES, (batch_size,), generator=gen)

    loss = loss_fn(logits, labels, eps)

    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, soft_target_ce(logits.float(), labels, eps).float())


# ---------------------------------------------------------------------------------------------------------------
# CPU bf16 autocast
# ---------------------------------------------------------------------------------------------------------------


def cosine(a: list[Tensor], b: list[Tensor]) -> float:
    return float(F.cosine_similarity(flat(a).double(), flat(b).double(), dim=0))


@given(seed=seeds, batch_size=batch_sizes)
def test_bf16_autocast_step_is_close_to_fp32(seed: int, batch_size: int) -> None:
    model = build(MeanPoolMLP, seed)
    batch = make_batch(seed, batch_size)
    results = {}
    for amp in ("off", "bf16"):
        trial = copy.deepcopy(model)
        cfg = config(amp=amp, clip="none", label_smoothing=0.1)
        opt = make_optimizer(trial, cfg)
        applied = record_applied_grads(opt, trial)
        results[amp] = (train_step(trial, batch, opt, off_scaler(), cfg), applied[0])

    (fp32, g32), (bf16, g16) = results["off"], results["bf16"]
    assert bf16.logits.dtype == torch.bfloat16  # autocast really ran
    # bf16 defaults of assert_close (rtol 1.6e-2, atol 1e-5): the loss itself is fp32 but its logits were bf16.
    torch.testing.assert_close(torch.tensor(bf16.loss), torch.tensor(fp32.loss), rtol=1.6e-2, atol=1e-5)
    assert cosine(g16, g32) >= 0.999
    assert all(g.dtype == torch.float32 for g in g16)  # gradients land in the fp32 parameters


def test_probe_reports_bf16_for_linear_layers_under_cpu_autocast() -> None:
    model = build(MeanPoolMLP, 0)
    report = probe_autocast(model, make_batch(0, 3), "bf16")
    assert report == {"embedding": "float32", "hidden": "bfloat16", "out": "bfloat16"}
    assert low_precision_modules(report) == ["hidden", "out"]


def test_probe_reports_a_packed_lstm_as_fp32_under_cpu_autocast() -> None:
    """CPU autocast has no packed-LSTM kernel: that LSTM stays fp32 and must never be labelled bf16."""
    model = build(PackedBiLSTM, 0)
    report = probe_autocast(model, make_batch(0, 3), "bf16")
    assert report["rnn"] == "float32"
    assert report["embedding"] == "float32"
    assert report["head"] == "bfloat16"
    assert low_precision_modules(report) == ["head"]


@pytest.mark.parametrize("factory", [MeanPoolMLP, PackedBiLSTM])
def test_probe_with_amp_off_reports_no_low_precision_modules_and_keeps_train_mode(
    factory: Callable[[], nn.Module],
) -> None:
    model = build(factory, 0).train()
    report = probe_autocast(model, make_batch(0, 3), "off")
    assert report  # it did observe the modules
    assert low_precision_modules(report) == []
    assert model.training


# ---------------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------------


@given(seed=seeds, steps=st.integers(1, 3))
def test_same_seed_gives_bit_identical_parameters_with_dropout(seed: int, steps: int) -> None:
    init = build(lambda: PackedBiLSTM(dropout_p=0.3), seed)
    cfg = config(optimizer="adamw", lr=1e-2, label_smoothing=0.1)
    batches = [make_batch(seed + i, 4) for i in range(steps)]

    def run(rng_seed: int) -> list[Tensor]:
        model = copy.deepcopy(init)
        opt = make_optimizer(model, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng_seed)
            for batch in batches:
                train_step(model, batch, opt, off_scaler(), cfg)
        return snapshot(model)

    first = run(seed)
    assert_bitwise_equal(run(seed), first)
    # The dropout seed matters: the check above would pass vacuously if dropout never drew from the RNG.
    other = run(seed + 1)
    assert any(not torch.equal(a, b) for a, b in zip(other, first, strict=True))


@given(seed=seeds, batch_size=batch_sizes)
def test_autocast_off_is_a_no_op(seed: int, batch_size: int) -> None:
    model = build(MeanPoolMLP, seed)
    batch = make_batch(seed, batch_size)
    plain = model(batch.tokens, batch.lengths)
    with autocast("cpu", "off"):
        assert not torch.is_autocast_enabled("cpu")
        inside = model(batch.tokens, batch.lengths)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, rtol=0, atol=0)


def test_autocast_off_switches_off_an_enclosing_autocast() -> None:
    """step.autocast documents 'off' as a disabled autocast: inside a caller's bf16 region it must still mean fp32
    (else eval_logits(amp='off') and probe_autocast(amp='off') would run, and report, bf16)."""
    model = build(MeanPoolMLP, 0)
    batch = make_batch(0, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast("cpu", "off"):
        assert not torch.is_autocast_enabled("cpu")
        assert model(batch.tokens, batch.lengths).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# TrainConfig validation the step relies on
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("optimizer", "rmsprop"), ("optimizer", "Adam"), ("clip", "global"), ("clip", ""), ("amp", "fp8"), ("amp", "on")],
)
def test_train_config_rejects_unknown_names_naming_field_and_value(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"train\.{field}") as err:
        TrainConfig(**{field: value})
    assert repr(value) in str(err.value)


@given(max_norm=st.floats(max_value=0.0, allow_nan=False))
def test_train_config_rejects_non_positive_max_norm(max_norm: float) -> None:
    with pytest.raises(ValueError, match=r"train\.max_norm") as err:
        TrainConfig(max_norm=max_norm)
    assert repr(max_norm) in str(err.value)


@given(eps=st.one_of(st.floats(max_value=0.0, exclude_max=True), st.floats(min_value=1.0), st.just(math.nan)))
def test_train_config_rejects_label_smoothing_outside_unit_interval(eps: float) -> None:
    with pytest.raises(ValueError, match=r"train\.label_smoothing") as err:
        TrainConfig(label_smoothing=eps)
    assert repr(eps) in str(err.value)


@pytest.mark.parametrize("field", ["max_norm", "max_value", "lr"])
def test_train_config_rejects_nan_thresholds_and_lr(field: str) -> None:
    """A NaN max_norm passes a `< 0` check and then turns every parameter into NaN without a skipped step."""
    with pytest.raises(ValueError, match=rf"train\.{field}"):
        TrainConfig(**{field: math.nan})


# ---------------------------------------------------------------------------------------------------------------
# CUDA fp16 + GradScaler (skipped without CUDA by conftest)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuda_fp16_step_with_grad_scaler_matches_fp32(seed: int) -> None:
    model = build(PackedBiLSTM, seed).cuda()
    batch = make_batch(seed, 5).to("cuda")
    cfg32 = config(clip="norm", max_norm=0.5, label_smoothing=0.1)
    cfg16 = config(clip="norm", max_norm=0.5, label_smoothing=0.1, amp="fp16", device="cuda")
    fp32 = copy.deepcopy(model)
    opt32 = make_optimizer(fp32, cfg32)
    applied32 = record_applied_grads(opt32, fp32)
    stats32 = train_step(fp32, batch, opt32, make_scaler("cuda", "off"), cfg32)

    scaler = make_scaler("cuda", "fp16")
    opt16 = make_optimizer(model, cfg16)
    applied16 = record_applied_grads(opt16, model)
    stats16 = train_step(model, batch, opt16, scaler, cfg16)

    assert scaler.is_enabled()
    assert stats16.scale == 2.0**16  # GradScaler's default initial scale
    assert not stats16.skipped
    assert stats16.logits.dtype == torch.float16  # the head ran in fp16
    # fp16 defaults of assert_close (rtol 1e-3, atol 1e-5) for a loss computed from fp16 logits.
    torch.testing.assert_close(torch.tensor(stats16.loss), torch.tensor(stats32.loss), rtol=1e-3, atol=1e-5)
    # The norm is of unscaled gradients: ~stats32.grad_norm, not 65536 times it. 1e-2 is 25x pytorch#175845's
    # measured fp16-vs-fp32 LSTM relative error (4e-4).
    torch.testing.assert_close(torch.tensor(stats16.grad_norm), torch.tensor(stats32.grad_norm), rtol=1e-2, atol=0)
    g16, g32 = flat(applied16[0]), flat(applied32[0])
    assert float(torch.linalg.vector_norm(g16 - g32) / torch.linalg.vector_norm(g32)) <= 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Cases mutation testing found untested (tox -e mutation)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda_available", [False, True])
def test_auto_device_is_cuda_exactly_when_cuda_is_available(
    monkeypatch: pytest.MonkeyPatch, cuda_available: bool
) -> None:
    # is_available is patched so both branches run on any machine; torch.device("cuda") itself needs no GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    assert resolve_device("auto") == torch.device("cuda" if cuda_available else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_asking_for_cuda_is_an_error_naming_the_fix_only_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"train\.device='cuda'(.|\n)*use train\.device=cpu or auto"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")


def test_fp16_autocast_means_float16_and_the_probe_counts_it_as_low_precision() -> None:
    """CPU autocast runs fp16 too: amp='fp16' must not fall back to the CPU default dtype (bf16)."""
    with autocast("cpu", "fp16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.float16
    report = probe_autocast(build(MeanPoolMLP, 0), make_batch(0, 3), "fp16")
    assert report == {"embedding": "float32", "hidden": "float16", "out": "float16"}
    assert low_precision_modules(report) == ["hidden", "out"]


class TokensTap(nn.Module):
    """A leaf module that passes the integer token ids through (a lookup helper, a mask builder)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens


class NestedMLP(nn.Module):
    """MeanPoolMLP's layers one level down in a container, plus an integer-valued leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = TokensTap()
        self.body = MeanPoolMLP()

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.body(self.tap(tokens), lengths)


def test_probe_reports_floating_outputs_of_leaf_modules_only() -> None:
    report = probe_autocast(build(NestedMLP, 0), make_batch(0, 3), "bf16")
    # Not the container ("body": its output is the head's), not the integer-valued leaf ("tap").
    assert report == {"body.embedding": "float32", "body.hidden": "bfloat16", "body.out": "bfloat16"}


@pytest.mark.parametrize("decay_embedding", [False, True])
def test_a_bare_embedding_model_follows_decay_embedding(decay_embedding: bool) -> None:
    """The model itself may be the embedding: its table is named 'weight', with no module prefix."""
    cfg = config(weight_decay=0.1, decay_embedding=decay_embedding)
    groups = param_groups(nn.Embedding(VOCAB, EMBED), cfg)
    assert [g["weight_decay"] for g in groups] == [0.1 if decay_embedding else 0.0]


class FactorizedEmbedding(nn.Embedding):
    """An embedding table with a projection inside it (ALBERT-style factorization)."""

    def __init__(self) -> None:
        super().__init__(VOCAB, 4, padding_idx=PAD_ID)
        self.proj = nn.Linear(4, EMBED, bias=False)


def test_decay_embedding_false_spares_the_table_but_not_modules_inside_the_embedding() -> None:
    model = nn.Sequential(FactorizedEmbedding())
    decay, no_decay = param_groups(model, config(weight_decay=0.1, decay_embedding=False))
    assert [id(p) for p in decay["params"]] == [id(model[0].proj.weight)]  # a matrix: decays
    assert [id(p) for p in no_decay["params"]] == [id(model[0].weight)]  # the embedding table
