"""rnnreg.data.sources.files: .csv, .tsv and .jsonl files load to one corpus; every bad file gives one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus
from rnnreg.data.registry import load_corpus


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _load(path: Path, **kwargs: object) -> Corpus:
    return load_corpus(DataConfig(source=str(path), **kwargs))  # type: ignore[arg-type]


def _rows(n: int = 10) -> list[tuple[str, str]]:
    return [(f"good film number {i}", "pos") for i in range(n)] + [(f"bad, film {i}", "neg") for i in range(n)]


def test_csv_tsv_and_jsonl_files_load_to_the_same_corpus(tmp_path: Path) -> None:
    rows = _rows()
    csv_text = "review,sentiment\n" + "".join(f'"{t}",{y}\n' for t, y in rows)
    tsv_text = "sentiment\treview\n" + "".join(f"{y}\t{t}\n" for t, y in rows)
    jsonl_text = "".join(json.dumps({"review": t, "sentiment": y, "extra": 1}) + "\n" for t, y in rows)
    kw = {"text_col": "review", "label_col": "sentiment"}
    corpora = [
        _load(_write(tmp_path, "d.csv", csv_text), **kw),
        _load(_write(tmp_path, "d.tsv", tsv_text), **kw),
        _load(_write(tmp_path, "d.jsonl", jsonl_text), **kw),
    ]
    assert corpora[0].label_names == ["neg", "pos"]
    pairs = {(t, ["neg", "pos"].index(y)) for t, y in rows}
    for corpus in corpora:
        assert set(corpus.train + corpus.val + corpus.test) == pairs
        assert (corpus.train, corpus.val, corpus.test) == (corpora[0].train, corpora[0].val, corpora[0].test)


def test_numeric_labels_in_a_csv_are_class_ids(tmp_path: Path) -> None:
    text = "text,label\n" + "".join(f"t{i} x,{i % 11}\n" for i in range(44))
    corpus = _load(_write(tmp_path, "d.csv", text), val_frac=0.0, test_frac=0.0)
    assert corpus.label_names == [str(i) for i in range(11)]  # numeric order: "10" after "9", not after "1"
    assert all(int(text[1:].split()[0]) % 11 == label for text, label in corpus.train)


def test_a_bom_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    body = "text,label\r\n" + "".join(f'"{t}",{y}\r\n' for t, y in _rows())
    corpus = _load(_write(tmp_path, "d.csv", b"\xef\xbb\xbf" + body.encode()))
    assert corpus.label_names == ["neg", "pos"]


def test_empty_texts_are_dropped_and_counted(tmp_path: Path) -> None:
    text = "text,label\n" + "".join(f'"{t}",{y}\n' for t, y in _rows()) + ' ,pos\n"",neg\n'
    corpus = _load(_write(tmp_path, "d.csv", text))
    assert corpus.dropped == 2
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == 20


BadFile = tuple[str, str | bytes, dict[str, object], str]
BAD_FILES: list[BadFile] = [
    ("d.txt", "text,label\na,b\n", {}, r"data\.source=.*d\.txt.*suffix '\.txt'.*\.csv, \.tsv, \.jsonl"),
    ("d.csv", "", {}, r"data\.source=.*d\.csv.* is empty"),
    ("d.csv", "text,label\n", {}, r"d\.csv has a header but no rows"),
    ("d.csv", "review,label\na,pos\n", {}, r"data\.text_col='text' is not a column .*\['review', 'label'\]"),
    ("d.csv", "text,stars\na,pos\n", {}, r"data\.label_col='label' is not a column .*\['text', 'stars'\]"),
    ("d.csv", "text,label\na,pos\nb,pos\n", {}, r"'label' has a single class \('pos'\)"),
    ("d.csv", b"text,label\na,pos\ncaf\xe9,neg\n", {}, r"d\.csv is not valid utf-8: byte 0xe9 at offset 20 \(line 3\)"),
    ("d.csv", 'text,label\na,pos\n"b"x,neg\n', {}, r"d\.csv: malformed CSV at line 3"),
    ("d.csv", 'text,label\na,pos\n"b,neg\n', {}, r"d\.csv: malformed CSV at line 3"),
    ("d.csv", "text,label\na,pos\nb,neg,extra\n", {}, r"d\.csv: line 3 has 3 fields but the header has 2"),
    ("d.tsv", "text\tlabel\na\tpos\nb\tc\tneg\n", {}, r"d\.tsv: line 3 has 3 fields"),
    ("d.csv", "text,label\na,pos\nb,\n", {}, r"line 3 has an empty data\.label_col='label'"),
    ("d.csv", "text,label\n ,pos\n,neg\n", {}, r"every one of the 2 rows .*data\.text_col='text'"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', {}, r"d\.jsonl: line 2 is not valid JSON"),
    ("d.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', {}, r"line 2 holds a list, not a JSON object"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"body": "b", "label": 0}\n', {}, r"data\.text_col='text'.*line 2.*'body'"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0.5}\n', {}, r"line 2: data\.label_col.*0\.5"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": 7, "label": 0}\n', {}, r"line 2: data\.text_col='text'.*7"),
    ("d.csv", "a,b\nx,1\ny,2\n", {"text_col": "a", "label_col": "b", "val_frac": 0.5}, r"class '1' has 1 example"),
]


@pytest.mark.parametrize(("name", "content", "kwargs", "match"), BAD_FILES)
def test_bad_files_raise_one_clear_error(
    tmp_path: Path, name: str, content: str | bytes, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        _load(_write(tmp_path, name, content), **kwargs)
    assert "\n" not in str(info.value)
