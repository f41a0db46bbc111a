"""Invariant checks to run on your own models and regularization code.

Model checks take any ``model(tokens, lengths) -> logits[B, C]`` and a :class:`rnnreg.data.Batch`; function checks
take the function under test (a clip, a loss, an optimizer factory, a training step). Each check returns a
:class:`CheckPassed` on success and raises :class:`InvariantViolation` (an ``AssertionError``, so pytest reports it
as a failure) whose message names the invariant, the numbers observed, the likely cause and the fix.

A check never leaves your model changed: the train/eval flag of every submodule, every parameter and buffer
value (a BatchNorm's running statistics included) and torch's global RNG state are restored. Checks draw their
own randomness from fixed internal seeds, so a result is reproducible.

Tolerances are ``torch.testing.assert_close``'s defaults for the logits' dtype unless a docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnreg.data import PAD_ID, Batch
from rnnreg.step import low_precision_modules, probe_autocast

__all__ = [
    "CheckPassed",
    "InvariantViolation",
    "check_amp_clipping",
    "check_amp_parity",
    "check_batch_independence",
    "check_dropout_active",
    "check_eval_deterministic",
    "check_gradient_clipping",
    "check_label_smoothing",
    "check_locked_dropout",
    "check_padding_invariance",
    "check_weight_decay",
]

_SEED = 20_240_601  # every check draws from this seed (plus small offsets): results are reproducible
# assert_close's default (rtol, atol) per dtype: the comparison a user would write by hand.
_TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float16: (1e-3, 1e-5),
}
# AMP parity bound on max|logit difference| / max|logit|, per autocast dtype. Measured under CPU bf16 autocast on 190
# random GRU and LSTM classifiers (packed and masked, mean and max pooling, 1-2 layers, uni/bidirectional, dims 4-300,
# T <= 200, recurrent weights x0.5-4, head x0.03-4, so max|logit| from 0.009 to 3): worst 1.4e-2, median 5e-3; the
# error scales with the logits, so no absolute floor is needed. bf16 keeps 8 significant bits (eps 2^-8 = 3.9e-3):
# the bound is 12.8 eps, ~3.5x the worst measured, while a lost signal (error ~ the logits themselves) is ~20x over.
# fp16 keeps 11 bits; the same 12.8 eps (0.0125) held with a 12x margin on 60 GRU classifiers under CPU fp16 autocast
# (worst 1.1e-3). Not measured on CUDA here; INVARIANTS.md cites fp16 LSTM vs fp32 relative L2 ~4e-4 there.
_AMP_RTOL = {torch.bfloat16: 12.8 * 2.0**-8, torch.float16: 12.8 * 2.0**-10}

Model = Callable[[Tensor, Tensor], Tensor]


class InvariantViolation(AssertionError):
    """A checked invariant does not hold; the message says which, what was observed, the likely cause and the fix."""


@dataclass(frozen=True)
class CheckPassed:
    """What a passing check verified; ``detail`` is one line for reports (``rnnreg check`` prints it)."""

    invariant: str
    detail: str


def _fail(invariant: str, observed: str, cause: str, fix: str) -> NoReturn:
    raise InvariantViolation(f"{invariant}: {observed}.\n  Likely cause: {cause}.\n  Fix: {fix}.")


# ---------------------------------------------------------------------------------------------------------------
# Plumbing shared by the model checks
# ---------------------------------------------------------------------------------------------------------------


def _cuda_indices(obj: object) -> list[int]:
    if not isinstance(obj, nn.Module):
        return []
    tensors = itertools.chain(obj.parameters(), obj.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


@contextlib.contextmanager
def _untouched(obj: object) -> Iterator[None]:
    """Run a block on ``obj`` and put back what it may change: modes, parameter/buffer values, torch's RNG."""
    module = obj if isinstance(obj, nn.Module) else None
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    state = list(itertools.chain(module.parameters(), module.buffers())) if module is not None else []
    saved = [t.detach().clone() for t in state]
    with torch.random.fork_rng(devices=_cuda_indices(obj)):
        try:
            yield
        finally:
            for m, training in modes:
                m.training = training  # per module: model.train(flag) would overwrite deliberate mixed modes
            with torch.no_grad():
                for t, value in zip(state, saved, strict=True):
                    # A train-mode forward may update buffers (BatchNorm running stats); put them back bitwise.
                    if t.shape == value.shape and not torch.equal(t, value):
                        t.copy_(value)


def _set_mode(obj: object, training: bool) -> None:
    if isinstance(obj, nn.Module):
        obj.train(training)


def _describe(obj: object) -> str:
    return type(obj).__name__ if isinstance(obj, nn.Module) else getattr(obj, "__name__", repr(obj))


def _validate_model(model: object) -> None:
    """TypeError unless ``model`` can be called as ``model(tokens, lengths)``."""
    if not callable(model):
        raise TypeError(
            f"model must be callable as model(tokens, lengths) -> logits[B, C] "
            f"(got {model!r} that is a {type(model).__name__}); pass an nn.Module or a function"
        )
    fn = model.forward if isinstance(model, nn.Module) else model
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and some C extensions have no signature; the first call will tell
    try:
        signature.bind(object(), object())
    except TypeError:
        raise TypeError(
            f"model must be callable as model(tokens, lengths) -> logits[B, C]; {_describe(model)} takes "
            f"{signature}. Wrap it, e.g. `lambda tokens, lengths: my_model(tokens)` if it ignores lengths"
        ) from None


