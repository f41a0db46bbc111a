"""Checks of dropout layers: locked (variational) dropout, embedding (word-type) dropout, weight drop.

Same contract as the model checks: a :class:`CheckPassed` on success, an :class:`InvariantViolation` naming the
invariant, the numbers, the likely cause and the fix otherwise; modes, parameters and torch's RNG are restored;
randomness comes from a seed (``seed=``, fixed by default, so a result is reproducible).

Every layer check runs the layer train -> eval -> train: a layer that cannot train again after an eval pass fails.
The statistical parts (drop rates, fresh masks) are sized from p: each check draws enough masks that about 50 drops
(or keeps, for p > 0.5) are expected, so that "nothing dropped" and "p taken as the keep probability" lie far outside
a 5-sigma band while a correct layer falls outside it on well under 1% of seeds (tests/test_check_calibration.py
measures the rate over many seeds). A p too small for the largest budget raises :class:`NotEnoughEvidence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnnreg.testing._base import (
    _SEED,
    CheckPassed,
    NotEnoughEvidence,
    _device,
    _fail,
    _first_line,
    _is_scale,
    _set_mode,
    _stray_ratios,
    _untouched,
    _user_line,
)

__all__ = ["check_embedding_dropout", "check_locked_dropout", "check_weight_drop"]

_LAYER_SEED = 20_240_602  # embedding dropout and weight drop draw from this seed by default; locked dropout from _SEED
# Expected drops (or keeps) a rate test needs. Then 5 binomial sigma around n*p exclude 0 drops (7.1 sigma away) and
# the Poisson tail beyond the band is ~2e-5, so a correct layer is flagged on far fewer than 1% of seeds.
_EVIDENCE = 50.0


def _check_probability(p: object) -> float:
    """The one probability rule of every layer check: 0 < p < 1."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise ValueError(
            f"p must be the layer's dropout probability in (0, 1) (got {p!r}); p = 0 drops nothing, so there is "
            "nothing to observe: check the layer at the p you train with"
        )
    return float(p)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int (got {seed!r})")
    return seed


def _outside(count: int, n: int, p: float) -> bool:
    """True when ``count`` drops out of ``n`` lie outside 5 binomial sigma of ``n * p``."""
    return abs(count - n * p) > 5.0 * math.sqrt(n * p * (1.0 - p))


def _calls_for(invariant: str, p: float, per_call: int, cap: int, what: str) -> int:
    """How many calls give ~50 expected drops (keeps for p > 0.5) over ``per_call`` mask entries each; at least 2
    (a fresh mask per call must show). NotEnoughEvidence when even ``cap`` calls fall short."""
    rare = min(p, 1.0 - p)
    calls = max(2, math.ceil(_EVIDENCE / (rare * per_call)))
    if calls > cap:
        smallest = _EVIDENCE / (cap * per_call)
        raise NotEnoughEvidence(
            f"{invariant}: not enough evidence at p = {p:g}: {cap} calls observe {cap * per_call} {what} and would "
            f"expect {rare * cap * per_call:.1f} {'drops' if p <= 0.5 else 'keeps'}, fewer than {_EVIDENCE:.0f}, so a "
            f"rate test could not tell this layer from one that drops nothing. Check the same layer at "
            f"{min(smallest, 0.5):.2g} <= p <= {max(1 - smallest, 0.5):.2g} (the code path is the same)"
        )
    return calls


def _train_again(invariant: str, run: Callable[[], Any]) -> Any:
    """The train pass after an eval pass: an exception here is the layer's, and says where it was raised."""
    try:
        return run()
    except Exception as e:
        where = _user_line(e)
        _fail(
            invariant,
            f"a train-mode call after an eval pass raised {type(e).__name__}: "
            f"{_first_line(e)}" + (f" (raised at {where})" if where else ""),
            "the eval pass leaves the layer in a state training cannot use: e.g. F.dropout(w, training=False) "
            "returns the raw Parameter itself and setattr registers it as the wrapped module's parameter, so the "
            "next train-mode setattr of a plain tensor is refused (the salesforce/awd-lstm WeightDrop on current "
            "torch)",
            "never assign to the wrapped module's weights: pass the dropped weights for one call with "
            "torch.func.functional_call, or register the mask with torch.nn.utils.parametrize",
        )


