"""rnnreg.testing.suite and `rnnreg check`: load_object, run_checks and pytest_checks on models of every style
(length-sorted batches, position tables declared first, EmbeddingBag), and usage errors said as usage errors
(exit 2), not as FAIL or SKIP rows.

What each check reports is in the file of its module (tests/test_check_model.py, ..._layers, ..._optim, ..._loss,
..._step); the reports' JSON and JUnit forms are in tests/test_check_reports.py.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_models import correct as ref
from reference_models import styles
from reference_models.cases import (
    CLASSES,
    NotebookLSTM,
    PackedBiLSTM,
    adamw,
    smoothing_over_wrong_classes,
    smoothing_reference,
)
from reference_models.steps import step_clips_scaled
from torch import Tensor, nn

from rnnreg.cli import main
from rnnreg.testing import adapters, pytest_checks
from rnnreg.testing.suite import MODEL_CHECKS, CheckResult, load_object, run_checks

# ---------------------------------------------------------------------------------------------------------------
# load_object: MODULE:ATTR and path/to/file.py:ATTR
# ---------------------------------------------------------------------------------------------------------------


def test_load_object_resolves_module_and_dotted_attribute() -> None:
    assert load_object("torch.nn.utils:clip_grad_norm_") is nn.utils.clip_grad_norm_
    assert load_object("torch.nn:Linear.forward") is nn.Linear.forward


def test_load_object_resolves_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "my_models.py"
    path.write_text("def build():\n    return 42\n")
    assert load_object(f"{path}:build")() == 42


def test_load_object_lets_a_file_import_its_siblings(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_rnnreg_test.py").write_text("SIZE = 7\n")
    (tmp_path / "models.py").write_text("from helpers_for_rnnreg_test import SIZE\n\ndef build():\n    return SIZE\n")
    assert load_object(f"{tmp_path / 'models.py'}:build")() == 7
    assert str(tmp_path) not in sys.path  # the folder was importable only while loading


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("torch.nn.utils.clip_grad_norm_", "expected MODULE:ATTR"),
        ("no_such_module_xyz:build", "could not import 'no_such_module_xyz'(.|\n)*ModuleNotFoundError"),
        ("torch.nn.utils:clip_grad_nrom_", "has no attribute 'clip_grad_nrom_'(.|\n)*clip_grad_norm_"),
        ("missing/dir/models.py:build", "no such file"),
    ],
)
def test_load_object_errors_say_what_is_wrong(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_object(spec)


def test_load_object_reports_errors_raised_while_importing(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("import not_installed_pkg_xyz\n")
    with pytest.raises(ValueError, match=r"ModuleNotFoundError.*not_installed_pkg_xyz"):
        load_object(f"{path}:build")
    assert not any(name.startswith("_rnnreg_user_broken") for name in sys.modules)


# ---------------------------------------------------------------------------------------------------------------
# run_checks: every check in one call
# ---------------------------------------------------------------------------------------------------------------


def by_name(rows: list[CheckResult]) -> dict[str, CheckResult]:
    return {row.name: row for row in rows}


def test_run_checks_passes_references_and_skips_what_is_missing() -> None:
    rows = by_name(
        run_checks(
            lambda: PackedBiLSTM(),
            loss_fn=smoothing_reference,
            clip_fn=nn.utils.clip_grad_norm_,
            optimizer_factory=adamw,
            decoupled=True,
            num_classes=CLASSES,
        )
    )
    assert {name: row.status for name, row in rows.items()} == {
        "eval_deterministic": "PASS",
        "dropout_active": "PASS",
        "padding_invariance": "PASS",
        "pad_content": "PASS",
        "batch_independence": "PASS",
        "amp_parity": "PASS",
        "gradient_clipping": "PASS",
        "label_smoothing": "PASS",
        "weight_decay": "PASS",
        "amp_clipping": "SKIP",
        "amp_scaler": "SKIP",
        "locked_dropout": "SKIP",
        "embedding_dropout": "SKIP",
        "weight_drop": "SKIP",
        "decay_groups": "SKIP",
    }
    assert "train_step" in rows["amp_clipping"].detail


def test_run_checks_reports_the_notebook_bugs() -> None:
    rows = by_name(
        run_checks(NotebookLSTM, loss_fn=smoothing_over_wrong_classes, train_step=step_clips_scaled, num_classes=2)
    )
    assert rows["dropout_active"].status == "FAIL" and "num_layers=1" in rows["dropout_active"].detail
    assert rows["padding_invariance"].status == "PASS"  # the notebook packs its sequences
    assert rows["label_smoothing"].status == "FAIL"
    assert rows["amp_clipping"].status == "FAIL"


def test_run_checks_turns_crashes_into_failures_with_the_exception_type() -> None:
    def broken() -> nn.Module:
        raise RuntimeError("no weights file")

    rows = run_checks(broken)
    assert all(r.status == "FAIL" and "RuntimeError: no weights file" in r.detail for r in rows[:5])
    # ... and names the line of the user's code that raised it
    line = r"raised at .*test_check_suite\.py:\d+ \(broken\): raise RuntimeError"
    assert all(re.search(line, r.detail) for r in rows[:5])


def test_run_checks_names_the_users_line_when_a_checked_function_crashes() -> None:
    def loss(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="nonsense")

    (row,) = run_checks(loss_fn=loss, only=["label_smoothing"])
    assert row.status == "FAIL" and row.detail.startswith("ValueError: nonsense is not a valid value for reduction")
    assert re.search(r"raised at .*test_check_suite\.py:\d+ \(loss\): return F\.cross_entropy", row.detail)


def test_run_checks_skips_model_checks_without_an_embedding() -> None:
    def no_embedding() -> Callable[[Tensor, Tensor], Tensor]:
        return lambda tokens, lengths: tokens.float()

    rows = run_checks(no_embedding)
    assert all(r.status == "SKIP" and "pass vocab_size" in r.detail for r in rows[:5])


def test_run_checks_needs_decoupled_with_an_optimizer_factory() -> None:
    with pytest.raises(ValueError, match="decoupled=True"):
        run_checks(optimizer_factory=adamw)


def test_run_checks_builds_the_model_without_moving_the_global_rng() -> None:
    rng = torch.get_rng_state()
    run_checks(functools.partial(PackedBiLSTM, 0.3))
    assert torch.equal(torch.get_rng_state(), rng)


def test_run_checks_on_a_user_file_finds_an_embedding_bag_padding_leak(tmp_path: Path) -> None:
    # What `rnnreg check path/to/models.py:build` does, end to end on a user file.
    path = tmp_path / "user_models.py"
    path.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Bag(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.embedding = nn.EmbeddingBag(20, 4)  # not an nn.Embedding: vocab must be passed
                    self.head = nn.Linear(4, 2)

                def forward(self, tokens, lengths):
                    return self.head(self.embedding(tokens))

            def build():
                return Bag()
            """
        )
    )
    rows = by_name(run_checks(load_object(f"{path}:build"), vocab_size=20))
    assert rows["eval_deterministic"].status == "PASS"
    assert rows["padding_invariance"].status == "FAIL"  # EmbeddingBag averages the pads in
    assert rows["dropout_active"].status == "SKIP"  # no dropout at all: not applicable, not a FAIL


