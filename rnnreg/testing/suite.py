"""Run every applicable invariant check on a user's model and functions; one row per check.

``rnnreg check MODULE:FACTORY`` is a thin printer over :func:`run_checks`; :func:`load_object` resolves its
``MODULE:ATTR`` arguments.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rnnreg.batch import PAD_ID, Batch
from rnnreg.testing import checks, regularizers
from rnnreg.testing._base import _user_line

__all__ = [
    "FUNCTION_CHECKS",
    "MODEL_CHECKS",
    "CheckResult",
    "CheckWarning",
    "load_object",
    "pytest_checks",
    "run_checks",
]

MODEL_CHECKS = (
    "eval_deterministic",
    "dropout_active",
    "padding_invariance",
    "pad_content",
    "batch_independence",
    "amp_parity",
)
FUNCTION_CHECKS = (
    "gradient_clipping",
    "label_smoothing",
    "weight_decay",
    "amp_clipping",
    "amp_scaler",
    "locked_dropout",
    "embedding_dropout",
    "weight_drop",
    "decay_groups",
)
Status = Literal["PASS", "FAIL", "WARN", "SKIP", "NOT RUN"]


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"no such file {str(path)!r}; give an existing .py file or a module name before the ':'")
    # A private module name: two files with the same stem must not replace each other in sys.modules.
    name = f"_rnnreg_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {str(path)!r} as a Python module; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name while it executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_object(spec: str) -> Any:
    """Resolve ``'package.module:attr'`` or ``'path/to/file.py:attr'`` (``attr`` may be dotted, ``Class.method``).

    The current directory (and a file's own folder) is importable while the module loads, as with ``python -m``.
    Raises ValueError naming the problem: a missing colon, a module that fails to import (with the error), or a
    missing attribute (with names the module does have).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string like 'mymodels:build' (got {spec!r})")
    module_part, sep, attr = spec.rpartition(":")  # rpartition: a Windows drive letter may hold a colon too
    if not sep or not module_part or not attr:
        raise ValueError(
            f"expected MODULE:ATTR, e.g. 'mymodels:build_model' or 'path/to/models.py:build_model' (got {spec!r})"
        )
    is_file = module_part.endswith(".py") or "/" in module_part or os.sep in module_part
    # Importable while loading, as with `python -m`: the current directory, and a file's own folder for its siblings.
    roots = [os.getcwd(), *([str(Path(module_part).resolve().parent)] if is_file else [])]
    added = [r for r in dict.fromkeys(roots) if r not in sys.path]
    sys.path[:0] = added
    try:
        module = _import_file(Path(module_part)) if is_file else importlib.import_module(module_part)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"could not import {module_part!r} (from {spec!r}): {type(e).__name__}: {e}") from e
    finally:
        for r in added:
            sys.path.remove(r)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = module_part if i == 0 else ".".join([module_part, *attr.split(".")[:i]])
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            shown = close + [n for n in names if n not in close][: max(0, 8 - len(close))]
            raise ValueError(
                f"{owner!r} has no attribute {part!r} (from {spec!r}); available: {', '.join(shown) or 'none'}"
            )
        obj = getattr(obj, part)
    return obj


def _run(
    name: str,
    fn: Callable[[], checks.CheckPassed | None],
    *,
    warn_only: bool = False,
    hint: Callable[[Exception], str] | None = None,
) -> CheckResult:
    try:
        info = fn()
    except checks.InvariantViolation as e:
        return CheckResult(name, "WARN" if warn_only else "FAIL", str(e))
    except checks.CheckCouldNotRun as e:
        return CheckResult(name, "NOT RUN", str(e))
    except checks.CheckNotApplicable as e:
        return CheckResult(name, "SKIP", str(e))
    except Exception as e:  # a crash in the user's code is a failed check, reported with its type and line
        where = _user_line(e)
        at = f" (raised at {where})" if where else ""
        return CheckResult(name, "FAIL", f"{type(e).__name__}: {e}{at}{hint(e) if hint is not None else ''}")
    return CheckResult(name, "PASS", info.detail if info is not None else "")


