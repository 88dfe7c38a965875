from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest

from evalsvc.stats.binary import compare_binary, mcnemar, tango_score
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.comparison import Comparison, margin_from
from evalsvc.stats.multiplicity import decide, decide_suites, holm_levels, overall
from evalsvc.stats.power import n_for_noninferiority

ALPHA = 0.05
MARGIN = 0.05


def slack(reps: int, rate: float = ALPHA) -> float:
    """Three Monte-Carlo standard errors of a simulated rate."""
    return 3 * math.sqrt(rate * (1 - rate) / reps)


def binary_pair(rng: np.random.Generator, n: int, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-case pass probability p ~ Beta(2, 2); independent draws given p; the candidate's p scaled so E[delta] is exact."""
    p = rng.beta(2.0, 2.0, n)
    return (rng.random(n) < p).astype(float), (rng.random(n) < p * (1 + 2 * delta)).astype(float)


def continuous_pair(rng: np.random.Generator, n: int, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Latent case quality N(0.6, 0.2^2) plus N(0, 0.1^2) noise per run: correlation 0.8, SD of differences 0.141."""
    q = rng.normal(0.6, 0.2, n)
    return q + rng.normal(0, 0.1, n), q + delta + rng.normal(0, 0.1, n)


def binary_from_counts(same_pass: int, down: int, up: int, same_fail: int) -> tuple[list[int], list[int]]:
    base = [1] * same_pass + [1] * down + [0] * up + [0] * same_fail
    cand = [1] * same_pass + [0] * down + [1] * up + [0] * same_fail
    return base, cand


def verdict_shares(comparisons: list[Comparison]) -> dict[str, float]:
    verdicts = ("pass", "regression", "improvement", "inconclusive")
    return {v: sum(c.verdict == v for c in comparisons) / len(comparisons) for v in verdicts}


# --- cross-checks against independent implementations ------------------------------------------------------------


@pytest.mark.parametrize(("b", "c"), [(3, 9), (0, 5), (1, 1), (7, 17), (12, 11), (30, 10), (40, 55), (100, 130), (13, 12)])
def test_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables", reason="pip install statsmodels for this cross-check")
    table = [[10, b], [c, 20]]
    expected = contingency.mcnemar(table, exact=b + c < 25, correction=True).pvalue

    assert mcnemar(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_is_one_without_discordance_or_with_equal_discordance() -> None:
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(40, 40) == 1.0  # statsmodels' chi-square gives 0.91 here: (|b - c| - 1)^2 is not floored


PVALUES = [[0.01, 0.04, 0.03, 0.2, 0.005], [0.001, 0.001, 0.3], [0.02], [0.5, 0.011, 0.012, 0.013, 0.2, 0.04]]


@pytest.mark.parametrize("pvalues", PVALUES, ids=["five", "ties", "one", "six"])
def test_holm_matches_statsmodels(pvalues: list[float]) -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest", reason="pip install statsmodels for this cross-check")
    reject, *_ = multitest.multipletests(pvalues, alpha=ALPHA, method="holm")

    assert [p < level for p, level in zip(pvalues, holm_levels(pvalues, ALPHA), strict=True)] == list(reject)


def closed_weighted_bonferroni(pvalues: list[float], weights: list[float], alpha: float) -> list[bool]:
    """Weighted Holm by its definition: H_i is rejected when every intersection containing it is rejected by a
    weighted Bonferroni test (some j in the subset with p_j < alpha w_j / sum of the subset's weights)."""
    k = len(pvalues)
    rejected = []
    for i in range(k):
        subsets = [S for mask in range(1, 2**k) if (S := [j for j in range(k) if mask >> j & 1]) and i in S]
        rejected.append(all(any(pvalues[j] < alpha * weights[j] / sum(weights[t] for t in S) for j in S) for S in subsets))
    return rejected


def test_weighted_holm_is_the_closed_weighted_bonferroni_test() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        k = int(rng.integers(1, 6))
        pvalues = list(rng.uniform(0, 0.08, k) ** rng.uniform(0.5, 2))
        weights = list(rng.choice([0.5, 1.0, 2.0, 3.0], size=k))
        levels = holm_levels(pvalues, ALPHA, weights)
        assert [p < lv for p, lv in zip(pvalues, levels, strict=True)] == closed_weighted_bonferroni(pvalues, weights, ALPHA)
    assert holm_levels([0.01, 0.02], ALPHA, [1, 1]) == holm_levels([0.01, 0.02], ALPHA)
    with pytest.raises(ValueError, match="weight > 0"):
        holm_levels([0.01, 0.02], ALPHA, [1, 0])


def test_a_heavier_suite_gets_more_of_alpha_and_the_family_stays_under_alpha() -> None:
    rng, reps = np.random.default_rng(13), 400
    raw = _suite_comparisons(rng, [-0.15, 0.0, 0.0, 0.0], n=60)
    plain, heavy = decide_suites(raw, ALPHA), decide_suites(raw, ALPHA, weights=[3, 1, 1, 1])
    assert heavy[0].alpha == pytest.approx(ALPHA / 2) and plain[0].alpha == pytest.approx(ALPHA / 4)
    any_regression = 0
    for _ in range(reps):  # every suite exactly on the margin: any regression named is false
        decided = decide_suites(_suite_comparisons(rng, [-MARGIN] * 4), ALPHA, weights=[3, 1, 1, 1])
        any_regression += any(d.verdict == "regression" for d in decided)
    assert any_regression / reps <= ALPHA + slack(reps)


def brute_force_score_interval(n: int, up: int, down: int, alpha: float) -> tuple[float, float]:
    """Tango's interval the slow way: maximise the restricted multinomial likelihood numerically, form the score
    statistic from the generic variance p_up + p_down - delta^2, and invert it with scipy's root finder."""
    from scipy.optimize import brentq, minimize_scalar
    from scipy.stats import norm

    same = n - up - down

    def negative_loglik(p_down: float, delta0: float) -> float:
        cells = ((up, p_down + delta0), (down, p_down), (same, 1 - 2 * p_down - delta0))
        return -sum(k * math.log(p) for k, p in cells if k)

    def score(delta0: float) -> float:
        bounds = (max(0.0, -delta0) + 1e-13, (1 - delta0) / 2 - 1e-13)
        p_down = minimize_scalar(negative_loglik, bounds=bounds, args=(delta0,), method="bounded", options={"xatol": 1e-14}).x
        return (up - down - n * delta0) / math.sqrt(n * (2 * p_down + delta0 - delta0**2))

    z, estimate = norm.ppf(1 - alpha), (up - down) / n
    return (brentq(lambda d: score(d) - z, -1 + 1e-9, estimate, xtol=1e-14),
            brentq(lambda d: score(d) + z, estimate, 1 - 1e-6, xtol=1e-14))


TABLES = [(21, 7, 1), (161, 6, 16), (200, 39, 68), (30, 0, 0), (50, 3, 0), (44, 20, 20), (1, 0, 0)]  # (n, up, down)


@pytest.mark.parametrize(("n", "up", "down"), TABLES)
@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01])
def test_binary_interval_matches_brute_force_score_inversion(n: int, up: int, down: int, alpha: float) -> None:
    base, cand = binary_from_counts(n - up - down, down, up, 0)
    expected = brute_force_score_interval(n, up, down, alpha)

    result = compare_binary("m", base, cand, margin=0.05, alpha=alpha)

    assert (result.ci_low, result.ci_high) == pytest.approx(expected, abs=1e-7)


def test_tango_score_at_zero_is_mcnemars_uncorrected_z() -> None:
    assert tango_score(100, 30, 12, 0.0) == pytest.approx((30 - 12) / math.sqrt(42))


def test_swapping_the_direction_of_every_flip_mirrors_the_binary_interval() -> None:
    worse = compare_binary("m", *binary_from_counts(50, 20, 5, 25), margin=0.05)
    better = compare_binary("m", *binary_from_counts(50, 5, 20, 25), margin=0.05)

    assert (better.ci_low, better.ci_high) == pytest.approx((-worse.ci_high, -worse.ci_low), abs=1e-12)
    assert (worse.flips_down, worse.flips_up, worse.delta) == (20, 5, -15 / 100)


@pytest.mark.parametrize("n", [12, 200])
def test_bootstrap_interval_matches_scipy_bca_at_the_expanded_level(n: int) -> None:
    from scipy.stats import bootstrap, norm, t

    rng = np.random.default_rng(7)
    base = rng.normal(0.6, 0.2, n)
    cand = base + rng.exponential(0.1, n) - 0.12  # skewed differences, where BCa differs from the percentile interval
    differences = cand - base
    se = differences.std(ddof=1) / math.sqrt(n)
    expanded = norm.cdf(math.sqrt(n / (n - 1)) * t.ppf(ALPHA, n - 1))  # Hesterberg's expansion, one-sided
    expected = bootstrap((differences,), np.mean, method="BCa", confidence_level=1 - 2 * expanded, n_resamples=10000,
                         rng=np.random.default_rng(8)).confidence_interval

    result = compare_continuous("m", base, cand, margin=0.05, n_boot=10000, seed=1)

    assert result.ci_low == pytest.approx(expected.low, abs=0.1 * se)  # Monte-Carlo error of each is about 0.02 SE
    assert result.ci_high == pytest.approx(expected.high, abs=0.1 * se)


def test_the_expansion_fades_with_n() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(9)
    base, cand = continuous_pair(rng, 1000)
    plain = bootstrap((cand - base,), np.mean, method="BCa", confidence_level=1 - 2 * ALPHA, rng=np.random.default_rng(8))

    result = compare_continuous("m", base, cand, margin=0.05, n_boot=10000, seed=1)

    se = (cand - base).std(ddof=1) / math.sqrt(1000)
    assert result.ci_low == pytest.approx(plain.confidence_interval.low, abs=0.1 * se)


def test_ten_thousand_resamples_of_two_thousand_cases_take_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    base, cand = continuous_pair(rng, 2000)
    started = time.process_time()

    compare_continuous("m", base, cand, margin=0.05, n_boot=10000)

    assert time.process_time() - started < 1.0


def test_interval_and_p_values_give_the_same_verdict() -> None:
    rng = np.random.default_rng(11)
    comparisons = []
    for i in range(120):
        n, margin, shift = int(rng.integers(2, 120)), float(rng.choice([0.0, 0.02, 0.05, 0.1])), float(rng.uniform(-0.15, 0.15))
        if i % 2:
            comparisons.append(compare_binary("m", *binary_pair(rng, n, min(shift, 0.0)), margin=margin))
        else:
            base, cand = continuous_pair(rng, n, shift)
            cand = base + np.round(cand - base, 1) if i % 3 == 0 else cand  # ties among the resampled means
            comparisons.append(compare_continuous("m", base, cand, margin=margin, n_boot=300, seed=i))
    decided = [c for k in range(0, 120, 6) for c in decide(comparisons[k:k + 6])]

    for c in comparisons + decided:
        assert (c.verdict in ("pass", "improvement")) == (c.p_noninferior < c.alpha), c
        assert (c.verdict == "regression") == (c.p_inferior < c.alpha), c
    assert {c.verdict for c in comparisons} == {"pass", "regression", "improvement", "inconclusive"}


# --- calibration: the noise floor and power ----------------------------------------------------------------------


def test_binary_aa_rarely_says_regression() -> None:
    rng = np.random.default_rng(21)
    data = [binary_pair(rng, 200) for _ in range(800)]

    at_margin = verdict_shares([compare_binary("m", b, c, margin=0.05) for b, c in data])
    at_boundary = verdict_shares([compare_binary("m", b, c, margin=0.0) for b, c in data])  # delta = 0 = -m: the worst case

    assert at_margin["regression"] <= ALPHA + slack(800)
    assert at_boundary["regression"] <= ALPHA + slack(800)


def test_binary_aa_passes_at_n_2000() -> None:
    """With 40% discordant pairs (Beta(2, 2) cases drawn independently) a 0.05 margin needs n of about 1600 to pass
    93% of the time; at n = 200 an A/A comparison passes only about 30% of the time (docs/statistics.md)."""
    rng = np.random.default_rng(22)

    shares = verdict_shares([compare_binary("m", *binary_pair(rng, 2000), margin=0.05) for _ in range(300)])

    assert shares["pass"] >= 0.93
    assert shares["regression"] == 0


def test_continuous_aa_rarely_says_regression() -> None:
    rng = np.random.default_rng(23)
    comparisons = [compare_continuous("m", *continuous_pair(rng, 200), margin=0.0, n_boot=1000, seed=i) for i in range(600)]

    assert verdict_shares(comparisons)["regression"] <= ALPHA + slack(600)


def test_continuous_aa_passes_at_n_100() -> None:
    rng = np.random.default_rng(24)

    comparisons = [compare_continuous("m", *continuous_pair(rng, 100), margin=0.05, n_boot=1000, seed=i) for i in range(300)]
    shares = verdict_shares(comparisons)

    assert shares["pass"] >= 0.93
    assert shares["regression"] == 0


def test_binary_regression_of_015_is_caught_at_n_200_as_often_as_theory_says() -> None:
    """Power at n = 200 with 40% discordance is about 0.72 by the normal approximation (0.15 - 0.05 against
    sqrt((psi - delta^2) / n) = 0.045); 80% takes n of about 250 here, or fewer discordant pairs."""
    rng = np.random.default_rng(25)
    reps = 600

    shares = verdict_shares([compare_binary("m", *binary_pair(rng, 200, -0.15), margin=0.05) for _ in range(reps)])

    psi = 0.85 - 1.4 * 0.3  # E[p (1 - 0.7 p) + (1 - p) 0.7 p] for p ~ Beta(2, 2)
    se = math.sqrt((psi - 0.15**2) / 200)
    theory = 0.5 * math.erfc(-((0.10 - 1.6449 * se) / se) / math.sqrt(2))
    assert shares["regression"] >= 0.6
    assert shares["regression"] == pytest.approx(theory, abs=3 * slack(reps, theory))
    assert shares["pass"] == 0


def test_binary_regression_of_015_is_caught_80_percent_of_the_time_at_n_300() -> None:
    rng = np.random.default_rng(26)

    shares = verdict_shares([compare_binary("m", *binary_pair(rng, 300, -0.15), margin=0.05) for _ in range(400)])

    assert shares["regression"] >= 0.8


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_n_needed_gives_the_promised_power(kind: str) -> None:
    rng = np.random.default_rng(27)
    reps = 500
    if kind == "binary":  # 10% of pairs flip each way: discordance 0.2, delta 0
        n = n_for_noninferiority(0.05, ALPHA, discordance=0.2)
        assert n is not None
        cells = [rng.choice(4, size=n, p=[0.4, 0.1, 0.1, 0.4]) for _ in range(reps)]  # same pass, down, up, same fail
        comparisons = [compare_binary("m", (x <= 1).astype(float), ((x == 0) | (x == 2)).astype(float), 0.05) for x in cells]
    else:
        n = n_for_noninferiority(0.05, ALPHA, sd=0.14)
        assert n is not None
        comparisons = [compare_continuous("m", np.zeros(n), rng.normal(0, 0.14, n), 0.05, n_boot=500, seed=i) for i in range(reps)]

    assert verdict_shares(comparisons)["pass"] == pytest.approx(0.8, abs=0.06)


@pytest.mark.parametrize(("kind", "delta", "claim"), [("binary", -0.02, "pass"), ("binary", -0.10, "regression"),
                                                       ("continuous", -0.02, "pass"), ("continuous", -0.09, "regression")])
def test_n_needed_at_the_observed_delta_gives_the_promised_power(kind: str, delta: float, claim: str) -> None:
    """n_needed assumes the observed delta is the true one: at that delta, the n it gives decides (pass when the
    delta lies above -m, regression below it) in about 80% of runs. At delta 0 it would promise far too much
    power for a true loss of 2 points (the old assumption)."""
    rng = np.random.default_rng(31)
    reps, m = 400, 0.05
    if kind == "binary":  # 12% of pairs discordant, leaning down by delta
        psi = 0.12
        n = n_for_noninferiority(m, ALPHA, discordance=psi, delta=delta)
        at_zero = n_for_noninferiority(m, ALPHA, discordance=psi)
        assert n is not None and at_zero is not None
        p = [0.5, (psi - delta) / 2, (psi + delta) / 2, 0.5 - psi]  # same pass, down, up, same fail
        cells = [rng.choice(4, size=n, p=p) for _ in range(reps)]
        comparisons = [compare_binary("m", (x <= 1).astype(float), ((x == 0) | (x == 2)).astype(float), m) for x in cells]
    else:
        n = n_for_noninferiority(m, ALPHA, sd=0.14, delta=delta)
        at_zero = n_for_noninferiority(m, ALPHA, sd=0.14)
        assert n is not None and at_zero is not None
        comparisons = [compare_continuous("m", np.zeros(n), rng.normal(delta, 0.14, n), m, n_boot=400, seed=i)
                       for i in range(reps)]

    assert verdict_shares(comparisons)[claim] == pytest.approx(0.8, abs=0.06)
    if claim == "pass":
        assert n > 2 * at_zero  # a small observed loss needs far more cases than delta 0 suggests


def test_n_needed_reads_the_observed_delta_off_the_comparison() -> None:
    leaning = compare_binary("m", *binary_from_counts(45, 8, 2, 45), margin=0.05)  # down 8, up 2: delta -0.06 < -m
    assert leaning.verdict == "inconclusive"
    assert leaning.n_needed == n_for_noninferiority(0.05, ALPHA, discordance=0.10, delta=-0.06)
    assert n_for_noninferiority(0.05, ALPHA, discordance=0.10, delta=-0.05) is None  # on the margin: nothing decides


def test_n_for_noninferiority_continuous_is_the_z_formula() -> None:
    assert n_for_noninferiority(0.25, 0.05, 0.8, sd=1.0) == math.ceil(((1.6448536 + 0.8416212) / 0.25) ** 2)  # 99
    assert n_for_noninferiority(0.0, sd=1.0) is None
    with pytest.raises(ValueError, match="exactly one"):
        n_for_noninferiority(0.05, discordance=0.1, sd=1.0)


# --- several metrics: Holm ---------------------------------------------------------------------------------------


def test_a_metric_that_passes_alone_is_inconclusive_among_five() -> None:
    alone = compare_binary("close", *binary_from_counts(100, 12, 12, 76), margin=0.05)
    assert alone.verdict == "pass" and 0.01 < alone.p_noninferior < ALPHA  # 0.027
    others = [compare_binary(f"small{i}", *binary_from_counts(4, 2, 2, 2), margin=0.05) for i in range(4)]  # p = 0.4

    decided = decide([alone, *others])

    assert decided[0].verdict == "inconclusive"
    assert decided[0].alpha < ALPHA
    assert decided[0].ci_low < alone.ci_low
    assert decided[0].n_needed is not None and decided[0].n_needed > 200


def test_holm_levels_shrink_with_more_metrics() -> None:
    base, cand = binary_from_counts(150, 5, 5, 40)
    one = compare_binary("m", base, cand, margin=0.1)

    for k in (1, 2, 5, 10):
        decided = decide([replace(one, metric=f"m{i}") for i in range(k)])
        assert min(c.alpha for c in decided) == pytest.approx(ALPHA / k)
        assert max(c.alpha for c in decided) == pytest.approx(ALPHA)  # all five pass, so the last is tested at alpha
        assert [c.metric for c in decided] == [f"m{i}" for i in range(k)]


def test_family_wise_false_regression_rate_stays_under_alpha_with_five_null_metrics() -> None:
    rng = np.random.default_rng(33)
    reps, any_unadjusted, any_holm = 600, 0, 0
    for _ in range(reps):
        metrics = [compare_binary(f"m{i}", *binary_pair(rng, 200), margin=0.0) for i in range(5)]  # on the boundary
        any_unadjusted += any(c.verdict == "regression" for c in metrics)
        any_holm += any(c.verdict == "regression" for c in decide(metrics))

    assert any_holm / reps <= ALPHA + slack(reps)
    assert any_unadjusted / reps > 0.15  # without the adjustment it is about 1 - 0.95^5 = 0.23


def test_decide_on_one_metric_changes_nothing() -> None:
    one = compare_binary("m", *binary_from_counts(80, 9, 3, 8), margin=0.05)

    assert decide([one]) == [one]
    assert decide([]) == []


# --- overall verdict and margins ---------------------------------------------------------------------------------


def with_verdict(verdict: str) -> Comparison:
    one = compare_binary("m", [1, 0], [1, 0], margin=0.05)
    return replace(one, verdict=verdict)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdicts", "expected"), [
    (["improvement", "improvement"], "improvement"),
    (["improvement", "pass"], "pass"),
    (["pass", "inconclusive", "improvement"], "inconclusive"),
    (["inconclusive", "regression", "pass"], "regression"),
])
def test_overall_is_the_worst_verdict(verdicts: list[str], expected: str) -> None:
    assert overall([with_verdict(v) for v in verdicts]) == expected