def test_run_checks_passes_expect_decay_to_the_decay_groups_check() -> None:
    def build() -> nn.Module:
        return ref.TransformerClassifier()

    (expected,) = run_checks(
        build, groups_fn=styles.buggy_hf_groups_config_default, expect_decay=True, only=["decay_groups"]
    )
    assert expected.status == "FAIL" and "but expect_decay=True" in expected.detail
    (plain,) = run_checks(build, groups_fn=styles.buggy_hf_groups_config_default, only=["decay_groups"])
    assert plain.status == "PASS" and "none decays" in plain.detail


def test_the_whole_suite_passes_a_reference_setup() -> None:
    rows = run_checks(ref.TransformerClassifier, **ref.whole_suite_setup())
    assert {r.name: r.status for r in rows if r.status != "PASS"} == {}


def test_pad_content_is_the_only_thing_a_model_masking_by_pad_ids_trips_and_the_suite_warns() -> None:
    rows = {r.name: r for r in run_checks(ref.MaskFromPadIds, num_classes=ref.CLASSES)}
    assert rows["padding_invariance"].status == "PASS"
    assert rows["pad_content"].status == "WARN" and "tokens != 0" in rows["pad_content"].detail
    assert not [r.name for r in rows.values() if r.status == "FAIL"]


def test_checks_import_without_hypothesis() -> None:
    # `rnnreg check` must work without the test extras: only rnnreg.testing.strategies needs Hypothesis.
    code = "import sys, rnnreg.testing; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# run_checks and `rnnreg check` on models of other styles: sorted batches, position tables, EmbeddingBag
