"""Run identity: a run's key changes with everything that changes its result, and with nothing else.

A stored result is served to any task with the same key, so a key that misses a setting serves a wrong result (a
variant with another ``data.max_len`` given the base's run), and a key that holds a name reruns what is done. Each
field of the resolved configuration is flipped one at a time, and so are the data's texts, labels and order.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from rnnreg.ablation import LINEAR, RunTask, data_fingerprint
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus

# num_layers=2 so that every model field, hidden_p included, can take another valid value.
BASE = Experiment(model=ModelConfig(num_layers=2, recurrent_p=0.05), train=TrainConfig(epochs=4))
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _other_value(section: str, name: str, value: object) -> object:
    """Another valid value for ``section.name``: flipped, nudged, or the next of its allowed choices."""
    current = getattr(BASE, section)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.05 if value + 0.05 < 0.5 else value / 2
    if isinstance(value, str):
        try:
            dataclasses.replace(current, **{name: value + "-other"})
            return value + "-other"  # free text: a path, a column name
        except ValueError as e:  # one of a few choices; the error names them: "must be one of a, b, c (got ...)"
            match = re.search(r"must be one of (.+?) \(got", str(e))
            assert match, f"{section}.{name}: no other value found in {e}"
            return next(c for c in match.group(1).split(", ") if c != value)
    raise AssertionError(f"{section}.{name} = {value!r}: add a rule for a {type(value).__name__} field")


def _flips() -> list[tuple[str, Experiment]]:
    """(section.field, BASE with that one field changed) for every field of every section."""
    out = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            value = getattr(getattr(BASE, section), f.name)
            changed = dataclasses.replace(getattr(BASE, section), **{f.name: _other_value(section, f.name, value)})
            out.append((f"{section}.{f.name}", dataclasses.replace(BASE, **{section: changed})))
    return out


FLIPS = _flips()
FP = "f" * 64


def _task(experiment: Experiment = BASE, **changes: Any) -> RunTask:
    fields = {"variant": "a", "kind": "rnn", "experiment": experiment, "seed": 0, "fixed_split": False}
    return RunTask(**{**fields, "fingerprint": FP, **changes})


def test_every_field_of_the_resolved_config_is_flipped_by_these_tests() -> None:
    flipped = {key for key, _ in FLIPS}
    assert flipped == {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    for key, experiment in FLIPS:
        section, name = key.split(".")
        assert getattr(getattr(experiment, section), name) != getattr(getattr(BASE, section), name), key


@pytest.mark.parametrize(("key", "experiment"), [f for f in FLIPS if f[0] != "data.source"], ids=lambda x: x)
def test_an_rnn_runs_key_changes_with_every_config_field_but_the_data_path(key: str, experiment: Experiment) -> None:
    assert _task(experiment).key != _task().key, f"{key} changes the result but not the run key"


def test_an_rnn_runs_key_ignores_the_variants_name_and_the_datas_path() -> None:
    moved = dataclasses.replace(BASE, data=dataclasses.replace(BASE.data, source="elsewhere/reviews.csv"))
    assert _task(moved, variant="renamed").key == _task().key
    rebuilt = Experiment.from_dict(BASE.to_dict())  # equal settings built anew: the same key
    assert _task(rebuilt).key == _task().key


def test_a_runs_key_changes_with_the_seed_the_split_mode_the_kind_and_the_data() -> None:
    keys = {
        _task().key,
        _task(seed=1).key,
        _task(fixed_split=True).key,
        _task(kind="linear", variant=LINEAR).key,
        _task(fingerprint="0" * 64).key,
    }
    assert len(keys) == 5


def test_the_linear_references_key_follows_the_data_settings_not_the_rnns() -> None:
    linear = _task(kind="linear", variant=LINEAR)
    for key, experiment in FLIPS:
        flipped = _task(experiment, kind="linear", variant=LINEAR).key
        if key.startswith(("model.", "train.")) or key == "data.source":
            assert flipped == linear.key, f"{key} does not change the linear reference, but changed its key"
    split_seed = dict(FLIPS)["data.split_seed"]
    assert _task(split_seed, kind="linear", variant=LINEAR).key != linear.key  # it decides the split
    assert _task(seed=3, kind="linear", variant=LINEAR).key != linear.key
    assert _task(fixed_split=True, kind="linear", variant=LINEAR).key != linear.key


# ---------------------------------------------------------------------------------------------------------------
# The data fingerprint


def _corpus() -> Corpus:
    rows = [(f"text number {i} is {'good' if i % 2 else 'bad'}", i % 2) for i in range(12)]
    return Corpus("reviews", rows[:6], rows[6:9], rows[9:], ["neg", "pos"])


def _relabel(split: list[tuple[str, int]], i: int) -> list[tuple[str, int]]:
    return [(t, 1 - y) if j == i else (t, y) for j, (t, y) in enumerate(split)]


def test_the_fingerprint_changes_with_any_text_label_order_split_or_label_name() -> None:
    c = _corpus()
    changed = {
        "a text": dataclasses.replace(c, val=[("another text", c.val[0][1]), *c.val[1:]]),
        "a training label": dataclasses.replace(c, train=_relabel(c.train, 2)),
        "a validation label": dataclasses.replace(c, val=_relabel(c.val, 0)),
        "a test label": dataclasses.replace(c, test=_relabel(c.test, 1)),
        "the label names": dataclasses.replace(c, label_names=["negative", "positive"]),
        "the order of training texts": dataclasses.replace(c, train=[c.train[1], c.train[0], *c.train[2:]]),
        "a text moved to validation": dataclasses.replace(c, train=c.train[:-1], val=[c.train[-1], *c.val]),
        "a test text dropped": dataclasses.replace(c, test=c.test[1:]),
    }
    base = data_fingerprint(c)
    prints = {what: data_fingerprint(corpus) for what, corpus in changed.items()}
    for what, fp in prints.items():
        assert fp != base, f"the fingerprint ignores {what}"
    assert len(set(prints.values())) == len(prints)


def test_the_fingerprint_is_the_content_alone() -> None:
    c = _corpus()
    copy = Corpus("other name", list(c.train), list(c.val), list(c.test), list(c.label_names), dropped=5)
    assert data_fingerprint(copy) == data_fingerprint(c)
    assert re.fullmatch(r"[0-9a-f]{64}", data_fingerprint(c))


def test_relabelled_data_gives_runs_new_keys() -> None:
    c = _corpus()
    relabelled = dataclasses.replace(c, train=_relabel(c.train, 0))
    old = _task(fingerprint=data_fingerprint(c))
    assert _task(fingerprint=data_fingerprint(relabelled)).key != old.key
    assert _task(fingerprint=data_fingerprint(dataclasses.replace(c, name="renamed"))).key == old.key
