"""fit(experiment, data, seed) -> FitResult, in its steps; evaluate and predict; exact resume; evaluate a model.pt.

Checkpoint files themselves (atomic writes, checked reads) live in :mod:`rnnreg.checkpoint`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
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
from rnnreg.checkpoint import (  # noqa: F401  re-exported: rnnreg.fit.load_model etc. keep working
    CHECKPOINT_FORMAT,
    Loaded,
    _save_checkpoint,
    _vocab_digest,
    load_model,
    read_checkpoint,
    save_model,
)
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
    best_score: float = -math.inf  # of the best epoch, on what `selected_on` names (higher is better)
    selected_on: str = "val_macro_f1"  # or "train_loss" (best_score is minus it) when there is no validation split
    stopped_early: bool = False  # validation stopped improving for train.patience epochs
    truncated: bool = False  # ended at train.epochs while still improving (best epoch within the last patience)
    amp: str = "off"  # what actually ran: 'off' when autocast reached no module, whatever was asked
    low_precision: list[str] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # pre-clip norm of every step taken, for the clip rate
    decay_log_shrink: float | None = None  # sum of log(1 - lr*wd) over steps taken; None for coupled L2
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by part of fit (TIMED_PARTS)

    @property
    def best_val_f1(self) -> float | None:
        """Validation macro-F1 of the best epoch; None when epochs were selected on the training loss."""
        return self.best_score if self.selected_on == "val_macro_f1" and self.epochs else None

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
        d = dict(d)
        if "best_val_f1" in d:  # written before best_score: minus the training loss when there was no validation
            d["best_score"] = d.pop("best_val_f1")
            d["selected_on"] = "val_macro_f1" if any(r.val is not None for r in records) else "train_loss"
        return cls(**{**d, "epochs": records})


# The parts of fit() whose wall time History.seconds adds up, over every epoch (a resumed run's history carries the
# seconds of the process before). "train_step" lies within "training loop"; the rest of the loop is batching.
TIMED_PARTS = ("training loop", "train_step", "validation", "best weights", "checkpoints", "test", "mechanisms")


def time_split(seconds: dict[str, float]) -> dict[str, float]:
    """History.seconds as parts that add up to fit's timed total: train_step, the rest of the training loop
    ("batching": collating, moving to the device, bookkeeping), then validation and the others as recorded."""
    loop, steps = seconds.get("training loop", 0.0), seconds.get("train_step", 0.0)
    rest = {part: value for part, value in seconds.items() if part not in ("training loop", "train_step")}
    return {"train_step": steps, "batching": max(loop - steps, 0.0), **rest}


@contextlib.contextmanager
def _timed(history: History, part: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        history.seconds[part] = history.seconds.get(part, 0.0) + time.perf_counter() - start


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


SPLITS = ("test", "val", "train", "all")


@dataclass(frozen=True)
class CheckpointEvaluation:
    metrics: Metrics
    source: str  # the data evaluated: a dataset name or a file
    split: str  # one of SPLITS


def evaluate_checkpoint(
    path: str | Path, overrides: Sequence[str] = (), *, split: str | None = None
) -> CheckpointEvaluation:
    """Evaluate a model.pt on data described by its own ``data`` settings with ``overrides`` applied.

    Args:
        path: a model checkpoint written by :func:`fit` (``model.pt``).
        overrides: ``"data.field=value"`` strings, e.g. ``["data.source=reviews.csv", "data.text_col=review"]``.
        split: ``test``, ``val``, ``train`` or ``all`` (the whole data, no held-out fractions). Default: ``test``
            for a named dataset, ``all`` of a file.
    Raises:
        ValueError: an unknown or empty split, or labels the model never saw in training (names the labels).
    """
    from rnnreg.config import apply_overrides
    from rnnreg.data import DATASETS

    loaded = load_model(path)
    cfg = apply_overrides(Experiment(data=loaded.experiment.data), list(overrides)).data
    split = split or ("test" if cfg.source in DATASETS else "all")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    if split == "all":  # the whole file is evaluation data: no held-out fractions
        cfg = dataclasses.replace(cfg, val_frac=0.0, test_frac=0.0)
    corpus = load_corpus(cfg)
    examples = corpus.train if split == "all" else getattr(corpus, split)
    if not examples:
        raise ValueError(f"the {split} split of {cfg.source!r} is empty; choose another split")
    unknown = sorted(set(corpus.label_names) - set(loaded.label_names))
    if unknown:
        raise ValueError(
            f"labels {unknown} of {cfg.source!r} were not seen in training (the model knows {loaded.label_names})"
        )
    # The data's label ids follow its own label order; map them onto the model's by name.
    remap = {i: loaded.label_names.index(name) for i, name in enumerate(corpus.label_names)}
    encoded = encode([(text, remap[label]) for text, label in examples], loaded.vocab, cfg.max_len)
    metrics = evaluate(loaded.model, encoded, batch_size=loaded.experiment.train.eval_batch_size)
    return CheckpointEvaluation(metrics, cfg.source, split)


def _training_state(run: _Run, seed: int, task: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "training",
        "epoch": run.epoch,
        "seed": seed,
        "task": task,  # what the run trains on and how; a resume with anything else is refused
        "skip_streak": run.skip_streak,
        "model": run.model.state_dict(),
        "best_model": run.best_state,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "batch_rng": run.batch_gen.get_state(),
        "history": run.history.to_dict(),
    }


def _check_same_task(path: Path, stored: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse, in one line, to resume a ``last.pt`` that another configuration or data set wrote."""
    if stored is None:
        return  # written before tasks were recorded; the seed check above still applies
    if stored["label_names"] != current["label_names"]:
        raise ValueError(
            f"{path} was trained on labels {stored['label_names']}, this data has {current['label_names']}; "
            "use another out_dir for another data set"
        )
    if stored["vocab"] != current["vocab"]:
        raise ValueError(f"{path} was trained with another vocabulary (other data); use another out_dir for this data")
    diffs = [
        f"{section}.{name}: {value!r} -> {current['experiment'][section].get(name)!r}"
        for section, fields in stored["experiment"].items()
        for name, value in fields.items()
        if current["experiment"].get(section, {}).get(name) != value
    ]
    if diffs:
        raise ValueError(
            f"{path} was written with other settings ({'; '.join(diffs)}); resume with the same settings "
            "(only train.epochs and train.max_skipped_steps may change), or use another out_dir"
        )


