"""Invariant toolkit for your own models: check functions, a suite runner, and (with Hypothesis) strategies.

``from rnnreg.testing import checks`` gives every check function; they live by topic in ``model_checks``,
``layer_checks``, ``optim_checks``, ``loss_checks`` and ``step_checks`` (``adapters`` holds the call conventions).
``rnnreg.testing.strategies`` needs Hypothesis (installed with ``rnnreg[test]``) and is imported only when you import
it, so the checks work without it.
"""

from rnnreg.testing.checks import (
    CheckCouldNotRun,
    CheckNotApplicable,
    CheckPassed,
    InvariantViolation,
    NotEnoughEvidence,
    check_amp_clipping,
    check_amp_parity,
    check_amp_scaler,
    check_batch_independence,
    check_decay_groups,
    check_dropout_active,
    check_embedding_dropout,
    check_eval_deterministic,
    check_gradient_clipping,
    check_label_smoothing,
    check_locked_dropout,
    check_pad_content,
    check_padding_invariance,
    check_weight_decay,
    check_weight_drop,
)
from rnnreg.testing.suite import CheckResult, CheckWarning, load_object, pytest_checks, run_checks

__all__ = [
    "CheckCouldNotRun",
    "CheckNotApplicable",
    "CheckPassed",
    "CheckResult",
    "CheckWarning",
    "InvariantViolation",
    "NotEnoughEvidence",
    "check_amp_clipping",
    "check_amp_parity",
    "check_amp_scaler",
    "check_batch_independence",
    "check_decay_groups",
    "check_dropout_active",
    "check_embedding_dropout",
    "check_eval_deterministic",
    "check_gradient_clipping",
    "check_label_smoothing",
    "check_locked_dropout",
    "check_pad_content",
    "check_padding_invariance",
    "check_weight_decay",
    "check_weight_drop",
    "load_object",
    "pytest_checks",
    "run_checks",
]