def _default_batch(vocab_size: int, num_classes: int, seed: int) -> Batch:
    """Six rows of varied lengths, a full-length row and a one-token row among them; pads are PAD_ID."""
    gen = torch.Generator().manual_seed(seed)
    T = 9
    lengths = torch.randint(1, T + 1, (6,), generator=gen)  # [B]
    lengths[0], lengths[-1] = T, 1
    tokens = torch.randint(1, vocab_size, (6, T), generator=gen)  # [B, T], real ids skip PAD_ID = 0
    tokens[torch.arange(T)[None, :] >= lengths[:, None]] = PAD_ID
    return Batch(tokens, lengths, torch.randint(num_classes, (6,), generator=gen))


_NOT_TOKENS = ("pos", "position", "segment", "token_type", "type")  # attribute names of position / segment tables


def _token_embedding(model: object) -> tuple[str, int] | None:
    """``(name, num_embeddings)`` of the model's token embedding: among its nn.Embedding and nn.EmbeddingBag, those
    not named like a position or segment table come first, then one with ``padding_idx`` set, then the first."""
    if not isinstance(model, nn.Module):
        return None
    tables: list[tuple[str, nn.Embedding | nn.EmbeddingBag]] = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    ]
    if not tables:
        return None

    def rank(table: tuple[str, nn.Embedding | nn.EmbeddingBag]) -> tuple[bool, bool]:
        attr = table[0].rsplit(".", 1)[-1].lower()
        return any(word in attr for word in _NOT_TOKENS), table[1].padding_idx is None

    name, table = min(tables, key=rank)  # min keeps the first of equal rank: declaration order breaks ties
    return name or type(table).__name__, int(table.num_embeddings)


def _model_hint(e: Exception, *, call: checks.Call | None, vocab: int, vocab_source: str) -> str:
    """What to pass when a model check crashed inside the user's model, from the error it raised."""
    if "must be sorted" in str(e):
        return (
            "\n  The model needs rows sorted by decreasing length (pack_padded_sequence enforce_sorted=True): pass "
            "call=rnnreg.testing.adapters.sorted_by_length() (rnnreg check --call MODULE:FN, with "
            "`call = adapters.sorted_by_length()` in that module), or sorted_by_length(your_call)"
        )
    if isinstance(e, IndexError) and "index out of range" in str(e):
        return (
            f"\n  The token ids drawn lie below the vocabulary size {vocab} ({vocab_source}); if the model's token "
            "table is smaller, pass vocab_size= (rnnreg check --vocab-size N)"
        )
    if call is None:
        return (
            "\n  If the model is not called as model(tokens, lengths) -> logits, pass call= (rnnreg check --call "
            "MODULE:FN), a function call(model, tokens, lengths) -> logits; see rnnreg.testing.adapters"
        )
    return ""


