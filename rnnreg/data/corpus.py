"""The corpus: labelled ``(text, label_id)`` examples split train/val/test, the stratified split, and the vocabulary.

The vocabulary comes from the training split only (:func:`build_vocab`): a word seen only in val/test is UNK there,
as it would be on new data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnreg.config import DataConfig
from rnnreg.data.text import Vocab, encode_labels

Example = tuple[str, int]  # (text, label id)


@dataclass(frozen=True)
class Corpus:
    """A labelled text data set split three ways; labels are ids into ``label_names``."""

    name: str
    train: list[Example]
    val: list[Example]
    test: list[Example]
    label_names: list[str]
    dropped: int = 0  # rows removed while loading: empty texts, and neutral (0) ratings of the sentiment sets

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        """One line: sizes of the splits and the count of each class over all of them."""
        counts = Counter(label for split in (self.train, self.val, self.test) for _, label in split)
        total = len(self.train) + len(self.val) + len(self.test)
        classes = ", ".join(f"{name} {counts[i]:,}" for i, name in enumerate(self.label_names))
        dropped = f"; {self.dropped:,} dropped" if self.dropped else ""
        return (
            f"{self.name}: {total:,} texts (train {len(self.train):,} / val {len(self.val):,} / "
            f"test {len(self.test):,}); classes: {classes}{dropped}"
        )


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def stratified_split(
    labels: Sequence[int],
    *,
    val_frac: float,
    test_frac: float,
    seed: int,
    label_names: Sequence[str] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, val and test examples, each in increasing order.

    Every class is shuffled and cut on its own, in the same proportions (each share rounded half up), so the
    splits keep the class balance. Depends on ``seed`` only: the training seed never moves an example.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(
            f"data.val_frac={val_frac} and data.test_frac={test_frac} must be in [0, 1) with a sum below 1; e.g. 0.1"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"data.split_seed must be an int >= 0 (got {seed!r}); e.g. 0")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, dtype=np.int64)  # [N]
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for c in np.unique(y):  # sorted, so the draws happen in a fixed class order
        idx = rng.permutation(np.flatnonzero(y == c))  # [N_c]
        n_test, n_val = _round_half_up(test_frac * len(idx)), _round_half_up(val_frac * len(idx))
        if len(idx) - n_val - n_test < 1:
            name = label_names[c] if label_names is not None else int(c)
            raise ValueError(
                f"class {name!r} has {len(idx)} example(s): too few to keep one for training with "
                f"data.val_frac={val_frac} and data.test_frac={test_frac}; add examples of it or lower those fractions"
            )
        test += idx[:n_test].tolist()
        val += idx[n_test : n_test + n_val].tolist()
        train += idx[n_test + n_val :].tolist()
    return sorted(train), sorted(val), sorted(test)


def split_corpus(
    name: str, texts: Sequence[str], raw_labels: Sequence[object], cfg: DataConfig, *, column: str, dropped: int
) -> Corpus:
    """A :class:`Corpus` of ``texts`` with their labels as ids, split by ``cfg`` (fractions and split seed).

    Args:
        column: where the labels came from, named in the errors of :func:`encode_labels`.
        dropped: rows the loader already removed, kept on the corpus for :meth:`Corpus.describe`.
    """
    ids, label_names = encode_labels(raw_labels, column)
    train, val, test = stratified_split(
        ids, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed, label_names=label_names
    )

    def pick(rows: list[int]) -> list[Example]:
        return [(texts[i], ids[i]) for i in rows]

    return Corpus(name, pick(train), pick(val), pick(test), label_names, dropped)


def build_vocab(corpus: Corpus, cfg: DataConfig) -> Vocab:
    """The vocabulary of ``corpus.train`` alone, sized by ``cfg.min_freq`` and ``cfg.max_vocab``."""
    return Vocab.build((text for text, _ in corpus.train), min_freq=cfg.min_freq, max_size=cfg.max_vocab)
