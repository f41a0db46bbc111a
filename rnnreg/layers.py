"""Functional dropouts for RNN classifiers, thin module shells, masked pooling and time reversal within lengths.

Every dropout is built on :func:`dropout_mask` (inverted scaling: kept values are divided by ``1 - p``), takes
``training`` explicitly and draws from an optional ``torch.Generator``. Outside training, or at ``p = 0``, every
function returns its input unchanged and draws no random numbers, so eval mode is the identity and p = 0 equals
plain PyTorch bit for bit.

Shapes are batch first: ``x[B, T, D]``, ``tokens[B, T]``, ``lengths[B]``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

POOLINGS = ("last", "mean", "max")
RNN_TYPES: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


# --------------------------------------------------------------------------------------------- functional core


def _check_p(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1) (got {p!r}); use e.g. 0.1, or 0 to switch it off")


def dropout_mask(
    shape: tuple[int, ...] | torch.Size, p: float, *, like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """A tensor of ``shape`` holding 0 (probability ``p``) or ``1/(1-p)``, with ``like``'s dtype and device."""
    _check_p("p", p)
    keep = 1.0 - p
    # Keep where a uniform draw is below keep: Bernoulli(keep) at a third of bernoulli_'s cost on CPU (which draws a
    # double per element: 0.62 vs 0.20 ms for a 512 x 128 weight). Drawn in fp32 at least, so a bf16 ``like`` does
    # not round keep to 8 bits; 0/1 are exact in every dtype, and the division happens in like's dtype as before.
    draw = torch.empty(shape, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)
    return draw.uniform_(generator=generator).lt_(keep).to(like.dtype).div_(keep)


