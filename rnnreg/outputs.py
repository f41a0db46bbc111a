"""An ablation report's files: summary.csv, summary.json, summary.md and the plots, each written atomically.

:mod:`rnnreg.report` computes and renders; this module draws (matplotlib, Agg) and writes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from rnnreg import mechanisms
from rnnreg.fsio import atomic_write_bytes, atomic_write_text
from rnnreg.report import (
    METRICS,
    Report,
    _json_safe,
    render_csv,
    render_markdown,
)


def plot_report(report: Report, curves: dict[str, list[list[float | None]]], folder: Path) -> list[str]:
    """Write means.png, forest.png and curves.png into ``folder``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    label = METRICS[report.metric]

    # Variant means with their 95% CI, the linear reference included (hatched).
    rows = [r for r in report.variants if r.metrics[report.metric] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
        for i, r in enumerate(rows):
            s = r.metrics[report.metric]
            assert s is not None
            lo = s.mean - s.ci_low if s.n > 1 else 0.0
            hi = s.ci_high - s.mean if s.n > 1 else 0.0
            color = "tab:gray" if r.kind == "linear" else "tab:blue"
            ax.errorbar(s.mean, i, xerr=[[lo], [hi]], fmt="o", color=color, capsize=4)
        ax.set_yticks(range(len(rows)), [r.name + (" (reference)" if r.kind == "linear" else "") for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"{label}: mean over seeds, 95% CI")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        _save(fig, folder / "means.png")
        plt.close(fig)
        written.append("means.png")

    # Forest plot of paired differences: the seed-only CI (thick) and seeds + test-set CI (thin).
    comps = [c for c in report.comparisons if c.comparison is not None]
    if comps:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(comps) + 1.4))
        for i, c in enumerate(comps):
            cmp = c.comparison
            assert cmp is not None
            seeds_ci = ax.plot([cmp.ci_low, cmp.ci_high], [i, i], color="tab:blue", lw=4, alpha=0.7)[0]
            if c.combined is not None:
                both_ci = ax.plot([c.combined[1], c.combined[2]], [i + 0.22] * 2, color="tab:gray", lw=1.5)[0]
            ax.plot(cmp.mean_diff, i, "o", color="black")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(comps)), [f"{c.a} vs {c.b}" for c in comps])
        ax.invert_yaxis()
        ax.set_xlabel(f"paired difference in {label} (A minus B)")
        handles = [(seeds_ci, "95% CI over seeds")]
        if any(c.combined is not None for c in comps):
            handles.append((both_ci, "95% CI over seeds and test examples"))
        ax.legend([h for h, _ in handles], [t for _, t in handles], fontsize=7, loc="best")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        _save(fig, folder / "forest.png")
        plt.close(fig)
        written.append("forest.png")

    # What each trick did: one panel per mechanism, a bar per RNN variant, the inert threshold dashed.
    rnn = [r for r in report.variants if r.kind == "rnn" and any(x is not None for x in r.mechanisms.values())]
    panels = [
        ("clip_rate", "clip rate (share of steps clipped)", mechanisms.CLIP_INERT_BELOW),
        ("decay_shrink", "decay shrink over the run", mechanisms.DECAY_INERT_BELOW),
        ("dropout_loss_gap", "loss gap: dropout on - off (nats)", mechanisms.DROPOUT_INERT_BELOW),
        ("val_ece", "validation ECE", None),
    ]
    if rnn:
        fig, axes = plt.subplots(1, len(panels), figsize=(12, 0.4 * len(rnn) + 1.6), sharey=True)
        for ax, (key, title, threshold) in zip(axes, panels, strict=True):
            heights = [r.mechanisms.get(key) for r in rnn]
            ax.barh(range(len(rnn)), [np.nan if h is None else h for h in heights], color="tab:blue", alpha=0.8)
            if threshold is not None:
                ax.axvline(threshold, color="tab:red", ls="--", lw=1, label="inert below")
                ax.legend(fontsize=7, loc="lower right")
            ax.set_title(title, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(rnn)), [r.name for r in rnn])
        axes[0].invert_yaxis()
        fig.tight_layout()
        _save(fig, folder / "mechanisms.png")
        plt.close(fig)
        written.append("mechanisms.png")

    # Validation macro-F1 per epoch, mean over seeds, per variant.
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, runs in curves.items():
            if not runs:
                continue
            length = max(len(curve) for curve in runs)
            grid = np.full((len(runs), length), np.nan)
            for j, curve in enumerate(runs):
                grid[j, : len(curve)] = [np.nan if v is None else v for v in curve]
            ax.plot(range(1, length + 1), np.nanmean(grid, axis=0), marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation macro-F1 (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, folder / "curves.png")
        plt.close(fig)
        written.append("curves.png")
    return written


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def write_outputs(report: Report, curves: dict[str, list[list[float | None]]], folder: Path) -> list[str]:
    """summary.csv/json/md and the plots in ``folder`` (each written atomically); returns the names written."""
    plots = plot_report(report, curves, folder)
    atomic_write_text(folder / "summary.csv", render_csv(report))
    atomic_write_text(folder / "summary.json", json.dumps(_json_safe(report.to_dict()), indent=2) + "\n")
    atomic_write_text(folder / "summary.md", render_markdown(report, plots))
    return ["summary.csv", "summary.json", "summary.md", *plots]
