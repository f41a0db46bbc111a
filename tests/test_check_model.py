"""rnnreg.testing.model_checks: an exception under autocast is the model's unless torch lacks the kernel (issue 18).

``masked_fill(mask, -1e9)`` raises under float16 autocast on any device ("value cannot be converted to type
c10::Half without overflow"): a FAIL naming the model's own line, not "could not run". What the machine lacks (no
low-precision kernel, oneDNN's fp16 LSTM on CPU) stays "could not run".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from reference_models import styles
from torch import Tensor, nn

from rnnreg.data import Batch, collate
from rnnreg.testing import checks, model_checks
from rnnreg.testing.checks import CheckCouldNotRun, InvariantViolation

CAUSE = r"(.|\n)*Likely cause: .*"


def make_batch() -> Batch:
    gen = torch.Generator().manual_seed(11)
    rows = [torch.randint(1, 40, (n,), generator=gen).tolist() for n in (7, 5, 3, 1, 6, 2)]
    return collate([(ids, i % 3) for i, ids in enumerate(rows)])


def fresh(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


def test_masked_fill_minus_1e9_under_fp16_fails_naming_the_models_line() -> None:
    with pytest.raises(
        InvariantViolation,
        match=r"float16 autocast parity: the model runs in fp32 but its forward pass under torch\.autocast\('cpu', "
        r"torch\.float16\) raised RuntimeError: value cannot be converted to type c10::Half without overflow at "
        r".*styles\.py:\d+ \(forward\): scores = scores\.masked_fill\(pad, fill\)" + CAUSE + "float16 stops at 65504",
    ):
        checks.check_amp_parity(fresh(styles.BuggyAttentionPoolMinus1e9), make_batch(), dtype=torch.float16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_dtypes_own_minimum_as_fill_passes(dtype: torch.dtype) -> None:
    checks.check_amp_parity(fresh(styles.AttentionPoolGRU), make_batch(), dtype=dtype)


def test_minus_1e9_fits_in_bfloat16_so_it_passes_there() -> None:
    checks.check_amp_parity(fresh(styles.BuggyAttentionPoolMinus1e9), make_batch(), dtype=torch.bfloat16)


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
            checks.check_amp_parity(fresh(UnpackedLSTM), make_batch(), dtype=torch.float16)
    else:  # a CPU whose oneDNN runs fp16 LSTMs: the check must then compare, and the model is fine
        checks.check_amp_parity(fresh(UnpackedLSTM), make_batch(), dtype=torch.float16)


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
    checks.check_dropout_active(model, make_batch())
    monkeypatch.setattr(model_checks, "_MAX_PASSES", 6)  # the earlier budget: this seed's six passes drop nothing
    with pytest.raises(InvariantViolation, match="6 train-mode passes under different seeds gave bitwise-identical"):
        checks.check_dropout_active(model, make_batch())