def locked_dropout(x: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Variational dropout on ``x[B, T, D]``: one mask per (sequence, feature), the same at every time step."""
    _check_p("p", p)
    if not training or p == 0.0:
        return x
    if x.dim() != 3:
        raise ValueError(f"locked_dropout expects a batch-first (B, T, D) tensor (got shape {tuple(x.shape)})")
    B, _, D = x.shape  # batch, time, features
    return x * dropout_mask((B, 1, D), p, like=x, generator=generator)  # (B, T, D): broadcast over time


def embedding_dropout(
    embedded: Tensor,
    tokens: Tensor,
    num_embeddings: int,
    p: float,
    *,
    training: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Drop whole word types: equal to looking ``tokens`` up in W with rows zeroed and the rest scaled by 1/(1-p).

    One Bernoulli draw per vocabulary row, then ``embedded * mask[tokens]``: the same function as masking W, without
    a (V, D) multiply per step and without touching the weight. Every occurrence of a word shares its fate.
    """
    _check_p("p", p)
    if not training or p == 0.0:
        return embedded
    mask = dropout_mask((num_embeddings, 1), p, like=embedded, generator=generator)  # (V, 1)
    return embedded * mask[tokens]  # (B, T, D) * (B, T, 1)


def weight_drop(weight: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """DropConnect: zero each element of ``weight`` with probability p, scale the rest; a new tensor, not in place."""
    _check_p("p", p)
    if not training or p == 0.0:
        return weight
    return weight * dropout_mask(weight.shape, p, like=weight, generator=generator)


def output_dropout(x: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Standard element-wise dropout (on pooled features), written on the same mask helper as the others."""
    _check_p("p", p)
    if not training or p == 0.0:
        return x
    return x * dropout_mask(x.shape, p, like=x, generator=generator)


# ------------------------------------------------------------------------------------- lengths, reversal, pooling


def length_mask(lengths: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """``mask[B, T]``, True where ``t < lengths[b]``."""
    steps = torch.arange(max_len, device=device)  # (T,)
    return steps[None, :] < lengths.to(device)[:, None]  # (B, T)


def reverse_index(lengths: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """Flat row index into a ``(B*T, ...)`` view that reverses each sequence within its own length.

    Position t < len maps to len-1-t; pads stay where they are. The permutation is its own inverse.
    """
    B = lengths.shape[0]
    lengths = lengths.to(device)
    steps = torch.arange(max_len, device=device)[None, :]  # (1, T)
    within = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, T)
    return (within + max_len * torch.arange(B, device=device)[:, None]).reshape(-1)  # (B*T,)


def reverse_index_time_major(lengths: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """:func:`reverse_index` for a ``(T*B, ...)`` view of time-major memory: row ``t*B + b`` is step t of row b."""
    B = lengths.shape[0]
    lengths = lengths.to(device)
    steps = torch.arange(max_len, device=device)[:, None]  # (T, 1)
    within = torch.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)  # (T, B)
    return (within * B + torch.arange(B, device=device)[None, :]).reshape(-1)  # (T*B,)


def is_time_major(x: Tensor) -> bool:
    """Whether ``x[B, T, ...]`` is stored time-major (``x.transpose(0, 1)`` contiguous) and not batch-major too."""
    return not x.is_contiguous() and x.transpose(0, 1).is_contiguous()


def time_major(x: Tensor) -> Tensor:
    """``x[B, T, ...]`` stored time-major, the layout the RNN kernels read: a copy only when it is not already.

    nn.LSTM/nn.GRU with ``batch_first=True`` transpose their input to (T, B, ...) and make it contiguous, and give
    their output back as a transposed view; keeping activations time-major spares those copies, forward and
    backward. Values are unchanged: only the memory order differs.
    """
    if x.dim() < 2 or x.shape[0] == 1 or x.shape[1] == 1 or is_time_major(x):
        return x  # one row or one step: both orders are the same memory
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def reverse_within_lengths(x: Tensor, lengths: Tensor, index: Tensor | None = None) -> Tensor:
    """``x[B, T, D]`` with each sequence's first ``lengths[b]`` steps reversed and its pads left in place.

    ``index`` (to reuse one) must fit x's memory order: :func:`reverse_index` for a batch-major (contiguous) x,
    :func:`reverse_index_time_major` for a time-major one; the two agree where B or T is 1. The result keeps x's
    order.
    """
    B, T, D = x.shape  # batch, time, features
    # One row gather on the flat view of x's memory: cheaper than a (B, T, D) index for torch.gather.
    if is_time_major(x):
        if index is None:
            index = reverse_index_time_major(lengths, T, x.device)
        return x.transpose(0, 1).reshape(T * B, D).index_select(0, index).view(T, B, D).transpose(0, 1)
    if index is None:
        index = reverse_index(lengths, T, x.device)
    return x.reshape(B * T, D).index_select(0, index).view(B, T, D)


def gather_last(x: Tensor, lengths: Tensor) -> Tensor:
    """``x[b, lengths[b] - 1]`` for every b: the state after each sequence's last real token. (B, D)"""
    rows = torch.arange(x.shape[0], device=x.device)
    last = lengths.to(x.device) - 1
    if is_time_major(x):
        # Index the time-major memory itself: the gradient (zeros but for these rows) is then built time-major
        # too, as the RNN's backward wants it, instead of batch-major and copied.
        return x.transpose(0, 1)[last, rows]  # (B, D)
    return x[rows, last]  # (B, D)


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean of ``x[B, T, D]`` over the first ``lengths[b]`` steps; pads (even NaN) never contribute. (B, D)"""
    # A running sum read at len-1 adds the valid steps in time order whatever T is, so appending padding
    # changes no bit (a masked .sum(dim=1) regroups its additions with T); pads lie beyond len-1 and never enter.
    # Accumulate in at least fp32: a bf16 running sum over a long sequence would lose most of its bits.
    total = gather_last(x.cumsum(dim=1, dtype=torch.promote_types(x.dtype, torch.float32)), lengths)  # (B, D)
    return (total / lengths.to(device=x.device, dtype=total.dtype)[:, None]).to(x.dtype)


def masked_max(x: Tensor, lengths: Tensor) -> Tensor:
    """Max of ``x[B, T, D]`` over the first ``lengths[b]`` steps; pads never win. (B, D)"""
    mask = length_mask(lengths, x.shape[1], x.device)[:, :, None]  # (B, T, 1)
    return x.masked_fill(~mask, float("-inf")).amax(dim=1)  # (B, D)


def masked_pool(x: Tensor, lengths: Tensor, how: str) -> Tensor:
    """Pool ``x[B, T, D]`` over valid steps: 'last' (state at lengths-1), 'mean' or 'max'. (B, D)"""
    if how == "last":
        return gather_last(x, lengths)
    if how == "mean":
        return masked_mean(x, lengths)
    if how == "max":
        return masked_max(x, lengths)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)} (got {how!r})")


# ---------------------------------------------------------------------------------- recurrent (Gal) dropout loop


def rnn_step_loop(
    x: Tensor,
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    mode: str,
    recurrent_p: float,
    *,
    training: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One unidirectional LSTM/GRU layer over ``x[B, T, D]`` as a Python step loop, with Gal dropout on h.

    ``weights`` are ``(weight_ih, weight_hh, bias_ih, bias_hh)`` in nn.LSTM/nn.GRU layout (gates i, f, g, o and
    r, z, n). The mask on h is drawn once per sequence and hidden unit and reused at every step; it only enters
    the recurrent product, never the carried state. Slow (T small matmuls): use it only when ``recurrent_p > 0``.
    Returns all hidden states ``(B, T, H)``; at p = 0 it equals nn.LSTM/nn.GRU up to fp32 rounding.
    """
    if mode not in ("lstm", "gru"):
        raise ValueError(f"mode must be 'lstm' or 'gru' (got {mode!r})")
    w_ih, w_hh, b_ih, b_hh = weights
    B, T, _ = x.shape  # batch, time, input features
    H = w_hh.shape[1]  # hidden units
    x_proj = F.linear(x, w_ih, b_ih)  # (B, T, G*H): the input part of every gate, for all steps at once
    h = x.new_zeros(B, H, dtype=x_proj.dtype)
    c = torch.zeros_like(h)
    h_mask = None
    if training and recurrent_p > 0.0:
        h_mask = dropout_mask((B, H), recurrent_p, like=h, generator=generator)  # (B, H), fixed over time
    outputs = []
    for t in range(T):
        h_in = h if h_mask is None else h * h_mask
        rec = F.linear(h_in, w_hh, b_hh)  # (B, G*H)
        if mode == "lstm":
            i, f, g, o = (x_proj[:, t] + rec).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            x_r, x_z, x_n = x_proj[:, t].chunk(3, dim=1)
            h_r, h_z, h_n = rec.chunk(3, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=0).transpose(0, 1)  # (B, T, H), stored time-major as nn.LSTM's output


# ------------------------------------------------------------------------------------- autocast and RNN kernels


@functools.cache
def rnn_supports_autocast(mode: str, device_type: str, dtype: torch.dtype) -> bool:
    """Whether an nn.LSTM or nn.GRU (``mode``) really runs in ``dtype`` under autocast here, forward and backward.

    Coverage is uneven: on CPUs without native bf16, oneDNN's LSTM raises under bf16 autocast, and a GRU simply
    stays fp32. A tiny trial run answers it once per process; callers fall back to fp32 when it says no.
    """
    # Leave the caller's RNG stream and grad mode alone: the trial may run inside a seeded run or under no_grad.
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        try:
            rnn = RNN_TYPES[mode](2, 2, batch_first=True).to(device_type)
            x = torch.zeros(1, 2, 2, device=device_type, requires_grad=True)
            with torch.autocast(device_type=device_type, dtype=dtype):
                out, _ = rnn(x)
            out.float().sum().backward()
        except RuntimeError:
            return False
    return out.dtype == dtype


def run_rnn(rnn: nn.Module, inputs: Any, mode: str, hx: Any = None, **kwargs: Any) -> Any:
    """``rnn(inputs, hx, **kwargs)``, in fp32 with autocast off where autocast cannot run this RNN in low precision.

    ``inputs`` is a tensor or a PackedSequence. A plain call is not enough: on CPUs without native bf16, oneDNN's
    LSTM raises under bf16 autocast, and even a packed LSTM reaches it when all lengths are equal. Callers learn
    what ran from the output dtype (``rnnreg.step.probe_autocast``); without autocast this is exactly the call.
    """
    data = inputs.data if isinstance(inputs, PackedSequence) else inputs
    device_type = data.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        if not rnn_supports_autocast(mode, device_type, dtype):
            with torch.autocast(device_type=device_type, enabled=False):
                return rnn(inputs.float(), _map_state(hx, lambda t: t.float()), **kwargs)
    return rnn(inputs, hx, **kwargs)


def _map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to an RNN state: None, a tensor (GRU, RNN) or a tuple of tensors (LSTM's (h, c))."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(t) for t in state)
    return fn(state)


# ----------------------------------------------------------------------------- time segments over sorted lengths


def time_segments(lengths: Tensor, max_segments: int = 4) -> list[tuple[int, int, int]]:
    """``(start, stop, active)`` pieces of time covering ``[0, max(lengths))`` for rows sorted longest first.

    In ``[start, stop)`` only the first ``active`` rows (those longer than ``start``) still have tokens, so an RNN
    run piece by piece, carrying its state, skips most of the padding as packing does while every piece stays one
    call to the fast unpacked kernel. Cuts sit at the shortest length and at length quantiles; the cuts depend on
    the lengths only, never on how much padding the batch has.
    """
    ascending = sorted(int(n) for n in lengths)
    B = len(ascending)
    cuts = sorted({ascending[0], *(ascending[(j * B) // max_segments] for j in range(1, max_segments)), ascending[-1]})
    starts = [0, *cuts[:-1]]
    return [(start, stop, sum(n > start for n in ascending)) for start, stop in zip(starts, cuts, strict=True)]


# The cost of one more time segment, measured with one torch thread (torch 2.13, oneDNN's LSTM, forward + backward
# of one direction on an AMD EPYC with AVX-512): a call costs about 0.35 ms plus 2 ns per weight of the layer (the
# weights are reordered at every call), one row-step (one sequence through one time step) about 60 ps per weight.
# For E = H = 128 a call costs as much as ~75 row-steps, for H = 256 ~40, for H = 32 ~300. Where the kernels run
# bf16 a row-step costs ~0.6 of that (4.9 vs 8.0 us at E = H = 128, B = 64) and a call no less, so a cut must skip
# more padding to pay off. The optimum is flat: a factor of 2 off costs a few percent of the kernel time at most.
CALL_FIXED_S = 350e-6
CALL_PER_WEIGHT_S = 2e-9
ROW_STEP_PER_WEIGHT_S = 60e-12
LOW_PRECISION_ROW_STEP = 0.6  # a bf16 row-step's cost over an fp32 one's (oneDNN, AVX512-BF16)


def segment_call_cost(layer_weights: Sequence[int]) -> float:
    """The fixed cost of one more time segment in row-steps, for RNN layers of ``layer_weights`` weights each.

    A layer's weights are ``G * H * (D_in + H)`` (G = 4 gates for an LSTM, 3 for a GRU). Every segment is one call
    per layer and direction, so the per-call costs and the per-row-step costs of the layers add up.
    """
    if not layer_weights or min(layer_weights) < 1:
        raise ValueError(f"layer_weights must be >= 1 weight count per layer (got {list(layer_weights)!r})")
    fixed = sum(CALL_FIXED_S + CALL_PER_WEIGHT_S * w for w in layer_weights)
    return fixed / sum(ROW_STEP_PER_WEIGHT_S * w for w in layer_weights)


def plan_segments(lengths: Tensor | Sequence[int], call_cost: float) -> list[tuple[int, int, int]]:
    """The cheapest :func:`time_segments`-style pieces ``(start, stop, active)`` of ``[0, max(lengths))``.

    A piece costs ``call_cost`` (see :func:`segment_call_cost`) plus the row-steps it runs, ``active * (stop -
    start)``: a cut pays when the padding it skips outweighs one more call. A bucketed batch, whose rows have
    nearly equal lengths, runs in one piece; lengths spread from T/2 to T get a few. Cuts sit at lengths only, so
    the plan depends on the lengths and never on how much padding the batch carries (exact padding invariance).
    Exact dynamic programming over the distinct lengths (K of them: K^2/2 candidate pieces).
    """
    if call_cost < 0 or call_cost != call_cost:
        raise ValueError(f"call_cost must be >= 0 row-steps (got {call_cost!r}); see segment_call_cost")
    ascending = sorted(lengths.tolist() if isinstance(lengths, Tensor) else [int(n) for n in lengths])
    B = len(ascending)
    cuts = [0, *sorted(set(ascending))]  # candidate boundaries; cuts[-1] = max(lengths)
    # active[i]: rows longer than cuts[i], the ones a piece starting there runs
    active = [B - bisect.bisect_right(ascending, c) for c in cuts]
    best = [0.0] + [math.inf] * (len(cuts) - 1)  # best[j]: cheapest cover of [0, cuts[j])
    came_from = [0] * len(cuts)
    for j in range(1, len(cuts)):
        for i in range(j):
            cost = best[i] + call_cost + active[i] * (cuts[j] - cuts[i])
            if cost < best[j]:
                best[j], came_from[j] = cost, i
    stops = [len(cuts) - 1]
    while stops[-1] > 0:
        stops.append(came_from[stops[-1]])
    bounds = stops[::-1]  # indices into cuts, from 0 to the end
    return [(cuts[i], cuts[j], active[i]) for i, j in itertools.pairwise(bounds)]


def _first_rows(state: Tensor, n: int) -> Tensor:
    return state[:, :n].contiguous()  # the kernels want contiguous (layers*dirs, n, H) states


def run_in_segments(
    step: Callable[[Tensor, Any], tuple[Tensor, Any]], x: Tensor, segments: list[tuple[int, int, int]]
) -> Tensor:
    """Run ``step(x_piece, state) -> (out, state)`` over the :func:`time_segments` of ``x[B, T, D]``.

    Rows must be sorted longest first. Each piece gets only its active rows and the state they reached at the end
    of the previous piece. Returns ``(B, T_run, H)`` with ``T_run = segments[-1][1]``; steps a row never ran
    (after its piece dropped it) hold zeros, steps it ran past its length hold values of pads: both lie beyond
    the row's length, which pooling and the next layers never read.
    """
    B, T = x.shape[:2]
    if len(segments) == 1 and segments[0][2] == B:  # one piece on every row: one call, nothing to slice or pad
        stop = segments[0][1]
        out, _ = step(x if stop == T else x[:, :stop], None)
        return out  # (B, T_run, H)
    # Pieces go in as views (the kernel makes its own contiguous time-major copy) and come back time-major.
    outs, state = [], None
    for start, stop, active in segments:
        state = _map_state(state, functools.partial(_first_rows, n=active))  # (layers*dirs, n, H)
        out, state = step(x[:active, start:stop], state)  # (n, stop - start, H)
        outs.append(F.pad(out.transpose(0, 1), (0, 0, 0, B - active)))  # (stop - start, B, H)
    return torch.cat(outs, dim=0).transpose(0, 1)  # (B, T_run, H), stored time-major


# -------------------------------------------------------------------------------------------------- module shells


class LockedDropout(nn.Module):
    """Variational dropout for batch-first ``(B, T, D)``: the mask is constant along time."""

    def __init__(self, p: float) -> None:
        super().__init__()
        _check_p("p", p)
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return locked_dropout(x, self.p, training=self.training, generator=generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EmbeddingDropout(nn.Module):
    """Drops whole word types of an embedding lookup; see :func:`embedding_dropout`."""

    def __init__(self, num_embeddings: int, p: float) -> None:
        super().__init__()
        _check_p("p", p)
        self.num_embeddings = num_embeddings
        self.p = p

    def forward(self, embedded: Tensor, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return embedding_dropout(
            embedded, tokens, self.num_embeddings, self.p, training=self.training, generator=generator
        )

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, p={self.p}"


class OutputDropout(nn.Module):
    """Element-wise dropout on pooled features; same numbers as :func:`output_dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        _check_p("p", p)
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return output_dropout(x, self.p, training=self.training, generator=generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDrop(nn.Module):
    """DropConnect on every ``weight_hh*`` of an nn.LSTM/nn.GRU/nn.RNN: all layers, both directions.

    No parameter surgery: the raw weights stay ordinary leaf Parameters of ``self.rnn`` (visible to
    ``.parameters()``, the optimizer and ``state_dict``) and the dropped copies are passed in for one call with
    ``torch.func.functional_call``. In eval mode, or at p = 0, it is exactly ``self.rnn``.
    """

    def __init__(self, rnn: nn.RNNBase, weight_p: float) -> None:
        super().__init__()
        if not isinstance(rnn, nn.RNNBase):
            raise TypeError(f"WeightDrop wraps an nn.LSTM, nn.GRU or nn.RNN (got {type(rnn).__name__})")
        _check_p("weight_p", weight_p)
        self.rnn = rnn
        self.weight_p = weight_p
        self.dropped_names = [name for name, _ in rnn.named_parameters(recurse=False) if name.startswith("weight_hh")]

    def dropped_weights(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{name: weight}`` for every ``weight_hh*``, dropped in training mode, the raw Parameter otherwise."""
        return {
            name: weight_drop(getattr(self.rnn, name), self.weight_p, training=self.training, generator=generator)
            for name in self.dropped_names
        }

    def forward(
        self,
        inputs: Any,
        hx: Any = None,
        *,
        weights: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        """``self.rnn(inputs, hx)`` with dropped hidden weights in training mode.

        ``weights`` (from :meth:`dropped_weights`) lets several calls share one mask, e.g. the time segments of
        one sequence; without it each call draws its own.
        """
        if weights is None:
            if not self.training or self.weight_p == 0.0:
                return self.rnn(inputs, hx)
            weights = self.dropped_weights(generator)
        # nn.RNNBase refreshes its flat-weight list when the attributes change, which functional_call does.
        return functional_call(self.rnn, weights, (inputs, hx))

    def extra_repr(self) -> str:
        return f"weight_p={self.weight_p}, dropped={self.dropped_names}"
