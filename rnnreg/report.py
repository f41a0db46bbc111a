"""Ablation reports: per-variant summaries, paired comparisons with verdicts, and their tables.

:func:`build_report` turns run records into a :class:`Report` (all numbers, no formatting); the renderers give it
for the terminal, Markdown and CSV. :mod:`rnnreg.outputs` draws the plots and writes the files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rnnreg import mechanisms, stats
from rnnreg.ablation import LINEAR, TRICKS, Plan

METRICS = {
    "test_acc": "test accuracy",
    "test_f1": "test macro-F1",
    "val_acc": "validation accuracy",
    "val_f1": "validation macro-F1",
    "val_ece": "validation ECE",
    "val_nll": "validation NLL",
}
SCORES = ("test_acc", "test_f1", "val_acc", "val_f1")  # the columns of the variant table
LOWER_IS_BETTER = frozenset({"val_ece", "val_nll"})  # compared as B - A, so that a positive difference favours A
MIN_SEEDS = 3  # below this no verdict is given
ALPHA = 0.05  # the level of every verdict, after Holm's correction across the table
# What each run's `mechanisms` holds, with the mechanism table's column names (see rnnreg.mechanisms).
MECHANISMS = {
    "clip_rate": "clip rate",
    "grad_norm_median": "|grad| median",
    "grad_norm_p90": "|grad| p90",
    "decay_shrink": "decay shrink",
    "matrix_norm": "‖W‖",
    "gen_gap": "acc gap (train - val)",
    "dropout_loss_gap": "loss gap (train - eval mode)",
    "val_ece": "val ECE",
    "val_mean_max_prob": "mean max p",
    "val_nll": "val NLL",
}
CUT = "runs cut before convergence"


@dataclass(frozen=True)
class VariantRow:
    name: str
    note: str
    kind: str  # "rnn" or "linear"
    seeds: int  # finished runs
    failed: int  # failed or diverged runs
    metrics: dict[str, stats.Summary | None]  # per METRICS key
    best_epoch: float | None
    train_loss: float | None
    skipped_steps: int
    amp: str  # what ran, e.g. "off" or "bf16" (or "bf16/off" when it varied)
    wall_s: float | None  # mean seconds per run
    epochs_run: float | None = None  # mean epochs trained
    truncated: int = 0  # runs that ended at train.epochs while validation was still improving
    mechanisms: dict[str, float | None] = field(default_factory=dict)  # means over seeds, per MECHANISMS key
    inert: dict[str, str] = field(default_factory=dict)  # trick -> why it is inert here (from the means)


@dataclass(frozen=True)
class ComparisonRow:
    a: str
    b: str
    family: str
    comparison: stats.PairedDifference | None  # None when fewer than 2 paired seeds
    p_adjusted: float
    combined: tuple[float, float, float] | None  # paired bootstrap over seeds and test examples: point, low, high
    improvement: str  # Bouthillier et al.'s decision on P(A > B): "better", "worse", "undecided"
    verdict: stats.Verdict | None


@dataclass
class Report:
    data: str
    metric: str
    seeds: int  # seeds asked for
    variants: list[VariantRow]
    comparisons: list[ComparisonRow]
    failures: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""
    min_effect: float = 0.01
    inert: dict[str, str] = field(default_factory=dict)  # the main variant's inert tricks, label smoothing included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = _finite(values)
    return float(np.mean(kept)) if kept else None


def _summary(values: Sequence[float | None]) -> stats.Summary | None:
    kept = _finite(values)
    return stats.summarize(kept) if kept else None


def value(record: dict[str, Any], metric: str) -> float | None:
    """A run's value of ``metric``: a score of the record itself or one of its mechanism measurements."""
    if metric in record:
        return record[metric]
    return (record.get("mechanisms") or {}).get(metric)


def _by_variant(plan: Plan, records: dict[str, dict[str, Any]], keys: dict[tuple[str, int], str]) -> dict[str, dict]:
    """``{variant: {seed: record}}`` for the plan's variants (records looked up by run key, not by name)."""
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in plan.names()}
    for (name, seed), key in keys.items():
        if key in records:
            out[name][seed] = records[key]
    return out


