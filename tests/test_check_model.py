"""rnnreg.testing.model_checks: eval determinism, dropout acting in train mode, padding invariance, pad content,
batch independence and bfloat16/float16 autocast parity, on whole models.

Correct models in other styles (tests/reference_models/correct.py, through adapters where their call convention
differs) pass every check; each planted bug (tests/reference_models/cases.py, or beside its test) fails the check
it breaks, naming the rows, the variant and the likely cause. An exception under autocast is the model's (a FAIL
naming the model's own line, as ``masked_fill(mask, -1e9)`` under float16) unless torch lacks the kernel on this
machine, which stays "could not run".
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import CAUSE, corpus_batch, fresh
from hypothesis import given
from reference_models import correct as ref
from reference_models import styles
from reference_models.cases import (
    CLASSES,
    MODEL_CHECKS,
    VOCAB,
    DividesByBatchMaxLength,
    DropoutInEval,
    FailsOnOneRow,
    FailsOnWiderBatch,
    FailsWhenReversed,
    LargeOffsetLogits,
    NaNRows,
    NotebookLSTM,
    PackedBiLSTM,
    SortsWithoutRestoring,
    UnpackedBiLSTM,
    make_batch,
    pack,
    sorted_batch,
)
from torch import Tensor, nn

from rnnreg.batch import PAD_ID, Batch, collate
from rnnreg.testing import adapters, checks, model_checks
from rnnreg.testing import strategies as rst
from rnnreg.testing.checks import CheckCouldNotRun, InvariantViolation

# ---------------------------------------------------------------------------------------------------------------
# Correct models pass: rnnreg's reference and models in other styles (no false alarms)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
def test_packed_bilstm_passes_every_model_check(check: Callable[[Any, Batch], Any]) -> None:
    info = check(fresh(PackedBiLSTM), make_batch())
    assert isinstance(info, checks.CheckPassed) and info.detail


HF_CALL = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)


PACKED_CALL = adapters.adapter(inputs=adapters.packed_tokens)


REFERENCE_MODELS: dict[str, tuple[Callable[[], nn.Module], Any]] = {
    "packed-bigru": (ref.PackedGRU, None),
    "masked-mean-gru": (ref.MaskedMeanGRU, None),
    "last-state-lstm": (ref.LastStateLSTM, None),
    "transformer-key-padding": (ref.TransformerClassifier, None),
    "hf-style-adapter": (ref.HFStyleClassifier, HF_CALL),
    "packed-input-adapter": (ref.PackedInputClassifier, PACKED_CALL),
    "mask-from-pad-ids": (ref.MaskFromPadIds, None),
}


MODEL_CHECKS_IN_FP32 = [
    checks.check_eval_deterministic,
    checks.check_dropout_active,
    checks.check_padding_invariance,
    checks.check_batch_independence,
]


@pytest.mark.parametrize("check", MODEL_CHECKS_IN_FP32, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("build", "call"), REFERENCE_MODELS.values(), ids=REFERENCE_MODELS.keys())
def test_reference_models_pass_every_model_check(
    build: Callable[[], nn.Module], call: Any, check: Callable[..., Any]
) -> None:
    check(fresh(build), corpus_batch(), call=call)


@pytest.mark.parametrize("build", [ref.ClassTokenEncoder, ref.ContextAttentionGRU], ids=lambda c: c.__name__)
def test_models_with_their_own_parameters_pass_every_model_check(build: Callable[[], nn.Module]) -> None:
    for check in MODEL_CHECKS_IN_FP32:
        check(fresh(build), corpus_batch())


@pytest.mark.parametrize(("build", "call"), [v for k, v in REFERENCE_MODELS.items() if k != "mask-from-pad-ids"])
def test_reference_models_ignore_pad_content(build: Callable[[], nn.Module], call: Any) -> None:
    checks.check_pad_content(fresh(build), corpus_batch(), call=call)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("build", "call"), REFERENCE_MODELS.values(), ids=REFERENCE_MODELS.keys())
def test_reference_models_pass_amp_parity_or_report_could_not_run(
    build: Callable[[], nn.Module], call: Any, dtype: torch.dtype
) -> None:
    # An unpadded nn.LSTM has no CPU kernel in low precision on CPUs without native bf16: that is "could not run"
    # (with torch's message), never a FAIL. Which models run depends on the CPU, so both outcomes are allowed here
    # and the parity bound is what must hold when it runs.
    try:
        checks.check_amp_parity(fresh(build), corpus_batch(), dtype=dtype, call=call)
    except checks.CheckCouldNotRun as e:
        assert "could not run" in str(e) and "LSTM" in type(fresh(build).rnn).__name__  # type: ignore[union-attr]


@given(batch=rst.padded_batches(vocab_size=VOCAB, num_classes=CLASSES, max_batch=4, max_len=6))
def test_packed_bilstm_is_padding_invariant_and_batch_independent_on_any_batch(batch: Batch) -> None:
    model = fresh(PackedBiLSTM)
    checks.check_padding_invariance(model, batch)
    checks.check_batch_independence(model, batch)


# ---------------------------------------------------------------------------------------------------------------
# Eval mode is deterministic
# ---------------------------------------------------------------------------------------------------------------


def test_eval_nondeterminism_fails_eval_check() -> None:
    with pytest.raises(InvariantViolation, match=r"eval mode is deterministic(.|\n)*training=self.training"):
        checks.check_eval_deterministic(fresh(DropoutInEval), make_batch())


def test_eval_nondeterminism_names_its_size_and_the_rows() -> None:
    with pytest.raises(
        InvariantViolation, match=r"two eval passes differ by up to (\S+) \(rows \[0, 1, 2, 3, 4\]\)"
    ) as err:
        checks.check_eval_deterministic(fresh(DropoutInEval), make_batch())  # dropout on every row's features
    size = re.search(r"up to (\S+) ", str(err.value))
    assert size is not None and float(size.group(1)) > 0


class DropoutLeftOnInEval(PackedBiLSTM):
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return F.dropout(super().forward(tokens, lengths), 0.3, training=True)


@pytest.mark.parametrize(
    "check",
    [
        checks.check_padding_invariance,
        checks.check_pad_content,
        checks.check_batch_independence,
        checks.check_amp_parity,
    ],
    ids=lambda c: c.__name__,
)
def test_eval_comparisons_do_not_run_on_a_model_whose_eval_output_is_random(check: Any) -> None:
    # Only check_eval_deterministic fails such a model; the other eval checks would blame padding or the batch.
    with pytest.raises(checks.CheckCouldNotRun, match="could not run: two eval-mode passes on the same batch differ"):
        check(fresh(DropoutLeftOnInEval), make_batch())
    with pytest.raises(InvariantViolation, match="eval mode is deterministic"):
        checks.check_eval_deterministic(fresh(DropoutLeftOnInEval), make_batch())


# ---------------------------------------------------------------------------------------------------------------
# Train mode is stochastic (dropout acts)
# ---------------------------------------------------------------------------------------------------------------


def test_one_layer_lstm_dropout_fails_dropout_check_naming_the_layer() -> None:
    with pytest.raises(InvariantViolation, match=r"lstm: nn.LSTM\(dropout=0.3\) with num_layers=1"):
        checks.check_dropout_active(fresh(NotebookLSTM), make_batch())


def test_a_model_without_dropout_is_not_applicable_to_the_dropout_check() -> None:
    # A deterministic model is correct code: no verdict (SKIP in the suite), never a FAIL.
    with pytest.raises(checks.CheckNotApplicable, match="not applicable: the model has no dropout"):
        checks.check_dropout_active(PackedBiLSTM(output_p=0.0), make_batch())


class FunctionalDropoutNeverTraining(PackedBiLSTM):
    """F.dropout(..., training=False): the classic functional-dropout bug; no dropout module to find."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.3, training=False)