def test_overall_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no comparisons"):
        overall([])


def test_margin_is_absolute_or_a_share_of_the_baseline() -> None:
    assert margin_from(0.8, absolute=0.03, relative_recovery=None) == 0.03
    assert margin_from(0.8, absolute=None, relative_recovery=0.95) == pytest.approx(0.04)
    assert margin_from(-120.0, absolute=None, relative_recovery=0.95) == pytest.approx(6.0)  # a negated lower-is-better metric
    with pytest.raises(ValueError, match="exactly one"):
        margin_from(0.8, absolute=0.03, relative_recovery=0.95)
    with pytest.raises(ValueError, match="recovery"):
        margin_from(0.8, absolute=None, relative_recovery=95)


# --- degenerate inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compare", [compare_binary, compare_continuous])
def test_no_paired_cases_is_a_clear_error(compare: object) -> None:
    with pytest.raises(ValueError, match="no paired cases"):
        compare("accuracy", [], [], 0.05)  # type: ignore[operator]


def test_misaligned_or_invalid_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        compare_continuous("m", [0.1, 0.2], [0.1], 0.05)
    with pytest.raises(ValueError, match="0 or 1"):
        compare_binary("m", [0, 1, 0.5], [0, 1, 1], 0.05)
    with pytest.raises(ValueError, match="finite"):
        compare_continuous("m", [0.1, math.nan], [0.1, 0.2], 0.05)
    with pytest.raises(ValueError, match="margin"):
        compare_binary("m", [0, 1], [0, 1], -0.1)


