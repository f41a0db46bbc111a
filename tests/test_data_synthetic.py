"""rnnreg.data.sources.synthetic: the notebook's toy corpus and split, the synthetic counting task."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rnnreg.config import DataConfig
from rnnreg.data.registry import load_corpus
from rnnreg.data.sources.synthetic import TOY_SENTENCES, make_synthetic
from rnnreg.data.text import tokenize

seeds = st.integers(0, 2**31 - 1)


def test_toy_split_equals_the_notebooks() -> None:
    # Re-derived as in the notebook's cell In[9]: shuffle with RandomState(0), first 80 % train, the rest held out.
    assert len(TOY_SENTENCES) == 12
    perm = np.random.RandomState(0).permutation(12)
    shuffled = [TOY_SENTENCES[i] for i in perm]
    corpus = load_corpus(DataConfig(source="toy"))
    assert corpus.train == shuffled[:9]
    assert corpus.val == shuffled[9:]
    assert corpus.test == []
    assert corpus.label_names[1] == "positive"  # the notebook's 1 = positive keeps its id


@given(seeds)
def test_synthetic_labels_follow_the_documented_rule(seed: int) -> None:
    rows = make_synthetic(200, seed=seed)
    for text, label in rows:
        tokens = text.split()
        n_x = sum(t.startswith("x") for t in tokens)
        n_y = sum(t.startswith("y") for t in tokens)
        assert label == ("x" if n_x > n_y else "y") and n_x != n_y
        assert 6 <= len(tokens) <= 24
        assert tokenize(text) == tokens


def test_synthetic_is_deterministic_given_split_seed_and_balanced() -> None:
    a = load_corpus(DataConfig(source="synthetic", split_seed=3))
    assert a == load_corpus(DataConfig(source="synthetic", split_seed=3))
    assert a != load_corpus(DataConfig(source="synthetic", split_seed=4))
    counts = Counter(label for split in (a.train, a.val, a.test) for _, label in split)
    n = sum(counts.values())
    assert n >= 2000
    # Labels are fair coin flips: |#x - n/2| <= 5 sigma of Binomial(n, 1/2).
    assert abs(counts[0] - n / 2) <= 5 * math.sqrt(n) / 2
    assert len({len(text.split()) for text, _ in a.train}) > 10  # lengths vary
