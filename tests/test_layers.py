"""Every dropout in rnnreg.layers does what it claims, and equals plain PyTorch where it should do nothing.

Stochastic claims are checked at seeds drawn by Hypothesis through a ``torch.Generator``; rates are held to a
5-sigma binomial bound (a false alarm once in ~1.7 million draws), so no test needs a retry.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from rnnreg.layers import (
    RNN_TYPES,
    EmbeddingDropout,
    LockedDropout,
    OutputDropout,
    WeightDrop,
    dropout_mask,
    embedding_dropout,
    gather_last,
    length_mask,
    locked_dropout,
    masked_max,
    masked_mean,
    masked_pool,
    output_dropout,
    plan_segments,
    reverse_index,
    reverse_within_lengths,
    rnn_step_loop,
    rnn_supports_autocast,
    run_in_segments,
    run_rnn,
    segment_call_cost,
    time_segments,
    weight_drop,
)
from rnnreg.testing import strategies as rst

probs = st.floats(min_value=0.05, max_value=0.95)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def five_sigma(n: int, p: float) -> float:
    """Half-width of a 5-sigma interval for the number of drops among n Bernoulli(p) draws."""
    return 5.0 * math.sqrt(n * p * (1.0 - p))


# ----------------------------------------------------------------------------------------------- dropout_mask


@given(seed=rst.seeds(), p=probs)
def test_mask_holds_zero_or_inverse_keep_probability(seed: int, p: float) -> None:
    mask = dropout_mask((50, 40), p, like=torch.empty(0), generator=gen(seed))
    kept = mask[mask != 0]
    assert kept.numel() + int((mask == 0).sum()) == mask.numel()
    assert kept.unique().numel() <= 1  # one kept value, shared by every kept element
    torch.testing.assert_close(kept, torch.full_like(kept, 1.0 / (1.0 - p)))


@given(seed=rst.seeds(), p=probs)
def test_mask_drop_rate_is_within_five_sigma_of_p(seed: int, p: float) -> None:
    n = 20_000
    drops = int((dropout_mask((n,), p, like=torch.empty(0), generator=gen(seed)) == 0).sum())
    assert abs(drops - n * p) <= five_sigma(n, p)


def test_mask_follows_dtype_and_device_of_like() -> None:
    like = torch.empty(0, dtype=torch.float64)
    mask = dropout_mask((3, 2), 0.5, like=like, generator=gen(0))
    assert mask.dtype == torch.float64 and mask.device == like.device and mask.shape == (3, 2)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_probability_outside_zero_one_is_rejected(p: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout_mask((2,), p, like=torch.empty(0))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        LockedDropout(p)


def test_same_generator_seed_gives_same_mask() -> None:
    a = dropout_mask((64,), 0.5, like=torch.empty(0), generator=gen(7))
    b = dropout_mask((64,), 0.5, like=torch.empty(0), generator=gen(7))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- eval identity, p = 0 identity

FUNCTIONS = {
    "locked": lambda x, p, training, g: locked_dropout(x, p, training=training, generator=g),
    "output": lambda x, p, training, g: output_dropout(x, p, training=training, generator=g),
    "weight": lambda x, p, training, g: weight_drop(x, p, training=training, generator=g),
    # Every (b, t) a distinct word type, so masks have as many draws as the other dropouts.
    "embedding": lambda x, p, training, g: embedding_dropout(
        x,
        torch.arange(x.shape[0] * x.shape[1]).view(x.shape[:2]),
        x.shape[0] * x.shape[1],
        p,
        training=training,
        generator=g,
    ),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_eval_mode_is_the_identity(name: str) -> None:
    x = torch.randn(4, 5, 3, generator=gen(0))
    state = torch.get_rng_state()
    assert FUNCTIONS[name](x, 0.5, False, None) is x
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn: eval cannot shift a seeded run


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_zero_probability_in_training_is_the_identity(name: str) -> None:
    x = torch.randn(4, 5, 3, generator=gen(0))
    assert FUNCTIONS[name](x, 0.0, True, None) is x


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_training_mode_is_stochastic(name: str) -> None:
    x = torch.randn(4, 6, 8, generator=gen(0)) + 3.0  # no zeros of its own
    g = gen(1)
    first, second = FUNCTIONS[name](x, 0.5, True, g), FUNCTIONS[name](x, 0.5, True, g)
    assert not torch.equal(first, x)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_kept_values_are_scaled_by_inverse_keep_probability(name: str) -> None:
    x = torch.randn(4, 6, 8, generator=gen(0)) + 3.0
    p = 0.3
    out = FUNCTIONS[name](x, p, True, gen(2))
    kept = out != 0
    assert kept.any() and (~kept).any()
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))


# ------------------------------------------------------------------------------------------------ locked dropout


@given(seed=rst.seeds(), p=probs)
def test_locked_mask_is_constant_along_time(seed: int, p: float) -> None:
    ones = torch.ones(6, 9, 7)  # (B, T, D) with B != T != D, so a wrong axis cannot pass by symmetry
    out = locked_dropout(ones, p, training=True, generator=gen(seed))
    assert torch.equal(out, out[:, :1, :].expand_as(out))


@given(seed=rst.seeds())
def test_locked_mask_varies_across_batch_and_features(seed: int) -> None:
    out = locked_dropout(torch.ones(32, 3, 32), 0.5, training=True, generator=gen(seed))[:, 0, :]  # (B, D)
    # Two equal rows (or columns) of 32 fair coins: chance 2**-32 per pair, never at any seed in practice.
    assert not torch.equal(out[0], out[1])
    assert not torch.equal(out[:, 0], out[:, 1])


@given(seed=rst.seeds(), p=probs)
def test_locked_drop_rate_over_sequence_feature_pairs_is_within_five_sigma(seed: int, p: float) -> None:
    B, D = 100, 100
    out = locked_dropout(torch.ones(B, 2, D), p, training=True, generator=gen(seed))
    drops = int((out[:, 0] == 0).sum())
    assert abs(drops - B * D * p) <= five_sigma(B * D, p)


def test_locked_dropout_rejects_non_batch_first_3d_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        locked_dropout(torch.ones(4, 5), 0.5, training=True)


def test_locked_module_follows_train_and_eval() -> None:
    module = LockedDropout(0.5)
    x = torch.ones(4, 3, 8)
    assert not torch.equal(module(x, gen(0)), x)
    assert module.eval()(x) is x
    assert "p=0.5" in repr(module)


# --------------------------------------------------------------------------------------------- embedding dropout


@given(seed=rst.seeds(), p=probs)
def test_embedding_rows_are_all_zero_or_scaled_word_vectors(seed: int, p: float) -> None:
    V, D = 12, 5
    emb = nn.Embedding(V, D)
    before = emb.weight.detach().clone()
    tokens = torch.randint(0, V, (4, 9), generator=gen(seed))  # repeats: word types occur many times
    out = embedding_dropout(emb(tokens), tokens, V, p, training=True, generator=gen(seed + 1))  # (B, T, D)
    zero = (out == 0).all(dim=-1)  # (B, T)
    torch.testing.assert_close(out[~zero], before[tokens][~zero] / (1 - p))
    # Whole word types: every occurrence of a word shares its fate.
    for word in tokens.unique():
        fates = zero[tokens == word]
        assert fates.all() or not fates.any()
    out.sum().backward()
    assert torch.equal(emb.weight.detach(), before)  # never mutated, not even through autograd


@given(seed=rst.seeds(), p=probs)
def test_embedding_dropout_equals_lookup_in_a_row_masked_weight(seed: int, p: float) -> None:
    V, D = 20, 4
    weight = torch.randn(V, D, generator=gen(seed))
    tokens = torch.randint(0, V, (3, 7), generator=gen(seed + 1))
    out = embedding_dropout(F.embedding(tokens, weight), tokens, V, p, training=True, generator=gen(seed + 2))
    row_mask = dropout_mask((V, 1), p, like=weight, generator=gen(seed + 2))  # the same draws
    assert torch.equal(out, F.embedding(tokens, weight * row_mask))


@given(seed=rst.seeds(), p=probs)
def test_embedding_word_type_drop_rate_is_within_five_sigma(seed: int, p: float) -> None:
    V = 20_000
    tokens = torch.arange(V)[None, :]  # every word type once
    out = embedding_dropout(torch.ones(1, V, 1), tokens, V, p, training=True, generator=gen(seed))
    drops = int((out == 0).sum())
    assert abs(drops - V * p) <= five_sigma(V, p)


def test_embedding_dropout_module_reports_its_settings() -> None:
    module = EmbeddingDropout(30, 0.1)
    assert "num_embeddings=30" in repr(module) and "p=0.1" in repr(module)
    x, tokens = torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.int64)
    assert module.eval()(x, tokens) is x


# ---------------------------------------------------------------------------------------------- output dropout


@given(seed=rst.seeds(), p=probs)
def test_output_drop_rate_is_within_five_sigma(seed: int, p: float) -> None:
    n = 20_000
    drops = int((output_dropout(torch.ones(n), p, training=True, generator=gen(seed)) == 0).sum())
    assert abs(drops - n * p) <= five_sigma(n, p)


def test_output_dropout_module_follows_train_and_eval() -> None:
    module = OutputDropout(0.4)
    x = torch.ones(8, 16)
    assert not torch.equal(module(x, gen(0)), x)
    assert module.eval()(x) is x
    assert "p=0.4" in repr(module)


# --------------------------------------------------------------------------------------------------- weight drop

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


def make_rnn(kind: str, num_layers: int = 2, bidirectional: bool = True) -> nn.RNNBase:
    torch.manual_seed(0)
    return RNNS[kind](3, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)


def rnn_input(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 5, 3, generator=gen(seed))  # (B, T, D)


@pytest.mark.parametrize("kind", sorted(RNNS))
@pytest.mark.parametrize("num_layers", [1, 3])
def test_weight_drop_targets_every_hidden_weight_of_every_layer_and_direction(kind: str, num_layers: int) -> None:
    wd = WeightDrop(make_rnn(kind, num_layers), 0.5)
    expected = {f"weight_hh_l{k}{suffix}" for k in range(num_layers) for suffix in ("", "_reverse")}
    assert set(wd.dropped_names) == expected
    dropped = wd.dropped_weights(gen(0))
    for name in expected:
        raw = getattr(wd.rnn, name)
        assert (dropped[name] == 0).any() and not (raw == 0).any()  # each one really dropped


@pytest.mark.parametrize("kind", sorted(RNNS))
@given(seed=rst.seeds())
def test_weight_drop_output_equals_the_plain_rnn_run_with_the_dropped_weights(kind: str, seed: int) -> None:
    """Differential: proves nn.LSTM/GRU's flat-weight list really uses the swapped weights, reverse ones included."""
    wd = WeightDrop(make_rnn(kind), 0.5)
    x = rnn_input(seed)
    out, _ = wd(x, generator=gen(seed))
    reference = copy.deepcopy(wd.rnn)
    with torch.no_grad():
        for name, tensor in wd.dropped_weights(gen(seed)).items():  # the same draws, in the same order
            getattr(reference, name).copy_(tensor)
    expected, _ = reference(x)
    assert torch.equal(out, expected)
    plain, _ = wd.rnn(x)
    assert not torch.equal(out, plain)


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_weight_drop_at_p_zero_equals_the_plain_rnn_exactly(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind), 0.0)
    x = rnn_input()
    assert torch.equal(wd(x)[0], wd.rnn(x)[0])


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_weight_drop_near_one_changes_both_directions(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind, num_layers=1), 0.99)
    x = rnn_input()
    dropped, plain = wd(x, generator=gen(0))[0], wd.rnn(x)[0]  # (B, T, 2H): forward half, reverse half
    H = wd.rnn.hidden_size
    # The first forward step and the last reverse step see h = 0, so only later steps can differ.
    assert not torch.equal(dropped[:, 1:, :H], plain[:, 1:, :H])
    assert not torch.equal(dropped[:, :-1, H:], plain[:, :-1, H:])


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_raw_weights_stay_leaf_parameters_that_receive_gradients(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind), 0.5)
    names = {name for name, _ in wd.named_parameters()}
    assert {f"rnn.{n}" for n in wd.dropped_names} <= names
    assert {f"rnn.{n}" for n in wd.dropped_names} <= set(wd.state_dict())
    out, _ = wd(rnn_input(), generator=gen(3))
    out.sum().backward()
    dropped = wd.dropped_weights(gen(3))
    for name in wd.dropped_names:
        raw = getattr(wd.rnn, name)
        assert isinstance(raw, nn.Parameter) and raw.is_leaf and raw.grad is not None
        # d(raw * mask)/d(raw) = mask: exactly zero gradient where the connection was dropped.
        assert torch.equal(raw.grad[dropped[name] == 0], torch.zeros_like(raw.grad[dropped[name] == 0]))
        assert raw.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_optimizer_updates_the_raw_reverse_weights(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind), 0.5)
    optimizer = torch.optim.SGD(wd.parameters(), lr=0.1)
    before = wd.rnn.weight_hh_l1_reverse.detach().clone()
    wd(rnn_input(), generator=gen(0))[0].pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(wd.rnn.weight_hh_l1_reverse.detach(), before)


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_train_eval_train_cycle_switches_weight_drop_off_and_on(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind), 0.5)
    x = rnn_input()
    plain = wd.rnn(x)[0]
    assert not torch.equal(wd(x)[0], plain)
    wd.eval()
    first, second = wd(x)[0], wd(x)[0]
    assert torch.equal(first, plain) and torch.equal(second, plain)  # eval: deterministic, no drop
    wd.train()
    assert not torch.equal(wd(x)[0], wd(x)[0])