def build_report(
    plan: Plan,
    records: dict[str, dict[str, Any]],
    keys: dict[tuple[str, int], str],
    *,
    data: str,
    metric: str = "test_acc",
    y_test: Sequence[int] | None = None,
    num_classes: int = 2,
    min_effect: float = 0.01,
    n_boot: int = 2000,
) -> Report:
    """Summaries, comparisons, verdicts and the one-sentence answer for the plan's finished runs.

    Args:
        plan: what was asked (variants, comparisons, seeds).
        records: finished runs by key; ``keys`` maps (variant, seed) to the key of its run.
        data: one line describing the data, for the report.
        metric: the METRICS key the comparisons use.
        y_test: true test labels, for the interval that also counts test-set sampling (test metrics only).
        min_effect: the smallest difference worth detecting (the verdict's "no detectable difference" threshold).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)} (got {metric!r})")
    runs = _by_variant(plan, records, keys)
    notes = {v.name: v.note for v in plan.variants} | {LINEAR: "TF-IDF 1-2-grams + logistic regression"}
    experiments = {v.name: v.experiment for v in plan.variants}
    rows = []
    for name in plan.names():
        ok = [r for r in runs[name].values() if r["status"] == "ok"]
        amps = sorted({str(r.get("amp")) for r in ok})
        means = {m: _mean([(r.get("mechanisms") or {}).get(m) for r in ok]) for m in MECHANISMS}
        rows.append(
            VariantRow(
                name=name,
                note=notes[name],
                kind="linear" if name == LINEAR else "rnn",
                seeds=len(ok),
                failed=sum(r["status"] != "ok" for r in runs[name].values()),
                metrics={m: _summary([value(r, m) for r in ok]) for m in METRICS},
                best_epoch=_mean([r.get("best_epoch") for r in ok]),
                train_loss=_mean([r.get("train_loss") for r in ok]),
                skipped_steps=int(sum(r.get("skipped_steps") or 0 for r in ok)),
                amp="/".join(amps) if amps else "-",
                wall_s=_mean([r.get("wall_s") for r in ok]),
                epochs_run=_mean([r.get("epochs_run") for r in ok]),
                truncated=sum(bool(r.get("truncated")) for r in ok),
                mechanisms=means if name != LINEAR else {},
                inert=mechanisms.inert(means, experiments[name]) if name in experiments and ok else {},
            )
        )
    cut = {r.name for r in rows if r.truncated}
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    # Comparisons: paired by seed; Holm across the table; the combined interval where test predictions exist.
    raw: list[tuple[Any, ...]] = []
    for c in plan.comparisons:
        a, b = runs[c.a], runs[c.b]
        seeds = sorted(s for s in a if s in b and a[s]["status"] == "ok" and b[s]["status"] == "ok")
        seeds = [s for s in seeds if value(a[s], metric) is not None and value(b[s], metric) is not None]
        cmp = None
        if len(seeds) >= 2:
            va = [sign * value(a[s], metric) for s in seeds]  # type: ignore[operator]
            vb = [sign * value(b[s], metric) for s in seeds]  # type: ignore[operator]
            cmp = stats.compare_paired(va, vb, n_boot=n_boot)
        combined = None
        if cmp is not None and metric.startswith("test") and y_test is not None:
            pa = np.array([a[s].get("test_pred") for s in seeds])
            pb = np.array([b[s].get("test_pred") for s in seeds])
            if pa.ndim == 2 and pa.shape == pb.shape and pa.shape[1] == len(y_test):
                combined = stats.paired_bootstrap_diff(
                    pa,
                    pb,
                    np.asarray(y_test),
                    metric="accuracy" if metric == "test_acc" else "macro_f1",
                    num_classes=num_classes,
                    n_boot=n_boot,
                )
        raw.append((c, cmp, combined))
    tested = [i for i, (_, cmp, _) in enumerate(raw) if cmp is not None]
    adjusted = dict(zip(tested, stats.holm([raw[i][1].p_value for i in tested]), strict=True))
    # Seeds are planned at Holm's strictest step, alpha / m: enough seeds for any position in the table.
    plan_alpha = ALPHA / max(len(tested), 1)
    comparisons = []
    for i, (c, cmp, combined) in enumerate(raw):
        p_adj = adjusted.get(i, math.nan)
        verdict = None
        improvement = "undecided"
        if cmp is not None:
            ci = (combined[1], combined[2]) if combined is not None else None
            verdict = stats.verdict(
                cmp, p_adj, combined_ci=ci, min_effect=min_effect, min_seeds=MIN_SEEDS, plan_alpha=plan_alpha
            )
            if {c.a, c.b} & cut:
                verdict = _cut_verdict(verdict)
            improvement = stats.improvement_decision(cmp.p_improve_low, cmp.p_improve_high)
        comparisons.append(ComparisonRow(c.a, c.b, c.family, cmp, p_adj, combined, improvement, verdict))

    failures = sorted(
        (r for name in plan.names() for r in runs[name].values() if r["status"] != "ok"),
        key=lambda r: (r["variant"], r["seed"]),
    )
    report = Report(data, metric, len(plan.seeds), rows, comparisons, failures, min_effect=min_effect)
    report.inert = main_inert(report)
    report.answer = answer(report)
    return report


def _cut_verdict(v: stats.Verdict) -> stats.Verdict:
    """A comparison resting on runs cut while still improving never says 'no detectable difference'."""
    if v.label == "no verdict":
        return v
    if v.label in ("no detectable difference", "inconclusive"):
        return stats.Verdict("inconclusive", f"inconclusive: {CUT}", v.mde, v.seeds_needed)
    return stats.Verdict(v.label, f"{v.text} ({CUT})", v.mde, v.seeds_needed)


def main_inert(report: Report) -> dict[str, str]:
    """The inert tricks of the regularized variant (or the first RNN variant), label smoothing judged against the
    variant that leaves it out."""
    rows = {r.name: r for r in report.variants}
    main = rows.get("regularized") or next((r for r in report.variants if r.kind == "rnn"), None)
    if main is None:
        return {}
    out = dict(main.inert)
    without = rows.get("without label_smoothing")
    if main.name == "regularized" and without is not None:
        reason = mechanisms.smoothing_inert(
            main.mechanisms.get("val_mean_max_prob"), without.mechanisms.get("val_mean_max_prob")
        )
        if reason:
            out["label_smoothing"] = reason
    return {trick: out[trick] for trick in TRICKS if trick in out}


def _fmt(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def answer(report: Report) -> str:
    """The notebook's question, answered in one sentence from the regularized-vs-baseline comparison."""
    label = METRICS[report.metric]
    rows = {r.name: r for r in report.variants}
    main = next((c for c in report.comparisons if c.family == "vs baseline" and c.b == "baseline"), None)
    if main is None and report.comparisons:
        main = report.comparisons[0]
    if main is None or main.comparison is None or main.verdict is None:
        return f"Not enough finished runs to compare variants on {label} yet."
    a, b, cmp = rows[main.a].metrics[report.metric], rows[main.b].metrics[report.metric], main.comparison
    text = (
        f"Over {cmp.n} paired seeds, {main.a} scores {label} {_fmt(a.mean if a else None)} and {main.b} "
        f"{_fmt(b.mean if b else None)} (difference {_fmt(cmp.mean_diff, signed=True)}, 95% CI "
        f"[{_fmt(cmp.ci_low, signed=True)}, {_fmt(cmp.ci_high, signed=True)}]): {main.verdict.text}"
    )
    linear = rows.get(LINEAR)
    lin = linear.metrics[report.metric] if linear else None
    if lin is not None and a is not None:
        relation = "above" if lin.mean > a.mean else "below"
        if _fmt(lin.mean) == _fmt(a.mean):  # equal as printed: "below" would contradict the two numbers shown
            relation = "level with"
        text += f"; the linear reference scores {_fmt(lin.mean)}, {relation} {main.a}"
    text += "."
    pair = (rows[main.a], rows[main.b])
    n_cut = sum(r.truncated for r in pair)
    if n_cut:
        text += (
            f" {n_cut} of {sum(r.seeds for r in pair)} runs of {main.a} and {main.b} were cut before they converged "
            "(validation still improving at the last epoch): raise the epoch cap (train.epochs) before reading this."
        )
    if report.inert:
        text += " Inert at these settings: " + "; ".join(report.inert.values()) + "."
    return text


