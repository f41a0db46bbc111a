"""Text to ids: the tokenizer, the vocabulary (PAD = 0, UNK = 1), label ids, and encoding a split for the model.

Nothing here reads a file or knows a data set; :mod:`rnnreg.data.corpus` builds the vocabulary of a training split
from these pieces.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rnnreg.batch import _check_count

UNK_ID = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"

# A word is a run of letters/digits, joined by inner apostrophes ("don't", "rock'n'roll"); every other non-space
# character is a token of its own. An apostrophe at a word's edge is a quote mark, so it is split off.
_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|\S")


def tokenize(text: str) -> list[str]:
    """Lowercase; words and single punctuation marks: ``"Don't stop!"`` -> ``["don't", "stop", "!"]``.

    On plain space-separated words this is ``text.lower().split()``, the notebook's tokenizer.
    """
    # A typographic apostrophe (’) is the same apostrophe to a reader; unify it so "it’s" and "it's" match.
    return _TOKEN_RE.findall(text.lower().replace("\u2019", "'"))


class Vocab:
    """Token <-> id map with ``<pad>`` at PAD_ID = 0 and ``<unk>`` at UNK_ID = 1."""

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if itos[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(
                f"Vocab itos must start with {PAD_TOKEN!r}, {UNK_TOKEN!r} (got {itos[:2]!r}); "
                f"use Vocab.build(texts), or prepend the two special tokens"
            )
        stoi: dict[str, int] = {}
        for i, token in enumerate(itos):
            if not isinstance(token, str):
                raise TypeError(f"Vocab itos[{i}] must be a str (got {token!r} that is a {type(token).__name__})")
            if token in stoi:
                raise ValueError(f"Vocab itos holds {token!r} twice (at {stoi[token]} and {i}); list each token once")
            stoi[token] = i
        self.itos = itos
        self.stoi = stoi

    @classmethod
    def build(cls, texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Count the tokens of ``texts`` (the training split only); most frequent first, ties by first appearance.

        Args:
            texts: raw texts, tokenized with :func:`tokenize`.
            min_freq: tokens seen fewer times are left out (they become UNK).
            max_size: cap on the vocabulary size, PAD and UNK included; None keeps every token.
        """
        if isinstance(texts, str):
            raise TypeError(
                f"Vocab.build wants an iterable of texts, not one str (got {texts[:40]!r}); wrap it: [text]"
            )
        _check_count("min_freq", min_freq, 1)
        if max_size is not None:
            _check_count("max_size", max_size, 3)  # PAD, UNK and at least one word
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text))
        # Counter keeps first-appearance order and sorted() is stable, so ties stay in order of first appearance.
        words = [w for w, c in sorted(counts.items(), key=lambda wc: -wc[1]) if c >= min_freq]
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([PAD_TOKEN, UNK_TOKEN, *words])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown tokens map to UNK_ID."""
        return [self.stoi.get(token, UNK_ID) for token in tokenize(text)]

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside: equal by value, not hashable

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, first={self.itos[2:7]!r})"

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-safe form for checkpoints; :meth:`from_dict` inverts it."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocab:
        if not isinstance(d, Mapping) or not isinstance(d.get("itos"), list):
            raise ValueError(
                f"Vocab.from_dict wants {{'itos': [tokens...]}} as written by Vocab.to_dict (got {d!r:.80})"
            )
        return cls(d["itos"])


def encode_labels(values: Sequence[object], column: str = "label") -> tuple[list[int], list[str]]:
    """Map raw labels to ids in sorted order; returns ``(ids, label_names)``.

    Strings sort as strings; integers sort as numbers, so labels that already are 0..K-1 keep their value.
    """
    if len(values) == 0:
        raise ValueError(f"label column {column!r} has no rows; the data set is empty")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise TypeError(
                f"label column {column!r} row {i} must be a str or an int (got {v!r} that is a {type(v).__name__}); "
                "write labels as names ('pos') or class ids (1)"
            )
    kinds = {type(v) for v in values}
    if len(kinds) > 1:
        num = next(v for v in values if isinstance(v, int))
        word = next(v for v in values if isinstance(v, str))
        raise ValueError(
            f"label column {column!r} mixes integers and strings (e.g. {num!r} and {word!r}); "
            "write every label the same way"
        )
    classes = sorted(set(values))  # type: ignore[type-var]  # all str or all int, checked above
    if len(classes) < 2:
        raise ValueError(
            f"label column {column!r} has a single class ({classes[0]!r}) in all {len(values)} rows; a classifier "
            "needs at least two: check that data.label_col names the label column, or add examples of another class"
        )
    index = {c: i for i, c in enumerate(classes)}
    return [index[v] for v in values], [str(c) for c in classes]


def encode(split: Sequence[tuple[str, int]], vocab: Vocab, max_len: int) -> list[tuple[list[int], int]]:
    """``(token_ids, label)`` pairs of ``(text, label)`` examples, each truncated to its first ``max_len`` tokens."""
    _check_count("data.max_len", max_len, 1)
    return [(vocab.encode(text)[:max_len], label) for text, label in split]