def _model_rows(
    model_factory: Callable[[], Any] | None,
    vocab_size: int | None,
    num_classes: int,
    seed: int,
    call: checks.Call | None,
    names: tuple[str, ...],
) -> list[CheckResult]:
    def all_rows(status: Status, detail: str) -> list[CheckResult]:
        return [CheckResult(name, status, detail) for name in names]

    if not names:
        return []
    if model_factory is None:
        return all_rows("SKIP", "no model factory given (pass MODULE:FACTORY, a zero-argument callable)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same model every run, without moving the caller's RNG
        try:
            model = model_factory()
        except Exception as e:
            where = _user_line(e)
            at = f" (raised at {where})" if where else ""
            return all_rows("FAIL", f"model_factory() raised {type(e).__name__}: {e}{at}")
    if call is None and not callable(model):
        return all_rows("FAIL", f"model_factory() returned {type(model).__name__}, not a model(tokens, lengths)")
    if vocab_size is not None:
        vocab, vocab_source = vocab_size, "vocab_size given"
    else:
        table = _token_embedding(model)
        if table is None:
            return all_rows(
                "SKIP",
                "cannot infer the vocabulary size (the model has no nn.Embedding or nn.EmbeddingBag); pass "
                "vocab_size= (rnnreg check --vocab-size N)",
            )
        vocab, vocab_source = table[1], f"inferred from the embedding {table[0]!r}"
    if vocab < 2:
        return all_rows(
            "SKIP", f"vocab_size={vocab} leaves no real token besides PAD; pass vocab_size >= 2 (--vocab-size N)"
        )
    batch = _default_batch(vocab, num_classes, seed)
    device = next((p.device.type for p in model.parameters()), "cpu") if isinstance(model, nn.Module) else "cpu"
    runs: dict[str, Callable[[], checks.CheckPassed]] = {
        "eval_deterministic": lambda: checks.check_eval_deterministic(model, batch, call=call),
        "dropout_active": lambda: checks.check_dropout_active(model, batch, call=call),
        "padding_invariance": lambda: checks.check_padding_invariance(model, batch, call=call),
        "pad_content": lambda: checks.check_pad_content(model, batch, call=call),
        "batch_independence": lambda: checks.check_batch_independence(model, batch, call=call),
        "amp_parity": lambda: checks.check_amp_parity(model, batch, device=device, call=call),
    }
    hint = partial(_model_hint, call=call, vocab=vocab, vocab_source=vocab_source)
    # Relying on pads holding PAD_ID is correct wherever batches are padded with it: reported, not failed.
    return [_run(name, runs[name], warn_only=name == "pad_content", hint=hint) for name in names]


def _layer(
    factory: Callable[[], Any], check: Callable[..., checks.CheckPassed], p: float, **options: Any
) -> checks.CheckPassed:
    return check(factory(), p=p, **options)


def _decay_groups(
    model_factory: Callable[[], Any], groups_fn: Callable[..., Any], seed: int, expect_decay: bool | None
) -> checks.CheckPassed:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_factory()
    return regularizers.check_decay_groups(model, groups_fn, expect_decay=expect_decay)


def check_arguments(
    *,
    model_factory: object = None,
    loss_fn: object = None,
    clip_fn: object = None,
    optimizer_factory: object = None,
    decoupled: bool | None = None,
    train_step: object = None,
    groups_fn: object = None,
    expect_decay: bool | None = None,
    locked_dropout: object = None,
    embedding_dropout: object = None,
    weight_drop: object = None,
    layer_p: float | None = None,
    input_size: int | None = None,
    call: object = None,
    vocab_size: int | None = None,
    num_classes: int | None = None,
) -> None:
    """Refuse arguments of :func:`run_checks` that cannot go together, naming each parameter and the fix.

    Anything not None counts as given, so a caller can check its options before it loads the objects they name.
    """
    model_options = {"call": call, "groups_fn": groups_fn, "vocab_size": vocab_size, "num_classes": num_classes}
    needs_model = [name for name, value in model_options.items() if value is not None]
    if needs_model and model_factory is None:
        verb = "acts" if len(needs_model) == 1 else "act"
        raise ValueError(
            f"{', '.join(needs_model)} {verb} on the model of model_factory, and none was given; give model_factory too"
        )
    functions = (loss_fn, clip_fn, optimizer_factory, train_step, groups_fn)
    layer_options = {
        "locked_dropout": locked_dropout,
        "embedding_dropout": embedding_dropout,
        "weight_drop": weight_drop,
    }
    layers = [name for name, value in layer_options.items() if value is not None]
    if model_factory is None and all(f is None for f in functions) and not layers:
        raise ValueError(
            "nothing to check: give model_factory and/or loss_fn, clip_fn, optimizer_factory, train_step, groups_fn, "
            "locked_dropout, embedding_dropout, weight_drop"
        )
    if expect_decay is not None and groups_fn is None:
        raise ValueError("expect_decay says what the decay groups of groups_fn should do; give groups_fn")
    if optimizer_factory is not None and decoupled is None:
        raise ValueError(
            "optimizer_factory needs decoupled=True (AdamW-style: p shrinks by lr*wd) or decoupled=False "
            "(L2: wd*p added to the gradient, as Adam/SGD weight_decay)"
        )
    if layers and layer_p is None:
        verb = "needs" if len(layers) == 1 else "need"
        raise ValueError(f"{', '.join(layers)} {verb} layer_p, the dropout probability the factory builds with")
    if layer_p is not None and not layers:
        raise ValueError(
            f"layer_p {layer_p} is the p of locked_dropout, embedding_dropout or weight_drop, and none was given; "
            "give the layer factory, or leave layer_p out"
        )
    if layer_p is not None and (
        isinstance(layer_p, bool) or not isinstance(layer_p, (int, float)) or not 0 < layer_p < 1
    ):
        raise ValueError(
            f"layer_p must lie strictly between 0 and 1 (got {layer_p!r}): p = 0 drops nothing, so the layer checks "
            "cannot observe it; build the layers with a p like 0.3 and pass layer_p 0.3"
        )
    if input_size is not None and weight_drop is None:
        raise ValueError(f"input_size {input_size} is the input width of weight_drop's module; give weight_drop")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1):
        raise ValueError(f"input_size must be >= 1 (got {input_size!r}): the width of weight_drop's module's inputs")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2):
        raise ValueError(f"vocab_size must be >= 2 (got {vocab_size!r}): id 0 is PAD, real tokens are drawn from 1 up")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be >= 1 (got {num_classes!r})")