def _validate_batch(batch: object) -> Batch:
    missing = [a for a in ("tokens", "lengths", "labels") if not isinstance(getattr(batch, a, None), Tensor)]
    if missing:
        raise TypeError(
            f"batch must be an rnnreg.data.Batch with tensors tokens[B, T], lengths[B], labels[B] "
            f"(got {type(batch).__name__} without {', '.join(missing)}); build one with rnnreg.data.collate"
        )
    tokens: Tensor = batch.tokens  # type: ignore[attr-defined]
    lengths: Tensor = batch.lengths  # type: ignore[attr-defined]
    labels: Tensor = batch.labels  # type: ignore[attr-defined]
    if tokens.dim() != 2 or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(
            f"batch.tokens must be an integer tensor [B, T] (got {tokens.dtype} of shape {tuple(tokens.shape)})"
        )
    B, T = tokens.shape  # batch, time
    if B == 0 or T == 0:
        raise ValueError(f"batch.tokens must hold at least one row and one step (got shape {tuple(tokens.shape)})")
    if lengths.shape != (B,) or lengths.is_floating_point():
        raise ValueError(
            f"batch.lengths must be an integer tensor [B] = [{B}] (got {lengths.dtype} {tuple(lengths.shape)})"
        )
    lengths = lengths.cpu()
    if int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(
            f"batch.lengths must lie in [1, T={T}] (got min {int(lengths.min())}, max {int(lengths.max())}); "
            "each row needs at least one real token and cannot be longer than tokens.shape[1]"
        )
    if labels.shape != (B,):
        raise ValueError(f"batch.labels must have shape [B] = [{B}] (got {tuple(labels.shape)})")
    return Batch(tokens.to(torch.int64), lengths.to(torch.int64), labels)


def _device(obj: object) -> torch.device:
    if isinstance(obj, nn.Module):
        for t in itertools.chain(obj.parameters(), obj.buffers()):
            return t.device
    return torch.device("cpu")


def _prepare(model: object, batch: object) -> Batch:
    _validate_model(model)
    return _validate_batch(batch).to(_device(model))


def _logits(model: Model, tokens: Tensor, lengths: Tensor, invariant: str) -> Tensor:
    """One forward pass without gradients, with the output checked against the protocol."""
    with torch.no_grad():
        out = model(tokens, lengths)
    B = tokens.shape[0]
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != B or not out.is_floating_point():
        got = f"{out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"model(tokens, lengths) must return float logits of shape [B, C] with B={B} (got a {got}); "
            "return only the logits, e.g. `return self.head(features)`, not a tuple with states"
        )
    if not torch.isfinite(out).all():
        rows = _rows(~torch.isfinite(out).all(dim=1))
        _fail(
            invariant,
            f"the model produced non-finite logits in rows {rows}",
            "an overflow (a fill value like -1e9 in low precision), a division by a zero length or count, or "
            "NaN weights",
            "check the masks and divisions in forward; compute reductions over masked positions in fp32",
        )
    return out


def _variant_logits(model: Model, tokens: Tensor, lengths: Tensor, invariant: str, what: str) -> Tensor:
    """Logits of a derived batch; the model already ran on the original, so an error here is the model's answer."""
    try:
        return _logits(model, tokens, lengths, invariant)
    except InvariantViolation:
        raise
    except Exception as e:
        message = str(e).splitlines()[0] if str(e) else ""
        _fail(
            invariant,
            f"the model ran on the batch but raised {type(e).__name__} on {what}: {message}",
            "forward depends on the batch as a whole: statistics over the batch (BatchNorm with "
            "track_running_stats=False needs more than one row) or a fixed batch size or width",
            "compute every statistic per row (use running statistics in eval) and accept any batch size and width",
        )


def _rows(mask: Tensor) -> list[int]:
    return [int(i) for i in mask.nonzero().flatten()[:8]]


def _changed_rows(ref: Tensor, other: Tensor) -> tuple[Tensor, float]:
    """Per-row mismatch beyond assert_close's default tolerance for the dtype, and the max abs difference."""
    rtol, atol = _TOLERANCES.get(ref.dtype, _TOLERANCES[torch.float32])
    close = torch.isclose(other.to(ref.dtype), ref, rtol=rtol, atol=atol).all(dim=1)  # [B]
    diff = float((other.double() - ref.double()).abs().max())
    return ~close, diff


def _is_row_permutation(batched: Tensor, alone: Tensor) -> bool:
    """True when the batched logits are the per-row logits in another order."""
    rtol, atol = _TOLERANCES.get(batched.dtype, _TOLERANCES[torch.float32])
    match = torch.isclose(batched[:, None, :], alone[None, :, :], rtol=rtol, atol=atol).all(dim=2)  # [B, B]
    return bool(match.any(dim=1).all()) and bool(match.any(dim=0).all())


def _pad_mask(lengths: Tensor, T: int, device: torch.device) -> Tensor:
    steps = torch.arange(T, device=device)  # [T]
    return steps[None, :] >= lengths.to(device)[:, None]  # [B, T] True on padding


# ---------------------------------------------------------------------------------------------------------------
# Model checks
# ---------------------------------------------------------------------------------------------------------------


def check_eval_deterministic(model: Model, batch: Batch) -> CheckPassed:
    """Eval mode is deterministic: two eval passes, under different RNG seeds, give bitwise-equal logits."""
    invariant = "eval mode is deterministic"
    batch = _prepare(model, batch)
    with _untouched(model):
        _set_mode(model, False)
        passes = []
        for offset in range(2):
            torch.manual_seed(_SEED + offset)  # different seeds: any randomness left in eval must show
            passes.append(_logits(model, batch.tokens, batch.lengths, invariant))
    if not torch.equal(passes[0], passes[1]):
        diff = float((passes[0].double() - passes[1].double()).abs().max())
        rows = _rows((passes[0] != passes[1]).any(dim=1))
        _fail(
            invariant,
            f"two eval passes differ by up to {diff:.3g} (rows {rows})",
            "a dropout or noise that ignores self.training (e.g. F.dropout(x, p, training=True), or a weight-drop "
            "mask drawn in eval as in awd-lstm's variational mode), or state carried from one call to the next",
            "pass training=self.training to every functional dropout, skip masks in eval, and reset any state at "
            "the start of forward",
        )
    return CheckPassed(invariant, "two eval passes under different seeds are bitwise equal")