class TorchDropoutPositional(PackedBiLSTM):
    """torch.dropout(input, p, train) with every argument positional, train=False."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.dropout(super().forward(tokens, lengths), 0.3, False)


class ZeroDropoutCall(PackedBiLSTM):
    """F.dropout with p = 0: configured off, so the model is deterministic by design."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(super().forward(tokens, lengths), 0.0, True)


def test_dropout_with_p_zero_is_not_applicable_rather_than_inert() -> None:
    with pytest.raises(checks.CheckNotApplicable, match="no random draw in forward"):
        checks.check_dropout_active(fresh(lambda: ZeroDropoutCall(output_p=0.0)), make_batch())


class HandMaskNeverApplied(PackedBiLSTM):
    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits = super().forward(tokens, lengths)
        mask = torch.empty_like(logits).bernoulli_(0.7) / 0.7  # drawn, then forgotten
        del mask
        return logits


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (FunctionalDropoutNeverTraining, r"dropout\(p=0\.3, training=False\)(.|\n)*training=self\.training"),
        (HandMaskNeverApplied, r"forward draws random numbers \(bernoulli_\)(.|\n)*never applied"),
        (TorchDropoutPositional, r"forward draws random numbers \(dropout\(p=0\.3, training=False\)\)"),
    ],
)
def test_functional_dropout_that_never_acts_fails_with_the_call_named(cls: type, match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_dropout_active(fresh(lambda: cls(output_p=0.0)), make_batch())


class DropoutNotCalled(PackedBiLSTM):
    """Holds nn.Dropout(0.3) as ``drop`` but its forward never calls it."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.features(tokens, lengths))


class StackedLSTMUnused(PackedBiLSTM):
    """Builds a two-layer LSTM with dropout=0.3 but classifies from mean-pooled embeddings: the LSTM is dead code."""

    def __init__(self) -> None:
        super().__init__(output_p=0.0)
        self.lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        pooled = self.embedding(tokens).sum(1) / lengths[:, None]  # [B, E]
        return torch.cat([pooled, pooled[:, :4]], dim=1)  # [B, 12] to fit the head


@pytest.mark.parametrize(("cls", "name"), [(DropoutNotCalled, "drop"), (StackedLSTMUnused, "lstm")])
def test_dropout_modules_that_change_nothing_are_named(cls: type[nn.Module], name: str) -> None:
    with pytest.raises(InvariantViolation, match=rf"dropout modules with p > 0 exist \({name}\) but change nothing"):
        checks.check_dropout_active(fresh(cls), make_batch())


def test_small_dropout_on_one_row_is_still_detected() -> None:
    # p = 0.05 on 12 features of a single row: two passes often coincide; tiling and 6 passes make a miss
    # improbable (all 6 masks over 16 x 12 entries identical), and the seed is fixed.
    one_row = Batch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([0]))
    checks.check_dropout_active(fresh(lambda: PackedBiLSTM(output_p=0.05)), one_row)


class TinyOutputDropout(nn.Module):
    """Mean of embeddings -> dropout(p) -> linear: 16 rows x 8 features = 128 dropout units a pass."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 8)
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        keep = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]  # [B, T]
        pooled = (self.embed(tokens) * keep[..., None]).sum(1) / lengths[:, None]  # [B, E]
        return self.head(self.drop(pooled))