# ---------------------------------------------------------------------------------------------------------------
# Tables


def variant_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The compared metric with std and 95% CI; the other metrics as means (columns no run has are left out)."""
    others = [m for m in SCORES if m != report.metric and any(r.metrics[m] for r in report.variants)]
    header = ["variant", "seeds", f"{METRICS[report.metric]}: mean ± std [95% CI]", *(METRICS[m] for m in others)]
    header += ["best epoch", "epochs", "cut", "amp", "s/run"]
    body = []
    for r in report.variants:
        cells = [
            r.name + (" [reference]" if r.kind == "linear" else ""),
            f"{r.seeds}" + (f" ({r.failed} failed)" if r.failed else ""),
        ]
        s = r.metrics[report.metric]
        if s is None:
            cells.append("-")
        elif s.n > 1:
            cells.append(f"{s.mean:.3f} ± {s.std:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]")
        else:
            cells.append(f"{s.mean:.3f}")
        cells += [_fmt(summary.mean if (summary := r.metrics[m]) else None) for m in others]
        cut = "-" if r.kind == "linear" else f"{r.truncated}/{r.seeds}"
        cells += [_fmt(r.best_epoch, 1), _fmt(r.epochs_run, 1), cut, r.amp, _fmt(r.wall_s, 0)]
        body.append(cells)
    return header, body


_PERCENT = ("clip_rate", "decay_shrink")


def mechanism_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """What each trick did, per RNN variant: means over seeds of each run's mechanism measurements."""
    header = ["variant", *MECHANISMS.values(), "inert here"]
    body = []
    for r in report.variants:
        if r.kind != "rnn":
            continue
        cells = [r.name]
        for key in MECHANISMS:
            x = r.mechanisms.get(key)
            cells.append("-" if x is None else f"{x:.1%}" if key in _PERCENT else _fmt(x, 3))
        cells.append(", ".join(t.replace("_", " ") for t in r.inert) or "-")
        body.append(cells)
    return header, body