def _inert_dropouts(model: object) -> tuple[list[str], list[str]]:
    """Names of configured dropouts that cannot act, and of dropout modules that could."""
    inert: list[str] = []
    active: list[str] = []
    if not isinstance(model, nn.Module):
        return inert, active
    for name, m in model.named_modules():
        label = name or type(model).__name__
        if isinstance(m, nn.RNNBase) and m.dropout > 0:
            if m.num_layers == 1:
                inert.append(
                    f"{label}: nn.{type(m).__name__}(dropout={m.dropout}) with num_layers=1 "
                    "(PyTorch applies RNN dropout only between layers, so it does nothing)"
                )
            else:
                active.append(label)
        elif isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            active.append(label)
    return inert, active


def check_dropout_active(model: Model, batch: Batch, *, passes: int = 6) -> CheckPassed:
    """Train mode is stochastic: train-mode logits change from one pass (and seed) to the next.

    A configured dropout that does nothing fails, like the notebook's one-layer ``nn.LSTM(dropout=0.3)``. The batch
    is tiled to at least 16 rows and ``passes`` passes are compared to the first, so a small dropout on a small
    batch is not missed by the chance that two masks coincide.
    """
    invariant = "train mode is stochastic (dropout acts)"
    batch = _prepare(model, batch)
    reps = max(1, math.ceil(16 / len(batch)))
    tokens, lengths = batch.tokens.repeat(reps, 1), batch.lengths.repeat(reps)  # [reps*B, T], [reps*B]
    with _untouched(model):
        _set_mode(model, True)
        outs = []
        for offset in range(max(2, passes)):
            torch.manual_seed(_SEED + offset)
            outs.append(_logits(model, tokens, lengths, invariant))
    if all(torch.equal(outs[0], o) for o in outs[1:]):
        inert, active = _inert_dropouts(model)
        if inert:
            cause = "configured dropout that cannot act: " + "; ".join(inert)
        elif active:
            cause = (
                f"dropout modules with p > 0 exist ({', '.join(active)}) but change nothing: they are not called "
                "in forward, are called with training=False, or act only where nothing downstream reads"
            )
        else:
            cause = "the model has no dropout with p > 0 (no nn.Dropout* module and no multi-layer RNN dropout)"
        _fail(
            invariant,
            f"{len(outs)} train-mode passes under different seeds gave bitwise-identical logits",
            cause,
            "for a one-layer RNN, drop its input or output instead (e.g. locked dropout on the embeddings, dropout "
            "before the classifier) or use num_layers >= 2; if the model is meant to be deterministic in training, "
            "this check does not apply to it",
        )
    return CheckPassed(invariant, f"train-mode logits differ between passes ({len(outs)} passes, {len(tokens)} rows)")


def check_padding_invariance(model: Model, batch: Batch, *, pad_id: int = PAD_ID, extra: int = 3) -> CheckPassed:
    """Eval logits do not change when padding is appended or when pad positions hold garbage.

    Three variants of ``batch`` are compared with it row by row: ``extra`` columns of ``pad_id`` appended; random
    real tokens (drawn from the batch's own tokens, so the ids are valid) written into the existing pad positions;
    ``extra`` appended columns of random tokens.
    """
    invariant = "padding invariance"
    batch = _prepare(model, batch)
    if extra < 1:
        raise ValueError(f"extra must be >= 1 appended columns (got {extra})")
    tokens, lengths = batch.tokens, batch.lengths
    B, T = tokens.shape  # batch, time
    gen = torch.Generator().manual_seed(_SEED)

    def garbage_in_pads(t: Tensor) -> Tensor:
        pads = _pad_mask(lengths, t.shape[1], t.device)  # [B, T']
        real = tokens[~_pad_mask(lengths, T, tokens.device)]  # every real token id of the batch
        picks = torch.randint(len(real), (int(pads.sum()),), generator=gen).to(t.device)
        out = t.clone()
        out[pads] = real[picks]
        return out

    appended = torch.cat([tokens, torch.full((B, extra), pad_id, dtype=tokens.dtype, device=tokens.device)], dim=1)
    variants = [(f"with {extra} pad columns appended", appended)]
    if bool((lengths < T).any()):
        variants.append(("with random tokens in its pad positions", garbage_in_pads(tokens)))
    variants.append((f"with {extra} appended columns of random tokens", garbage_in_pads(appended)))

    with _untouched(model):
        _set_mode(model, False)
        ref = _logits(model, tokens, lengths, invariant)
        problems = []
        for what, variant in variants:
            changed, diff = _changed_rows(ref, _variant_logits(model, variant, lengths, invariant, f"the batch {what}"))
            if changed.any():
                rows = _rows(changed)
                problems.append((what, rows, [int(lengths[i]) for i in rows], diff))
    if problems:
        observed = "; ".join(
            f"rows {rows} (lengths {lens} of T={T}) changed by up to {diff:.3g} {what}"
            for what, rows, lens, diff in problems
        )
        appended_only = all("pad columns appended" in what for what, *_ in problems)
        cause = (
            "the model reads past each row's length: the reverse direction of a bidirectional RNN (or the final "
            "state / output[:, -1]) reads padding, or pooling averages over all T positions or divides by the "
            "batch's max length"
        )
        if not appended_only:
            cause += "; it also reads token values in pad positions (e.g. a mask built from tokens == PAD)"
        _fail(
            invariant,
            observed,
            cause,
            "pack the sequence (pack_padded_sequence(..., lengths.cpu(), enforce_sorted=False)) or reverse within "
            "lengths for the backward direction, take the state at lengths - 1, and build every mask and mean from "
            "lengths (divide by lengths, not T)",
        )
    return CheckPassed(invariant, f"logits unchanged under {len(variants)} padding variants")


