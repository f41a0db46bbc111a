"""Ablation plans, run keys, paired splits and the run function."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from rnnreg.ablation import LINEAR, RunTask, build_plan, data_fingerprint, run_task, split_for_seed, tasks_for
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus, tokenize

DROPOUTS = ("embed_p", "input_p", "hidden_p", "weight_p", "output_p", "recurrent_p")


def _flat(exp: Experiment) -> dict[str, object]:
    return {f"{s}.{k}": v for s, fields in exp.to_dict().items() for k, v in fields.items()}


def _diff(a: Experiment, b: Experiment) -> dict[str, tuple[object, object]]:
    fa, fb = _flat(a), _flat(b)
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


BASE = Experiment(
    model=ModelConfig(recurrent_p=0.05),  # every dropout the default preset switches is on
    train=TrainConfig(epochs=3, weight_decay=0.02, label_smoothing=0.1, clip="norm"),
)
OFF = {f"model.{p}": 0.0 for p in DROPOUTS if getattr(BASE.model, p)} | {
    "train.weight_decay": 0.0,
    "train.clip": "none",
    "train.label_smoothing": 0.0,
}


def test_default_preset_is_baseline_regularized_and_each_trick_left_out() -> None:
    plan = build_plan("default", BASE, seeds=5)
    variants = {v.name: v.experiment for v in plan.variants}
    assert list(variants) == [
        "baseline",
        "regularized",
        "without dropout",
        "without weight_decay",
        "without clipping",
        "without label_smoothing",
    ]
    assert variants["regularized"] == BASE
    assert {k: new for k, (_, new) in _diff(BASE, variants["baseline"]).items()} == OFF
    groups = {
        "without dropout": {k for k in OFF if k.startswith("model.")},
        "without weight_decay": {"train.weight_decay"},
        "without clipping": {"train.clip"},
        "without label_smoothing": {"train.label_smoothing"},
    }
    for name, keys in groups.items():
        assert set(_diff(BASE, variants[name])) == keys, name
    pairs = {(c.a, c.b) for c in plan.comparisons}
    assert ("regularized", "baseline") in pairs
    assert {("regularized", name) for name in groups} <= pairs
    assert ("regularized", LINEAR) in pairs
    assert plan.seeds == (0, 1, 2, 3, 4)


def test_full_preset_adds_each_trick_alone_precision_and_decay_style() -> None:
    plan = build_plan("full", BASE, seeds=3)
    variants = {v.name: v.experiment for v in plan.variants}
    assert len(variants) == 12
    baseline = variants["baseline"]
    assert set(_diff(baseline, variants["only dropout"])) == {k for k in OFF if k.startswith("model.")}
    assert _diff(baseline, variants["only clipping"]) == {"train.clip": ("none", "norm")}
    assert _diff(BASE, variants["regularized, bf16"]) == {"train.amp": ("off", "bf16")}
    assert _diff(BASE, variants["regularized, coupled L2 (adam)"]) == {"train.optimizer": ("adamw", "adam")}


def test_notebook_preset_is_the_notebooks_two_models_on_the_given_data() -> None:
    base = Experiment(data=DataConfig(source="toy"))
    plan = build_plan("notebook", base, seeds=3)
    baseline, regularized = (v.experiment for v in plan.variants)
    # The notebook's mini-challenge: embed 32, hidden 32, Adam lr 1e-3, batch 4, 10 epochs; dropout 0.3, wd 1e-4,
    # clip at 1.0 only in the regularized model.
    for exp in (baseline, regularized):
        assert (exp.model.embed_dim, exp.model.hidden_dim, exp.train.optimizer, exp.train.lr) == (32, 32, "adam", 1e-3)
        assert (exp.train.batch_size, exp.train.epochs, exp.data.source) == (4, 10, "toy")
    assert (baseline.model.input_p, baseline.train.weight_decay, baseline.train.clip) == (0.0, 0.0, "none")
    assert (regularized.model.input_p, regularized.train.weight_decay, regularized.train.clip) == (0.3, 1e-4, "norm")
    assert build_plan("notebook", base, seeds=3, epochs=2).variants[0].experiment.train.epochs == 2


def test_user_variants_are_checked_like_set_and_compared_with_the_baseline() -> None:
    plan = build_plan("default", BASE, [["wide", "model.hidden_dim=256", "train.lr=0.001"]], seeds=2)
    wide = next(v for v in plan.variants if v.name == "wide")
    assert _diff(BASE, wide.experiment) == {"model.hidden_dim": (128, 256), "train.lr": (BASE.train.lr, 0.001)}
    assert ("wide", "baseline") in {(c.a, c.b) for c in plan.comparisons}
    only = build_plan("none", BASE, [["a", "train.lr=0.01"], ["b", "train.lr=0.02"]], seeds=2, linear=False)
    assert [v.name for v in only.variants] == ["a", "b"]
    assert [(c.a, c.b) for c in only.comparisons] == [("b", "a")]


@pytest.mark.parametrize(
    ("preset", "user", "message"),
    [
        ("fancy", [], "unknown preset 'fancy'"),
        ("none", [], "needs at least one variant of your own"),
        ("default", [["x", "model.nope=1"]], "variant x: model.nope: unknown key; valid keys:"),
        ("default", [["x", "model.embed_p=1.5"]], "variant x: model.embed_p must be a probability"),
        ("default", [["x", "train.lr=fast"]], "variant x: train.lr=fast: expected float"),
        ("default", [["baseline", "train.lr=0.1"]], "variant baseline: the name is taken"),
        ("default", [["train.lr=0.1"]], "the first word is the variant's name"),
    ],
)
def test_bad_plans_raise_value_errors_that_name_the_problem(preset: str, user: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build_plan(preset, BASE, user, seeds=2)


@pytest.mark.parametrize("seeds", [0, -1, True, 2.5])
def test_seeds_must_be_a_positive_int(seeds: object) -> None:
    with pytest.raises(ValueError, match="seeds must be an int >= 1"):
        build_plan("default", BASE, seeds=seeds)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Keys and splits


def _corpus(n: int = 90, seed: int = 0, name: str = "tiny") -> Corpus:
    rng = random.Random(seed)
    pos, neg, filler = ["good", "great", "fun"], ["bad", "dull", "awful"], ["the", "a", "film", "plot", "was"]

    def make(k: int, offset: int) -> list[tuple[str, int]]:
        rows = []
        for i in range(k):
            label = (i + offset) % 2
            words = [rng.choice(filler) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randint(0, len(words)), rng.choice(pos if label else neg))
            rows.append((" ".join(words), label))
        return rows

    return Corpus(name, make(n, 0), make(n // 3, 1), make(n // 3, 0), ["negative", "positive"])


def test_run_keys_follow_data_content_config_and_seed_not_names_or_paths() -> None:
    corpus = _corpus()
    fp = data_fingerprint(corpus)
    task = RunTask("a", "rnn", BASE, 0, False, fp)
    same = RunTask("b", "rnn", dataclasses.replace(BASE, data=DataConfig(source="elsewhere.csv")), 0, False, fp)
    assert task.key == same.key  # a renamed variant or a moved file does not rerun anything
    others = [
        RunTask("a", "rnn", BASE, 1, False, fp),
        RunTask("a", "rnn", BASE, 0, True, fp),
        RunTask("a", "rnn", dataclasses.replace(BASE, train=TrainConfig(lr=0.01)), 0, False, fp),
        RunTask("a", "rnn", BASE, 0, False, data_fingerprint(dataclasses.replace(corpus, test=corpus.test[1:]))),
        RunTask("a", "linear", BASE, 0, False, fp),
    ]
    assert len({task.key, *(t.key for t in others)}) == len(others) + 1
    # The linear reference does not depend on the RNN's settings.
    lin = RunTask(LINEAR, "linear", dataclasses.replace(BASE, model=ModelConfig(hidden_dim=8)), 0, False, fp)
    assert lin.key == others[-1].key


def test_tasks_cover_every_variant_and_seed_once_with_the_linear_reference() -> None:
    plan = build_plan("default", BASE, seeds=3)
    tasks = tasks_for(plan, BASE, "fp")
    assert len(tasks) == 3 * (len(plan.variants) + 1)
    assert {(t.variant, t.seed) for t in tasks} == {(n, s) for n in plan.names() for s in range(3)}


def test_each_seed_redraws_train_and_validation_but_never_the_test_split() -> None:
    corpus = _corpus()
    pool = sorted(corpus.train + corpus.val)
    splits = [split_for_seed(corpus, seed, fixed_split=False) for seed in range(6)]
    for s in splits:
        assert s.test == corpus.test
        assert sorted(s.train + s.val) == pool
        assert len(s.val) == len(corpus.val)
        # Stratified: the validation split keeps the pool's class balance (rounded per class).
        assert abs(sum(y for _, y in s.val) - len(s.val) / 2) <= 1
    assert len({tuple(s.val) for s in splits}) == 6
    assert split_for_seed(corpus, 3, fixed_split=False) == splits[3]
    assert split_for_seed(corpus, 3, fixed_split=True) == corpus


# ---------------------------------------------------------------------------------------------------------------
# The run function

TINY = Experiment(
    model=ModelConfig(embed_dim=8, hidden_dim=8),
    train=TrainConfig(epochs=2, batch_size=16, lr=1e-2),
)


def test_a_run_records_metrics_predictions_and_what_ran() -> None:
    corpus = _corpus()
    record = run_task(RunTask("regularized", "rnn", TINY, 0, False, "fp"), corpus)
    assert record["status"] == "ok", record["error"]
    assert record["seed"] == 0 and record["variant"] == "regularized" and record["epochs_run"] == 2
    assert len(record["test_pred"]) == len(corpus.test) and set(record["test_pred"]) <= {0, 1}
    truth = np.array([y for _, y in corpus.test])
    assert record["test_acc"] == pytest.approx(float(np.mean(np.array(record["test_pred"]) == truth)))
    assert len(record["val_curve"]) == 2 and len(record["train_curve"]) == 2
    assert record["amp"] == "off" and record["skipped_steps"] == 0 and record["wall_s"] > 0
    assert 1 <= record["best_epoch"] <= 2
    assert record["config"] == TINY.to_dict()


def test_a_run_is_deterministic_for_its_seed() -> None:
    corpus = _corpus()
    a, b = (run_task(RunTask("r", "rnn", TINY, 1, False, "fp"), corpus) for _ in range(2))
    drop = {"wall_s", "seconds"}  # wall time, in all and by part
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_a_failing_run_becomes_a_failed_record_not_an_exception() -> None:
    corpus = _corpus()
    empty_text = dataclasses.replace(corpus, test=[*corpus.test, ("", 0)])  # collate refuses a sequence of length 0
    record = run_task(RunTask("r", "rnn", TINY, 0, True, "fp"), empty_text)
    assert record["status"] == "failed"
    assert record["error"].startswith(("ValueError", "RuntimeError")), record["error"]


def test_a_diverged_run_is_recorded_as_diverged() -> None:
    exploding = dataclasses.replace(
        TINY, train=dataclasses.replace(TINY.train, lr=1e30, clip="none", max_skipped_steps=3)
    )
    record = run_task(RunTask("r", "rnn", exploding, 0, False, "fp"), _corpus())
    assert record["status"] == "diverged"
    assert "TrainingDiverged" in record["error"]


def test_linear_reference_is_tfidf_bigrams_and_logistic_regression_with_c_chosen_on_validation() -> None:
    corpus = _corpus(n=120)
    record = run_task(RunTask(LINEAR, "linear", TINY, 0, True, "fp"), corpus)
    assert record["status"] == "ok", record["error"]
    # Rebuilt here from scikit-learn directly with the C the run chose.
    vec = TfidfVectorizer(
        tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True
    )
    x = vec.fit_transform([t for t, _ in corpus.train])
    clf = LogisticRegression(C=record["C"], max_iter=2000).fit(x, [y for _, y in corpus.train])
    expected = clf.predict(vec.transform([t for t, _ in corpus.test]))
    assert record["test_pred"] == expected.tolist()
    # No other C scores better on validation macro-F1 (ties go to the smaller C).
    from sklearn.metrics import f1_score

    x_val, y_val = vec.transform([t for t, _ in corpus.val]), [y for _, y in corpus.val]
    scores = {
        c: f1_score(
            y_val,
            LogisticRegression(C=c, max_iter=2000).fit(x, [y for _, y in corpus.train]).predict(x_val),
            average="macro",
        )
        for c in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    }
    assert scores[record["C"]] == max(scores.values())
    assert record["C"] == min(c for c, s in scores.items() if s == max(scores.values()))
