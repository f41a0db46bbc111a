"""Pure statistics for multi-seed ablations: intervals, paired tests, probability of improvement, Holm, power, verdicts.

Metrics are "higher is better" (accuracy, macro-F1): a positive difference ``a - b`` means A is better. Every
function is pure (numpy and scipy only); the stochastic ones take a ``seed``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

BOOTSTRAP_METRICS = ("accuracy", "macro_f1")  # what paired_bootstrap_diff can recompute from predictions
VERDICT_LABELS = ("helps", "hurts", "no detectable difference", "inconclusive", "no verdict")


# ----------------------------------------------------------------------------------------------------------------
# Input checks


def _as_finite_1d(values: Sequence[float], name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{name} must be a sequence of numbers (got {values!r}); pass a list or 1-D array of floats"
        ) from e
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (got shape {x.shape}); pass one value per seed")
    if x.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value (one per finished run)")
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{i}] is {x[i]} (non-finite); drop failed or diverged runs before computing statistics"
        )
    return x


def _check_level(level: float, name: str = "level", example: str = "0.95 for a 95% interval") -> None:
    if not (isinstance(level, int | float | np.floating) and 0.0 < level < 1.0):
        raise ValueError(f"{name} must be in (0, 1) (got {level!r}); pass e.g. {example}")


def _check_n_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (got {n_boot!r}); pass e.g. 2000")


def _check_probability(p: float, name: str) -> None:
    if not (isinstance(p, int | float | np.floating) and 0.0 <= p <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1] (got {p!r})")


def _t_interval(mean: float, sd: float, n: int, level: float) -> tuple[float, float]:
    """Student-t interval of a mean from n values with sample sd; the point itself when sd == 0."""
    if n < 2:
        return math.nan, math.nan
    if sd == 0.0:
        return mean, mean
    half = float(special.stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)  # the t quantile, as sps.t.ppf
    return mean - half, mean + half


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------------------------
# One variant


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample std, ddof=1 (nan when n == 1)
    ci_low: float  # Student-t interval of the mean at `level` (nan when n == 1; == mean when std == 0)
    ci_high: float


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, sample std and Student-t confidence interval of the mean of one variant's per-seed values."""
    _check_level(level)
    x = _as_finite_1d(values, "values")
    n = x.size
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    low, high = _t_interval(mean, std, n, level)
    return Summary(n=n, mean=mean, std=std, ci_low=low, ci_high=high)


# ----------------------------------------------------------------------------------------------------------------
# Two variants, paired by seed


@dataclass(frozen=True)
class PairedDifference:
    """The statistics of ``a - b`` over paired seeds (:func:`compare_paired`); a planned pair is ablation.Comparison."""

    n: int  # paired seeds
    mean_diff: float  # mean of a_i - b_i
    sd_diff: float  # sample std of the differences (ddof=1)
    ci_low: float  # Student-t CI of the mean difference
    ci_high: float
    p_value: float  # two-sided paired t-test; 1.0 when every difference is 0, 0.0 when all are equal and nonzero
    p_improve: float  # P(A > B) over paired seeds, ties count one half
    p_improve_low: float  # percentile bootstrap CI of P(A > B), resampling seed pairs
    p_improve_high: float