def check_batch_independence(model: Model, batch: Batch) -> CheckPassed:
    """Each row's eval logits equal its logits computed alone, and follow the rows when the batch is permuted.

    Rows computed alone keep the batch's width T, so this check stays separate from padding invariance.
    """
    invariant = "batch independence"
    batch = _prepare(model, batch)
    tokens, lengths = batch.tokens, batch.lengths
    B = len(batch)
    gen = torch.Generator().manual_seed(_SEED)
    perms = [("reversed", torch.arange(B - 1, -1, -1)), ("shuffled", torch.randperm(B, generator=gen))]
    with _untouched(model):
        _set_mode(model, False)
        ref = _logits(model, tokens, lengths, invariant)
        alone = torch.cat(
            [
                _variant_logits(model, tokens[i : i + 1], lengths[i : i + 1], invariant, "a batch of one row")
                for i in range(B)
            ]
        )
        alone_changed, alone_diff = _changed_rows(ref, alone)
        permuted = []
        for what, perm in perms:
            out = _variant_logits(model, tokens[perm.to(tokens.device)], lengths[perm], invariant, f"the {what} batch")
            changed, diff = _changed_rows(ref[perm.to(ref.device)], out)
            if changed.any():
                permuted.append((what, [int(perm[i]) for i in _rows(changed)], diff))
    reordered = (
        "rows reordered inside forward and not put back (sorting by length for pack_padded_sequence without "
        "restoring the order)",
        "pack with enforce_sorted=False (PyTorch restores the order), or index the outputs with the inverse "
        "permutation",
    )
    if alone_changed.any():
        cause, fix = (
            "statistics over the batch in eval (BatchNorm with track_running_stats=False, normalizing by a "
            "batch-wide mean, max or length), or rows mixed by a view/transpose over the wrong axis",
            "compute every statistic per row, use running statistics in eval, and keep the batch axis separate "
            "(use batch_first consistently)",
        )
        if _is_row_permutation(ref, alone):
            cause, fix = reordered  # the batch holds the right logits, in the wrong rows
        _fail(
            invariant,
            f"rows {_rows(alone_changed)} computed alone differ by up to {alone_diff:.3g} from the same rows "
            f"in the batch of {B}",
            cause,
            fix,
        )
    if permuted:
        observed = "; ".join(f"{what} batch: rows {rows} changed by up to {diff:.3g}" for what, rows, diff in permuted)
        _fail(
            invariant,
            f"logits do not follow their rows when the batch is permuted ({observed})",
            *reordered,
        )
    return CheckPassed(invariant, f"{B} rows alone and under 2 permutations match the batch")


def check_amp_parity(
    model: Model,
    batch: Batch,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
    rtol: float | None = None,
) -> CheckPassed:
    """Eval logits under ``torch.autocast(device, dtype)`` stay within a bound of the fp32 logits.

    The bound is ``max|low - fp32| <= rtol * max|fp32|`` with ``rtol = 12.8 eps(dtype)``: 0.05 for bf16, 0.0125
    for fp16. bf16 keeps about 3 significant digits and errors grow through each layer, so a per-element fp32-style
    tolerance would fail healthy models; on 190 random GRU/LSTM classifiers on CPU (max|logit| 0.009 to 3) the worst
    ratio measured was 1.4e-2. A model whose signal drowns in rounding (a large offset added inside autocast, a
    reduction of many terms in low precision) errs by about the logits themselves and fails. Modules without a
    low-precision kernel (a packed LSTM on CPU) simply stay fp32; the detail line names those that ran in low
    precision. ``rtol`` overrides the bound.
    """
    invariant = f"{str(dtype).removeprefix('torch.')} autocast parity"
    batch = _prepare(model, batch)
    if dtype not in _AMP_RTOL:
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (got {dtype})")
    model_device = _device(model).type
    if device != model_device:
        raise ValueError(f"device={device!r} but the model is on {model_device!r}; pass device={model_device!r}")
    bound_rtol = _AMP_RTOL[dtype] if rtol is None else rtol
    with _untouched(model):
        _set_mode(model, False)
        ref = _logits(model, batch.tokens, batch.lengths, invariant).float()
        try:
            with torch.autocast(device_type=device, dtype=dtype):
                low = _logits(model, batch.tokens, batch.lengths, invariant).float()
        except RuntimeError as e:
            _fail(
                invariant,
                f"the forward pass under autocast raised RuntimeError: {str(e).splitlines()[0]}",
                "an op without a low-precision kernel on this device (e.g. an unpacked nn.LSTM in bf16 on CPUs "
                "whose oneDNN build lacks it)",
                "run that module outside autocast (torch.autocast(..., enabled=False) around it, input cast with "
                ".float()), pack the sequence, or train in fp32 on this machine",
            )
        low_precision = ", ".join(low_precision_modules(_probe(model, batch, dtype))) or "none"
    diff = float((low - ref).abs().max())
    bound = bound_rtol * max(float(ref.abs().max()), 1e-6)  # the floor only keeps all-zero logits comparable
    if not diff <= bound:
        _fail(
            invariant,
            f"logits under autocast differ from fp32 by up to {diff:.3g} > bound {bound:.3g} "
            f"({bound_rtol:.3g} x max|logit|); modules in low precision: {low_precision}",
            "a computation that loses its signal in low precision: a large constant added and later removed, a "
            "long sum or a variance (E[x^2] - E[x]^2) computed in low precision, or a manual cast to half",
            "keep sensitive reductions in fp32 (x.float() before them, or torch.autocast(..., enabled=False) "
            "around them) and avoid large offsets inside the autocast region",
        )
    return CheckPassed(invariant, f"max|dlogit| {diff:.2g} <= {bound:.2g}; low precision in: {low_precision}")