def test_dropped_weights_in_eval_mode_are_the_raw_parameters() -> None:
    wd = WeightDrop(make_rnn("lstm"), 0.5).eval()
    for name, tensor in wd.dropped_weights(gen(0)).items():
        assert tensor is getattr(wd.rnn, name)


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_weight_drop_survives_to_deepcopy_and_state_dict_round_trip(kind: str) -> None:
    wd = WeightDrop(make_rnn(kind), 0.5)
    x = rnn_input()
    wd(x)[0].sum().backward()  # after a training call, as in real use
    clone = copy.deepcopy(wd).eval()
    wd.eval()
    assert torch.equal(clone(x)[0], wd(x)[0])
    buffer = io.BytesIO()
    torch.save(wd.state_dict(), buffer)
    buffer.seek(0)
    fresh = WeightDrop(RNNS[kind](3, 4, num_layers=2, bidirectional=True, batch_first=True), 0.5).eval()
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(x)[0], wd(x)[0])
    double = copy.deepcopy(wd).to(torch.float64).train()
    out, _ = double(x.double(), generator=gen(0))
    assert out.dtype == torch.float64 and double.rnn.weight_hh_l0_reverse.dtype == torch.float64


def test_weight_drop_rejects_a_module_that_is_not_an_rnn() -> None:
    with pytest.raises(TypeError, match=r"nn\.LSTM"):
        WeightDrop(nn.Linear(2, 2), 0.5)  # type: ignore[arg-type]
    assert "weight_p=0.5" in repr(WeightDrop(make_rnn("gru"), 0.5))


