"""Render the README's benchmark tables from the JSON of one ``rnnreg bench --json FILE`` run.

    python tools/bench_tables.py bench.json

Prints three markdown tables: the goals' shape (the ``step`` and ``epoch`` rows), the main job's rows (``main`` and
``mainep``) and the goal lines, as ``rnnreg bench`` judged them from the same rows. The README quotes these as
printed, so its figures come from a real run and not from a hand-edited table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from rnnreg.bench.goals import goals
from rnnreg.bench.records import Record

NAMES = {
    "floor": "kernel floor",
    "regularized": "regularized",
    "unregularized": "unregularized",
    "notebook_packed": "notebook packed",
    "rnnreg_train": "rnnreg (defaults)",
}


def records(path: Path) -> tuple[list[Record], dict[str, object]]:
    rows = json.loads(path.read_text("utf-8"))
    fields = {f.name for f in dataclasses.fields(Record)}
    machine = {k: v for k, v in rows[0].items() if k not in fields}
    return [Record(**{k: v for k, v in row.items() if k in fields}) for row in rows], machine


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def step_table(rows: list[Record]) -> list[str]:
    out = [
        "| model | precision (LSTM ran) | median ms (IQR) | CPU ms | tokens/s | x fp32 | x floor | GFLOP/s | peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r.group == "step":
            ran = r.precision if r.rnn_dtype == r.precision else f"{r.precision} (LSTM {r.rnn_dtype})"
            out.append(
                f"| {NAMES.get(r.name, r.name)} | {ran} | {r.median_ms:,.1f} ({r.q1_ms:,.1f}-{r.q3_ms:,.1f}) | "
                f"{r.cpu_ms:,.1f} | {r.tokens_per_s:,.0f} | {_ratio(r.ratio_vs_fp32)} | {_ratio(r.ratio_vs_floor)} | "
                f"{r.gflops_per_s:.1f} | {r.peak_fraction:.0%} |"
            )
        elif r.group == "epoch":
            kind = "bucketed" if r.name.endswith("bucketed") else "random batches"
            out.append(
                f"| `movies` epoch, {kind} | fp32 | {r.median_ms / 1e3:.2f} s | {(r.cpu_ms or 0) / 1e3:.2f} s | "
                f"{r.tokens_per_s:,.0f} | | | | |"
            )
    return out


def main_table(rows: list[Record]) -> list[str]:
    cells: dict[tuple[str, str, str], Record] = {(r.group, r.name, r.asked): r for r in rows}
    precisions = [p for p in ("fp32", "bf16") if ("main", "floor", p) in cells]
    head = " | ".join(f"floor {p} | rnnreg {p}" for p in precisions)
    out = [f"| row | {head} |", "| --- |" + " --- |" * (2 * len(precisions))]
    for group, label, scale, unit in (("main", "`main` step", 1.0, "ms"), ("mainep", "`mainep`, one epoch", 1e3, "s")):
        if ("main" if group == "main" else "mainep", "floor", "fp32") not in cells:
            continue
        shape = cells[(group, "floor", "fp32")]
        row = [f"{label}, {shape.batch_size} x {shape.seq_len}"]
        for p in precisions:
            floor, ours = cells[(group, "floor", p)], cells[(group, "rnnreg_train", p)]
            digits = 1 if unit == "ms" else 2
            row.append(f"{floor.median_ms / scale:.{digits}f} {unit}")
            row.append(f"{ours.median_ms / scale:.{digits}f} {unit} ({ours.ratio_vs_floor:.3f}x)")
        out.append("| " + " | ".join(row) + " |")
    return out


def goal_table(rows: list[Record]) -> list[str]:
    out = ["| goal | target | wall | CPU time |", "| --- | --- | --- | --- |"]
    for g in goals(rows):
        target = f"abs <= {g.target}" if g.compare == "|x|<=" else f"{g.compare} {g.target}"
        shown = [
            "not measured" if v is None else f"{v:.3f} {'meets' if g._met(v) else 'MISSES'}"
            for v in (g.value, g.cpu_value)
        ]
        out.append(f"| {g.what} | {target} | {shown[0]} | {shown[1]} |")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    rows, machine = records(Path(argv[0]))
    print(f"<!-- {machine} -->")
    for table in (step_table(rows), main_table(rows), goal_table(rows)):
        print("\n".join(table))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
