"""The notebook's three printed 15-epoch curves, reproduced through rnnreg's own config/model/step code."""

from __future__ import annotations

import pytest

from rnnreg import notebook

# Copied from the notebook's printed output (cells In[5], In[6], In[7]), not computed by rnnreg.
PRINTED = {
    "In [5]": (
        [0.6669, 0.6427, 0.6191, 0.5959, 0.5730, 0.5503, 0.5277, 0.5053, 0.4831, 0.4609, 0.4390, 0.4173, 0.3960,
         0.3752, 0.3551],
        [1.00] * 15,
    ),
    "In [6]": (
        [0.6999, 0.6709, 0.6432, 0.6167, 0.5911, 0.5664, 0.5424, 0.5190, 0.4960, 0.4735, 0.4514, 0.4298, 0.4086,
         0.3879, 0.3679],
        [0.50] + [1.00] * 14,
    ),
    "In [7]": (
        [0.6665, 0.6442, 0.6223, 0.6009, 0.5798, 0.5588, 0.5380, 0.5172, 0.4964, 0.4756, 0.4548, 0.4341, 0.4135,
         0.3930, 0.3729],
        [1.00] * 15,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def replay() -> tuple[list[notebook.CellResult], list[str]]:
    lines: list[str] = []
    return notebook.replay_cells(lines.append), lines


def test_replay_prints_all_45_notebook_losses_and_accuracies_exactly(replay) -> None:
    cells, _ = replay
    assert [c.cell for c in cells] == list(PRINTED)
    for cell in cells:
        losses, accs = PRINTED[cell.cell]
        assert [f"{x:.4f}" for x in cell.losses] == [f"{x:.4f}" for x in losses], cell.cell
        assert [f"{x:.2f}" for x in cell.accs] == [f"{x:.2f}" for x in accs], cell.cell


def test_replay_lines_have_the_notebook_format(replay) -> None:
    _, lines = replay
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 45
    assert epoch_lines[0] == "Epoch 1 | Loss=0.6669 | Acc=1.00"
    assert epoch_lines[15] == "Epoch 1 | Loss=0.6999 | Acc=0.50"
    assert epoch_lines[-1] == "Epoch 15 | Loss=0.3729 | Acc=1.00"


def test_one_layer_lstm_dropout_is_reported_as_a_noop(replay) -> None:
    cells, _ = replay
    assert cells[0].warnings, "building nn.LSTM(dropout=0.3) with one layer must warn"
    assert cells[1].warnings == []  # dropout=0.0 is honest
    assert notebook._dropout_is_noop() == 0.0


def test_mini_challenge_reports_every_seed(capsys) -> None:
    lines: list[str] = []
    accs = notebook.mini_challenge(lines.append, seeds=3)
    assert set(accs) == {"Baseline", "Regularized"}
    for values in accs.values():
        assert len(values) == 3
        # Three validation sentences: accuracy is a multiple of 1/3.
        assert all(abs(3 * v - round(3 * v)) < 1e-9 for v in values)
    assert any("seeds 0-2" in line for line in lines)
