"""The numbers users read, recomputed: summary.json, summary.csv and summary.md of an ablation against an oracle.

A small sweep with hand-chosen per-seed test predictions goes through ``build_report`` and ``write_outputs``; every
figure the files show is recomputed here from the predictions with numpy and scipy alone (never ``rnnreg.stats``):
means and t-intervals, paired differences, Holm's adjusted p, P(A>B), the interval over seeds and test examples,
the verdicts and the one-sentence answer. CSV columns are read by header name and JSON by key, so columns, keys and
tables added later do not break these tests. The property tests run the same comparison on random per-seed tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize
from scipy import stats as sps
from sklearn.metrics import f1_score

import rnnreg.outputs as outputs_module
import rnnreg.report as report_module
from rnnreg.ablation import LINEAR, Comparison, Plan, Variant
from rnnreg.config import Experiment
from rnnreg.outputs import write_outputs
from rnnreg.report import build_report

ALPHA, POWER = 0.05, 0.8

# ---------------------------------------------------------------------------------------------------------------
# The oracle: numpy and scipy only


def _t_summary(values: Sequence[float]) -> tuple[int, float, float, float, float]:
    """n, mean, sample std and the 95% Student-t interval of the mean."""
    x = np.asarray(values, dtype=float)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return n, mean, sd, mean - half, mean + half


def _paired_p(diffs: np.ndarray) -> float:
    """Two-sided paired t-test p; a constant difference is exact: 1.0 when it is 0, else 0.0."""
    if np.ptp(diffs) < 1e-12:
        return 1.0 if abs(diffs.mean()) < 1e-12 else 0.0
    return float(sps.ttest_1samp(diffs, 0.0).pvalue)


def _holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment written out: the i-th smallest p times (m - i), running maximum, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha``, integrated from its definition.

    T = (Z + nc) / sqrt(V / df) with Z standard normal and V chi-square(df); the test rejects when |T| > crit, so
    power = E_V[P(Z > crit sqrt(V/df) - nc) + P(Z < -crit sqrt(V/df) - nc)] (scipy's nct returns nan far out).
    """
    df, nc = n - 1, abs(effect) / sd * math.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)

    def rejects(v: float) -> float:
        c = crit * math.sqrt(v / df)
        return float((sps.norm.sf(c - nc) + sps.norm.cdf(-c - nc)) * sps.chi2.pdf(v, df))

    # Over the bulk of V only (quad over [0, inf) misses the narrow peak of a chi-square with many df).
    low, high = sps.chi2.ppf(1e-15, df), sps.chi2.isf(1e-15, df)
    return float(integrate.quad(rejects, low, high, points=[df], epsabs=1e-13, epsrel=1e-11, limit=200)[0])


def _mde(sd: float, n: int, alpha: float = ALPHA) -> float:
    """The difference n seeds detect with POWER at level ``alpha``: the root of power(effect) = POWER."""
    if sd == 0:
        return 0.0
    high = sd
    while _power(high, sd, n, alpha) < POWER:  # a bracket just above the root (far out, scipy's nct gives nan)
        high *= 1.25
    return float(optimize.brentq(lambda e: _power(e, sd, n, alpha) - POWER, 1e-9 * sd, high, xtol=1e-14))


def _needed(effect: float, sd: float, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (2 .. 10,000) whose power at ``effect`` reaches POWER; None if none do.

    Doubling n until the power suffices, then bisecting: the noncentral t is never asked far past the answer,
    where scipy returns nan.
    """
    low, high = 1, 2  # power(low) < POWER; power(1) is undefined, so 1 stands below every n
    while _power(effect, sd, high, alpha) < POWER:
        if high >= 10_000:
            return None
        low, high = high, min(2 * high, 10_000)
    while high - low > 1:
        mid = (low + high) // 2
        if _power(effect, sd, mid, alpha) >= POWER:
            high = mid
        else:
            low = mid
    return high


def _expected_verdict(
    diffs: np.ndarray, p_adj: float, combined: tuple[float, float] | None, min_effect: float, m: int
) -> tuple[str, str, float]:
    """(label, text, mde) as the project documents its verdicts; seeds planned at ALPHA / m for m comparisons."""
    n = diffs.size
    if n < 3:
        return "no verdict", f"no verdict: {n} seeds (at least 3 needed)", math.nan
    sd = float(diffs.std(ddof=1)) if np.ptp(diffs) >= 1e-12 else 0.0
    mean = float(diffs.mean())
    mde = _mde(sd, n, ALPHA / m)
    if p_adj < ALPHA:  # Holm's p, never the raw one
        direction = "helps" if mean > 0 else "hurts"
        if combined is None or (combined[0] > 0 if mean > 0 else combined[1] < 0):
            return direction, direction, mde
        return "inconclusive", "inconclusive: consistent over seeds, within test-set noise", mde
    if mde <= min_effect:
        return "no detectable difference", "no detectable difference", mde
    needed = _needed(max(abs(mean), min_effect), sd, ALPHA / m)
    if needed is None:
        return "inconclusive", f"inconclusive: {n} seeds, more than 10,000 needed", mde
    if needed > n:
        return "inconclusive", f"inconclusive: {n} seeds, about {needed} needed", mde
    return "inconclusive", f"inconclusive: {n} seeds, a few more needed", mde


def _macro_f1_rows(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of every row of ``pred`` [R, N] against the matching row of ``y`` [R, N]; an absent class scores 0."""
    scores = np.zeros(pred.shape[0])
    for c in range(k):
        tp = ((pred == c) & (y == c)).sum(axis=1)
        denom = (pred == c).sum(axis=1) + (y == c).sum(axis=1)
        scores += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return scores / k


def _own_combined_bootstrap(
    pa: np.ndarray, pb: np.ndarray, y: np.ndarray, metric: str, n_boot: int = 2000, seed: int = 12345
) -> tuple[float, float]:
    """A paired bootstrap written from its description: each replicate draws seeds (the same rows of A and B) and
    test examples (the same columns of A, B and y) with replacement; the 95% percentile interval."""
    rng = np.random.default_rng(seed)
    S, N = pa.shape
    reps = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, S, S)
        cols = rng.integers(0, N, N)
        a, b, t = pa[rows][:, cols], pb[rows][:, cols], np.broadcast_to(y[cols], (S, N))
        if metric == "accuracy":
            reps[i] = float(((a == t).mean(axis=1) - (b == t).mean(axis=1)).mean())
        else:
            reps[i] = float((_macro_f1_rows(a, t, 2) - _macro_f1_rows(b, t, 2)).mean())
    low, high = np.quantile(reps, [0.025, 0.975])
    return float(low), float(high)