def test_identical_continuous_scores_pass_only_once_n_bounds_the_cases_that_could_differ() -> None:
    """No spread is no evidence that no case could differ: with none of n seen to differ, at most 1 - alpha^(1/n) of
    the cases could (Clopper-Pearson, 0 of n: the Beta(1, n) quantile), each by the scores' range. At m = 0.05 on
    [0, 1] scores that takes n = 59 (binary: 52), not the 2 a zero-width interval passed from."""
    from scipy.stats import beta

    for n in (2, 3, 5, 58):
        small = compare_continuous("m", [0.4] * n, [0.4] * n, margin=0.05)
        assert (small.verdict, small.n_needed) == ("inconclusive", 59), n
        assert small.ci_low == pytest.approx(-beta.ppf(1 - ALPHA, 1, n)) and small.ci_high == pytest.approx(-small.ci_low)
    scores = [0.2, 0.9, 0.5, 0.7] * 15  # 60 cases
    enough = compare_continuous("m", scores, scores, margin=0.05)
    no_margin = compare_continuous("m", scores, scores, margin=0.0)
    assert (enough.delta, enough.verdict) == (0.0, "pass") and enough.p_noninferior < ALPHA
    assert enough.ci_low == pytest.approx(-beta.ppf(1 - ALPHA, 1, 60))
    assert (no_margin.verdict, no_margin.n_needed) == ("inconclusive", None)  # lo > 0 is impossible when nothing changed