def _mechanism_note(report: Report) -> str:
    return (
        "Mechanisms (means over seeds; rnnreg.mechanisms defines each): clip rate = share of steps whose pre-clip "
        "gradient norm exceeded train.max_norm; decay shrink = 1 - prod(1 - lr*wd) over the steps taken (decoupled "
        "decay only); ‖W‖ = L2 norm of the kept model's matrices; acc gap = training-sample accuracy minus validation "
        "accuracy; loss gap = training-sample loss with dropout on minus off; ECE over 15 equal-width bins. A trick "
        f"is inert when its clip rate < {mechanisms.CLIP_INERT_BELOW:.0%}, its decay shrink < "
        f"{mechanisms.DECAY_INERT_BELOW:.0%}, its loss gap < {mechanisms.DROPOUT_INERT_BELOW} nats, or (smoothing) it "
        f"lowers the mean max probability by < {mechanisms.SMOOTHING_INERT_BELOW} against the variant without it. "
        "cut = runs that hit train.epochs while validation was still improving."
    )


def comparison_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "comparison",
        "seeds",
        "difference",
        "95% CI (seeds)",
        "95% CI (seeds + test set)",
        "p (Holm)",
        "P(A>B)",
        "verdict",
    ]
    body = []
    for c in report.comparisons:
        cmp = c.comparison
        if cmp is None:
            body.append([f"{c.a} vs {c.b}", "0", "-", "-", "-", "-", "-", "no paired runs yet"])
            continue
        comb = "-" if c.combined is None else f"[{c.combined[1]:+.3f}, {c.combined[2]:+.3f}]"
        body.append(
            [
                f"{c.a} vs {c.b}",
                str(cmp.n),
                f"{cmp.mean_diff:+.3f}",
                f"[{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]",
                comb,
                f"{c.p_adjusted:.3g}",
                f"{cmp.p_improve:.2f} [{cmp.p_improve_low:.2f}, {cmp.p_improve_high:.2f}]",
                c.verdict.text if c.verdict else "-",
            ]
        )
    return header, body


def _text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def _footnote(report: Report) -> str:
    return (
        f"Comparisons use {METRICS[report.metric]}, paired by seed (each seed fixes the train/validation split, the "
        f"initialisation, the data order and the dropout stream). p: paired t-test, Holm-corrected across the table. "
        f"P(A>B): share of seeds where A wins, bootstrap CI (Bouthillier et al. 2021). No verdict below {MIN_SEEDS} "
        f"seeds; 'no detectable difference' means these seeds would detect a difference of "
        f"{report.min_effect:.3g} or more with 80% power, and seeds are planned, at alpha 0.05 divided by the number "
        f"of comparisons (Holm's strictest step). Other metric columns are means over seeds."
        + (
            f" {METRICS[report.metric]} is lower-is-better: differences are B minus A, so positive favours A."
            if report.metric in LOWER_IS_BETTER
            else ""
        )
    )


