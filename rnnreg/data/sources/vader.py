"""Text data: tokenize, Vocab, datasets, stratified splits, collate into a padded Batch, length-bucketed batches.

``DataConfig.source`` names a registered dataset (:func:`list_datasets`) or a ``.csv``/``.tsv``/``.jsonl`` file;
:func:`load_corpus` turns either into a :class:`Corpus` of ``(text, label_id)`` pairs split train/val/test. The
vocabulary comes from the training split only (:func:`build_vocab`): a word seen only in val/test is UNK there,
as it would be on new data.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rnnreg.batch import (  # noqa: F401  re-exported: rnnreg.data.Batch etc. keep working
    BUCKET_WINDOW_BATCHES,
    PAD_ID,
    Batch,
    _check_count,
    batch_indices,
    collate,
    iterate_batches,
)
from rnnreg.config import DataConfig

UNK_ID = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"

Example = tuple[str, int]  # (text, label id)


# ---------------------------------------------------------------------------------------------------------------
# Tokens and vocabulary

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


# ---------------------------------------------------------------------------------------------------------------
# Labels and the corpus


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


def _split_corpus(
    name: str, texts: Sequence[str], raw_labels: Sequence[object], cfg: DataConfig, *, column: str, dropped: int
) -> Corpus:
    ids, label_names = encode_labels(raw_labels, column)
    train, val, test = stratified_split(
        ids, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed, label_names=label_names
    )

    def pick(rows: list[int]) -> list[Example]:
        return [(texts[i], ids[i]) for i in rows]

    return Corpus(name, pick(train), pick(val), pick(test), label_names, dropped)


# ---------------------------------------------------------------------------------------------------------------
# Built-in data: the notebook's toy corpus

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


def _load_toy(cfg: DataConfig) -> Corpus:
    # The notebook's own split, so results compare with it: RandomState(0) permutation, first int(0.8 * 12) = 9
    # train, the other 3 val, no test. It ignores data.val_frac / test_frac / split_seed on purpose.
    perm = np.random.RandomState(0).permutation(len(TOY_SENTENCES))
    shuffled = [TOY_SENTENCES[i] for i in perm]
    n_train = int(0.8 * len(shuffled))
    return Corpus("toy", shuffled[:n_train], shuffled[n_train:], [], ["negative", "positive"])


# ---------------------------------------------------------------------------------------------------------------
# Built-in data: the synthetic counting task

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


def _load_synthetic(cfg: DataConfig) -> Corpus:
    rows = make_synthetic(seed=cfg.split_seed)
    return _split_corpus("synthetic", [t for t, _ in rows], [y for _, y in rows], cfg, column="label", dropped=0)


# ---------------------------------------------------------------------------------------------------------------
# Built-in data: human-rated snippets from the vaderSentiment 3.3.2 source distribution (MIT licence)

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_DIR = "hutto_ICWSM_2014"  # the inner archive's folder; also the folder we extract into in the cache
VADER_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
_PIP_TIMEOUT_S = 300


class DatasetUnavailableError(RuntimeError):
    """A built-in data set could not be fetched or verified; the message says how to provide it by hand."""


def cache_dir() -> Path:
    """Where downloads live: ``$RNNREG_CACHE`` if set, else ``~/.cache/rnnreg``."""
    return Path(os.environ.get("RNNREG_CACHE") or Path.home() / ".cache" / "rnnreg").expanduser()


def fetch_vader(cache: Path | None = None) -> Path:
    """The folder holding the four rated-snippet files, fetched and extracted on first use, offline afterwards.

    An sdist already in the cache is used as is (after its SHA-256 check), so it can be placed there by hand.
    """
    cache = cache_dir() if cache is None else cache
    target = cache / _VADER_DIR
    damage = _cache_damage(target)
    if damage is None:
        return target
    if damage:  # never read a damaged cache: rebuild it from the (checksummed) archive
        warnings.warn(f"{target} is damaged ({damage}); rebuilding it from {VADER_SDIST}", stacklevel=2)
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / VADER_SDIST
    if not sdist.is_file():
        _download_vader(cache)
    _check_sha256(sdist, VADER_SDIST_SHA256)
    _extract_vader(sdist, target)
    return target


_MANIFEST = "SHA256SUMS.json"  # written beside the extracted files; checked on every use


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_damage(target: Path) -> str | None:
    """None for a sound extracted cache; '' when there is none (or one from before manifests); else what is wrong."""
    try:
        manifest = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "" if not target.exists() or not (target / _MANIFEST).exists() else f"{_MANIFEST} is unreadable"
    for name in VADER_FILES.values():
        path = target / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(manifest, dict) or _sha256(path) != manifest.get(name):
            return f"{name} does not match its checksum"
    return None


def _fetch_help(cache: Path) -> str:
    return (
        f"the rated snippets come from the vaderSentiment 3.3.2 source archive, fetched once with pip (this needs "
        f"access to the Python package index once; later runs read {cache} offline). Without network: get "
        f"{VADER_SDIST} (sha256 {VADER_SDIST_SHA256}) on another machine with `pip download --no-deps "
        f"--no-binary :all: vaderSentiment==3.3.2` and put it in {cache} (or set RNNREG_CACHE to its folder)"
    )


def _download_vader(cache: Path) -> None:
    """Save the sdist into ``cache`` with pip; raises DatasetUnavailableError when pip cannot."""
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        # Pinning the hash makes pip itself refuse any other file, before it runs anything from it.
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"vaderSentiment==3.3.2 --hash=sha256:{VADER_SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        cmd += ["--disable-pip-version-check", "-r", str(requirements), "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            why = f"pip did not finish within {_PIP_TIMEOUT_S} s"
        except OSError as e:
            why = f"could not run pip ({e})"
        else:
            errors = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            why = f"pip exited with status {proc.returncode}: {' '.join(errors[-3:])}" if proc.returncode else ""
        saved = Path(tmp) / VADER_SDIST
        if not why and not saved.is_file():
            why = f"pip reported success but saved no {VADER_SDIST}"
        if why:
            raise DatasetUnavailableError(f"could not download {VADER_SDIST}: {why}; {_fetch_help(cache)}")
        os.replace(saved, cache / VADER_SDIST)  # same folder tree: an atomic rename, never a half-written file


def _check_sha256(path: Path, expected: str) -> None:
    digest = _sha256(path)
    if digest != expected:
        raise DatasetUnavailableError(
            f"{path} has sha256 {digest}, expected {expected} (the vaderSentiment 3.3.2 source archive): it is "
            "corrupt or another release; delete it and run again to fetch it anew"
        )


def _extract_vader(sdist: Path, target: Path) -> None:
    """Copy the four snippet files out of the archive inside ``sdist``; ``target`` appears complete or not at all."""
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_file = outer.extractfile(_VADER_INNER)
            if inner_file is None:
                raise KeyError(_VADER_INNER)
            inner_bytes = inner_file.read()
        files = {}
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            for name in VADER_FILES.values():
                member = inner.extractfile(f"{_VADER_DIR}/{name}")
                if member is None:
                    raise KeyError(name)
                files[name] = member.read()
    except (tarfile.TarError, KeyError, EOFError, OSError) as e:
        raise DatasetUnavailableError(
            f"{sdist} does not hold the expected rated-snippet files ({e!r}); delete it and run again"
        ) from None
    # Write into a temporary sibling, then rename: an interrupted run never leaves a half-filled folder behind.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        sums = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
        (tmp / _MANIFEST).write_text(json.dumps(sums, indent=1) + "\n", encoding="utf-8")
        if target.exists():  # incomplete (a file went missing): replace it
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if _cache_damage(target) is not None:
                raise  # not a concurrent run that finished first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_snippet(text: str) -> str:
    # The files escape markup as HTML (&amp;, &lt;) and write a double quote as two apostrophes (''Conan'').
    return html.unescape(text).replace("''", '"').strip()


def read_rated_snippets(path: Path) -> list[tuple[str, float]]:
    """``(text, mean rating)`` pairs of one ``id<TAB>rating<TAB>text`` file (CRLF line ends, UTF-8)."""
    text = _decode_utf8(path.read_bytes(), path)
    rows = []
    # split("\n"), not splitlines(): the latter would also cut texts at form feeds or U+2028.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{path}: line {lineno} is not id<TAB>rating<TAB>text (got {line[:60]!r})")
        try:
            rating = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}: line {lineno} has rating {parts[1]!r}, not a number") from None
        rows.append((_clean_snippet(parts[2]), rating))
    return rows


def _load_rated(name: str, cfg: DataConfig) -> Corpus:
    rows = read_rated_snippets(fetch_vader() / VADER_FILES[name])
    # Binary sentiment from the sign of the mean human rating (-4..4); an exact 0 is neither, so it is dropped.
    kept = [(t, "positive" if r > 0 else "negative") for t, r in rows if r != 0 and tokenize(t)]
    texts, labels = [t for t, _ in kept], [y for _, y in kept]
    return _split_corpus(name, texts, labels, cfg, column="rating", dropped=len(rows) - len(kept))


# ---------------------------------------------------------------------------------------------------------------
# User files: .csv, .tsv, .jsonl


def _decode_utf8(raw: bytes, path: Path) -> str:
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # spreadsheet exports often add a BOM
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + skip
        line = raw.count(b"\n", 0, offset) + 1
        raise ValueError(
            f"{path} is not valid utf-8: byte {raw[offset]:#04x} at offset {offset} (line {line}); "
            "re-save the file as UTF-8"
        ) from None


def _missing_column(field: str, column: str, path: Path, found: Sequence[str], where: str = "") -> ValueError:
    return ValueError(
        f"data.{field}={column!r} is not a column of {path}{where}; columns found: {list(found)}; "
        f"set data.{field} to one of them"
    )


def _read_delimited(text: str, path: Path, cfg: DataConfig, delimiter: str) -> tuple[list[str], list[object]]:
    kind = "CSV" if delimiter == "," else "TSV"
    # TSV has no quoting (a field cannot hold a tab or a newline), so a '"' inside a text is just a character.
    stream = io.StringIO(text, newline="")
    if kind == "CSV":
        reader = csv.reader(stream, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
    else:
        reader = csv.reader(stream, delimiter=delimiter, quoting=csv.QUOTE_NONE, strict=True)
    texts: list[str] = []
    labels: list[object] = []
    header: list[str] | None = None
    # A long review may exceed the csv module's 128 KiB field limit; no field can be longer than the file itself.
    field_limit = csv.field_size_limit()
    csv.field_size_limit(max(field_limit, len(text) + 1))
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in row]
                for field, column in (("text_col", cfg.text_col), ("label_col", cfg.label_col)):
                    if column not in header:
                        raise _missing_column(field, column, path, header)
                i_text, i_label = header.index(cfg.text_col), header.index(cfg.label_col)
                continue
            if len(row) != len(header):
                fix = "quote texts that contain commas" if kind == "CSV" else "remove tabs from inside the texts"
                raise ValueError(
                    f"{path}: line {reader.line_num} has {len(row)} fields but the header has {len(header)}; {fix}"
                )
            label = row[i_label].strip()
            if not label:
                raise ValueError(
                    f"{path}: line {reader.line_num} has an empty data.label_col={cfg.label_col!r}; "
                    "give every row a label or remove the row"
                )
            texts.append(row[i_text])
            labels.append(label)
    except csv.Error as e:
        raise ValueError(f"{path}: malformed {kind} at line {reader.line_num} ({e}); fix the quoting there") from None
    finally:
        csv.field_size_limit(field_limit)
    if header is not None and not texts:
        raise ValueError(f"{path} has a header but no rows; add (text, label) rows below it")
    return texts, labels


def _read_jsonl(text: str, path: Path, cfg: DataConfig) -> tuple[list[str], list[object]]:
    texts: list[str] = []
    labels: list[object] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: line {lineno} is not valid JSON ({e.msg}, column {e.colno}); "
                f'each line must hold one object, e.g. {{"{cfg.text_col}": "...", "{cfg.label_col}": "pos"}}'
            ) from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}: line {lineno} holds a {type(obj).__name__}, not a JSON object; write one per line"
            )
        for field, column in (("text_col", cfg.text_col), ("label_col", cfg.label_col)):
            if column not in obj:
                raise _missing_column(field, column, path, list(obj), where=f" (line {lineno})")
        value, label = obj[cfg.text_col], obj[cfg.label_col]
        if not isinstance(value, str):
            raise ValueError(
                f"{path}: line {lineno}: data.text_col={cfg.text_col!r} must hold a string (got {value!r})"
            )
        if isinstance(label, str):
            label = label.strip()
        if label == "" or isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ValueError(
                f"{path}: line {lineno}: data.label_col={cfg.label_col!r} must be a non-empty string or an integer "
                f"(got {label!r})"
            )
        texts.append(value)
        labels.append(label)
    return texts, labels


_READERS: dict[str, Callable[[str, Path, DataConfig], tuple[list[str], list[object]]]] = {
    ".csv": partial(_read_delimited, delimiter=","),
    ".tsv": partial(_read_delimited, delimiter="\t"),
    ".jsonl": _read_jsonl,
}
_INT_RE = re.compile(r"-?\d+")


def _load_file(path: Path, cfg: DataConfig) -> Corpus:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"data.source={str(path)!r} has suffix {path.suffix!r}, which is not supported; "
            f"use a {', '.join(_READERS)} file (the suffix picks the reader)"
        )
    text = _decode_utf8(path.read_bytes(), path)
    if not text.strip():
        raise ValueError(
            f"data.source={str(path)!r} is empty; it needs a {cfg.text_col!r} and a {cfg.label_col!r} per row"
        )
    texts, labels = reader(text, path, cfg)
    # A file has no types for labels: "0", "1", "10" are class ids (sorted as numbers), not words.
    if all(isinstance(y, str) and _INT_RE.fullmatch(y) for y in labels):
        labels = [int(y) for y in labels]  # type: ignore[call-overload]
    keep = [i for i, t in enumerate(texts) if tokenize(t)]  # an RNN needs at least one token
    if not keep:
        raise ValueError(
            f"every one of the {len(texts)} rows of {path} has an empty data.text_col={cfg.text_col!r}; "
            "point data.text_col at the column holding the texts"
        )
    return _split_corpus(
        path.name,
        [texts[i] for i in keep],
        [labels[i] for i in keep],
        cfg,
        column=cfg.label_col,
        dropped=len(texts) - len(keep),
    )


# ---------------------------------------------------------------------------------------------------------------
# Registry and entry points


@dataclass(frozen=True)
class DatasetInfo:
    description: str  # one line, shown by `rnnreg datasets`
    load: Callable[[DataConfig], Corpus]


DATASETS: dict[str, DatasetInfo] = {
    "movies": DatasetInfo(
        "Rotten Tomatoes review sentences (10,605, Pang & Lee) with mean human ratings; sign -> binary sentiment",
        partial(_load_rated, "movies"),
    ),
    "tweets": DatasetInfo(
        "tweets (4,200) with mean human ratings; sign -> binary sentiment", partial(_load_rated, "tweets")
    ),
    "amazon": DatasetInfo(
        "Amazon product-review sentences (3,708) with mean human ratings; sign -> binary sentiment",
        partial(_load_rated, "amazon"),
    ),
    "nyt": DatasetInfo(
        "New York Times editorial sentences (5,190) with mean human ratings; sign -> binary sentiment",
        partial(_load_rated, "nyt"),
    ),
    "toy": DatasetInfo(
        "the notebook's 12 sentences with its own 9/3 split (ignores data.val_frac, test_frac, split_seed)", _load_toy
    ),
    "synthetic": DatasetInfo(
        f"{SYNTHETIC_SIZE:,} generated texts: which marker group (x*/y*) occurs more often; fast, learnable",
        _load_synthetic,
    ),
}


def list_datasets() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered data set."""
    return [(name, info.description) for name, info in DATASETS.items()]


