"""SequenceClassifier is exactly padding-invariant and batch-independent, equals a packed PyTorch RNN at p = 0,
and every regularizer it is configured with acts; NotebookBiLSTM and build_model keep their contracts.

Logits are bit-identical under more padding and garbage in pad slots (asserted exactly). Batch-mates change batch
sizes, and GEMM kernels round by batch size (oneDNN's LSTM at batch 1, the nn.Linear head): measured on CPU up to
6e-8 (LSTM) and 1.1e-7 (GRU), so those claims use the fp32 assert_close defaults.
"""

from __future__ import annotations

import copy
import io
import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnreg.batch import PAD_ID, Batch
from rnnreg.config import ModelConfig
from rnnreg.layers import dropout_mask
from rnnreg.model import NotebookBiLSTM, RegularizerNoOpWarning, SequenceClassifier, build_model, check_inputs
from rnnreg.step import low_precision_modules, probe_autocast
from rnnreg.testing import strategies as rst

V, C = 30, 3  # vocab size, classes
NO_DROPOUT = {"embed_p": 0.0, "input_p": 0.0, "hidden_p": 0.0, "weight_p": 0.0, "output_p": 0.0, "recurrent_p": 0.0}
# T may exceed max(lengths): pad columns no row reaches, where a model reading T instead of lengths shows.
batches = rst.padded_batches(vocab_size=V, num_classes=C, max_batch=5, max_len=8, max_extra_pad=3)


def config(**changes: object) -> ModelConfig:
    settings: dict[str, object] = {"embed_dim": 6, "hidden_dim": 5, **NO_DROPOUT}
    settings.update(changes)
    return ModelConfig(**settings)  # type: ignore[arg-type]


def model_for(cfg: ModelConfig, seed: int = 0) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(cfg, V, C)


def features(model: SequenceClassifier, tokens: Tensor, lengths: Tensor) -> Tensor:
    """The pooled features the head sees, read with a hook (the model stays untouched)."""
    seen: list[Tensor] = []
    handle = model.head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    try:
        model(tokens, lengths)
    finally:
        handle.remove()
    return seen[0]


def pad_more(batch: Batch, extra: int, seed: int) -> Tensor:
    """Tokens with ``extra`` more steps and every pad slot (old and new) holding a random real id."""
    B, T = batch.tokens.shape
    garbage = torch.randint(1, V, (B, T + extra), generator=torch.Generator().manual_seed(seed))
    valid = torch.arange(T + extra)[None, :] < batch.lengths[:, None]
    garbage[:, :T][valid[:, :T]] = batch.tokens[valid[:, :T]]
    return garbage


model_shapes = st.fixed_dictionaries(
    {
        "rnn": st.sampled_from(["lstm", "gru"]),
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "pooling": st.sampled_from(["last", "mean", "max"]),
    }
)


# --------------------------------------------------------------------------- differential: packed PyTorch reference


def packed_reference(model: SequenceClassifier, tokens: Tensor, lengths: Tensor) -> Tensor:
    """The same network written the textbook way: one packed nn.LSTM/nn.GRU with the model's weights copied in."""
    cfg = model.cfg
    rnn_type = {"lstm": nn.LSTM, "gru": nn.GRU}[cfg.rnn]
    rnn = rnn_type(
        cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, bidirectional=cfg.bidirectional, batch_first=True
    )
    state = {}
    for k in range(cfg.num_layers):
        for suffix in ("", "_reverse") if cfg.bidirectional else ("",):
            for name, p in model.rnns[f"l{k}{suffix}"].rnn.named_parameters():
                state[name.replace("_l0", f"_l{k}") + suffix] = p.detach()
    rnn.load_state_dict(state)
    packed_out, hidden = rnn(pack_padded_sequence(model.embedding(tokens), lengths, True, enforce_sorted=False))
    h_n = hidden[0] if cfg.rnn == "lstm" else hidden  # (layers * dirs, B, H)
    if cfg.pooling == "last":
        pooled = torch.cat([h_n[-2], h_n[-1]], 1) if cfg.bidirectional else h_n[-1]
    else:
        out, _ = pad_packed_sequence(packed_out, batch_first=True)  # (B, T_max, dirs*H), zeros after each length
        rows = [out[b, :n] for b, n in enumerate(lengths.tolist())]
        pooled = torch.stack([r.mean(0) if cfg.pooling == "mean" else r.amax(0) for r in rows])
    return model.head(pooled)