def render_text(report: Report) -> str:
    parts = [
        f"Ablation on {report.data}",
        "",
        _text_table(*variant_table(report)),
        "",
        _text_table(*comparison_table(report)),
        "",
        _footnote(report),
        "",
        _text_table(*mechanism_table(report)),
        "",
        _mechanism_note(report),
    ]
    parts += ["", report.answer]
    if report.failures:
        parts += ["", f"{len(report.failures)} run(s) did not finish:"]
        parts += [f"  {r['variant']} seed {r['seed']}: {r['status']}: {r.get('error')}" for r in report.failures]
    return "\n".join(parts)


def render_markdown(report: Report, plots: Sequence[str] = ()) -> str:
    parts = [
        f"# Ablation on {report.data}",
        "",
        f"**{report.answer}**",
        "",
        "## Variants",
        "",
        _md_table(*variant_table(report)),
        "",
        "## Comparisons",
        "",
        _md_table(*comparison_table(report)),
        "",
        _footnote(report),
        "",
        "## What each trick did",
        "",
        _md_table(*mechanism_table(report)),
        "",
        _mechanism_note(report),
    ]
    for name in plots:
        parts += ["", f"![{name}]({name})"]
    if report.failures:
        parts += ["", "## Runs that did not finish", ""]
        parts += [f"- {r['variant']} seed {r['seed']}: {r['status']}: {r.get('error')}" for r in report.failures]
    return "\n".join(parts) + "\n"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = ["n", "mean", "std", "ci_low", "ci_high"]
    writer.writerow(
        ["table", "name", "note", "seeds", "failed"]
        + [f"{m}_{c}" for m in METRICS for c in cols]
        + ["best_epoch", "amp", "wall_s", "epochs_run", "truncated", *MECHANISMS, "inert"]
    )
    for r in report.variants:
        values = []
        for m in METRICS:
            s = r.metrics[m]
            values += [getattr(s, c) if s else "" for c in cols]
        mech = [r.mechanisms.get(k, "") if r.mechanisms.get(k) is not None else "" for k in MECHANISMS]
        writer.writerow(
            [
                *["variant", r.name, r.note, r.seeds, r.failed, *values, r.best_epoch, r.amp, r.wall_s],
                *[r.epochs_run, r.truncated, *mech, "; ".join(r.inert)],
            ]
        )
    writer.writerow([])
    writer.writerow(
        [
            "table",
            "a",
            "b",
            "family",
            "n",
            "mean_diff",
            "ci_low",
            "ci_high",
            "combined_low",
            "combined_high",
            "p_value",
            "p_holm",
            "p_improve",
            "p_improve_low",
            "p_improve_high",
            "improvement",
            "verdict",
            "mde",
            "seeds_needed",
        ]
    )
    for c in report.comparisons:
        cmp, v = c.comparison, c.verdict
        writer.writerow(
            [
                "comparison",
                c.a,
                c.b,
                c.family,
                *([cmp.n, cmp.mean_diff, cmp.ci_low, cmp.ci_high] if cmp else ["", "", "", ""]),
                *(c.combined[1:] if c.combined else ["", ""]),
                *(
                    [cmp.p_value, c.p_adjusted, cmp.p_improve, cmp.p_improve_low, cmp.p_improve_high]
                    if cmp
                    else [""] * 5
                ),
                c.improvement,
                v.text if v else "",
                v.mde if v else "",
                (v.seeds_needed if v else "") or "",
            ]
        )
    return buf.getvalue()


def curves(
    plan: Plan, keys: dict[tuple[str, int], str], records: dict[str, dict[str, Any]]
) -> dict[str, list[list[float | None]]]:
    """Validation macro-F1 per epoch of every finished RNN run, by variant."""
    out: dict[str, list[list[float | None]]] = {v.name: [] for v in plan.variants}
    for (name, _seed), key in keys.items():
        record = records.get(key)
        if name in out and record is not None and record["status"] == "ok" and record.get("val_curve"):
            out[name].append(record["val_curve"])
    return out


def _json_safe(obj: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