def load_corpus(cfg: DataConfig) -> Corpus:
    """Load ``cfg.source``, a registered name or a .csv/.tsv/.jsonl path, split into train/val/test.

    Registered names win over files of the same name (write ``./movies`` for such a file). The real sentiment
    sets are fetched once (see :func:`fetch_vader`) and read offline afterwards.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"load_corpus wants a DataConfig (got {type(cfg).__name__}); e.g. DataConfig(source='toy')")
    info = DATASETS.get(cfg.source)
    if info is not None:
        return info.load(cfg)
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise ValueError(
            f"data.source={cfg.source!r} is neither a data set ({', '.join(DATASETS)}) nor an existing file; "
            "use one of those names or the path of a .csv, .tsv or .jsonl file"
        )
    if not path.is_file():
        raise ValueError(f"data.source={cfg.source!r} is a folder; point it at a .csv, .tsv or .jsonl file")
    return _load_file(path, cfg)


def build_vocab(corpus: Corpus, cfg: DataConfig) -> Vocab:
    """The vocabulary of ``corpus.train`` alone, sized by ``cfg.min_freq`` and ``cfg.max_vocab``."""
    return Vocab.build((text for text, _ in corpus.train), min_freq=cfg.min_freq, max_size=cfg.max_vocab)


def encode(split: Sequence[Example], vocab: Vocab, max_len: int) -> list[tuple[list[int], int]]:
    """``(token_ids, label)`` pairs, each truncated to its first ``max_len`` tokens."""
    _check_count("data.max_len", max_len, 1)
    return [(vocab.encode(text)[:max_len], label) for text, label in split]


# ---------------------------------------------------------------------------------------------------------------
# Batching