# ------------------------------------------------------------------------------- lengths, reversal and pooling


@st.composite
def padded_states(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x[B, T, D], lengths[B])`` with T = max(lengths) + a few extra pad steps."""
    seed = draw(rst.seeds())
    B = draw(st.integers(1, 5))
    lengths = torch.tensor(draw(st.lists(st.integers(1, 8), min_size=B, max_size=B)))
    T = int(lengths.max()) + draw(st.integers(0, 3))
    return torch.randn(B, T, 3, generator=gen(seed)), lengths


def with_garbage_pads(x: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    pads = torch.arange(x.shape[1])[None, :] >= lengths[:, None]  # (B, T)
    return x.masked_fill(pads[:, :, None], value)


@given(padded_states())
def test_reversal_flips_each_sequence_within_its_length_and_leaves_pads(case: tuple) -> None:
    x, lengths = case
    out = reverse_within_lengths(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(out[b, :n], x[b, :n].flip(0))
        assert torch.equal(out[b, n:], x[b, n:])
    assert torch.equal(reverse_within_lengths(out, lengths), x)  # its own inverse


@given(padded_states())
def test_pooling_matches_per_sequence_reference(case: tuple) -> None:
    x, lengths = case
    rows = [x[b, :n] for b, n in enumerate(lengths.tolist())]
    assert torch.equal(gather_last(x, lengths), torch.stack([r[-1] for r in rows]))
    assert torch.equal(masked_max(x, lengths), torch.stack([r.amax(0) for r in rows]))
    torch.testing.assert_close(masked_mean(x, lengths), torch.stack([r.mean(0) for r in rows]))


@pytest.mark.parametrize("how", ["last", "mean", "max"])
@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf"), 1e30])
@given(case=padded_states())
def test_pads_never_contribute_to_pooling(how: str, garbage: float, case: tuple) -> None:
    x, lengths = case
    clean = masked_pool(with_garbage_pads(x, lengths, 0.0), lengths, how)
    assert torch.equal(masked_pool(with_garbage_pads(x, lengths, garbage), lengths, how), clean)
    longer = torch.cat([x, torch.full((x.shape[0], 4, x.shape[2]), garbage)], dim=1)
    assert torch.equal(masked_pool(longer, lengths, how), masked_pool(x, lengths, how))  # bitwise, any T


def test_mean_pooling_of_bf16_accumulates_in_fp32() -> None:
    x = torch.randn(3, 200, 4, generator=gen(0)).bfloat16()  # long enough for a bf16 running sum to drift
    lengths = torch.tensor([200, 150, 7])
    out = masked_mean(x, lengths)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, masked_mean(x.float(), lengths).bfloat16())


def test_unknown_pooling_is_rejected() -> None:
    with pytest.raises(ValueError, match="last, mean, max"):
        masked_pool(torch.zeros(1, 2, 3), torch.tensor([2]), "sum")


lengths_lists = st.lists(st.integers(1, 12), min_size=1, max_size=9)


@given(lengths=lengths_lists, max_segments=st.integers(1, 6))
def test_time_segments_cover_every_real_step_of_every_row_once(lengths: list[int], max_segments: int) -> None:
    ordered = sorted(lengths, reverse=True)
    segments = time_segments(torch.tensor(ordered), max_segments)
    assert segments[0][0] == 0 and segments[-1][1] == ordered[0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))  # contiguous
    assert len(segments) <= max_segments + 1
    for start, stop, active in segments:
        assert start < stop
        assert active == sum(n > start for n in ordered)  # exactly the rows with tokens left at `start`


@pytest.mark.parametrize("kind", sorted(RNNS))
@given(lengths=lengths_lists, seed=rst.seeds())
def test_segmented_run_equals_one_call_on_every_real_step(kind: str, lengths: list[int], seed: int) -> None:
    torch.manual_seed(seed % 1000)
    rnn = RNNS[kind](3, 4, batch_first=True)
    ordered = torch.tensor(sorted(lengths, reverse=True))
    x = torch.randn(len(lengths), int(ordered[0]), 3, generator=gen(seed))  # rows longest first, as required
    with torch.no_grad():
        whole, _ = rnn(x)
        pieces = run_in_segments(lambda piece, state: rnn(piece, state), x, time_segments(ordered))
    real = length_mask(ordered, x.shape[1])  # (B, T)
    # Pieces run fewer rows per call; kernels may round by batch size in the last bit.
    torch.testing.assert_close(pieces[real], whole[real])


def plan_cost(segments: list[tuple[int, int, int]], call_cost: float) -> float:
    return sum(call_cost + active * (stop - start) for start, stop, active in segments)


def every_plan(ordered: list[int]) -> list[list[tuple[int, int, int]]]:
    """Every way to cut [0, max) at a subset of the distinct lengths, as (start, stop, active) pieces."""
    inner = sorted(set(ordered))[:-1]
    plans = []
    for k in range(len(inner) + 1):
        for chosen in itertools.combinations(inner, k):
            bounds = [0, *chosen, ordered[0]]
            plans.append([(a, b, sum(n > a for n in ordered)) for a, b in itertools.pairwise(bounds)])
    return plans


call_costs = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=200.0))


@given(lengths=lengths_lists, call_cost=call_costs)
def test_planned_segments_cover_every_real_step_of_every_row_once(lengths: list[int], call_cost: float) -> None:
    ordered = sorted(lengths, reverse=True)
    segments = plan_segments(torch.tensor(ordered), call_cost)
    assert segments[0][0] == 0 and segments[-1][1] == ordered[0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))  # contiguous
    for start, stop, active in segments:
        assert start < stop
        assert active == sum(n > start for n in ordered)  # exactly the rows with tokens left at `start`
        assert start == 0 or start in ordered  # cuts sit at lengths: the plan never sees the padded width


@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=7), call_cost=call_costs)
def test_planned_segments_are_the_cheapest_cut_at_lengths(lengths: list[int], call_cost: float) -> None:
    ordered = sorted(lengths, reverse=True)
    best = min(plan_cost(plan, call_cost) for plan in every_plan(ordered))
    assert plan_cost(plan_segments(ordered, call_cost), call_cost) == pytest.approx(best, rel=1e-12, abs=1e-9)


def test_a_bucketed_batch_runs_in_one_piece_and_spread_lengths_in_several() -> None:
    cost = segment_call_cost([4 * 128 * (128 + 128)])  # the defaults' LSTM: E = H = 128
    bucketed = [34] * 32 + [33] * 32  # a cut at 33 would skip 32 row-steps, less than one call
    assert plan_segments(bucketed, cost) == [(0, 34, 64)]
    spread = list(range(64, 128))  # lengths T/2..T: a quarter of the batch's row-steps are padding
    assert len(plan_segments(spread, cost)) > 2
    assert plan_segments([5, 3, 1], 0.0) == [(0, 1, 3), (1, 3, 2), (3, 5, 1)]  # free calls: cut at every length


def test_segment_call_cost_is_the_measured_call_in_row_steps() -> None:
    # 0.35 ms + 2 ns per weight, over 60 ps per weight and row-step: E = H = 128 gives ~77 row-steps.
    w = 4 * 128 * 256
    assert segment_call_cost([w]) == pytest.approx((350e-6 + 2e-9 * w) / (60e-12 * w))
    assert 60 < segment_call_cost([w]) < 90
    assert segment_call_cost([w, w]) == pytest.approx(segment_call_cost([w]))  # layers add up alike
    assert segment_call_cost([16 * w]) < segment_call_cost([w]) < segment_call_cost([w // 16])  # big layers cut more


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: segment_call_cost([]), "layer_weights"),
        (lambda: segment_call_cost([0]), "layer_weights"),
        (lambda: plan_segments([3, 1], -1.0), "call_cost"),
        (lambda: plan_segments([3, 1], float("nan")), "call_cost"),
    ],
)
def test_segment_planning_refuses_bad_input_naming_it(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_one_planned_piece_is_exactly_one_call_on_the_whole_batch(kind: str) -> None:
    torch.manual_seed(0)
    rnn = RNNS[kind](3, 4, batch_first=True)
    x = torch.randn(5, 6, 3, generator=gen(1))
    calls: list[tuple[int, ...]] = []

    def step(piece: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        calls.append(tuple(piece.shape))
        return rnn(piece, state)

    with torch.no_grad():
        out = run_in_segments(step, x, [(0, 6, 5)])
        assert torch.equal(out, rnn(x)[0])
    assert calls == [(5, 6, 3)]


# ---------------------------------------------------------------------------------- recurrent (Gal) dropout loop


def single_layer_weights(rnn: nn.RNNBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0


@pytest.mark.parametrize("kind", sorted(RNNS))
@given(seed=rst.seeds())
def test_step_loop_at_p_zero_equals_torch_rnn(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    rnn = RNNS[kind](3, 4, batch_first=True)
    x = torch.randn(3, 6, 3, generator=gen(seed))
    expected, _ = rnn(x)
    out = rnn_step_loop(x, single_layer_weights(rnn), kind, 0.0, training=True)
    torch.testing.assert_close(out, expected)  # same math, different kernels: fp32 rounding only
    in_eval = rnn_step_loop(x, single_layer_weights(rnn), kind, 0.5, training=False)
    torch.testing.assert_close(in_eval, expected)


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_recurrent_dropout_changes_training_output_but_only_through_the_recurrence(kind: str) -> None:
    torch.manual_seed(0)
    rnn = RNNS[kind](3, 4, batch_first=True)
    x = torch.randn(3, 6, 3, generator=gen(1))
    plain = rnn_step_loop(x, single_layer_weights(rnn), kind, 0.0, training=True)
    dropped = rnn_step_loop(x, single_layer_weights(rnn), kind, 0.5, training=True, generator=gen(2))
    assert torch.equal(dropped[:, 0], plain[:, 0])  # h0 = 0: nothing to drop at the first step
    assert not torch.equal(dropped[:, 1:], plain[:, 1:])
    # With no recurrent weights the mask has nothing to act on: the carried state itself is never masked.
    w_ih, w_hh, b_ih, b_hh = single_layer_weights(rnn)
    no_recurrence = (w_ih, torch.zeros_like(w_hh), b_ih, b_hh)
    torch.testing.assert_close(
        rnn_step_loop(x, no_recurrence, kind, 0.5, training=True, generator=gen(2)),
        rnn_step_loop(x, no_recurrence, kind, 0.0, training=True),
        rtol=0,
        atol=0,
    )


def gal_reference(x: torch.Tensor, weights: tuple, kind: str, mask: torch.Tensor) -> torch.Tensor:
    """Gal dropout written with PyTorch's own cells and one fixed ``mask[B, H]``: only the recurrent product sees
    ``h * mask``; the carried state (LSTM's c and h, GRU's z * h term) is never masked."""
    w_ih, w_hh, b_ih, b_hh = weights
    B, T, D = x.shape  # batch, time, input features
    H = w_hh.shape[1]  # hidden units
    cell = (nn.LSTMCell if kind == "lstm" else nn.GRUCell)(D, H).to(x.dtype)
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights, strict=True):
            getattr(cell, name).copy_(value)
    h, c = x.new_zeros(B, H), x.new_zeros(B, H)
    outputs = []
    for t in range(T):
        if kind == "lstm":
            h, c = cell(x[:, t], (h * mask, c))  # c enters unmasked; h only through W_hh
        else:
            # GRUCell would also mask the carried h in (1 - z) * n + z * h; put the unmasked h back there.
            z = torch.sigmoid(F.linear(x[:, t], w_ih, b_ih) + F.linear(h * mask, w_hh, b_hh)).chunk(3, dim=1)[1]
            h = cell(x[:, t], h * mask) + z * (h - h * mask)
        outputs.append(h)
    return torch.stack(outputs, dim=1)  # (B, T, H)


def diagonal_recurrence(weights: tuple) -> tuple:
    """The same weights with each gate's W_hh block made diagonal: hidden unit j then feeds back only into itself,
    so its trajectory depends on its own mask entry alone and the mask can be read off the output."""
    w_ih, w_hh, b_ih, b_hh = weights
    H = w_hh.shape[1]
    eye = torch.eye(H, dtype=w_hh.dtype).repeat(w_hh.shape[0] // H, 1)  # (G*H, H)
    return w_ih, w_hh * eye + eye, b_ih, b_hh  # a strong self-loop: keeping and dropping h differ clearly


@pytest.mark.parametrize("kind", sorted(RNNS))
@given(seed=rst.seeds(), p=st.floats(0.3, 0.7))
def test_recurrent_dropout_is_one_sequence_unit_mask_reused_at_every_step(kind: str, seed: int, p: float) -> None:
    """Differential: the Gal step loop equals PyTorch's cells run with ONE fixed (sequence, unit) mask.

    The mask is read off the output (not replayed from the generator): with diagonal recurrent weights each
    (sequence, unit) trajectory must equal the all-kept or the all-dropped reference at every step. A mask drawn
    anew at each step matches neither. The same generator seed then draws the same mask for the full weights.
    """
    torch.manual_seed(seed % 1000)
    rnn = RNNS[kind](3, 8, batch_first=True).double()
    weights = tuple(w.detach() for w in single_layer_weights(rnn))
    x = torch.randn(6, 7, 3, generator=gen(seed), dtype=torch.float64)  # B=6, T=7
    keep, drop = torch.full((6, 8), 1 / (1 - p), dtype=torch.float64), torch.zeros(6, 8, dtype=torch.float64)
    diagonal = diagonal_recurrence(weights)
    out = rnn_step_loop(x, diagonal, kind, p, training=True, generator=gen(seed + 1))
    if_kept, if_dropped = gal_reference(x, diagonal, kind, keep), gal_reference(x, diagonal, kind, drop)
    assert ((if_kept - if_dropped)[:, 1:].abs().amax(dim=1) > 1e-6).all()  # step 1 on tells the two apart
    kept = ((out - if_kept)[:, 1:].abs() < 1e-9).all(dim=1)  # (B, H): kept at every step 1..T-1
    dropped = ((out - if_dropped)[:, 1:].abs() < 1e-9).all(dim=1)  # (B, H): dropped at every step
    assert (kept | dropped).all(), f"{int((~(kept | dropped)).sum())} (sequence, unit) masks change over time"
    assert kept.any() and dropped.any()  # 48 units at p in [0.3, 0.7]: all alike has probability < 4e-8
    mask = torch.where(kept, keep, drop)
    assert not (mask == mask[:1]).all()  # one mask per sequence, not one for the batch: 6 equal rows < 5e-8
    full = rnn_step_loop(x, weights, kind, p, training=True, generator=gen(seed + 1))
    torch.testing.assert_close(full, gal_reference(x, weights, kind, mask), rtol=1e-12, atol=1e-12)


@given(seed=rst.seeds(), extra=st.integers(1, 4), p=probs)
def test_no_mask_depends_on_the_padded_width(seed: int, extra: int, p: float) -> None:
    """Masks depend on (sequence, feature), word type or (sequence, unit), never on T: with the same generator,
    appending padded steps leaves every original step's output unchanged, bit for bit."""
    B, T, D = 3, 5, 4  # batch, time, features
    x = torch.randn(B, T, D, generator=gen(seed))
    wider = torch.cat([x, torch.randn(B, extra, D, generator=gen(seed + 1))], dim=1)  # (B, T + extra, D)
    tokens = torch.randint(1, 9, (B, T), generator=gen(seed + 2))
    wider_tokens = torch.cat([tokens, torch.zeros(B, extra, dtype=torch.int64)], dim=1)  # PAD = 0 appended
    assert torch.equal(
        locked_dropout(wider, p, training=True, generator=gen(seed))[:, :T],
        locked_dropout(x, p, training=True, generator=gen(seed)),
    )
    assert torch.equal(
        embedding_dropout(wider, wider_tokens, 9, p, training=True, generator=gen(seed))[:, :T],
        embedding_dropout(x, tokens, 9, p, training=True, generator=gen(seed)),
    )
    weights = single_layer_weights(nn.LSTM(D, 3, batch_first=True))
    torch.testing.assert_close(  # a causal loop: later steps cannot reach earlier ones; rounding may differ
        rnn_step_loop(wider, weights, "lstm", p, training=True, generator=gen(seed))[:, :T],
        rnn_step_loop(x, weights, "lstm", p, training=True, generator=gen(seed)),
    )