def _probe(model: Model, batch: Batch, dtype: torch.dtype) -> dict[str, str]:
    if not isinstance(model, nn.Module):
        return {}
    return probe_autocast(model, batch, "bf16" if dtype == torch.bfloat16 else "fp16")


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
            _set_mode(layer, False)
            out_eval = layer(x)
    for what, y in (("train", out), ("eval", out_eval)):
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
    valid = dropped | torch.isclose(mask, torch.tensor(scale), rtol=1e-5, atol=0.0)
    if not valid.all():
        seen = torch.unique(mask[~valid])[:5].tolist()
        non_inverted = any(math.isclose(v, 1.0, rel_tol=1e-5) for v in seen)
        _fail(
            invariant,
            f"output/input takes values {[round(v, 4) for v in seen]} outside {{0, 1/(1-p) = {scale:.4g}}}",
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


def _global_norm(grads: Iterable[Tensor | None]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def _as_float(value: object) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True)
class _ClipCase:
    name: str
    norms: tuple[float, ...]  # each gradient tensor's norm, as multiples of max_norm
    max_norm: float


_CLIP_SHAPES = ((4, 3), (5,), (2, 3, 2), ())
_CLIP_CASES = (
    _ClipCase("global norm 9.3x max_norm", (6.0, 4.0, 5.0, 3.0), 1.0),
    # Each tensor alone is below max_norm but together they are above: per-tensor clipping (tf.keras clipnorm)
    # leaves them untouched.
    _ClipCase("each tensor below max_norm, global norm 1.6x above", (0.8, 0.8, 0.8, 0.8), 0.5),
    # One dominant tensor: per-tensor clipping changes the direction of the overall gradient.
    _ClipCase("one dominant tensor", (20.0, 0.1, 0.3, 0.05), 2.0),
    _ClipCase("global norm 0.5x max_norm (below the threshold)", (0.3, 0.25, 0.2, 0.2), 1.0),
)


def _clip_case_grads(case: _ClipCase, gen: torch.Generator) -> list[Tensor]:
    grads = []
    for shape, rel in zip(_CLIP_SHAPES, case.norms, strict=True):
        g = torch.randn(shape, generator=gen)
        grads.append(g * (rel * case.max_norm / float(g.norm())))
    return grads


def check_gradient_clipping(clip_fn: Callable[[list[Tensor], float], Any]) -> CheckPassed:
    """``clip_fn(parameters, max_norm)`` behaves like ``torch.nn.utils.clip_grad_norm_``.

    On four fixed cases (below and above the threshold, per-tensor norms below it but the global norm above, one
    dominant tensor), and on a list with a parameter whose ``.grad`` is None: the global L2 norm after clipping is
    <= max_norm * (1 + 1e-6); every gradient is scaled by one common factor (direction preserved, rtol 1e-5);
    below the threshold the gradients are bitwise unchanged; the return value is the pre-clip global norm
    (rtol 1e-5, since summation order may differ).
    """
    invariant = "gradient clipping by global norm"
    if not callable(clip_fn):
        raise TypeError(f"clip_fn must be callable as clip_fn(parameters, max_norm) (got {clip_fn!r})")
    gen = torch.Generator().manual_seed(_SEED)
    with torch.random.fork_rng(devices=[]):
        for case in _CLIP_CASES:
            before = _clip_case_grads(case, gen)
            _check_clip_case(clip_fn, case, before, invariant)
        # A parameter without a gradient (frozen or unused) must be skipped, as clip_grad_norm_ does.
        case = _CLIP_CASES[0]
        before = _clip_case_grads(case, gen)
        params: list[Tensor] = [nn.Parameter(torch.zeros_like(g)) for g in before]
        for p, g in zip(params, before, strict=True):
            p.grad = g.clone()
        params.insert(1, nn.Parameter(torch.zeros(3)))
        try:
            clip_fn(params, case.max_norm)
        except Exception as e:
            _fail(
                invariant,
                f"clip_fn raised {type(e).__name__}: {e} on a parameter list with one .grad = None",
                "gradients read without skipping parameters that have none (frozen or unused)",
                "skip parameters whose .grad is None, as clip_grad_norm_ does",
            )
        if params[1].grad is not None:
            _fail(
                invariant,
                "a parameter whose .grad was None got a gradient",
                "grads created for every parameter",
                "leave .grad = None alone",
            )
    return CheckPassed(invariant, f"{len(_CLIP_CASES)} cases: global norm bounded, direction kept, no-op below")


def _check_clip_case(
    clip_fn: Callable[[list[Tensor], float], Any], case: _ClipCase, before: list[Tensor], invariant: str
) -> None:
    params: list[Tensor] = [nn.Parameter(torch.zeros_like(g)) for g in before]
    for p, g in zip(params, before, strict=True):
        p.grad = g.clone()
    norm = _global_norm(before)
    returned = clip_fn(params, case.max_norm)
    after = [p.grad for p in params]
    if any(g is None or g.shape != b.shape for g, b in zip(after, before, strict=True)):
        _fail(
            invariant,
            f"[{case.name}] gradients were removed or reshaped",
            "clip_fn replaced .grad",
            "scale the gradients in place (g.mul_(coef))",
        )
    after_t = [g for g in after if g is not None]
    post = _global_norm(after_t)
    where = f"[{case.name}, max_norm={case.max_norm}, pre-clip norm {norm:.6g}]"

    got = _as_float(returned)
    if got is None or not math.isclose(got, norm, rel_tol=1e-5):
        hint = ""
        if got is not None and math.isclose(got, post, rel_tol=1e-5):
            hint = " (that is the post-clip norm)"
        _fail(
            invariant,
            f"{where} clip_fn returned {returned!r}{hint} instead of the pre-clip global norm {norm:.6g}",
            "the norm is not returned, or is measured after scaling",
            "return the total norm computed before scaling, as clip_grad_norm_ does (callers log it and detect "
            "non-finite steps with it)",
        )
    if norm <= case.max_norm:
        changed = [i for i, (a, b) in enumerate(zip(after_t, before, strict=True)) if not torch.equal(a, b)]
        if changed:
            _fail(
                invariant,
                f"{where} gradients {changed} changed although the norm is below max_norm (norm after {post:.6g})",
                "the gradients are always rescaled to max_norm / norm, even when that scales them up",
                "scale by min(1, max_norm / (norm + 1e-6)), so below the threshold nothing changes",
            )
        return
    if not post <= case.max_norm * (1 + 1e-6):
        own = [_global_norm([g]) for g in after_t]
        per_tensor = all(n <= case.max_norm * (1 + 1e-6) for n in own)
        _fail(
            invariant,
            f"{where} global norm after clipping is {post:.6g} > max_norm {case.max_norm}"
            + (f"; each tensor's own norm is <= max_norm ({', '.join(f'{n:.3g}' for n in own)})" if per_tensor else ""),
            "each tensor is clipped on its own (like tf.keras clipnorm), not by the norm over all gradients"
            if per_tensor
            else "the scaling factor is not max_norm / total_norm, or clipping did not happen",
            "compute total_norm over all gradients together and multiply every gradient by "
            "min(1, max_norm / (total_norm + 1e-6)) (torch.nn.utils.clip_grad_norm_)",
        )
    coef = post / norm
    for i, (a, b) in enumerate(zip(after_t, before, strict=True)):
        expected = b.double() * coef
        if not torch.allclose(a.double(), expected, rtol=1e-5, atol=1e-7 * case.max_norm):
            ratio = _global_norm([a]) / max(_global_norm([b]), 1e-30)
            _fail(
                invariant,
                f"{where} gradient {i} was scaled by {ratio:.4g} while the gradients as a whole were scaled by "
                f"{coef:.4g}: the direction changed",
                "tensors scaled by different factors (per-tensor clipping, like tf.keras clipnorm)",
                "scale every gradient by the one factor min(1, max_norm / (total_norm + 1e-6))",
            )


# ---------------------------------------------------------------------------------------------------------------
# Label smoothing
# ---------------------------------------------------------------------------------------------------------------


def _soft_target_ce(logits: Tensor, targets: Tensor, on: float, off: float) -> float:
    """Mean cross-entropy, in float64, against targets with ``on`` for the true class and ``off`` elsewhere."""
    q = torch.full(logits.shape, off, dtype=torch.float64)  # [B, K]
    q[torch.arange(len(targets)), targets] = on
    return float(-(q * torch.log_softmax(logits.double(), dim=1)).sum(dim=1).mean())


def _smoothed(eps: float, K: int) -> tuple[float, float]:
    """(true-class, other-class) target mass in PyTorch's convention."""
    return 1.0 - eps + eps / K, eps / K


def check_label_smoothing(loss_fn: Callable[[Tensor, Tensor, float], Any]) -> CheckPassed:
    """``loss_fn(logits, targets, smoothing)`` is the mean cross-entropy against ``(1-eps)*onehot + eps/K``.

    PyTorch's convention: eps/K on every class, so the true class gets 1 - eps + eps/K (0.95 / 0.05 for eps = 0.1,
    K = 2), not eps/(K-1) on the wrong classes. Checked for K in {2, 3, 5, 10} and eps in {0, 0.1, 0.3}, eps = 0
    being plain cross-entropy, against a float64 reference within fp32 tolerance (rtol 1.3e-6, atol 1e-5).
    """
    invariant = "label smoothing (target (1-eps)*onehot + eps/K)"
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets, smoothing) (got {loss_fn!r})")
    gen = torch.Generator().manual_seed(_SEED)
    failures: list[str] = []
    first_cause = ""
    with torch.random.fork_rng(devices=[]):
        for eps in (0.0, 0.1, 0.3):
            for K in (2, 3, 5, 10):
                logits = torch.randn(8, K, generator=gen) * 3.0  # [B, K]
                targets = torch.randint(K, (8,), generator=gen)  # [B]
                expected = _soft_target_ce(logits, targets, *_smoothed(eps, K))
                returned = loss_fn(logits.clone(), targets.clone(), eps)
                got = _as_float(returned)
                if got is None:
                    shape = tuple(returned.shape) if isinstance(returned, Tensor) else type(returned).__name__
                    _fail(
                        invariant,
                        f"loss_fn returned {shape} for K={K}, eps={eps}",
                        "the loss is not reduced (reduction='none') or not returned",
                        "return the mean loss over the batch as a scalar tensor",
                    )
                if abs(got - expected) <= 1e-5 + 1.3e-6 * abs(expected):
                    continue
                failures.append(f"K={K}, eps={eps}: loss {got:.6g}, expected {expected:.6g}")
                if not first_cause:
                    first_cause = _diagnose_smoothing(got, logits, targets, eps)
    if failures:
        _fail(
            invariant,
            f"{len(failures)} of 12 cases differ from soft-target cross-entropy: " + "; ".join(failures[:3]),
            first_cause,
            "use F.cross_entropy(logits, targets, label_smoothing=eps), which spreads eps/K over every class, and "
            "pass eps through unchanged (0 means no smoothing)",
        )
    return CheckPassed(invariant, "12 cases (K in 2,3,5,10; eps in 0,0.1,0.3) match soft-target cross-entropy")


