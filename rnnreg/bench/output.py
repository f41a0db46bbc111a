"""What a run leaves: the table rows, the JSON file and the plot, written atomically; output paths checked first."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
from collections.abc import Sequence
from pathlib import Path

from rnnreg.bench.hardware import Hardware
from rnnreg.bench.records import Record
from rnnreg.fsio import atomic_write_bytes, atomic_write_text, check_output_file

TABLE_HEADER = (
    f"{'group':<6} {'model':<16} {'B x T':>9} {'precision':<16} {'LSTM':<5} {'median ms (IQR)':>26} "
    f"{'cpu ms':>9} {'tokens/s':>10} {'x fp32':>7} {'x floor':>7} {'GFLOP/s':>8} {'peak':>5}"
)


def format_row(r: Record) -> str:
    shape = f"{r.batch_size}x{r.seq_len}"
    precision = r.precision if r.precision == r.asked else f"{r.precision} (asked {r.asked})"
    if r.group == "epoch":
        timing = f"{r.median_ms / 1e3:.2f} s ({r.q1_ms / 1e3:.2f}-{r.q3_ms / 1e3:.2f})"
    else:
        timing = f"{r.median_ms:.1f} ({r.q1_ms:.1f}-{r.q3_ms:.1f})"

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    peak = "-" if r.peak_fraction is None else f"{100 * r.peak_fraction:.0f}%"

    return (
        f"{r.group:<6} {r.name:<16} {shape:>9} {precision:<16} {r.rnn_dtype:<5} {timing:>26} "
        f"{num(r.cpu_ms, '.1f'):>9} {r.tokens_per_s:>10,.0f} {num(r.ratio_vs_fp32, '.3f'):>7} "
        f"{num(r.ratio_vs_floor, '.3f'):>7} {num(r.gflops_per_s, '.1f'):>8} {peak:>5}"
    )


def check_output_path(path: Path, what: str, suffix: str | None = None) -> None:
    """Raise ValueError now, not after minutes of timing, when ``path`` cannot be written.

    ``what`` names the parameter in the message (``"json path"``, ``"plot path"``); ``suffix`` is required of the
    name when given, and a ``.png`` needs matplotlib.
    """
    path = Path(path)
    check_output_file(path, what, suffix=suffix, example=f"bench{suffix or '.json'}")
    if suffix == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(
            f"{what} {str(path)!r} needs matplotlib, which is not installed; pip install matplotlib, or write no plot"
        )


def write_json(records: Sequence[Record], hardware: Hardware, path: Path) -> None:
    """A JSON list with one object per row, each also naming the machine it was measured on; written atomically."""
    path = Path(path)
    check_output_path(path, "json path")
    machine = {
        "cpu": hardware.cpu.model,
        "native_bf16": hardware.cpu.native_bf16,
        "lstm_bf16": hardware.lstm_bf16,
        "threads": hardware.threads,
        "torch": hardware.torch_version,
        "allocator": hardware.allocator,
    }
    rows = [dataclasses.asdict(r) | machine for r in records]
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")


def plot(records: Sequence[Record], hardware: Hardware, path: Path) -> None:
    """Step time against sequence length and against batch size, per precision, the project's model vs the floor.

    Rendered in memory, then written atomically: a failed write leaves no partial PNG and the previous file as it was.
    """
    path = Path(path)
    check_output_path(path, "plot path", ".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:green"}
    for ax, group, axis in ((axes[0], "length", "seq_len"), (axes[1], "batch", "batch_size")):
        rows = [r for r in records if r.group == group]
        for name, style in (("regularized", "-o"), ("floor", "--s")):
            for asked in colors:
                line = sorted((getattr(r, axis), r.median_ms) for r in rows if r.name == name and r.asked == asked)
                if line:
                    label = "rnnreg (regularized)" if name == "regularized" else "kernel floor (padded nn.LSTM)"
                    ran = next(r.rnn_dtype for r in rows if r.name == name and r.asked == asked)
                    xs, ys = zip(*line, strict=True)
                    ax.plot(xs, ys, style, color=colors[asked], label=f"{label}, {asked} (LSTM {ran})", markersize=4)
        fixed = rows[0].batch_size if group == "length" and rows else (rows[0].seq_len if rows else 0)
        ax.set_xlabel("padded length T" if group == "length" else "batch size B")
        ax.set_title(f"one train_step, {'B' if group == 'length' else 'T'}={fixed}", fontsize=10)
        ax.set_ylabel("median ms")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{hardware.cpu.model}, {hardware.threads} thread(s), torch {hardware.torch_version}", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
