"""Invariant checks to run on your own models and regularization code.

Model checks take any ``model(tokens, lengths) -> logits[B, C]`` and a :class:`rnnreg.data.Batch`; a model with
another call convention (``input_ids``/``attention_mask``, a ``PackedSequence``, a ``(logits, state)`` output) is
checked through ``call=``, a function ``call(model, tokens, lengths) -> logits`` (see :mod:`rnnreg.testing.adapters`).
Function checks take the function under test (a clip, a loss, an optimizer factory, a training step). Each check
returns a :class:`CheckPassed` on success and raises :class:`InvariantViolation` (an ``AssertionError``, so pytest
reports it as a failure) whose message names the invariant, the numbers observed, the likely cause and the fix. A
check that torch cannot run on this machine (no low-precision kernel for an op) raises :class:`CheckCouldNotRun`
with torch's message: that is not a verdict on the code.

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
from torch.overrides import TorchFunctionMode

from rnnreg.data import PAD_ID, Batch
from rnnreg.step import low_precision_modules

__all__ = [
    "Call",
    "CheckCouldNotRun",
    "CheckPassed",
    "InvariantViolation",
    "check_amp_clipping",
    "check_amp_parity",
    "check_amp_scaler",
    "check_batch_independence",
    "check_dropout_active",
    "check_eval_deterministic",
    "check_gradient_clipping",
    "check_label_smoothing",
    "check_locked_dropout",
    "check_pad_content",
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
Call = Callable[[Any, Tensor, Tensor], Any]  # call(model, tokens, lengths) -> logits[B, C]


class InvariantViolation(AssertionError):
    """A checked invariant does not hold; the message says which, what was observed, the likely cause and the fix."""


class CheckCouldNotRun(RuntimeError):
    """torch could not run what the check needs on this machine (e.g. no bf16 kernel for an op): no verdict."""


class CheckNotApplicable(Exception):
    """The model has nothing this check verifies (e.g. no dropout at all for the dropout check): no verdict."""


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
    # CUDA-only: which devices' RNG fork_rng must save. Not mutated: no CPU test can tell, and no GPU is in CI.
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})  # pragma: no mutate


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


def _validate_model(model: object, call: Call | None = None) -> None:
    """TypeError unless ``model`` can be called as ``model(tokens, lengths)`` (or ``call`` is given and callable)."""
    if call is not None:
        if not callable(call):
            raise TypeError(f"call must be a function call(model, tokens, lengths) -> logits (got {call!r})")
        return
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


def _prepare(model: object, batch: object, call: Call | None = None) -> Batch:
    _validate_model(model, call)
    return _validate_batch(batch).to(_device(model))


def _forward(model: Any, tokens: Tensor, lengths: Tensor, call: Call | None) -> Any:
    return model(tokens, lengths) if call is None else call(model, tokens, lengths)


def _logits(
    model: Any, tokens: Tensor, lengths: Tensor, invariant: str, call: Call | None = None, *, finite: bool = True
) -> Tensor:
    """One forward pass without gradients, with the output checked against the protocol (and, with ``finite``,
    non-finite logits failed as such)."""
    with torch.no_grad():
        out = _forward(model, tokens, lengths, call)
    B = tokens.shape[0]
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != B or not out.is_floating_point():
        got = f"{out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"model(tokens, lengths) must return float logits of shape [B, C] with B={B} (got a {got}); "
            "return only the logits, or pass call= to adapt the output, e.g. "
            "rnnreg.testing.adapters.adapter(output=rnnreg.testing.adapters.first) for a (logits, state) tuple"
        )
    if finite and not torch.isfinite(out).all():
        rows = _rows(~torch.isfinite(out).all(dim=1))
        _fail(
            invariant,
            f"the model produced non-finite logits in rows {rows}",
            "an overflow (a fill value like -1e9 in low precision), a division by a zero length or count, or "
            "NaN weights",
            "check the masks and divisions in forward; compute reductions over masked positions in fp32",
        )
    return out


def _variant_logits(
    model: Any, tokens: Tensor, lengths: Tensor, invariant: str, what: str, call: Call | None = None
) -> Tensor:
    """Logits of a derived batch; the model already ran on the original, so an error here is the model's answer."""
    fix = "compute every statistic per row (use running statistics in eval) and accept any batch size and width"
    try:
        out = _logits(model, tokens, lengths, invariant, call, finite=False)
    except InvariantViolation:
        raise
    except Exception as e:
        message = str(e).splitlines()[0] if str(e) else ""
        _fail(
            invariant,
            f"the model ran on the batch but raised {type(e).__name__} on {what}: {message}",
            "forward depends on the batch as a whole: statistics over the batch (BatchNorm with "
            "track_running_stats=False needs more than one row) or a fixed batch size or width",
            fix,
        )
    if not torch.isfinite(out).all():
        _fail(
            invariant,
            f"the model gave finite logits on the batch but non-finite ones in rows "
            f"{_rows(~torch.isfinite(out).all(dim=1))} on {what}",
            "forward depends on the batch as a whole: a statistic over the batch axis (the std of one row is NaN) "
            "or a division by a count over the batch",
            fix,
        )
    return out


def _two_passes(model: Any, tokens: Tensor, lengths: Tensor, invariant: str, call: Call | None) -> list[Tensor]:
    """Two forward passes under different RNG seeds: any randomness left in the model's mode must show."""
    passes = []
    for offset in range(2):
        torch.manual_seed(_SEED + offset)
        passes.append(_logits(model, tokens, lengths, invariant, call))
    return passes


def _eval_logits(model: Any, tokens: Tensor, lengths: Tensor, invariant: str, call: Call | None) -> Tensor:
    """Eval-mode logits, after making sure that two passes agree: a comparison of eval outputs would otherwise
    measure the model's leftover randomness (which check_eval_deterministic reports) instead of its invariant."""
    passes = _two_passes(model, tokens, lengths, invariant, call)
    if not torch.equal(passes[0], passes[1]):
        raise CheckCouldNotRun(
            f"{invariant}: could not run: two eval-mode passes on the same batch differ, so this comparison would "
            "measure that randomness; see 'eval mode is deterministic'"
        )
    return passes[0]


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