def test_a_tiny_dropout_is_not_called_inert_by_the_chance_that_six_passes_drop_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 18 rows x 8 features = 144 dropout units a pass. At p = 1e-4 a pass drops nothing with probability 0.986, so
    # six passes agree by chance (93%); 64 passes see a drop with probability 1 - 0.986^63 = 59%, and at the check's
    # fixed seed they do. The point is the budget: a correct dropout is only called inert after 64 silent passes.
    model = fresh(lambda: TinyOutputDropout(1e-4))
    checks.check_dropout_active(model, corpus_batch())
    monkeypatch.setattr(model_checks, "_MAX_PASSES", 6)  # the earlier budget: this seed's six passes drop nothing
    with pytest.raises(InvariantViolation, match="6 train-mode passes under different seeds gave bitwise-identical"):
        checks.check_dropout_active(model, corpus_batch())


def test_dropout_check_switches_an_eval_mode_model_to_train_mode() -> None:
    checks.check_dropout_active(fresh(PackedBiLSTM).eval(), make_batch())


def test_train_mode_check_restores_batchnorm_running_stats() -> None:
    model = fresh(WithBatchNorm)
    before = model.norm.running_mean.clone()
    checks.check_dropout_active(model, make_batch())  # train-mode passes update running_mean on the way
    assert torch.equal(model.norm.running_mean, before)
    assert int(model.norm.num_batches_tracked) == 0


# ---------------------------------------------------------------------------------------------------------------
# Padding invariance and pad content
# ---------------------------------------------------------------------------------------------------------------


