"""Checks of a whole model ``model(tokens, lengths) -> logits[B, C]`` on a batch: eval determinism, dropout that
acts, padding invariance, pad content, batch independence, autocast parity (see :mod:`rnnreg.testing.checks` for
the contract every check follows, and ``call=`` for other call conventions)."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rnnreg.batch import PAD_ID, Batch
from rnnreg.step import low_precision_modules
from rnnreg.testing._base import (
    _AMP_RTOL,
    _SEED,
    _TOLERANCES,
    Call,
    CheckCouldNotRun,
    CheckNotApplicable,
    CheckPassed,
    InvariantViolation,
    _describe,
    _device,
    _fail,
    _first_line,
    _pad_mask,
    _record_dtypes,
    _set_mode,
    _untouched,
    _user_line,
)

__all__ = [
    "check_amp_parity",
    "check_batch_independence",
    "check_dropout_active",
    "check_eval_deterministic",
    "check_pad_content",
    "check_padding_invariance",
]


# ---------------------------------------------------------------------------------------------------------------
# Plumbing shared by the model checks
# ---------------------------------------------------------------------------------------------------------------


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
            f"batch must be an rnnreg.batch.Batch with tensors tokens[B, T], lengths[B], labels[B] "
            f"(got {type(batch).__name__} without {', '.join(missing)}); build one with rnnreg.batch.collate"
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


_MAX_PASSES = 64


def check_dropout_active(model: Any, batch: Batch, *, passes: int = 6, call: Call | None = None) -> CheckPassed:
    """Train mode is stochastic: train-mode logits change from one pass (and seed) to the next.

    A configured dropout that does nothing fails, like the notebook's one-layer ``nn.LSTM(dropout=0.3)``. The batch
    is tiled to at least 16 rows and ``passes`` passes are compared to the first, so a small dropout on a small
    batch is not missed by the chance that two masks coincide; when all of them agree, more passes are drawn (64 in
    all) before the model is failed, so a correct small p is not flagged by the chance that no mask drops anything.
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
        # Before calling a dropout inert, draw up to _MAX_PASSES passes: a tiny p (0.001 on a few units) can leave
        # six passes undropped by chance, but not 64 unless it is below ~1e-4 per unit.
        offset = len(outs)
        while identical and offset < _MAX_PASSES:
            torch.manual_seed(_SEED + offset)
            identical = torch.equal(outs[0], _logits(model, tokens, lengths, invariant, call))
            offset += 1
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
            f"{max(len(outs), _MAX_PASSES)} train-mode passes under different seeds gave bitwise-identical logits",
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


# What torch says when this machine has no kernel for an op in a dtype (oneDNN's LSTM in fp16 on CPU: "could not
# create a primitive descriptor"; a missing dispatch: '"addmm_impl_cpu_" not implemented for 'Half''). Any other
# exception under autocast comes from the model's own code and is a verdict on it.
_MACHINE_LACKS = re.compile(
    r"not implemented for|kernel|primitive|could not run|not supported|unsupported|onednn|mkldnn|cudnn", re.IGNORECASE
)


def _machine_lacks(e: Exception) -> bool:
    """True when ``e`` says torch cannot run an op in low precision here, rather than that the model's code failed."""
    message = str(e)
    if "overflow" in message.lower():
        return False  # "value cannot be converted to type c10::Half without overflow": the model's constant
    return isinstance(e, NotImplementedError) or bool(_MACHINE_LACKS.search(message))


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
    (an op without a low-precision kernel here) raises :class:`CheckCouldNotRun` with torch's message; any other
    exception under autocast (e.g. ``masked_fill(mask, -1e9)`` overflowing float16) is the model's and fails, naming
    the line of the model's code that raised it.
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
        except InvariantViolation:
            raise
        except Exception as e:
            if not _machine_lacks(e):
                where = _user_line(e)
                _fail(
                    invariant,
                    f"the model runs in fp32 but its forward pass under torch.autocast({device!r}, {dtype}) raised "
                    f"{type(e).__name__}: {_first_line(e)}" + (f" at {where}" if where else ""),
                    "the model's own code cannot run in low precision: a constant the dtype cannot hold (e.g. "
                    "masked_fill(mask, -1e9): float16 stops at 65504), or a cast or shape that assumes fp32",
                    "use a fill value the dtype holds (torch.finfo(scores.dtype).min, or -1e4), or compute that part "
                    "in fp32 (x.float(), or torch.autocast(..., enabled=False) around it)",
                )
            raise CheckCouldNotRun(
                f"{invariant}: could not run: the model runs in fp32 but its forward pass under "
                f"torch.autocast({device!r}, {dtype}) raised {type(e).__name__}: {_first_line(e)}. torch has "
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
