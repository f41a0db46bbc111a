"""rnnreg.data.corpus: Corpus, stratified splits (class balance, seed only), a vocabulary of the training split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus, build_vocab, stratified_split
from rnnreg.data.registry import load_corpus
from rnnreg.data.text import UNK_ID, tokenize

seeds = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------------------------------------------------------
# Corpus


def test_corpus_describe_gives_split_sizes_and_class_counts() -> None:
    corpus = Corpus("demo", [("a", 0), ("b", 1), ("c", 1)], [("d", 1)], [("e", 0)], ["neg", "pos"], dropped=2)
    line = corpus.describe()
    assert "\n" not in line
    assert "demo: 5 texts (train 3 / val 1 / test 1)" in line
    assert "neg 2, pos 3" in line and "2 dropped" in line
    assert corpus.num_classes == 2


# ---------------------------------------------------------------------------------------------------------------
# the vocabulary of the training split


def test_vocab_is_built_on_train_only_so_a_val_only_word_is_unk() -> None:
    cfg = DataConfig(source="toy")
    corpus = load_corpus(cfg)
    train_words = {w for text, _ in corpus.train for w in tokenize(text)}
    val_only = [w for text, _ in corpus.val for w in tokenize(text) if w not in train_words]
    assert val_only, "the toy split has val-only words (e.g. 'wonderful'); the claim needs one"
    vocab = build_vocab(corpus, cfg)
    assert all(vocab.encode(w) == [UNK_ID] for w in val_only)
    assert all(vocab.encode(w) != [UNK_ID] for w in train_words)


def test_build_vocab_has_no_word_that_occurs_only_in_validation_or_test() -> None:
    train = [("a good film", 1), ("a bad film", 0)]
    corpus = Corpus("tiny", train, [("valword good", 1)], [("testword bad", 0)], ["negative", "positive"])
    vocab = build_vocab(corpus, DataConfig(source="tiny"))
    assert set(vocab.itos[2:]) == {"a", "good", "bad", "film"}  # PAD, UNK, then the training words only


# ---------------------------------------------------------------------------------------------------------------
# stratified splits


@given(
    st.lists(st.integers(1, 40), min_size=2, max_size=4),
    st.sampled_from([0.0, 0.1, 0.2, 0.3]),
    st.sampled_from([0.0, 0.1, 0.25]),
    seeds,
)
def test_stratified_split_keeps_class_proportions(
    sizes: list[int], val_frac: float, test_frac: float, seed: int
) -> None:
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(labels).tolist()
    try:
        train, val, test = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=seed)
    except ValueError as e:
        # Only when some class cannot keep an example for training after rounding its held-out shares.
        assert "too few" in str(e)
        assert any(n - math.floor(val_frac * n + 0.5) - math.floor(test_frac * n + 0.5) < 1 for n in sizes)
        return
    assert sorted(train + val + test) == list(range(len(labels)))
    for c, n in enumerate(sizes):
        for split, frac in ((val, val_frac), (test, test_frac)):
            k = sum(labels[i] == c for i in split)
            assert abs(k - frac * n) <= 0.5 + 1e-9  # each class's share, rounded
        assert any(labels[i] == c for i in train)


def test_stratified_split_depends_on_the_seed_only() -> None:
    labels = [i % 3 for i in range(300)]
    a = stratified_split(labels, val_frac=0.1, test_frac=0.1, seed=7)
    assert a == stratified_split(labels, val_frac=0.1, test_frac=0.1, seed=7)
    assert a != stratified_split(labels, val_frac=0.1, test_frac=0.1, seed=8)


def test_too_small_class_error_names_class_and_fix() -> None:
    with pytest.raises(ValueError, match=r"class 'b' has 1 example.*data\.val_frac=0\.5.*lower"):
        stratified_split([0, 0, 0, 0, 1], val_frac=0.5, test_frac=0.0, seed=0, label_names=["a", "b"])


def test_negative_split_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"data\.split_seed.*-1"):
        stratified_split([0, 1], val_frac=0.0, test_frac=0.0, seed=-1)