class MeanOverAllT(PackedBiLSTM):
    """Mean-pools the outputs over all T positions, pads included."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.lstm(pack(self.embedding(tokens), lengths))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out.mean(dim=1)


class ConvMaxOverPads(nn.Module):
    """A CNN text classifier that max-pools over every position, pads included: appending pads to a padded row
    often changes nothing (the pads' windows are already in the max), but the row without padding differs."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(8, 6, kernel_size=3, padding=1)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = torch.relu(self.conv(self.embedding(tokens).transpose(1, 2)))  # [B, 6, T]
        return self.head(h.max(dim=2).values)


@pytest.mark.parametrize(
    ("cls", "variant"),
    [
        (UnpackedBiLSTM, "pad columns appended"),
        (MeanOverAllT, "pad columns appended"),
        (ConvMaxOverPads, r"when run alone without padding \(vs alone, padded to T\)"),
    ],
)
def test_padding_leaks_fail_padding_check(cls: type[nn.Module], variant: str) -> None:
    with pytest.raises(InvariantViolation, match=f"padding invariance(.|\n)*{variant}(.|\n)*pack the sequence"):
        checks.check_padding_invariance(fresh(cls), make_batch())


@given(batch=rst.padded_batches(vocab_size=VOCAB, num_classes=CLASSES, max_batch=4, max_len=6))
def test_unpacked_bilstm_fails_padding_check_on_any_batch(batch: Batch) -> None:
    # Appended pads reach every row's reverse direction, full-length rows included.
    with pytest.raises(InvariantViolation):
        checks.check_padding_invariance(fresh(UnpackedBiLSTM), batch)


def test_padding_failure_names_the_rows_their_lengths_and_the_variant() -> None:
    with pytest.raises(
        InvariantViolation,
        match=r"rows \[0, 1, 2, 3, 4\] \(lengths \[6, 4, 2, 1, 5\] of T=6\) changed by up to \S+ with 3 pad columns",
    ):
        checks.check_padding_invariance(fresh(UnpackedBiLSTM), make_batch())  # the reverse direction reads them all


def test_padding_check_accepts_one_extra_column_and_rejects_none() -> None:
    checks.check_padding_invariance(fresh(PackedBiLSTM), make_batch(), extra=1)
    with pytest.raises(ValueError, match="extra must be >= 1"):
        checks.check_padding_invariance(fresh(PackedBiLSTM), make_batch(), extra=0)


def _shifted_by_width(scale: float, dtype: torch.dtype) -> Callable[[Tensor, Tensor], Tensor]:
    """A padding-sensitive model whose logits move by ``scale`` per appended column, in ``dtype``."""
    base = fresh(PackedBiLSTM).eval()

    def model(tokens: Tensor, lengths: Tensor) -> Tensor:
        return base(tokens, lengths).to(dtype) + scale * tokens.shape[1]

    return model


@pytest.mark.parametrize(
    ("scale", "dtype", "passes"),
    [(1e-6, torch.float32, True), (1e-4, torch.float32, False), (1e-6, torch.float64, False)],
    ids=["fp32-within-tolerance", "fp32-beyond", "fp64-beyond"],
)
def test_padding_check_tolerance_is_assert_close_default_for_the_logits_dtype(
    scale: float, dtype: torch.dtype, passes: bool
) -> None:
    # 3 appended columns shift the logits by 3*scale: 3e-6 is inside fp32's atol (1e-5) and outside fp64's (1e-7).
    # The report gives the size of the change: 3 columns x scale.
    context = (
        contextlib.nullcontext()
        if passes
        else pytest.raises(InvariantViolation, match=f"changed by up to {3 * scale:.3g} with 3 pad columns appended")
    )
    with context:
        checks.check_padding_invariance(_shifted_by_width(scale, dtype), make_batch())


@pytest.mark.parametrize(
    ("build", "call"), [REFERENCE_MODELS["hf-style-adapter"], REFERENCE_MODELS["packed-input-adapter"]]
)
def test_unpadded_rows_run_through_the_adapter_too(build: Callable[[], nn.Module], call: Any) -> None:
    # corpus_batch has lengths 7, 5, 3, 1, 6, 2 with T = 7: five rows carry padding, and each runs alone unpadded.
    passed = checks.check_padding_invariance(fresh(build), corpus_batch(), call=call)
    assert passed.detail.endswith("for 5 rows run without padding")


class MaskFromPadToken(PackedBiLSTM):
    """Mean-pools embeddings with a mask built from tokens != PAD instead of from lengths."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        mask = (tokens != PAD_ID).unsqueeze(-1).float()  # [B, T, 1]
        pooled = (self.embedding(tokens) * mask).sum(1) / mask.sum(1)  # [B, E]
        return torch.cat([pooled, pooled[:, :4]], dim=1)  # [B, 12] to fit the head


def test_a_mask_from_pad_ids_is_padding_invariant_but_reads_pad_content() -> None:
    # Correct while pads hold PAD_ID: padding invariance passes, the separate pad-content check names the cause.
    checks.check_padding_invariance(fresh(MaskFromPadToken), make_batch())
    with pytest.raises(InvariantViolation, match=r"pad content ignored(.|\n)*mask built from tokens != 0") as err:
        checks.check_pad_content(fresh(MaskFromPadToken), make_batch())
    assert "reads past each row's length" not in str(err.value)


def test_pad_content_failure_of_a_padding_leak_points_to_padding_invariance() -> None:
    with pytest.raises(InvariantViolation, match=r"pad content ignored(.|\n)*reads past each row's length"):
        checks.check_pad_content(fresh(UnpackedBiLSTM), make_batch())


def test_a_single_pad_position_is_filled_with_garbage() -> None:
    # Each padded row has exactly one pad, at position == length: the garbage variant must reach it.
    lengths = torch.tensor([5, 4, 5, 4, 5])
    tokens = torch.randint(1, VOCAB, (5, 5), generator=torch.Generator().manual_seed(7))
    tokens[lengths == 4, 4] = PAD_ID
    batch = Batch(tokens, lengths, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(InvariantViolation, match="with random tokens in its pad positions"):
        checks.check_pad_content(fresh(MaskFromPadToken), batch)


def test_pad_content_check_reports_how_many_variants_it_compared() -> None:
    padded = checks.check_pad_content(fresh(PackedBiLSTM), make_batch())
    full = make_batch()
    unpadded = Batch(full.tokens[:1], full.lengths[:1], full.labels[:1])  # the full-length row: no pad positions
    assert "2 pad-content variants" in padded.detail
    assert "1 pad-content variants" in checks.check_pad_content(fresh(PackedBiLSTM), unpadded).detail


def test_pad_content_rejects_no_extra_columns() -> None:
    with pytest.raises(ValueError, match="extra must be >= 1"):
        checks.check_pad_content(fresh(ref.PackedGRU), _batch(), extra=0)


def _batch() -> Any:

    return collate([([3, 4, 5], 0), ([6], 1)])


# ---------------------------------------------------------------------------------------------------------------
# Batch independence
# ---------------------------------------------------------------------------------------------------------------


class NormalizesOverBatchAxis(PackedBiLSTM):
    """L2-normalizes features over dim=0 (the batch) where dim=1 (features) was meant."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return F.normalize(super().features(tokens, lengths), dim=0)


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (DividesByBatchMaxLength, "computed alone differ"),
        (NormalizesOverBatchAxis, "computed alone differ"),
        (SortsWithoutRestoring, "rows reordered inside forward"),
    ],
)
def test_batch_dependence_fails_batch_check(cls: type[nn.Module], match: str) -> None:
    with pytest.raises(InvariantViolation, match=match):
        checks.check_batch_independence(fresh(cls), make_batch())


