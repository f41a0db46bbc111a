"""stats: every function against hand-computed values, properties with Hypothesis, calibration on simulated sweeps.

Hand computations are written out next to each assertion; t quantiles are quoted from a printed t table (to the
digits the table gives, the assertion's tolerance says how many). The simulated sweeps are seeded numpy draws whose
bounds were calibrated over many RNG seeds (the distribution is described next to each bound).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from sklearn.metrics import accuracy_score, f1_score

from rnnreg.stats import (
    PairedDifference,
    Summary,
    _per_seed_metric,  # the replicate's metric, checked against scikit-learn's sample_weight
    compare_paired,
    holm,
    improvement_decision,
    min_detectable_effect,
    paired_bootstrap_diff,
    power_paired,
    seeds_needed,
    summarize,
    verdict,
)

# Metric values per seed: accuracies and F1s live in [0, 1]; wider finite floats check nothing more.
metric_values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _t3_two_sided_p(t: float) -> float:
    """p of a two-sided t-test with 3 degrees of freedom, from the closed-form CDF of Student's t with 3 df:

    F(t) = 1/2 + (1/pi) * (x / (1 + x^2) + atan(x)), x = t / sqrt(3), so p = 2 (1 - F(|t|)).
    """
    x = abs(t) / math.sqrt(3)
    return 1 - (2 / math.pi) * (x / (1 + x * x) + math.atan(x))


# ----------------------------------------------------------------------------------------------------------------
# summarize


def test_summarize_matches_hand_computed_t_interval() -> None:
    # values 1, 2, 3, 4: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / (n - 1) = 5/3,
    # std = sqrt(5/3) = 1.2909944; standard error = std / sqrt(4) = 0.6454972.
    # t table, df = 3, two-sided 95% (upper 2.5% point): 3.182 (3.182446 to 7 digits).
    # half-width = 3.182446 * 0.6454972 = 2.0542600 -> [0.4457400, 4.5542600].
    s = summarize([1, 2, 3, 4])
    assert s == Summary(n=4, mean=2.5, std=pytest.approx(1.2909944), ci_low=pytest.approx(0.4457400, abs=2e-6),
                        ci_high=pytest.approx(4.5542600, abs=2e-6))  # fmt: skip
    # 90%: t table df = 3, upper 5% point 2.353 (2.353363); half-width 2.353363 * 0.6454972 = 1.5190892.
    s90 = summarize([1, 2, 3, 4], level=0.90)
    assert s90.ci_low == pytest.approx(2.5 - 1.5190892, abs=2e-6)
    assert s90.ci_high == pytest.approx(2.5 + 1.5190892, abs=2e-6)


def test_summarize_one_value_has_no_spread_and_constant_values_a_point_interval() -> None:
    one = summarize([0.8])
    assert (one.n, one.mean) == (1, 0.8)
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    same = summarize([0.75, 0.75, 0.75])
    assert (same.std, same.ci_low, same.ci_high) == (0.0, 0.75, 0.75)


@given(st.lists(metric_values, min_size=2, max_size=30), st.floats(0.5, 0.99))
def test_summarize_interval_is_centred_on_the_mean_and_widens_with_level(values: list[float], level: float) -> None:
    s = summarize(values, level)
    assert s.ci_low <= s.mean <= s.ci_high
    assert s.ci_high - s.mean == pytest.approx(s.mean - s.ci_low, abs=1e-12)
    wider = summarize(values, min(0.999, level + 0.005))
    assert wider.ci_high - wider.ci_low >= s.ci_high - s.ci_low


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": []}, "values is empty"),
        ({"values": [0.5, float("nan")]}, r"values\[1\] is nan"),
        ({"values": [float("inf")]}, r"values\[0\] is inf"),
        ({"values": [[0.5, 0.6]]}, "one-dimensional"),
        ({"values": [0.5], "level": 0.0}, "level must be in"),
        ({"values": [0.5], "level": 95}, "got 95"),
    ],
)
def test_summarize_rejects_bad_input_naming_it(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize(**kwargs)


def test_summarize_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="values must be a sequence of numbers"):
        summarize(["high", "low"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------------------------------
# compare_paired


def test_compare_paired_matches_hand_computed_t_test_and_probability_of_improvement() -> None:
    a = [0.81, 0.72, 0.93, 0.80]
    b = [0.70, 0.60, 0.80, 0.85]
    c = compare_paired(a, b, n_boot=4000, seed=1)
    # differences 0.11, 0.12, 0.13, -0.05: mean 0.31 / 4 = 0.0775.
    # deviations 0.0325, 0.0425, 0.0525, -0.1275; squares 0.00105625 + 0.00180625 + 0.00275625 + 0.01625625
    # = 0.021875; / 3 = 0.00729167; sd = 0.0853913; standard error = sd / 2 = 0.0426956; t = 1.815175.
    assert c.n == 4
    assert c.mean_diff == pytest.approx(0.0775)
    assert c.sd_diff == pytest.approx(0.0853913, abs=1e-7)
    assert c.p_value == pytest.approx(_t3_two_sided_p(0.0775 / 0.0426956), rel=1e-5)  # 0.16712
    assert 0.10 < c.p_value < 0.20  # t table, df = 3: 1.638 (two-sided 0.20) < t = 1.815 < 2.353 (0.10)
    # CI: t table df = 3, 3.182446 * 0.0426956 = 0.1358765 -> [-0.0583765, 0.2133765].
    assert c.ci_low == pytest.approx(-0.0583765, abs=2e-6)
    assert c.ci_high == pytest.approx(0.2133765, abs=2e-6)
    # P(A > B): A wins on seeds 0, 1, 2 and loses on seed 3 -> 3/4.
    assert c.p_improve == 0.75
    # Bootstrap of P over 4 seed pairs: a resample holds K copies of the losing seed, K ~ Binomial(4, 1/4), and
    # P* = (4 - K) / 4. P(P* = 0) = (1/4)^4 = 0.0039, P(P* <= 1/4) = 0.0039 + 4 (1/4)^3 (3/4) = 0.0508, so the 2.5%
    # point is 1/4; P(P* = 1) = (3/4)^4 = 0.316 > 2.5%, so the 97.5% point is 1.
    assert (c.p_improve_low, c.p_improve_high) == (0.25, 1.0)


def test_compare_paired_p_value_is_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 10, 40):
        a = rng.normal(0.8, 0.02, size=n)
        b = a + rng.normal(0.01, 0.02, size=n)
        assert compare_paired(a, b).p_value == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-9, abs=1e-300)


def test_ties_count_one_half_in_probability_of_improvement() -> None:
    # per seed: tie, A wins, B wins, tie -> (0.5 + 1 + 0 + 0.5) / 4 = 0.5
    c = compare_paired([1, 2, 3, 4], [1, 1, 4, 4])
    assert c.p_improve == 0.5


def test_identical_variants_give_p_one_and_an_even_chance() -> None:
    c = compare_paired([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert (c.mean_diff, c.sd_diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert (c.p_improve, c.p_improve_low, c.p_improve_high) == (0.5, 0.5, 0.5)


def test_a_constant_nonzero_effect_is_exact() -> None:
    # 0.8 - 0.7, 0.7 - 0.6, 0.9 - 0.8 are all 0.1 up to float rounding (0.09999999999999998 ...): a constant effect,
    # p = 0, a point interval, not a t statistic of rounding noise.
    c = compare_paired([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])
    assert c.mean_diff == pytest.approx(0.1)
    assert (c.sd_diff, c.p_value, c.p_improve) == (0.0, 0.0, 1.0)
    assert c.ci_low == c.ci_high == c.mean_diff
    worse = compare_paired([0.7, 0.6, 0.8], [0.8, 0.7, 0.9])
    assert (worse.p_value, worse.p_improve, worse.p_improve_high) == (0.0, 0.0, 0.0)


def test_differences_too_small_to_square_still_give_the_t_test() -> None:
    # Found by Hypothesis: d = [0, -2.34e-199]; d.std() squared the differences, underflowed to 0 and divided by it.
    # By hand: mean -1.17e-199, sd = |d1| / sqrt(2) = 1.66e-199, t = mean / (sd / sqrt(2)) = -1, and with 1 degree
    # of freedom P(|T| > 1) = 1/2.
    c = compare_paired([0.0, 0.0], [0.0, 2.3446818764608427e-199])
    assert c.mean_diff == pytest.approx(-1.1723409382304213e-199, rel=1e-12)
    assert c.sd_diff == pytest.approx(2.3446818764608427e-199 / math.sqrt(2), rel=1e-12)
    assert c.p_value == pytest.approx(0.5, rel=1e-12)


@given(st.lists(st.tuples(metric_values, metric_values), min_size=2, max_size=20), st.integers(0, 2**32 - 1))
def test_swapping_a_and_b_negates_the_difference_and_complements_p_improve(
    pairs: list[tuple[float, float]], seed: int
) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ab = compare_paired(a, b, n_boot=200, seed=seed)
    ba = compare_paired(b, a, n_boot=200, seed=seed)
    assert ba.mean_diff == pytest.approx(-ab.mean_diff, abs=1e-12)
    assert ba.sd_diff == pytest.approx(ab.sd_diff, abs=1e-12)
    assert ba.p_value == pytest.approx(ab.p_value, abs=1e-9)
    assert (ba.ci_low, ba.ci_high) == pytest.approx((-ab.ci_high, -ab.ci_low), abs=1e-12)
    assert ba.p_improve == pytest.approx(1 - ab.p_improve, abs=1e-12)
    # same seed, same resampled pairs: wins become 1 - wins, so the interval maps to (1 - high, 1 - low)
    assert (ba.p_improve_low, ba.p_improve_high) == pytest.approx((1 - ab.p_improve_high, 1 - ab.p_improve_low))
    assert ab.p_improve_low <= ab.p_improve <= ab.p_improve_high or ab.n == 2  # n = 2: quantiles may skip P


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        ([0.5, 0.6, 0.7], [0.5, 0.6], {}, "a has 3 values and b has 2"),
        ([0.5], [0.6], {}, "at least 2 seeds"),
        ([0.5, float("nan")], [0.6, 0.7], {}, r"a\[1\] is nan"),
        ([0.5, 0.6], [0.6, float("-inf")], {}, r"b\[1\] is -inf"),
        ([0.5, 0.6], [0.6, 0.7], {"level": 1.0}, "level must be in"),
        ([0.5, 0.6], [0.6, 0.7], {"n_boot": 0}, "n_boot must be a positive integer"),
    ],
)
def test_compare_paired_rejects_bad_input_naming_it(a: list, b: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare_paired(a, b, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# improvement_decision


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.6, 0.8, "better"),
        (0.51, 0.75, "better"),  # upper bound reaching gamma exactly counts
        (0.5, 0.9, "undecided"),  # the lower bound must exceed 0.5
        (0.6, 0.74, "undecided"),  # above 0.5 but the effect may be small
        (0.2, 0.4, "worse"),
        (0.25, 0.49, "worse"),  # P(B > A) interval (0.51, 0.75): the mirror of the second row
        (0.26, 0.4, "undecided"),
        (0.3, 0.5, "undecided"),
        (0.0, 1.0, "undecided"),
    ],
)
def test_improvement_decision_follows_bouthillier_rule(low: float, high: float, expected: str) -> None:
    assert improvement_decision(low, high) == expected


def test_improvement_decision_gamma_moves_the_bar() -> None:
    assert improvement_decision(0.6, 0.8, gamma=0.9) == "undecided"
    assert improvement_decision(0.6, 0.9, gamma=0.9) == "better"


@pytest.mark.parametrize(
    ("args", "match"),
    [((0.7, 0.6), r"p_low \(0.7\) must not exceed p_high"), ((-0.1, 0.6), "p_low must be a probability"),
     ((0.1, 1.2), "p_high must be a probability"), ((0.6, 0.8, 0.5), "gamma must be in")],
)  # fmt: skip
def test_improvement_decision_rejects_bad_input(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        improvement_decision(*args)


# ----------------------------------------------------------------------------------------------------------------
# paired_bootstrap_diff


def test_bootstrap_point_estimate_is_mean_over_seeds_of_the_metric_difference() -> None:
    y = np.array([0, 1, 1, 0])
    pred_a = np.array([[0, 1, 1, 1], [0, 1, 1, 0]])  # accuracy 3/4, 4/4
    pred_b = np.array([[0, 0, 1, 0], [1, 1, 1, 0]])  # accuracy 3/4, 3/4
    point, low, high = paired_bootstrap_diff(pred_a, pred_b, y, n_boot=500)
    assert point == pytest.approx(((0.75 - 0.75) + (1.0 - 0.75)) / 2)  # 0.125
    assert low <= point <= high


def test_bootstrap_macro_f1_point_equals_sklearn_with_absent_classes_scoring_zero() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=50)  # labels 0..2; num_classes=4 adds a class absent from truth and predictions
    pred_a = rng.integers(0, 3, size=(3, 50))
    pred_b = np.where(rng.random((3, 50)) < 0.6, y, pred_a)
    expected = np.mean(
        [
            f1_score(y, pa, labels=range(4), average="macro", zero_division=0)
            - f1_score(y, pb, labels=range(4), average="macro", zero_division=0)
            for pa, pb in zip(pred_a, pred_b, strict=True)
        ]
    )
    point, _, _ = paired_bootstrap_diff(pred_a, pred_b, y, metric="macro_f1", num_classes=4, n_boot=10)
    assert point == pytest.approx(expected, abs=1e-12)
    acc = np.mean([accuracy_score(y, pa) - accuracy_score(y, pb) for pa, pb in zip(pred_a, pred_b, strict=True)])
    assert paired_bootstrap_diff(pred_a, pred_b, y, n_boot=10)[0] == pytest.approx(acc, abs=1e-12)


def test_a_bootstrap_replicate_scores_like_sklearn_on_the_resampled_test_set() -> None:
    # A replicate weighs each test example by how often it was drawn; scikit-learn's sample_weight gives the metric
    # of the resampled test set directly, classes missing from a replicate included (labels 0..3, zero_division=0).
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, size=40)
    pred = np.where(rng.random((3, 40)) < 0.5, y, rng.integers(0, 4, size=(3, 40)))  # [S, N]
    weights = np.stack([np.bincount(rng.integers(0, 40, size=40), minlength=40) for _ in range(5)])  # [B, N]
    weights[0] = np.bincount(rng.choice(np.flatnonzero(y != 3), size=40), minlength=40)  # no class 3 in the truth
    got = {m: _per_seed_metric(pred, y, weights.astype(float), m, 4) for m in ("accuracy", "macro_f1")}  # [B, S]
    for b, w in enumerate(weights):
        for s, p in enumerate(pred):
            f1 = f1_score(y, p, labels=range(4), average="macro", zero_division=0, sample_weight=w)
            assert got["macro_f1"][b, s] == pytest.approx(f1, abs=1e-12)
            assert got["accuracy"][b, s] == pytest.approx(accuracy_score(y, p, sample_weight=w), abs=1e-12)


def test_bootstrap_over_seeds_alone_matches_the_binomial_by_hand() -> None:
    # Columns carry no information: on seeds 0-2 A is right and B wrong on every example (difference 1), on seed 3
    # both are right (difference 0). A replicate holds K copies of seed 3, K ~ Binomial(4, 1/4), and is worth
    # (4 - K) / 4 whatever the columns: as in the P(A > B) test above, the 95% interval is [1/4, 1], the point 3/4.
    y = np.zeros(5, dtype=int)
    pred_a = np.zeros((4, 5), dtype=int)
    pred_b = np.array([[1] * 5, [1] * 5, [1] * 5, [0] * 5])
    assert paired_bootstrap_diff(pred_a, pred_b, y, n_boot=4000, seed=2) == (0.75, 0.25, 1.0)


def test_bootstrap_over_test_examples_alone_matches_the_normal_approximation() -> None:
    # One seed: a replicate is the mean of N = 1000 resampled per-example differences d_j, 100 of them +1 (A right,
    # B wrong), 40 of them -1, the rest 0. Point 60/1000 = 0.06; population variance E[d^2] - E[d]^2 =
    # 0.14 - 0.0036 = 0.1364; standard error sqrt(0.1364 / 1000) = 0.011679; 95% normal half-width
    # 1.96 * 0.011679 = 0.022891. The percentile bounds of 4000 replicates estimate the 2.5% / 97.5% points with a
    # standard error of about sqrt(0.025 * 0.975 / 4000) / 0.0584 (normal density there) * 0.011679 = 0.0005; the
    # 0.002 tolerance is 4 of those (the sum of 1000 draws is close enough to normal for that).
    y = np.zeros(1000, dtype=int)
    pred_a = np.zeros((1, 1000), dtype=int)
    pred_a[0, 100:140] = 1
    pred_b = np.zeros((1, 1000), dtype=int)
    pred_b[0, :100] = 1
    point, low, high = paired_bootstrap_diff(pred_a, pred_b, y, n_boot=4000, seed=5)
    assert point == pytest.approx(0.06)
    assert low == pytest.approx(0.06 - 0.022891, abs=0.002)
    assert high == pytest.approx(0.06 + 0.022891, abs=0.002)


def _simulated_predictions(
    rng: np.random.Generator, *, seeds: int, examples: int, effect: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions of A and B on a test set drawn from a population, with an expected accuracy gap of ``effect``.

    Example j is answered correctly with probability q_j ~ U(0.55, 0.9) (its difficulty), shifted by
    +(effect/2 + b_j) for A and -(effect/2 + b_j) for B, with b_j ~ N(0, 0.05) (examples that suit A or B: the
    test-set sampling the interval must count), plus a seed effect shared by A and B (same split: N(0, 0.02)) and one
    per variant and seed (N(0, 0.02)). Probabilities stay inside [0, 1] unless a draw passes 2.5 sd, rare enough to
    leave the expected gap over seeds and over the population of examples at ``effect`` (1e-4 of an example's
    difference, checked: a mean-zero clip on either side).
    """
    q = rng.uniform(0.55, 0.9, size=examples)  # [N]
    b = rng.normal(0, 0.05, size=examples)  # [N]
    shared = rng.normal(0, 0.02, size=(seeds, 1))  # [S, 1]
    prob_a = q + effect / 2 + b + shared + rng.normal(0, 0.02, size=(seeds, 1))  # [S, N]
    prob_b = q - effect / 2 - b + shared + rng.normal(0, 0.02, size=(seeds, 1))
    y = rng.integers(0, 2, size=examples)
    right_a = rng.random((seeds, examples)) < prob_a
    right_b = rng.random((seeds, examples)) < prob_b
    return np.where(right_a, y, 1 - y), np.where(right_b, y, 1 - y), y


