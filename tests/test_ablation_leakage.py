"""No leakage into the comparison: the linear reference and the RNN variants see the same split of each seed, and the
reference learns its vocabulary and picks its C from the training and validation splits alone.

The objects are observed, not the code read: scikit-learn's vectorizer and logistic regression are replaced by
subclasses that record what they were fit and asked to predict on, and ``rnnreg.fit.prepare`` by a recorder that
stops the RNN run before training (what the RNN would train and be scored on is all these tests need).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from typing import Any

import numpy as np
import pytest
import sklearn.feature_extraction.text
import sklearn.linear_model
from sklearn.metrics import f1_score

import rnnreg.fit
from rnnreg.ablation import LINEAR, build_plan, data_fingerprint, run_task, split_for_seed, tasks_for
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus

Example = tuple[str, int]


def _corpus() -> Corpus:
    """Two classes told apart by cue words; every split also holds words no other split has."""
    rng = np.random.default_rng(5)
    cues = (["bad", "dull", "awful", "boring"], ["good", "great", "fun", "lovely"])
    filler = ["the", "a", "film", "plot", "was", "it", "acting", "story"]

    def rows(n: int, own: str) -> list[Example]:
        out = []
        for i in range(n):
            label = i % 2
            words = list(rng.choice(filler, size=int(rng.integers(2, 6))))
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cues[label])))
            if rng.random() < 0.3:  # noise, so that C matters
                words.append(str(rng.choice(cues[1 - label])))
            words.append(f"{own}{i % 7}")  # a word of this split alone
            out.append((" ".join(words), label))
        return out

    return Corpus("leak", rows(60, "trainword"), rows(24, "valword"), rows(24, "testword"), ["neg", "pos"])


CORPUS = _corpus()
BASE = Experiment(
    data=DataConfig(split_seed=4),
    model=ModelConfig(embed_dim=4, hidden_dim=4),
    train=TrainConfig(epochs=1, batch_size=16),
)


class _Stop(Exception):
    """Raised by the prepare recorder: the run becomes a failed record, and nothing is trained."""


class Observed:
    """What one run's models were given, by split."""

    def __init__(self) -> None:
        self.rnn: list[Corpus] = []  # the corpus each RNN run prepared
        self.fitted_texts: list[list[str]] = []  # texts each vectorizer was fit on
        self.vectorizers: list[Any] = []
        self.lr_fits: list[tuple[float, list[str], list[int]]] = []  # C, texts, labels of each classifier fit
        self.predictions: list[tuple[int, float, list[str], list[int]]] = []  # classifier, C, texts, predictions
        self._texts: dict[int, tuple[Any, list[str]]] = {}  # id(matrix) -> (matrix kept alive, its texts)

    def texts_of(self, matrix: Any) -> list[str]:
        return self._texts[id(matrix)][1]

    def remember(self, matrix: Any, texts: list[str]) -> Any:
        self._texts[id(matrix)] = (matrix, texts)
        return matrix


@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> Observed:
    seen = Observed()
    real_vectorizer = sklearn.feature_extraction.text.TfidfVectorizer
    real_lr = sklearn.linear_model.LogisticRegression

    class RecordingVectorizer(real_vectorizer):  # type: ignore[misc, valid-type]
        def fit(self, raw_documents: Any, y: Any = None) -> Any:
            docs = list(raw_documents)
            seen.fitted_texts.append(docs)
            seen.vectorizers.append(self)
            return super().fit(docs, y)

        def fit_transform(self, raw_documents: Any, y: Any = None) -> Any:
            docs = list(raw_documents)
            seen.fitted_texts.append(docs)
            seen.vectorizers.append(self)
            return seen.remember(super().fit_transform(docs, y), docs)

        def transform(self, raw_documents: Any) -> Any:
            docs = list(raw_documents)
            return seen.remember(super().transform(docs), docs)

    class RecordingLogisticRegression(real_lr):  # type: ignore[misc, valid-type]
        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
            seen.lr_fits.append((self.C, seen.texts_of(X), [int(v) for v in y]))
            return super().fit(X, y, sample_weight)

        def predict(self, X: Any) -> Any:
            out = super().predict(X)
            seen.predictions.append((id(self), self.C, seen.texts_of(X), [int(v) for v in out]))
            return out

    def prepare(*args: Any, **kwargs: Any) -> Any:
        corpus = kwargs.get("corpus", args[1] if len(args) > 1 else None)
        assert isinstance(corpus, Corpus), (args, kwargs)
        seen.rnn.append(corpus)
        raise _Stop("recorded what the RNN run would train on")

    monkeypatch.setattr(sklearn.feature_extraction.text, "TfidfVectorizer", RecordingVectorizer)
    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", RecordingLogisticRegression)
    monkeypatch.setattr(rnnreg.fit, "prepare", prepare)
    return seen