@given(shape=model_shapes, batch=batches, seed=rst.seeds())
def test_model_at_p_zero_equals_packed_torch_rnn_with_same_pooling(shape: dict, batch: Batch, seed: int) -> None:
    model = model_for(config(**shape), seed % 1000)
    with torch.no_grad():
        expected = packed_reference(model, batch.tokens, batch.lengths)
        # Train mode too: with every p = 0 nothing may change.
        for mode in (False, True):
            torch.testing.assert_close(model.train(mode)(batch.tokens, batch.lengths), expected)


def test_unpacked_bidirectional_lstm_leaks_padding_so_the_invariance_tests_can_fail() -> None:
    """A plain nn.LSTM(bidirectional=True) on a padded batch starts its reverse pass on the pads."""
    torch.manual_seed(0)
    embedding, lstm = nn.Embedding(V, 6, padding_idx=PAD_ID), nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    tokens, lengths = torch.tensor([[3, 4, 5]]), torch.tensor([3])
    padded = torch.tensor([[3, 4, 5, PAD_ID, PAD_ID]])

    def naive_final_states(t: Tensor) -> Tensor:
        out, _ = lstm(embedding(t))
        return torch.cat([out[0, 2, :5], out[0, 0, 5:]])  # forward at the last token, reverse at the first

    with torch.no_grad():
        assert not torch.allclose(naive_final_states(tokens), naive_final_states(padded), rtol=0, atol=1e-4)
        model = model_for(config(rnn="lstm", bidirectional=True))
        assert torch.equal(features(model.eval(), tokens, lengths), features(model, padded, lengths))


# ------------------------------------------------------------------------------ padding invariance, batch-mates


@given(shape=model_shapes, batch=batches, extra=st.integers(0, 6), seed=rst.seeds())
def test_eval_logits_ignore_more_padding_and_garbage_in_pad_slots(
    shape: dict, batch: Batch, extra: int, seed: int
) -> None:
    model = model_for(config(**shape), seed % 1000).eval()
    padded = pad_more(batch, extra, seed)
    with torch.no_grad():
        # Steps past the longest length are never run, and garbage in a shorter row's pads only reaches steps
        # after that row's end, which nothing reads: exact, for both RNNs.
        assert torch.equal(model(padded, batch.lengths), model(batch.tokens, batch.lengths))


@given(shape=model_shapes, batch=batches, mates=batches, seed=rst.seeds())
def test_eval_outputs_do_not_depend_on_batch_mates_or_their_order(
    shape: dict, batch: Batch, mates: Batch, seed: int
) -> None:
    model = model_for(config(**shape), seed % 1000).eval()
    B, T = batch.tokens.shape
    width = max(T, mates.tokens.shape[1])
    tokens = torch.full((B + len(mates), width), PAD_ID)
    tokens[:B, :T], tokens[B:, : mates.tokens.shape[1]] = batch.tokens, mates.tokens
    lengths = torch.cat([batch.lengths, mates.lengths])
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed))
    where = torch.argsort(perm)[:B]  # rows of the original batch inside the shuffled one
    with torch.no_grad():
        alone = model(batch.tokens, batch.lengths)
        together = model(tokens[perm], lengths[perm])[where]
        # GEMM kernels (oneDNN's LSTM at batch 1, nn.Linear's head) round differently by batch size: last bits only.
        torch.testing.assert_close(together, alone)


@given(shape=model_shapes, batch=batches, mates=batches)
def test_gradients_of_one_sample_do_not_depend_on_other_samples(shape: dict, batch: Batch, mates: Batch) -> None:
    model = model_for(config(**shape)).train()  # every p = 0: train mode with no randomness
    one_tokens, one_length = batch.tokens[:1, : int(batch.lengths[0])], batch.lengths[:1]
    width = max(batch.tokens.shape[1], mates.tokens.shape[1])
    tokens = torch.full((1 + len(mates), width), PAD_ID)
    tokens[0, : one_tokens.shape[1]], tokens[1:, : mates.tokens.shape[1]] = one_tokens[0], mates.tokens
    lengths = torch.cat([one_length, mates.lengths])

    def grads_of_first_row(t: Tensor, n: Tensor) -> list[Tensor]:
        model.zero_grad(set_to_none=False)
        model(t, n)[0].pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for mine, shared in zip(
        grads_of_first_row(one_tokens, one_length), grads_of_first_row(tokens, lengths), strict=True
    ):
        torch.testing.assert_close(shared, mine)


# --------------------------------------------------------------------------------------------- regularizers act

