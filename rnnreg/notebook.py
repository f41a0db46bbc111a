"""Replay the user's notebook through rnnreg's own core, then say what it got wrong.

Cells In[5], In[6], In[7] run in that order in one process after ``torch.manual_seed(42)``; with torch 2.13 on
the CPU their 45 printed losses and accuracies come out exactly as in the notebook.
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rnnreg.batch import Batch
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.fit import fit, prepare
from rnnreg.model import build_model
from rnnreg.step import make_optimizer, make_scaler, train_step

Printer = Callable[[str], None]

# The cells' settings: (cell, nn.LSTM dropout, clip max_norm).
CELLS = (("In [5]", 0.3, 1.0), ("In [6]", 0.0, 1.0), ("In [7]", 0.3, 0.1))
EPOCHS = 15


@dataclass(frozen=True)
class CellResult:
    cell: str
    losses: list[float]
    accs: list[float]
    warnings: list[str]


def _cell_configs(lstm_dropout: float, max_norm: float) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(
        arch="notebook",
        embed_dim=32,
        hidden_dim=64,
        hidden_p=lstm_dropout,  # the notebook's nn.LSTM(dropout=...), a no-op with one layer
        embed_p=0.0,
        input_p=0.0,
        weight_p=0.0,
        output_p=0.0,
    )
    train = TrainConfig(
        optimizer="adam",  # torch.optim.Adam(weight_decay=1e-4): coupled L2 on every parameter
        lr=1e-3,
        weight_decay=1e-4,
        decay_bias_and_norm=True,
        decay_embedding=True,
        clip="norm",
        max_norm=max_norm,
        label_smoothing=0.1,
    )
    return model, train


def _train_cell(cell: str, lstm_dropout: float, max_norm: float, batch: Batch, out: Printer) -> CellResult:
    model_cfg, train_cfg = _cell_configs(lstm_dropout, max_norm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(model_cfg, vocab_size=200, num_classes=2)
    optimizer = make_optimizer(model, train_cfg)
    scaler = make_scaler("cpu", train_cfg.amp)
    model.train()
    losses, accs = [], []
    for epoch in range(EPOCHS):
        stats = train_step(model, batch, optimizer, scaler, train_cfg)
        acc = (stats.logits.argmax(1) == batch.labels).float().mean().item()
        losses.append(stats.loss)
        accs.append(acc)
        out(f"Epoch {epoch + 1} | Loss={stats.loss:.4f} | Acc={acc:.2f}")
    return CellResult(cell, losses, accs, sorted({str(w.message).split("\n")[0] for w in caught}))


def replay_cells(out: Printer = print) -> list[CellResult]:
    """Cells In[5], In[6], In[7]: the same fake batch, three models trained for 15 full-batch epochs each."""
    torch.manual_seed(42)
    tokens = torch.randint(1, 200, (4, 6))  # batch, time: the notebook's fake data
    batch = Batch(tokens, torch.tensor([6, 5, 4, 3]), torch.tensor([0, 1, 0, 1]))
    results = []
    for cell, lstm_dropout, max_norm in CELLS:
        out(f"\n{cell}  nn.LSTM(dropout={lstm_dropout}), clip_grad_norm_(max_norm={max_norm})")
        results.append(_train_cell(cell, lstm_dropout, max_norm, batch, out))
    return results


def _dropout_is_noop() -> float:
    """Re-run In[6] from its own RNG state with dropout=0.3: a no-op dropout leaves the curve unchanged."""
    torch.manual_seed(42)
    tokens = torch.randint(1, 200, (4, 6))
    batch = Batch(tokens, torch.tensor([6, 5, 4, 3]), torch.tensor([0, 1, 0, 1]))
    silent: Printer = lambda _line: None  # noqa: E731
    _train_cell("In [5]", 0.3, 1.0, batch, silent)
    state = torch.get_rng_state()
    without = _train_cell("In [6]", 0.0, 1.0, batch, silent)
    torch.set_rng_state(state)
    with_dropout = _train_cell("In [6] with dropout=0.3", 0.3, 1.0, batch, silent)
    return max(abs(a - b) for a, b in zip(without.losses, with_dropout.losses, strict=True))


def mini_challenge_experiments() -> dict[str, Experiment]:
    """The mini-challenge: notebook model (hidden 32, nn.Dropout on embeddings), Adam, 10 epochs, batch 4."""
    model = ModelConfig(arch="notebook", embed_dim=32, hidden_dim=32, embed_p=0.0, weight_p=0.0, output_p=0.0)
    train = TrainConfig(
        epochs=10, batch_size=4, optimizer="adam", lr=1e-3, label_smoothing=0.0, decay_bias_and_norm=True, bucket=False
    )
    data = DataConfig(source="toy")
    baseline = Experiment(
        data,
        dataclasses.replace(model, input_p=0.0),
        dataclasses.replace(train, weight_decay=0.0, clip="none"),
    )
    regularized = Experiment(
        data,
        dataclasses.replace(model, input_p=0.3),
        dataclasses.replace(train, weight_decay=1e-4, clip="norm", max_norm=1.0),
    )
    return {"Baseline": baseline, "Regularized": regularized}


def mini_challenge(out: Printer = print, seeds: int = 20) -> dict[str, list[float]]:
    """Baseline vs regularized on the 12-sentence toy corpus: one seed as the notebook did, then many."""
    experiments = mini_challenge_experiments()
    prepared = prepare(experiments["Baseline"].data)
    accs: dict[str, list[float]] = {name: [] for name in experiments}
    f1s: dict[str, list[float]] = {name: [] for name in experiments}
    for seed in range(seeds):
        for name, exp in experiments.items():
            result = fit(exp, prepared, seed)
            val = result.history.epochs[-1].val
            assert val is not None  # the toy corpus always has its 3 validation sentences
            accs[name].append(val.accuracy)
            f1s[name].append(val.macro_f1)
    n_train, n_val = len(prepared.train), len(prepared.val)
    out(f"\nMini-challenge on the toy corpus ({n_train} training, {n_val} validation sentences), seed 0:")
    out(f"{'Model':<12} {'Val Acc':>8} {'Val macro-F1':>13}")
    for name in experiments:
        out(f"{name:<12} {accs[name][0]:>8.3f} {f1s[name][0]:>13.3f}")
    out(f"\nThe same two runs over seeds 0-{seeds - 1} (validation accuracy can only be 0, 1/3, 2/3 or 1):")
    out(f"{'Model':<12} {'mean':>6} {'std':>6} {'min':>6} {'max':>6}")
    for name in experiments:
        a = accs[name]
        out(f"{name:<12} {statistics.mean(a):>6.3f} {statistics.stdev(a):>6.3f} {min(a):>6.3f} {max(a):>6.3f}")
    wins = sum(r > b for r, b in zip(accs["Regularized"], accs["Baseline"], strict=True))
    ties = sum(r == b for r, b in zip(accs["Regularized"], accs["Baseline"], strict=True))
    out(f"Regularized beats baseline on {wins} of {seeds} seeds, ties on {ties}.")
    return accs


def what_went_wrong(out: Printer, cells: list[CellResult], noop_delta: float) -> None:
    eps, k = 0.1, 2
    warned = cells[0].warnings
    out("\nWhat this notebook got wrong:")
    out(
        "1. nn.LSTM(dropout=0.3) with one layer does nothing: PyTorch applies it only between stacked layers"
        + (" (rnnreg warns when it builds this model)." if warned else ".")
    )
    out(
        "   Re-running In[6] from its own random state with dropout=0.3 changes its losses by at most"
        f" {noop_delta:.1e}."
    )
    out(
        "   'No dropout ends up with higher loss' compared two different random initialisations, not dropout."
        " rnnreg's own model refuses this configuration (model.hidden_p needs num_layers >= 2)."
    )
    out(
        "2. Three validation sentences and one seed decide nothing: accuracy moves in steps of 1/3 and"
        " flips with the seed (table above). Compare over many seeds on thousands of real sentences:"
        " `rnnreg train --data movies --seed N`."
    )
    out(
        f"3. label_smoothing={eps} with {k} classes targets {1 - eps + eps / k:.2f}/{eps / k:.2f}, not 0.9/0.1:"
        " PyTorch spreads eps/K over every class, the true one included."
    )
    out(
        "4. AMP was skipped for lack of a GPU, but CPU autocast in bfloat16 exists and is faster on CPUs with"
        " bf16 units: `rnnreg train --set train.amp=bf16`."
    )
    out(
        "5. The printed Acc is measured on the 4 training sequences before each update: it says nothing about"
        " generalisation."
    )


def replay(out: Printer = print, seeds: int = 20) -> list[CellResult]:
    """The whole replay: the three cells, the mini-challenge over ``seeds`` seeds, and the notes."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds must be an int >= 2 to show a spread (got {seeds!r}); e.g. 20")
    cells = replay_cells(out)
    noop_delta = _dropout_is_noop()
    mini_challenge(out, seeds)
    what_went_wrong(out, cells, noop_delta)
    return cells