class BatchStatsInEval(PackedBiLSTM):
    """BatchNorm without running statistics: normalizes with the current batch's statistics, eval included."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(12, track_running_stats=False)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.norm(super().features(tokens, lengths))


def test_batchnorm_without_running_stats_fails_batch_check_on_a_single_row() -> None:
    # BatchNorm refuses a batch of one in this mode; the check reports that as the model's batch dependence.
    with pytest.raises(
        InvariantViolation, match=r"raised ValueError on a batch of one row(.|\n)*statistics over the batch"
    ):
        checks.check_batch_independence(fresh(BatchStatsInEval), make_batch())


def test_batch_statistics_failure_gives_the_per_row_fix() -> None:
    with pytest.raises(InvariantViolation, match=r"Fix: compute every statistic per row"):
        checks.check_batch_independence(fresh(DividesByBatchMaxLength), make_batch())


class StandardizesOverBatch(PackedBiLSTM):
    """Standardizes features over the batch axis: the std of a single row is NaN."""

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = super().features(tokens, lengths)
        return (h - h.mean(dim=0)) / h.std(dim=0)


def test_a_batch_statistic_that_is_nan_on_one_row_is_blamed_on_the_batch_not_on_an_overflow() -> None:
    with (
        pytest.warns(UserWarning, match="degrees of freedom"),
        pytest.raises(
            InvariantViolation,
            match=r"non-finite ones in rows \[0\] on a batch of one row(.|\n)*statistic over the batch axis",
        ),
    ):
        checks.check_batch_independence(fresh(StandardizesOverBatch), make_batch())


def test_a_model_that_is_nan_on_a_row_alone_is_left_to_the_batch_check_by_the_padding_check() -> None:
    with pytest.warns(UserWarning, match="degrees of freedom"):
        passed = checks.check_padding_invariance(fresh(StandardizesOverBatch), make_batch())
    assert "for 0 rows run without padding" in passed.detail


def test_padding_bugs_do_not_trip_batch_check() -> None:
    # Rows alone keep the batch's width, so a padding leak is reported by the padding check only.
    checks.check_batch_independence(fresh(UnpackedBiLSTM), make_batch())


def test_sorting_without_restoring_is_caught_by_the_permutations_when_rows_alone_agree() -> None:
    # On rows already sorted by length the model is right row by row; only a permuted batch exposes it.
    with pytest.raises(
        InvariantViolation, match=r"do not follow their rows when the batch is permuted \(reversed batch: rows \["
    ) as err:
        checks.check_batch_independence(fresh(SortsWithoutRestoring), sorted_batch())
    assert "rows reordered inside forward" in str(err.value)


class FirstRowForAll(PackedBiLSTM):
    """Every row gets the first row's logits: rows mixed (e.g. indexing h_n[-1][0] where h_n[-1] was meant)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out = super().forward(tokens, lengths)
        return out[:1].expand_as(out)