# ---------------------------------------------------------------------------------------------------------------


class SortedBatchesOnly(nn.Module):
    """Old torchtext style: the data pipeline sorts each batch by length, so packing uses enforce_sorted=True."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.3)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.emb(tokens)), lengths.cpu(), batch_first=True)
        _, h = self.rnn(packed)  # h: [layers, B, H]
        return self.fc(h[-1])


def model_rows(**kwargs: object) -> dict[str, tuple[str, str]]:
    return {r.name: (r.status, r.detail) for r in run_checks(only=MODEL_CHECKS, **kwargs)}  # type: ignore[arg-type]


def test_a_model_that_needs_sorted_batches_passes_every_model_check_through_sorted_by_length() -> None:
    rows = model_rows(model_factory=SortedBatchesOnly, call=adapters.sorted_by_length())
    assert {name: status for name, (status, _) in rows.items()} == dict.fromkeys(MODEL_CHECKS, "PASS")


def test_without_the_adapter_the_sorted_batch_error_names_it() -> None:
    rows = model_rows(model_factory=SortedBatchesOnly)
    assert {status for status, _ in rows.values()} == {"FAIL"}
    detail = rows["eval_deterministic"][1]
    assert "must be sorted" in detail and "call=rnnreg.testing.adapters.sorted_by_length()" in detail
    assert "rnnreg check --call MODULE:FN" in detail and "pass call= (rnnreg check --call" not in detail


class PositionsFirst(nn.Module):
    """Learned positions declared before the token table, neither with padding_idx (a style choice)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_emb = nn.Embedding(128, 8)
        self.tok_emb = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        steps = torch.arange(tokens.shape[1])  # [T]
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(steps)[None])  # [B, T, D]
        keep = (steps[None, :] < lengths[:, None]).unsqueeze(-1).float()  # [B, T, 1]
        return self.fc((x * keep).sum(1) / keep.sum(1))


class PaddedTokenTableSecond(nn.Module):
    """GPT-2's names: the position table wpe (a name like no other) first, then the token table wte, with PAD."""

    def __init__(self) -> None:
        super().__init__()
        self.wpe = nn.Embedding(128, 8)
        self.wte = nn.Embedding(20, 8, padding_idx=0)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        steps = torch.arange(tokens.shape[1])  # [T]
        x = self.drop(self.wte(tokens) + self.wpe(steps)[None])  # [B, T, D]
        keep = (steps[None, :] < lengths[:, None]).unsqueeze(-1).float()  # [B, T, 1]
        return self.fc((x * keep).sum(1) / keep.sum(1))


class BagOfWords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 8, mode="sum")
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        keep = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).float()  # [B, T]
        mean = self.bag(tokens, per_sample_weights=keep / lengths[:, None])  # [B, D], pads weigh 0
        return self.fc(self.drop(mean))


@pytest.mark.parametrize("factory", [PositionsFirst, PaddedTokenTableSecond, BagOfWords])
def test_token_ids_are_drawn_below_the_token_table_not_the_position_table(factory: type[nn.Module]) -> None:
    rows = model_rows(model_factory=factory)
    assert {name: status for name, (status, _) in rows.items()} == dict.fromkeys(MODEL_CHECKS, "PASS")


