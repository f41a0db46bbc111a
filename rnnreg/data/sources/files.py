"""User files as data: ``.csv``, ``.tsv`` and ``.jsonl`` readers, picked by the file's suffix.

``data.text_col`` and ``data.label_col`` name the columns (the keys, for JSONL); labels that all look like integers
are class ids, sorted as numbers. Rows whose text has no token are dropped and counted.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus, split_corpus
from rnnreg.data.text import tokenize


def decode_utf8(raw: bytes, path: Path) -> str:
    """``raw`` as text, without a leading BOM; a ValueError names the first bad byte, its offset and line."""
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


def load_file(path: Path, cfg: DataConfig) -> Corpus:
    """The corpus of one user file, split by ``cfg``; the suffix picks the reader."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"data.source={str(path)!r} has suffix {path.suffix!r}, which is not supported; "
            f"use a {', '.join(_READERS)} file (the suffix picks the reader)"
        )
    text = decode_utf8(path.read_bytes(), path)
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
    return split_corpus(
        path.name,
        [texts[i] for i in keep],
        [labels[i] for i in keep],
        cfg,
        column=cfg.label_col,
        dropped=len(texts) - len(keep),
    )