def _texts(split: list[Example]) -> list[str]:
    return [t for t, _ in split]


def _linear_view(seen: Observed, record: dict[str, Any]) -> tuple[list[Example], list[str], list[str]]:
    """(train examples, validation texts, test texts) as the linear reference's objects saw them."""
    (fit_texts,) = seen.fitted_texts
    assert all(texts == fit_texts for _, texts, _ in seen.lr_fits)
    train = list(zip(fit_texts, seen.lr_fits[0][2], strict=True))
    chosen = [p for p in seen.predictions if p[1] == record["C"]]
    # Each classifier predicts the validation split once to be scored; the chosen one then predicts the test split.
    val = seen.predictions[0][2]
    test = chosen[-1][2]
    return train, val, test


def _run_linear(seen: Observed, fixed_split: bool, seed: int = 0) -> dict[str, Any]:
    plan = build_plan("none", BASE, [["a"]], seeds=seed + 1, fixed_split=fixed_split)
    (task,) = [t for t in tasks_for(plan, BASE, data_fingerprint(CORPUS)) if t.kind == "linear" and t.seed == seed]
    record = run_task(task, CORPUS)
    assert record["status"] == "ok", record["error"]
    return record


# ---------------------------------------------------------------------------------------------------------------
# The linear reference's vocabulary and C


@pytest.mark.parametrize("fixed_split", [True, False])
def test_linear_reference_vocabulary_is_fit_on_training_texts_only(observed: Observed, fixed_split: bool) -> None:
    record = _run_linear(observed, fixed_split, seed=1)
    _, val, test = _linear_view(observed, record)
    split = split_for_seed(CORPUS, 1, fixed_split=fixed_split, split_seed=BASE.data.split_seed)
    assert observed.fitted_texts == [_texts(split.train)]  # one vectorizer, fit once, on the training texts
    # Every 1- and 2-gram of its vocabulary occurs in a training text (the texts are plain lowercase words).
    grams = set()
    for text in _texts(split.train):
        words = text.split()
        grams |= set(words) | {f"{u} {v}" for u, v in itertools.pairwise(words)}
    (vectorizer,) = observed.vectorizers
    vocabulary = set(vectorizer.vocabulary_)
    assert vocabulary <= grams, sorted(vocabulary - grams)[:5]
    # The check can fail: validation and test texts carry words of their own.
    assert any("valword" in t for t in val) and any("testword" in t for t in test)


@pytest.mark.parametrize("fixed_split", [True, False])
def test_linear_reference_picks_c_by_validation_macro_f1_and_only_the_chosen_model_sees_test(
    observed: Observed, fixed_split: bool
) -> None:
    record = _run_linear(observed, fixed_split, seed=2)
    split = split_for_seed(CORPUS, 2, fixed_split=fixed_split, split_seed=BASE.data.split_seed)
    val_texts, y_val = _texts(split.val), [y for _, y in split.val]
    test_texts = _texts(split.test)
    # Every classifier is fit on the training split, with its labels.
    assert len(observed.lr_fits) >= 2
    for _, texts, labels in observed.lr_fits:
        assert list(zip(texts, labels, strict=True)) == split.train
    # Each candidate C is scored on the validation split: macro-F1 of its validation predictions, recomputed here.
    scores: dict[float, float] = {}
    for _, c, texts, pred in observed.predictions:
        if texts == val_texts:
            scores.setdefault(c, f1_score(y_val, pred, average="macro"))
    assert set(scores) == {c for c, _, _ in observed.lr_fits}
    best = max(scores.values())
    assert record["C"] == min(c for c, s in scores.items() if s == best)  # ties go to the smaller C
    # The test split is predicted once, by the chosen model, after every candidate was scored.
    on_test = [i for i, p in enumerate(observed.predictions) if p[2] == test_texts]
    assert len(on_test) == 1, [observed.predictions[i][1] for i in on_test]
    (i,) = on_test
    assert observed.predictions[i][1] == record["C"] and i == len(observed.predictions) - 1
    assert record["test_pred"] == observed.predictions[i][3]
    # Nothing else was ever scored: every prediction is of the validation or the test split.
    assert all(p[2] in (val_texts, test_texts) for p in observed.predictions)


# ---------------------------------------------------------------------------------------------------------------
# One split per seed, shared by every variant and the reference