class SmallerTableUsed(nn.Module):
    """Declares a 100-row table first but looks tokens up in a 5-row one: ids drawn below 100 are out of range."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 4)
        self.small = nn.Embedding(5, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.fc(self.small(tokens).mean(1))


def test_an_index_error_says_which_vocabulary_size_was_used_and_how_to_give_another() -> None:
    inferred = model_rows(model_factory=SmallerTableUsed)["eval_deterministic"]
    assert inferred[0] == "FAIL" and "IndexError" in inferred[1]
    assert "token ids drawn lie below the vocabulary size 100 (inferred from the embedding 'emb')" in inferred[1]
    assert "pass vocab_size= (rnnreg check --vocab-size N)" in inferred[1] and "pass call=" not in inferred[1]
    given = model_rows(model_factory=SmallerTableUsed, vocab_size=50)["amp_parity"]
    assert "below the vocabulary size 50 (vocab_size given)" in given[1]
    assert model_rows(model_factory=SmallerTableUsed, vocab_size=5)["eval_deterministic"][0] == "PASS"


class OneHot(nn.Module):
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return nn.functional.one_hot(tokens, 7).float().sum(1)[:, :2]


def test_a_model_without_an_embedding_is_skipped_with_the_option_to_pass() -> None:
    rows = model_rows(model_factory=OneHot)
    assert {status for status, _ in rows.values()} == {"SKIP"}
    detail = rows["pad_content"][1]
    assert "no nn.Embedding or nn.EmbeddingBag); pass vocab_size= (rnnreg check --vocab-size N)" in detail


# ---------------------------------------------------------------------------------------------------------------
# pytest_checks: the helper users put in their own test files
# ---------------------------------------------------------------------------------------------------------------


def test_pytest_checks_only_keeps_the_cases_of_the_named_checks() -> None:
    helper = pytest_checks(PositionsFirst, only=["eval_deterministic", "label_smoothing"])
    (marker,) = [m for m in helper.pytestmark if m.name == "parametrize"]  # type: ignore[attr-defined]
    assert marker.args == ("check_name", ["eval_deterministic", "label_smoothing"])  # the order of run_checks
    helper("eval_deterministic")  # PASS: returns
    with pytest.raises(pytest.skip.Exception, match="SKIP: no loss_fn"):
        helper("label_smoothing")
    with pytest.raises(ValueError, match=r"unknown check names \['dropout'\]"):
        pytest_checks(PositionsFirst, only=["dropout"])
    with pytest.raises(TypeError, match=r"got the string 'pad_content'\); e.g. only=\['pad_content'\]"):
        pytest_checks(PositionsFirst, only="pad_content")


# The helper as users write it, restricted to two checks: pytest collects these two cases and no others.
test_only_two_cases = pytest_checks(
    SortedBatchesOnly, call=adapters.sorted_by_length(), only=["pad_content", "amp_parity"]
)


# ---------------------------------------------------------------------------------------------------------------
# `rnnreg check` on a user's file: the --call adapter and --input-size reach the checks
# ---------------------------------------------------------------------------------------------------------------

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.func import functional_call
    from rnnreg.testing import adapters

    class SortedOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.drop = nn.Dropout(0.3)
            self.rnn = nn.GRU(8, 8, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, tokens, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.emb(tokens)), lengths, batch_first=True)
            return self.fc(self.rnn(packed)[1][-1])

    call = adapters.sorted_by_length()

    class ProjectedWeightDrop(nn.Module):
        # a projection 10 -> 6 before a weight-dropped LSTM: the inputs are 10 wide, not the LSTM's 6
        def __init__(self, p=0.3):
            super().__init__()
            self.proj = nn.Linear(10, 6)
            self.rnn = nn.LSTM(6, 5, batch_first=True)
            self.p = p

        def forward(self, x):
            params = dict(self.rnn.named_parameters())
            params["weight_hh_l0"] = nn.functional.dropout(params["weight_hh_l0"], self.p, self.training)
            return functional_call(self.rnn, params, (self.proj(x),))
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(USER_MODULE)
    return path


def test_the_sorted_adapter_works_from_the_command_line(user_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", f"{user_module}:SortedOnly", "--call", f"{user_module}:call"])
    out = capsys.readouterr().out
    assert code == 0 and "6 passed, 0 failed" in out


def test_input_size_reaches_the_weight_drop_check(user_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--weight-drop", f"{user_module}:ProjectedWeightDrop", "--layer-p", "0.3", "--input-size", "10"]
    code = main(argv)
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if line[:1].islower()}
    assert code == 0 and rows["weight_drop"] == "PASS"


# ---------------------------------------------------------------------------------------------------------------
# Usage errors: exit 2 and one line, never a FAIL or SKIP row
# ---------------------------------------------------------------------------------------------------------------

LOCKED = "rnnreg.layers:LockedDropout"
CLIP = "torch.nn.utils:clip_grad_norm_"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to check: give MODULE:FACTORY"),
        (["--groups", "rnnreg.step:param_groups"], "--groups acts on the model of MODULE:FACTORY, and none was given"),
        (["--clip", CLIP, "--vocab-size", "10", "--call", "x:y"], "--call, --vocab-size act on the model of"),
        (["--clip", CLIP, "--num-classes", "3"], "--num-classes acts on the model of MODULE:FACTORY"),
        (["--locked-dropout", LOCKED, "--layer-p", "0"], "--layer-p must lie strictly between 0 and 1 (got 0.0)"),
        (["--locked-dropout", LOCKED, "--layer-p", "1.5"], "--layer-p must lie strictly between 0 and 1 (got 1.5)"),
        (["--clip", CLIP, "--layer-p", "0.3"], "--layer-p 0.3 is the p of --locked-dropout, --embedding-dropout or"),
        (["--embedding-dropout", LOCKED], "--embedding-dropout needs --layer-p, the dropout probability"),
        (["--locked-dropout", LOCKED, "--layer-p", "0.3", "--input-size", "8"], "--input-size 8 is the input width"),
        (["--weight-drop", LOCKED, "--layer-p", "0.3", "--input-size", "0"], "--input-size must be >= 1 (got 0)"),
        (["rnnreg.model:SequenceClassifier", "--vocab-size", "1"], "--vocab-size must be >= 2 (got 1)"),
        (["rnnreg.model:SequenceClassifier", "--num-classes", "0"], "--num-classes must be >= 1 (got 0)"),
    ],
)
def test_usage_errors_exit_2_with_one_line_naming_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("rnnreg: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to check: give model_factory and/or loss_fn"),
        ({"clip_fn": max, "vocab_size": 10}, "vocab_size acts on the model of model_factory, and none was given"),
        ({"optimizer_factory": max}, "optimizer_factory needs decoupled=True"),
        ({"locked_dropout": nn.Dropout}, "locked_dropout needs layer_p"),
        ({"locked_dropout": nn.Dropout, "layer_p": 0}, r"layer_p must lie strictly between 0 and 1 \(got 0\)"),
        ({"clip_fn": max, "layer_p": 0.3}, "layer_p 0.3 is the p of locked_dropout, embedding_dropout or weight_drop"),
        ({"locked_dropout": nn.Dropout, "layer_p": 0.3, "input_size": 8}, "input_size 8 is the input width"),
        ({"weight_drop": nn.LSTM, "layer_p": 0.3, "input_size": -2}, r"input_size must be >= 1 \(got -2\)"),
        ({"model_factory": nn.Linear, "vocab_size": 1}, r"vocab_size must be >= 2 \(got 1\)"),
        ({"model_factory": nn.Linear, "num_classes": 0}, r"num_classes must be >= 1 \(got 0\)"),
    ],
)
def test_run_checks_refuses_arguments_that_cannot_go_together(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_checks(**kwargs)


def test_expect_decay_fails_groups_in_which_nothing_decays_and_needs_groups(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", "reference_models.correct:TransformerClassifier"]
    groups = ["--groups", "reference_models.styles:buggy_hf_groups_config_default"]
    assert main([*argv, *groups]) == 0  # nothing decays, and nobody said it should: accepted, and said
    assert "none decays" in capsys.readouterr().out
    assert main([*argv, *groups, "--expect-decay"]) == 1
    out = capsys.readouterr().out
    assert "decay_groups" in out and "but expect_decay=True" in out
    assert main(["check", "--clip", CLIP, "--expect-decay"]) == 2
    err = capsys.readouterr().err
    assert "--expect-decay says what the decay groups of --groups should do; give --groups" in err