def bootstrap_coverage(seed: int, *, sweeps: int = 100, seeds: int = 5, examples: int = 200) -> tuple[float, float]:
    """Simulated sweeps through the 95% paired bootstrap: (fraction of intervals holding the true gap 0.02,
    mean half-width / (1.96 * the spread of the point estimates around the truth))."""
    rng = np.random.default_rng(seed)
    hits, halves, errors = 0, [], []
    for _ in range(sweeps):
        pred_a, pred_b, y = _simulated_predictions(rng, seeds=seeds, examples=examples, effect=0.02)
        point, low, high = paired_bootstrap_diff(pred_a, pred_b, y, n_boot=200, seed=int(rng.integers(2**31)))
        hits += low <= 0.02 <= high
        halves.append((high - low) / 2)
        errors.append(point - 0.02)
    return hits / sweeps, float(np.mean(halves) / (1.96 * np.sqrt(np.mean(np.square(errors)))))


def test_paired_bootstrap_interval_covers_the_truth_at_about_the_nominal_rate() -> None:
    # 100 simulated sweeps (5 seeds, 200 test examples each). Measured over RNG seeds 0-39 of this function:
    # coverage mean 0.987 (min 0.95, max 1.0); width ratio mean 1.38, sd 0.10 (min 1.18, max 1.63).
    # The interval is conservative by construction: resampling seeds and examples both counts the seed x example
    # interaction (here the coin flip of each prediction) twice, once in each margin (Owen 2007, "the pigeonhole
    # bootstrap"), so it is ~1.4x as wide as the spread of the estimate in this simulation.
    # Bounds: coverage >= 0.93 (at the measured 0.987, 7 or more misses in 100 has probability ~1e-4) and a width
    # ratio in [1.0, 2.0] (3.7 and 6 sd from the measured mean). Planted bugs measured on seeds 0-9: resampling seeds
    # only covers 0.815 on average (width ratio 0.81, max 0.94), examples only 0.915 (0.86, max 0.96): both fail.
    coverage, width = bootstrap_coverage(0)
    assert coverage >= 0.93
    assert 1.0 <= width <= 2.0