REGULARIZERS = {
    "embed_p": {},
    "input_p": {},
    "hidden_p": {"num_layers": 2},
    "weight_p": {},
    "output_p": {},
    "recurrent_p": {},
}


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_each_configured_dropout_changes_training_output_and_not_eval_output(name: str, rnn: str) -> None:
    shape = {"rnn": rnn, "bidirectional": True, **REGULARIZERS[name]}
    plain, regularized = model_for(config(**shape)), model_for(config(**shape, **{name: 0.5}))
    tokens = torch.randint(1, V, (8, 7), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([7, 6, 5, 4, 3, 2, 1, 7])
    with torch.no_grad():
        reference = plain.eval()(tokens, lengths)
        torch.manual_seed(1)
        assert not torch.allclose(regularized.train()(tokens, lengths), reference)  # p > 0 that acts
        regularized.eval()
        assert torch.equal(regularized(tokens, lengths), reference)  # eval: off, and deterministic
        assert torch.equal(regularized(tokens, lengths), reference)
        regularized.train()
        assert not torch.equal(regularized(tokens, lengths), regularized(tokens, lengths))  # train -> eval -> train


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@given(batch=batches, seed=rst.seeds())
def test_weight_drop_uses_one_mask_per_pass_for_every_time_step(rnn: str, batch: Batch, seed: int) -> None:
    """Differential: the training pass equals the packed reference run with the dropped weights, drawn once."""
    model = model_for(config(rnn=rnn, weight_p=0.5)).train()
    torch.manual_seed(seed)
    with torch.no_grad():
        logits = model(batch.tokens, batch.lengths)
    reference = copy.deepcopy(model)
    torch.manual_seed(seed)  # replay the draws: forward direction first, then the reverse one
    with torch.no_grad():
        for name in ("l0", "l0_reverse"):
            w_hh = reference.rnns[name].rnn.weight_hh_l0
            w_hh.mul_(dropout_mask(w_hh.shape, 0.5, like=w_hh))
        expected = packed_reference(reference, batch.tokens, batch.lengths)
    torch.testing.assert_close(logits, expected)


# ------------------------------------------------------------------- the dropouts are the promised kinds, end to end
#
# Checked through SequenceClassifier's output, whatever its internals: each claim says the training forward equals
# an eval forward of the same model with a mask folded into its embedding weight, and the tests search the few
# possible masks. Element-wise dropout (or a mask per position, or per time step) matches none of them.


def embedding_of(model: nn.Module) -> nn.Embedding:
    (embedding,) = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    return embedding


def folded_logits(model: nn.Module, tokens: Tensor, lengths: Tensor, scale: Tensor, *, rows: bool) -> Tensor:
    """Eval logits of a copy of ``model`` whose embedding weight is multiplied by ``scale``: per vocabulary row
    (``rows=True``, scale[V]) or per feature column (scale[E])."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        weight = embedding_of(folded).weight
        weight.mul_(scale[:, None] if rows else scale[None, :])
        return folded(tokens, lengths)


def training_logits(model: nn.Module, tokens: Tensor, lengths: Tensor, seed: int) -> Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.train()(tokens, lengths)


WORDS = (3, 7, 11)  # the only word types in the batch below


def word_batch(seed: int) -> tuple[Tensor, Tensor]:
    """Five rows of 3-7 tokens drawn from WORDS, padded to T = 9 > max(lengths)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 6, 5, 4, 3])
    tokens = torch.tensor(WORDS)[torch.randint(len(WORDS), (5, 9), generator=g)]
    tokens[torch.arange(9)[None, :] >= lengths[:, None]] = PAD_ID
    return tokens, lengths


@settings(max_examples=10)  # 8 candidate forwards per example (~0.3 s)
@given(rnn=st.sampled_from(["lstm", "gru"]), seed=rst.seeds())
def test_model_embedding_dropout_drops_word_types_with_one_mask_for_the_batch(rnn: str, seed: int) -> None:
    """Training forward == eval forward with some vocabulary rows of the embedding zeroed and the rest scaled by
    1/(1-p): one keep/drop per word type, shared by all its occurrences in every sequence."""
    p = 0.5
    model = model_for(config(rnn=rnn, embed_p=p, pooling="mean"), seed % 1000).double()
    tokens, lengths = word_batch(seed)
    trained = training_logits(model, tokens, lengths, seed)
    candidates = []
    for kept in itertools.product((0.0, 1.0 / (1.0 - p)), repeat=len(WORDS)):
        scale = torch.ones(V, dtype=torch.float64)
        scale[list(WORDS)] = torch.tensor(kept, dtype=torch.float64)
        candidates.append(folded_logits(model, tokens, lengths, scale, rows=True))
    gaps = [float((trained - c).abs().max()) for c in candidates]
    assert min(gaps) < 1e-9, f"no word-type mask explains the training forward (closest differs by {min(gaps):.3g})"


