"""Config: frozen, validated, overrides type-checked with errors that name the key, the value and the fix."""

from __future__ import annotations

import dataclasses

import pytest

from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig, apply_overrides, valid_keys


def test_configs_are_frozen() -> None:
    cfg = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.embed_p = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("name", ModelConfig.dropout_fields())
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_dropout_probability_outside_unit_interval_is_rejected(name: str, bad: float) -> None:
    kwargs = {name: bad, "num_layers": 2}
    with pytest.raises(ValueError, match=rf"model\.{name} must be a probability in \[0, 1\) \(got {bad}\)"):
        ModelConfig(**kwargs)


def test_every_dropout_field_is_named_p() -> None:
    assert set(ModelConfig.dropout_fields()) == {
        "embed_p",
        "input_p",
        "hidden_p",
        "weight_p",
        "output_p",
        "recurrent_p",
    }


def test_hidden_dropout_that_cannot_act_is_rejected_for_the_awd_model() -> None:
    with pytest.raises(ValueError, match=r"hidden_p=0.3 does nothing with model.num_layers=1"):
        ModelConfig(hidden_p=0.3, num_layers=1)
    assert ModelConfig(hidden_p=0.3, num_layers=2).hidden_p == 0.3


def test_negative_clip_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"train\.max_norm must be > 0 \(got -1.0\)"):
        TrainConfig(max_norm=-1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("optimizer", "adagrad"), ("clip", "both"), ("amp", "fp8"), ("device", "tpu")],
)
def test_unknown_choice_lists_the_valid_ones(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"train\.{field} must be one of .* \(got '{value}'\)"):
        TrainConfig(**{field: value})


def test_wrong_type_in_code_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"model\.embed_dim must be int \(got '8' that is a str\)"):
        ModelConfig(embed_dim="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model\.bidirectional must be bool"):
        ModelConfig(bidirectional=1)  # type: ignore[arg-type]


def test_fractions_must_leave_training_data() -> None:
    with pytest.raises(ValueError, match="must leave training data"):
        DataConfig(val_frac=0.5, test_frac=0.5)


def test_override_parses_each_type() -> None:
    exp = apply_overrides(
        Experiment(),
        ["model.embed_p=0.25", "train.epochs=3", "model.bidirectional=false", "data.source=toy", "train.amp=bf16"],
    )
    assert exp.model.embed_p == 0.25 and exp.train.epochs == 3 and exp.model.bidirectional is False
    assert exp.data.source == "toy" and exp.train.amp == "bf16"
    assert Experiment() == apply_overrides(Experiment(), [])  # nothing given, nothing changed


def test_unknown_override_key_lists_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"model\.dropout: unknown key; valid keys: model\.arch, .*model\.embed_p"):
        apply_overrides(Experiment(), ["model.dropout=0.3"])
    with pytest.raises(ValueError, match=r"unknown section 'optim'"):
        apply_overrides(Experiment(), ["optim.lr=1"])
    with pytest.raises(ValueError, match=r"must look like section\.field=value"):
        apply_overrides(Experiment(), ["lr=1"])


def test_override_with_a_value_of_the_wrong_type_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"train\.epochs=ten: expected int"):
        apply_overrides(Experiment(), ["train.epochs=ten"])
    with pytest.raises(ValueError, match=r"model\.bidirectional=maybe: expected true or false"):
        apply_overrides(Experiment(), ["model.bidirectional=maybe"])


def test_override_values_are_validated_like_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"model\.embed_p must be a probability"):
        apply_overrides(Experiment(), ["model.embed_p=1.5"])


@pytest.mark.parametrize("key", valid_keys())  # every key, not a sample
def test_every_key_accepts_its_own_default_back(key: str) -> None:
    section, name = key.split(".")
    default = getattr(getattr(Experiment(), section), name)
    text = str(default).lower() if isinstance(default, bool) else str(default)
    assert apply_overrides(Experiment(), [f"{key}={text}"]) == Experiment()


# A valid value other than the default for every key, as typed on the command line and as parsed by hand. Mixed
# case in the strings: a parser that lowercases (or otherwise rewrites) values breaks paths and column names.
NON_DEFAULT: dict[str, tuple[str, object]] = {
    "data.source": ("Reviews/My_Data.CSV", "Reviews/My_Data.CSV"),
    "data.text_col": ("Review Text", "Review Text"),
    "data.label_col": ("Sentiment", "Sentiment"),
    "data.val_frac": ("0.2", 0.2),
    "data.test_frac": ("0.15", 0.15),
    "data.split_seed": ("7", 7),
    "data.min_freq": ("2", 2),
    "data.max_vocab": ("5000", 5000),
    "data.max_len": ("64", 64),
    "model.arch": ("notebook", "notebook"),
    "model.rnn": ("gru", "gru"),
    "model.embed_dim": ("32", 32),
    "model.hidden_dim": ("64", 64),
    "model.num_layers": ("3", 3),
    "model.bidirectional": ("false", False),
    "model.pooling": ("mean", "mean"),
    "model.embed_p": ("0.25", 0.25),
    "model.input_p": ("0.1", 0.1),
    "model.hidden_p": ("0.2", 0.2),
    "model.weight_p": ("0.5", 0.5),
    "model.output_p": ("0.45", 0.45),
    "model.recurrent_p": ("0.15", 0.15),
    "train.epochs": ("3", 3),
    "train.batch_size": ("16", 16),
    "train.eval_batch_size": ("128", 128),
    "train.lr": ("0.01", 0.01),
    "train.optimizer": ("sgd", "sgd"),
    "train.weight_decay": ("0.05", 0.05),
    "train.decay_embedding": ("false", False),
    "train.decay_bias_and_norm": ("true", True),
    "train.momentum": ("0.5", 0.5),
    "train.clip": ("value", "value"),
    "train.max_norm": ("2.5", 2.5),
    "train.max_value": ("0.25", 0.25),
    "train.label_smoothing": ("0.05", 0.05),
    "train.amp": ("bf16", "bf16"),
    "train.device": ("auto", "auto"),
    "train.patience": ("5", 5),
    "train.bucket": ("false", False),
    "train.max_skipped_steps": ("7", 7),
}
CONTEXT = {"model.hidden_p": {"num_layers": 2}}  # hidden_p acts between layers: one layer refuses it


@pytest.mark.parametrize("key", valid_keys())
def test_every_key_sets_a_non_default_value_on_its_field_and_nothing_else(key: str) -> None:
    assert key in NON_DEFAULT, f"add a non-default value for {key} to NON_DEFAULT"
    section, name = key.split(".")
    text, value = NON_DEFAULT[key]
    default = Experiment()
    assert getattr(getattr(default, section), name) != value
    context = CONTEXT.get(key, {})
    given_text = [f"{section}.{k}={v}" for k, v in context.items()]
    got = apply_overrides(default, [*given_text, f"{key}={text}"])
    changed = dataclasses.replace(getattr(default, section), **context, **{name: value})
    assert got == dataclasses.replace(default, **{section: changed})
    assert type(getattr(getattr(got, section), name)) is type(value)


def test_experiment_round_trips_through_a_dict() -> None:
    exp = apply_overrides(Experiment(), ["model.rnn=gru", "train.lr=0.01", "data.min_freq=2"])
    assert Experiment.from_dict(exp.to_dict()) == exp
    with pytest.raises(ValueError, match="unknown config section"):
        Experiment.from_dict({"optim": {}})