def compare_paired(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> PairedDifference:
    """Compare variant A with variant B over seeds paired by position (``a[i]`` and ``b[i]`` share seed i).

    Args:
        a, b: one metric value per seed, higher is better.
        level: confidence level of both intervals.
        n_boot: bootstrap replicates for the interval of P(A > B).
        seed: seed of the bootstrap.

    Returns:
        The mean difference ``a - b`` with its t-interval and paired t-test p-value, and P(A > B) with its
        bootstrap interval (Bouthillier et al., MLSys 2021).
    """
    _check_level(level)
    _check_n_boot(n_boot)
    xa = _as_finite_1d(a, "a")
    xb = _as_finite_1d(b, "b")
    if xa.size != xb.size:
        raise ValueError(
            f"a and b must pair one value per seed, but a has {xa.size} values and b has {xb.size}; "
            "pass the same seeds for both variants"
        )
    n = xa.size
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds (got {n}); run more seeds")

    d = xa - xb
    mean_diff = float(d.mean())
    # Differences equal up to float rounding (0.8 - 0.7 vs 0.9 - 0.8) are a constant effect: the t statistic of
    # rounding noise would be meaningless, and scipy warns about catastrophic cancellation on it.
    scale = float(max(np.abs(xa).max(), np.abs(xb).max(), np.finfo(np.float64).tiny))
    rounding = 8 * np.finfo(np.float64).eps * scale
    if float(np.ptp(d)) <= rounding:
        sd_diff = 0.0
        p_value = 1.0 if abs(mean_diff) <= rounding else 0.0
    else:
        # Scaled by the largest difference first: squaring differences near 1e-160 or below would underflow to 0.
        largest = float(np.abs(d).max())
        sd_diff = float((d / largest).std(ddof=1)) * largest
        p_value = _paired_t_pvalue(mean_diff, sd_diff, n)
    ci_low, ci_high = _t_interval(mean_diff, sd_diff, n, level)

    wins = (xa > xb) + 0.5 * (xa == xb)  # [n] 1, 1/2 or 0 per seed
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # resample seed pairs
    p_low, p_high = _percentile_interval(wins[idx].mean(axis=1), level)
    return PairedDifference(
        n=n,
        mean_diff=mean_diff,
        sd_diff=sd_diff,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        p_improve=float(wins.mean()),
        p_improve_low=p_low,
        p_improve_high=p_high,
    )


def _paired_t_pvalue(mean_diff: float, sd_diff: float, n: int) -> float:
    """Two-sided p-value of the paired t-test, the same number as ``scipy.stats.ttest_rel(a, b).pvalue``.

    Computed from the t distribution directly: ttest_rel's input handling costs ~2 ms a call, which the calibration
    simulations (thousands of comparisons) cannot afford; tests check the two agree.
    """
    t = mean_diff / (sd_diff / math.sqrt(n))
    return float(2 * special.stdtr(n - 1, -abs(t)))


def improvement_decision(p_low: float, p_high: float, gamma: float = 0.75) -> str:
    """Bouthillier et al. (MLSys 2021) on the CI of P(A > B): "better", "worse" or "undecided".

    A is better when the interval lies above 0.5 and reaches ``gamma``; worse when the same holds for P(B > A).
    """
    _check_probability(p_low, "p_low")
    _check_probability(p_high, "p_high")
    if p_low > p_high:
        raise ValueError(f"p_low ({p_low}) must not exceed p_high ({p_high}); pass the interval's bounds in order")
    if not (isinstance(gamma, int | float) and 0.5 < gamma <= 1.0):
        raise ValueError(f"gamma must be in (0.5, 1] (got {gamma!r}); Bouthillier et al. use 0.75")
    if p_low > 0.5 and p_high >= gamma:
        return "better"
    if p_high < 0.5 and p_low <= 1.0 - gamma:
        return "worse"
    return "undecided"


# ----------------------------------------------------------------------------------------------------------------
# Seeds and test examples together


def _check_predictions(
    pred_a: np.ndarray, pred_b: np.ndarray, y_true: np.ndarray, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    arrays = []
    for name, arr in (("pred_a", pred_a), ("pred_b", pred_b), ("y_true", y_true)):
        x = np.asarray(arr)
        integral = np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x))
        if x.size and not np.issubdtype(x.dtype, np.integer) and not integral:
            raise TypeError(f"{name} must hold integer class labels (got dtype {x.dtype}); pass argmax predictions")
        arrays.append(x.astype(np.int64))
    a, b, y = arrays
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"pred_a and pred_b must both be [seeds, examples] with the same shape (got {a.shape} and {b.shape}); "
            "stack one row of test predictions per seed, rows paired by seed"
        )
    if y.ndim != 1 or y.shape[0] != a.shape[1]:
        raise ValueError(
            f"y_true must be [examples] with one label per column of pred_a (got shape {y.shape} for predictions "
            f"of shape {a.shape}); pass the test labels in the order of the predictions"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"predictions are empty (shape {a.shape}); pass at least one seed and one test example")
    low = int(min(a.min(), b.min(), y.min()))
    if low < 0:
        raise ValueError(f"class labels must be >= 0 (found {low}); encode classes as 0 .. num_classes - 1")
    high = int(max(a.max(), b.max(), y.max()))
    if num_classes is None:
        num_classes = high + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes <= high:
        raise ValueError(
            f"num_classes must be an integer above every label (got {num_classes!r}, largest label {high}); "
            f"pass at least {high + 1} or leave it None"
        )
    return a, b, y, int(num_classes)


