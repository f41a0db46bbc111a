"""Checks of dropout layers: locked (variational) dropout, embedding (word-type) dropout, weight drop.

Same contract as the model checks: a :class:`CheckPassed` on success, an :class:`InvariantViolation` naming the
invariant, the numbers, the likely cause and the fix otherwise; modes, parameters and torch's RNG are restored;
randomness comes from fixed seeds.
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
    _device,
    _fail,
    _is_scale,
    _set_mode,
    _stray_ratios,
    _untouched,
)

__all__ = ["check_embedding_dropout", "check_locked_dropout", "check_weight_drop"]

_LAYER_SEED = 20_240_602  # embedding dropout and weight drop draw from this seed; locked dropout from _SEED


def _check_probability(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise ValueError(f"p must be the layer's dropout probability in (0, 1) (got {p!r}); p = 0 cannot be observed")
    return float(p)


def _outside(count: int, n: int, p: float) -> bool:
    """True when ``count`` drops out of ``n`` lie outside 5 binomial sigma of ``n * p``."""
    return abs(count - n * p) > 5.0 * math.sqrt(n * p * (1.0 - p))


# ---------------------------------------------------------------------------------------------------------------
# Locked (variational) dropout
# ---------------------------------------------------------------------------------------------------------------


def check_locked_dropout(
    layer: Callable[[Tensor], Tensor], *, p: float, shape: tuple[int, int, int] = (64, 8, 64)
) -> CheckPassed:
    """A locked dropout on batch-first ``(B, T, D)`` input: one mask per (sequence, feature), constant over time.

    In train mode the output divided by the (positive) input must be a mask with values in ``{0, 1/(1-p)}``
    (inverted scaling), equal at every time step, differing across sequences and across features, with a drop rate
    within 5 binomial sigma of ``p`` over the ``B*D`` mask entries (a false alarm has probability ~6e-7 per seed;
    the seed is fixed). In eval mode the layer is exactly the identity.
    """
    invariant = "locked dropout"
    if not callable(layer):
        raise TypeError(f"layer must be callable on a (B, T, D) tensor (got {layer!r})")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"p must be the layer's dropout probability in [0, 1) (got {p!r})")
    B, T, D = shape  # batch, time, features
    if min(shape) < 1 or T < 2:
        raise ValueError(f"shape must be (B, T, D) with T >= 2 and positive sides (got {shape})")
    gen = torch.Generator().manual_seed(_SEED)
    device = _device(layer)
    x = (torch.rand(shape, generator=gen) + 0.5).to(device)  # [B, T, D], positive: out / x recovers the mask
    with _untouched(layer):
        _set_mode(layer, True)
        torch.manual_seed(_SEED)
        with torch.no_grad():
            out = layer(x)
            out_again = layer(x)  # a second call must draw a new mask
            _set_mode(layer, False)
            out_eval = layer(x)
    for what, y in (("train", out), ("train", out_again), ("eval", out_eval)):
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
    mask = (out / x).cpu()  # [B, T, D], expected values in {0, scale}
    dropped = mask == 0
    valid = dropped | _is_scale(mask, scale)
    if not valid.all():
        seen, non_inverted = _stray_ratios(mask, valid)
        _fail(
            invariant,
            f"output/input takes values {seen} outside {{0, 1/(1-p) = {scale:.4g}}}",
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
            "a fresh mask per time step (plain nn.Dropout on a (B, T, D) tensor), or a mask locked over the batch "
            "axis instead of time (awd-lstm's LockedDropout expects time-first input and draws a (1, B, D) mask)",
            "draw one mask of shape (B, 1, D) for batch-first input and broadcast it over time",
        )
    keep = ~dropped[:, 0, :]  # [B, D]
    n = B * D
    n_dropped = int((~keep).sum())
    sigma = math.sqrt(n * p * (1.0 - p))
    if n_dropped > 0:
        # Under a correct layer, with at least one drop, these patterns have probability < 1e-30 at the default
        # shape; they come first because a shared mask also makes the drop rate far noisier than B*D entries.
        if B > 1 and bool((keep == keep[:1]).all()):
            _fail(
                invariant,
                f"all {B} sequences got the same mask",
                "one mask shared by the whole batch (shape (1, 1, D), or (1, B, D) meant for time-first input)",
                "draw one mask per sequence: shape (B, 1, D)",
            )
        if D > 1 and bool((keep == keep[:, :1]).all()):
            _fail(
                invariant,
                "every sequence keeps or drops all its features together",
                "the mask has shape (B, 1, 1) (whole sequences dropped) instead of one entry per feature",
                "draw one mask entry per (sequence, feature): shape (B, 1, D)",
            )
        if torch.equal(out, out_again):
            # Two independent masks over B*D entries coincide with probability (p^2 + (1-p)^2)^(B*D): < 1e-30.
            _fail(
                invariant,
                "two train-mode calls applied the same mask",
                "the mask is drawn once and cached across calls (e.g. stored on the module, or drawn from a "
                "generator re-seeded in every call)",
                "draw a fresh mask in every forward call",
            )
    if abs(n_dropped - n * p) > 5.0 * sigma:
        _fail(
            invariant,
            f"{n_dropped} of {n} (sequence, feature) entries dropped (rate {n_dropped / n:.4f}), outside "
            f"p={p} +/- 5 sigma ({5.0 * sigma / n:.4f})",
            "p used as the keep probability, or the mask drawn with another p",
            "draw the mask with bernoulli(1 - p) (keep probability 1 - p)",
        )
    return CheckPassed(
        invariant, f"mask constant over time, drop rate {n_dropped / n:.4f} for p={p} (n={n}), identity in eval"
    )


# ---------------------------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout
# ---------------------------------------------------------------------------------------------------------------


def _infer_vocab(layer: object) -> int | None:
    if isinstance(layer, nn.Module):
        for m in layer.modules():
            if isinstance(m, nn.Embedding):
                return int(m.num_embeddings)
    return None


def check_embedding_dropout(
    layer: Callable[[Tensor], Tensor], *, p: float, vocab_size: int | None = None
) -> CheckPassed:
    """``layer(tokens[B, T]) -> embeddings[B, T, D]`` drops whole word types, with inverted scaling.

    On a batch of 32 rows x 60 tokens drawn from ids 1..V-1 (each id repeats within a row): in train mode each
    position's vector is all zero or the eval vector x 1/(1-p); within a row every occurrence of an id gets the same
    mask (one mask per word type, per batch as in AWD-LSTM or per sequence as in Gal & Ghahramani; both pass); the
    drop rate over those masks lies within 5 binomial sigma of p; a second call draws a new mask; eval output is
    deterministic and unchanged by train calls (the weight is never mutated). ``vocab_size`` defaults to the first
    nn.Embedding's size, capped at 20 ids so that ids repeat.
    """
    invariant = "embedding dropout drops word types"
    if not callable(layer):
        raise TypeError(f"layer must be callable on token ids [B, T] (got {layer!r})")
    p = _check_probability(p)
    vocab = vocab_size if vocab_size is not None else _infer_vocab(layer)
    if vocab is None or vocab < 3:
        raise ValueError(
            f"vocab_size must be >= 3 (got {vocab}); pass vocab_size= when the layer holds no nn.Embedding"
        )
    V = min(vocab, 20)
    gen = torch.Generator().manual_seed(_LAYER_SEED)
    tokens = torch.randint(1, V, (32, 60), generator=gen)  # [B, T]; PAD (0) left out: its row may be zero
    device = next((t.device for t in layer.parameters()), None) if isinstance(layer, nn.Module) else None
    if device is not None:
        tokens = tokens.to(device)
    with _untouched(layer), torch.no_grad():
        _set_mode(layer, False)
        torch.manual_seed(_LAYER_SEED)
        ref = layer(tokens)
        torch.manual_seed(_LAYER_SEED + 1)
        ref_again = layer(tokens)
        _set_mode(layer, True)
        torch.manual_seed(_LAYER_SEED)
        out, out_again = layer(tokens), layer(tokens)
        _set_mode(layer, False)
        after = layer(tokens)
    for what, y in (("eval", ref), ("train", out)):
        if not isinstance(y, Tensor) or y.dim() != 3 or y.shape[:2] != tokens.shape:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"layer must map tokens [B, T] to [B, T, D]; in {what} mode it returned {got}")
    if not torch.equal(ref, ref_again):
        _fail(
            invariant,
            "two eval passes under different seeds differ",
            "the mask is drawn whatever the mode (training=True hard-coded)",
            "drop only when self.training",
        )
    if not torch.equal(ref, after):
        _fail(
            invariant,
            f"eval output changed by up to {float((after - ref).abs().max()):.3g} after train-mode calls",
            "the embedding weight is modified in place by the dropout (e.g. weight.data.mul_(mask)), so dropped "
            "rows stay dropped",
            "build a dropped copy for the forward pass (weight * mask, or emb * mask[tokens]) and never write the "
            "weight",
        )
    scale = 1.0 / (1.0 - p)
    nonzero = ref != 0
    ratio = torch.where(nonzero, out / torch.where(nonzero, ref, torch.ones_like(ref)), torch.zeros_like(ref)).cpu()
    kept = _is_scale(ratio, scale)  # [B, T, D]
    dropped = (out == 0).cpu()
    if not (kept | dropped | ~nonzero.cpu()).all():
        seen, non_inverted = _stray_ratios(ratio, kept | dropped)
        _fail(
            invariant,
            f"train/eval output takes values {seen} outside {{0, 1/(1-p) = {scale:.4g}}}",
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
            f"{int((~(row_dropped | row_kept)).sum())} of {tokens.numel()} positions lost only some features",
            "elementwise dropout on the embedded output (nn.Dropout after the embedding), not word-type dropout",
            "draw one Bernoulli per vocabulary row and index it by the tokens: emb * mask[tokens]",
        )
    ids = tokens.cpu()
    per_sequence = torch.zeros(32, V, dtype=torch.long)  # dropped occurrences of each id in each row
    total = torch.zeros(32, V, dtype=torch.long)
    per_sequence.scatter_add_(1, ids, row_dropped.long())
    total.scatter_add_(1, ids, torch.ones_like(ids))
    present = total > 0
    mixed = present & (per_sequence > 0) & (per_sequence < total)
    if mixed.any():
        _fail(
            invariant,
            f"{int(mixed.sum())} (row, word type) pairs have some occurrences dropped and others kept",
            "the mask is drawn per position (token occurrences dropped, e.g. dropout on a [B, T, 1] mask), not per "
            "word type",
            "draw one Bernoulli per vocabulary row and index it by the tokens: emb * mask[tokens]",
        )
    state = per_sequence > 0  # [B, V] dropped, where present
    dropped_somewhere, kept_somewhere = (state & present).any(dim=0), (~state & present).any(dim=0)  # [V]
    shared = not bool((dropped_somewhere & kept_somewhere).any())  # every row agrees on every type: one batch mask
    if shared:
        n, count = int(present.any(dim=0).sum()), int(dropped_somewhere.sum())
    else:
        n, count = int(present.sum()), int((state & present).sum())
    if _outside(count, n, p):
        _fail(
            invariant,
            f"{count} of {n} word-type masks dropped (rate {count / n:.3f}), outside p={p} +/- 5 sigma",
            "p used as the keep probability, or the mask drawn with another p",
            "draw the mask with bernoulli(1 - p)",
        )
    if torch.equal(out, out_again):
        _fail(
            invariant,
            "two train-mode calls applied the same mask",
            "the mask is drawn once and cached across calls",
            "draw a fresh mask in every forward call",
        )
    how = "per batch" if shared else "per sequence"
    return CheckPassed(invariant, f"whole word types dropped ({how}), rate {count / n:.3f} for p={p}, eval untouched")


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


def _weight_grads(module: nn.Module, x: Tensor, weights: dict[str, nn.Parameter], probe: Tensor | None) -> Any:
    out = module(x)
    y = out[0] if isinstance(out, tuple) else out
    if isinstance(y, nn.utils.rnn.PackedSequence):
        y = y.data
    if not isinstance(y, Tensor):
        raise TypeError(f"the module must return the output tensor or (output, state) (got {type(y).__name__})")
    if probe is None or probe.shape != y.shape:
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(_LAYER_SEED)).to(y.device)
    grads = torch.autograd.grad((y * probe).sum(), list(weights.values()), allow_unused=True)
    return y.detach(), dict(zip(weights, grads, strict=True)), probe


def _zero_count(passes: list[dict[str, Tensor | None]], name: str) -> tuple[int, int]:
    """(entries, exactly-zero entries) of one weight's gradient over all passes."""
    zeros = [g == 0 for g in (grads[name] for grads in passes) if g is not None]
    return sum(z.numel() for z in zeros), sum(int(z.sum()) for z in zeros)