@settings(max_examples=10)  # 8 candidate forwards per example (~0.3 s)
@given(rnn=st.sampled_from(["lstm", "gru"]), seed=rst.seeds())
def test_model_input_dropout_is_one_mask_per_sequence_and_feature_constant_over_time(rnn: str, seed: int) -> None:
    """Each row's training forward == its eval forward with the embedding's feature columns scaled by one
    {0, 1/(1-p)} mask of that row: the same mask at every step of the sequence."""
    p, E = 0.5, 3
    model = model_for(config(rnn=rnn, embed_dim=E, input_p=p, pooling="mean"), seed % 1000).double()
    tokens, lengths = word_batch(seed)
    trained = training_logits(model, tokens, lengths, seed)
    masks = list(itertools.product((0.0, 1.0 / (1.0 - p)), repeat=E))
    candidates = [
        folded_logits(model, tokens, lengths, torch.tensor(m, dtype=torch.float64), rows=False) for m in masks
    ]
    gaps = torch.stack([(trained - c).abs().amax(dim=1) for c in candidates])  # (masks, B)
    unexplained = (gaps.amin(dim=0) >= 1e-9).nonzero().flatten().tolist()
    assert not unexplained, f"rows {unexplained}: no mask constant over time explains the training forward"


@settings(max_examples=5)  # 16 candidate forwards per example
@given(rnn=st.sampled_from(["lstm", "gru"]), seed=rst.seeds())
def test_model_hidden_dropout_between_layers_is_one_mask_per_sequence_and_feature(rnn: str, seed: int) -> None:
    """Between layers too: each row's training forward == its eval forward with the input-weight columns of the
    second layer's RNNs (found by their input size, 2H) scaled by one {0, 1/(1-p)} mask of that row."""
    p, H = 0.5, 2
    model = model_for(config(rnn=rnn, num_layers=2, hidden_dim=H, hidden_p=p, pooling="mean"), seed % 1000).double()
    tokens, lengths = word_batch(seed)
    trained = training_logits(model, tokens, lengths, seed)
    gaps = []
    for mask in itertools.product((0.0, 1.0 / (1.0 - p)), repeat=2 * H):
        folded = copy.deepcopy(model).eval()
        second = [m for m in folded.modules() if isinstance(m, nn.RNNBase) and m.input_size == 2 * H]
        assert len(second) == 2  # layer 2, both directions (embed_dim 6 != 2H)
        with torch.no_grad():
            for rnn_module in second:
                rnn_module.weight_ih_l0.mul_(torch.tensor(mask, dtype=torch.float64)[None, :])
            gaps.append((trained - folded(tokens, lengths)).abs().amax(dim=1))  # (B,)
    unexplained = (torch.stack(gaps).amin(dim=0) >= 1e-9).nonzero().flatten().tolist()
    assert not unexplained, f"rows {unexplained}: no mask constant over time explains the training forward"


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_weight_drop_still_acts_on_the_recurrent_dropout_path(rnn: str) -> None:
    """With weight_p = 1 - 1e-6 every W_hh entry is dropped (all 2 x 16 survive with probability ~3e-5), so the
    training forward with Gal dropout on equals an eval forward with every weight_hh zeroed: Gal masks only reach
    the output through W_hh. A Gal path that skips weight drop keeps the recurrence and differs."""
    model = model_for(config(rnn=rnn, hidden_dim=2, weight_p=1 - 1e-6, recurrent_p=0.5)).double()
    tokens, lengths = word_batch(0)
    trained = training_logits(model, tokens, lengths, seed=0)
    no_recurrence = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in no_recurrence.modules():
            if isinstance(module, nn.RNNBase):
                for name, weight in module.named_parameters(recurse=False):
                    if name.startswith("weight_hh"):
                        weight.zero_()
        expected = no_recurrence(tokens, lengths)
    torch.testing.assert_close(trained, expected, rtol=1e-9, atol=1e-9)