# ---------------------------------------------------------------------------------------------------------------
# Locked (variational) dropout
# ---------------------------------------------------------------------------------------------------------------


def check_locked_dropout(
    layer: Callable[[Tensor], Tensor],
    *,
    p: float,
    shape: tuple[int, int, int] = (64, 8, 64),
    seed: int = _SEED,
) -> CheckPassed:
    """A locked dropout on batch-first ``(B, T, D)`` input: one mask per (sequence, feature), constant over time.

    In train mode the output divided by the (positive) input must be a mask with values in ``{0, 1/(1-p)}``
    (inverted scaling), equal at every time step, differing across sequences and across features, drawn afresh in
    every call, with a drop rate within 5 binomial sigma of ``p`` over the ``B*D`` entries of every call (enough
    calls for ~50 expected drops or keeps: 2 at p = 0.3, 13 at p = 0.001 at the default shape; at most 200 calls
    must do, or :class:`NotEnoughEvidence` is raised). In eval mode the layer is exactly the identity, and a
    train-mode call after the eval pass works and draws a valid mask.
    """
    invariant = "locked dropout"
    if not callable(layer):
        raise TypeError(f"layer must be callable on a (B, T, D) tensor (got {layer!r})")
    p = _check_probability(p)
    seed = _check_seed(seed)
    B, T, D = shape  # batch, time, features
    if min(shape) < 1 or T < 2:
        raise ValueError(f"shape must be (B, T, D) with T >= 2 and positive sides (got {shape})")
    calls = _calls_for(invariant, p, B * D, 200, f"(sequence, feature) mask entries (shape={shape})")
    gen = torch.Generator().manual_seed(seed)
    device = _device(layer)
    x = (torch.rand(shape, generator=gen) + 0.5).to(device)  # [B, T, D], positive: out / x recovers the mask
    with _untouched(layer):
        _set_mode(layer, True)
        torch.manual_seed(seed)
        with torch.no_grad():
            outs = [layer(x) for _ in range(calls)]  # each call must draw a new mask
            _set_mode(layer, False)
            out_eval = layer(x)
            _set_mode(layer, True)
            out_back = _train_again(invariant, lambda: layer(x))
    for what, y in [("train", o) for o in outs] + [("eval", out_eval), ("train (after eval)", out_back)]:
        if not isinstance(y, Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"layer must map a (B, T, D) tensor to the same shape; in {what} mode it returned {got}")

    if not torch.equal(out_eval, x):
        ratio = float((out_eval / x).mean())
        _fail(
            invariant,
            f"eval mode is not the identity: the output differs from the input by up to "
            f"{float((out_eval - x).abs().max()):.3g} (mean output/input {ratio:.3g})",
            "the mask is drawn whatever the mode (training=True hard-coded) or eval rescales by 1-p (non-inverted "
            "dropout)",
            "return the input unchanged when not self.training and scale kept values by 1/(1-p) in training",
        )

    scale = 1.0 / (1.0 - p)
    keeps = []
    for i, out in enumerate([*outs, out_back]):
        mask = (out / x).cpu()  # [B, T, D], expected values in {0, scale}
        dropped = mask == 0
        valid = dropped | _is_scale(mask, scale)
        if not valid.all():
            seen, non_inverted = _stray_ratios(mask, valid)
            _fail(
                invariant,
                f"output/input takes values {seen} outside {{0, 1/(1-p) = {scale:.4g}}}"
                + (" in the train-mode call after an eval pass" if i == len(outs) else ""),
                "kept values are not rescaled (non-inverted dropout: scaling by 1-p at eval instead)"
                if non_inverted
                else "the layer does more than multiply by a 0/1 mask (wrong scale, additive noise, or p used as the "
                "keep probability)",
                "multiply by bernoulli(1-p) / (1-p), i.e. x * x.new_empty(B, 1, D).bernoulli_(1 - p) / (1 - p)",
            )
        varies = (dropped != dropped[:, :1, :]).any(dim=1)  # [B, D] True where the mask changes over time
        if varies.any():
            _fail(
                invariant,
                f"the mask changes over time for {float(varies.float().mean()):.0%} of (sequence, feature) pairs",
                "a fresh mask per time step (plain nn.Dropout on a (B, T, D) tensor), or a mask locked over the "
                "batch axis instead of time (awd-lstm's LockedDropout expects time-first input and draws a (1, B, D) "
                "mask)",
                "draw one mask of shape (B, 1, D) for batch-first input and broadcast it over time",
            )
        keeps.append(~dropped[:, 0, :])  # [B, D]
    keeps = keeps[:-1]  # the rate is measured on the calls before the eval pass
    acted = [k for k in keeps if not bool(k.all())]
    # Under a correct layer, a call with at least one drop shows these patterns with probability < 1e-30 at the
    # default shape; they come first because a shared mask also makes the drop rate far noisier than B*D entries.
    if acted and B > 1 and all(bool((k == k[:1]).all()) for k in acted):
        _fail(
            invariant,
            f"all {B} sequences got the same mask",
            "one mask shared by the whole batch (shape (1, 1, D), or (1, B, D) meant for time-first input)",
            "draw one mask per sequence: shape (B, 1, D)",
        )
    if acted and D > 1 and all(bool((k == k[:, :1]).all()) for k in acted):
        _fail(
            invariant,
            "every sequence keeps or drops all its features together",
            "the mask has shape (B, 1, 1) (whole sequences dropped) instead of one entry per feature",
            "draw one mask entry per (sequence, feature): shape (B, 1, D)",
        )
    if acted and all(torch.equal(outs[0], o) for o in outs[1:]):
        # Independent masks over B*D entries coincide with probability (p^2 + (1-p)^2)^(B*D) per pair of calls.
        _fail(
            invariant,
            f"{calls} train-mode calls applied the same mask",
            "the mask is drawn once and cached across calls (e.g. stored on the module, or drawn from a "
            "generator re-seeded in every call)",
            "draw a fresh mask in every forward call",
        )
    n = calls * B * D
    n_dropped = sum(int((~k).sum()) for k in keeps)
    if _outside(n_dropped, n, p):
        sigma = math.sqrt(n * p * (1.0 - p))
        _fail(
            invariant,
            f"{n_dropped} of {n} (sequence, feature) entries dropped over {calls} calls (rate {n_dropped / n:.4f}), "
            f"outside p={p} +/- 5 sigma ({5.0 * sigma / n:.4f})",
            "p used as the keep probability, or the mask drawn with another p",
            "draw the mask with bernoulli(1 - p) (keep probability 1 - p)",
        )
    return CheckPassed(
        invariant,
        f"mask constant over time, drop rate {n_dropped / n:.4f} for p={p} (n={n}, {calls} calls), identity in eval, "
        "trains again after eval",
    )


# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout
# ---------------------------------------------------------------------------------------------------------------

_EMB_ROWS, _EMB_STEPS, _EMB_TYPES = 32, 60, 200  # probe batch; word types drawn (ids still repeat within a row)


def _infer_vocab(layer: object) -> int | None:
    if isinstance(layer, nn.Module):
        for m in layer.modules():
            if isinstance(m, nn.Embedding):
                return int(m.num_embeddings)
    return None


def _embedding_masks(
    invariant: str, out: Tensor, ref: Tensor, tokens: Tensor, V: int, scale: float, when: str
) -> tuple[Tensor, Tensor]:
    """Per (row, word type) of one train call: (dropped occurrences, occurrences), after checking that every
    position is all zero or the eval vector x 1/(1-p) and that the occurrences of a type in a row agree."""
    if torch.equal(out, ref):
        _fail(
            invariant,
            f"a train-mode output equals the eval output{when}: nothing dropped and nothing rescaled",
            "the mask is never applied: dropout called with training=False (not self.training), or its result "
            "discarded",
            "apply the mask in train mode: emb * mask[tokens] with mask = bernoulli(1-p) / (1-p) over the vocabulary",
        )
    nonzero = ref != 0
    ratio = torch.where(nonzero, out / torch.where(nonzero, ref, torch.ones_like(ref)), torch.zeros_like(ref)).cpu()
    kept = _is_scale(ratio, scale)  # [B, T, D]
    dropped = (out == 0).cpu()
    if not (kept | dropped | ~nonzero.cpu()).all():
        seen, non_inverted = _stray_ratios(ratio, kept | dropped)
        _fail(
            invariant,
            f"train/eval output takes values {seen} outside {{0, 1/(1-p) = {scale:.4g}}}{when}",
            "kept vectors are not rescaled by 1/(1-p) (non-inverted dropout)"
            if non_inverted
            else "the layer does more than mask and rescale (wrong scale, noise, or p used as the keep probability)",
            "multiply kept rows by 1/(1-p): mask = bernoulli(1-p over the vocabulary) / (1-p)",
        )
    row_dropped = (dropped | ~nonzero.cpu()).all(dim=2)  # [B, T] whole vector zero
    row_kept = (kept | ~nonzero.cpu()).all(dim=2)
    if not (row_dropped | row_kept).all():
        _fail(
            invariant,
            f"{int((~(row_dropped | row_kept)).sum())} of {tokens.numel()} positions lost only some features{when}",
            "elementwise dropout on the embedded output (nn.Dropout after the embedding), not word-type dropout",
            "draw one Bernoulli per vocabulary row and index it by the tokens: emb * mask[tokens]",
        )
    ids = tokens.cpu()
    informative = nonzero.any(dim=2).cpu()  # [B, T]; a zero eval vector (a padding row) shows no mask
    per_sequence = torch.zeros(len(ids), V, dtype=torch.long)  # dropped occurrences of each id in each row
    total = torch.zeros(len(ids), V, dtype=torch.long)
    per_sequence.scatter_add_(1, ids, (row_dropped & informative).long())
    total.scatter_add_(1, ids, informative.long())
    mixed = (total > 0) & (per_sequence > 0) & (per_sequence < total)
    if mixed.any():
        _fail(
            invariant,
            f"{int(mixed.sum())} (row, word type) pairs have some occurrences dropped and others kept{when}",
            "the mask is drawn per position (token occurrences dropped, e.g. dropout on a [B, T, 1] mask), not per "
            "word type",
            "draw one Bernoulli per vocabulary row and index it by the tokens: emb * mask[tokens]",
        )
    return per_sequence, total


