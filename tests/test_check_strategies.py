"""rnnreg.testing.strategies generate what their docstrings promise."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from rnnreg.batch import Batch, collate
from rnnreg.config import ModelConfig
from rnnreg.testing import strategies as rst

# find() stops at the first hit; the budget only bounds an (unexpected) miss, and generation is cheap.
FIND = settings(max_examples=1000, database=None)


@given(
    batch=rst.padded_batches(vocab_size=12, num_classes=3, max_batch=5, max_len=7, min_len=2),
)
def test_padded_batches_have_the_promised_layout(batch: Batch) -> None:
    B, T = batch.tokens.shape
    assert batch.tokens.dtype == batch.lengths.dtype == batch.labels.dtype == torch.int64
    assert batch.lengths.device.type == "cpu"
    assert 1 <= B <= 5 and batch.lengths.shape == batch.labels.shape == (B,)
    assert int(batch.lengths.max()) == T  # the longest row sets the width, as collate does
    assert int(batch.lengths.min()) >= 2 and T <= 7
    pads = torch.arange(T)[None, :] >= batch.lengths[:, None]  # [B, T]
    assert bool((batch.tokens[pads] == 0).all())
    real = batch.tokens[~pads]
    assert bool(((real >= 1) & (real < 12)).all())
    assert bool(((batch.labels >= 0) & (batch.labels < 3)).all())


@given(batch=rst.padded_batches(vocab_size=6, num_classes=2, max_batch=4, max_len=5, pad_id=3))
def test_padded_batches_equal_collate_of_their_rows_with_any_pad_id(batch: Batch) -> None:
    # Differential: re-collating the rows with the same pad id rebuilds the batch exactly.
    rows = [
        (batch.tokens[i, :n].tolist(), int(y)) for i, (n, y) in enumerate(zip(batch.lengths, batch.labels, strict=True))
    ]
    assert all(3 not in ids for ids, _ in rows)  # real tokens skip the pad id, wherever it lies
    again = collate(rows, pad_id=3)
    assert torch.equal(again.tokens, batch.tokens)
    assert torch.equal(again.lengths, batch.lengths)
    assert torch.equal(again.labels, batch.labels)


def test_padded_batches_reach_ragged_batches_and_every_real_token() -> None:
    strategy = rst.padded_batches(vocab_size=4, num_classes=2, max_batch=3, max_len=4)
    ragged = find(strategy, lambda b: len(set(b.lengths.tolist())) == 3, settings=FIND)
    assert len(ragged) == 3
    for token in (1, 2, 3):
        found = find(strategy, lambda b, t=token: bool((b.tokens == t).any()), settings=FIND)
        assert bool((found.tokens == token).any())


@given(batch=rst.padded_batches(vocab_size=7, num_classes=2, max_batch=4, max_len=5, max_extra_pad=3))
def test_padded_batches_with_extra_pad_append_only_pad_columns(batch: Batch) -> None:
    T = batch.tokens.shape[1]
    longest = int(batch.lengths.max())
    assert longest <= T <= longest + 3
    assert bool((batch.tokens[:, longest:] == 0).all())
    rows = [(batch.tokens[i, :n].tolist(), 0) for i, n in enumerate(batch.lengths.tolist())]
    assert torch.equal(collate(rows).tokens, batch.tokens[:, :longest])  # collate's layout, plus pad columns


def test_padded_batches_reach_widths_past_the_longest_row() -> None:
    # The case padding claims are about: pad columns no row reaches (a model reading T instead of the lengths).
    strategy = rst.padded_batches(vocab_size=4, num_classes=2, max_batch=3, max_len=4, max_extra_pad=2)
    wide = find(strategy, lambda b: b.tokens.shape[1] == int(b.lengths.max()) + 2, settings=FIND)
    assert wide.tokens.shape[1] > int(wide.lengths.max())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 1}, "vocab_size must be >= 2"),
        ({"min_len": 4, "max_len": 3}, "max_len must be >= 4"),
        ({"min_len": 0}, "min_len must be >= 1"),
        ({"pad_id": 9}, "pad_id must be a token id below vocab_size=9"),
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"max_extra_pad": -1}, "max_extra_pad must be >= 0"),
    ],
)
def test_padded_batches_reject_bad_arguments(kwargs: dict[str, int], match: str) -> None:
    args = {"vocab_size": 9, "num_classes": 2, "max_batch": 3, "max_len": 5} | kwargs
    with pytest.raises(ValueError, match=match):
        rst.padded_batches(**args)


def test_padded_batches_reject_a_float_size() -> None:
    with pytest.raises(TypeError, match="max_len must be an int"):
        rst.padded_batches(vocab_size=9, num_classes=2, max_batch=3, max_len=5.0)  # type: ignore[arg-type]


@given(seed=rst.seeds())
def test_seeds_build_torch_generators(seed: int) -> None:
    assert 0 <= seed <= 2**32 - 1
    a = torch.rand(3, generator=torch.Generator().manual_seed(seed))
    b = torch.rand(3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


@given(p=rst.dropout_probs(max_p=0.6), q=rst.dropout_probs(0.9, min_p=0.2))
def test_dropout_probs_stay_in_range(p: float, q: float) -> None:
    assert 0.0 <= p <= 0.6
    assert 0.2 <= q <= 0.9


def test_dropout_probs_include_zero_and_reject_one() -> None:
    assert find(rst.dropout_probs(), lambda p: p == 0.0, settings=FIND) == 0.0
    with pytest.raises(ValueError, match="max_p < 1"):
        rst.dropout_probs(max_p=1.0)


@given(grads=rst.gradients((2, 3), (4,), ()))
def test_gradients_of_given_shapes_are_finite_float_tensors(grads: list[torch.Tensor]) -> None:
    assert [tuple(g.shape) for g in grads] == [(2, 3), (4,), ()]
    assert all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)


@given(grads=rst.gradients(max_tensors=3, max_side=4))
def test_gradients_of_drawn_shapes_respect_the_limits(grads: list[torch.Tensor]) -> None:
    assert 1 <= len(grads) <= 3
    assert all(g.dim() <= 3 and all(1 <= s <= 4 for s in g.shape) for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_gradients_span_norms_above_and_below_common_thresholds() -> None:
    # Clipping properties need both sides of max_norm = 1, and all-zero gradients.
    strategy = rst.gradients((8,))
    assert float(find(strategy, lambda gs: float(gs[0].norm()) > 100, settings=FIND)[0].norm()) > 100
    assert 0 < float(find(strategy, lambda gs: 0 < float(gs[0].norm()) < 0.01, settings=FIND)[0].norm()) < 0.01
    assert not find(strategy, lambda gs: not bool(gs[0].any()), settings=FIND)[0].any()


@given(data=st.data())
def test_strategies_leave_the_global_torch_rng_alone(data: st.DataObject) -> None:
    state = torch.get_rng_state()
    data.draw(rst.gradients())
    data.draw(rst.logits(3, 4))
    data.draw(rst.padded_batches(vocab_size=5, num_classes=2, max_batch=3, max_len=4))
    assert torch.equal(torch.get_rng_state(), state)


@given(data=st.data(), batch=rst.padded_batches(vocab_size=9, num_classes=4, max_batch=4, max_len=3))
def test_logits_match_the_batch_and_classes(data: st.DataObject, batch: Batch) -> None:
    out = data.draw(rst.logits(batch, 4))
    assert out.shape == (len(batch), 4) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    assert data.draw(rst.logits(2, 3, max_scale=0.0)).abs().max() == 0  # scale 0: uniform predictions


@given(cfg=rst.model_configs(max_dim=6))
def test_model_configs_are_small_and_valid(cfg: ModelConfig) -> None:
    assert cfg.arch == "awd"
    assert 2 <= cfg.embed_dim <= 6 and 2 <= cfg.hidden_dim <= 6
    assert cfg.num_layers in (1, 2)
    if cfg.num_layers == 1:
        assert cfg.hidden_p == 0.0
    assert all(0.0 <= getattr(cfg, name) <= 0.5 for name in ModelConfig.dropout_fields())
    assert dataclasses.replace(cfg) == cfg  # runs the config's own validation again


def test_model_configs_reach_hidden_dropout_between_two_layers() -> None:
    cfg = find(rst.model_configs(), lambda c: c.hidden_p > 0, settings=FIND)
    assert cfg.num_layers == 2 and not math.isnan(cfg.hidden_p)
