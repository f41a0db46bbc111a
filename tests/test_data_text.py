"""rnnreg.data.text: the tokenizer, Vocab (PAD = 0, UNK = 1, counts and ties, checks, JSON), label ids, encode."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnreg.batch import PAD_ID
from rnnreg.data.text import UNK_ID, Vocab, encode, encode_labels, tokenize

# ---------------------------------------------------------------------------------------------------------------
# tokenize

plain_word = st.from_regex(r"[A-Za-z0-9]+('[a-z0-9]+)?", fullmatch=True)


@given(st.lists(plain_word, min_size=0, max_size=12), st.lists(st.sampled_from([" ", "  ", "\t", "\n"]), min_size=13))
def test_tokenize_equals_notebook_split_on_plain_words(words: list[str], gaps: list[str]) -> None:
    text = "".join(gap + word for gap, word in zip(gaps, words, strict=False))
    assert tokenize(text) == text.lower().split()


@given(st.text(max_size=60))
def test_tokenize_loses_no_character_but_whitespace(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == "".join(text.lower().replace("\u2019", "'").split())
    for token in tokens:  # a word of letters/digits/inner apostrophes, or one other character
        assert len(token) == 1 or re.fullmatch(r"[^\W_]+('[^\W_]+)*", token), token


def test_tokenize_splits_punctuation_and_keeps_inner_apostrophes() -> None:
    assert tokenize("Don't STOP, it's 'great'!") == ["don't", "stop", ",", "it's", "'", "great", "'", "!"]
    assert tokenize("Münch’s film...") == ["münch's", "film", ".", ".", "."]
    assert tokenize("") == []


# ---------------------------------------------------------------------------------------------------------------
# Vocab


def test_vocab_reserves_pad_zero_and_unk_one() -> None:
    vocab = Vocab.build(["a b"])
    assert (PAD_ID, UNK_ID) == (0, 1)
    assert vocab.itos[PAD_ID] == "<pad>" and vocab.itos[UNK_ID] == "<unk>"
    assert vocab.encode("b zzz a") == [vocab.stoi["b"], UNK_ID, vocab.stoi["a"]]


def test_vocab_orders_by_count_then_first_appearance() -> None:
    # counts: c 3, d 2, b 2 (d seen first), e 1, a 1 (e seen first); alphabetical ties would give c b d a e
    vocab = Vocab.build(["e d c", "c b d", "c b a"])
    assert vocab.itos == ["<pad>", "<unk>", "c", "d", "b", "e", "a"]


def test_vocab_min_freq_and_max_size_count_specials() -> None:
    texts = ["a b c", "c d b", "c d e"]
    assert Vocab.build(texts, min_freq=2).itos[2:] == ["c", "b", "d"]
    assert len(Vocab.build(texts, max_size=4)) == 4  # PAD, UNK, c, b
    assert Vocab.build(texts, max_size=4).itos[2:] == ["c", "b"]


@pytest.mark.parametrize(
    ("kwargs", "field", "exc"),
    [
        ({"min_freq": 0}, "min_freq", ValueError),
        ({"min_freq": 1.5}, "min_freq", TypeError),
        ({"min_freq": True}, "min_freq", TypeError),
        ({"max_size": 2}, "max_size", ValueError),
        ({"max_size": "10"}, "max_size", TypeError),
    ],
)
def test_vocab_build_rejects_bad_sizes(kwargs: dict[str, object], field: str, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=rf"{field}.*{re.escape(repr(next(iter(kwargs.values()))))}"):
        Vocab.build(["a b"], **kwargs)  # type: ignore[arg-type]


def test_vocab_build_rejects_a_single_string() -> None:
    with pytest.raises(TypeError, match="not one str"):
        Vocab.build("a b c")


def test_vocab_round_trips_through_json() -> None:
    vocab = Vocab.build(["the cat sat", "the dog"])
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.stoi == vocab.stoi


@pytest.mark.parametrize(
    ("itos", "match"),
    [(["a", "<unk>"], "must start with"), (["<pad>", "<unk>", "a", "a"], "'a' twice"), (["<pad>", "<unk>", 3], "str")],
)
def test_vocab_rejects_bad_itos(itos: list[object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        Vocab(itos)  # type: ignore[arg-type]


def test_vocab_from_dict_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="itos"):
        Vocab.from_dict({"words": ["<pad>", "<unk>"]})


# ---------------------------------------------------------------------------------------------------------------
# labels


def test_string_labels_map_in_sorted_order() -> None:
    ids, names = encode_labels(["pos", "neg", "neutral", "neg"])
    assert names == ["neg", "neutral", "pos"]
    assert ids == [2, 0, 1, 0]


def test_integer_labels_keep_their_value() -> None:
    ids, names = encode_labels([2, 0, 1, 1])
    assert ids == [2, 0, 1, 1] and names == ["0", "1", "2"]


def test_single_class_error_names_column_value_and_fix() -> None:
    with pytest.raises(ValueError, match=r"'sentiment'.*single class \('pos'\).*data\.label_col"):
        encode_labels(["pos", "pos"], "sentiment")


def test_mixed_label_types_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"mixes integers and strings \(e\.g\. 1 and 'a'\)"):
        encode_labels([1, "a"])
    with pytest.raises(TypeError, match=r"row 1 .*1\.5"):
        encode_labels([1, 1.5])


# ---------------------------------------------------------------------------------------------------------------
# encode


def test_encode_truncates_to_max_len_and_keeps_labels() -> None:
    vocab = Vocab.build(["a b c d e"])
    encoded = encode([("a b c d e", 1), ("e zz", 0)], vocab, max_len=3)
    assert encoded == [([vocab.stoi[w] for w in "abc"], 1), ([vocab.stoi["e"], UNK_ID], 0)]
    with pytest.raises(ValueError, match=r"data\.max_len must be >= 1 \(got 0\)"):
        encode([("a", 0)], vocab, max_len=0)
