"""Fuzzed input: every input to the loaders, `collate`, the `--set` parser and the model's input checks gives a valid
result or a clear ValueError/TypeError — never another exception, never a hang.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import signal
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rnnreg.batch import Batch, collate
from rnnreg.config import DataConfig, Experiment, ModelConfig, apply_overrides, valid_keys
from rnnreg.data import Corpus, load_corpus, tokenize
from rnnreg.model import build_model

HANG_S = 30  # far beyond any input here (milliseconds each): only a real hang reaches it

# Examples per property come from the profile (25 by default, 500 with HYPOTHESIS_PROFILE=thorough).
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def _no_hang(seconds: int = HANG_S) -> Iterator[None]:
    def expired(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _valid_or_clear_error(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call; a ValueError/TypeError with a non-empty one-paragraph message counts as a clear refusal (None)."""
    with _no_hang():
        try:
            return call(*args, **kwargs)
        except (ValueError, TypeError) as e:
            assert str(e).strip(), f"{type(e).__name__} without a message"
            return None


# ---------------------------------------------------------------------------------------------------------------
# Loaders: CSV, TSV, JSONL

# Characters that break naive parsers: separators, quotes, line ends of every kind, NUL, BOM, RTL mark, emoji.
NASTY = ",\t\"'\r\n\x00\ufeff\u2028\u200f\x0c\\{}[]:" + "é中🙂"
cells = st.text(alphabet=st.sampled_from(list(NASTY + string.ascii_letters[:6] + "  ")), max_size=12)
labels = st.one_of(st.sampled_from(["pos", "neg", "0", "1", "10", "", " ", "pos ", '"x"']), cells)
# Rows that can make a valid corpus, with the nasty characters around a real word: most draws should load.
texts = st.builds(lambda a, w, b: a + w + b, cells, st.sampled_from(["good", "bad", "plot", "fun"]), cells)
good_rows = st.lists(st.tuples(texts, st.sampled_from(["pos", "neg"])), min_size=10, max_size=24)
ENCODINGS = ["utf-8"] * 4 + ["utf-8-sig", "utf-16", "latin-1", "cp1252"]  # utf-8 is what loads; the rest must refuse


def _check_corpus(corpus: Corpus) -> None:
    K = len(corpus.label_names)
    assert K >= 2 and len(set(corpus.label_names)) == K
    for split in (corpus.train, corpus.val, corpus.test):
        for text, label in split:
            assert isinstance(text, str) and tokenize(text)
            assert isinstance(label, int) and 0 <= label < K
    assert corpus.train


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _load(folder: Path, suffix: str, raw: bytes) -> Corpus | None:
    path = folder / f"data{suffix}"
    path.write_bytes(raw)
    corpus = _valid_or_clear_error(load_corpus, DataConfig(source=str(path), val_frac=0.2, test_frac=0.2))
    if corpus is not None:
        _check_corpus(corpus)
    return corpus


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
def test_loaders_take_random_bytes(folder: Path, raw: bytes, suffix: str) -> None:
    event("loaded" if _load(folder, suffix, raw) is not None else "refused")


def _delimited(rows: list[tuple[str, str]], sep: str, quote: bool, header: tuple[str, str]) -> str:
    def cell(x: str) -> str:
        return '"' + x.replace('"', '""') + '"' if quote else x

    return "".join(sep.join(cell(c) for c in row) + "\n" for row in [header, *rows])


@FUZZ
@given(
    rows=st.one_of(good_rows, st.lists(st.tuples(cells, labels), max_size=12)),
    suffix=st.sampled_from([".csv", ".tsv"]),
    quote=st.sampled_from([True, True, False]),
    header=st.sampled_from([("text", "label")] * 3 + [("label", "text"), ("text", "text"), ("body", "label")]),
    crlf=st.booleans(),
    bom=st.booleans(),
    encoding=st.sampled_from(ENCODINGS),
)
def test_delimited_loaders_take_structured_nasty_rows(
    folder: Path,
    rows: list[tuple[str, str]],
    suffix: str,
    quote: bool,
    header: tuple[str, str],
    crlf: bool,
    bom: bool,
    encoding: str,
) -> None:
    text = _delimited(rows, "," if suffix == ".csv" else "\t", quote, header)
    if crlf:
        text = text.replace("\n", "\r\n")
    raw = text.encode(encoding, errors="replace")
    event("loaded" if _load(folder, suffix, (codecs.BOM_UTF8 if bom else b"") + raw) is not None else "refused")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | cells,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cells, inner, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(
    objects=st.lists(
        st.one_of(
            st.fixed_dictionaries({"text": json_values, "label": json_values}),
            st.fixed_dictionaries({"text": cells, "label": labels | st.integers(-3, 3)}),
            json_values,
        ),
        max_size=12,
    )
    | good_rows.map(lambda rows: [{"text": t, "label": y} for t, y in rows]),
    crlf=st.booleans(),
    blank_lines=st.booleans(),
)
def test_jsonl_loader_takes_any_json_values(folder: Path, objects: list[object], crlf: bool, blank_lines: bool) -> None:
    sep = "\r\n" if crlf else "\n"
    lines = [json.dumps(o, ensure_ascii=False) for o in objects]
    text = (sep + sep if blank_lines else sep).join(lines)
    event("loaded" if _load(folder, ".jsonl", text.encode("utf-8", errors="surrogatepass")) is not None else "refused")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_huge_field_loads_whole(folder: Path, suffix: str) -> None:
    words = " ".join(f"w{i}" for i in range(200_000))  # 1.4 MB in one field: beyond the csv module's default limit
    rows = [(words if i == 0 else f"short text {i}", "pos" if i % 2 else "neg") for i in range(20)]
    if suffix == ".jsonl":
        raw = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
    else:
        raw = _delimited(rows, "," if suffix == ".csv" else "\t", suffix == ".csv", ("text", "label"))
    corpus = _load(folder, suffix, raw.encode())
    assert corpus is not None
    assert words in [t for split in (corpus.train, corpus.val, corpus.test) for t, _ in split]