def run_checks(
    model_factory: Callable[[], Any] | None = None,
    *,
    loss_fn: Callable[..., Any] | None = None,
    clip_fn: Callable[..., Any] | None = None,
    optimizer_factory: Callable[..., Any] | None = None,
    decoupled: bool | None = None,
    train_step: Callable[..., Any] | None = None,
    groups_fn: Callable[..., Any] | None = None,
    expect_decay: bool | None = None,
    locked_dropout: Callable[[], Any] | None = None,
    embedding_dropout: Callable[[], Any] | None = None,
    weight_drop: Callable[[], Any] | None = None,
    layer_p: float | None = None,
    input_size: int | None = None,
    call: checks.Call | None = None,
    vocab_size: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    only: Collection[str] | None = None,
) -> list[CheckResult]:
    """Run every check that applies to what is given; the rest are SKIP rows saying what to pass.

    Args:
        model_factory: zero-argument callable returning a ``model(tokens, lengths) -> logits`` (model checks).
        loss_fn: ``loss_fn(logits, targets, smoothing)`` (label smoothing).
        clip_fn: ``clip_fn(parameters, max_norm)`` (gradient clipping).
        optimizer_factory: ``optimizer_factory(params, lr, weight_decay)``; needs ``decoupled``.
        decoupled: True for AdamW-style decay, False for L2 added to the gradient.
        train_step: ``train_step(model, batch, optimizer, scaler, max_norm)`` with plain cross-entropy (AMP order
            and the GradScaler protocol).
        groups_fn: ``groups_fn(model) -> optimizer`` for the model of ``model_factory`` (decay groups).
        expect_decay: True when a weight decay is configured: groups that decay nothing then fail.
        locked_dropout, embedding_dropout, weight_drop: zero-argument factories of the layers, built with dropout
            probability ``layer_p`` (0 < p < 1: p = 0 cannot be observed).
        input_size: the width of the inputs ``weight_drop``'s module takes (inferred from its RNN when None; give it
            when a projection comes first).
        call: ``call(model, tokens, lengths) -> logits`` for models with another call convention (see adapters).
        vocab_size: token ids of the test batch lie below it; when None, the size of the token embedding (an
            nn.Embedding or nn.EmbeddingBag not named like a position or segment table, one with padding_idx first).
        num_classes: labels of the test batch lie below it (default 2).
        seed: seeds the model construction and the test batch.
        only: run only the checks with these names (the others are left out of the result).

    Returns:
        One CheckResult per check, model checks first, in a fixed order. Statuses: PASS, FAIL, WARN (pad content
        read: correct while pads hold PAD_ID), SKIP (nothing to check) and NOT RUN (torch could not run it here).
    """
    check_arguments(
        model_factory=model_factory,
        loss_fn=loss_fn,
        clip_fn=clip_fn,
        optimizer_factory=optimizer_factory,
        decoupled=decoupled,
        train_step=train_step,
        groups_fn=groups_fn,
        expect_decay=expect_decay,
        locked_dropout=locked_dropout,
        embedding_dropout=embedding_dropout,
        weight_drop=weight_drop,
        layer_p=layer_p,
        input_size=input_size,
        call=call,
        vocab_size=vocab_size,
        num_classes=num_classes,
    )
    num_classes = 2 if num_classes is None else num_classes
    wanted = _wanted(only)
    rows = _model_rows(
        model_factory, vocab_size, num_classes, seed, call, tuple(n for n in MODEL_CHECKS if n in wanted)
    )
    p = float(layer_p or 0.0)
    function_checks: list[tuple[str, Any, str, Callable[[Any], checks.CheckPassed]]] = [
        ("gradient_clipping", clip_fn, "clip_fn", checks.check_gradient_clipping),
        ("label_smoothing", loss_fn, "loss_fn", checks.check_label_smoothing),
        ("weight_decay", optimizer_factory, "optimizer_factory", partial(_weight_decay, decoupled=bool(decoupled))),
        ("amp_clipping", train_step, "train_step", checks.check_amp_clipping),
        ("amp_scaler", train_step, "train_step", checks.check_amp_scaler),
        ("locked_dropout", locked_dropout, "locked_dropout", partial(_layer, check=checks.check_locked_dropout, p=p)),
        (
            "embedding_dropout",
            embedding_dropout,
            "embedding_dropout",
            partial(_layer, check=regularizers.check_embedding_dropout, p=p),
        ),
        (
            "weight_drop",
            weight_drop,
            "weight_drop",
            partial(_layer, check=regularizers.check_weight_drop, p=p, input_size=input_size),
        ),
    ]
    for name, given, what, check in function_checks:
        if name not in wanted:
            continue
        if given is None:
            rows.append(CheckResult(name, "SKIP", f"no {what} given"))
        else:
            rows.append(_run(name, partial(check, given)))
    if "decay_groups" in wanted:
        if groups_fn is None or model_factory is None:
            rows.append(CheckResult("decay_groups", "SKIP", "needs a model factory and groups_fn(model) -> optimizer"))
        else:
            rows.append(_run("decay_groups", partial(_decay_groups, model_factory, groups_fn, seed, expect_decay)))
    return rows


