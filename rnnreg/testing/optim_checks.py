"""Checks of optimizer-side regularization: gradient clipping, weight decay, and weight-decay groups."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnnreg.testing._base import (
    _SEED,
    CheckPassed,
    _as_float,
    _fail,
)

__all__ = ["check_decay_groups", "check_gradient_clipping", "check_weight_decay"]


# ---------------------------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------------------------


def _global_norm(grads: Iterable[Tensor | None]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


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
# Weight-decay groups
# ---------------------------------------------------------------------------------------------------------------


_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention)
_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _kinds(model: nn.Module) -> dict[str, str]:
    """Each parameter's kind, by the module that owns it: 'matrix' (a >= 2-D weight of a Linear, conv, RNN or
    attention layer: decay is meant for these), 'spared' (a bias or a norm layer's gain or shift: must not decay),
    'embedding', or 'other' (parameters of the user's own modules, e.g. a class token, a position table or an
    attention context vector: conventions differ, so either way passes)."""
    kinds = {}
    for mod_name, mod in model.named_modules():
        for p_name, q in mod.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}".lstrip(".")
            if isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
                kinds[name] = "embedding"
            elif isinstance(mod, _NORMS) or (isinstance(mod, _LAYERS) and "bias" in p_name):
                kinds[name] = "spared"
            elif isinstance(mod, _LAYERS) and q.dim() >= 2:
                kinds[name] = "matrix"
            else:
                kinds[name] = "other"
    return kinds


def _ignored_keys(optimizer: Any) -> tuple[list[tuple[int, str, str]], list[str]]:
    """Group keys the optimizer never reads: (group index, key, the read key it resembles) for keys that look like a
    misspelled or foreign name of a key it reads (``weight_decay_rate`` for ``weight_decay``), and the other unknown
    keys (e.g. timm's ``lr_scale``, read by its scheduler). Empty for an optimizer without ``defaults``."""
    defaults = getattr(optimizer, "defaults", None)
    if not isinstance(defaults, dict) or not defaults:
        return [], []
    read = sorted(k for k in defaults if isinstance(k, str))
    known = set(read) | {"params", "param_names", "initial_lr"}  # torch's own, and what its LR schedulers add
    suspect, other = [], []
    for i, group in enumerate(optimizer.param_groups):
        for key in group:
            if not isinstance(key, str) or key in known:
                continue
            alike = [d for d in read if len(d) >= 4 and d in key] or difflib.get_close_matches(key, read, 1, 0.75)
            if alike:
                suspect.append((i, key, alike[0]))
            elif key not in other:
                other.append(key)
    return suspect, other


def check_decay_groups(model: nn.Module, optimizer: Any, *, expect_decay: bool | None = None) -> CheckPassed:
    """The optimizer's parameter groups decay weight matrices and spare biases and norm gains.

    ``optimizer`` is a ``torch.optim.Optimizer`` or a callable ``make_optimizer(model) -> Optimizer``. Every
    trainable parameter must sit in exactly one group; when any group has ``weight_decay > 0``, the biases and the
    norm layers' parameters of torch's layers must not decay and the weight matrices of its Linear, conv, RNN and
    attention layers must. Embeddings and the parameters of the user's own modules (a class token, a position
    table, a context vector) may go either way: timm spares them by name, Hugging Face decays them.

    What the optimizer reads is judged, not what the groups say: a group key the optimizer ignores that looks like
    one it reads (``weight_decay_rate``, BERT's TensorFlow name, given to ``torch.optim.AdamW``, which then decays
    every group by its default) fails. With ``expect_decay=True`` (you configured a weight decay), groups that decay
    nothing fail; by default "nothing decays" passes, as a run without weight decay should.
    """
    invariant = "weight-decay groups"
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (got {type(model).__name__})")
    if expect_decay is not None and not isinstance(expect_decay, bool):
        raise TypeError(
            f"expect_decay must be True (a weight decay is configured), False or None (got {expect_decay!r})"
        )
    if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(model)
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer or make_optimizer(model) -> Optimizer "
            f"(got {type(optimizer).__name__})"
        )
    suspect, unread = _ignored_keys(optimizer)
    if suspect:
        i, key, read = suspect[0]
        group = optimizer.param_groups[i]
        _fail(
            invariant,
            f"parameter group {i} sets {key!r} = {group[key]!r}, a key {type(optimizer).__name__} never reads; it "
            f"reads {read!r}, which is {group.get(read)!r} in that group"
            + (f" ({len(suspect)} such keys in all)" if len(suspect) > 1 else ""),
            f"the groups were written for another optimizer's key names (e.g. {key!r} from BERT's TensorFlow or "
            f"an old Hugging Face recipe): torch silently keeps unknown keys and uses the default {read}",
            f"name the key {read!r} in every group",
        )
    where: dict[int, list[float]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            where.setdefault(id(param), []).append(float(group.get("weight_decay", 0.0)))
    kinds = _kinds(model)
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    missing = [n for n, q in named if id(q) not in where]
    if missing:
        _fail(
            invariant,
            f"trainable parameters {missing[:6]} are in no parameter group",
            "the groups were built from a filter that drops some parameters (e.g. names matched against a fixed "
            "list), so those parameters are never trained",
            "partition every trainable parameter into exactly one group",
        )
    twice = [n for n, q in named if len(where[id(q)]) > 1]
    if twice:
        _fail(
            invariant,
            f"parameters {twice[:6]} are in more than one group",
            "overlapping rules (e.g. 'weight' in name and dim >= 2 both add a parameter)",
            "partition every trainable parameter into exactly one group",
        )
    decay = {n: where[id(q)][0] for n, q in named}
    if not any(v > 0 for v in decay.values()):
        if expect_decay:
            _fail(
                invariant,
                f"weight_decay is 0 in every one of the {len(optimizer.param_groups)} parameter groups "
                f"({len(named)} parameters), but expect_decay=True",
                "the configured decay never reached the groups: a config default of weight_decay=0.0, a value put "
                "under a key the optimizer does not read, or groups built without weight_decay",
                "set weight_decay=wd in the decaying group (and 0.0 only in the no-decay group)",
            )
        return CheckPassed(invariant, f"{len(named)} parameters, none decays (weight_decay = 0 in every group)")
    vectors = [n for n, _ in named if kinds[n] == "spared" and decay[n] > 0]
    spared = [n for n, _ in named if kinds[n] == "matrix" and decay[n] == 0]
    fix = "decay by shape: parameters with p.dim() >= 2 decay, the rest go to a group with weight_decay=0"
    if vectors and spared:
        _fail(
            invariant,
            f"biases and norm parameters {vectors[:4]} decay while weight matrices {spared[:4]} do not",
            "an inverted rule: the no-decay group holds the matrices (e.g. every name containing 'weight' excluded "
            "from decay, or the two groups swapped)",
            fix,
        )
    if vectors:
        biases = [n for n in vectors if n.rsplit(".", 1)[-1].startswith("bias")]
        if len(vectors) == sum(kinds[n] == "spared" for n, _ in named):
            cause = "one group for all parameters (e.g. AdamW(model.parameters(), weight_decay=wd)) decays every bias"
        elif not biases:
            cause = "a name rule that spares only 'bias' misses the norm gains (LayerNorm/BatchNorm .weight)"
        elif all("bias_" in n.rsplit(".", 1)[-1] for n in vectors):
            cause = "a rule matching the name 'bias' exactly misses the RNN biases (bias_ih_l0, bias_hh_l0, ...)"
        else:
            cause = "the no-decay rule misses some biases or norm parameters"
        _fail(
            invariant,
            f"biases and norm parameters {vectors[:6]} decay (weight_decay {max(decay[n] for n in vectors):g}): "
            "they are pulled to zero",
            cause,
            fix,
        )
    if spared:
        _fail(
            invariant,
            f"weight matrices {spared[:6]} do not decay while other parameters do",
            "an inverted or too-broad no-decay rule (e.g. every name containing 'weight' excluded)",
            fix,
        )
    n_decay = sum(v > 0 for v in decay.values())
    either = [
        f"{what}: {', '.join(sorted({'decay' if decay[n] > 0 else 'no decay' for n in names}))}"
        for what, names in (
            ("embeddings", [n for n, _ in named if kinds[n] == "embedding"]),
            ("own parameters", [n for n, _ in named if kinds[n] == "other"]),
        )
        if names
    ]
    if unread:
        either.append(f"group keys the optimizer does not read: {', '.join(unread)}")
    return CheckPassed(
        invariant,
        f"{n_decay} of {len(named)} parameters decay (all matrices), biases and gains spared"
        + "".join(f"; {e}" for e in either),
    )