def check_eval_deterministic(model: Any, batch: Batch, *, call: Call | None = None) -> CheckPassed:
    """Eval mode is deterministic: two eval passes, under different RNG seeds, give bitwise-equal logits."""
    invariant = "eval mode is deterministic"
    batch = _prepare(model, batch, call)
    with _untouched(model):
        _set_mode(model, False)
        passes = _two_passes(model, batch.tokens, batch.lengths, invariant, call)
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


# Functions a forward pass calls when it draws random numbers (F.dropout and friends, masks drawn by hand).
_RANDOM_OPS = frozenset(
    {"bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm"}
    | {"multinomial", "normal", "normal_", "uniform_", "exponential_", "geometric_", "poisson", "native_dropout"}
)


class _RandomOpRecorder(TorchFunctionMode):
    """Records the random draws and dropout calls (with p > 0) made under it, by function name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if "dropout" in name:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            if p != 0:
                self.calls.append(f"{name}(p={p}, training={training})")
        elif name in _RANDOM_OPS:
            self.calls.append(name)
        return func(*args, **kwargs)


def check_dropout_active(model: Any, batch: Batch, *, passes: int = 6, call: Call | None = None) -> CheckPassed:
    """Train mode is stochastic: train-mode logits change from one pass (and seed) to the next.

    A configured dropout that does nothing fails, like the notebook's one-layer ``nn.LSTM(dropout=0.3)``. The batch
    is tiled to at least 16 rows and ``passes`` passes are compared to the first, so a small dropout on a small
    batch is not missed by the chance that two masks coincide.
    """
    invariant = "train mode is stochastic (dropout acts)"
    batch = _prepare(model, batch, call)
    reps = max(1, math.ceil(16 / len(batch)))
    tokens, lengths = batch.tokens.repeat(reps, 1), batch.lengths.repeat(reps)  # [reps*B, T], [reps*B]
    with _untouched(model):
        _set_mode(model, True)
        outs = []
        for offset in range(max(2, passes)):
            torch.manual_seed(_SEED + offset)
            outs.append(_logits(model, tokens, lengths, invariant, call))
        identical = all(torch.equal(outs[0], o) for o in outs[1:])
        random_calls: list[str] = []
        if identical:  # one more pass, recording what forward draws at random
            with _RandomOpRecorder() as recorder:
                _logits(model, tokens, lengths, invariant, call)
            random_calls = sorted(set(recorder.calls))
    if identical:
        inert, active = _inert_dropouts(model)
        if inert:
            cause = "configured dropout that cannot act: " + "; ".join(inert)
        elif active:
            cause = (
                f"dropout modules with p > 0 exist ({', '.join(active)}) but change nothing: they are not called "
                "in forward, are called with training=False, or act only where nothing downstream reads"
            )
        elif random_calls:
            cause = (
                f"forward draws random numbers ({', '.join(random_calls[:4])}) but they change "
                "nothing: F.dropout called with training=False (not self.training), or a mask that is never applied"
            )
        else:
            raise CheckNotApplicable(
                f"{invariant}: not applicable: the model has no dropout (no nn.Dropout* module, no multi-layer RNN "
                "dropout, no random draw in forward), so training is deterministic by design"
            )
        _fail(
            invariant,
            f"{len(outs)} train-mode passes under different seeds gave bitwise-identical logits",
            cause,
            "for a one-layer RNN, drop its input or output instead (e.g. locked dropout on the embeddings, dropout "
            "before the classifier) or use num_layers >= 2; pass training=self.training to functional dropout",
        )
    return CheckPassed(invariant, f"train-mode logits differ between passes ({len(outs)} passes, {len(tokens)} rows)")


def _garbage_in_pads(tokens: Tensor, lengths: Tensor, width: int, gen: torch.Generator) -> Tensor:
    """``tokens`` widened to ``width`` with every pad position (original or appended) holding a random real token."""
    B, T = tokens.shape  # batch, time
    real = tokens[~_pad_mask(lengths, T, tokens.device)]  # every real token id of the batch: valid ids
    out = torch.cat([tokens, tokens.new_zeros(B, width - T)], dim=1)  # [B, width]
    pads = _pad_mask(lengths, width, tokens.device)  # [B, width]
    out[pads] = real[torch.randint(len(real), (int(pads.sum()),), generator=gen).to(tokens.device)]
    return out


def _compare_variants(
    model: Any, lengths: Tensor, ref: Tensor, variants: list[tuple[str, Tensor]], invariant: str, call: Call | None
) -> list[tuple[str, list[int], list[int], float]]:
    problems = []
    for what, variant in variants:
        out = _variant_logits(model, variant, lengths, invariant, f"the batch {what}", call)
        changed, diff = _changed_rows(ref, out)
        if changed.any():
            rows = _rows(changed)
            problems.append((what, rows, [int(lengths[i]) for i in rows], diff))
    return problems


def _observed(problems: list[tuple[str, list[int], list[int], float]], T: int) -> str:
    return "; ".join(
        f"rows {rows} (lengths {lens} of T={T}) changed by up to {diff:.3g} {what}"
        for what, rows, lens, diff in problems
    )


def check_padding_invariance(
    model: Any, batch: Batch, *, pad_id: int = PAD_ID, extra: int = 3, call: Call | None = None
) -> CheckPassed:
    """Eval logits do not change when ``extra`` columns of ``pad_id`` are appended to ``batch``, nor when a padded
    row runs alone at its own length, without any padding, instead of padded to the batch's width (both alone, so
    that a dependence on the other rows is not mistaken for one on padding; up to 8 rows; a row the model cannot run
    unpadded, e.g. shorter than a convolution's kernel, is not compared).

    What pad positions hold is a separate property, checked by :func:`check_pad_content`: a model that masks by
    ``tokens != pad_id`` is padding-invariant as long as pads hold ``pad_id``.
    """
    invariant = "padding invariance"
    batch = _prepare(model, batch, call)
    if extra < 1:
        raise ValueError(f"extra must be >= 1 appended columns (got {extra})")
    tokens, lengths = batch.tokens, batch.lengths
    B, T = tokens.shape  # batch, time
    appended = torch.cat([tokens, torch.full((B, extra), pad_id, dtype=tokens.dtype, device=tokens.device)], dim=1)
    with _untouched(model):
        _set_mode(model, False)
        ref = _eval_logits(model, tokens, lengths, invariant, call)
        problems = _compare_variants(
            model, lengths, ref, [(f"with {extra} pad columns appended", appended)], invariant, call
        )
        unpadded, compared = _unpadded_rows(model, tokens, lengths, invariant, call)
    problems += unpadded
    if problems:
        _fail(
            invariant,
            _observed(problems, T),
            "the model reads past each row's length: the reverse direction of a bidirectional RNN (or the final "
            "state / output[:, -1]) reads padding, or pooling averages over all T positions or divides by the "
            "batch's max length",
            "pack the sequence (pack_padded_sequence(..., lengths.cpu(), enforce_sorted=False)) or reverse within "
            "lengths for the backward direction, take the state at lengths - 1, and build every mask and mean from "
            "lengths (divide by lengths, not T)",
        )
    return CheckPassed(
        invariant, f"logits unchanged with {extra} pad columns appended and for {compared} rows run without padding"
    )


def _unpadded_rows(
    model: Any, tokens: Tensor, lengths: Tensor, invariant: str, call: Call | None
) -> tuple[list[tuple[str, list[int], list[int], float]], int]:
    """Padded rows whose logits alone at their own length differ from alone padded to T; and how many were compared."""
    T = tokens.shape[1]
    rows, lens, diffs, compared = [], [], [], 0
    for i in _rows(lengths < T):
        n = int(lengths[i])
        try:
            padded = _logits(model, tokens[i : i + 1], lengths[i : i + 1], invariant, call, finite=False)
            alone = _logits(model, tokens[i : i + 1, :n], lengths[i : i + 1], invariant, call, finite=False)
        except InvariantViolation:
            raise
        except Exception:  # e.g. a row shorter than a convolution's kernel: not what this check is about
            continue
        if not (torch.isfinite(padded).all() and torch.isfinite(alone).all()):
            continue  # a row alone the model cannot handle (a statistic over the batch): batch independence's call
        compared += 1
        changed, diff = _changed_rows(padded, alone)
        if changed.any():
            rows.append(i)
            lens.append(n)
            diffs.append(diff)
    if not rows:
        return [], compared
    return [("when run alone without padding (vs alone, padded to T)", rows, lens, max(diffs))], compared


def check_pad_content(
    model: Any, batch: Batch, *, pad_id: int = PAD_ID, extra: int = 3, call: Call | None = None
) -> CheckPassed:
    """Eval logits do not depend on what pad positions hold: the model reads only ``lengths``.

    Random real tokens (drawn from the batch's own tokens, so the ids are valid) are written into the pad positions,
    and into ``extra`` appended columns. A model that builds its mask from ``tokens != pad_id`` fails this check and
    is still correct whenever every batch pads with ``pad_id``: ``rnnreg check`` reports it as WARN, not FAIL.
    """
    invariant = "pad content ignored"
    batch = _prepare(model, batch, call)
    if extra < 1:
        raise ValueError(f"extra must be >= 1 appended columns (got {extra})")
    tokens, lengths = batch.tokens, batch.lengths
    T = tokens.shape[1]
    gen = torch.Generator().manual_seed(_SEED)
    variants = []
    if bool((lengths < T).any()):
        variants.append(("with random tokens in its pad positions", _garbage_in_pads(tokens, lengths, T, gen)))
    variants.append(
        (f"with {extra} appended columns of random tokens", _garbage_in_pads(tokens, lengths, T + extra, gen))
    )
    with _untouched(model):
        _set_mode(model, False)
        ref = _eval_logits(model, tokens, lengths, invariant, call)
        problems = _compare_variants(model, lengths, ref, variants, invariant, call)
        pad_ok = not _compare_variants(
            model,
            lengths,
            ref,
            [("", torch.cat([tokens, tokens.new_full((len(tokens), extra), pad_id)], dim=1))],
            invariant,
            call,
        )
    if problems:
        cause = (
            f"the model reads the token ids in pad positions, e.g. a mask built from tokens != {pad_id} instead of "
            "from lengths; that is correct only while every batch pads with that id"
            if pad_ok
            else "the model reads past each row's length (see padding invariance), so pad tokens reach the logits"
        )
        _fail(
            invariant,
            _observed(problems, T),
            cause,
            "build masks from lengths (torch.arange(T)[None, :] < lengths[:, None]), or keep padding with "
            f"pad_id={pad_id} everywhere (collate does)",
        )
    return CheckPassed(invariant, f"logits unchanged under {len(variants)} pad-content variants")


def check_batch_independence(model: Any, batch: Batch, *, call: Call | None = None) -> CheckPassed:
    """Each row's eval logits equal its logits computed alone, and follow the rows when the batch is permuted.

    Rows computed alone keep the batch's width T, so this check stays separate from padding invariance.
    """
    invariant = "batch independence"
    batch = _prepare(model, batch, call)
    tokens, lengths = batch.tokens, batch.lengths
    B = len(batch)
    gen = torch.Generator().manual_seed(_SEED)
    perms = [("reversed", torch.arange(B - 1, -1, -1)), ("shuffled", torch.randperm(B, generator=gen))]
    with _untouched(model):
        _set_mode(model, False)
        ref = _eval_logits(model, tokens, lengths, invariant, call)
        alone = torch.cat(
            [
                _variant_logits(model, tokens[i : i + 1], lengths[i : i + 1], invariant, "a batch of one row", call)
                for i in range(B)
            ]
        )
        alone_changed, alone_diff = _changed_rows(ref, alone)
        permuted = []
        for what, perm in perms:
            out = _variant_logits(
                model, tokens[perm.to(tokens.device)], lengths[perm], invariant, f"the {what} batch", call
            )
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
    model: Any,
    batch: Batch,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
    rtol: float | None = None,
    call: Call | None = None,
) -> CheckPassed:
    """Eval logits under ``torch.autocast(device, dtype)`` stay within a bound of the fp32 logits.

    The bound is ``max|low - fp32| <= rtol * max|fp32|`` with ``rtol = 12.8 eps(dtype)``: 0.05 for bf16, 0.0125
    for fp16. bf16 keeps about 3 significant digits and errors grow through each layer, so a per-element fp32-style
    tolerance would fail healthy models; on 190 random GRU/LSTM classifiers on CPU (max|logit| 0.009 to 3) the worst
    ratio measured was 1.4e-2. A model whose signal drowns in rounding (a large offset added inside autocast, a
    reduction of many terms in low precision) errs by about the logits themselves and fails. Modules without a
    low-precision kernel (a packed LSTM on CPU) simply stay fp32; the detail line names those that ran in low
    precision. ``rtol`` overrides the bound. A forward pass that torch cannot run under autocast on this machine
    (an op without a low-precision kernel here) raises :class:`CheckCouldNotRun` with torch's message.
    """
    invariant = f"{str(dtype).removeprefix('torch.')} autocast parity"
    batch = _prepare(model, batch, call)
    if dtype not in _AMP_RTOL:
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (got {dtype})")
    model_device = _device(model).type
    if device != model_device:
        raise ValueError(f"device={device!r} but the model is on {model_device!r}; pass device={model_device!r}")
    bound_rtol = _AMP_RTOL[dtype] if rtol is None else rtol
    with _untouched(model):
        _set_mode(model, False)
        ref = _eval_logits(model, batch.tokens, batch.lengths, invariant, call).float()
        seen: dict[str, str] = {}
        try:
            with _record_dtypes(model, seen), torch.autocast(device_type=device, dtype=dtype):
                low = _logits(model, batch.tokens, batch.lengths, invariant, call).float()
        except (RuntimeError, NotImplementedError) as e:
            raise CheckCouldNotRun(
                f"{invariant}: could not run: the model runs in fp32 but its forward pass under "
                f"torch.autocast({device!r}, {dtype}) raised {type(e).__name__}: {str(e).splitlines()[0]}. torch has "
                "no low-precision kernel for one of its ops on this machine (e.g. an unpacked nn.LSTM on a CPU "
                "without native bf16), so there is nothing to compare; run the check where AMP runs"
            ) from e
    low_precision = ", ".join(low_precision_modules(seen)) or "none"
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


@contextlib.contextmanager
def _record_dtypes(model: object, seen: dict[str, str]) -> Iterator[None]:
    """Record the floating dtype of each named leaf module's first output while the block runs."""
    hooks = []
    if isinstance(model, nn.Module):
        for name, mod in model.named_modules():
            if name and next(mod.children(), None) is None:

                def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
                    first = out[0] if isinstance(out, tuple) else out
                    if isinstance(first, nn.utils.rnn.PackedSequence):
                        first = first.data
                    if isinstance(first, Tensor) and first.is_floating_point():
                        seen[name] = str(first.dtype).removeprefix("torch.")

                hooks.append(mod.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


# ---------------------------------------------------------------------------------------------------------------
# Locked (variational) dropout
# ---------------------------------------------------------------------------------------------------------------


def _is_scale(ratio: Tensor, scale: float) -> Tensor:
    """Where an output/input ratio equals the inverted-dropout scale 1/(1-p) (to fp32 rounding)."""
    return torch.isclose(ratio, torch.tensor(scale), rtol=1e-5, atol=0.0)


def _stray_ratios(ratio: Tensor, allowed: Tensor) -> tuple[list[float], bool]:
    """Up to five distinct ratios outside ``allowed`` (rounded), and whether 1.0 (kept but not rescaled) is one."""
    seen = torch.unique(ratio[~allowed])[:5].tolist()
    return [round(v, 4) for v in seen], any(math.isclose(v, 1.0, rel_tol=1e-5) for v in seen)


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


def _global_norm(grads: Iterable[Tensor | None]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def _as_float(value: object) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach())
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
    dominant tensor), the first again with the parameters given as a generator (as ``model.parameters()`` is), and
    on a list with a parameter whose ``.grad`` is None: above the threshold the global L2 norm after clipping is
    max_norm (within 1e-4 relative: ``clip_grad_norm_`` divides by norm + 1e-6; more is over-clipping); every
    gradient is scaled by one common factor (direction preserved, rtol 1e-5); below the threshold the gradients are
    bitwise unchanged; the return value is the pre-clip global norm (rtol 1e-5, since summation order may differ).
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
        _check_clip_case(clip_fn, _CLIP_CASES[0], _clip_case_grads(_CLIP_CASES[0], gen), invariant, generator=True)
    return CheckPassed(
        invariant, f"{len(_CLIP_CASES)} cases and a generator: norm clipped to max_norm, direction kept, no-op below"
    )


def _check_clip_case(
    clip_fn: Callable[[Any, float], Any],
    case: _ClipCase,
    before: list[Tensor],
    invariant: str,
    *,
    generator: bool = False,
) -> None:
    params: list[Tensor] = [nn.Parameter(torch.zeros_like(g)) for g in before]
    for p, g in zip(params, before, strict=True):
        p.grad = g.clone()
    norm = _global_norm(before)
    if generator:
        try:
            returned = clip_fn((p for p in params), case.max_norm)
        except Exception as e:
            _fail(
                invariant,
                f"clip_fn raised {type(e).__name__}: {e} when the parameters came as a generator",
                "the parameters are indexed or their length taken; model.parameters() is a generator",
                "materialize them first: params = [p for p in parameters if p.grad is not None]",
            )
    else:
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
    name = f"{case.name}, parameters as a generator" if generator else case.name
    where = f"[{name}, max_norm={case.max_norm}, pre-clip norm {norm:.6g}]"

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
    if generator and not post <= case.max_norm * (1 + 1e-6):
        _fail(
            invariant,
            f"{where} nothing was clipped (global norm after {post:.6g}) when the parameters came as a generator, "
            "though a list of the same parameters is clipped",
            "the generator is consumed twice: once to compute the norm, and the scaling loop then finds it empty",
            "materialize it first: params = [p for p in parameters if p.grad is not None], as clip_grad_norm_ does",
        )
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
    if post < case.max_norm * (1 - 1e-4):
        _fail(
            invariant,
            f"{where} global norm after clipping is {post:.6g}, {post / case.max_norm:.4g}x max_norm: over-clipped",
            "the gradients are scaled by more than max_norm / total_norm (a factor applied twice, a wrong constant, "
            "or the norm of squared gradients)",
            "multiply every gradient by max_norm / (total_norm + 1e-6) when total_norm > max_norm, so the new norm "
            "is max_norm",
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


def _soft_target_grad(logits: Tensor, targets: Tensor, on: float, off: float, scale: float) -> Tensor:
    """d(scale * mean soft-target CE)/d logits in float64: scale * (softmax - q) / B."""
    q = torch.full(logits.shape, off, dtype=torch.float64)  # [B, K]
    q[torch.arange(len(targets)), targets] = on
    return scale * (torch.softmax(logits.double(), dim=1) - q) / len(targets)


def check_label_smoothing(loss_fn: Callable[[Tensor, Tensor, float], Any]) -> CheckPassed:
    """``loss_fn(logits, targets, smoothing)`` trains like mean cross-entropy against ``(1-eps)*onehot + eps/K``.

    PyTorch's convention: eps/K on every class, so the true class gets 1 - eps + eps/K (0.95 / 0.05 for eps = 0.1,
    K = 2), not eps/(K-1) on the wrong classes. Checked for K in {2, 3, 5, 10} and eps in {0, 0.1, 0.3}, eps = 0
    being plain cross-entropy. What training uses is compared: the gradient w.r.t. the logits, against a float64
    reference within rtol 1e-5 / atol 1e-7 (fp32 softmax rounding). A loss value offset by a constant with equal
    gradients (a KL divergence is cross-entropy minus the target's entropy) passes, and the detail reports the
    offset. A loss returned without a graph is compared by value (rtol 1.3e-6, atol 1e-5).
    """
    invariant = "label smoothing (target (1-eps)*onehot + eps/K)"
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets, smoothing) (got {loss_fn!r})")
    gen = torch.Generator().manual_seed(_SEED)
    failures: list[str] = []
    first_cause = ""
    offsets: list[float] = []
    with torch.random.fork_rng(devices=[]):
        for eps in (0.0, 0.1, 0.3):
            for K in (2, 3, 5, 10):
                logits = torch.randn(8, K, generator=gen) * 3.0  # [B, K]
                targets = torch.randint(K, (8,), generator=gen)  # [B]
                expected = _soft_target_ce(logits, targets, *_smoothed(eps, K))
                leaf = logits.clone().requires_grad_(True)
                returned = loss_fn(leaf, targets.clone(), eps)
                got = _as_float(returned)
                if got is None:
                    shape = tuple(returned.shape) if isinstance(returned, Tensor) else type(returned).__name__
                    _fail(
                        invariant,
                        f"loss_fn returned {shape} for K={K}, eps={eps}",
                        "the loss is not reduced (reduction='none') or not returned",
                        "return the mean loss over the batch as a scalar tensor",
                    )
                grad = None
                if isinstance(returned, Tensor) and returned.requires_grad:
                    (grad,) = torch.autograd.grad(returned, leaf, allow_unused=True)
                if grad is None:  # no graph: only the value can be compared
                    if abs(got - expected) <= 1e-5 + 1.3e-6 * abs(expected):
                        continue
                    failures.append(f"K={K}, eps={eps}: loss {got:.6g}, expected {expected:.6g}")
                    first_cause = first_cause or _diagnose_smoothing_value(got, logits, targets, eps)
                    continue
                ref = _soft_target_grad(logits, targets, *_smoothed(eps, K), 1.0)
                if torch.allclose(grad.double(), ref, rtol=1e-5, atol=1e-7):
                    offsets.append(got - expected)
                    continue
                err = float((grad.double() - ref).abs().max())
                failures.append(f"K={K}, eps={eps}: gradient w.r.t. the logits off by up to {err:.3g}")
                first_cause = first_cause or _diagnose_smoothing_grad(grad.double(), logits, targets, eps)
    if failures:
        _fail(
            invariant,
            f"{len(failures)} of 12 cases differ from soft-target cross-entropy: " + "; ".join(failures[:3]),
            first_cause,
            "use F.cross_entropy(logits, targets, label_smoothing=eps), which spreads eps/K over every class, and "
            "pass eps through unchanged (0 means no smoothing)",
        )
    offset = max(offsets, key=abs, default=0.0)
    note = (
        f"; the loss value is offset by a constant (up to {offset:.4g}, e.g. a KL divergence = cross-entropy - "
        "entropy of the target), which changes no gradient"
        if abs(offset) > 1e-5
        else ""
    )
    return CheckPassed(
        invariant, "12 cases (K in 2,3,5,10; eps in 0,0.1,0.3): gradients match soft-target cross-entropy" + note
    )


def _smoothing_suspects(K: int, eps: float) -> list[tuple[str, float, float, float]]:
    """(cause, true-class mass, other-class mass, scale) of the usual label-smoothing mistakes."""
    suspects = [("the loss is summed over the batch instead of averaged", *_smoothed(eps, K), 8.0)]
    if K > 1 and eps > 0:
        suspects.append(
            (
                f"the eps/(K-1) convention (eps spread over the K-1 wrong classes, true class 1-eps); PyTorch puts "
                f"eps/K on every class, so the true class gets 1-eps+eps/K ({1 - eps + eps / K:.3g} here)",
                1.0 - eps,
                eps / (K - 1),
                1.0,
            )
        )
    if eps > 0:
        suspects.append(("smoothing is ignored: the loss equals plain cross-entropy", 1.0, 0.0, 1.0))
    if eps == 0:
        for default in (0.1, 0.05, 0.2):
            suspects.append(
                (
                    f"eps=0 is replaced by a default ({default}), e.g. `eps = smoothing or {default}`: a falsy 0 "
                    "is not 'unset'",
                    *_smoothed(default, K),
                    1.0,
                )
            )
    return suspects


def _diagnose_smoothing_grad(grad: Tensor, logits: Tensor, targets: Tensor, eps: float) -> str:
    for cause, on, off, scale in _smoothing_suspects(logits.shape[1], eps):
        if torch.allclose(grad, _soft_target_grad(logits, targets, on, off, scale), rtol=1e-4, atol=1e-6):
            return cause
    if eps == 0:
        return "eps=0 does not give plain cross-entropy"
    return "a different target distribution or reduction than (1-eps)*onehot + eps/K with a mean over rows"


def _diagnose_smoothing_value(got: float, logits: Tensor, targets: Tensor, eps: float) -> str:
    for cause, on, off, scale in _smoothing_suspects(logits.shape[1], eps):
        value = scale * _soft_target_ce(logits, targets, on, off)
        if abs(got - value) <= 1e-5 + 1e-5 * abs(value):
            return cause
    if eps == 0:
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


_DECOUPLED = "decoupled weight decay"
_COUPLED = "coupled weight decay (L2 in the gradient)"


def check_weight_decay(make_optimizer: Callable[[list[Tensor], float, float], Any], *, decoupled: bool) -> CheckPassed:
    """``make_optimizer(params, lr, weight_decay)`` applies weight decay as declared.

    ``decoupled=True`` (AdamW-style): with a zero data gradient one step gives exactly ``p * (1 - lr*wd)``; with
    gradients, each step equals the wd = 0 optimizer's step with the decay ``(1 - lr*wd)`` applied either before it
    (torch.optim.AdamW) or after it to the updated weights (as some libraries wrote AdamW; the two differ by
    lr*wd times the update, ~5e-4 here) (3 steps).
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
    return CheckPassed(_DECOUPLED if decoupled else _COUPLED, f"{kind}, 3 steps")


def _max_diff(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b, strict=True))


def _all_close(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return all(torch.allclose(x.detach(), y.detach(), rtol=1.3e-6, atol=1e-5) for x, y in zip(a, b, strict=True))


def _check_decoupled(make_optimizer: Callable[..., Any], values: list[Tensor], grad_seq: list[list[Tensor]]) -> None:
    invariant = _DECOUPLED
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
        # step plus the decay of the decayed weights, applied before the update or after it.
        update = [q.detach() - sp for q, sp in zip(plain, start_p, strict=True)]
        expected = [s * (1.0 - lr * wd) + u for s, u in zip(start_d, update, strict=True)]
        decay_after = [(s + u) * (1.0 - lr * wd) for s, u in zip(start_d, update, strict=True)]
        if not (_all_close(decayed, expected) or _all_close(decayed, decay_after)):
            _fail(
                invariant,
                f"at step {t} the update differs by up to {_max_diff(decayed, expected):.3g} from the wd=0 update "
                f"plus -lr*wd*p (lr={lr}, wd={wd})",
                "the decay interacts with the gradient update: fed into the momentum/Adam state (coupled L2, e.g. "
                "SGD momentum with weight_decay), or scaled by the adaptive denominator",
                "decay p by (1 - lr*wd) separately from the gradient update, as torch.optim.AdamW does",
            )


def _check_coupled(make_optimizer: Callable[..., Any], values: list[Tensor], grad_seq: list[list[Tensor]]) -> None:
    invariant = _COUPLED
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
    """Embedding -> mean over each row's length -> Linear -> tanh -> Linear: follows the protocol, no dropout.

    Only embeddings and linear layers, so autocast runs it on every device and CPU (the head in bf16/fp16).
    """

    def __init__(self, vocab_size: int = 20, embed_dim: int = 6, hidden_dim: int = 5, num_classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.hidden = nn.Linear(embed_dim, hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(tokens)  # [B, T, E]
        keep = ~_pad_mask(lengths, tokens.shape[1], tokens.device)  # [B, T]
        pooled = (x * keep[..., None]).sum(1) / lengths.to(x.device)[:, None]  # [B, E]
        return self.head(torch.tanh(self.hidden(pooled)))  # [B, C]


def _tiny_batch(gen: torch.Generator, vocab_size: int = 20, num_classes: int = 3) -> Batch:
    lengths = torch.tensor([7, 5, 3, 1, 6, 2])  # [B]; a full-length row and a single-token row
    tokens = torch.randint(1, vocab_size, (len(lengths), 7), generator=gen)  # [B, T]
    tokens[_pad_mask(lengths, 7, tokens.device)] = PAD_ID
    return Batch(tokens, lengths, torch.randint(num_classes, (len(lengths),), generator=gen))


TrainStep = Callable[[nn.Module, Batch, torch.optim.Optimizer, torch.amp.GradScaler, float], Any]
_UPDATE_RTOL = {torch.float32: 1e-4, **_AMP_RTOL}  # relative L2 error of the update, by the lowest dtype that ran


def _lowest_precision(seen: dict[str, str]) -> torch.dtype:
    names = set(seen.values())
    return torch.float16 if "float16" in names else torch.bfloat16 if "bfloat16" in names else torch.float32


def _flat_delta(model: nn.Module, start: list[Tensor]) -> Tensor:
    return torch.cat([(p.detach().float() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)])


def _call_step(train_step: TrainStep, invariant: str, what: str, *args: Any) -> None:
    """Call the user's step; a RuntimeError from GradScaler's bookkeeping is a protocol bug and is diagnosed."""
    try:
        train_step(*args)
    except (RuntimeError, AssertionError) as e:
        if isinstance(e, InvariantViolation):
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "No inf checks were recorded" in message:
            cause = "scaler.update() ran without scaler.step(optimizer): optimizer.step() is called directly"
        elif "non-finite" in message.lower():
            cause = (
                "clipping raises on a non-finite norm (error_if_nonfinite=True): with a GradScaler an overflow is "
                "routine and must skip the step, not crash"
            )
        else:
            raise
        _fail(invariant, f"train_step raised {type(e).__name__} {what}: {message}", cause, _STEP_ORDER_FIX)


_STEP_ORDER_FIX = (
    "order the step as scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip_grad_norm_(params, max_norm); "
    "scaler.step(optimizer); scaler.update(); optimizer.zero_grad()"
)


_AMP_INIT_SCALE = 2.0**16


@dataclass(frozen=True)
class _AmpCase:
    error: float  # relative L2 error of the update against the fp32 reference
    ratio: float  # update norm / reference update norm
    tolerance: float
    ran: str  # the lowest precision the step's forward ran in
    raw_norm: float
    max_norm: float
    batch_size: int


def _amp_step_case(
    train_step: TrainStep, loss_fn: Callable[[Tensor, Tensor], Tensor], invariant: str, *, clip: float
) -> _AmpCase:
    """One call of ``train_step`` on the tiny classifier with ``max_norm = clip * gradient norm``, against the fp32
    reference (``loss_fn``, backward, ``clip_grad_norm_``, SGD step)."""
    lr = 0.5
    batch = _tiny_batch(torch.Generator().manual_seed(_SEED))
    seen: dict[str, str] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _TinyClassifier()
        start = [p.detach().clone() for p in model.parameters()]
        reference = copy.deepcopy(model)
        loss_fn(reference(batch.tokens, batch.lengths), batch.labels).backward()
        raw_norm = float(nn.utils.get_total_norm([p.grad for p in reference.parameters() if p.grad is not None]))
        max_norm = raw_norm * clip
        nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
        torch.optim.SGD(reference.parameters(), lr=lr).step()

        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        scaler = torch.amp.GradScaler("cpu", init_scale=_AMP_INIT_SCALE)
        model.train()
        with _record_dtypes(model, seen):
            _call_step(train_step, invariant, "on a finite step", model, batch, optimizer, scaler, max_norm)

    precision = _lowest_precision(seen)
    ref_delta, delta = _flat_delta(reference, start), _flat_delta(model, start)
    return _AmpCase(
        error=float((delta - ref_delta).norm() / ref_delta.norm()),
        ratio=float(delta.norm() / ref_delta.norm()),
        tolerance=_UPDATE_RTOL[precision],
        ran=str(precision).removeprefix("torch."),
        raw_norm=raw_norm,
        max_norm=max_norm,
        batch_size=len(batch),
    )


def check_amp_clipping(
    train_step: TrainStep, *, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
) -> CheckPassed:
    """``train_step(model, batch, optimizer, scaler, max_norm)`` clips the unscaled gradients.

    The check builds its own tiny classifier (embedding, masked mean, two linear layers: autocast runs it anywhere)
    and batch, an SGD optimizer (lr 0.5, no momentum) and an enabled ``torch.amp.GradScaler("cpu",
    init_scale=2**16)``, and sets ``max_norm`` to a third of the gradient norm so clipping is active. One call of
    ``train_step`` must give the update of the fp32 reference (``loss_fn``, backward, ``clip_grad_norm_``, step)
    within a relative L2 error set by the precision that ran, read from the model's module outputs during the step:
    1e-4 in fp32 (scaling by a power of two is exact), 12.8 eps under autocast (0.05 bf16, 0.0125 fp16; a correct
    bf16 step errs by ~5e-3). The step may run its forward under autocast, as a real AMP step does. Clipping before
    ``unscale_`` shrinks the update by about the loss scale; not clipping, or clipping after the step, makes it 3x;
    stepping twice makes it 2x; over-clipping shrinks it. A second call with ``max_norm`` at 10x the gradient norm
    (clipping inactive) must give the unclipped update: active clipping hides a gradient of the wrong size (a loss
    summed over the batch, a loss scaled twice). The loss must equal ``loss_fn`` (plain cross-entropy by default).
    """
    invariant = "clipping acts on unscaled gradients under a GradScaler"
    if not callable(train_step):
        raise TypeError(
            f"train_step must be callable as train_step(model, batch, optimizer, scaler, max_norm) (got {train_step!r})"
        )
    # A third: not clipping triples the update, stepping twice doubles it; the two stay apart.
    case = _amp_step_case(train_step, loss_fn, invariant, clip=1 / 3)
    error, ratio, tolerance, ran = case.error, case.ratio, case.tolerance, case.ran
    raw_norm, max_norm, init_scale = case.raw_norm, case.max_norm, _AMP_INIT_SCALE
    if not error <= tolerance:
        if ratio == 0.0:
            cause = "the parameters did not move: the optimizer step was skipped or never called (scaler.step)"
        elif not math.isfinite(ratio):
            cause = "the update is not finite: the optimizer stepped on scaled or overflowing gradients"
        elif ratio < 1e-2:
            cause = (
                f"the update is {1 / ratio:.3g}x too small, about the loss scale {init_scale:.0f}: clipping ran on the "
                "scaled gradients (clip_grad_norm_ before scaler.unscale_)"
            )
        elif math.isclose(ratio, raw_norm / max_norm, rel_tol=max(3 * tolerance, 1e-3)):
            cause = "the update equals the unclipped one: the step does not clip, or clips after optimizer.step()"
        elif math.isclose(ratio, 2.0, rel_tol=max(3 * tolerance, 1e-3)):
            cause = (
                "the update is twice the clipped one: the optimizer stepped twice (optimizer.step() and "
                "scaler.step(optimizer), or a step left over from a gradient that was not zeroed)"
            )
        elif 0.05 < ratio < 1.0 - 2 * tolerance:
            cause = f"the update is {ratio:.3g}x the clipped one: over-clipping (the gradients scaled below max_norm)"
        else:
            cause = "the update differs from scale -> backward -> unscale_ -> clip -> step in direction or size"
        _fail(
            invariant,
            f"the update differs from the fp32 clipped update by {error:.3g} (relative L2, tolerance {tolerance:.3g} "
            f"for a step that ran in {ran}); its norm is {ratio:.4g}x the reference's (pre-clip norm {raw_norm:.4g}, "
            f"max_norm {max_norm:.4g}, loss scale {init_scale:.0f})",
            cause,
            _STEP_ORDER_FIX,
        )
    # Clipping hides the gradient's size: with max_norm out of reach the update must equal the unclipped one.
    free = _amp_step_case(train_step, loss_fn, invariant, clip=10.0)
    if not free.error <= free.tolerance:
        if math.isclose(free.ratio, free.batch_size, rel_tol=0.05):
            cause = f"the update is {free.ratio:.3g}x the reference, the batch size: the loss is summed over the batch"
        elif math.isfinite(free.ratio) and (
            free.ratio > 100 or math.isclose(free.ratio, free.max_norm / free.raw_norm, rel_tol=0.05)
        ):
            cause = (
                f"the update is {free.ratio:.3g}x the reference (clipped at max_norm, or not at all): the gradient is "
                "about the loss scale too large: the loss is scaled twice, or the optimizer stepped on gradients "
                "that were never unscaled"
            )
        else:
            cause = "the step's loss differs from loss_fn (another reduction, weighting or scale), or the model is "
            cause += "not in train mode"
        _fail(
            invariant,
            f"with clipping inactive (max_norm {free.max_norm:.4g} = 10x the gradient norm) the update differs from "
            f"the fp32 update by {free.error:.3g} (relative L2, tolerance {free.tolerance:.3g} for a step that ran in "
            f"{free.ran}); its norm is {free.ratio:.4g}x the reference's",
            cause,
            "compute the loss as loss_fn does (cross-entropy averaged over the batch), scale it once with "
            "scaler.scale(loss), and call scaler.unscale_(optimizer) before clipping",
        )
    return CheckPassed(
        invariant,
        f"update matches the fp32 clipped update (relative L2 error {error:.2g} <= {tolerance:.2g}, ran in {ran}) "
        f"and the unclipped one ({free.error:.2g})",
    )


class _RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that records whether the step scaled a loss with it."""

    used = False

    def scale(self, outputs: Any) -> Any:
        self.used = True
        return super().scale(outputs)


def check_amp_scaler(train_step: TrainStep) -> CheckPassed:
    """``train_step(model, batch, optimizer, scaler, max_norm)`` follows the GradScaler protocol over three steps.

    With an enabled ``torch.amp.GradScaler("cpu", init_scale=2**16, growth_interval=1)``: a finite step moves the
    parameters and doubles the scale (so ``scaler.update()`` ran); a step whose gradients hold an injected inf
    leaves every parameter unchanged and halves the scale (``scaler.step`` skipped it and ``update`` backed off);
    the next finite step moves the parameters again. ``max_norm`` is large, so clipping does not act. A step that
    never calls ``scaler.scale`` (no loss scaling: fine in bf16 or fp32, fp16 needs it) is held only to skipping the
    inf step.
    """
    invariant = "GradScaler protocol (inf skips the step, the scale updates)"
    if not callable(train_step):
        raise TypeError(
            f"train_step must be callable as train_step(model, batch, optimizer, scaler, max_norm) (got {train_step!r})"
        )
    gen = torch.Generator().manual_seed(_SEED + 1)
    batch = _tiny_batch(gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _TinyClassifier().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = _RecordingScaler("cpu", init_scale=2.0**16, growth_interval=1)
        for step, poison in enumerate((False, True, False), start=1):
            before = [p.detach().clone() for p in model.parameters()]
            scale = scaler.get_scale()
            hook = model.head.weight.register_hook(lambda g: torch.full_like(g, math.inf)) if poison else None
            what = "on a step with an inf gradient" if poison else f"on finite step {step}"
            try:
                _call_step(train_step, invariant, what, model, batch, optimizer, scaler, 1e6)
            finally:
                if hook is not None:
                    hook.remove()
            moved = not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))
            new_scale = scaler.get_scale()
            if poison and moved:
                finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
                _fail(
                    invariant,
                    "a step whose gradients held an inf changed the parameters"
                    + ("" if finite else " (they are no longer finite)"),
                    "optimizer.step() is called directly instead of scaler.step(optimizer), so nothing skips a step "
                    "whose gradients overflowed",
                    "call scaler.step(optimizer): it skips the step when unscale_ found an inf or NaN",
                )
            if not poison and not moved:
                _fail(
                    invariant,
                    f"finite step {step} did not change the parameters",
                    "the optimizer step is skipped or never called"
                    + (
                        ", or gradients are never cleared (optimizer.zero_grad()), so the inf of the previous step "
                        "stays and every later step is skipped"
                        if step == 3
                        else ""
                    ),
                    _STEP_ORDER_FIX,
                )
            expected = scale * (0.5 if poison else 2.0)
            if scaler.used and new_scale != expected:
                _fail(
                    invariant,
                    f"after {what} the loss scale is {new_scale:g}, expected {expected:g} (from {scale:g}; "
                    "growth_interval=1, backoff 0.5)",
                    "scaler.update() is not called after every step, so the scale never backs off after an "
                    "overflow nor grows after good steps"
                    if new_scale == scale
                    else "the scale is set or updated by hand instead of by scaler.update()",
                    "call scaler.update() once at the end of every step, after scaler.step(optimizer)",
                )
    if not scaler.used:
        return CheckPassed(
            invariant, "the step uses no loss scaling (fine in bf16/fp32; fp16 needs it); an inf step is skipped"
        )
    return CheckPassed(
        invariant, "finite steps move the parameters and grow the scale; an inf step is skipped and backs off"
    )
