"""Built-in data made in code: the notebook's 12-sentence toy corpus and a learnable synthetic counting task."""

from __future__ import annotations

import numpy as np

from rnnreg.batch import _check_count
from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus, split_corpus

# ---------------------------------------------------------------------------------------------------------------
# The notebook's toy corpus

# Cell In[9] of the user's notebook, verbatim (1 = positive, 0 = negative).
TOY_SENTENCES: tuple[tuple[str, int], ...] = (
    ("i love this movie so much", 1),
    ("absolutely fantastic acting and soundtrack", 1),
    ("what a great experience highly recommend", 1),
    ("this was surprisingly good and fun", 1),
    ("i really enjoyed the story and characters", 1),
    ("boring plot and weak performances", 0),
    ("i hated every minute of it", 0),
    ("terrible script worst film ever", 0),
    ("not good the ending was awful", 0),
    ("mediocre at best would not recommend", 0),
    ("wonderful visuals and touching moments", 1),
    ("bad pacing and confusing scenes", 0),
)


def load_toy(cfg: DataConfig) -> Corpus:
    """The toy corpus, split as the notebook splits it."""
    # The notebook's own split, so results compare with it: RandomState(0) permutation, first int(0.8 * 12) = 9
    # train, the other 3 val, no test. It ignores data.val_frac / test_frac / split_seed on purpose.
    perm = np.random.RandomState(0).permutation(len(TOY_SENTENCES))
    shuffled = [TOY_SENTENCES[i] for i in perm]
    n_train = int(0.8 * len(shuffled))
    return Corpus("toy", shuffled[:n_train], shuffled[n_train:], [], ["negative", "positive"])


# ---------------------------------------------------------------------------------------------------------------
# The synthetic counting task

SYNTHETIC_GROUPS = ("x", "y")  # marker tokens x0..x3 and y0..y3; the label names the group seen more often
SYNTHETIC_MARKERS = 4
SYNTHETIC_DISTRACTORS = 40  # w0..w39, carry no signal
SYNTHETIC_SIZE = 4000


def make_synthetic(
    n: int = SYNTHETIC_SIZE, *, seed: int = 0, min_len: int = 6, max_len: int = 24
) -> list[tuple[str, str]]:
    """Texts and labels of a learnable counting task, deterministic given ``seed``.

    Rule: the label ("x" or "y") is the marker group that occurs more often. Each text has a length drawn
    uniformly from [min_len, max_len]; the winning group appears 1-3 times, the other group fewer times (maybe 0),
    at random positions, with markers drawn from x0..x3 / y0..y3; every other position is a distractor w0..w39.
    Order carries no signal, so a model has to count; labels are balanced in expectation.
    """
    _check_count("n", n, 2)
    _check_count("min_len", min_len, 5)  # room for 3 + 2 markers
    _check_count("max_len", max_len, min_len)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        n_win = int(rng.integers(1, 4))
        n_lose = int(rng.integers(0, n_win))
        win = int(rng.integers(2))
        tokens = [f"w{j}" for j in rng.integers(SYNTHETIC_DISTRACTORS, size=length)]
        positions = rng.permutation(length)[: n_win + n_lose]
        groups = [win] * n_win + [1 - win] * n_lose
        for pos, group in zip(positions, groups, strict=True):
            tokens[pos] = f"{SYNTHETIC_GROUPS[group]}{rng.integers(SYNTHETIC_MARKERS)}"
        rows.append((" ".join(tokens), SYNTHETIC_GROUPS[win]))
    return rows


def load_synthetic(cfg: DataConfig) -> Corpus:
    """:data:`SYNTHETIC_SIZE` texts generated with ``cfg.split_seed``, split by ``cfg``."""
    rows = make_synthetic(seed=cfg.split_seed)
    return split_corpus("synthetic", [t for t, _ in rows], [y for _, y in rows], cfg, column="label", dropped=0)