def _diagnose_smoothing(got: float, logits: Tensor, targets: Tensor, eps: float) -> str:
    K = logits.shape[1]

    def near(value: float) -> bool:
        return abs(got - value) <= 1e-5 + 1e-5 * abs(value)

    if near(_soft_target_ce(logits, targets, *_smoothed(eps, K)) * len(targets)):
        return "the loss is summed over the batch instead of averaged"
    if K > 1 and eps > 0 and near(_soft_target_ce(logits, targets, 1.0 - eps, eps / (K - 1))):
        return (
            f"the eps/(K-1) convention (eps spread over the K-1 wrong classes, true class 1-eps); PyTorch puts eps/K "
            f"on every class, so the true class gets 1-eps+eps/K ({1 - eps + eps / K:.3g} here)"
        )
    if eps > 0 and near(_soft_target_ce(logits, targets, 1.0, 0.0)):
        return "smoothing is ignored: the loss equals plain cross-entropy"
    if eps == 0:
        for default in (0.1, 0.05, 0.2):
            if near(_soft_target_ce(logits, targets, *_smoothed(default, K))):
                return (
                    f"eps=0 is replaced by a default ({default}), e.g. `eps = smoothing or {default}`: a falsy 0 "
                    "is not 'unset'"
                )
        return "eps=0 does not give plain cross-entropy"
    return "a different target distribution or reduction than (1-eps)*onehot + eps/K with a mean over rows"