def test_model_input_dropout_draws_a_separate_mask_for_each_sequence_and_feature() -> None:
    """Over a few seeds the rows' masks differ (one mask shared by the batch never would) and some row keeps some
    features and drops others (one keep/drop per whole sequence never would)."""
    p, E = 0.5, 3
    model = model_for(config(input_p=p, embed_dim=E, pooling="mean")).double()
    masks = list(itertools.product((0.0, 1.0 / (1.0 - p)), repeat=E))
    chosen: list[list[tuple[float, ...]]] = []
    for seed in range(3):  # a correct model gives 5 equal rows with probability (1/8)**4, 5 uniform rows (1/4)**5
        tokens, lengths = word_batch(seed)
        trained = training_logits(model, tokens, lengths, seed)
        candidates = [
            folded_logits(model, tokens, lengths, torch.tensor(m, dtype=torch.float64), rows=False) for m in masks
        ]
        gaps = torch.stack([(trained - c).abs().amax(dim=1) for c in candidates])  # (masks, B)
        chosen.append([masks[i] for i in gaps.argmin(dim=0).tolist()])
    assert any(len(set(rows)) > 1 for rows in chosen)
    assert any(len(set(mask)) > 1 for rows in chosen for mask in rows)


@given(cfg=rst.model_configs(max_dim=6), batch=batches, extra=st.integers(0, 4), seed=rst.seeds())
def test_train_mode_is_padding_invariant_at_a_fixed_seed(cfg: ModelConfig, batch: Batch, extra: int, seed: int) -> None:
    """No mask depends on T (embedding: per word type; locked: per sequence; weights; outputs), so pads stay inert."""
    model = SequenceClassifier(cfg, V, C).train()
    padded = pad_more(batch, extra, seed)
    with torch.no_grad():
        torch.manual_seed(seed)
        original = model(batch.tokens, batch.lengths)
        torch.manual_seed(seed)
        longer = model(padded, batch.lengths)
    torch.testing.assert_close(longer, original)


def test_same_seed_gives_bit_identical_training_forward() -> None:
    cfg = config(embed_p=0.2, input_p=0.2, weight_p=0.2, output_p=0.2, recurrent_p=0.2, hidden_p=0.2, num_layers=2)
    tokens, lengths = (
        torch.randint(1, V, (4, 6), generator=torch.Generator().manual_seed(0)),
        torch.tensor([6, 5, 2, 1]),
    )
    runs = []
    for _ in range(2):
        model = model_for(cfg, seed=3).train()
        torch.manual_seed(4)
        runs.append(model(tokens, lengths))
    assert torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------------------------------------------- validation

GOOD_TOKENS, GOOD_LENGTHS = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])


@pytest.mark.parametrize(
    ("tokens", "lengths", "message"),
    [
        (GOOD_TOKENS[0], GOOD_LENGTHS, "2-D int64"),
        (GOOD_TOKENS.int(), GOOD_LENGTHS, "2-D int64"),
        (GOOD_TOKENS.float(), GOOD_LENGTHS, "2-D int64"),
        (GOOD_TOKENS, GOOD_LENGTHS[:1], r"shape \(2,\)"),
        (GOOD_TOKENS, GOOD_LENGTHS.int(), "int64 tensor of shape"),
        (GOOD_TOKENS, torch.tensor([3, 0]), r"in \[1, 3\]"),
        (GOOD_TOKENS, torch.tensor([4, 2]), r"in \[1, 3\]"),
        (torch.tensor([[1, 2, V]]), torch.tensor([3]), rf"in \[0, {V - 1}\]"),
        (torch.tensor([[1, -1, 2]]), torch.tensor([3]), rf"in \[0, {V - 1}\]"),
        (torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), "empty"),
    ],
)
def test_bad_batches_raise_a_clear_value_error(tokens: Tensor, lengths: Tensor, message: str) -> None:
    for model in (model_for(config()), NotebookBiLSTM(V, 4, 4, C, lstm_dropout=0.0)):
        with pytest.raises(ValueError, match=message):
            model(tokens, lengths)


def test_non_tensor_inputs_raise_type_error() -> None:
    with pytest.raises(TypeError, match="two tensors"):
        model_for(config())([[1, 2]], torch.tensor([2]))


@pytest.mark.parametrize(("vocab_size", "num_classes"), [(1, 2), (10, 1)])
def test_degenerate_sizes_are_rejected(vocab_size: int, num_classes: int) -> None:
    with pytest.raises(ValueError, match=">= 2"):
        SequenceClassifier(config(), vocab_size, num_classes)


# ---------------------------------------------------------------------------------------------- state and dtype


