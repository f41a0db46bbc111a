"""Hypothesis strategies for property tests of sequence classifiers and their regularizers.

Hypothesis does not manage torch's random number generator, so every strategy that needs many random numbers
draws a seed and fills its tensors from a ``torch.Generator`` built from it: the example stays reproducible and
shrinkable (Hypothesis shrinks the seed and the sizes), and the global torch RNG is never touched.

Use them in your own tests::

    from hypothesis import given
    from rnnreg.testing import checks, strategies as rst

    @given(rst.padded_batches(vocab_size=50, num_classes=3, max_batch=6, max_len=12))
    def test_my_model_ignores_padding(batch):
        checks.check_padding_invariance(my_model, batch)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor

from rnnreg.batch import PAD_ID, Batch
from rnnreg.config import POOLINGS, RNNS, ModelConfig

__all__ = ["dropout_probs", "gradients", "logits", "model_configs", "padded_batches", "seeds"]

MAX_SEED = 2**32 - 1  # numpy's limit; torch accepts more, but one range for both keeps seeds portable


def _at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (got {value!r} that is a {type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low} (got {value})")


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator().manual_seed`` or ``torch.manual_seed``.

    Example value: ``1823``.
    """
    return st.integers(min_value=0, max_value=MAX_SEED)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dropout_probs(max_p: float = 0.9, *, min_p: float = 0.0) -> st.SearchStrategy[float]:
    """Dropout probabilities in ``[min_p, max_p]``; 0 (dropout off) is included unless ``min_p > 0``.

    Example value: ``0.25``.
    """
    if not 0.0 <= min_p <= max_p < 1.0:
        raise ValueError(f"need 0 <= min_p <= max_p < 1 (got min_p={min_p!r}, max_p={max_p!r}); e.g. max_p=0.9")
    return st.floats(min_value=min_p, max_value=max_p, allow_nan=False, allow_infinity=False)


@st.composite
def _padded_batch(
    draw: st.DrawFn,
    vocab_size: int,
    num_classes: int,
    max_batch: int,
    min_len: int,
    max_len: int,
    pad_id: int,
    max_extra_pad: int,
) -> Batch:
    size = draw(st.integers(min_value=1, max_value=max_batch))
    lengths = draw(st.lists(st.integers(min_value=min_len, max_value=max_len), min_size=size, max_size=size))
    # As collate pads, the longest row sets the width; max_extra_pad > 0 adds pad columns past it, the case where
    # a model that reads (or draws masks over) the padded width T rather than the lengths gives itself away.
    T = max(lengths) + draw(st.integers(min_value=0, max_value=max_extra_pad))
    # Real tokens are every id but pad_id: draw k in [0, vocab_size - 1) and skip over pad_id.
    real = st.integers(min_value=0, max_value=vocab_size - 2).map(lambda k: k + int(k >= pad_id))
    tokens = torch.full((size, T), pad_id, dtype=torch.int64)  # [B, T]
    for row, n in enumerate(lengths):
        ids = draw(st.lists(real, min_size=n, max_size=n))
        tokens[row, :n] = torch.tensor(ids, dtype=torch.int64)
    labels = draw(st.lists(st.integers(min_value=0, max_value=num_classes - 1), min_size=size, max_size=size))
    return Batch(tokens, torch.tensor(lengths, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64))


def padded_batches(
    *,
    vocab_size: int,
    num_classes: int,
    max_batch: int,
    max_len: int,
    min_len: int = 1,
    pad_id: int = PAD_ID,
    max_extra_pad: int = 0,
) -> st.SearchStrategy[Batch]:
    """Variable-length padded batches, laid out as :func:`rnnreg.batch.collate` lays them out.

    ``tokens[B, T]`` int64 with ``T = max(lengths)`` (so at least one row is at full length) plus 0 to
    ``max_extra_pad`` extra columns of pads (default 0: exactly collate's layout), pad positions hold
    ``pad_id`` and real positions any id in ``[0, vocab_size)`` except ``pad_id``; ``lengths[B]`` int64 on the CPU
    in ``[min_len, max_len]``; ``labels[B]`` int64 in ``[0, num_classes)``; ``1 <= B <= max_batch``.

    Example value (``vocab_size=10, num_classes=2``)::

        Batch(tokens=tensor([[4, 9, 2], [7, 0, 0]]), lengths=tensor([3, 1]), labels=tensor([1, 0]))
    """
    _at_least("vocab_size", vocab_size, 2)  # the pad plus at least one real token
    _at_least("num_classes", num_classes, 1)
    _at_least("max_batch", max_batch, 1)
    _at_least("min_len", min_len, 1)  # an RNN needs at least one real step per row
    _at_least("max_len", max_len, min_len)
    _at_least("pad_id", pad_id, 0)
    _at_least("max_extra_pad", max_extra_pad, 0)
    if pad_id >= vocab_size:
        raise ValueError(f"pad_id must be a token id below vocab_size={vocab_size} (got {pad_id})")
    return _padded_batch(vocab_size, num_classes, max_batch, min_len, max_len, pad_id, max_extra_pad)