def check_embedding_dropout(
    layer: Callable[[Tensor], Tensor], *, p: float, vocab_size: int | None = None, seed: int = _LAYER_SEED
) -> CheckPassed:
    """``layer(tokens[B, T]) -> embeddings[B, T, D]`` drops whole word types, with inverted scaling.

    On a batch of 32 rows x 60 tokens drawn from ids 1..V-1 (V = ``vocab_size``, at most 200, so ids repeat within a
    row): in train mode each position's vector is all zero or the eval vector x 1/(1-p); within a row every
    occurrence of an id gets the same mask (one mask per word type, per batch as in AWD-LSTM and fastai or per
    sequence as in Gal & Ghahramani; both pass); the drop rate over those masks lies within 5 binomial sigma of p;
    the calls do not all apply the same mask; eval output is deterministic and unchanged by train calls (the weight
    is never mutated); a train call after the eval pass works. Enough calls are made that ~50 drops (or keeps) are
    expected even for one mask per batch: 13 at p = 0.02 with V = 200, at most 400, else
    :class:`NotEnoughEvidence`. ``vocab_size`` defaults to the first nn.Embedding's size. Ids whose eval vector is
    all zero (a padding row) show no mask and are not counted. A train-mode output equal to the eval output fails.
    """
    invariant = "embedding dropout drops word types"
    if not callable(layer):
        raise TypeError(f"layer must be callable on token ids [B, T] (got {layer!r})")
    p = _check_probability(p)
    seed = _check_seed(seed)
    vocab = vocab_size if vocab_size is not None else _infer_vocab(layer)
    if vocab is None or vocab < 3:
        raise ValueError(
            f"vocab_size must be >= 3 (got {vocab}); pass vocab_size= when the layer holds no nn.Embedding"
        )
    V = min(vocab, _EMB_TYPES)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (_EMB_ROWS, _EMB_STEPS), generator=gen)  # [B, T]; PAD (0) left out: may be zero
    device = next((t.device for t in layer.parameters()), None) if isinstance(layer, nn.Module) else None
    if device is not None:
        tokens = tokens.to(device)
    scale = 1.0 / (1.0 - p)
    with _untouched(layer), torch.no_grad():
        _set_mode(layer, False)
        torch.manual_seed(seed)
        ref = layer(tokens)
        if not isinstance(ref, Tensor) or ref.dim() != 3 or ref.shape[:2] != tokens.shape:
            got = tuple(ref.shape) if isinstance(ref, Tensor) else type(ref).__name__
            raise TypeError(f"layer must map tokens [B, T] to [B, T, D]; in eval mode it returned {got}")
        # Types whose eval vector is all zero (a padding row) show no mask and are not counted.
        types = int(torch.unique(tokens[ref.ne(0).any(dim=2)]).numel())
        if types == 0:
            raise ValueError(f"layer returns all-zero vectors in eval for every id 1..{V - 1}: nothing to observe")
        calls = _calls_for(invariant, p, types, 400, f"word-type masks (one per type and call, {types} types)")
        torch.manual_seed(seed + 1)
        ref_again = layer(tokens)
        if not torch.equal(ref, ref_again):
            _fail(
                invariant,
                "two eval passes under different seeds differ",
                "the mask is drawn whatever the mode (training=True hard-coded)",
                "drop only when self.training",
            )
        _set_mode(layer, True)
        torch.manual_seed(seed)
        outs = [_train_again(invariant, lambda: layer(tokens))]
        _set_mode(layer, False)
        after = layer(tokens)  # a train call must leave the weight as it was
        if not torch.equal(ref, after):
            _fail(
                invariant,
                f"eval output changed by up to {float((after - ref).abs().max()):.3g} after a train-mode call",
                "the embedding weight is modified in place by the dropout (e.g. weight.data.mul_(mask)), so "
                "dropped rows stay dropped",
                "build a dropped copy for the forward pass (weight * mask, or emb * mask[tokens]) and never write the "
                "weight",
            )
        _set_mode(layer, True)
        first: Tensor | None = None
        all_same, shared = True, True
        count_seq = count_batch = n_seq = n_batch = 0
        for i in range(calls):
            out = outs[0] if i == 0 else _train_again(invariant, lambda: layer(tokens)) if i == 1 else layer(tokens)
            if not isinstance(out, Tensor) or out.shape != ref.shape:
                returned = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise TypeError(f"layer must map tokens [B, T] to [B, T, D]; in train mode it returned {returned}")
            if first is None:
                first = out
            elif all_same and not torch.equal(first, out):
                all_same = False
            when = " in the train-mode call after an eval pass" if i == 1 else ""
            per_sequence, total = _embedding_masks(invariant, out, ref, tokens, V, scale, when)
            present = total > 0  # [B, V]
            state = per_sequence > 0  # dropped, where present
            dropped_somewhere, kept_somewhere = (state & present).any(dim=0), (~state & present).any(dim=0)  # [V]
            shared = shared and not bool((dropped_somewhere & kept_somewhere).any())
            count_seq, n_seq = count_seq + int((state & present).sum()), n_seq + int(present.sum())
            count_batch, n_batch = count_batch + int(dropped_somewhere.sum()), n_batch + int(present.any(dim=0).sum())
    count, n = (count_batch, n_batch) if shared else (count_seq, n_seq)
    if _outside(count, n, p):
        _fail(
            invariant,
            f"{count} of {n} word-type masks dropped over {calls} calls (rate {count / n:.4f}), outside p={p} "
            "+/- 5 sigma",
            "p used as the keep probability, or the mask drawn with another p",
            "draw the mask with bernoulli(1 - p)",
        )
    if all_same and count > 0:
        _fail(
            invariant,
            f"{calls} train-mode calls applied the same mask",
            "the mask is drawn once and cached across calls",
            "draw a fresh mask in every forward call",
        )
    how = "per batch" if shared else "per sequence"
    return CheckPassed(
        invariant,
        f"whole word types dropped ({how}), rate {count / n:.4f} for p={p} over {calls} calls ({n} masks), eval "
        "untouched, trains again after eval",
    )