def test_a_constant_small_loss_on_a_few_cases_is_not_a_pass() -> None:
    shifted = compare_continuous("rougeL", [0.4, 0.5, 0.3], [0.39, 0.49, 0.29], margin=0.02)
    assert shifted.verdict == "inconclusive" and shifted.ci_low < -0.5 and shifted.p_noninferior > ALPHA


def test_unvarying_scores_outside_0_1_take_the_span_seen_and_one_value_everywhere_claims_nothing() -> None:
    """A score on another scale (a 1-10 judge): its range is the span the scores take; all one value: no scale at all."""
    spread = compare_continuous("judge", [3.0, 7.0] * 50, [3.0, 7.0] * 50, margin=0.5)
    assert spread.ci_low == pytest.approx(-4 * (1 - ALPHA ** (1 / 100))) and spread.verdict == "pass"
    flat = compare_continuous("judge", [5.0] * 100, [5.0] * 100, margin=0.5)
    assert (flat.ci_low, flat.ci_high, flat.verdict) == (-math.inf, math.inf, "inconclusive")


def test_identical_binary_scores_pass_once_n_supports_the_margin() -> None:
    """The score interval does not collapse without discordant pairs: at m = 0.05 it needs n = 52, which is
    also what n_needed says at n = 51."""
    small = compare_binary("m", [1] * 51, [1] * 51, margin=0.05)
    enough = compare_binary("m", [1] * 52, [1] * 52, margin=0.05)

    assert (small.verdict, small.n_needed) == ("inconclusive", 52)
    assert enough.verdict == "pass" and enough.delta == 0 and enough.ci_low == pytest.approx(-enough.ci_high)


