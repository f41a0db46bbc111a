"""Invariant toolkit for your own models: check functions, a suite runner, and (with Hypothesis) strategies.

``from rnnreg.testing import checks`` gives the check functions; ``rnnreg.testing.strategies`` needs Hypothesis
(installed with ``rnnreg[test]``) and is imported only when you import it, so the checks work without it.
"""

from rnnreg.testing.checks import (
    CheckPassed,
    InvariantViolation,
    check_amp_clipping,
    check_amp_parity,
    check_batch_independence,
    check_dropout_active,
    check_eval_deterministic,
    check_gradient_clipping,
    check_label_smoothing,
    check_locked_dropout,
    check_padding_invariance,
    check_weight_decay,
)
from rnnreg.testing.suite import CheckResult, load_object, run_checks

__all__ = [
    "CheckPassed",
    "CheckResult",
    "InvariantViolation",
    "check_amp_clipping",
    "check_amp_parity",
    "check_batch_independence",
    "check_dropout_active",
    "check_eval_deterministic",
    "check_gradient_clipping",
    "check_label_smoothing",
    "check_locked_dropout",
    "check_padding_invariance",
    "check_weight_decay",
    "load_object",
    "run_checks",
]