def test_rows_mixed_across_the_batch_are_not_diagnosed_as_a_reordering() -> None:
    with pytest.raises(InvariantViolation, match="rows mixed by a view/transpose") as err:
        checks.check_batch_independence(fresh(FirstRowForAll), make_batch())
    assert "reordered" not in str(err.value)


class FailsSilentlyOnOneRow(PackedBiLSTM):
    """Raises an exception without a message on a batch of one row."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if len(tokens) == 1:
            raise ValueError
        return super().forward(tokens, lengths)


@pytest.mark.parametrize(
    ("check", "cls", "match"),
    [
        (checks.check_batch_independence, FailsOnOneRow, "RuntimeError on a batch of one row: needs at least two rows"),
        (checks.check_batch_independence, FailsWhenReversed, "RuntimeError on the reversed batch: rows must be sorted"),
        (checks.check_padding_invariance, FailsOnWiderBatch, "ValueError on the batch with 3 pad columns appended"),
        (checks.check_batch_independence, FailsSilentlyOnOneRow, r"ValueError on a batch of one row: \."),  # no text
    ],
    ids=["one-row", "reversed", "wider", "no-message"],
)
def test_an_exception_on_a_derived_batch_names_the_batch_and_the_first_line(
    check: Callable[[Any, Batch], Any], cls: type[nn.Module], match: str
) -> None:
    with pytest.raises(InvariantViolation, match="the model ran on the batch but raised " + match) as err:
        check(fresh(cls), make_batch())
    assert "second line" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# Autocast parity: the bound, the dtype, and what the machine lacks
# ---------------------------------------------------------------------------------------------------------------


def test_signal_lost_in_bf16_fails_amp_parity() -> None:
    with pytest.raises(InvariantViolation, match=r"bfloat16 autocast parity(.|\n)*> bound"):
        checks.check_amp_parity(fresh(LargeOffsetLogits), make_batch())


def test_large_offset_model_is_fine_in_fp32() -> None:
    # The planted bug above is an autocast bug only: the same model passes the fp32 checks.
    checks.check_eval_deterministic(fresh(LargeOffsetLogits), make_batch())
    checks.check_padding_invariance(fresh(LargeOffsetLogits), make_batch())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_amp_parity_runs_the_requested_dtype_and_names_the_low_precision_modules(dtype: torch.dtype) -> None:
    model = fresh(PackedBiLSTM)
    seen: set[torch.dtype] = set()

    def record(*_: Any) -> None:
        if torch.is_autocast_enabled("cpu"):
            seen.add(torch.get_autocast_dtype("cpu"))

    model.head.register_forward_pre_hook(record)
    passed = checks.check_amp_parity(model, make_batch(), dtype=dtype)
    assert seen == {dtype}  # every autocast forward (the comparison and the probe) ran in this dtype
    assert str(dtype).removeprefix("torch.") in passed.invariant
    assert passed.detail.endswith("low precision in: head")  # the packed LSTM stays fp32 on CPU


def test_amp_parity_of_a_plain_function_reports_no_low_precision_module() -> None:
    model = fresh(PackedBiLSTM).eval()  # the check cannot switch a plain function to eval mode
    passed = checks.check_amp_parity(lambda tokens, lengths: model(tokens, lengths), make_batch())
    assert passed.detail.endswith("low precision in: none")  # no modules to probe


def test_amp_parity_rtol_overrides_the_bound_and_the_bound_is_inclusive() -> None:
    checks.check_amp_parity(fresh(LargeOffsetLogits), make_batch(), rtol=100.0)
    with pytest.raises(InvariantViolation, match="> bound"):
        checks.check_amp_parity(fresh(PackedBiLSTM), make_batch(), rtol=0.0)  # its head runs in bf16: diff > 0
    # Autocast leaves an embedding lookup alone: identical logits pass even a zero bound.
    embedding = fresh(PackedBiLSTM).embedding
    checks.check_amp_parity(lambda tokens, lengths: embedding(tokens)[:, 0, :], make_batch(), rtol=0.0)


class TinyLargeOffsetLogits(LargeOffsetLogits):
    """LargeOffsetLogits scaled down to max|logit| ~ 1e-3: the autocast bound is relative, so it must still fail."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return super().forward(tokens, lengths) * 1e-3


