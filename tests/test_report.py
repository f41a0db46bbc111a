"""Ablation reports from hand-made run records: numbers, pairing by seed, Holm across the table, outputs."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from rnnreg.ablation import LINEAR, Comparison, Plan, Variant
from rnnreg.config import Experiment
from rnnreg.outputs import write_outputs
from rnnreg.report import build_report, curves, render_markdown, render_text

Y_TEST = [0, 1, 0, 1, 1, 0, 1, 0]


def _record(name: str, seed: int, acc: float | None, status: str = "ok", **extra: Any) -> dict[str, Any]:
    return {
        "key": f"{name}/{seed}",
        "variant": name,
        "seed": seed,
        "status": status,
        "error": None if status == "ok" else "RuntimeError: boom",
        "test_acc": acc,
        "test_f1": acc,
        "val_acc": acc,
        "val_f1": acc,
        "best_epoch": 2,
        "train_loss": 0.5,
        "skipped_steps": 0,
        "amp": "off",
        "wall_s": 1.0,
        "val_curve": [0.5, 0.6],
        **extra,
    }


def _plan(names: list[str], comparisons: list[tuple[str, str]], seeds: int, linear: bool = False) -> Plan:
    return Plan(
        tuple(Variant(n, Experiment(), n) for n in names),
        tuple(Comparison(a, b, "vs baseline") for a, b in comparisons),
        tuple(range(seeds)),
        fixed_split=False,
        linear=linear,
    )


def _records(values: dict[str, list[float | None]]) -> tuple[dict[str, dict], dict[tuple[str, int], str]]:
    records, keys = {}, {}
    for name, accs in values.items():
        for seed, acc in enumerate(accs):
            r = _record(name, seed, acc)
            records[r["key"]] = r
            keys[(name, seed)] = r["key"]
    return records, keys


def test_variant_means_and_paired_differences_match_hand_computed_values() -> None:
    values = {"baseline": [0.70, 0.72, 0.74, 0.70], "regularized": [0.75, 0.76, 0.77, 0.76]}
    records, keys = _records(values)
    report = build_report(_plan(list(values), [("regularized", "baseline")], 4), records, keys, data="d")
    base, reg = report.variants
    # baseline mean = (0.70 + 0.72 + 0.74 + 0.70) / 4 = 0.715; std = sqrt(((-.015)^2+(.005)^2+(.025)^2+(-.015)^2)/3)
    assert base.metrics["test_acc"].mean == pytest.approx(0.715)
    assert base.metrics["test_acc"].std == pytest.approx(math.sqrt((0.015**2 + 0.005**2 + 0.025**2 + 0.015**2) / 3))
    assert reg.metrics["test_acc"].mean == pytest.approx(0.76)
    (row,) = report.comparisons
    # differences per seed: 0.05, 0.04, 0.03, 0.06 -> mean 0.045
    assert row.comparison.n == 4
    assert row.comparison.mean_diff == pytest.approx(0.045)
    assert row.p_adjusted == pytest.approx(row.comparison.p_value)  # a family of one: Holm changes nothing
    assert row.comparison.p_improve == 1.0
    assert "regularized scores test accuracy 0.760 and baseline 0.715" in report.answer


def test_pairing_uses_only_seeds_both_variants_finished() -> None:
    values = {"baseline": [0.70, 0.72, 0.74, 0.70], "regularized": [0.75, 0.76, 0.77, 0.76]}
    records, keys = _records(values)
    records["regularized/1"]["status"] = "failed"
    del records["baseline/3"]
    report = build_report(_plan(list(values), [("regularized", "baseline")], 4), records, keys, data="d")
    (row,) = report.comparisons
    assert row.comparison.n == 2  # seeds 0 and 2
    assert row.comparison.mean_diff == pytest.approx((0.05 + 0.03) / 2)
    assert row.verdict.label == "no verdict"
    assert [(f["variant"], f["seed"]) for f in report.failures] == [("regularized", 1)]
    assert report.variants[1].failed == 1 and report.variants[1].seeds == 3


def test_holm_is_applied_across_the_comparisons_of_one_table() -> None:
    values = {
        "baseline": [0.70, 0.72, 0.74, 0.70, 0.71],
        "a": [0.75, 0.76, 0.77, 0.76, 0.74],
        "b": [0.71, 0.71, 0.76, 0.70, 0.73],
    }
    records, keys = _records(values)
    report = build_report(_plan(list(values), [("a", "baseline"), ("b", "baseline")], 5), records, keys, data="d")
    raw = sorted((r.comparison.p_value, r.p_adjusted) for r in report.comparisons)
    # Holm with m = 2: the smaller p doubles, the larger stays (but never below the smaller's adjusted value).
    assert raw[0][1] == pytest.approx(min(1.0, 2 * raw[0][0]))
    assert raw[1][1] == pytest.approx(max(raw[1][0], raw[0][1]))


def test_a_clear_effect_over_enough_seeds_is_called_helps_and_a_null_one_is_not() -> None:
    helps = {"baseline": [0.70, 0.72, 0.74, 0.70, 0.71, 0.73], "regularized": [0.80, 0.81, 0.83, 0.80, 0.80, 0.83]}
    records, keys = _records(helps)
    report = build_report(_plan(list(helps), [("regularized", "baseline")], 6), records, keys, data="d")
    assert report.comparisons[0].verdict.label == "helps"
    hurts = {"baseline": helps["regularized"], "regularized": helps["baseline"]}
    records, keys = _records(hurts)
    report = build_report(_plan(list(hurts), [("regularized", "baseline")], 6), records, keys, data="d")
    assert report.comparisons[0].verdict.label == "hurts"
    same = {"baseline": [0.70, 0.72, 0.74, 0.70], "regularized": [0.72, 0.70, 0.73, 0.71]}
    records, keys = _records(same)
    report = build_report(_plan(list(same), [("regularized", "baseline")], 4), records, keys, data="d")
    assert report.comparisons[0].verdict.label in ("inconclusive", "no detectable difference")


def test_the_combined_interval_uses_the_stored_test_predictions() -> None:
    # Two seeds, eight test examples; A is right on every example, B on half of them.
    records, keys = {}, {}
    for seed in range(3):
        for name, pred in (("baseline", [0, 0, 0, 0, 1, 1, 1, 1]), ("regularized", Y_TEST)):
            acc = sum(p == y for p, y in zip(pred, Y_TEST, strict=True)) / len(Y_TEST)
            r = _record(name, seed, acc, test_pred=pred)
            records[r["key"]], keys[(name, seed)] = r, r["key"]
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline")], 3)
    report = build_report(plan, records, keys, data="d", y_test=Y_TEST, n_boot=500)
    point, low, high = report.comparisons[0].combined
    assert point == pytest.approx(0.5)  # 1.0 - 0.5 on the original data
    assert low < 0.5 < high  # resampling 8 test examples moves the difference
    without = build_report(plan, records, keys, data="d", y_test=None)
    assert without.comparisons[0].combined is None


def test_outputs_are_written_and_json_holds_no_nan(tmp_path: Path) -> None:
    values = {"baseline": [0.70, 0.72, 0.74], "regularized": [0.75, 0.76, 0.77], LINEAR: [0.8, 0.8, 0.8]}
    records, keys = _records(values)
    records["baseline/0"] = _record("baseline", 0, None, status="diverged")
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline"), ("regularized", LINEAR)], 3, linear=True)
    report = build_report(plan, records, keys, data="my data")
    names = write_outputs(report, curves(plan, keys, records), tmp_path)
    assert set(names) == {"summary.csv", "summary.json", "summary.md", "means.png", "forest.png", "curves.png"}
    for png in ("means.png", "forest.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["variants"][0]["failed"] == 1
    rows = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert rows[0][:3] == ["table", "name", "note"] and rows[1][1] == "baseline"
    text = render_text(report)
    assert "linear reference [reference]" in text
    assert "baseline seed 0: diverged: RuntimeError: boom" in text
    assert "![forest.png](forest.png)" in render_markdown(report, ["forest.png"])


def test_unknown_metric_is_refused() -> None:
    records, keys = _records({"baseline": [0.7, 0.7]})
    with pytest.raises(ValueError, match="metric must be one of test_acc"):
        build_report(_plan(["baseline"], [], 2), records, keys, data="d", metric="loss")


# ---------------------------------------------------------------------------------------------------------------
# Convergence and mechanisms


def _mech(**values: float | None) -> dict[str, float | None]:
    base = dict.fromkeys(
        ("clip_rate", "grad_norm_median", "grad_norm_p90", "decay_shrink", "matrix_norm", "gen_gap"), 0.5
    )
    return {**base, "dropout_loss_gap": 0.1, "val_ece": 0.05, "val_mean_max_prob": 0.8, "val_nll": 0.5, **values}


def test_a_comparison_on_runs_cut_while_improving_never_reads_no_detectable_difference() -> None:
    # Differences of -0.002..+0.002 around 0: with converged runs this is 'no detectable difference'.
    values = {"baseline": [0.700, 0.710, 0.720, 0.730, 0.740], "regularized": [0.702, 0.709, 0.721, 0.728, 0.740]}
    records, keys = _records(values)
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline")], 5)
    converged = build_report(plan, records, keys, data="d", min_effect=0.05)
    assert converged.comparisons[0].verdict.label == "no detectable difference"
    assert "cut" not in converged.answer
    records["baseline/3"]["truncated"] = True
    cut = build_report(plan, records, keys, data="d", min_effect=0.05)
    assert cut.comparisons[0].verdict.label == "inconclusive"
    assert cut.comparisons[0].verdict.text == "inconclusive: runs cut before convergence"
    assert "1 of 10 runs of regularized and baseline were cut before they converged" in cut.answer
    assert [r.truncated for r in cut.variants] == [1, 0]
    assert "1/5" in render_text(cut)


def test_a_significant_difference_on_cut_runs_keeps_its_direction_and_says_the_runs_were_cut() -> None:
    values = {"baseline": [0.70, 0.71, 0.72, 0.73, 0.74], "regularized": [0.80, 0.82, 0.81, 0.83, 0.84]}
    records, keys = _records(values)
    for r in records.values():
        r["truncated"] = True
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline")], 5)
    v = build_report(plan, records, keys, data="d").comparisons[0].verdict
    assert v.label == "helps" and v.text == "helps (runs cut before convergence)"


def test_mechanisms_are_averaged_over_seeds_and_the_main_variants_inert_tricks_named() -> None:
    records, keys = _records({"regularized": [0.8, 0.8, 0.8], "without label_smoothing": [0.8, 0.8, 0.8]})
    rates = [0.01, 0.02, 0.03]  # mean 2%: below the 5% threshold
    for seed, rate in enumerate(rates):
        records[f"regularized/{seed}"]["mechanisms"] = _mech(clip_rate=rate, val_mean_max_prob=0.80)
        records[f"without label_smoothing/{seed}"]["mechanisms"] = _mech(val_mean_max_prob=0.805)
    plan = _plan(["regularized", "without label_smoothing"], [("regularized", "without label_smoothing")], 3)
    report = build_report(plan, records, keys, data="d")
    row = report.variants[0]
    assert row.mechanisms["clip_rate"] == pytest.approx(0.02)
    assert set(row.inert) == {"clipping"}
    # Smoothing lowered the mean top probability by only 0.005: inert, judged against the run without it.
    assert set(report.inert) == {"clipping", "label_smoothing"}
    assert "clipping acted on 2.0% of steps" in report.answer
    text = render_text(report)
    assert "clip rate" in text and "2.0%" in text
    md = render_markdown(report)
    assert "## What each trick did" in md


def test_summary_csv_holds_the_truncation_count_and_every_mechanism_mean(tmp_path: Path) -> None:
    records, keys = _records({"baseline": [0.7, 0.7, 0.7]})
    for seed in range(3):
        records[f"baseline/{seed}"]["mechanisms"] = _mech(val_ece=0.01 * (seed + 1))
        records[f"baseline/{seed}"]["truncated"] = seed == 0
    plan = _plan(["baseline"], [], 3)
    write_outputs(build_report(plan, records, keys, data="d"), {}, tmp_path)
    text = (tmp_path / "summary.csv").read_text()
    row = next(csv.DictReader(io.StringIO(text.split("\n\n")[0])))
    assert row["truncated"] == "1"
    assert float(row["val_ece"]) == pytest.approx(0.02)
    assert float(row["clip_rate"]) == pytest.approx(0.5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["variants"][0]["mechanisms"]["val_ece"] == pytest.approx(0.02)
    assert (tmp_path / "mechanisms.png").is_file()


def test_a_lower_is_better_metric_is_compared_so_that_a_positive_difference_favours_a() -> None:
    records, keys = _records({"baseline": [0.7] * 4, "regularized": [0.7] * 4})
    eces = {"baseline": [0.10, 0.12, 0.11, 0.13], "regularized": [0.03, 0.04, 0.02, 0.05]}
    for name, values in eces.items():
        for seed, ece in enumerate(values):
            records[f"{name}/{seed}"]["mechanisms"] = _mech(val_ece=ece)
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline")], 4)
    report = build_report(plan, records, keys, data="d", metric="val_ece")
    cmp = report.comparisons[0].comparison
    # B - A per seed: 0.07, 0.08, 0.09, 0.08 -> mean 0.08; regularized (A) is better calibrated.
    assert cmp.mean_diff == pytest.approx(0.08)
    assert report.comparisons[0].verdict.label == "helps"
    assert report.variants[1].metrics["val_ece"].mean == pytest.approx(0.035)
    assert "lower-is-better" in render_text(report)


@pytest.mark.parametrize(
    ("linear", "relation"),
    [
        ([0.79, 0.80, 0.81, 0.80], "0.800, above"),
        ([0.70, 0.71, 0.72, 0.71], "0.710, below"),
        ([0.7601, 0.7599, 0.7602, 0.7598], "0.760, level with"),
    ],
)
def test_the_answer_places_the_linear_reference_as_the_printed_numbers_do(linear: list[float], relation: str) -> None:
    values = {"baseline": [0.70, 0.72, 0.74, 0.70], "regularized": [0.75, 0.76, 0.77, 0.76], LINEAR: linear}
    records, keys = _records(values)
    plan = _plan(["baseline", "regularized"], [("regularized", "baseline")], 4, linear=True)
    report = build_report(plan, records, keys, data="d")
    assert f"the linear reference scores {relation} regularized." in report.answer