def check_weight_drop(module: nn.Module, *, p: float, input_size: int | None = None) -> CheckPassed:
    """An RNN with DropConnect on its recurrent weights (``weight_hh*``, every layer and direction).

    ``module(x[B, T, input_size])`` (batch-first) returns the output or ``(output, state)``; its raw recurrent
    weights are the parameters whose names contain ``weight_hh``. A dropped entry of ``W_hh`` receives exactly zero
    gradient, a kept one does not, so in train mode the fraction of exactly-zero gradient entries of each raw weight
    must lie within 5 binomial sigma of p (one mask per forward, shared by all time steps: a mask redrawn every step
    zeroes almost nothing), on reverse directions too. A second forward draws another mask; the raw weights keep
    their values and stay the module's parameters; eval is deterministic and drops nothing.
    """
    invariant = "weight drop (DropConnect on weight_hh)"
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module wrapping the RNN (got {type(module).__name__})")
    p = _check_probability(p)
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
    x = torch.randn(4, 12, size, generator=torch.Generator().manual_seed(_LAYER_SEED)).to(device)  # [B, T, D]
    # Enough forward passes that each weight's zero count is measured on >= 500 entries: at p = 0.3 the 5 sigma band
    # (150 +/- 51) then excludes both "nothing dropped" and "a mask per step" (p^12 of the entries).
    passes = min(50, max(2, math.ceil(500 / min(w.numel() for w in weights.values()))))
    before = {name: w.detach().clone() for name, w in weights.items()}
    with _untouched(module):
        _set_mode(module, True)
        torch.manual_seed(_LAYER_SEED)
        probe = None
        train: list[dict[str, Tensor | None]] = []
        for _ in range(passes):
            _, grads, probe = _weight_grads(module, x, weights, probe)
            train.append(grads)
        # Two steps: W_hh acts once (h0 = 0), so a mask redrawn per step and one per forward drop alike.
        short: list[dict[str, Tensor | None]] = [
            _weight_grads(module, x[:, :2], weights, None)[1] for _ in range(passes)
        ]
        changed = [n for n, w in weights.items() if not torch.equal(w.detach(), before[n])]
        replaced = [n for n, w in _raw_weights(module).items() if n in weights and w is not weights[n]]
        _set_mode(module, False)
        torch.manual_seed(_LAYER_SEED)
        eval_out, eval_grads, _ = _weight_grads(module, x, weights, probe)
        torch.manual_seed(_LAYER_SEED + 1)
        eval_again = _weight_grads(module, x, weights, probe)[0]
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
    return CheckPassed(
        invariant, f"zero-gradient rates {', '.join(rates)} over {passes} passes for p={p}; fresh per forward"
    )