def _wanted(only: Collection[str] | None) -> set[str]:
    """The names ``only`` selects (all checks when None); ValueError for a name that is no check."""
    known = [*MODEL_CHECKS, *FUNCTION_CHECKS]
    if only is None:
        return set(known)
    if isinstance(only, str):
        raise TypeError(f"only must be a collection of check names (got the string {only!r}); e.g. only=[{only!r}]")
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"unknown check names {unknown}; choose from {', '.join(known)}")
    return set(only)


def _weight_decay(make_optimizer: Callable[..., Any], *, decoupled: bool) -> checks.CheckPassed:
    return checks.check_weight_decay(make_optimizer, decoupled=decoupled)


def pytest_checks(
    model_factory: Callable[[], Any] | None = None, *, only: Collection[str] | None = None, **kwargs: Any
) -> Callable[[str], None]:
    """A pytest test running every check of :func:`run_checks` as its own test case; in your test file::

        from rnnreg.testing import pytest_checks
        from mymodels import build_model
        test_rnnreg = pytest_checks(build_model, loss_fn=my_loss, train_step=my_step)

    A FAIL fails its case with the check's message, SKIP and NOT RUN skip it with the reason, WARN passes with a
    warning. Each case runs only its own check; ``only=[...]`` keeps the cases of those checks.
    """
    import pytest  # the test extra; imported only here so that rnnreg check works without it

    wanted = _wanted(only)  # unknown names fail at collection, as run_checks would
    names = [n for n in (*MODEL_CHECKS, *FUNCTION_CHECKS) if n in wanted]

    @pytest.mark.parametrize("check_name", names)
    def test_rnnreg_check(check_name: str) -> None:
        (row,) = run_checks(model_factory, only=[check_name], **kwargs)
        if row.status == "FAIL":
            pytest.fail(row.detail, pytrace=False)
        if row.status in ("SKIP", "NOT RUN"):
            pytest.skip(f"{row.status}: {row.detail}")
        if row.status == "WARN":
            warnings.warn(row.detail, CheckWarning, stacklevel=1)

    return test_rnnreg_check


class CheckWarning(UserWarning):
    """A WARN row of rnnreg's checks (e.g. the model relies on pads holding PAD_ID)."""