@st.composite
def _gradient_list(
    draw: st.DrawFn, shapes: tuple[tuple[int, ...], ...] | None, max_tensors: int, max_side: int
) -> list[Tensor]:
    if shapes is None:
        side = st.integers(min_value=1, max_value=max_side)
        shape_st = st.lists(side, min_size=0, max_size=3).map(tuple)  # scalars, vectors, matrices, 3-D
        shapes = tuple(draw(st.lists(shape_st, min_size=1, max_size=max_tensors)))
    gen = _generator(draw(seeds()))
    # Norms spanning six decades put clipping thresholds both above and below the drawn gradients.
    scale = 10.0 ** draw(st.floats(min_value=-3.0, max_value=3.0))
    grads = []
    for shape in shapes:
        if draw(st.integers(min_value=0, max_value=7)) == 0:
            grads.append(torch.zeros(shape))  # an all-zero gradient (a frozen or unused branch) is a real case
        else:
            grads.append(torch.randn(shape, generator=gen) * scale)
    return grads


def gradients(*shapes: Sequence[int], max_tensors: int = 4, max_side: int = 6) -> st.SearchStrategy[list[Tensor]]:
    """Lists of finite float32 tensors, one per parameter, of the given ``shapes`` or of drawn ones.

    Without shapes, 1..``max_tensors`` tensors with up to 3 dimensions of side 1..``max_side`` are drawn. Values are
    ``scale * N(0, 1)`` with ``scale`` log-uniform in [1e-3, 1e3]; about one tensor in eight is all zeros.

    Example value (``gradients((2, 3), (3,))``)::

        [tensor([[ 0.0123, -0.0410,  0.0007], [ 0.0251,  0.0032, -0.0198]]), tensor([ 0.0094, -0.0301,  0.0117])]
    """
    _at_least("max_tensors", max_tensors, 1)
    _at_least("max_side", max_side, 1)
    fixed = None
    if shapes:
        fixed = tuple(tuple(int(s) for s in shape) for shape in shapes)
        if any(s < 0 for shape in fixed for s in shape):
            raise ValueError(f"shapes must have non-negative sides (got {fixed})")
    return _gradient_list(fixed, max_tensors, max_side)


@st.composite
def _logit_matrix(draw: st.DrawFn, size: int, num_classes: int, max_scale: float) -> Tensor:
    gen = _generator(draw(seeds()))
    scale = draw(st.floats(min_value=0.0, max_value=max_scale))
    return torch.randn(size, num_classes, generator=gen) * scale  # [B, C]


def logits(batch: Batch | int, num_classes: int, *, max_scale: float = 10.0) -> st.SearchStrategy[Tensor]:
    """Finite float32 logits ``[B, num_classes]`` for ``batch`` (a Batch or a batch size).

    Values are ``scale * N(0, 1)`` with ``scale`` in ``[0, max_scale]``: 0 gives uniform predictions, 10 nearly
    one-hot ones, both edge cases for losses.

    Example value (``logits(2, 3)``)::

        tensor([[ 1.52, -0.33,  4.07], [-2.81,  0.12,  0.95]])
    """
    size = len(batch) if isinstance(batch, Batch) else batch
    _at_least("batch size", size, 1)
    _at_least("num_classes", num_classes, 1)
    if not max_scale >= 0.0:
        raise ValueError(f"max_scale must be >= 0 (got {max_scale!r})")
    return _logit_matrix(size, num_classes, max_scale)


@st.composite
def _model_config(draw: st.DrawFn, max_dim: int, max_p: float) -> ModelConfig:
    dim = st.integers(min_value=2, max_value=max_dim)
    num_layers = draw(st.integers(min_value=1, max_value=2))
    p = dropout_probs(max_p)
    return ModelConfig(
        arch="awd",
        rnn=draw(st.sampled_from(RNNS)),
        embed_dim=draw(dim),
        hidden_dim=draw(dim),
        num_layers=num_layers,
        bidirectional=draw(st.booleans()),
        pooling=draw(st.sampled_from(POOLINGS)),
        embed_p=draw(p),
        input_p=draw(p),
        hidden_p=draw(p) if num_layers > 1 else 0.0,  # between layers only: a single layer has nowhere to put it
        weight_p=draw(p),
        output_p=draw(p),
        # The Gal step loop is slow; draw it on or off rather than spreading examples over its values.
        recurrent_p=draw(st.sampled_from((0.0, 0.25))),
    )


def model_configs(*, max_dim: int = 8, max_p: float = 0.5) -> st.SearchStrategy[ModelConfig]:
    """Small valid ``ModelConfig`` values for the padding-invariant ('awd') model.

    Tiny dimensions (2..``max_dim``), 1 or 2 layers, every rnn/pooling choice, both directions, each dropout in
    ``[0, max_p]``; ``hidden_p`` is non-zero only with 2 layers (the config refuses it otherwise).

    Example value::

        ModelConfig(arch='awd', rnn='gru', embed_dim=5, hidden_dim=3, num_layers=2, bidirectional=True,
                    pooling='mean', embed_p=0.1, input_p=0.0, hidden_p=0.3, weight_p=0.25, output_p=0.5,
                    recurrent_p=0.0)
    """
    _at_least("max_dim", max_dim, 2)
    if not 0.0 <= max_p < 1.0:
        raise ValueError(f"max_p must be a probability in [0, 1) (got {max_p!r})")
    return _model_config(max_dim, max_p)