@pytest.mark.parametrize(
    ("pred_a", "pred_b", "y", "kwargs", "exc", "match"),
    [
        ([[0, 1]], [[0, 1, 1]], [0, 1], {}, ValueError, "same shape"),
        ([0, 1], [0, 1], [0, 1], {}, ValueError, r"\[seeds, examples\]"),
        ([[0, 1]], [[0, 1]], [0, 1, 1], {}, ValueError, "y_true must be"),
        ([[0, -1]], [[0, 1]], [0, 1], {}, ValueError, "found -1"),
        ([[0.5, 1]], [[0, 1]], [0, 1], {}, TypeError, "pred_a must hold integer class labels"),
        ([[0, 2]], [[0, 1]], [0, 1], {"num_classes": 2}, ValueError, "pass at least 3"),
        ([[0, 1]], [[0, 1]], [0, 1], {"metric": "auc"}, ValueError, "metric must be one of"),
        (np.zeros((2, 0), int), np.zeros((2, 0), int), np.zeros(0, int), {}, ValueError, "empty"),
    ],
)
def test_paired_bootstrap_rejects_bad_input_naming_it(
    pred_a: list, pred_b: list, y: list, kwargs: dict, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        paired_bootstrap_diff(np.asarray(pred_a), np.asarray(pred_b), np.asarray(y), **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# holm


def test_holm_matches_hand_computation() -> None:
    # sorted ascending: 0.005 (input 3), 0.01 (input 0), 0.03 (input 2), 0.04 (input 1); times m - i = 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06; back in input order: 0.03, 0.06, 0.06, 0.02.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: 0.5 * 2 = 1.0, then max(1.0, 0.6 * 1) = 1.0
    assert holm([0.6, 0.5]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_is_monotone_bounded_and_never_below_raw(p: list[float]) -> None:
    adjusted = holm(p)
    assert len(adjusted) == len(p)
    for raw, adj in zip(p, adjusted, strict=True):
        assert raw <= adj <= 1.0
        assert adj <= min(1.0, raw * len(p)) + 1e-15  # never above Bonferroni
    order = np.argsort(p, kind="stable")
    assert all(adjusted[i] <= adjusted[j] for i, j in itertools.pairwise(order))
    assert holm(p[::-1]) == adjusted[::-1]  # the input order does not matter


@pytest.mark.parametrize("bad", [[0.1, float("nan")], [1.5], [-0.01]])
def test_holm_rejects_values_that_are_not_p_values(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="p_values must all be in"):
        holm(bad)


# ----------------------------------------------------------------------------------------------------------------
# power


def test_power_matches_textbook_sample_size_for_a_medium_effect() -> None:
    # Cohen's medium standardized effect dz = 0.5, two-sided alpha 0.05, power 0.80: the matched-pairs t-test needs
    # 34 pairs (G*Power 3 "Means: difference between two dependent means": total sample size 34, actual power
    # 0.8077775). The normal approximation ((1.96 + 0.8416) / 0.5)^2 = 31.4 is the lower bound textbooks quote.
    assert power_paired(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert power_paired(0.5, 1.0, 33) < 0.8
    assert seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(-1.0, 2.0) == 34  # the same standardized effect, sign and scale do not matter


def test_power_matches_monte_carlo_t_tests() -> None:
    # 40,000 simulated paired experiments with n = 6 differences ~ N(0.8, 1); reject when |t| exceeds the t table's
    # two-sided 5% point for df = 5, 2.571 (2.570582). Binomial standard error of the rejection rate at power ~0.3:
    # sqrt(0.3 * 0.7 / 40000) = 0.0023; tolerance 0.01 is over 4 of those.
    rng = np.random.default_rng(11)
    d = rng.normal(0.8, 1.0, size=(40_000, 6))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(6))
    rate = float(np.mean(np.abs(t) > 2.570582))
    assert power_paired(0.8, 1.0, 6) == pytest.approx(rate, abs=0.01)


def test_power_at_large_n_matches_the_normal_approximation() -> None:
    # n = 10,000, effect 0.02, sd 1: noncentrality 0.02 * 100 = 2; with df this large t is normal, so the power is
    # Phi(2 - 1.96) + Phi(-2 - 1.96) = Phi(0.04) + Phi(-3.96) = 0.51595 + 0.00004 = 0.5160.
    assert power_paired(0.02, 1.0, 10_000) == pytest.approx(0.5160, abs=5e-4)
    # far into the tail, where scipy's noncentral t CDF returns nan: still a probability, and 1
    assert power_paired(50.0, 1.0, 5000) == 1.0
    assert power_paired(8.0, 1.0, 2) == pytest.approx(power_paired(-8.0, 1.0, 2))


def test_power_at_no_effect_is_alpha_and_at_no_spread_is_certain() -> None:
    assert power_paired(0.0, 1.0, 10, alpha=0.05) == pytest.approx(0.05, abs=1e-12)
    assert power_paired(0.01, 0.0, 2) == 1.0
    assert power_paired(0.0, 0.0, 2) == 0.0  # compare_paired gives p = 1 when every difference is 0


@given(st.floats(0.01, 3.0), st.integers(2, 200))
def test_power_grows_with_seeds_and_effect(effect: float, n: int) -> None:
    p = power_paired(effect, 1.0, n)
    assert 0.05 <= p <= 1.0
    assert power_paired(effect, 1.0, n + 1) >= p - 1e-12
    assert power_paired(effect * 1.1, 1.0, n) >= p - 1e-12


@given(st.floats(0.05, 3.0), st.floats(0.5, 0.95))
def test_seeds_needed_is_the_smallest_sufficient_count(effect: float, target: float) -> None:
    n = seeds_needed(effect, 1.0, power=target)
    assert n is not None and n >= 2
    assert power_paired(effect, 1.0, n) >= target
    assert n == 2 or power_paired(effect, 1.0, n - 1) < target


def test_seeds_needed_gives_up_on_no_effect_and_on_hopeless_ones() -> None:
    assert seeds_needed(0.0, 1.0) is None
    # dz = 0.001 needs about ((1.96 + 0.84) / 0.001)^2 = 7.8 million pairs
    assert seeds_needed(0.001, 1.0) is None
    assert seeds_needed(0.001, 1.0, max_n=10_000_000) == pytest.approx(7_848_784, rel=1e-3)
    assert seeds_needed(0.02, 0.0) == 2


def test_min_detectable_effect_inverts_power() -> None:
    # at 34 pairs the medium effect 0.5 has power 0.8078 > 0.8, so the detectable effect is a little below 0.5 and
    # above the normal approximation (1.96 + 0.8416) / sqrt(34) = 0.4805
    mde = min_detectable_effect(1.0, 34)
    assert 0.4805 < mde < 0.5
    assert power_paired(mde, 1.0, 34) == pytest.approx(0.8, abs=1e-8)
    assert min_detectable_effect(0.02, 34) == pytest.approx(0.02 * mde, rel=1e-8)  # linear in the sd
    assert min_detectable_effect(0.0, 5) == 0.0
    assert min_detectable_effect(1.0, 2) > min_detectable_effect(1.0, 3) > mde  # fewer seeds, larger effects only


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: power_paired(0.1, -1.0, 5), "sd must be a finite number >= 0"),
        (lambda: power_paired(0.1, 1.0, 1), "n must be an integer >= 2"),
        (lambda: power_paired(float("nan"), 1.0, 5), "effect must be a finite number"),
        (lambda: power_paired(0.1, 1.0, 5, alpha=0.0), "alpha must be in"),
        (lambda: seeds_needed(0.1, 1.0, power=1.0), "power must be in"),
        (lambda: seeds_needed(0.1, 1.0, max_n=1), "max_n must be an integer >= 2"),
        (lambda: min_detectable_effect(float("inf"), 5), "sd must be a finite number"),
    ],
)
def test_power_functions_reject_bad_input(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# ----------------------------------------------------------------------------------------------------------------
# verdict


def _comparison(n: int, mean_diff: float, sd_diff: float) -> PairedDifference:
    """A PairedDifference with the fields verdict reads; the rest are placeholders."""
    return PairedDifference(n, mean_diff, sd_diff, math.nan, math.nan, math.nan, 0.5, 0.0, 1.0)


def test_verdict_without_enough_seeds_is_no_verdict() -> None:
    v = verdict(_comparison(2, 0.05, 0.001), p_adjusted=0.001)
    assert (v.label, v.text, v.seeds_needed) == ("no verdict", "no verdict: 2 seeds (at least 3 needed)", None)
    assert math.isnan(v.mde)
    assert verdict(_comparison(4, 0.05, 0.001), 0.001, min_seeds=5).text == "no verdict: 4 seeds (at least 5 needed)"


def test_verdict_significant_differences_help_or_hurt() -> None:
    helps = verdict(_comparison(5, 0.02, 0.01), p_adjusted=0.01)
    assert (helps.label, helps.text) == ("helps", "helps")
    assert helps.mde == pytest.approx(min_detectable_effect(0.01, 5))
    assert verdict(_comparison(5, -0.02, 0.01), p_adjusted=0.01).label == "hurts"
    assert verdict(_comparison(5, 0.02, 0.01), p_adjusted=0.01, combined_ci=(0.001, 0.04)).label == "helps"
    assert verdict(_comparison(5, -0.02, 0.01), p_adjusted=0.01, combined_ci=(-0.04, -0.001)).label == "hurts"


def test_verdict_consistent_over_seeds_but_within_test_set_noise_is_inconclusive() -> None:
    v = verdict(_comparison(5, 0.02, 0.01), p_adjusted=0.01, combined_ci=(-0.003, 0.04))
    assert (v.label, v.text) == ("inconclusive", "inconclusive: consistent over seeds, within test-set noise")
    # an interval on the other side of zero from the seed-level difference does not confirm it either
    assert verdict(_comparison(5, 0.02, 0.01), 0.01, combined_ci=(-0.04, -0.001)).label == "inconclusive"


def test_verdict_no_detectable_difference_when_these_seeds_would_have_found_min_effect() -> None:
    # sd of differences 0.002 at 10 seeds: detectable effect ~0.002 * 1.0 (t-based dz for n = 10 is ~1.0), well
    # under min_effect 0.01
    v = verdict(_comparison(10, 0.0004, 0.002), p_adjusted=0.6)
    assert (v.label, v.text, v.seeds_needed) == ("no detectable difference", "no detectable difference", None)
    assert v.mde <= 0.01
    # the same spread with min_effect 0.001: these seeds cannot rule that out
    assert verdict(_comparison(10, 0.0004, 0.002), p_adjusted=0.6, min_effect=0.001).label == "inconclusive"


def test_verdict_inconclusive_says_how_many_seeds_are_needed() -> None:
    # observed 0.005 < min_effect 0.01, so plan for 0.01 with sd 0.02: dz = 0.5, 34 pairs (G*Power, as above)
    v = verdict(_comparison(5, 0.005, 0.02), p_adjusted=0.3)
    assert (v.label, v.text, v.seeds_needed) == ("inconclusive", "inconclusive: 5 seeds, about 34 needed", 34)
    assert v.mde > 0.01
    # an observed effect larger than min_effect is planned for: 0.02 with sd 0.02 (dz = 1.0) -> fewer seeds
    assert verdict(_comparison(5, -0.02, 0.02), p_adjusted=0.3).seeds_needed < 34
    hopeless = verdict(_comparison(5, 0.0, 1.0), p_adjusted=1.0)  # dz = 0.01: ~78,500 pairs
    assert (hopeless.text, hopeless.seeds_needed) == ("inconclusive: 5 seeds, more than 10,000 needed", None)
    # dz = 3 needs fewer than 5 pairs (the normal approximation says (2.80 / 3)^2 < 1, the t-test a few): these 5
    # seeds should have sufficed, so the miss was chance or the correction; the text does not ask for fewer seeds
    # than were run
    near = verdict(_comparison(5, 0.03, 0.01), p_adjusted=0.08)
    assert (near.label, near.text) == ("inconclusive", "inconclusive: 5 seeds, a few more needed")
    assert near.seeds_needed is not None and near.seeds_needed <= 5
    # at 4 seeds the same effect is on the edge (4 pairs needed at dz = 3: 3 pairs give the t-test with 2 df only
    # ~0.75 power): "about 4 needed" with 4 seeds run would be no advice either
    assert verdict(_comparison(4, 0.03, 0.01), p_adjusted=0.08).text == "inconclusive: 4 seeds, a few more needed"


def test_verdict_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="p_adjusted must be a probability"):
        verdict(_comparison(5, 0.01, 0.01), p_adjusted=float("nan"))
    with pytest.raises(ValueError, match="min_seeds must be an integer >= 2"):
        verdict(_comparison(5, 0.01, 0.01), 0.5, min_seeds=1)
    with pytest.raises(ValueError, match="min_effect must be a number > 0"):
        verdict(_comparison(5, 0.01, 0.01), 0.5, min_effect=0.0)
    with pytest.raises(ValueError, match="combined_ci must be a finite"):
        verdict(_comparison(5, 0.01, 0.01), 0.5, combined_ci=(0.02, 0.01))
    with pytest.raises(ValueError, match="combined_ci must be a finite"):
        verdict(_comparison(5, 0.01, 0.01), 0.01, combined_ci=(float("nan"), 0.01))


