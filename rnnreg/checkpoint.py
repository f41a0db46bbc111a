"""Checkpoints: atomic writes, ``torch.load(weights_only=True)`` reads with one-line refusals, model.pt <-> model.

``model.pt`` (kind "model") is self-contained: weights, config, vocabulary and label names, no optimizer state.
``last.pt`` (kind "training", written by :func:`rnnreg.fit.fit`) holds everything an exact resume needs.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnreg import fsio
from rnnreg.config import Experiment
from rnnreg.data import Vocab
from rnnreg.model import build_model

CHECKPOINT_FORMAT = 1  # written into every checkpoint; readers refuse any format they do not know


def _save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Serialise in memory, then write atomically: a kill, ENOSPC or EIO leaves the previous file as it was."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fsio.atomic_write_bytes(path, buffer.getvalue())


def _vocab_digest(vocab: Vocab) -> str:
    return hashlib.sha256("\n".join(vocab.itos).encode("utf-8")).hexdigest()


_KINDS = {"model": "a model checkpoint (model.pt)", "training": "a training state (last.pt)"}


def read_checkpoint(path: Path, kind: str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` plus the checks every reader needs; each refusal is a one-line ValueError.

    Args:
        path: the file to read.
        kind: ``'model'`` (model.pt: weights, config, vocabulary) or ``'training'`` (last.pt: exact-resume state).
        map_location: passed to ``torch.load``.
    """
    path = Path(path)
    fix = "pass the model.pt that `rnnreg train` wrote" if kind == "model" else "delete it to start afresh"
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist; {fix}")
    # torch writes zip archives; anything else is truncated (no central directory) or another kind of file.
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{str(path)!r} is not a readable rnnreg checkpoint: not a complete PyTorch file "
            f"(truncated, or another kind of file); {fix}"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"a call to {found.group(1)}" if found else "an object that is not plain data"
        raise ValueError(
            f"{str(path)!r} was refused: it holds {what}, which torch.load(weights_only=True) never runs; "
            "rnnreg checkpoints hold only tensors and plain data, so this file did not come from rnnreg"
        ) from None
    except Exception as e:  # torch raises many types for a damaged archive
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"{str(path)!r} is not a readable rnnreg checkpoint ({type(e).__name__}: {first[:200]}); {fix}"
        ) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise ValueError(f"{str(path)!r} is a PyTorch file but not an rnnreg checkpoint (it has no format); {fix}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(path)!r} has checkpoint format {ckpt['format']!r}, and this rnnreg reads format "
            f"{CHECKPOINT_FORMAT}; use the rnnreg version that wrote it, or train again"
        )
    found_kind = ckpt.get("kind", "training" if "optimizer" in ckpt else "model")  # files from before 'kind'
    if found_kind != kind:
        raise ValueError(f"{str(path)!r} is {_KINDS.get(found_kind, repr(found_kind))}, not {_KINDS[kind]}; {fix}")
    return ckpt


def save_model(
    path: Path,
    model: nn.Module,
    experiment: Experiment,
    vocab: Vocab,
    label_names: Sequence[str],
    history: dict[str, Any],
) -> None:
    """A self-contained model checkpoint: weights, config, vocabulary and label names (loads with weights_only)."""
    _save_checkpoint(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "model",  # no optimizer state: only what inference needs
            "experiment": experiment.to_dict(),
            "model": model.state_dict(),
            "vocab": vocab.to_dict(),
            "label_names": list(label_names),
            "history": history,
        },
        path,
    )


@dataclass(frozen=True)
class Loaded:
    model: nn.Module
    experiment: Experiment
    vocab: Vocab
    label_names: list[str]


def load_model(path: str | Path) -> Loaded:
    """Load a checkpoint written by :func:`save_model`, with ``torch.load(weights_only=True)``."""
    path = Path(path)
    ckpt = read_checkpoint(path, "model")
    missing = sorted({"experiment", "model", "vocab", "label_names"} - set(ckpt))
    if missing:
        raise ValueError(f"{str(path)!r} lacks {', '.join(missing)}: not a complete rnnreg model checkpoint")
    experiment = Experiment.from_dict(ckpt["experiment"])
    vocab = Vocab.from_dict(ckpt["vocab"])
    label_names = list(ckpt["label_names"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a no-op regularizer was already reported when the model was trained
        model = build_model(experiment.model, len(vocab), len(label_names))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ValueError(
            f"{str(path)!r}: its weights do not fit the model its own config describes; the file was altered"
        ) from None
    return Loaded(model, experiment, vocab, label_names)