def _views_by_seed(observed: Observed, fixed_split: bool) -> dict[int, list[tuple[str, list, list[str], list[str]]]]:
    """Run every task of a plan; for each seed, (who, train examples, validation texts, test texts) per run."""
    plan = build_plan("none", BASE, [["a"], ["b", "model.output_p=0.1"]], seeds=3, fixed_split=fixed_split)
    views: dict[int, list[tuple[str, list, list[str], list[str]]]] = {}
    for task in tasks_for(plan, BASE, data_fingerprint(CORPUS)):
        before = len(observed.rnn)
        observed.fitted_texts.clear()
        observed.vectorizers.clear()
        observed.lr_fits.clear()
        observed.predictions.clear()
        record = run_task(task, CORPUS)
        if task.kind == "linear":
            assert record["status"] == "ok", record["error"]
            train, val, test = _linear_view(observed, record)
        else:
            assert record["status"] == "failed" and "_Stop" in record["error"]  # stopped before training
            (corpus,) = observed.rnn[before:]
            train, val, test = corpus.train, _texts(corpus.val), _texts(corpus.test)
        views.setdefault(task.seed, []).append((task.variant, train, val, test))
    return views


@pytest.mark.parametrize("fixed_split", [True, False])
def test_every_variant_and_the_linear_reference_see_the_same_split_of_each_seed(
    observed: Observed, fixed_split: bool
) -> None:
    views = _views_by_seed(observed, fixed_split)
    assert sorted(views) == [0, 1, 2]
    for seed, runs in views.items():
        assert sorted(who for who, *_ in runs) == sorted(["a", "b", LINEAR])
        expected = split_for_seed(CORPUS, seed, fixed_split=fixed_split, split_seed=BASE.data.split_seed)
        if fixed_split:
            assert expected == CORPUS
        for who, train, val, test in runs:
            assert train == expected.train, (seed, who)
            assert val == _texts(expected.val), (seed, who)
            assert test == _texts(CORPUS.test), (seed, who)  # the test split never moves
    if not fixed_split:  # and the seeds do differ, so sharing a split is not trivial
        assert len({tuple(runs[0][2]) for runs in views.values()}) == 3


def test_a_variants_own_split_seed_is_the_split_it_trains_on(observed: Observed) -> None:
    plan = build_plan("none", BASE, [["a"], ["other", "data.split_seed=9"]], seeds=1, linear=False)
    for task in tasks_for(plan, BASE, "fp"):
        run_task(task, CORPUS)
    seen_a, seen_other = observed.rnn
    assert seen_a == split_for_seed(CORPUS, 0, fixed_split=False, split_seed=4)
    assert seen_other == split_for_seed(CORPUS, 0, fixed_split=False, split_seed=9)
    assert seen_a.val != seen_other.val


# ---------------------------------------------------------------------------------------------------------------
# The split: a function of (data.split_seed, seed), stratified, the test split untouched


def test_the_split_is_a_function_of_split_seed_and_seed_and_each_pair_draws_its_own() -> None:
    pool = Counter(CORPUS.train + CORPUS.val)
    vals = {}
    for split_seed, seed in itertools.product(range(4), range(4)):
        s = split_for_seed(CORPUS, seed, fixed_split=False, split_seed=split_seed)
        assert s == split_for_seed(CORPUS, seed, fixed_split=False, split_seed=split_seed)  # reproducible
        assert s.test == CORPUS.test and s.label_names == CORPUS.label_names
        assert Counter(s.train + s.val) == pool and len(s.val) == len(CORPUS.val)
        assert Counter(y for _, y in s.val) == Counter(y for _, y in CORPUS.val)  # stratified: 12 of each class
        vals[(split_seed, seed)] = tuple(s.val)
    # 16 pairs, 16 different validation splits: neither seed is ignored, and (1, 0) is not (0, 1).
    assert len(set(vals.values())) == 16


def test_a_fixed_split_is_the_corpus_itself_whatever_the_seeds() -> None:
    for split_seed, seed in ((0, 0), (3, 5)):
        assert split_for_seed(CORPUS, seed, fixed_split=True, split_seed=split_seed) == CORPUS


def test_split_seed_reaches_the_split_through_the_run(observed: Observed) -> None:
    for split_seed in (0, 7):
        experiment = dataclasses.replace(BASE, data=DataConfig(split_seed=split_seed))
        plan = build_plan("none", experiment, [["a"]], seeds=1, linear=False)
        (task,) = tasks_for(plan, experiment, "fp")
        run_task(task, CORPUS)
    at_0, at_7 = observed.rnn
    assert at_0 == split_for_seed(CORPUS, 0, fixed_split=False, split_seed=0)
    assert at_7 == split_for_seed(CORPUS, 0, fixed_split=False, split_seed=7)
    assert at_0.val != at_7.val