# ----------------------------------------------------------------------------------------------------------------
# Calibration: simulated sweeps through compare_paired -> holm -> verdict


def simulated_verdicts(seed: int, *, tables: int, seeds: int, planted: float = 0.0, correct: bool = True) -> np.ndarray:
    """Verdict labels [tables, 3] of simulated ablation tables: three variants compared with one baseline.

    A seed's metric is 0.80 + a split effect shared by every variant of that seed (N(0, 0.02): the pairing) + the
    variant's own noise (N(0, 0.01)), so a paired difference has sd 0.01 * sqrt(2) = 0.0141. Variant 1 is better by
    ``planted``; the others equal the baseline. The three p-values of a table are Holm-corrected together
    (``correct=False`` skips that: the planted bug the null bound must catch). No combined interval is passed,
    which can only add "helps"/"hurts" verdicts, so the null rate here bounds the harness's.
    """
    rng = np.random.default_rng(seed)
    labels = np.empty((tables, 3), dtype=object)
    for t in range(tables):
        split = rng.normal(0, 0.02, size=seeds)  # [S]
        values = 0.80 + split + rng.normal(0, 0.01, size=(4, seeds))  # [variant, S]; variant 0 is the baseline
        values[1] += planted
        comparisons = [compare_paired(values[v], values[0], n_boot=50, seed=t) for v in (1, 2, 3)]
        raw = [c.p_value for c in comparisons]
        adjusted = holm(raw) if correct else raw
        labels[t] = [verdict(c, p).label for c, p in zip(comparisons, adjusted, strict=True)]
    return labels


