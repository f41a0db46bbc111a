"""What every check shares: the verdict types (:class:`CheckPassed`, :class:`InvariantViolation`,
:class:`CheckCouldNotRun`, :class:`CheckNotApplicable`), the failure message, the fixed seed, tolerances, and the
helpers that run a check without leaving the model, layer or torch's RNG changed."""

from __future__ import annotations

import contextlib
import itertools
import math
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

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
# (worst 1.1e-3). Not measured on CUDA here; pytorch#175845 reports fp16 LSTM vs fp32 relative L2 ~4e-4 there.
_AMP_RTOL = {torch.bfloat16: 12.8 * 2.0**-8, torch.float16: 12.8 * 2.0**-10}

Model = Callable[[Tensor, Tensor], Tensor]
Call = Callable[[Any, Tensor, Tensor], Any]  # call(model, tokens, lengths) -> logits[B, C]


class InvariantViolation(AssertionError):
    """A checked invariant does not hold; the message says which, what was observed, the likely cause and the fix."""


class CheckCouldNotRun(RuntimeError):
    """torch could not run what the check needs on this machine (e.g. no bf16 kernel for an op): no verdict."""


class NotEnoughEvidence(CheckCouldNotRun):
    """The check's probe budget cannot tell a correct layer from a broken one at this p: no verdict, not a failure.

    Raised by the statistical layer checks when, at the largest budget they allow, the masks they would observe hold
    fewer than 50 expected drops (or keeps): a rate test could then neither exclude "nothing dropped" nor stay below
    a 1% false-alarm rate. Check the same code at a larger p.
    """


class CheckNotApplicable(Exception):
    """The model has nothing this check verifies (e.g. no dropout at all for the dropout check): no verdict."""


@dataclass(frozen=True)
class CheckPassed:
    """What a passing check verified; ``detail`` is one line for reports (``rnnreg check`` prints it)."""

    invariant: str
    detail: str


def _fail(invariant: str, observed: str, cause: str, fix: str) -> NoReturn:
    raise InvariantViolation(f"{invariant}: {observed}.\n  Likely cause: {cause}.\n  Fix: {fix}.")


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


def _device(obj: object) -> torch.device:
    if isinstance(obj, nn.Module):
        for t in itertools.chain(obj.parameters(), obj.buffers()):
            return t.device
    return torch.device("cpu")


def _pad_mask(lengths: Tensor, T: int, device: torch.device) -> Tensor:
    steps = torch.arange(T, device=device)  # [T]
    return steps[None, :] >= lengths.to(device)[:, None]  # [B, T] True on padding


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


def _is_scale(ratio: Tensor, scale: float) -> Tensor:
    """Where an output/input ratio equals the inverted-dropout scale 1/(1-p) (to fp32 rounding)."""
    return torch.isclose(ratio, torch.tensor(scale), rtol=1e-5, atol=0.0)


def _stray_ratios(ratio: Tensor, allowed: Tensor) -> tuple[list[float], bool]:
    """Up to five distinct ratios outside ``allowed`` (rounded), and whether 1.0 (kept but not rescaled) is one."""
    seen = torch.unique(ratio[~allowed])[:5].tolist()
    return [round(v, 4) for v in seen], any(math.isclose(v, 1.0, rel_tol=1e-5) for v in seen)


def _as_float(value: object) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


_NOT_USER_CODE = tuple(
    str(Path(d).resolve())
    for d in (Path(torch.__file__).parent, Path(__file__).parent, sysconfig.get_paths()["stdlib"])
)


def _user_line(e: BaseException) -> str | None:
    """Where the user's code raised ``e``: ``file:line (function): source`` of the deepest traceback frame outside
    torch, rnnreg.testing and the standard library; None when every frame is theirs (torch raised on its own)."""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if not str(Path(frame.filename).resolve()).startswith(_NOT_USER_CODE):
            return f"{frame.filename}:{frame.lineno} ({frame.name}): {(frame.line or '').strip()}"
    return None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