def _own_p_improve_interval(wins: np.ndarray, n_boot: int = 4000, seed: int = 54321) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, wins.size, (n_boot, wins.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def _bouthillier(low: float, high: float) -> str:
    """Bouthillier et al. (2021): A is better when P(A>B)'s interval is above 0.5 and reaches 0.75."""
    if low > 0.5 and high >= 0.75:
        return "better"
    if high < 0.5 and low <= 0.25:
        return "worse"
    return "undecided"


# ---------------------------------------------------------------------------------------------------------------
# Reading the files back: CSV by header name, Markdown tables by header text


def _csv_rows(text: str) -> dict[str, list[dict[str, str]]]:
    """Rows of summary.csv grouped by their first cell ("variant", "comparison", ...), each a {header: cell} dict."""
    tables: dict[str, list[dict[str, str]]] = {}
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            header = None
        elif row[0] == "table":
            header = row
        else:
            assert header is not None, f"a CSV row without a header: {row}"
            assert len(row) == len(header), f"row and header differ in length: {row} vs {header}"
            tables.setdefault(row[0], []).append(dict(zip(header, row, strict=True)))
    return tables


def _md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table as a list of {header: cell} rows."""
    tables: list[list[dict[str, str]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            block.append(cells)
        elif block:
            header, _rule, *body = block
            if all(len(row) == len(header) for row in body):  # a table this test does not read may be ragged
                tables.append([dict(zip(header, row, strict=True)) for row in body])
            block = []
    return tables


def _md_table(text: str, first: str, needs: str) -> list[dict[str, str]]:
    """The one Markdown table whose first column is ``first`` and which has a column containing ``needs``."""
    (table,) = [t for t in _md_tables(text) if t and next(iter(t[0])) == first and any(needs in h for h in t[0])]
    return table


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell)]


def _csv_float(cell: str) -> float:
    return math.nan if cell in ("", "nan", "None") else float(cell)


def _close_or_both_nan(got: float | None, want: float | None, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    """JSON writes nan as null and CSV as nan or an empty cell: those all mean "no value"."""
    if want is None or math.isnan(want):
        return got is None or math.isnan(got)
    return got is not None and abs(got - want) <= max(abs_, rel * abs(want))


# ---------------------------------------------------------------------------------------------------------------
# The hand-chosen sweep: 40 test examples, 6 seeds, per-seed correct sets nested along a per-seed order

N_TEST = 40
Y_TEST = np.array([i % 2 for i in range(N_TEST)])
E0 = 0  # one test example regularized gets right on every seed and "without clipping" never does
ORDER = [np.random.default_rng(100 + s).permutation(np.arange(1, N_TEST)) for s in range(6)]
BASE_C = np.array([24, 30, 20, 28, 26, 22])  # baseline: right on this many of ORDER[s], a wide seed effect
REG_C = BASE_C + np.array([3, 4, 3, 4, 3, 4])  # + E0: helps by 0.1 .. 0.125 on every seed
# Each variant: (right on ORDER[s][:c] for these c, also right on E0, seeds that finished).
SPEC: dict[str, tuple[np.ndarray, bool, tuple[int, ...]]] = {
    "baseline": (BASE_C, False, tuple(range(6))),
    "regularized": (REG_C, True, tuple(range(6))),
    # raw p 0.017, the 4th smallest of 7: Holm gives 4 x 0.017 = 0.069, so not "helps"
    "without dropout": (REG_C - np.array([2, 1, 2, 0, 3, 1]), True, tuple(range(6))),
    # differences 0, 0, 0, 0, 0, +1/40: sd 0.010; at Holm's strictest level (0.05 / 7) these 6 seeds detect 0.023,
    # below min_effect 0.025
    "without weight_decay": (REG_C - np.array([0, 0, 0, 0, 0, 1]), True, tuple(range(6))),
    # one test example apart on every seed: p = 0 over seeds, but resampling the test set often drops E0
    "without clipping": (REG_C, False, tuple(range(6))),
    # mean +0.017 (below min_effect 0.025), sd 0.047: about 47 seeds needed at 0.05 / 7, not "no detectable difference"
    "without label_smoothing": (REG_C - np.array([2, -1, 1, 3, -2, 1]), True, tuple(range(6))),
    "short": (np.array([25, 29, 0, 0, 0, 0]), False, (0, 1)),  # 2 seeds finished: no verdict
}
LINEAR_ABOVE = (REG_C + np.array([6, 3, 9, 5, 6, 8]), True, tuple(range(6)))  # linear reference 0.8 > 0.73
LINEAR_BELOW = (np.array([20, 21, 19, 22, 20, 21]), False, tuple(range(6)))
COMPARISONS = (
    ("regularized", "baseline", "vs baseline"),
    ("regularized", "without dropout", "leave-one-out"),
    ("regularized", "without weight_decay", "leave-one-out"),
    ("regularized", "without clipping", "leave-one-out"),
    ("regularized", "without label_smoothing", "leave-one-out"),
    ("short", "baseline", "vs baseline"),
    ("regularized", LINEAR, "reference"),
)
MIN_EFFECT = 0.025


def _pred(seed: int, right: int, plus_e0: bool) -> list[int]:
    correct = set(ORDER[seed][:right].tolist()) | ({E0} if plus_e0 else set())
    return [int(y) if i in correct else int(1 - y) for i, y in enumerate(Y_TEST)]


def _record(name: str, seed: int, pred: list[int] | None, key: str) -> dict[str, Any]:
    if pred is None:
        return {"key": key, "variant": name, "seed": seed, "status": "failed", "error": "RuntimeError: boom"}
    p = np.array(pred)
    acc = float((p == Y_TEST).mean())
    return {
        "key": key,
        "variant": name,
        "kind": "linear" if name == LINEAR else "rnn",
        "seed": seed,
        "status": "ok",
        "error": None,
        "test_acc": acc,
        "test_f1": float(f1_score(Y_TEST, p, average="macro")),
        "val_acc": acc - 0.01,
        "val_f1": acc - 0.02,
        "test_pred": pred,
        "best_epoch": 3,
        "epochs_run": 6,  # best epoch before the last: runs that finished learning
        "truncated": False,
        "train_loss": 0.4,
        "skipped_steps": 0,
        "amp": "off",
        "wall_s": 2.0,
        "val_curve": [0.5, 0.6, 0.7, 0.69, 0.68, 0.68],
    }


def _sweep(linear: tuple[np.ndarray, bool, tuple[int, ...]]) -> tuple[Plan, dict, dict, dict[str, dict[int, list]]]:
    """The plan, the records (inserted in a scrambled order, keyed by opaque keys), the keys and the predictions."""
    spec = {**SPEC, LINEAR: linear}
    preds: dict[str, dict[int, list[int]]] = {
        name: {s: _pred(s, int(c[s]), e0) for s in done} for name, (c, e0, done) in spec.items()
    }
    keys = {(name, s): f"run-{(7 * i + 11 * s) % 97:02d}-{i}-{s}" for i, name in enumerate(spec) for s in range(6)}
    items = [(name, s) for name in spec for s in range(6)]
    rng = np.random.default_rng(7)
    records = {}
    for j in rng.permutation(len(items)):  # no order to lean on: pairing must go by seed
        name, s = items[j]
        records[keys[(name, s)]] = _record(name, s, preds[name].get(s), keys[(name, s)])
    plan = Plan(
        tuple(Variant(n, Experiment(), f"note of {n}") for n in SPEC),
        tuple(Comparison(a, b, f) for a, b, f in COMPARISONS),
        tuple(range(6)),
        fixed_split=False,
        linear=True,
    )
    return plan, records, keys, preds


def _metric_of(pred: list[int], metric: str) -> float:
    p = np.array(pred)
    return float((p == Y_TEST).mean()) if metric == "test_acc" else float(f1_score(Y_TEST, p, average="macro"))


def _oracle(preds: dict[str, dict[int, list[int]]], metric: str, *, bootstrap: bool = True) -> dict[str, Any]:
    """Every figure of the report, from the predictions (the combined interval's bounds only with ``bootstrap``)."""
    variants = {}
    for name, by_seed in preds.items():
        variants[name] = _t_summary([_metric_of(by_seed[s], metric) for s in sorted(by_seed)])
    rows = []
    for a, b, family in COMPARISONS:
        seeds = sorted(set(preds[a]) & set(preds[b]))
        va = np.array([_metric_of(preds[a][s], metric) for s in seeds])
        vb = np.array([_metric_of(preds[b][s], metric) for s in seeds])
        d = va - vb
        _, mean, _, low, high = _t_summary(d)
        if np.ptp(d) < 1e-12:
            low = high = mean
        wins = (va > vb) + 0.5 * (va == vb)
        pa = np.array([preds[a][s] for s in seeds])
        pb = np.array([preds[b][s] for s in seeds])
        kind = "accuracy" if metric == "test_acc" else "macro_f1"
        point = float(np.mean([_metric_of(preds[a][s], metric) - _metric_of(preds[b][s], metric) for s in seeds]))
        own_low, own_high = _own_combined_bootstrap(pa, pb, Y_TEST, kind) if bootstrap else (math.nan, math.nan)
        rows.append(
            {
                "a": a,
                "b": b,
                "family": family,
                "n": len(seeds),
                "diffs": d,
                "mean_diff": mean,
                "ci_low": low,
                "ci_high": high,
                "p_value": _paired_p(d),
                "wins": wins,
                "p_improve": float(wins.mean()),
                "combined": (point, own_low, own_high),
            }
        )
    for row, p_adj in zip(rows, _holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = p_adj
    return {"variants": variants, "comparisons": rows}


def _write(linear: tuple, metric: str, folder: Path, *, plots: bool = True) -> tuple[dict, dict[str, Any]]:
    plan, records, keys, preds = _sweep(linear)
    report = build_report(
        plan, records, keys, data="hand-chosen", metric=metric, y_test=Y_TEST.tolist(), min_effect=MIN_EFFECT
    )
    curves = report_module.curves(plan, keys, records) if plots else {}
    write_outputs(report, curves, folder)
    return preds, {
        "json": json.loads((folder / "summary.json").read_text(), parse_constant=pytest.fail),
        "csv": _csv_rows((folder / "summary.csv").read_text()),
        "md": (folder / "summary.md").read_text(),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = tmp_path_factory.mktemp("oracle")
    preds, files = _write(LINEAR_ABOVE, "test_acc", folder)
    return _oracle(preds, "test_acc"), files


# ---------------------------------------------------------------------------------------------------------------
# Variants


def test_variant_means_stds_and_intervals_match_the_oracle_in_json_csv_and_markdown(written: tuple) -> None:
    oracle, files = written
    by_json = {v["name"]: v for v in files["json"]["variants"]}
    by_csv = {r["name"]: r for r in files["csv"]["variant"]}
    by_md = {r["variant"].removesuffix(" [reference]"): r for r in _md_table(files["md"], "variant", "mean ± std")}
    assert list(by_json) == list(by_csv) == list(by_md) == [*SPEC, LINEAR]
    md_col = next(h for h in _md_table(files["md"], "variant", "mean ± std")[0] if "mean ± std" in h)
    for name, (n, mean, sd, low, high) in oracle["variants"].items():
        got = by_json[name]["metrics"]["test_acc"]
        assert got["n"] == n and by_json[name]["seeds"] == n, name
        assert by_json[name]["failed"] == 6 - n, name
        for field, want in (("mean", mean), ("std", sd), ("ci_low", low), ("ci_high", high)):
            assert _close_or_both_nan(got[field], want), (name, field, got[field], want)
            assert _close_or_both_nan(_csv_float(by_csv[name][f"test_acc_{field}"]), want), (name, field)
        assert int(by_csv[name]["test_acc_n"]) == n and int(by_csv[name]["seeds"]) == n
        assert int(by_csv[name]["failed"]) == 6 - n and by_csv[name]["note"] == by_json[name]["note"]
        shown = _numbers(by_md[name][md_col])
        assert len(shown) == 4, by_md[name][md_col]  # mean ± std [low, high], each to 3 decimals
        for value, want in zip(shown, (mean, sd, low, high), strict=True):
            assert abs(value - want) <= 0.0005 + 1e-9, (name, by_md[name][md_col], want)
    assert by_md["short"]["seeds"].startswith("2") and "4 failed" in by_md["short"]["seeds"]


# ---------------------------------------------------------------------------------------------------------------
# Comparisons


def _rows_by_pair(files: dict[str, Any]) -> tuple[dict, dict, dict]:
    js = {(c["a"], c["b"]): c for c in files["json"]["comparisons"]}
    cs = {(r["a"], r["b"]): r for r in files["csv"]["comparison"]}
    md = {tuple(r["comparison"].split(" vs ", 1)): r for r in _md_table(files["md"], "comparison", "p (Holm)")}
    return js, cs, md


def test_paired_differences_intervals_and_raw_p_match_the_oracle(written: tuple) -> None:
    oracle, files = written
    js, cs, md = _rows_by_pair(files)
    assert list(js) == list(cs) == list(md) == [(a, b) for a, b, _ in COMPARISONS]
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        got, row, cells = js[pair]["comparison"], cs[pair], md[pair]
        assert got["n"] == want["n"] and int(row["n"]) == want["n"] and cells["seeds"] == str(want["n"])
        assert js[pair]["family"] == row["family"] == want["family"]
        for field in ("mean_diff", "ci_low", "ci_high", "p_value"):
            assert got[field] == pytest.approx(want[field], rel=1e-9, abs=1e-12), (pair, field)
            assert _csv_float(row[field]) == pytest.approx(want[field], rel=1e-9, abs=1e-12), (pair, field)
        (difference,) = _numbers(cells["difference"])
        assert abs(difference - want["mean_diff"]) <= 0.0005 + 1e-9, pair
        low, high = _numbers(cells["95% CI (seeds)"])
        assert abs(low - want["ci_low"]) <= 0.0005 + 1e-9 and abs(high - want["ci_high"]) <= 0.0005 + 1e-9, pair


def test_holm_adjusted_p_matches_the_oracle_and_is_what_every_file_shows(written: tuple) -> None:
    oracle, files = written
    js, cs, md = _rows_by_pair(files)
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        assert js[pair]["p_adjusted"] == pytest.approx(want["p_holm"], rel=1e-9, abs=1e-15), pair
        assert _csv_float(cs[pair]["p_holm"]) == pytest.approx(want["p_holm"], rel=1e-9, abs=1e-15), pair
        (shown,) = _numbers(md[pair]["p (Holm)"])  # three significant digits
        assert shown == pytest.approx(want["p_holm"], rel=5e-3, abs=1e-15), pair
    # The sweep is built so that Holm matters: raw p 0.017 for dropout, adjusted above 0.05.
    dropout = next(w for w in oracle["comparisons"] if w["b"] == "without dropout")
    assert dropout["p_value"] < ALPHA <= dropout["p_holm"]


def test_probability_of_improvement_and_bouthillier_decision_match_the_oracle(written: tuple) -> None:
    oracle, files = written
    js, cs, md = _rows_by_pair(files)
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        got = js[pair]["comparison"]
        assert got["p_improve"] == pytest.approx(want["p_improve"]) == _csv_float(cs[pair]["p_improve"]), pair
        low, high = got["p_improve_low"], got["p_improve_high"]
        assert (_csv_float(cs[pair]["p_improve_low"]), _csv_float(cs[pair]["p_improve_high"])) == (low, high)
        own_low, own_high = _own_p_improve_interval(want["wins"])
        # Percentiles of a share over n seeds: two bootstraps agree to a step of the grid (1 / 2n).
        assert low <= want["p_improve"] <= high, pair
        assert abs(low - own_low) <= 0.5 / want["n"] + 1e-9 and abs(high - own_high) <= 0.5 / want["n"] + 1e-9, pair
        if np.all(want["wins"] == want["wins"][0]):
            assert low == high == want["wins"][0], pair  # every resample has the same share
        assert js[pair]["improvement"] == cs[pair]["improvement"] == _bouthillier(low, high), pair
        shown = _numbers(md[pair]["P(A>B)"])
        assert all(abs(s - w) <= 0.005 + 1e-9 for s, w in zip(shown, (want["p_improve"], low, high), strict=True))


def test_interval_over_seeds_and_test_set_pairs_a_and_b_seeds(written: tuple) -> None:
    oracle, files = written
    js, cs, md = _rows_by_pair(files)
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        point, own_low, own_high = want["combined"]
        got = js[pair]["combined"]
        assert got is not None, pair
        assert got[0] == pytest.approx(point, abs=1e-12), pair
        assert got[1] <= got[0] <= got[2], pair
        if want["n"] == 6:  # over 2 seeds the seed draw is too coarse for two bootstraps to agree closely
            # Two paired bootstraps of 2,000 replicates (different draws) agree to well within 0.015 here.
            assert got[1] == pytest.approx(own_low, abs=0.015), pair
            assert got[2] == pytest.approx(own_high, abs=0.015), pair
        assert _csv_float(cs[pair]["combined_low"]) == got[1] and _csv_float(cs[pair]["combined_high"]) == got[2]
        low, high = _numbers(md[pair]["95% CI (seeds + test set)"])
        assert abs(low - got[1]) <= 0.0005 + 1e-9 and abs(high - got[2]) <= 0.0005 + 1e-9, pair
    # regularized is right wherever baseline is, on every seed: with A's and B's seeds drawn together every
    # replicate is >= 0, whatever the seed effect (baseline spans 0.50 .. 0.75). Drawn apart, it would reach -0.1.
    reg = js[("regularized", "baseline")]["combined"]
    assert reg[1] > 0
    # A difference of one test example on every seed: seeds agree, the test set does not.
    clip = js[("regularized", "without clipping")]["combined"]
    assert clip[0] == pytest.approx(1 / N_TEST) and clip[1] == 0.0


def test_verdicts_follow_holm_adjusted_p_the_combined_interval_and_min_effect(written: tuple) -> None:
    oracle, files = written
    js, cs, md = _rows_by_pair(files)
    labels = {}
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        combined = js[pair]["combined"]
        m = len(oracle["comparisons"])
        label, text, mde = _expected_verdict(want["diffs"], want["p_holm"], (combined[1], combined[2]), MIN_EFFECT, m)
        verdict = js[pair]["verdict"]
        assert (verdict["label"], verdict["text"]) == (label, text), pair
        assert cs[pair]["verdict"] == md[pair]["verdict"] == text, pair
        assert _close_or_both_nan(verdict["mde"], mde, rel=1e-6), (pair, verdict["mde"], mde)
        assert _close_or_both_nan(_csv_float(cs[pair]["mde"]), mde, rel=1e-6), pair
        labels[pair] = label
    # The sweep covers every verdict the report can give.
    assert list(labels.values()) == [
        "helps",
        "inconclusive",  # without dropout: raw p 0.017, Holm 0.069
        "no detectable difference",  # without weight_decay
        "inconclusive",  # without clipping: within test-set noise
        "inconclusive",  # without label_smoothing: |mean| below min_effect, yet far from detectable
        "no verdict",  # short: 2 seeds
        "hurts",  # the linear reference is better on every seed
    ]
    assert js[("regularized", "without label_smoothing")]["verdict"]["text"] == "inconclusive: 6 seeds, about 47 needed"


def test_the_answer_states_the_main_comparison_and_the_linear_reference_above(written: tuple) -> None:
    oracle, files = written
    answer = files["json"]["answer"]
    assert f"**{answer}**" in files["md"]
    _check_answer(answer, oracle, "above")


def test_the_answer_says_below_when_the_linear_reference_scores_less(tmp_path: Path) -> None:
    preds, files = _write(LINEAR_BELOW, "test_acc", tmp_path, plots=False)
    oracle = _oracle(preds, "test_acc", bootstrap=False)
    _check_answer(files["json"]["answer"], oracle, "below")


def _check_answer(answer: str, oracle: dict[str, Any], relation: str) -> None:
    reg, base, lin = (oracle["variants"][n][1] for n in ("regularized", "baseline", LINEAR))
    main = oracle["comparisons"][0]
    pattern = (
        r"Over 6 paired seeds, regularized scores test accuracy (\S+) and baseline (\S+) \(difference (\S+), "
        r"95% CI \[(\S+), (\S+)\]\): helps; the linear reference scores (\S+), (above|below) regularized\."
    )
    match = re.match(pattern, answer)  # later sentences (runs cut short, inert tricks) may follow
    assert match, answer
    numbers = [float(x) for x in match.groups()[:6]]
    wanted = [reg, base, main["mean_diff"], main["ci_low"], main["ci_high"], lin]
    assert all(abs(x - w) <= 0.0005 + 1e-9 for x, w in zip(numbers, wanted, strict=True)), (numbers, wanted)
    assert (lin > reg) == (relation == "above")  # the sweep is built this way round
    assert match.group(7) == relation


def test_with_macro_f1_every_figure_and_the_combined_interval_use_macro_f1(tmp_path: Path) -> None:
    preds, files = _write(LINEAR_ABOVE, "test_f1", tmp_path, plots=False)
    oracle = _oracle(preds, "test_f1")
    js, _, _ = _rows_by_pair(files)
    accuracy = _oracle(preds, "test_acc", bootstrap=False)
    for want in oracle["comparisons"]:
        pair = (want["a"], want["b"])
        assert js[pair]["comparison"]["mean_diff"] == pytest.approx(want["mean_diff"], abs=1e-12), pair
        assert js[pair]["combined"][0] == pytest.approx(want["combined"][0], abs=1e-12), pair
        if want["n"] == 6:
            assert js[pair]["combined"][1] == pytest.approx(want["combined"][1], abs=0.015), pair
            assert js[pair]["combined"][2] == pytest.approx(want["combined"][2], abs=0.015), pair
    # Macro-F1 and accuracy differ on this sweep (by up to 0.0016), far beyond the 1e-12 the points are held to.
    pairs = zip(oracle["comparisons"], accuracy["comparisons"], strict=True)
    gaps = [abs(f1["combined"][0] - acc["combined"][0]) for f1, acc in pairs]
    assert max(gaps) > 1e-4
    assert files["json"]["metric"] == "test_f1"
    means = [float(r["test_f1_mean"]) for r in files["csv"]["variant"]]
    assert means == pytest.approx([v[1] for v in oracle["variants"].values()], abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Properties over random per-seed tables

N_SMALL = 10
Y_SMALL = np.array([i % 2 for i in range(N_SMALL)])


@st.composite
def seed_tables(draw: st.DrawFn) -> tuple[list[str], int, dict[str, dict[int, int | None]], int]:
    """Variants, seeds, {variant: {seed: test examples right (0..10), or None for a failed run}} and a numpy seed.

    Example: (["v0", "v1", "v2"], 4, {"v0": {0: 7, 1: None, 2: 6, 3: 8}, ...}, 3).
    """
    names = [f"v{i}" for i in range(draw(st.integers(2, 4)))]
    seeds = draw(st.integers(2, 6))
    right = st.one_of(st.none(), st.integers(0, N_SMALL), st.integers(0, N_SMALL))  # None: a failed run
    table = {n: {s: draw(right) for s in range(seeds)} for n in names}
    return names, seeds, table, draw(st.integers(0, 2**16))


def _random_sweep(
    names: list[str], seeds: int, table: dict[str, dict[int, int | None]], rng_seed: int
) -> tuple[Plan, dict, dict, dict[str, dict[int, list[int]]]]:
    rng = np.random.default_rng(rng_seed)
    orders = [rng.permutation(N_SMALL) for _ in range(seeds)]
    preds: dict[str, dict[int, list[int]]] = {}
    records: dict[str, dict[str, Any]] = {}
    keys: dict[tuple[str, int], str] = {}
    cells = [(n, s) for n in names for s in range(seeds)]
    for j in rng.permutation(len(cells)):  # records in a random order, under random keys
        name, s = cells[j]
        key = f"{rng.integers(10**9):09d}-{j}"
        keys[(name, s)] = key
        c = table[name][s]
        if c is None:
            records[key] = {"key": key, "variant": name, "seed": s, "status": "failed", "error": "E: x"}
            continue
        correct = set(orders[s][:c].tolist())
        pred = [int(y) if i in correct else int(1 - y) for i, y in enumerate(Y_SMALL)]
        preds.setdefault(name, {})[s] = pred
        acc = c / N_SMALL
        records[key] = {
            "key": key,
            "variant": name,
            "seed": s,
            "status": "ok",
            "error": None,
            "test_acc": acc,
            "test_f1": acc,
            "val_acc": acc,
            "val_f1": acc,
            "test_pred": pred,
            "best_epoch": 1,
            "epochs_run": 3,
            "truncated": False,
            "amp": "off",
        }
    comparisons = [Comparison(n, names[0], "vs first") for n in names[1:]]
    if len(names) > 2:
        comparisons.append(Comparison(names[1], names[2], "pair"))
    plan = Plan(
        tuple(Variant(n, Experiment(), "") for n in names), tuple(comparisons), tuple(range(seeds)), False, False
    )
    return plan, records, keys, preds


@settings(max_examples=30, deadline=None)
@given(seed_tables())
def test_random_tables_pair_by_seed_and_holm_is_monotone_above_raw_p(
    drawn: tuple[list[str], int, dict[str, dict[int, int | None]], int],
) -> None:
    plan, records, keys, _ = _random_sweep(*drawn)
    _, _, table, _ = drawn
    report = build_report(plan, records, keys, data="random", n_boot=200)
    tested = []
    for c in report.comparisons:
        seeds = [s for s in range(len(plan.seeds)) if table[c.a][s] is not None and table[c.b][s] is not None]
        if len(seeds) < 2:
            assert c.comparison is None and c.verdict is None and math.isnan(c.p_adjusted)
            continue
        d = np.array([(table[c.a][s] - table[c.b][s]) / N_SMALL for s in seeds])  # type: ignore[operator]
        assert c.comparison is not None
        assert c.comparison.n == len(seeds)
        assert c.comparison.mean_diff == pytest.approx(d.mean(), abs=1e-12)
        assert c.comparison.p_value == pytest.approx(_paired_p(d), rel=1e-9, abs=1e-12)
        tested.append((c.comparison.p_value, c.p_adjusted))
    assert [adj for _, adj in tested] == pytest.approx(_holm([p for p, _ in tested]), rel=1e-12, abs=1e-15)
    for p, adj in tested:
        assert p <= adj <= 1.0
    by_raw = [adj for _, adj in sorted(tested)]
    assert by_raw == sorted(by_raw)  # monotone in the raw p


@settings(max_examples=30, deadline=None)
@given(seed_tables())
def test_random_tables_give_verdicts_consistent_with_holm_p_and_both_intervals(
    drawn: tuple[list[str], int, dict[str, dict[int, int | None]], int],
) -> None:
    plan, records, keys, _ = _random_sweep(*drawn)
    report = build_report(
        plan, records, keys, data="random", y_test=Y_SMALL.tolist(), n_boot=300, min_effect=MIN_EFFECT
    )
    for c in report.comparisons:
        if c.comparison is None:
            continue
        cmp, v = c.comparison, c.verdict
        assert v is not None
        if cmp.n < 3:
            assert v.label == "no verdict"
            continue
        if v.label in ("helps", "hurts"):
            assert c.p_adjusted < ALPHA
            sign = 1 if v.label == "helps" else -1
            assert sign * cmp.mean_diff > 0
            assert (cmp.ci_low > 0) if sign > 0 else (cmp.ci_high < 0)  # the seed interval excludes 0 that side
            assert c.combined is not None
            assert (c.combined[1] > 0) if sign > 0 else (c.combined[2] < 0)
        if c.p_adjusted >= ALPHA:
            assert v.label not in ("helps", "hurts")
        if c.p_adjusted < ALPHA:
            assert v.label in ("helps", "hurts", "inconclusive")
        if v.label == "no detectable difference":
            assert c.p_adjusted >= ALPHA and v.mde <= MIN_EFFECT
            m = sum(1 for other in report.comparisons if other.comparison is not None)
            assert v.mde == pytest.approx(_mde(cmp.sd_diff, cmp.n, ALPHA / m), rel=1e-6, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed_tables())
def test_random_tables_give_the_oracles_summaries_and_verdicts(
    drawn: tuple[list[str], int, dict[str, dict[int, int | None]], int],
) -> None:
    plan, records, keys, _ = _random_sweep(*drawn)
    _, seeds, table, _ = drawn
    report = build_report(
        plan, records, keys, data="random", y_test=Y_SMALL.tolist(), n_boot=200, min_effect=MIN_EFFECT
    )
    for row in report.variants:
        values = [c / N_SMALL for c in table[row.name].values() if c is not None]
        s = row.metrics["test_acc"]
        assert (row.seeds, row.failed) == (len(values), seeds - len(values))
        if not values:
            assert s is None
            continue
        assert s is not None
        for got, want in zip((s.n, s.mean, s.std, s.ci_low, s.ci_high), _t_summary(values), strict=True):
            assert _close_or_both_nan(got, want, rel=1e-9, abs_=1e-12), (row.name, s, values)
    diffs = {}
    for c in report.comparisons:
        paired = [s for s in range(seeds) if table[c.a][s] is not None and table[c.b][s] is not None]
        if len(paired) >= 2:
            diffs[(c.a, c.b)] = np.array([(table[c.a][s] - table[c.b][s]) / N_SMALL for s in paired])  # type: ignore[operator]
    holm = dict(zip(diffs, _holm([_paired_p(d) for d in diffs.values()]), strict=True))
    for c in report.comparisons:
        if (c.a, c.b) not in diffs:
            continue
        assert c.verdict is not None and c.combined is not None
        label, text, mde = _expected_verdict(
            diffs[(c.a, c.b)], holm[(c.a, c.b)], c.combined[1:], MIN_EFFECT, len(diffs)
        )
        assert (c.verdict.label, c.verdict.text) == (label, text), (c.a, c.b, diffs[(c.a, c.b)], c.p_adjusted)
        assert _close_or_both_nan(c.verdict.mde, mde, rel=1e-6, abs_=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed_tables())
def test_random_tables_show_the_same_numbers_in_csv_json_and_markdown(
    drawn: tuple[list[str], int, dict[str, dict[int, int | None]], int],
) -> None:
    plan, records, keys, _ = _random_sweep(*drawn)
    report = build_report(plan, records, keys, data="random", y_test=Y_SMALL.tolist(), n_boot=200)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(outputs_module, "plot_report", lambda *args, **kwargs: [])  # the tables, not the pictures
        write_outputs(report, {}, Path(tmp))
        js = json.loads((Path(tmp) / "summary.json").read_text(), parse_constant=pytest.fail)
        cs = _csv_rows((Path(tmp) / "summary.csv").read_text())
        md = (Path(tmp) / "summary.md").read_text()
    md_comparisons = {r["comparison"]: r for r in _md_table(md, "comparison", "p (Holm)")}
    assert [(r["a"], r["b"]) for r in cs["comparison"]] == [(c["a"], c["b"]) for c in js["comparisons"]]
    for row, c in zip(cs["comparison"], js["comparisons"], strict=True):
        cells = md_comparisons[f"{c['a']} vs {c['b']}"]
        cmp = c["comparison"]
        if cmp is None:
            assert row["mean_diff"] == row["p_holm"] == "" and cells["difference"] == "-"
            continue
        for field in ("n", "mean_diff", "ci_low", "ci_high", "p_value", "p_improve", "p_improve_low"):
            assert _csv_float(row[field]) == pytest.approx(cmp[field], rel=1e-12, abs=1e-15), field
        assert _csv_float(row["p_holm"]) == pytest.approx(c["p_adjusted"], rel=1e-12, abs=1e-15)
        assert row["verdict"] == cells["verdict"] == c["verdict"]["text"]
        assert row["improvement"] == c["improvement"]
        assert abs(_numbers(cells["difference"])[0] - cmp["mean_diff"]) <= 0.0005 + 1e-9
        assert _numbers(cells["p (Holm)"])[0] == pytest.approx(c["p_adjusted"], rel=5e-3, abs=1e-300)
        if c["combined"] is not None:
            assert (_csv_float(row["combined_low"]), _csv_float(row["combined_high"])) == tuple(c["combined"][1:])
            low, high = _numbers(cells["95% CI (seeds + test set)"])
            assert abs(low - c["combined"][1]) <= 0.0005 + 1e-9 and abs(high - c["combined"][2]) <= 0.0005 + 1e-9
    for row, v in zip(cs["variant"], js["variants"], strict=True):
        assert row["name"] == v["name"] and int(row["seeds"]) == v["seeds"] and int(row["failed"]) == v["failed"]
        s = v["metrics"]["test_acc"]
        for field in ("mean", "std", "ci_low", "ci_high"):
            assert _close_or_both_nan(_csv_float(row[f"test_acc_{field}"]), math.nan if s is None else s[field])