def test_all_discordant_pairs_pin_the_interval_to_the_boundary() -> None:
    down = compare_binary("m", [1] * 10, [0] * 10, margin=0.05)
    up = compare_binary("m", [0] * 10, [1] * 10, margin=0.05)

    assert (down.ci_low, down.verdict, down.flips_down) == (-1.0, "regression", 10)
    assert (up.ci_high, up.verdict, up.flips_up) == (1.0, "improvement", 10)


def test_a_single_case_never_decides() -> None:
    binary = compare_binary("m", [1], [1], margin=0.05)
    continuous = compare_continuous("m", [0.4], [0.9], margin=0.05)

    assert binary.verdict == "inconclusive" and -1 < binary.ci_low < 0 < binary.ci_high < 1
    assert (continuous.verdict, continuous.ci_low, continuous.ci_high) == ("inconclusive", -math.inf, math.inf)
    assert continuous.n_needed is None


def test_flip_tolerance_ignores_small_continuous_changes() -> None:
    result = compare_continuous("m", [0.5, 0.5, 0.5, 0.5], [0.49, 0.3, 0.52, 0.9], margin=0.05, flip_tol=0.05, n_boot=200)

    assert (result.flips_down, result.flips_up) == (1, 1)


def _suite_comparisons(rng: np.random.Generator, deltas: list[float], n: int = 200) -> list:
    return [compare_binary("pass", *binary_pair(rng, n, d), MARGIN, ALPHA) for d in deltas]