def test_null_sweeps_give_helps_or_hurts_at_no_more_than_the_nominal_rate() -> None:
    # 400 simulated null tables (5 seeds, 3 comparisons each, Holm across the 3). Holm keeps the chance of any
    # "helps"/"hurts" in a table (the family-wise error rate) at or below alpha = 0.05, so the count of such tables
    # is at most Binomial(400, 0.05): mean 20, sd sqrt(400 * 0.05 * 0.95) = 4.36. Bound: 34 tables (8.5%), 3.3 sd
    # above the mean (P(count >= 35) ~ 1e-3 at exactly 5%).
    # Measured over RNG seeds 0-59: mean 19.5 tables (4.9%), min 8, max 31; all three comparisons together gave
    # "helps"/"hurts" 21.6 times in 1200 (1.8%). Planted bug, no Holm correction (seeds 0-7): 47-63 tables: fails.
    labels = simulated_verdicts(0, tables=400, seeds=5)
    significant = np.isin(labels, ["helps", "hurts"])  # [tables, 3]
    assert significant.any(axis=1).sum() <= 34
    assert significant.mean() <= 0.05
    assert set(labels.ravel()) <= {"helps", "hurts", "no detectable difference", "inconclusive"}


def test_a_planted_effect_of_three_sd_is_found_with_enough_seeds() -> None:
    # Variant 1 is better by 3 sd of the paired differences (3 * 0.0141 = 0.042) in 200 simulated tables of 10
    # seeds. The power of the paired t-test there, at Holm's first step (alpha / 3), is 1 - 1e-5 or so
    # (noncentrality 3 * sqrt(10) = 9.5 against a critical t of about 3 with 9 df), so at most a table or two may
    # miss it. Bound: "helps" in at least 196 of 200 tables (98%); never "hurts".
    # Measured over RNG seeds 0-39: "helps" in 200 of 200 every time; the two null variants of the same tables got
    # a "helps"/"hurts" in 2-16 tables of 200 (mean 9.8, 4.9%, the nominal rate again).
    labels = simulated_verdicts(1, tables=200, seeds=10, planted=3 * 0.01 * math.sqrt(2))
    assert (labels[:, 0] == "helps").sum() >= 196
    assert not (labels[:, 0] == "hurts").any()


def test_seeds_are_planned_at_the_level_the_verdict_uses_after_holm() -> None:
    # The main job's measured figures: +0.023 test accuracy, sd of paired differences 0.017, 5 seeds, 6 comparisons.
    cmp = _comparison(5, 0.023, 0.017)
    at_raw = verdict(cmp, 0.2, min_effect=0.01)
    at_holm = verdict(cmp, 0.2, min_effect=0.01, plan_alpha=0.05 / 6)
    assert at_raw == verdict(cmp, 0.2, min_effect=0.01, plan_alpha=0.05)  # the default plans at alpha itself
    # Hand-checked with the noncentral t (scipy.stats.nct): at level 0.05 power is 0.754 with 6 pairs and 0.845 with
    # 7; at 0.05 / 6 it is 0.787 with 10 pairs and 0.852 with 11.
    assert at_raw.seeds_needed == 7 and at_holm.seeds_needed == 11
    assert at_holm.text == "inconclusive: 5 seeds, about 11 needed"
    assert at_holm.mde > at_raw.mde
    with pytest.raises(ValueError, match=r"plan_alpha must lie in \(0, 1\) \(got 0\)"):
        verdict(cmp, 0.2, plan_alpha=0)