def test_deepcopy_state_dict_round_trip_and_to_preserve_outputs() -> None:
    cfg = config(embed_p=0.2, input_p=0.2, weight_p=0.3, output_p=0.2, hidden_p=0.2, num_layers=2)
    model = model_for(cfg).train()
    tokens, lengths = GOOD_TOKENS, GOOD_LENGTHS
    model(tokens, lengths).sum().backward()  # after a training step, as in real use
    with torch.no_grad():
        expected = model.eval()(tokens, lengths)
        assert torch.equal(copy.deepcopy(model)(tokens, lengths), expected)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        fresh = model_for(cfg, seed=99).eval()
        fresh.load_state_dict(torch.load(buffer))
        assert torch.equal(fresh(tokens, lengths), expected)
        double = copy.deepcopy(model).to(torch.float64)
        out = double(tokens, lengths)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), expected)
        torch.manual_seed(0)
        assert double.train()(tokens, lengths).dtype == torch.float64  # masks follow the dtype too


def bare_lstm_runs_bf16() -> bool:
    """Whether a bare nn.LSTM runs forward and backward in bf16 under CPU autocast here (oneDNN raises on CPUs
    without bf16 LSTM kernels): the independent answer rnnreg's own probe must agree with."""
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, requires_grad=True, generator=torch.Generator().manual_seed(0))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(x)
        out.float().sum().backward()
    except RuntimeError:
        return False
    return out.dtype == torch.bfloat16