def _diverged_message(streak: int, epoch: int, tc: TrainConfig, last_path: Path | None) -> str:
    kept = f"; {last_path} keeps the last finished epoch" if last_path is not None and last_path.is_file() else ""
    return (
        f"training diverged: {streak} consecutive steps in epoch {epoch} had non-finite gradients and were skipped; "
        f"try a lower train.lr (now {tc.lr:g}), train.clip=norm (now {tc.clip}), or, with fp16, train.amp=bf16"
        f" (now {tc.amp}){kept}"
    )


@dataclass
class _Run:
    """Everything one run carries from epoch to epoch; ``last.pt`` stores it, so a resume continues it exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batch_gen: torch.Generator
    history: History
    best_state: dict[str, Tensor]
    epoch: int = 0
    skip_streak: int = 0


def _start(experiment: Experiment, data: Prepared, seed: int, device: torch.device) -> _Run:
    """Model, optimizer and scaler; every random draw after this point follows from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(experiment.model, len(data.vocab), data.num_classes).to(device)
    optimizer = make_optimizer(model, experiment.train)
    coupled = mechanisms.decay_step_log_factor(optimizer) is None  # Adam/SGD: L2 joins the gradient, no shrink
    return _Run(
        model=model,
        optimizer=optimizer,
        scaler=make_scaler(device.type, experiment.train.amp),
        batch_gen=torch.Generator().manual_seed(seed),
        history=History(decay_log_shrink=None if coupled else 0.0),
        best_state=copy.deepcopy(model.state_dict()),
    )


def _task(experiment: Experiment, data: Prepared) -> dict[str, Any]:
    """What a run trains on and how; a resume with anything else is refused.

    The epoch cap and the divergence limit may change on resume; anything else would not continue the same run.
    """
    same_run = experiment.to_dict()
    del same_run["train"]["epochs"], same_run["train"]["max_skipped_steps"]
    return {"experiment": same_run, "label_names": list(data.corpus.label_names), "vocab": _vocab_digest(data.vocab)}


def _restore(run: _Run, path: Path, seed: int, task: dict[str, Any], device: torch.device) -> None:
    """Every piece of state an uninterrupted run would carry into its next epoch, from ``path`` (last.pt)."""
    state = read_checkpoint(path, "training", map_location=device)
    if state["seed"] != seed:
        raise ValueError(f"{path} was written with seed {state['seed']}, not {seed}; resume with that seed")
    _check_same_task(path, state.get("task"), task)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    run.batch_gen.set_state(state["batch_rng"].cpu())
    run.history = History.from_dict(state["history"])
    run.best_state = state["best_model"]
    run.epoch, run.skip_streak = state["epoch"], state.get("skip_streak", 0)


def _label_amp(run: _Run, data: Prepared, tc: TrainConfig, device: torch.device) -> None:
    """What autocast really reaches on this device decides the label of the run, never the request."""
    if tc.amp == "off":
        return
    head = data.train[: tc.batch_size]
    probe_batch = next(iter(iterate_batches(head, tc.batch_size, shuffle=False, bucket=False)))
    run.history.low_precision = low_precision_modules(probe_autocast(run.model, probe_batch.to(device), tc.amp))
    run.history.amp = tc.amp if run.history.low_precision else "off"
    if not run.history.low_precision:
        warnings.warn(
            f"train.amp={tc.amp!r}: autocast reached no module of this model on {device.type}; "
            "the run is fp32 and is labelled amp='off'",
            stacklevel=3,
        )