# ---------------------------------------------------------------------------------------------------------------
# Weight drop (DropConnect on the recurrent weights)
# ---------------------------------------------------------------------------------------------------------------


def _raw_weights(module: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if "weight_hh" in name and p.requires_grad}


def _input_size(module: nn.Module) -> int | None:
    """The feature size of the module's input: that of its first Linear or RNN layer, in registration order (an
    input projection before the RNN is read first)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
        if isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
            return int(m.input_size)
    for name, p in module.named_parameters():
        if "weight_ih" in name and p.dim() == 2:
            return int(p.shape[1])
    return None


def _weight_grads(
    module: nn.Module, x: Tensor, weights: dict[str, nn.Parameter], probe: Tensor | None, seed: int = _LAYER_SEED
) -> Any:
    out = module(x)
    y = out[0] if isinstance(out, tuple) else out
    if isinstance(y, nn.utils.rnn.PackedSequence):
        y = y.data
    if not isinstance(y, Tensor):
        raise TypeError(f"the module must return the output tensor or (output, state) (got {type(y).__name__})")
    if probe is None or probe.shape != y.shape:
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.device)
    grads = torch.autograd.grad((y * probe).sum(), list(weights.values()), allow_unused=True)
    return y.detach(), dict(zip(weights, grads, strict=True)), probe


def _zero_count(passes: list[dict[str, Tensor | None]], name: str) -> tuple[int, int]:
    """(entries, exactly-zero entries) of one weight's gradient over all passes."""
    zeros = [g == 0 for g in (grads[name] for grads in passes) if g is not None]
    return sum(z.numel() for z in zeros), sum(int(z.sum()) for z in zeros)