# ---------------------------------------------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------------------------------------------

_WD_SHAPES = ((3, 4), (5,))
_WD_LR, _WD = 0.05, 0.2  # lr*wd = 0.01: the decay term is ~1e3 x fp32 tolerance, the Adam step 5x larger still


def _make_params(values: Sequence[Tensor]) -> list[Tensor]:
    return [nn.Parameter(v.clone()) for v in values]


def _step(optimizer: Any, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    optimizer.step()


def check_weight_decay(make_optimizer: Callable[[list[Tensor], float, float], Any], *, decoupled: bool) -> CheckPassed:
    """``make_optimizer(params, lr, weight_decay)`` applies weight decay as declared.

    ``decoupled=True`` (AdamW-style): with a zero data gradient one step gives exactly ``p * (1 - lr*wd)``; with
    gradients, each step equals the wd = 0 optimizer's step plus ``-lr*wd*p`` (3 steps).
    ``decoupled=False`` (L2 in the gradient, Adam/SGD ``weight_decay``): 3 steps equal the same optimizer with
    wd = 0 fed ``g + wd*p``. Steady shrinkage is deliberately not asserted: with Adam and a zero data gradient every
    weight moves by about lr whatever wd is. Plain SGD satisfies both (the two forms coincide for it); SGD with
    momentum is coupled only. Tolerance: assert_close fp32 defaults.
    """
    if not isinstance(decoupled, bool):
        raise TypeError(f"decoupled must be True (AdamW-style) or False (L2 added to the gradient) (got {decoupled!r})")
    if not callable(make_optimizer):
        raise TypeError(
            f"make_optimizer must be callable as make_optimizer(params, lr, weight_decay) (got {make_optimizer!r})"
        )
    gen = torch.Generator().manual_seed(_SEED)
    values = [torch.randn(s, generator=gen) for s in _WD_SHAPES]
    grad_seq = [[torch.randn(s, generator=gen) for s in _WD_SHAPES] for _ in range(3)]
    with torch.random.fork_rng(devices=[]):
        if decoupled:
            _check_decoupled(make_optimizer, values, grad_seq)
        else:
            _check_coupled(make_optimizer, values, grad_seq)
    kind = "decoupled: p*(1-lr*wd) with zero gradient" if decoupled else "coupled: equals wd=0 fed g + wd*p"
    return CheckPassed(f"{'decoupled' if decoupled else 'coupled'} weight decay", f"{kind}, 3 steps")


def _max_diff(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b, strict=True))