def _train_epoch(
    run: _Run, data: Prepared, tc: TrainConfig, device: torch.device, last_path: Path | None
) -> EpochRecord:
    """One pass over the training split, then the validation metrics; advances ``run.epoch``."""
    run.epoch += 1
    t0 = time.perf_counter()
    run.model.train()
    losses, norms, correct, seen, skipped = [], [], 0, 0, 0
    steps_s = 0.0  # inside train_step; the rest of the loop is batching and bookkeeping
    with _timed(run.history, "training loop"):
        for batch in iterate_batches(
            data.train, tc.batch_size, shuffle=True, bucket=tc.bucket, generator=run.batch_gen
        ):
            batch = batch.to(device)
            start = time.perf_counter()
            stats = train_step(run.model, batch, run.optimizer, run.scaler, tc)
            steps_s += time.perf_counter() - start
            skipped += stats.skipped
            run.skip_streak = run.skip_streak + 1 if stats.skipped else 0
            if tc.max_skipped_steps and run.skip_streak >= tc.max_skipped_steps:
                raise TrainingDiverged(_diverged_message(run.skip_streak, run.epoch, tc, last_path))
            if not stats.skipped:
                losses.append(stats.loss)
                norms.append(stats.grad_norm)
                if run.history.decay_log_shrink is not None:
                    run.history.decay_log_shrink += mechanisms.decay_step_log_factor(run.optimizer) or 0.0
            correct += int((stats.logits.argmax(1) == batch.labels).sum())
            seen += len(batch)
    run.history.seconds["train_step"] = run.history.seconds.get("train_step", 0.0) + steps_s
    run.history.grad_norms.extend(norms)
    with _timed(run.history, "validation"):
        val = evaluate(run.model, data.val, batch_size=tc.eval_batch_size, amp=run.history.amp) if data.val else None
    return EpochRecord(
        epoch=run.epoch,
        train_loss=float(np.mean(losses)) if losses else math.nan,
        train_acc=correct / max(seen, 1),
        grad_norm=float(np.median(norms)) if norms else math.nan,
        skipped=skipped,
        val=val,
        seconds=time.perf_counter() - t0,
    )


def _keep_best(run: _Run, record: EpochRecord, patience: int) -> None:
    """Record the epoch; keep its weights when it is the best so far; decide whether training stops here."""
    h = run.history
    h.epochs.append(record)
    # Without a validation split the lowest training loss selects the epoch (History.selected_on says which).
    if record.val is not None:
        h.selected_on, score = "val_macro_f1", record.val.macro_f1
    else:
        h.selected_on, score = "train_loss", -record.train_loss
    if score > h.best_score:
        h.best_epoch, h.best_score = record.epoch, score
        with _timed(h, "best weights"):
            run.best_state = copy.deepcopy(run.model.state_dict())
    h.stopped_early, h.truncated = mechanisms.stopping(record.epoch, h.best_epoch, patience)


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
    run = _start(experiment, data, seed, device)
    task = _task(experiment, data)
    last_path = out_dir / "last.pt" if out_dir is not None else None
    if resume and last_path is not None and last_path.is_file():
        _restore(run, last_path, seed, task, device)
    _label_amp(run, data, tc, device)
    while not run.history.stopped_early and run.epoch < tc.epochs:  # a run that stopped early has finished
        record = _train_epoch(run, data, tc, device, last_path)
        _keep_best(run, record, tc.patience)
        if last_path is not None:
            with _timed(run.history, "checkpoints"):
                _save_checkpoint(_training_state(run, seed, task), last_path)
        if progress is not None:
            progress(record)
    return _finish(run, experiment, data, seed, out_dir)


def _finish(run: _Run, experiment: Experiment, data: Prepared, seed: int, out_dir: Path | None) -> FitResult:
    """The best weights back in the model, the test metrics, the mechanisms; model.pt and metrics.json written."""
    model, history = run.model, run.history
    model.load_state_dict(run.best_state)
    model.eval()
    tc = experiment.train
    with _timed(history, "test"):
        test = evaluate(model, data.test, batch_size=tc.eval_batch_size, amp=history.amp) if data.test else None
    with _timed(history, "mechanisms"):
        measured = measure_mechanisms(model, data, history, experiment, seed)
    if out_dir is not None:
        save_model(out_dir / "model.pt", model, experiment, data.vocab, data.corpus.label_names, history.to_dict())
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
    # 0.0 - expm1: no steps or no decay is a shrink of 0.0, never -0.0 (which JSON and the tables would print)
    shrink = None if history.decay_log_shrink is None else 0.0 - math.expm1(history.decay_log_shrink)
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