# ---------------------------------------------------------------------------------------------------------------
# collate

ids = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.booleans(), st.text(max_size=2), st.none())
examples = st.lists(
    st.tuples(st.one_of(st.lists(ids, max_size=5), st.lists(st.integers(0, 50), max_size=5), ids), ids),
    max_size=5,
)


@FUZZ
@given(batch=examples)
def test_collate_gives_a_batch_or_a_clear_error(batch: list[tuple[object, object]]) -> None:
    out = _valid_or_clear_error(collate, batch)
    if out is not None:
        assert isinstance(out, Batch)
        assert out.tokens.dtype == out.lengths.dtype == out.labels.dtype == torch.int64
        assert out.tokens.shape == (len(batch), int(out.lengths.max()))
        assert int(out.labels.min()) >= 0  # class ids
        for row, (token_ids, label) in enumerate(batch):
            n = int(out.lengths[row])
            assert out.tokens[row, :n].tolist() == list(token_ids)  # type: ignore[call-overload]
            assert int(out.labels[row]) == label


@pytest.mark.parametrize(
    ("batch", "error", "expected"),
    [
        ([([1, 2], -1)], ValueError, "example 0: the label must be a class id >= 0"),
        ([([1], 0), ([1, 2**63], 1)], ValueError, "example 1: token ids must be ints in the int64 range"),
        ([([1.5], 0)], TypeError, "example 0: token ids must be a flat list of ints"),
        ([([1], True)], TypeError, "example 0: the label must be an int class id"),
        ([("abc", 0)], TypeError, "example 0: token ids must be a list of ints"),
        ([[1, 2, 3]], TypeError, "example 0 must be a (token_ids, label) pair"),
    ],
)
def test_collate_names_the_bad_example(batch: list[object], error: type[Exception], expected: str) -> None:
    with pytest.raises(error) as info:
        collate(batch)  # type: ignore[arg-type]
    assert expected in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# --set parser

KEYS = valid_keys()
values = st.one_of(
    st.sampled_from(["", " ", "nan", "-nan", "inf", "-inf", "1e400", "-0", "0x10", "1_0", "None", "true", "٣", "1.5"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.text(max_size=8),
)
overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), values),
    st.text(max_size=20),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), values),
)


@FUZZ
@given(items=st.lists(overrides, max_size=4))
def test_set_parser_gives_a_valid_experiment_or_a_clear_error(items: list[str]) -> None:
    experiment = _valid_or_clear_error(apply_overrides, Experiment(), items)
    if experiment is not None:
        assert isinstance(experiment, Experiment)
        assert Experiment.from_dict(experiment.to_dict()) == experiment  # every field passed validation


# ---------------------------------------------------------------------------------------------------------------
# Model input checks

VOCAB, CLASSES = 20, 3


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(embed_dim=4, hidden_dim=4), VOCAB, CLASSES).eval()


dtypes = st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool, torch.uint8])
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def tensors(draw: st.DrawFn, dtype: st.SearchStrategy[torch.dtype] = dtypes) -> torch.Tensor:
    shape, kind = draw(shapes), draw(dtype)
    n = 1
    for s in shape:
        n *= s
    data = draw(st.lists(st.integers(-3, VOCAB + 3), min_size=n, max_size=n))
    return torch.tensor(data, dtype=torch.int64).reshape(shape).to(kind)


@FUZZ
@given(
    tokens=st.one_of(tensors(), tensors(st.just(torch.int64)), st.lists(st.integers(), max_size=3), st.none()),
    lengths=st.one_of(tensors(), tensors(st.just(torch.int64)), st.integers(), st.none()),
)
def test_model_gives_logits_or_a_clear_error(model: torch.nn.Module, tokens: object, lengths: object) -> None:
    with torch.no_grad():
        logits = _valid_or_clear_error(model, tokens, lengths)
    if logits is not None:
        assert isinstance(tokens, torch.Tensor)
        assert logits.shape == (tokens.shape[0], CLASSES) and torch.isfinite(logits).all()