def test_amp_parity_bound_is_relative_to_the_logits_at_any_scale() -> None:
    with pytest.raises(InvariantViolation, match="> bound"):
        checks.check_amp_parity(fresh(TinyLargeOffsetLogits), make_batch())


def test_masked_fill_minus_1e9_under_fp16_fails_naming_the_models_line() -> None:
    with pytest.raises(
        InvariantViolation,
        match=r"float16 autocast parity: the model runs in fp32 but its forward pass under torch\.autocast\('cpu', "
        r"torch\.float16\) raised RuntimeError: value cannot be converted to type c10::Half without overflow at "
        r".*styles\.py:\d+ \(forward\): scores = scores\.masked_fill\(pad, fill\)" + CAUSE + "float16 stops at 65504",
    ):
        checks.check_amp_parity(fresh(styles.BuggyAttentionPoolMinus1e9), corpus_batch(), dtype=torch.float16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_dtypes_own_minimum_as_fill_passes(dtype: torch.dtype) -> None:
    checks.check_amp_parity(fresh(styles.AttentionPoolGRU), corpus_batch(), dtype=dtype)


def test_minus_1e9_fits_in_bfloat16_so_it_passes_there() -> None:
    checks.check_amp_parity(fresh(styles.BuggyAttentionPoolMinus1e9), corpus_batch(), dtype=torch.bfloat16)


class UnpackedLSTM(nn.Module):
    """An unpacked nn.LSTM, which oneDNN cannot run in fp16 on CPU ("could not create a primitive descriptor")."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))  # [B, T, H]
        return self.head(h[torch.arange(len(tokens)), lengths.to(tokens.device) - 1])


def test_what_the_machine_lacks_stays_could_not_run() -> None:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            nn.LSTM(2, 2, batch_first=True)(torch.randn(1, 2, 2))
    except RuntimeError:
        with pytest.raises(CheckCouldNotRun, match=r"could not run(.|\n)*torch has no low-precision kernel"):
            checks.check_amp_parity(fresh(UnpackedLSTM), corpus_batch(), dtype=torch.float16)
    else:  # a CPU whose oneDNN runs fp16 LSTMs: the check must then compare, and the model is fine
        checks.check_amp_parity(fresh(UnpackedLSTM), corpus_batch(), dtype=torch.float16)


@pytest.mark.parametrize(
    ("error", "lacks"),
    [
        (RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'"), True),
        (RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive"), True),
        (NotImplementedError("aten::foo"), True),
        (RuntimeError("value cannot be converted to type c10::Half without overflow"), False),
        (RuntimeError("expected scalar type Float but found Half"), False),
        (ValueError("shapes do not match"), False),
    ],
)
def test_machine_limits_are_told_from_the_models_own_errors(error: Exception, lacks: bool) -> None:
    assert model_checks._machine_lacks(error) is lacks


class FailsUnderAutocast(PackedBiLSTM):
    """An op without a low-precision kernel: raises as soon as autocast is on."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("no bf16 kernel for this op")
        return super().forward(tokens, lengths)


def test_an_exception_under_autocast_is_could_not_run_with_torchs_message() -> None:
    with pytest.raises(
        checks.CheckCouldNotRun, match=r"could not run(.|\n)*raised RuntimeError: no bf16 kernel for this op"
    ):
        checks.check_amp_parity(fresh(FailsUnderAutocast), make_batch())


# ---------------------------------------------------------------------------------------------------------------
# Every model check: non-finite logits, state given back, the arguments and the logits' protocol
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
def test_non_finite_logits_fail_naming_the_rows(check: Callable[[Any, Batch], Any]) -> None:
    with pytest.raises(InvariantViolation, match=r"non-finite logits in rows \[1, 3\]"):
        check(fresh(NaNRows), make_batch())


class WithBatchNorm(PackedBiLSTM):
    """Correct, but holds running statistics that a train-mode forward updates."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(12)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.drop(self.norm(self.features(tokens, lengths))))


def snapshot(model: nn.Module) -> tuple[list[bool], list[Tensor], Tensor]:
    state = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    return [m.training for m in model.modules()], state, torch.get_rng_state()


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", [WithBatchNorm, UnpackedBiLSTM, NotebookLSTM], ids=lambda c: c.__name__)
def test_model_checks_leave_modes_parameters_buffers_and_rng_unchanged(
    check: Callable[[Any, Batch], Any], cls: type[nn.Module]
) -> None:
    model = fresh(cls)
    model.train()
    model.lstm.eval()  # a deliberate mixed mode must survive, not be flattened by model.train(flag)
    torch.manual_seed(123)
    modes, state, rng = snapshot(model)
    # Failing checks must restore too: two of these models fail some, and the unpacked LSTM cannot run in bf16 on
    # CPUs without native bf16 kernels.
    with contextlib.suppress(InvariantViolation, checks.CheckCouldNotRun):
        check(model, make_batch())
    after_modes, after_state, after_rng = snapshot(model)
    assert after_modes == modes
    assert all(torch.equal(a, b) for a, b in zip(after_state, state, strict=True))
    assert torch.equal(after_rng, rng)


def test_non_callable_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"model must be callable as model\(tokens, lengths\)"):
        checks.check_eval_deterministic("not a model", make_batch())  # type: ignore[arg-type]


def test_model_taking_one_argument_is_a_type_error() -> None:
    class TokensOnly(nn.Module):
        def forward(self, tokens: Tensor) -> Tensor:
            return tokens.float()

    with pytest.raises(TypeError, match=r"TokensOnly takes \(tokens"):
        checks.check_padding_invariance(TokensOnly(), make_batch())


def test_model_returning_a_tuple_is_a_type_error() -> None:
    def model(tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return tokens.float(), lengths

    with pytest.raises(TypeError, match=r"must return float logits of shape \[B, C\]"):
        checks.check_eval_deterministic(model, make_batch())  # type: ignore[arg-type]


def test_batch_with_length_beyond_width_is_a_value_error() -> None:
    bad = Batch(torch.ones(2, 3, dtype=torch.int64), torch.tensor([3, 4]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=3\]"):
        checks.check_eval_deterministic(fresh(PackedBiLSTM), bad)


def one_arg_model(tokens: Tensor) -> Tensor:
    return tokens.float()


def test_a_callable_without_a_name_is_described_by_its_repr() -> None:
    with pytest.raises(TypeError, match=r"functools\.partial\(<function one_arg_model"):
        checks.check_eval_deterministic(functools.partial(one_arg_model), make_batch())


def test_model_checks_hand_the_model_int64_tokens_and_lengths() -> None:
    model = fresh(PackedBiLSTM).eval()
    seen: set[torch.dtype] = set()

    def int64_only(tokens: Tensor, lengths: Tensor) -> Tensor:
        seen.update({tokens.dtype, lengths.dtype})
        return model(tokens, lengths)

    batch = make_batch()
    checks.check_eval_deterministic(int64_only, Batch(batch.tokens.int(), batch.lengths.int(), batch.labels))
    assert seen == {torch.int64}


@pytest.mark.parametrize(
    ("model", "batch", "error", "match"),
    [
        (one_arg_model, make_batch(), TypeError, r"one_arg_model takes \(tokens"),
        (PackedBiLSTM(), (torch.ones(2, 3),), TypeError, "got tuple without tokens, lengths, labels"),
        (PackedBiLSTM(), Batch(torch.ones(2, 3), torch.tensor([3, 3]), torch.tensor([0, 1])), ValueError, "integer"),
        (PackedBiLSTM(), Batch(torch.ones(3).long(), torch.tensor([3]), torch.tensor([0])), ValueError, r"\[B, T\]"),
        (
            PackedBiLSTM(),
            Batch(torch.ones(0, 3).long(), torch.ones(0).long(), torch.ones(0).long()),
            ValueError,
            "one row",
        ),
        (PackedBiLSTM(), Batch(torch.ones(2, 3).long(), torch.ones(2), torch.tensor([0, 1])), ValueError, "lengths"),
    ],
    ids=["one-argument-function", "not-a-batch", "float-tokens", "1-D-tokens", "no-rows", "float-lengths"],
)
def test_model_checks_reject_bad_arguments_saying_what_is_wrong(
    model: Any, batch: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        checks.check_eval_deterministic(model, batch)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda out: out.long(), r"got a torch\.int64 tensor of shape \(5, 3\)"),
        (lambda out: out[:, 0], r"got a torch\.float32 tensor of shape \(5,\)"),
        (lambda out: out[:4], r"with B=5 \(got a torch\.float32 tensor of shape \(4, 3\)"),
        (lambda out: out.tolist(), r"got a list"),
    ],
    ids=["integer", "1-D", "rows-missing", "not-a-tensor"],
)
def test_logits_breaking_the_protocol_are_a_type_error_naming_what_came_back(
    output: Callable[[Tensor], Any], match: str
) -> None:
    model = fresh(PackedBiLSTM).eval()
    with pytest.raises(TypeError, match=match):
        checks.check_eval_deterministic(lambda tokens, lengths: output(model(tokens, lengths)), make_batch())
