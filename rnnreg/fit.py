"""fit(experiment, data, seed) -> FitResult; evaluate; atomic checkpoints and exact resume."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import Tensor, nn

from rnnreg import fsio, mechanisms
from rnnreg.batch import iterate_batches
from rnnreg.config import DataConfig, Experiment, TrainConfig
from rnnreg.data import Corpus, Vocab, build_vocab, encode, load_corpus
from rnnreg.model import build_model
from rnnreg.step import (
    eval_logits,
    low_precision_modules,
    make_optimizer,
    make_scaler,
    probe_autocast,
    resolve_device,
    train_step,
)

Encoded = list[tuple[list[int], int]]
CHECKPOINT_FORMAT = 1  # written into every checkpoint; readers refuse any format they do not know


class TrainingDiverged(RuntimeError):
    """``train.max_skipped_steps`` consecutive steps had non-finite gradients; ``out_dir/last.pt`` is left as it was."""


@dataclass(frozen=True)
class Prepared:
    """A corpus with its vocabulary (built on the training split only) and the encoded splits."""

    corpus: Corpus
    vocab: Vocab
    train: Encoded
    val: Encoded
    test: Encoded

    @property
    def num_classes(self) -> int:
        return len(self.corpus.label_names)


def prepare(cfg: DataConfig, corpus: Corpus | None = None) -> Prepared:
    """Load (unless given), build the vocabulary on the training split, encode every split."""
    corpus = corpus if corpus is not None else load_corpus(cfg)
    vocab = build_vocab(corpus, cfg)
    splits = (encode(split, vocab, cfg.max_len) for split in (corpus.train, corpus.val, corpus.test))
    return Prepared(corpus, vocab, *splits)


@dataclass(frozen=True)
class Metrics:
    loss: float  # plain cross-entropy, no smoothing, so runs with different label_smoothing compare
    accuracy: float
    macro_f1: float
    n: int


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    grad_norm: float  # median pre-clip norm over the epoch's steps
    skipped: int  # steps skipped for non-finite gradients
    val: Metrics | None
    seconds: float


@dataclass
class History:
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = -math.inf
    stopped_early: bool = False  # validation stopped improving for train.patience epochs
    truncated: bool = False  # ended at train.epochs while still improving (best epoch within the last patience)
    amp: str = "off"  # what actually ran: 'off' when autocast reached no module, whatever was asked
    low_precision: list[str] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # pre-clip norm of every step taken, for the clip rate
    decay_log_shrink: float | None = None  # sum of log(1 - lr*wd) over steps taken; None for coupled L2

    @property
    def skipped_steps(self) -> int:
        return sum(r.skipped for r in self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        records = [
            EpochRecord(**{**r, "val": Metrics(**r["val"]) if r["val"] is not None else None}) for r in d["epochs"]
        ]
        return cls(**{**d, "epochs": records})


@dataclass
class FitResult:
    model: nn.Module
    history: History
    test: Metrics | None = None
    mechanisms: dict[str, Any] = field(default_factory=dict)  # what each trick did (see rnnreg.mechanisms)


@torch.no_grad()
def predict(
    model: nn.Module, data: Encoded, *, batch_size: int = 256, amp: str = "off", device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Eval-mode ``(logits[N, C] fp32, labels[N])`` on the CPU, in the order of ``data``; the mode is restored."""
    if not data:
        raise ValueError("cannot evaluate on an empty split; give the dataset a validation/test split")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in iterate_batches(data, batch_size, shuffle=False, bucket=False):
            logits.append(eval_logits(model, batch.to(device), amp).cpu())
            labels.append(batch.labels)
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def score(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (scikit-learn; a class never predicted scores F1 0)."""
    f1 = f1_score(y_true, y_pred, average="macro", labels=list(range(num_classes)), zero_division=0)
    return float(np.mean(y_pred == y_true)), float(f1)


def evaluate(
    model: nn.Module, data: Encoded, *, batch_size: int = 256, amp: str = "off", device: torch.device | None = None
) -> Metrics:
    """Accuracy and macro-F1 (scikit-learn) of ``model`` in eval mode; the model's mode is restored afterwards."""
    logits, labels = predict(model, data, batch_size=batch_size, amp=amp, device=device)
    loss = float(F.cross_entropy(logits, labels))
    accuracy, f1 = score(labels.numpy(), logits.argmax(1).numpy(), int(logits.shape[1]))
    return Metrics(loss, accuracy, f1, len(labels))


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


def save_model(path: Path, model: nn.Module, experiment: Experiment, data: Prepared, history: History) -> None:
    """A self-contained model checkpoint: weights, config, vocabulary and label names (loads with weights_only)."""
    _save_checkpoint(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "model",  # no optimizer state: only what inference needs
            "experiment": experiment.to_dict(),
            "model": model.state_dict(),
            "vocab": data.vocab.to_dict(),
            "label_names": list(data.corpus.label_names),
            "history": history.to_dict(),
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


def _training_state(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch_gen: torch.Generator,
    history: History,
    best_state: dict[str, torch.Tensor],
    seed: int,
    task: dict[str, Any],
    skip_streak: int,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "training",
        "epoch": epoch,
        "seed": seed,
        "task": task,  # what the run trains on and how; a resume with anything else is refused
        "skip_streak": skip_streak,
        "model": model.state_dict(),
        "best_model": best_state,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "batch_rng": batch_gen.get_state(),
        "history": history.to_dict(),
    }


def _check_same_task(path: Path, stored: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse, in one line, to resume a ``last.pt`` that another configuration or data set wrote."""
    if stored is None:
        return  # written before tasks were recorded; the seed check above still applies
    if stored["label_names"] != current["label_names"]:
        raise ValueError(
            f"{path} was trained on labels {stored['label_names']}, this data has {current['label_names']}; "
            "use another --out for another data set"
        )
    if stored["vocab"] != current["vocab"]:
        raise ValueError(f"{path} was trained with another vocabulary (other data); use another --out for this data")
    diffs = [
        f"{section}.{name}: {value!r} -> {current['experiment'][section].get(name)!r}"
        for section, fields in stored["experiment"].items()
        for name, value in fields.items()
        if current["experiment"].get(section, {}).get(name) != value
    ]
    if diffs:
        raise ValueError(
            f"{path} was written with other settings ({'; '.join(diffs)}); resume with the same --set values "
            "(only --epochs may change), or use another --out"
        )


def _diverged_message(streak: int, epoch: int, tc: TrainConfig, last_path: Path | None) -> str:
    kept = f"; {last_path} keeps the last finished epoch" if last_path is not None and last_path.is_file() else ""
    return (
        f"training diverged: {streak} consecutive steps in epoch {epoch} had non-finite gradients and were skipped; "
        f"try a lower train.lr (now {tc.lr:g}), train.clip=norm (now {tc.clip}), or, with fp16, train.amp=bf16"
        f" (now {tc.amp}){kept}"
    )


def fit(
    experiment: Experiment,
    data: Prepared,
    seed: int,
    *,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train one model; with ``out_dir``, keep ``last.pt`` (exact resume) and ``model.pt`` (best on validation).

    Args:
        experiment: the full configuration; ``experiment.data`` only describes how ``data`` was made.
        data: the prepared corpus (see :func:`prepare`).
        seed: seeds initialisation, dropout and batch order; the same seed gives bit-identical CPU training.
        out_dir: where checkpoints go; nothing is written without it.
        resume: continue from ``out_dir/last.pt`` when it exists (a fresh start when it does not; the CLI refuses
            that case); the result equals an uninterrupted run. A ``last.pt`` of another task is refused.
        progress: called with each finished epoch's record.
    Returns:
        The model with its best validation weights restored (or its last, without a validation split), and history.
    Raises:
        TrainingDiverged: after ``train.max_skipped_steps`` consecutive steps skipped for non-finite gradients.
    """
    tc = experiment.train
    if not data.train:
        raise ValueError(
            f"the training split of {data.corpus.name!r} is empty: there is nothing to fit; give data with training "
            "examples (or a smaller validation fraction)"
        )
    device = resolve_device(tc.device)

    # Model, optimizer and scaler; every random draw after this point follows from `seed`.
    torch.manual_seed(seed)
    model = build_model(experiment.model, len(data.vocab), data.num_classes).to(device)
    optimizer = make_optimizer(model, tc)
    scaler = make_scaler(device.type, tc.amp)
    batch_gen = torch.Generator().manual_seed(seed)
    coupled = mechanisms.decay_step_log_factor(optimizer) is None  # Adam/SGD: L2 joins the gradient, no shrink
    history = History(decay_log_shrink=None if coupled else 0.0)
    best_state = copy.deepcopy(model.state_dict())
    start, skip_streak = 0, 0
    # The epoch count and the divergence limit may change on resume; anything else would not continue the same run.
    same_run = experiment.to_dict()
    del same_run["train"]["epochs"], same_run["train"]["max_skipped_steps"]
    task = {"experiment": same_run, "label_names": list(data.corpus.label_names), "vocab": _vocab_digest(data.vocab)}

    # Resume: restore every piece of state an uninterrupted run would carry into the next epoch.
    last_path = out_dir / "last.pt" if out_dir is not None else None
    if resume and last_path is not None and last_path.is_file():
        state = read_checkpoint(last_path, "training", map_location=device)
        if state["seed"] != seed:
            raise ValueError(f"{last_path} was written with seed {state['seed']}, not {seed}; resume with that seed")
        _check_same_task(last_path, state.get("task"), task)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        batch_gen.set_state(state["batch_rng"].cpu())
        history = History.from_dict(state["history"])
        best_state = state["best_model"]
        start, skip_streak = state["epoch"], state.get("skip_streak", 0)

    # What autocast really reaches on this device decides the label of the run, never the request.
    if tc.amp != "off" and data.train:
        head = data.train[: tc.batch_size]
        probe_batch = next(iter(iterate_batches(head, tc.batch_size, shuffle=False, bucket=False)))
        history.low_precision = low_precision_modules(probe_autocast(model, probe_batch.to(device), tc.amp))
        history.amp = tc.amp if history.low_precision else "off"
        if not history.low_precision:
            warnings.warn(
                f"train.amp={tc.amp!r}: autocast reached no module of this model on {device.type}; "
                "the run is fp32 and is labelled amp='off'",
                stacklevel=2,
            )

    last_epoch = start if history.stopped_early else tc.epochs  # a run that stopped early has finished
    for epoch in range(start + 1, last_epoch + 1):
        # Train one epoch.
        t0 = time.perf_counter()
        model.train()
        losses, norms, correct, seen, skipped = [], [], 0, 0, 0
        for batch in iterate_batches(data.train, tc.batch_size, shuffle=True, bucket=tc.bucket, generator=batch_gen):
            batch = batch.to(device)
            stats = train_step(model, batch, optimizer, scaler, tc)
            skipped += stats.skipped
            skip_streak = skip_streak + 1 if stats.skipped else 0
            if tc.max_skipped_steps and skip_streak >= tc.max_skipped_steps:
                raise TrainingDiverged(_diverged_message(skip_streak, epoch, tc, last_path))
            if not stats.skipped:
                losses.append(stats.loss)
                norms.append(stats.grad_norm)
                if history.decay_log_shrink is not None:
                    history.decay_log_shrink += mechanisms.decay_step_log_factor(optimizer) or 0.0
            correct += int((stats.logits.argmax(1) == batch.labels).sum())
            seen += len(batch)

        # Evaluate, keep the best weights, stop early when validation stops improving.
        val = evaluate(model, data.val, batch_size=tc.eval_batch_size, amp=history.amp) if data.val else None
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(np.mean(losses)) if losses else math.nan,
            train_acc=correct / max(seen, 1),
            grad_norm=float(np.median(norms)) if norms else math.nan,
            skipped=skipped,
            val=val,
            seconds=time.perf_counter() - t0,
        )
        history.epochs.append(record)
        history.grad_norms.extend(norms)
        # Without a validation split the lowest training loss stands in for the best macro-F1.
        score = val.macro_f1 if val is not None else -record.train_loss
        if score > history.best_val_f1:
            history.best_epoch, history.best_val_f1 = epoch, score
            best_state = copy.deepcopy(model.state_dict())
        history.stopped_early, history.truncated = mechanisms.stopping(epoch, history.best_epoch, tc.patience)
        if last_path is not None:
            state = _training_state(
                epoch, model, optimizer, scaler, batch_gen, history, best_state, seed, task, skip_streak
            )
            _save_checkpoint(state, last_path)
        if progress is not None:
            progress(record)
        if history.stopped_early:
            break

    # Finish with the best weights; write the self-contained model checkpoint and the metrics.
    model.load_state_dict(best_state)
    model.eval()
    test = evaluate(model, data.test, batch_size=tc.eval_batch_size, amp=history.amp) if data.test else None
    measured = measure_mechanisms(model, data, history, experiment, seed)
    if out_dir is not None:
        save_model(out_dir / "model.pt", model, experiment, data, history)
        metrics = {
            "seed": seed,
            "history": history.to_dict(),
            "test": asdict(test) if test else None,
            "mechanisms": measured,
            "inert": mechanisms.inert(measured, experiment),
        }
        fsio.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return FitResult(model, history, test, measured)


GAP_SAMPLE = 1024  # training examples on which the dropout gap is measured (fewer when the split is smaller)


@torch.no_grad()
def measure_mechanisms(
    model: nn.Module, data: Prepared, history: History, experiment: Experiment, seed: int
) -> dict[str, Any]:
    """What each trick did in this run, on the weights ``model`` holds now (see :mod:`rnnreg.mechanisms`).

    The dropout gap is measured on a fixed, seeded sample of at most ``GAP_SAMPLE`` training examples; the
    train-mode pass draws its masks from a forked generator seeded with ``seed``, so the run's stream is untouched.
    """
    tc = experiment.train
    median, p90 = mechanisms.norm_quantiles(history.grad_norms)
    shrink = None if history.decay_log_shrink is None else -math.expm1(history.decay_log_shrink)
    out: dict[str, Any] = {
        "clip_rate": mechanisms.clip_rate(history.grad_norms, tc.max_norm) if tc.clip == "norm" else None,
        "grad_norm_median": median,
        "grad_norm_p90": p90,
        "decay_shrink": shrink,
        "matrix_norm": mechanisms.matrix_norm(model),
    }
    keys = ("train_acc", "gen_gap", "dropout_loss_gap", "val_ece", "val_mean_max_prob", "val_nll")
    out.update(dict.fromkeys(keys))
    if not data.train:
        return out
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:GAP_SAMPLE]
    sample = [data.train[i] for i in sorted(pick.tolist())]
    logits, labels = predict(model, sample, batch_size=tc.eval_batch_size, amp=history.amp)
    eval_loss = float(F.cross_entropy(logits, labels))
    out["train_acc"] = float((logits.argmax(1) == labels).double().mean())
    device = next(model.parameters()).device
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model.train()
        try:
            train_logits = torch.cat(
                [
                    eval_logits(model, batch.to(device), history.amp).cpu()
                    for batch in iterate_batches(sample, tc.eval_batch_size, shuffle=False, bucket=False)
                ]
            )
        finally:
            model.train(was_training)
    out["dropout_loss_gap"] = float(F.cross_entropy(train_logits, labels)) - eval_loss
    if data.val:
        val_logits, val_labels = predict(model, data.val, batch_size=tc.eval_batch_size, amp=history.amp)
        val_acc = float((val_logits.argmax(1) == val_labels).double().mean())
        out["gen_gap"] = out["train_acc"] - val_acc
        calib = mechanisms.calibration(val_logits, val_labels)
        out.update(val_ece=calib["ece"], val_mean_max_prob=calib["mean_max_prob"], val_nll=calib["nll"])
    return out
