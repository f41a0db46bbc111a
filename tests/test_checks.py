"""rnnreg.testing.suite and the checks as a whole: load_object, run_checks, pytest_checks, and every failure
reported under the invariant its pass reports.

The models, layers and functions these tests share with the per-topic files live in tests/reference_models/cases.py.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference_models.cases import (
    CLASSES,
    MODEL_CHECKS,
    DividesByBatchMaxLength,
    DropoutInEval,
    FailsOnOneRow,
    FailsOnWiderBatch,
    FailsWhenReversed,
    LargeOffsetLogits,
    LockedDropout,
    MaskedDropout,
    NaNRows,
    NotebookLSTM,
    PackedBiLSTM,
    SortsWithoutRestoring,
    UnpackedBiLSTM,
    adam,
    adamw,
    clip_always_rescales,
    clip_crashes_on_missing_grad,
    clip_creates_missing_grads,
    clip_norm_then_value,
    clip_per_tensor,
    clip_removes_grads,
    clip_returns_nothing,
    fresh,
    make_batch,
    per_sequence,
    sgd_momentum,
    smoothing_over_wrong_classes,
    smoothing_per_row,
    smoothing_reference,
    smoothing_summed,
    sorted_batch,
    step_clips_scaled,
    step_right,
)
from torch import Tensor, nn

from rnnreg.batch import Batch
from rnnreg.testing import checks
from rnnreg.testing.checks import InvariantViolation
from rnnreg.testing.suite import CheckResult, load_object, run_checks


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Runs after conftest's thread setting. These models are tiny: intra-op threads only add synchronization, and
    # on a busy 2-core machine this file took 79 s with 2 threads against 7 s with 1.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
    assert all(re.search(r"raised at .*test_checks\.py:\d+ \(broken\): raise RuntimeError", r.detail) for r in rows[:5])


def test_run_checks_names_the_users_line_when_a_checked_function_crashes() -> None:
    def loss(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=eps, reduction="nonsense")

    (row,) = run_checks(loss_fn=loss, only=["label_smoothing"])
    assert row.status == "FAIL" and row.detail.startswith("ValueError: nonsense is not a valid value for reduction")
    assert re.search(r"raised at .*test_checks\.py:\d+ \(loss\): return F\.cross_entropy", row.detail)


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


def test_checks_import_without_hypothesis() -> None:
    # `rnnreg check` must work without the test extras: only rnnreg.testing.strategies needs Hypothesis.
    code = "import sys, rnnreg.testing; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class NaNOnOneRow(PackedBiLSTM):
    """NaN logits for a batch of one row only (a variance over the batch divides by B - 1 = 0)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out * float("nan") if len(tokens) == 1 else out


class NaNUnderAutocast(PackedBiLSTM):
    """NaN logits under autocast only (an overflow in low precision)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out


def _model(check: Callable[..., Any], cls: Callable[[], nn.Module], batch: Callable[[], Batch] = make_batch) -> Any:
    return lambda: check(fresh(cls), batch())


# (passing call, failing call) per check and failure path: the failure must name the invariant the pass reports.
NAMED_FAILURES: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "eval-nondeterministic": (
        _model(checks.check_eval_deterministic, PackedBiLSTM),
        _model(checks.check_eval_deterministic, DropoutInEval),
    ),
    "dropout-inert": (
        _model(checks.check_dropout_active, PackedBiLSTM),
        _model(checks.check_dropout_active, NotebookLSTM),
    ),
    "padding-appended": (
        _model(checks.check_padding_invariance, PackedBiLSTM),
        _model(checks.check_padding_invariance, UnpackedBiLSTM),
    ),
    "batch-alone": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, DividesByBatchMaxLength),
    ),
    "batch-permuted": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, SortsWithoutRestoring, sorted_batch),
    ),
    "batch-one-row-raises": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, FailsOnOneRow),
    ),
    "batch-one-row-nan": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, NaNOnOneRow),
    ),
    "batch-reversed-raises": (
        _model(checks.check_batch_independence, PackedBiLSTM),
        _model(checks.check_batch_independence, FailsWhenReversed),
    ),
    "padding-wider-raises": (
        _model(checks.check_padding_invariance, PackedBiLSTM),
        _model(checks.check_padding_invariance, FailsOnWiderBatch),
    ),
    "amp-bound": (_model(checks.check_amp_parity, PackedBiLSTM), _model(checks.check_amp_parity, LargeOffsetLogits)),
    "amp-nan": (_model(checks.check_amp_parity, PackedBiLSTM), _model(checks.check_amp_parity, NaNUnderAutocast)),
    **{f"nan-logits-{check.__name__}": (_model(check, PackedBiLSTM), _model(check, NaNRows)) for check in MODEL_CHECKS},
    **{
        f"locked-{name}": (
            lambda: checks.check_locked_dropout(LockedDropout(0.3), p=0.3),
            functools.partial(checks.check_locked_dropout, layer, p=0.3),
        )
        for name, layer in [
            ("eval", MaskedDropout(0.3, per_sequence, in_eval=True)),
            ("scale", MaskedDropout(0.3, per_sequence, inverted=False)),
            ("time", nn.Dropout(0.3)),
            ("shared", MaskedDropout(0.3, lambda B, T, D: (1, 1, D))),
            ("features", MaskedDropout(0.3, lambda B, T, D: (B, 1, 1))),
            ("rate", MaskedDropout(0.3, per_sequence, keep_prob=0.3)),
        ]
    },
    **{
        f"clip-{clip_fn.__name__}": (
            lambda: checks.check_gradient_clipping(nn.utils.clip_grad_norm_),
            functools.partial(checks.check_gradient_clipping, clip_fn),
        )
        for clip_fn in [
            clip_per_tensor,
            clip_returns_nothing,
            clip_always_rescales,
            clip_crashes_on_missing_grad,
            clip_removes_grads,
            clip_norm_then_value,
            clip_creates_missing_grads,
        ]
    },
    **{
        f"smoothing-{loss_fn.__name__}": (
            lambda: checks.check_label_smoothing(smoothing_reference),
            functools.partial(checks.check_label_smoothing, loss_fn),
        )
        for loss_fn in [smoothing_summed, smoothing_per_row]
    },
    "decoupled-zero-grad": (
        lambda: checks.check_weight_decay(adamw, decoupled=True),
        lambda: checks.check_weight_decay(adam, decoupled=True),
    ),
    "decoupled-steps": (
        lambda: checks.check_weight_decay(adamw, decoupled=True),
        lambda: checks.check_weight_decay(sgd_momentum, decoupled=True),
    ),
    "coupled": (
        lambda: checks.check_weight_decay(adam, decoupled=False),
        lambda: checks.check_weight_decay(adamw, decoupled=False),
    ),
    "amp-clipping": (
        lambda: checks.check_amp_clipping(step_right),
        lambda: checks.check_amp_clipping(step_clips_scaled),
    ),
}


@pytest.mark.parametrize(("passes", "fails"), NAMED_FAILURES.values(), ids=NAMED_FAILURES.keys())
def test_a_failure_is_reported_under_the_invariant_a_pass_reports(
    passes: Callable[[], Any], fails: Callable[[], Any]
) -> None:
    # `rnnreg check` lines up passes and failures by this name, and the message format puts it first.
    passed = passes()
    assert isinstance(passed.invariant, str) and passed.invariant
    assert isinstance(passed.detail, str) and passed.detail
    with pytest.raises(InvariantViolation) as err:
        fails()
    assert str(err.value).startswith(passed.invariant)