def test_decide_suites_passes_only_if_every_suite_passes_alone_and_holm_adjusts_regressions() -> None:
    """The intersection-union rule and Holm, checked against statsmodels' Holm on the inferiority p-values."""
    multitest = pytest.importorskip("statsmodels.stats.multitest", reason="pip install statsmodels for this cross-check")
    rng = np.random.default_rng(7)
    for _ in range(40):
        raw = _suite_comparisons(rng, list(rng.choice([0.0, -0.05, -0.15], size=4)))
        decided = decide_suites(raw, ALPHA)
        reject_inferior = multitest.multipletests([c.p_inferior for c in raw], alpha=ALPHA, method="holm")[0]
        for c, d, holm_says in zip(raw, decided, reject_inferior, strict=True):
            assert (d.verdict in ("pass", "improvement")) == (c.p_noninferior < ALPHA)  # each at the full level
            assert (d.verdict == "regression") == bool(holm_says)
        assert (overall(decided) in ("pass", "improvement")) == all(d.verdict in ("pass", "improvement") for d in decided)


def test_across_null_suites_false_regressions_and_false_passes_each_stay_under_alpha() -> None:
    """Four suites exactly on the margin: naming any regressed (Holm) and passing all (IUT) are each rare."""
    rng, reps = np.random.default_rng(11), 400
    any_regression = all_pass = 0
    for _ in range(reps):
        decided = decide_suites(_suite_comparisons(rng, [-MARGIN] * 4), ALPHA)
        any_regression += any(d.verdict == "regression" for d in decided)
        all_pass += overall(decided) in ("pass", "improvement")
    assert any_regression / reps <= ALPHA + slack(reps)
    assert all_pass / reps <= ALPHA + slack(reps)


def test_a_critical_suite_is_tested_for_regression_at_the_full_level() -> None:
    rng = np.random.default_rng(3)
    raw = _suite_comparisons(rng, [-0.15, 0.0, 0.0, 0.0], n=60)
    plain, critical = decide_suites(raw, ALPHA), decide_suites(raw, ALPHA, [True, False, False, False])
    assert critical[0].alpha == ALPHA and plain[0].alpha < ALPHA
    assert critical[0].ci_high <= plain[0].ci_high  # a narrower interval: more power where it matters