def _training_scale(
    train: list[dict[str, Tensor | None]], ref: dict[str, Tensor | None], p: float
) -> tuple[str, float, float]:
    """How the weight the RNN trains with relates to the eval weight, from gradients taken at raw weights = 0.

    There the dropped weight is 0 whatever the mask, so the gradient w.r.t. it is the same in train and eval, and
    the raw weight's train gradient is (mask x scale) times the eval one, entry by entry. Returns the verdict
    ('inverted': every ratio is 0 or 1/(1-p); 'not rescaled': every ratio is 0 or 1; 'mean': other randomness mixes
    in, judged by the mean), the mean ratio (1 for inverted dropout, 1-p without the rescale) and its standard error.
    """
    scale = 1.0 / (1.0 - p)
    ratios, means = [], []
    for grads in train:
        num = den = 0.0
        for name, g_ref in ref.items():
            g = grads.get(name)
            if g is None or g_ref is None:
                continue
            big = g_ref.abs() > 1e-3 * float(g_ref.abs().max())
            ratios.append((g[big] / g_ref[big]).double().flatten())
            num, den = num + float((g.double() * g_ref.double()).sum()), den + float(g_ref.double().pow(2).sum())
        if den > 0:
            means.append(num / den)
    if not ratios or not means:
        return "mean", 1.0, 0.0
    r = torch.cat(ratios)
    zero = r.abs() < 1e-3
    mean = sum(means) / len(means)
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means)) if len(means) > 1 else math.inf
    if bool((zero | torch.isclose(r, torch.tensor(scale, dtype=r.dtype), rtol=1e-3)).all()):
        return "inverted", mean, se
    kept_one = torch.isclose(r, torch.ones_like(r), rtol=1e-3)
    if bool((zero | kept_one).all()) and bool(kept_one.any()):
        return "not rescaled", mean, se
    return "mean", mean, se