def test_bf16_autocast_logits_stay_close_to_fp32_and_are_labelled_honestly() -> None:
    cfg = config(embed_dim=16, hidden_dim=16, num_layers=2)
    model = model_for(cfg).eval()
    tokens = torch.randint(1, V, (6, 10), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([10, 9, 7, 5, 3, 1])
    with torch.no_grad():
        fp32 = model(tokens, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(tokens, lengths)
    # bf16 keeps 8 significant bits (relative step 2**-8 = 3.9e-3); a few roundings per logit stay within
    # 1.6e-2 (assert_close's bf16 rtol) of the logits' scale: at most 5.2e-3 seen over 20 seeds with the head in
    # bf16 and the LSTM in fp32 (a CPU without bf16 LSTM kernels); where the LSTM runs bf16 it adds its roundings.
    scale = float(fp32.abs().max())
    torch.testing.assert_close(bf16.float(), fp32, rtol=1.6e-2, atol=1.6e-2 * scale)
    report = probe_autocast(model, Batch(tokens, lengths, torch.zeros(6, dtype=torch.int64)), "bf16")
    rnn_low = bare_lstm_runs_bf16()  # asked of PyTorch directly, not of rnnreg's own probe
    rnns = {name for name in report if name.startswith("rnns.")}
    assert rnns and (rnns <= set(low_precision_modules(report))) == rnn_low


# ---------------------------------------------------------------------------------------- notebook and factory


def test_notebook_model_creates_modules_in_the_notebooks_order_and_consumes_rng_like_it() -> None:
    torch.manual_seed(42)
    model = NotebookBiLSTM(lstm_dropout=0.0)
    assert [name for name, _ in model.named_children()] == ["embedding", "dropout", "lstm", "fc"]
    torch.manual_seed(42)
    embedding = nn.Embedding(200, 32, padding_idx=0)
    lstm = nn.LSTM(32, 64, batch_first=True, bidirectional=True)
    fc = nn.Linear(128, 2)
    expected = [*embedding.parameters(), *lstm.parameters(), *fc.parameters()]
    for got, want in zip(model.parameters(), expected, strict=True):
        assert torch.equal(got, want)


def test_notebook_model_reads_the_final_states_of_a_packed_bilstm() -> None:
    torch.manual_seed(0)
    model = NotebookBiLSTM(V, 6, 5, C, lstm_dropout=0.0)
    tokens, lengths = GOOD_TOKENS, GOOD_LENGTHS
    with torch.no_grad():
        _, (h_n, _) = model.lstm(pack_padded_sequence(model.embedding(tokens), lengths, True, enforce_sorted=False))
        assert torch.equal(model(tokens, lengths), model.fc(torch.cat([h_n[0], h_n[1]], dim=1)))


def test_notebook_model_without_embedding_dropout_draws_no_random_numbers() -> None:
    model = NotebookBiLSTM(V, 6, 5, C, lstm_dropout=0.0).train()
    state = torch.get_rng_state()
    model(GOOD_TOKENS, GOOD_LENGTHS)
    assert torch.equal(torch.get_rng_state(), state)  # the notebook's replay depends on it
    model.dropout.p = 0.5
    model(GOOD_TOKENS, GOOD_LENGTHS)
    assert not torch.equal(torch.get_rng_state(), state)  # and embed_dropout > 0 really draws


@pytest.mark.parametrize("lengths", [[4, 4, 4], [4, 2, 1]])
def test_notebook_model_runs_under_cpu_bf16_autocast_even_with_equal_lengths(lengths: list[int]) -> None:
    """torch sends an equal-length packed batch to oneDNN's LSTM, which raises under bf16 on CPUs without bf16."""
    torch.manual_seed(0)
    model = NotebookBiLSTM(V, 6, 5, C, lstm_dropout=0.0)
    tokens = torch.randint(1, V, (3, 4), generator=torch.Generator().manual_seed(0))
    n = torch.tensor(lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens, n)
    logits.float().sum().backward()
    with torch.no_grad():
        fp32 = model(tokens, n)
    torch.testing.assert_close(logits.detach().float(), fp32, rtol=1.6e-2, atol=1.6e-2 * float(fp32.abs().max()))


def test_build_model_picks_the_architecture() -> None:
    assert isinstance(build_model(config(), V, C), SequenceClassifier)
    notebook = ModelConfig(arch="notebook", embed_dim=6, hidden_dim=5, **{**NO_DROPOUT, "input_p": 0.2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean notebook config warns about nothing
        model = build_model(notebook, V, C)
    assert isinstance(model, NotebookBiLSTM)
    assert model.dropout.p == 0.2 and model.lstm.hidden_size == 5 and model.fc.out_features == C


def test_build_model_warns_when_a_notebook_regularizer_cannot_act() -> None:
    cfg = ModelConfig(arch="notebook", **{**NO_DROPOUT, "hidden_p": 0.3})
    with pytest.warns(RegularizerNoOpWarning, match="hidden_p=0.3.*does nothing"):
        model = build_model(cfg, V, C)
    assert model.lstm.dropout == 0.3  # kept, to replay the notebook
    with pytest.warns(RegularizerNoOpWarning, match="weight_p=0.3"):
        build_model(ModelConfig(arch="notebook", **{**NO_DROPOUT, "weight_p": 0.3}), V, C)


@pytest.mark.parametrize("change", [{"rnn": "gru"}, {"bidirectional": False}, {"num_layers": 2}, {"pooling": "mean"}])
def test_build_model_rejects_shapes_the_notebook_model_cannot_take(change: dict) -> None:
    with pytest.raises(ValueError, match="arch='awd'"):
        build_model(ModelConfig(arch="notebook", **{**NO_DROPOUT, **change}), V, C)


def test_lengths_on_another_device_than_tokens_are_refused_but_cpu_lengths_go_anywhere() -> None:
    # The meta device stands in for CUDA. Lengths on it with CPU tokens: refused, naming both devices.
    with pytest.raises(ValueError, match=r"^lengths is on meta but tokens on cpu; keep lengths on the CPU"):
        check_inputs(torch.tensor([[1, 2]]), torch.tensor([2], device="meta"), 5)
    # CPU lengths with tokens elsewhere pass the device check; the next check reads them (a length of 3 > T = 2).
    with pytest.raises(ValueError, match=r"^every length must be in \[1, 2\]"):
        check_inputs(torch.tensor([[1, 2]], device="meta"), torch.tensor([3]), 5)


def test_the_smallest_vocabulary_is_pad_and_one_word() -> None:
    assert build_model(ModelConfig(), 2, 2)(torch.tensor([[1, 1]]), torch.tensor([2])).shape == (1, 2)
    with pytest.raises(ValueError, match=r"^vocab_size must be >= 2 to hold PAD and one word \(got 1\)"):
        build_model(ModelConfig(), 1, 2)


def test_the_models_repr_names_what_its_modules_do_not_show() -> None:
    cfg = ModelConfig(rnn="gru", bidirectional=False, pooling="max", recurrent_p=0.25)
    lines = repr(build_model(cfg, 10, 2)).splitlines()
    assert lines[:2] == ["SequenceClassifier(", "  rnn=gru, bidirectional=False, pooling='max', recurrent_p=0.25"]


# ------------------------------------------------------------------------------------------------- time segments
#
# The tiny models above are cheap per row-step, so plan_segments runs their batches in one piece. The claims below
# hold for every plan; they are checked again with segment_call_cost = 0, which cuts at every distinct length.


def segmented(model: SequenceClassifier) -> SequenceClassifier:
    model.segment_call_cost = 0.0  # a cut wherever a row ends: the most pieces any plan makes
    return model


def rnn_calls(model: SequenceClassifier, tokens: Tensor, lengths: Tensor) -> dict[str, list[int]]:
    """The batch size of every call of each one-direction RNN in one forward pass."""
    calls: dict[str, list[int]] = {}
    handles = [
        module.rnn.register_forward_hook(
            lambda _m, inputs, _out, name=name: calls.setdefault(name, []).append(inputs[0].shape[0])
        )
        for name, module in model.rnns.items()
    ]
    try:
        with torch.no_grad():
            model(tokens, lengths)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def test_a_bucketed_batch_runs_one_call_per_direction_and_spread_lengths_run_fewer_rows_later() -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(ModelConfig(**NO_DROPOUT), V, C).eval()  # the defaults' sizes: E = H = 128
    bucketed = torch.tensor([34] * 32 + [33] * 32)
    tokens = torch.randint(1, V, (64, 34), generator=torch.Generator().manual_seed(0))
    assert rnn_calls(model, tokens, bucketed) == {"l0": [64], "l0_reverse": [64]}
    spread = torch.arange(64, 128).flip(0)  # lengths T/2..T: a quarter of the row-steps are padding
    tokens = torch.randint(1, V, (64, 128), generator=torch.Generator().manual_seed(0))
    calls = rnn_calls(model, tokens, spread)
    assert calls["l0"] == calls["l0_reverse"] and len(calls["l0"]) > 2
    assert calls["l0"][0] == 64 and calls["l0"] == sorted(calls["l0"], reverse=True)  # shorter rows drop out


def test_where_the_lstm_runs_bf16_a_cut_must_skip_more_padding() -> None:
    """A cut at 28 skips 32 rows x 3 steps = 96 row-steps: more than one fp32 call of the defaults' LSTM (~78),
    less than one bf16 call (~130, its row-steps are cheaper); without bf16 kernels the plan stays fp32's."""
    torch.manual_seed(0)
    model = SequenceClassifier(ModelConfig(**NO_DROPOUT), V, C).eval()
    lengths = torch.tensor([31] * 32 + [28] * 32)
    tokens = torch.randint(1, V, (64, 31), generator=torch.Generator().manual_seed(0))
    assert rnn_calls(model, tokens, lengths)["l0"] == [64, 32]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_calls = rnn_calls(model, tokens, lengths)["l0"]
    assert bf16_calls == ([64] if bare_lstm_runs_bf16() else [64, 32])


@given(shape=model_shapes, batch=batches, extra=st.integers(0, 6), seed=rst.seeds())
def test_segmented_eval_logits_ignore_more_padding_and_garbage_in_pad_slots(
    shape: dict, batch: Batch, extra: int, seed: int
) -> None:
    model = segmented(model_for(config(**shape), seed % 1000)).eval()
    padded = pad_more(batch, extra, seed)
    with torch.no_grad():
        assert torch.equal(model(padded, batch.lengths), model(batch.tokens, batch.lengths))


@given(shape=model_shapes, batch=batches, seed=rst.seeds())
def test_segmented_model_at_p_zero_equals_packed_torch_rnn_in_the_callers_row_order(
    shape: dict, batch: Batch, seed: int
) -> None:
    model = segmented(model_for(config(**shape), seed % 1000))
    with torch.no_grad():
        expected = packed_reference(model, batch.tokens, batch.lengths)
        for mode in (False, True):
            torch.testing.assert_close(model.train(mode)(batch.tokens, batch.lengths), expected)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@given(batch=batches, seed=rst.seeds())
def test_segmented_weight_drop_uses_one_mask_per_pass_for_every_segment(rnn: str, batch: Batch, seed: int) -> None:
    model = segmented(model_for(config(rnn=rnn, weight_p=0.5))).train()
    torch.manual_seed(seed)
    with torch.no_grad():
        logits = model(batch.tokens, batch.lengths)
    reference = copy.deepcopy(model)
    torch.manual_seed(seed)  # replay the draws: forward direction first, then the reverse one
    with torch.no_grad():
        for name in ("l0", "l0_reverse"):
            w_hh = reference.rnns[name].rnn.weight_hh_l0
            w_hh.mul_(dropout_mask(w_hh.shape, 0.5, like=w_hh))
        expected = packed_reference(reference, batch.tokens, batch.lengths)
    torch.testing.assert_close(logits, expected)


@given(cfg=rst.model_configs(max_dim=6), batch=batches, extra=st.integers(0, 4), seed=rst.seeds())
def test_segmented_train_mode_is_padding_invariant_at_a_fixed_seed(
    cfg: ModelConfig, batch: Batch, extra: int, seed: int
) -> None:
    model = segmented(SequenceClassifier(cfg, V, C)).train()
    padded = pad_more(batch, extra, seed)
    with torch.no_grad():
        torch.manual_seed(seed)
        original = model(batch.tokens, batch.lengths)
        torch.manual_seed(seed)
        longer = model(padded, batch.lengths)
    torch.testing.assert_close(longer, original)