def _all_close(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return all(torch.allclose(x.detach(), y.detach(), rtol=1.3e-6, atol=1e-5) for x, y in zip(a, b, strict=True))


def _check_decoupled(make_optimizer: Callable[..., Any], values: list[Tensor], grad_seq: list[list[Tensor]]) -> None:
    invariant = "decoupled weight decay"
    lr, wd = _WD_LR, _WD
    params = _make_params(values)
    _step(make_optimizer(params, lr, wd), params, [torch.zeros_like(v) for v in values])
    expected = [v * (1.0 - lr * wd) for v in values]
    if not _all_close(params, expected):
        moved = torch.cat([(p.detach() - v).abs().flatten() for p, v in zip(params, values, strict=True)])
        factor = torch.cat([(p.detach() / v).flatten() for p, v in zip(params, values, strict=True)]).median()
        if torch.allclose(moved, torch.full_like(moved, lr), rtol=0.05):
            cause = (
                "every weight moved by about lr towards zero: this is Adam with coupled L2 (wd*p added to the "
                "gradient, then normalized away), not decoupled decay"
            )
        elif float(moved.max()) == 0.0:
            cause = "nothing decayed: weight_decay is ignored or its parameter group has weight_decay=0"
        elif math.isclose(float(factor), 1.0 - wd, rel_tol=1e-4):
            cause = "the decay is not multiplied by lr (p *= 1 - wd)"
        else:
            cause = "the decay factor is not 1 - lr*wd"
        _fail(
            invariant,
            f"one step with zero gradient scaled the weights by a median factor {float(factor):.6g}, expected "
            f"1 - lr*wd = {1 - lr * wd:.6g} (lr={lr}, wd={wd}; max error {_max_diff(params, expected):.3g})",
            cause,
            "use torch.optim.AdamW(params, lr, weight_decay=wd), or apply p.mul_(1 - lr*wd) before the update; if "
            "you meant L2 in the gradient, check with decoupled=False",
        )
    decayed, plain = _make_params(values), _make_params(values)
    opt_decayed, opt_plain = make_optimizer(decayed, lr, wd), make_optimizer(plain, lr, 0.0)
    for t, grads in enumerate(grad_seq, start=1):
        start_d = [p.detach().clone() for p in decayed]
        start_p = [p.detach().clone() for p in plain]
        _step(opt_decayed, decayed, grads)
        _step(opt_plain, plain, grads)
        # The data update does not depend on p (its state sees only gradients), so the decayed step is the plain
        # step plus the decay of the decayed weights.
        expected = [s * (1.0 - lr * wd) + (q.detach() - sp) for s, q, sp in zip(start_d, plain, start_p, strict=True)]
        if not _all_close(decayed, expected):
            _fail(
                invariant,
                f"at step {t} the update differs by up to {_max_diff(decayed, expected):.3g} from the wd=0 update "
                f"plus -lr*wd*p (lr={lr}, wd={wd})",
                "the decay interacts with the gradient update: applied after the update to the new weights, fed "
                "into the momentum/Adam state (coupled L2, e.g. SGD momentum with weight_decay), or scaled by the "
                "adaptive denominator",
                "decay p by (1 - lr*wd) separately from the gradient update, as torch.optim.AdamW does",
            )


def _check_coupled(make_optimizer: Callable[..., Any], values: list[Tensor], grad_seq: list[list[Tensor]]) -> None:
    invariant = "coupled weight decay (L2 in the gradient)"
    lr, wd = _WD_LR, _WD
    decayed, fed = _make_params(values), _make_params(values)
    opt_decayed, opt_fed = make_optimizer(decayed, lr, wd), make_optimizer(fed, lr, 0.0)
    for t, grads in enumerate(grad_seq, start=1):
        l2_grads = [g + wd * p.detach() for g, p in zip(grads, fed, strict=True)]
        _step(opt_decayed, decayed, grads)
        _step(opt_fed, fed, l2_grads)
        if not _all_close(decayed, fed):
            _fail(
                invariant,
                f"at step {t} the weights differ by up to {_max_diff(decayed, fed):.3g} from the same optimizer "
                f"with wd=0 fed g + wd*p (lr={lr}, wd={wd})",
                "the optimizer decays p directly (decoupled, like AdamW) instead of adding wd*p to the gradient, "
                "or scales the penalty differently (e.g. 2*wd from a wd*||p||^2 loss term)",
                "for L2 use torch.optim.Adam/SGD(weight_decay=wd); if decoupled decay is intended, check with "
                "decoupled=True",
            )


# ---------------------------------------------------------------------------------------------------------------
# AMP: clipping under a GradScaler, and autocast parity
# ---------------------------------------------------------------------------------------------------------------


class _TinyClassifier(nn.Module):
    """Embedding -> packed LSTM -> last state -> linear: a small model following the protocol, no dropout."""

    def __init__(self, vocab_size: int = 20, embed_dim: int = 6, hidden_dim: int = 5, num_classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.rnn = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(tokens)  # [B, T, E]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)  # h_n: [1, B, H]
        return self.head(h_n[-1])  # [B, C]


def _tiny_batch(gen: torch.Generator, vocab_size: int = 20, num_classes: int = 3) -> Batch:
    lengths = torch.tensor([7, 5, 3, 1, 6, 2])  # [B]; a full-length row and a single-token row
    tokens = torch.randint(1, vocab_size, (len(lengths), 7), generator=gen)  # [B, T]
    tokens[_pad_mask(lengths, 7, tokens.device)] = PAD_ID
    return Batch(tokens, lengths, torch.randint(num_classes, (len(lengths),), generator=gen))


def check_amp_clipping(
    train_step: Callable[[nn.Module, Batch, torch.optim.Optimizer, torch.amp.GradScaler, float], Any],
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> CheckPassed:
    """``train_step(model, batch, optimizer, scaler, max_norm)`` clips the unscaled gradients.

    The check builds its own tiny packed-LSTM classifier and batch, and an SGD optimizer (lr 0.5, no momentum) with
    an enabled ``torch.amp.GradScaler("cpu", init_scale=2**16)``, and sets ``max_norm`` to half the gradient norm so
    clipping is active. One call of ``train_step`` must give the update of the fp32 reference (``loss_fn``,
    backward, ``clip_grad_norm_``, step) within a relative L2 error of 1e-4 (scaling by a power of two is exact;
    the margin covers fp32 rounding of the parameter differences). Clipping before ``unscale_`` shrinks the update
    by about the loss scale; not clipping, or clipping after the step, doubles it. Autocast stays off: call your
    step with AMP autocast disabled, and with a loss equal to ``loss_fn`` (plain cross-entropy by default).
    """
    invariant = "clipping acts on unscaled gradients under a GradScaler"
    if not callable(train_step):
        raise TypeError(
            f"train_step must be callable as train_step(model, batch, optimizer, scaler, max_norm) (got {train_step!r})"
        )
    lr, init_scale = 0.5, 2.0**16
    gen = torch.Generator().manual_seed(_SEED)
    batch = _tiny_batch(gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _TinyClassifier()
        start = [p.detach().clone() for p in model.parameters()]
        reference = copy.deepcopy(model)
        loss_fn(reference(batch.tokens, batch.lengths), batch.labels).backward()
        raw_norm = float(nn.utils.get_total_norm([p.grad for p in reference.parameters() if p.grad is not None]))
        max_norm = 0.5 * raw_norm  # clipping halves the update: skipping it is as visible as clipping too hard
        nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
        torch.optim.SGD(reference.parameters(), lr=lr).step()

        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        model.train()
        train_step(model, batch, optimizer, scaler, max_norm)

    ref_delta = torch.cat([(p.detach() - s).flatten() for p, s in zip(reference.parameters(), start, strict=True)])
    delta = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)])
    error = float((delta - ref_delta).norm() / ref_delta.norm())
    if not error <= 1e-4:
        ratio = float(delta.norm() / ref_delta.norm())
        if ratio == 0.0:
            cause = "the parameters did not move: the optimizer step was skipped or never called (scaler.step)"
        elif ratio < 1e-2:
            cause = (
                f"the update is {1 / ratio:.3g}x too small, about the loss scale {init_scale:.0f}: clipping ran on the "
                "scaled gradients (clip_grad_norm_ before scaler.unscale_)"
            )
        elif math.isclose(ratio, raw_norm / max_norm, rel_tol=1e-3):
            cause = "the update equals the unclipped one: the step does not clip, or clips after optimizer.step()"
        else:
            cause = "the update differs from scale -> backward -> unscale_ -> clip -> step in direction or size"
        _fail(
            invariant,
            f"the update differs from the fp32 clipped update by {error:.3g} (relative L2); its norm is {ratio:.4g}x "
            f"the reference's (pre-clip norm {raw_norm:.4g}, max_norm {max_norm:.4g}, loss scale {init_scale:.0f})",
            cause,
            "order the step as scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip_grad_norm_(params, "
            "max_norm); scaler.step(optimizer); scaler.update()",
        )
    return CheckPassed(invariant, f"update matches the fp32 clipped update (relative L2 error {error:.2g})")