def test_step_loop_rejects_an_unknown_mode() -> None:
    rnn = nn.LSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="'lstm' or 'gru'"):
        rnn_step_loop(torch.zeros(1, 2, 3), single_layer_weights(rnn), "rnn", 0.0, training=False)


# ------------------------------------------------------------------------------------------------------ autocast


def bare_rnn_autocast_dtype(kind: str, dtype: torch.dtype = torch.bfloat16) -> torch.dtype | None:
    """What a bare nn.LSTM/nn.GRU does under CPU autocast here, asked directly (not through rnnreg): its output
    dtype when forward and backward both run, None when the kernel raises (oneDNN's LSTM without bf16 support)."""
    rnn = RNNS[kind](3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, generator=gen(0), requires_grad=True)
    try:
        with torch.autocast("cpu", dtype=dtype):
            out, _ = rnn(x)
        out.float().sum().backward()
    except RuntimeError:
        return None
    return out.dtype


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_rnn_under_cpu_bf16_autocast_runs_and_reports_the_precision_it_used(kind: str) -> None:
    # The expected dtype comes from a bare PyTorch RNN run here, so a probe that lies (e.g. always "no") is caught
    # on any CPU whose kernels do run bf16; the fake-kernel test below catches it on CPUs whose kernels don't.
    direct = bare_rnn_autocast_dtype(kind)
    assert rnn_supports_autocast(kind, "cpu", torch.bfloat16) == (direct == torch.bfloat16)
    rnn = RNNS[kind](3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, generator=gen(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = run_rnn(rnn, x, kind)
    assert out.dtype == (torch.bfloat16 if direct == torch.bfloat16 else torch.float32)
    if direct != torch.bfloat16:  # the fallback is plain fp32, exactly
        assert torch.equal(out, rnn(x)[0])


class _FakeRNN(nn.Module):
    """Stands in for nn.LSTM/nn.GRU with a known autocast behaviour: ``(out, state) = rnn(x)``."""

    behaviour = "low"

    def __init__(self, input_size: int, hidden_size: int, *args: object, **kwargs: object) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, hidden_size)

    def forward(self, x: torch.Tensor, hx: object = None) -> tuple[torch.Tensor, None]:
        if self.behaviour == "raises":
            raise RuntimeError("could not create a primitive descriptor")  # as oneDNN says it
        if self.behaviour == "fp32":
            with torch.autocast(x.device.type, enabled=False):
                return self.proj(x.float()), None
        out = self.proj(x)  # a Linear: autocast runs it in the low-precision dtype
        if self.behaviour == "backward_raises":
            out = _FailingBackward.apply(out)
        return out, None


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no backward kernel for this dtype")


@pytest.mark.parametrize(
    ("behaviour", "expected"), [("low", True), ("fp32", False), ("raises", False), ("backward_raises", False)]
)
@pytest.mark.parametrize("kind", sorted(RNNS))
def test_autocast_probe_answers_what_the_kernel_really_does(
    kind: str, behaviour: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels whose behaviour the test knows: yes only when forward and backward both run in low precision."""
    fake = type("Fake", (_FakeRNN,), {"behaviour": behaviour})
    monkeypatch.setitem(RNN_TYPES, kind, fake)
    rnn_supports_autocast.cache_clear()
    try:
        assert rnn_supports_autocast(kind, "cpu", torch.bfloat16) is expected
    finally:
        rnn_supports_autocast.cache_clear()  # the next caller probes the real kernel again


def test_autocast_probe_leaves_the_global_rng_and_grad_mode_alone() -> None:
    rnn_supports_autocast.cache_clear()
    state = torch.get_rng_state()
    with torch.no_grad():
        answer = rnn_supports_autocast("lstm", "cpu", torch.bfloat16)
    assert torch.equal(torch.get_rng_state(), state)
    rnn_supports_autocast.cache_clear()
    assert rnn_supports_autocast("lstm", "cpu", torch.bfloat16) == answer  # under no_grad it answers the same


# The meta device stands in for CUDA here: tensors with shapes and devices but no values. A helper that built a
# tensor on the CPU (device=None) instead of the input's device would fail or return a CPU tensor.
META = torch.device("meta")


def test_masks_and_indices_are_built_on_the_device_asked_for() -> None:
    lengths = torch.tensor([3, 1, 2])  # lengths stay on the CPU, as Batch.to keeps them
    like = torch.empty(3, 4, 5, dtype=torch.float64, device=META)
    mask = dropout_mask((3, 1, 5), 0.3, like=like)
    assert (mask.device, mask.dtype, tuple(mask.shape)) == (META, torch.float64, (3, 1, 5))
    assert length_mask(lengths, 4, META).device == META
    assert reverse_index(lengths, 4, META).device == META


@pytest.mark.parametrize(
    "fn",
    [
        reverse_within_lengths,
        gather_last,
        masked_mean,
        masked_max,
        lambda x, n: locked_dropout(x, 0.3, training=True),
        lambda x, n: output_dropout(x, 0.3, training=True),
        lambda x, n: weight_drop(x, 0.3, training=True),
        lambda x, n: embedding_dropout(x, torch.zeros(3, 4, dtype=torch.long, device=META), 7, 0.3, training=True),
    ],
    ids=["reverse", "gather_last", "masked_mean", "masked_max", "locked", "output", "weight_drop", "embedding"],
)
def test_layer_functions_keep_the_inputs_device(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    x = torch.empty(3, 4, 5, device=META)
    assert fn(x, torch.tensor([3, 1, 2])).device == META


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: LockedDropout(1.5), "p"),
        (lambda: OutputDropout(-0.1), "p"),
        (lambda: EmbeddingDropout(10, 1.0), "p"),
        (lambda: WeightDrop(nn.LSTM(2, 2), 1.2), "weight_p"),
        (lambda: locked_dropout(torch.ones(1, 1, 1), 1.5, training=True), "p"),
        (lambda: output_dropout(torch.ones(1), 1.5, training=True), "p"),
        (lambda: weight_drop(torch.ones(1), 1.5, training=True), "p"),
        (
            lambda: embedding_dropout(torch.ones(1, 1, 1), torch.zeros(1, 1, dtype=torch.long), 2, 1.5, training=True),
            "p",
        ),
        (lambda: dropout_mask((1,), 1.5, like=torch.ones(1)), "p"),
    ],
)
def test_a_probability_outside_0_1_is_refused_naming_the_argument(make: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a probability in \[0, 1\) \(got "):
        make()


CALLS_WITH_A_GENERATOR: dict[str, Callable[[torch.Generator], torch.Tensor]] = {
    "locked": lambda g: LockedDropout(0.5)(torch.ones(4, 3, 8), generator=g),
    "output": lambda g: OutputDropout(0.5)(torch.ones(4, 8), generator=g),
    "embedding": lambda g: EmbeddingDropout(10, 0.5)(
        torch.ones(4, 3, 8), torch.arange(12).view(4, 3) % 10, generator=g
    ),
}


@pytest.mark.parametrize("call", CALLS_WITH_A_GENERATOR.values(), ids=CALLS_WITH_A_GENERATOR.keys())
def test_the_dropout_modules_draw_from_the_generator_they_are_given(
    call: Callable[[torch.Generator], torch.Tensor],
) -> None:
    torch.manual_seed(1)
    first = call(torch.Generator().manual_seed(3))
    torch.manual_seed(2)  # a different global stream: only the generator may decide the mask
    assert torch.equal(first, call(torch.Generator().manual_seed(3)))