def _per_seed_metric(pred: np.ndarray, y: np.ndarray, weights: np.ndarray, metric: str, k: int) -> np.ndarray:
    """metric of every seed (row of pred [S, N]) on every weighting of the test examples (row of weights [B, N]).

    A weight is how often an example was drawn in a bootstrap replicate, so weights of ones is the original test set.
    Returns [B, S].
    """
    N = pred.shape[1]  # test examples
    if metric == "accuracy":
        correct = (pred == y).astype(np.float64)  # [S, N]
        return weights @ correct.T / N  # [B, S]
    S, K = pred.shape[0], k  # seeds, classes
    classes = np.arange(K)
    pred_is = pred[:, :, None] == classes  # [S, N, K]
    true_is = np.broadcast_to(y[None, :, None] == classes, pred_is.shape)  # [S, N, K]
    indicators = np.stack([pred_is & true_is, pred_is, true_is])  # [3, S, N, K]
    indicators = indicators.transpose(2, 0, 1, 3).reshape(N, 3 * S * K).astype(np.float64)  # [N, 3 S K]
    counts = (weights @ indicators).reshape(-1, 3, S, K)  # [B, 3, S, K]: weighted counts, one matrix product
    tp, predicted, actual = counts[:, 0], counts[:, 1], counts[:, 2]  # [B, S, K] each
    denom = predicted + actual  # 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)  # [B, S, K]; a class absent from truth and prediction scores 0
    return f1.mean(axis=2)  # [B, S]