def check_weight_drop(
    module: nn.Module, *, p: float, input_size: int | None = None, seed: int = _LAYER_SEED
) -> CheckPassed:
    """An RNN with DropConnect on its recurrent weights (``weight_hh*``, every layer and direction).

    ``module(x[B, T, input_size])`` (batch-first) returns the output or ``(output, state)``; its raw recurrent
    weights are the parameters whose names contain ``weight_hh``. A dropped entry of ``W_hh`` receives exactly zero
    gradient, a kept one does not, so in train mode the fraction of exactly-zero gradient entries of each raw weight
    must lie within 5 binomial sigma of p (one mask per forward, shared by all time steps: a mask redrawn every step
    zeroes almost nothing), on reverse directions too; enough passes are made that ~50 drops (or keeps) are expected
    in the smallest weight (at most 200 passes, else :class:`NotEnoughEvidence`). A second forward draws another mask;
    the raw weights keep their values and stay the module's parameters; eval is deterministic and drops nothing; a
    train-mode pass after the eval pass works (train -> eval -> train). Kept weights are rescaled by 1/(1-p), so that
    the weight the RNN trains with equals the eval weight on average: with the raw weights set to 0 (restored after)
    the gradient w.r.t. the dropped weight no longer depends on the mask, so each raw-weight gradient entry in train
    mode must be 0 or 1/(1-p) times its eval value (if other randomness in the module blurs this, the mean ratio over
    the passes must not sit nearer 1-p than 1).
    """
    invariant = "weight drop (DropConnect on weight_hh)"
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module wrapping the RNN (got {type(module).__name__})")
    p = _check_probability(p)
    seed = _check_seed(seed)
    weights = _raw_weights(module)
    if not weights:
        names = [n for n, _ in module.named_parameters()][:8]
        raise TypeError(
            f"{type(module).__name__} has no trainable parameter named like 'weight_hh' (has {names}); weight drop "
            "keeps the raw recurrent weights as parameters (e.g. rnn.weight_hh_l0, or weight_hh_l0_raw)"
        )
    size = input_size if input_size is not None else _input_size(module)
    if size is None:
        raise ValueError("cannot infer the input size (no nn.RNNBase inside, no weight_ih*); pass input_size=")
    device = next(iter(weights.values())).device
    x = torch.randn(4, 12, size, generator=torch.Generator().manual_seed(seed)).to(device)  # [B, T, D]
    smallest = min(w.numel() for w in weights.values())
    passes = _calls_for(invariant, p, smallest, 200, f"entries of the smallest raw weight ({smallest} a pass)")
    before = {name: w.detach().clone() for name, w in weights.items()}
    with _untouched(module):
        _set_mode(module, True)
        torch.manual_seed(seed)
        probe = None
        train: list[dict[str, Tensor | None]] = []
        for _ in range(passes):
            _, grads, probe = _weight_grads(module, x, weights, probe, seed)
            train.append(grads)
        # Two steps: W_hh acts once (h0 = 0), so a mask redrawn per step and one per forward drop alike.
        short: list[dict[str, Tensor | None]] = [
            _weight_grads(module, x[:, :2], weights, None, seed)[1] for _ in range(passes)
        ]
        changed = [n for n, w in weights.items() if not torch.equal(w.detach(), before[n])]
        replaced = [n for n, w in _raw_weights(module).items() if n in weights and w is not weights[n]]
        _set_mode(module, False)
        torch.manual_seed(seed)
        eval_out, eval_grads, _ = _weight_grads(module, x, weights, probe, seed)
        torch.manual_seed(seed + 1)
        eval_again = _weight_grads(module, x, weights, probe, seed)[0]
        _set_mode(module, True)
        _train_again(invariant, lambda: _weight_grads(module, x, weights, probe, seed))
        # The scale: the raw weights at 0 make the gradient w.r.t. the dropped weight independent of the mask.
        with torch.no_grad():
            for w in weights.values():
                w.zero_()
        torch.manual_seed(seed + 2)
        at_zero = [_weight_grads(module, x, weights, probe, seed)[1] for _ in range(max(2, min(passes, 20)))]
        _set_mode(module, False)
        at_zero_eval = _weight_grads(module, x, weights, probe, seed)[1]
    first = train[0]
    if changed or replaced:
        _fail(
            invariant,
            f"the raw weights {changed or replaced} were {'modified' if changed else 'replaced'} by a forward pass",
            "parameter surgery: the dropped weight is written into the raw parameter (weight.data = dropout(...)) "
            "or the parameter is swapped, so the optimizer updates the wrong tensor",
            "keep the raw weights untouched and pass the dropped copies for one call with torch.func.functional_call",
        )
    missing = [n for n, g in first.items() if g is None]
    if missing:
        _fail(
            invariant,
            f"the raw weights {missing} received no gradient in train mode",
            "the dropped copy is computed from a detached weight or outside autograd, so the raw weight never learns",
            "compute the dropped weight as weight * mask inside forward, from the raw Parameter",
        )
    if not torch.equal(eval_out, eval_again):
        _fail(
            invariant,
            "two eval passes under different seeds differ",
            "masks drawn in eval too (training=True hard-coded, as in awd-lstm's variational mode)",
            "drop only when self.training",
        )
    eval_zero = {n: float((g == 0).double().mean()) for n, g in eval_grads.items() if g is not None}
    if any(z > 0.5 * p for z in eval_zero.values()):
        _fail(
            invariant,
            f"in eval mode {max(eval_zero.values()):.1%} of the recurrent-weight gradients are exactly zero",
            "weights dropped in eval (training=True hard-coded)",
            "drop only when self.training",
        )
    zero_sets = {n: [g == 0 for g in (t[n] for t in train) if g is not None] for n in first}
    same = [n for n, z in zero_sets.items() if bool(z[0].any()) and all(torch.equal(z[0], other) for other in z[1:])]
    if same:
        _fail(
            invariant,
            f"{passes} train-mode forward passes dropped the same entries of {same}",
            "the mask is drawn once (at construction or on the first call) and reused",
            "draw a fresh mask in every forward pass",
        )
    rates = []
    for name in first:
        n, count = _zero_count(train, name)
        rates.append(f"{name} {count / n:.3f}")
        if not _outside(count, n, p):
            continue
        if count / n < p:
            reverse = "reverse" in name
            plain = name.replace("_raw", "").rsplit(".", 1)[-1]
            short_n, short_count = _zero_count(short, name)
            if not _outside(short_count, short_n, p):
                cause = (
                    f"the mask of {plain} is redrawn at every time step: over 2 steps the zero rate is p, over 12 "
                    "an entry gets no gradient only if dropped at every step"
                )
            elif count == 0:
                cause = (
                    f"the reverse direction's {plain} is not dropped (only the forward weights are masked, as in "
                    "fastai and PyTorch-NLP)"
                    if reverse
                    else f"{plain} is not dropped (missing from the dropped names)"
                )
            else:
                cause = "fewer entries than p are dropped (the mask drawn with another p)"
        else:
            cause = "p used as the keep probability, or the mask drawn with another p"
        _fail(
            invariant,
            f"{count} of {n} gradient entries of {name} over {passes} forward passes are exactly zero (rate "
            f"{count / n:.3f}), outside p={p} +/- 5 sigma: the entries a mask drops must get no gradient",
            cause,
            "draw one mask per forward pass for every weight_hh* (reverse directions included) and run all time "
            "steps with it",
        )
    how, mean, se = _training_scale(at_zero, at_zero_eval, p)
    if how == "not rescaled" or (how == "mean" and mean < 1.0 - p / 2 and 1.0 - mean > 5.0 * se):
        observed = (
            f"in train mode every kept entry of the recurrent weights is used as it is (x1, expected x 1/(1-p) = "
            f"{1 / (1 - p):.4g}), so the weight the RNN trains with averages 1-p = {1 - p:.3g} x the eval weight"
            if how == "not rescaled"
            else f"the weight the RNN trains with averages {mean:.3g} x the eval weight (+/- {se:.2g}; expected 1 "
            f"for inverted dropout, 1-p = {1 - p:.3g} if kept entries are not rescaled)"
        )
        _fail(
            invariant,
            observed,
            "kept weights are not divided by 1-p: the mask multiplies the raw weight by 0 or 1 (e.g. "
            "raw * bernoulli(1-p) or torch.where(mask, raw, 0)), so training sees a recurrent weight (1-p) x smaller "
            "than eval"
            if how == "not rescaled" or abs(mean - (1.0 - p)) < 5.0 * se + 0.05 * p
            else "kept weights are scaled by something other than 1/(1-p)",
            "use F.dropout(raw, p, training=self.training), which rescales kept entries by 1/(1-p), or divide the "
            "0/1 mask by 1-p",
        )
    scale_note = "kept entries x 1/(1-p)" if how == "inverted" else f"mean training/eval weight ratio {mean:.3f}"
    return CheckPassed(
        invariant,
        f"zero-gradient rates {', '.join(rates)} over {passes} passes for p={p}; fresh per forward; {scale_note}; "
        "trains again after eval",
    )
