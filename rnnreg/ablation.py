"""Ablations: presets of variants, paired seeds, and the run function (one run -> one JSON-safe record).

A *variant* is a full :class:`Experiment`. Seed ``s`` fixes, for every variant alike, the train/validation split
(redrawn per seed unless ``fixed_split``), the initialisation, the data order and the dropout stream; the test split
never moves and is never used for model selection. The linear reference (TF-IDF word 1-2-grams + logistic
regression, C chosen on the validation split) runs on the same splits and is reported beside the variants.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnreg.config import Experiment, ModelConfig, apply_overrides
from rnnreg.data import Corpus, stratified_split

PRESETS = ("default", "notebook", "full", "none")
LINEAR = "linear reference"
RECORD_VERSION = 2  # 2: runs carry truncated, mechanisms and inert

# The regularizers the presets switch, each as its fields and the value that switches it off.
TRICKS: dict[str, dict[str, object]] = {
    "dropout": {f"model.{name}": 0.0 for name in ModelConfig.dropout_fields()},
    "weight_decay": {"train.weight_decay": 0.0},
    "clipping": {"train.clip": "none"},
    "label_smoothing": {"train.label_smoothing": 0.0},
}


@dataclass(frozen=True)
class Variant:
    name: str
    experiment: Experiment
    note: str = ""  # how it differs, for the table: "baseline + dropout", "regularized, bf16 autocast"


@dataclass(frozen=True)
class Comparison:
    """One row of the comparison table: ``a`` minus ``b``, paired by seed."""

    a: str
    b: str
    family: str  # "vs baseline", "leave-one-out", "reference"


@dataclass(frozen=True)
class Plan:
    variants: tuple[Variant, ...]
    comparisons: tuple[Comparison, ...]
    seeds: tuple[int, ...]
    fixed_split: bool
    linear: bool = True  # run the linear reference too

    def names(self) -> list[str]:
        return [v.name for v in self.variants] + ([LINEAR] if self.linear else [])


def _set(experiment: Experiment, values: dict[str, object]) -> Experiment:
    """``experiment`` with ``section.field`` values replaced, validated as ``--set`` is."""
    return apply_overrides(experiment, [f"{key}={value}" for key, value in values.items()])


def _get(experiment: Experiment, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(experiment, section), name)


def preset_variants(preset: str, base: Experiment) -> tuple[list[Variant], list[Comparison]]:
    """The variants and comparisons of ``preset``; ``base`` is the regularized experiment (defaults + ``--set``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "none":
        return [], []
    if preset == "notebook":
        from rnnreg.notebook import mini_challenge_experiments

        nb = mini_challenge_experiments()
        data = base.data
        variants = [
            Variant("baseline", dataclasses.replace(nb["Baseline"], data=data), "the notebook's baseline"),
            Variant("regularized", dataclasses.replace(nb["Regularized"], data=data), "dropout 0.3 that acts"),
        ]
        return variants, [Comparison("regularized", "baseline", "vs baseline")]

    all_off: dict[str, object] = {k: v for trick in TRICKS.values() for k, v in trick.items()}
    baseline = _set(base, all_off)
    variants = [
        Variant("baseline", baseline, "every regularizer off"),
        Variant("regularized", base, "the defaults: every regularizer on"),
    ]
    comparisons = [Comparison("regularized", "baseline", "vs baseline")]
    for trick, off in TRICKS.items():
        name = f"without {trick}"
        variants.append(Variant(name, _set(base, off), f"regularized, {trick} left out"))
        comparisons.append(Comparison("regularized", name, "leave-one-out"))
    if preset == "full":
        for trick, off in TRICKS.items():
            name = f"only {trick}"
            on = {key: _get(base, key) for key in off}
            variants.append(Variant(name, _set(baseline, on), f"baseline, {trick} added alone"))
            comparisons.append(Comparison(name, "baseline", "vs baseline"))
        bf16 = "regularized, bf16" if base.train.amp == "off" else "regularized, fp32"
        amp = "bf16" if base.train.amp == "off" else "off"
        variants.append(Variant(bf16, _set(base, {"train.amp": amp}), f"autocast {amp}"))
        comparisons.append(Comparison(bf16, "regularized", "precision"))
        other = "adam" if base.train.optimizer != "adam" else "adamw"
        label = "coupled L2 (adam)" if other == "adam" else "decoupled (adamw)"
        name = f"regularized, {label}"
        variants.append(Variant(name, _set(base, {"train.optimizer": other}), label))
        comparisons.append(Comparison(name, "regularized", "decay style"))
    return variants, comparisons


def user_variant(spec: Sequence[str], base: Experiment) -> Variant:
    """``--variant NAME KEY=VALUE ...``: the base experiment with the overrides, checked as ``--set`` is."""
    if not spec:
        raise ValueError("a variant needs a name, then its settings, e.g. ['small', 'model.hidden_dim=64']")
    name, *overrides = spec
    if "=" in name:
        raise ValueError(
            f"variant {' '.join(spec)}: the first word is the variant's name (got {name!r}); e.g. wide {name}"
        )
    try:
        experiment = apply_overrides(base, overrides)
    except (ValueError, TypeError) as e:
        raise type(e)(f"variant {name}: {e}") from None
    return Variant(name, experiment, " ".join(overrides) or "the base settings")


def build_plan(
    preset: str,
    base: Experiment,
    user: Sequence[Sequence[str]] = (),
    *,
    seeds: int = 5,
    fixed_split: bool = False,
    linear: bool = True,
    epochs: int | None = None,
) -> Plan:
    """Preset variants plus the user's; every variant compared with the baseline (or the first variant).

    ``epochs`` (``--epochs``), when given, sets every variant's ``train.epochs``, the notebook preset's included.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (got {seeds!r}); e.g. 5 (verdicts need at least 3)")
    variants, comparisons = preset_variants(preset, base)
    for spec in user:
        v = user_variant(spec, base)
        if v.name == LINEAR or any(v.name == other.name for other in variants):
            raise ValueError(f"variant {v.name}: the name is taken; known: {', '.join(x.name for x in variants)}")
        variants.append(v)
    if not variants:
        raise ValueError(
            "nothing to run: preset 'none' needs at least one variant of your own (a name, then key=value)"
        )
    if epochs is not None:
        variants = [dataclasses.replace(v, experiment=_set(v.experiment, {"train.epochs": epochs})) for v in variants]
    # Every variant not compared yet (the user's) is compared with the baseline, or the first variant without one.
    reference = "baseline" if any(v.name == "baseline" for v in variants) else variants[0].name
    covered = {name for c in comparisons for name in (c.a, c.b)}
    for v in variants:
        if v.name != reference and v.name not in covered:
            comparisons.append(Comparison(v.name, reference, f"vs {reference}"))
    if linear and any(v.name == "regularized" for v in variants):
        comparisons.append(Comparison("regularized", LINEAR, "reference"))
    return Plan(tuple(variants), tuple(comparisons), tuple(range(seeds)), fixed_split, linear)


# ---------------------------------------------------------------------------------------------------------------
# Keys: a run is identified by the data it saw, its full resolved configuration and its seed


def data_fingerprint(corpus: Corpus) -> str:
    """SHA-256 of the corpus content: texts, labels and label names of each split, in order."""
    h = hashlib.sha256()
    h.update(json.dumps(corpus.label_names).encode())
    for split in (corpus.train, corpus.val, corpus.test):
        h.update(json.dumps(split, ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True)
class RunTask:
    """What one worker runs: a variant's experiment (or the linear reference) on one seed."""

    variant: str
    kind: str  # "rnn" or "linear"
    experiment: Experiment
    seed: int
    fixed_split: bool
    fingerprint: str

    @property
    def key(self) -> str:
        config = self.experiment.to_dict()
        config["data"].pop("source")  # the data are identified by their content, not their path
        if self.kind == "linear":  # the reference does not depend on the RNN's settings
            config = {"data": config["data"]}
        blob = json.dumps(
            [RECORD_VERSION, self.fingerprint, self.kind, config, self.seed, self.fixed_split], sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tasks_for(plan: Plan, base: Experiment, fingerprint: str) -> list[RunTask]:
    """Every run of the plan, seed-major so that early results cover every variant."""
    tasks = []
    for seed in plan.seeds:
        for v in plan.variants:
            tasks.append(RunTask(v.name, "rnn", v.experiment, seed, plan.fixed_split, fingerprint))
        if plan.linear:
            tasks.append(RunTask(LINEAR, "linear", base, seed, plan.fixed_split, fingerprint))
    return tasks


# ---------------------------------------------------------------------------------------------------------------
# Splits per seed


def split_for_seed(corpus: Corpus, seed: int, *, fixed_split: bool, split_seed: int = 0) -> Corpus:
    """The corpus with train/validation redrawn from their union for ``seed`` (stratified, same proportions).

    The test split is left exactly as it is. With ``fixed_split`` the corpus is returned unchanged.
    """
    if fixed_split:
        return corpus
    pool = corpus.train + corpus.val
    if not corpus.val:
        return corpus
    val_frac = len(corpus.val) / len(pool)
    # One stream per (split_seed, seed): the same seed gives the same split to every variant.
    stream = int(np.random.SeedSequence([split_seed, seed]).generate_state(1)[0])
    train, val, _ = stratified_split(
        [label for _, label in pool],
        val_frac=val_frac,
        test_frac=0.0,
        seed=stream,
        label_names=corpus.label_names,
    )
    return dataclasses.replace(corpus, train=[pool[i] for i in train], val=[pool[i] for i in val])


# What each split is for in a study, and the data setting that grows it.
_SPLIT_PURPOSE = {
    "train": ("training", "give more data"),
    "val": ("choosing each run's best epoch and the linear reference's C", "raise data.val_frac or give more data"),
    "test": ("the test metrics", "raise data.test_frac, give more data, or compare on a validation metric"),
}


def check_splits(corpus: Corpus, *, metric: str) -> None:
    """Refuse data on which a study cannot give an answer, before anything runs or is written.

    Training and validation always need examples of at least two classes (the validation split picks each run's
    best epoch and the linear reference's C); the test split needs them when ``metric`` is a test metric, and
    whenever it is not empty (its metrics are reported). Per-seed redraws are stratified, so they keep the counts.
    """
    needed = ["train", "val"] + (["test"] if metric.startswith("test") or corpus.test else [])
    sizes = f"train {len(corpus.train):,} / val {len(corpus.val):,} / test {len(corpus.test):,}"
    for name in needed:
        split = getattr(corpus, name)
        classes = len({label for _, label in split})
        if classes < 2:
            purpose, fix = _SPLIT_PURPOSE[name]
            found = "is empty" if not split else f"holds {len(split):,} examples of {classes} class"
            raise ValueError(
                f"{corpus.name}: the {name} split {found} ({sizes}); a study needs examples of at least 2 classes "
                f"there for {purpose}; {fix}"
            )


# ---------------------------------------------------------------------------------------------------------------
# The run function


def run_task(task: RunTask, corpus: Corpus) -> dict[str, Any]:
    """Run one task and return its record; an exception or a diverged loss becomes a failed record, never a raise."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "key": task.key,
        "variant": task.variant,
        "kind": task.kind,
        "seed": task.seed,
        "status": "ok",
        "error": None,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = split_for_seed(
                corpus, task.seed, fixed_split=task.fixed_split, split_seed=task.experiment.data.split_seed
            )
            if task.kind == "linear":
                record.update(_run_linear(data, task.seed))
            else:
                record.update(_run_rnn(task.experiment, data, task.seed))
        except Exception as e:  # one failed run must not end the sweep; the record carries the error
            record["status"] = "diverged" if type(e).__name__ == "TrainingDiverged" else "failed"
            record["error"] = f"{type(e).__name__}: {e}"
    record["warnings"] = sorted({str(w.message) for w in caught})
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    record["config"] = task.experiment.to_dict() if task.kind == "rnn" else None
    return record


def _scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, prefix: str) -> dict[str, Any]:
    from rnnreg.fit import score

    accuracy, f1 = score(y_true, y_pred, num_classes)
    return {f"{prefix}_acc": accuracy, f"{prefix}_f1": f1}


def _run_rnn(experiment: Experiment, corpus: Corpus, seed: int) -> dict[str, Any]:
    import torch

    from rnnreg.fit import fit, predict, prepare
    from rnnreg.mechanisms import inert

    start = time.perf_counter()
    data = prepare(experiment.data, corpus=corpus)
    prepare_s = time.perf_counter() - start
    result = fit(experiment, data, seed)
    h = result.history
    start = time.perf_counter()
    tc = experiment.train
    out: dict[str, Any] = {
        "best_epoch": h.best_epoch,
        "epochs_run": len(h.epochs),
        "truncated": h.truncated,  # cut at train.epochs while validation was still improving
        "mechanisms": result.mechanisms,
        "inert": inert(result.mechanisms, experiment),
        "train_loss": h.epochs[-1].train_loss if h.epochs else math.nan,
        "skipped_steps": h.skipped_steps,
        "amp": h.amp,
        "low_precision": h.low_precision,
        "val_curve": [r.val.macro_f1 if r.val else None for r in h.epochs],
        "train_curve": [r.train_loss for r in h.epochs],
        "threads": torch.get_num_threads(),
    }
    k = data.num_classes
    for name, split in (("val", data.val), ("test", data.test)):
        if split:
            logits, labels = predict(result.model, split, batch_size=tc.eval_batch_size, amp=h.amp)
            pred = logits.argmax(1).numpy()
            out.update(_scores(labels.numpy(), pred, k, name))
            if name == "test":
                out["test_pred"] = pred.tolist()
        else:
            out.update({f"{name}_acc": None, f"{name}_f1": None})
    # Where the run's wall time went: fit's parts (fit.TIMED_PARTS), the vocabulary and encoding before, the
    # predictions for this record after; run_task's wall_s holds the rest (the split, the process's imports).
    seconds = {"prepare": prepare_s, **h.seconds, "predict": time.perf_counter() - start}
    out["seconds"] = {part: round(value, 3) for part, value in seconds.items()}
    return out


LINEAR_CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # inverse regularization strengths tried on the validation split


def _run_linear(corpus: Corpus, seed: int) -> dict[str, Any]:
    """TF-IDF over word 1-2-grams (rnnreg's tokenizer) + logistic regression, C picked on validation macro-F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from rnnreg.data import tokenize

    if not corpus.val:
        raise ValueError("the linear reference needs a validation split to choose C; set data.val_frac > 0")
    k = corpus.num_classes
    vectorizer = TfidfVectorizer(
        tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True
    )
    x_train = vectorizer.fit_transform([t for t, _ in corpus.train])  # vocabulary from the training split only
    y_train = np.array([y for _, y in corpus.train])
    x_val, y_val = vectorizer.transform([t for t, _ in corpus.val]), np.array([y for _, y in corpus.val])
    best: tuple[float, float, Any] | None = None
    for c in LINEAR_CS:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y_train)
        f1 = _scores(y_val, clf.predict(x_val), k, "val")["val_f1"]
        if best is None or f1 > best[0]:  # ties keep the smaller C (stronger regularization)
            best = (f1, c, clf)
    assert best is not None
    _, c, clf = best
    out: dict[str, Any] = {"C": c, "amp": "off", "skipped_steps": 0, "best_epoch": None, "train_loss": None}
    out.update(_scores(y_val, clf.predict(x_val), k, "val"))
    if corpus.test:
        y_test = np.array([y for _, y in corpus.test])
        pred = clf.predict(vectorizer.transform([t for t, _ in corpus.test]))
        out.update(_scores(y_test, pred, k, "test"))
        out["test_pred"] = pred.tolist()
    else:
        out.update({"test_acc": None, "test_f1": None})
    return out