def _draw_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """[replicates, n] how often each of n items is drawn when n are drawn with replacement, per replicate."""
    draws = rng.integers(0, n, size=(replicates, n)) + n * np.arange(replicates)[:, None]  # [R, n] flat indices
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def paired_bootstrap_diff(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    y_true: np.ndarray,
    *,
    metric: str = "accuracy",
    num_classes: int | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Interval of mean-over-seeds metric(A) - metric(B) that counts test-set sampling as well as seed variance.

    Each bootstrap replicate resamples seeds (the same rows of A and B) and test examples (the same columns of A, B
    and ``y_true``) with replacement.

    Args:
        pred_a, pred_b: integer predictions [seeds, examples], rows paired by seed.
        y_true: the test labels [examples].
        metric: "accuracy" or "macro_f1" (macro-F1 over ``num_classes`` classes, default the largest label + 1;
            a class absent from truth and prediction scores 0, as scikit-learn's ``zero_division=0``).
        level: confidence level; n_boot: replicates; seed: seed of the resampling.

    Returns:
        (point, low, high): the point estimate on the original data and the percentile interval.
    """
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"metric must be one of {BOOTSTRAP_METRICS} (got {metric!r})")
    _check_level(level)
    _check_n_boot(n_boot)
    a, b, y, k = _check_predictions(pred_a, pred_b, y_true, num_classes)
    S, N = a.shape  # seeds, test examples

    ones = np.ones((1, N))
    point = float((_per_seed_metric(a, y, ones, metric, k) - _per_seed_metric(b, y, ones, metric, k)).mean())

    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    chunk = max(1, 2**21 // N)  # replicates at a time: the [chunk, N] draws stay near 32 MB
    for start in range(0, n_boot, chunk):
        B = min(chunk, n_boot - start)
        col_w = _draw_counts(rng, B, N)  # [B, N] how often each test example is drawn
        row_w = _draw_counts(rng, B, S)  # [B, S] how often each seed is drawn
        diff = _per_seed_metric(a, y, col_w, metric, k) - _per_seed_metric(b, y, col_w, metric, k)  # [B, S]
        replicates[start : start + B] = (row_w * diff).sum(axis=1) / S
    low, high = _percentile_interval(replicates, level)
    return point, low, high


# ----------------------------------------------------------------------------------------------------------------
# Several comparisons in one table


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values must all be in [0, 1] (got {list(p_values)!r}); drop comparisons without a test")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(v) for v in adjusted]


# ----------------------------------------------------------------------------------------------------------------
# Power: how many seeds a difference needs


def _check_power_args(sd: float, alpha: float, power: float | None = None) -> None:
    if not (isinstance(sd, int | float | np.floating) and math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be a finite number >= 0 (got {sd!r}); pass the sample std of the differences")
    _check_level(alpha, "alpha", "0.05")
    if power is not None:
        _check_level(power, "power", "0.8")


def _check_pairs(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (got {n!r}); a paired t-test needs at least 2 pairs")


def power_paired(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Exact power of the two-sided paired t-test with n pairs, true mean difference ``effect``, difference sd ``sd``.

    With ``sd == 0`` every difference equals ``effect``: power 1.0 if it is nonzero, else 0.0 (``compare_paired``
    gives p = 1 when every difference is 0).
    """
    _check_power_args(sd, alpha)
    if not (isinstance(effect, int | float | np.floating) and math.isfinite(effect)):
        raise ValueError(f"effect must be a finite number (got {effect!r})")
    _check_pairs(n)
    if sd == 0:
        return 1.0 if effect != 0 else 0.0
    df = int(n) - 1
    nc = abs(effect) / sd * math.sqrt(n)  # the power is symmetric in the sign of the effect
    return _power(df, nc, float(special.stdtrit(df, 1 - alpha / 2)))


def _power(df: int, nc: float, t_crit: float) -> float:
    """P(|T| > t_crit) for T ~ nct(df, nc), nc >= 0: the power of a two-sided t-test, unchecked (root searches)."""
    # P(T > t) + P(T < -t) for T ~ nct(df, nc), the far tail written as P(T' > t) with T' ~ nct(df, -nc): the
    # noncentral t CDF returns nan for tiny lower tails at large noncentrality (df 4999, nc 35). scipy.special's
    # nctdtr is the CDF behind scipy.stats.nct without its ~0.2 ms of argument handling a call (power_paired runs
    # inside root searches); where it still gives nan, nct.sf, slower but finite there, takes over.
    power = float(2 - special.nctdtr(df, nc, t_crit) - special.nctdtr(df, -nc, t_crit))
    if not math.isfinite(power):
        power = float(sps.nct.sf(t_crit, df, nc) + sps.nct.sf(t_crit, df, -nc))
    if not math.isfinite(power):
        raise RuntimeError(f"scipy.stats.nct gave a non-finite power for df={df}, nc={nc}, t={t_crit}")
    return min(max(power, 0.0), 1.0)


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_n: int = 10_000) -> int | None:
    """Smallest n >= 2 at which the paired t-test reaches ``power``; None if effect == 0 or max_n is not enough."""
    _check_power_args(sd, alpha, power)
    if isinstance(max_n, bool) or not isinstance(max_n, int | np.integer) or max_n < 2:
        raise ValueError(f"max_n must be an integer >= 2 (got {max_n!r})")
    if effect == 0:
        return None
    max_n = int(max_n)

    def enough(n: int) -> bool:
        return power_paired(effect, sd, n, alpha) >= power

    # Start at the normal approximation n = ((z_{1-alpha/2} + z_power) sd / effect)^2 (the t-test needs a few more),
    # gallop to a bracket low < answer <= high, then bisect: power grows with n. About 6 power evaluations.
    z = float(special.ndtri(1 - alpha / 2) + special.ndtri(power))
    guess = 2 if sd == 0 else min(max(2, math.ceil((z * sd / abs(effect)) ** 2)), max_n)
    step = 1
    if enough(guess):
        high = guess
        while True:
            low = max(2, high - step)
            if low == high:
                return 2
            if not enough(low):
                break
            high, step = low, 2 * step
    else:
        low = guess
        while True:
            if low == max_n:
                return None
            high = min(max_n, low + step)
            if enough(high):
                break
            low, step = high, 2 * step
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |effect| the two-sided paired t-test detects with ``power`` at n pairs; 0.0 when sd == 0."""
    _check_power_args(sd, alpha, power)
    _check_pairs(n)
    if sd == 0 or power <= alpha:  # power <= alpha: even no effect is "detected" at the rate alpha
        return 0.0
    return sd * _detectable_standardized_effect(int(n), float(alpha), float(power))


@functools.lru_cache(maxsize=1024)
def _detectable_standardized_effect(n: int, alpha: float, power: float) -> float:
    """The detectable effect in units of the difference sd: the power depends on effect / sd alone, so one root per
    (n, alpha, power) serves every sd (a sweep asks for the same few seed counts again and again)."""
    df, t_crit = n - 1, float(special.stdtrit(n - 1, 1 - alpha / 2))

    def gap(dz: float) -> float:  # power_paired less its checks
        return _power(df, dz * math.sqrt(n), t_crit) - power

    # Bracket the root around the normal approximation z_{1-alpha/2} + z_power over sqrt(n); gap(0) = alpha -
    # power < 0 and the power goes to 1 as the effect grows, so both loops end.
    guess = float(special.ndtri(1 - alpha / 2) + special.ndtri(power)) / math.sqrt(n)
    low, high = guess / 2, guess
    while low > 0 and gap(low) >= 0:
        low = low / 2 if low > 1e-12 else 0.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, low, high, xtol=1e-13, rtol=1e-10))


# ----------------------------------------------------------------------------------------------------------------
# Verdict in words


@dataclass(frozen=True)
class Verdict:
    label: str  # "helps" | "hurts" | "no detectable difference" | "inconclusive" | "no verdict"
    text: str  # one phrase for the table
    mde: float  # smallest difference these seeds detect with the requested power (nan when no verdict)
    seeds_needed: int | None


def verdict(
    cmp: PairedDifference,
    p_adjusted: float,
    *,
    combined_ci: tuple[float, float] | None = None,
    min_effect: float = 0.01,
    alpha: float = 0.05,
    power: float = 0.8,
    min_seeds: int = 3,
    plan_alpha: float | None = None,
) -> Verdict:
    """The verdict in words on one comparison A vs B.

    Args:
        cmp: the paired comparison over seeds.
        p_adjusted: its p-value after the correction across the table (``holm``).
        combined_ci: the interval that also counts test-set sampling (``paired_bootstrap_diff``), if computed.
        min_effect: the smallest difference worth finding (in metric units).
        alpha, power: significance level and the power a seed count is planned for.
        min_seeds: below this many seeds there is no verdict.
        plan_alpha: the per-comparison level that the smallest detectable effect and "seeds needed" are planned
            at (default ``alpha``). Under Holm across m comparisons pass ``alpha / m``: a raw p below it is
            significant after the correction whatever the other comparisons give (Holm's strictest step).
    """
    plan_alpha = alpha if plan_alpha is None else plan_alpha
    if not (isinstance(plan_alpha, int | float) and 0 < plan_alpha < 1):
        raise ValueError(f"plan_alpha must lie in (0, 1) (got {plan_alpha!r}); e.g. 0.05 / 6 for Holm over 6")
    _check_probability(p_adjusted, "p_adjusted")
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2:
        raise ValueError(f"min_seeds must be an integer >= 2 (got {min_seeds!r})")
    if not (isinstance(min_effect, int | float) and min_effect > 0):
        raise ValueError(f"min_effect must be a number > 0 (got {min_effect!r}); pass e.g. 0.01 (one point)")
    if combined_ci is not None:
        low, high = combined_ci
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(
                f"combined_ci must be a finite (low, high) pair with low <= high (got {combined_ci!r}); "
                "pass the bounds paired_bootstrap_diff returns, or None"
            )
    n = cmp.n
    if n < min_seeds:
        return Verdict("no verdict", f"no verdict: {n} seeds (at least {min_seeds} needed)", math.nan, None)

    mde = min_detectable_effect(cmp.sd_diff, n, plan_alpha, power)
    if p_adjusted < alpha:
        direction = "helps" if cmp.mean_diff > 0 else "hurts"
        # the interval that counts test-set sampling must confirm the direction, not merely exclude 0
        if combined_ci is None or (combined_ci[0] > 0 if cmp.mean_diff > 0 else combined_ci[1] < 0):
            return Verdict(direction, direction, mde, None)
        return Verdict("inconclusive", "inconclusive: consistent over seeds, within test-set noise", mde, None)
    if mde <= min_effect:
        return Verdict("no detectable difference", "no detectable difference", mde, None)
    needed = seeds_needed(max(abs(cmp.mean_diff), min_effect), cmp.sd_diff, plan_alpha, power)
    if needed is None:
        text = f"inconclusive: {n} seeds, more than 10,000 needed"
    elif needed > n:
        text = f"inconclusive: {n} seeds, about {needed} needed"
    else:  # these seeds should have sufficed at the observed effect: a miss by chance or by the correction
        text = f"inconclusive: {n} seeds, a few more needed"
    return Verdict("inconclusive", text, mde, needed)
