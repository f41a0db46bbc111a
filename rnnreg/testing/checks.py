"""Invariant checks to run on your own models and regularization code: every check, by its public name.

The checks live by topic: :mod:`~rnnreg.testing.model_checks` (whole models), :mod:`~rnnreg.testing.layer_checks`
(locked, embedding and weight dropout), :mod:`~rnnreg.testing.optim_checks` (clipping, weight decay, decay groups),
:mod:`~rnnreg.testing.loss_checks` (label smoothing), :mod:`~rnnreg.testing.step_checks` (the AMP training step);
what they share is in :mod:`~rnnreg.testing._base`. This module re-exports them all.

Model checks take any ``model(tokens, lengths) -> logits[B, C]`` and a :class:`rnnreg.batch.Batch`; a model with
another call convention (``input_ids``/``attention_mask``, a ``PackedSequence``, a ``(logits, state)`` output) is
checked through ``call=``, a function ``call(model, tokens, lengths) -> logits`` (see :mod:`rnnreg.testing.adapters`).
Function checks take the function under test (a clip, a loss, an optimizer factory, a training step). Each check
returns a :class:`CheckPassed` on success and raises :class:`InvariantViolation` (an ``AssertionError``, so pytest
reports it as a failure) whose message names the invariant, the numbers observed, the likely cause and the fix. A
check that torch cannot run on this machine (no low-precision kernel for an op) raises :class:`CheckCouldNotRun`
with torch's message: that is not a verdict on the code.

A check never leaves your model changed: the train/eval flag of every submodule, every parameter and buffer
value (a BatchNorm's running statistics included) and torch's global RNG state are restored. Checks draw their
own randomness from fixed internal seeds, so a result is reproducible.

Tolerances are ``torch.testing.assert_close``'s defaults for the logits' dtype unless a docstring says otherwise.
"""

from rnnreg.testing._base import (
    Call,
    CheckCouldNotRun,
    CheckNotApplicable,
    CheckPassed,
    InvariantViolation,
    Model,
    NotEnoughEvidence,
)
from rnnreg.testing.layer_checks import check_embedding_dropout, check_locked_dropout, check_weight_drop
from rnnreg.testing.loss_checks import check_label_smoothing
from rnnreg.testing.model_checks import (
    check_amp_parity,
    check_batch_independence,
    check_dropout_active,
    check_eval_deterministic,
    check_pad_content,
    check_padding_invariance,
)
from rnnreg.testing.optim_checks import check_decay_groups, check_gradient_clipping, check_weight_decay
from rnnreg.testing.step_checks import TrainStep, check_amp_clipping, check_amp_scaler

__all__ = [
    "Call",
    "CheckCouldNotRun",
    "CheckNotApplicable",
    "CheckPassed",
    "InvariantViolation",
    "Model",
    "NotEnoughEvidence",
    "TrainStep",
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
]
