"""The sequential gate's statistics: group-sequential boundaries, decisions at looks, betting e-processes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalsvc.stats.betting import betting_paired, confidence_sequence, log_capital, plug_in_bets
from evalsvc.stats.binary import compare_binary
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.group_sequential import (
    boundaries,
    crossing_probabilities,
    obrien_fleming_spending,
    pocock_spending,
)
from evalsvc.stats.sequential import equal_looks, sequential_binary, sequential_continuous

ALPHA = 0.05
MARGIN = 0.05
FIVE = [0.2, 0.4, 0.6, 0.8, 1.0]


def slack(reps: int, rate: float = ALPHA) -> float:
    """Three Monte-Carlo standard errors of a simulated rate."""
    return 3 * math.sqrt(rate * (1 - rate) / reps)


def flips(rng: np.random.Generator, n: int, psi: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pass/fail pairs with P(down) = psi/2 - delta and P(up) = psi/2 (delta <= 0): the true delta is exactly delta."""
    u = rng.random(n)
    down = u < psi / 2 - delta
    up = (u >= psi / 2 - delta) & (u < psi - delta)
    base = np.ones(n)
    base[up] = 0.0
    cand = base.copy()
    cand[down], cand[up] = 0.0, 1.0
    return base, cand


def crossing_by_genz(bounds: list[float], info: list[float]) -> list[float]:
    """P(max_{j<=k} Z_j >= b_j) for each k, by Genz's multivariate normal integration (scipy), not by recursion."""
    from scipy.stats import multivariate_normal

    i = np.asarray(info)
    cov = np.sqrt(np.minimum.outer(i, i) / np.maximum.outer(i, i))
    out = [float(stats_norm_sf(bounds[0]))]
    for k in range(2, len(bounds) + 1):
        mvn = multivariate_normal(mean=np.zeros(k), cov=cov[:k, :k], seed=7, abseps=1e-8, releps=1e-8, maxpts=500_000)
        out.append(1.0 - float(mvn.cdf(np.asarray(bounds[:k]))))
    return out


def stats_norm_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2))


# Group-sequential boundaries

def test_obrien_fleming_boundaries_match_gsdesign() -> None:
    """gsDesign (sfLDOF, k = 5, one-sided alpha 0.025, equal looks) gives 4.877, 3.357, 2.680, 2.290, 2.031."""
    assert boundaries(FIVE, 0.025) == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=5e-4)


def test_pocock_boundaries_spend_alpha_by_an_independent_integration() -> None:
    """Pocock-type (sfLDPocock) at k = 5, alpha 0.025: the cumulative crossing chance is alpha ln(1 + (e - 1) t)."""
    bounds = boundaries(FIVE, 0.025, "pocock")
    assert crossing_by_genz(bounds, FIVE) == pytest.approx([pocock_spending(t, 0.025) for t in FIVE], abs=5e-6)
    # and the research note's 2M-path Brownian simulation: 2.438 2.424 2.411 2.394 2.384 (Monte-Carlo error ~0.003)
    assert bounds == pytest.approx([2.438, 2.424, 2.411, 2.394, 2.384], abs=0.005)
    assert bounds == sorted(bounds, reverse=True)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_unequal_observed_fractions_spend_alpha_at_each_look(spending: str) -> None:
    t = [0.15, 0.4, 0.5, 0.85, 1.0]
    bounds = boundaries(t, ALPHA, spending)
    f = obrien_fleming_spending if spending == "obrien-fleming" else pocock_spending
    assert crossing_by_genz(bounds, t) == pytest.approx([f(x, ALPHA) for x in t], abs=5e-6)
    assert sum(crossing_probabilities(bounds, t)) == pytest.approx(ALPHA, abs=1e-9)


def test_boundary_at_a_look_depends_only_on_the_looks_so_far() -> None:
    t = [0.15, 0.4, 0.5, 0.85, 1.0]
    full = boundaries(t, ALPHA)
    for k in range(1, len(t)):
        assert boundaries(t[:k], ALPHA) == pytest.approx(full[:k], abs=1e-12)


def test_final_look_short_of_its_information_spends_all_of_alpha() -> None:
    info = [200.0, 400.0, 900.0]  # planned 1000 cases, the suite ran out at 900
    bounds = boundaries([0.2, 0.4, 1.0], ALPHA, information=info)
    assert crossing_by_genz(bounds, info)[-1] == pytest.approx(ALPHA, abs=5e-6)


def test_crossing_probabilities_under_an_effect_match_simulated_brownian_motion() -> None:
    bounds, drift = boundaries(FIVE, 0.025), 3.0
    exact = crossing_probabilities(bounds, FIVE, drift)
    rng = np.random.default_rng(11)
    reps = 40_000
    steps = rng.normal(drift * 0.2, math.sqrt(0.2), size=(reps, 5)).cumsum(axis=1)  # S(t) = W(t) + drift t
    z = steps / np.sqrt(FIVE)
    crossed = z >= np.asarray(bounds)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    simulated = [float(np.mean(first == k)) for k in range(5)]
    for p, q in zip(exact, simulated, strict=True):
        assert abs(p - q) <= 3 * math.sqrt(max(p * (1 - p), 1e-4) / reps)
    assert sum(exact) > 0.8  # the power at drift 3, for scale: the fixed test's is Phi(3 - 1.96) = 0.85


def test_obrien_fleming_spending_function_values() -> None:
    assert obrien_fleming_spending(1.0, 0.025) == 0.025
    assert obrien_fleming_spending(0.5, 0.025) == pytest.approx(2 - 2 * 0.99923696, abs=1e-6)  # 2 - 2 Phi(2.2414 / sqrt(.5))
    assert pocock_spending(0.5, 0.025) == pytest.approx(0.025 * math.log(1 + (math.e - 1) / 2))


# Sequential decisions on paired differences

def test_a_single_final_binary_look_decides_as_the_fixed_gate() -> None:
    rng = np.random.default_rng(3)
    for delta in (0.0, -0.03, -0.05, -0.08):
        base, cand = flips(rng, 300, 0.1, delta)
        look = sequential_binary("acc", base, cand, [300], 300, MARGIN)[-1]
        fixed = compare_binary("acc", base, cand, MARGIN, ALPHA)
        assert look.final and look.boundary == pytest.approx(1.6448536, abs=1e-6)
        assert (look.ci_low, look.ci_high) == pytest.approx((fixed.ci_low, fixed.ci_high), abs=1e-9)
        assert look.verdict == fixed.verdict


def test_binary_looks_read_the_verdict_off_the_repeated_interval_and_the_statistic_alike() -> None:
    rng = np.random.default_rng(4)
    seen = set()
    for rep in range(60):
        base, cand = flips(rng, 400, 0.12, [0.0, -0.05, -0.1][rep % 3])
        for look in sequential_binary("acc", base, cand, equal_looks(400, 5), 400, MARGIN):
            seen.add(look.verdict)
            assert (look.verdict in ("pass", "improvement")) == (look.statistic >= look.boundary) == (look.ci_low > -MARGIN)
            assert (look.verdict == "regression") == (look.statistic <= -look.boundary) == (look.ci_high < -MARGIN)
            assert look.ci_low <= look.delta <= look.ci_high
    assert {"pass", "regression", "continue", "inconclusive"} <= seen


def test_sequential_binary_false_claims_at_the_margin_stay_within_alpha() -> None:
    rng = np.random.default_rng(5)
    reps, looks = 1500, equal_looks(400, 5)
    verdicts = [sequential_binary("acc", *flips(rng, 400, 0.1, -MARGIN), looks, 400, MARGIN)[-1].verdict for _ in range(reps)]
    assert verdicts.count("pass") / reps <= ALPHA + slack(reps)
    assert verdicts.count("regression") / reps <= ALPHA + slack(reps)


def test_naive_repeated_fixed_intervals_inflate_false_passes_and_the_boundaries_do_not() -> None:
    """6% discordance, 2-point margin, a look every 50 cases up to 500, truth on the margin."""
    rng = np.random.default_rng(6)
    reps, m, n = 600, 0.02, 500
    looks = list(range(50, n + 1, 50))
    naive = sequential = 0
    for _ in range(reps):
        base, cand = flips(rng, n, 0.06, -m)
        naive += any(compare_binary("acc", base[:k], cand[:k], m, ALPHA).verdict == "pass" for k in looks)
        sequential += sequential_binary("acc", base, cand, looks, n, m, spending="pocock")[-1].verdict == "pass"
    assert naive / reps > 0.15
    assert sequential / reps <= ALPHA + slack(reps)


def test_a_single_final_continuous_look_is_the_paired_t_test() -> None:
    from scipy import stats

    rng = np.random.default_rng(8)
    base = rng.normal(0.6, 0.2, 80)
    cand = base + rng.normal(-0.01, 0.1, 80)
    look = sequential_continuous("score", base, cand, [80], 80, MARGIN)[-1]
    low, high = stats.t.interval(0.9, 79, loc=np.mean(cand - base), scale=stats.sem(cand - base))
    assert (look.ci_low, look.ci_high) == pytest.approx((low, high), abs=1e-12)
    p = stats.ttest_1samp(cand - base, -MARGIN, alternative="greater").pvalue
    assert look.statistic == pytest.approx(-stats.norm.ppf(p), abs=1e-8)
    assert look.verdict == compare_continuous("score", base, cand, MARGIN, ALPHA).verdict == "pass"


def test_sequential_continuous_false_passes_at_the_margin_stay_within_alpha() -> None:
    rng = np.random.default_rng(9)
    reps, looks = 1500, equal_looks(100, 5)
    passes = sum(sequential_continuous("s", np.zeros(100), rng.normal(-MARGIN, 0.15, 100), looks, 100, MARGIN)[-1].verdict == "pass"
                 for _ in range(reps))
    assert passes / reps <= ALPHA + slack(reps)


def test_a_look_of_ties_makes_no_continuous_claim() -> None:
    base = np.full(50, 0.5)
    looks = sequential_continuous("s", base, base, [20, 50], 50, MARGIN)
    assert [look.verdict for look in looks] == ["continue", "inconclusive"]


def test_bad_looks_are_refused() -> None:
    base = np.ones(100)
    with pytest.raises(ValueError, match="increasing"):
        sequential_binary("acc", base, base, [50, 40], 100, MARGIN)
    with pytest.raises(ValueError, match="only 100 given"):
        sequential_binary("acc", base, base, [200], 200, MARGIN)
    with pytest.raises(ValueError, match="no look may follow"):
        sequential_binary("acc", base, base, [60, 80], 60, MARGIN)


# Betting e-processes and confidence sequences

def test_e_processes_equal_villes_betting_test() -> None:
    """ville's BettingTest (hedged PrPl bets at two-sided alpha) is our one-sided process at alpha / 2."""
    ville = pytest.importorskip("ville")
    rng = np.random.default_rng(10)
    for y in (rng.choice([0.0, 0.5, 1.0], p=[0.04, 0.9, 0.06], size=700), rng.beta(2, 2, size=300)):
        for mu in (0.475, 0.5, 0.3):
            bets = plug_in_bets(y, 0.05)
            up = ville.BettingTest(mu, alternative="greater", alpha=0.1).fit(y).log_e_values_
            down = ville.BettingTest(mu, alternative="less", alpha=0.1).fit(y).log_e_values_
            assert log_capital(y, mu, bets, "pass") == pytest.approx(up, abs=1e-10)
            assert log_capital(y, mu, bets, "regression") == pytest.approx(down, abs=1e-10)


def test_confidence_sequence_equals_villes_within_its_grid() -> None:
    ville = pytest.importorskip("ville")
    y = np.random.default_rng(12).choice([0.0, 0.5, 1.0], p=[0.05, 0.88, 0.07], size=250)
    grid = 4001
    cs = ville.BettingCS(alpha=0.1, grid=grid).fit(y)  # intersected at every observation, widened to grid neighbours
    mine = confidence_sequence(y, range(1, len(y) + 1), 0.05)
    step = 1.0 / (grid - 1)
    for t in (10, 50, 100, 250):
        lo, hi = mine[t - 1]
        assert cs.lower_[t - 1] - 1e-9 <= lo <= cs.lower_[t - 1] + 2 * step
        assert cs.upper_[t - 1] - 2 * step <= hi <= cs.upper_[t - 1] + 1e-9


def _wor_log_capital_by_hand(y: list[float], mu: float, alpha: float, population: int) -> list[float]:
    """Without-replacement capital for H0: suite mean <= mu, step by step as written in [wsr2020]."""
    out, log_k, total, dev = [], 0.0, 0.0, 0.25
    for t, x in enumerate(y, start=1):
        bet = math.sqrt(2 * math.log(1 / alpha) / (dev * t * math.log(1 + t)))
        centre = (population * mu - total) / (population - t + 1)
        if centre > 1:
            factor = 0.0
        elif centre <= 0 or (t == population and x > centre):
            factor = math.inf if x > centre else 0.0
        else:
            factor = math.log(1 + min(bet, 0.5 / centre) * (x - centre))
        log_k += factor
        out.append(log_k)
        total += x
        mean_t = (0.5 + total) / (t + 1)
        dev = (dev * t + (x - mean_t) ** 2) / (t + 1)
    return out


def test_without_replacement_capital_matches_a_step_by_step_implementation() -> None:
    rng = np.random.default_rng(13)
    suite = rng.choice([0.0, 0.5, 1.0], p=[0.1, 0.75, 0.15], size=120)
    y = rng.permutation(suite)
    for mu in (0.45, float(suite.mean()) - 0.01, float(suite.mean()) + 0.01):
        mine = log_capital(y, mu, plug_in_bets(y, ALPHA), "pass", population=len(y))
        assert mine == pytest.approx(_wor_log_capital_by_hand(list(y), mu, ALPHA, len(y)), abs=1e-10)


def test_without_replacement_sequence_closes_on_the_suites_mean() -> None:
    rng = np.random.default_rng(14)
    verdicts = set()
    for delta in (-0.02, -0.08, -0.15):
        base, cand = flips(rng, 200, 0.1, delta)
        order = rng.permutation(200)
        y = (cand[order] - base[order] + 1) / 2
        exact = float(y.mean())
        sequence = confidence_sequence(y, [50, 100, 150, 200], ALPHA, population=200)
        assert all(lo - 1e-12 <= exact <= hi + 1e-12 for lo, hi in sequence)
        assert sequence[-1] == pytest.approx((exact, exact), abs=1e-9)
        assert sequence[0][1] - sequence[0][0] > 0.05
        last = betting_paired("acc", base[order], cand[order], [200], MARGIN, population=200)[-1]
        net = int((cand - base).sum())  # against -m N = -10
        assert last.verdict == ("pass" if net > -10 else "regression" if net < -10 else "inconclusive")
        verdicts.add(last.verdict)
    assert verdicts == {"pass", "inconclusive", "regression"}


def test_betting_false_passes_stay_within_alpha_under_a_look_at_every_case() -> None:
    rng = np.random.default_rng(15)
    reps, n = 400, 600
    looks = list(range(1, n + 1))
    passes = regressions = 0
    for _ in range(reps):
        d = rng.choice([-1.0, 0.0, 1.0], p=[0.05 + MARGIN / 2, 0.9, 0.05 - MARGIN / 2], size=n)  # E[D] = -m
        y = (d + 1) / 2
        bets = plug_in_bets(y, ALPHA)
        passes += log_capital(y, (1 - MARGIN) / 2, bets, "pass").max() >= math.log(1 / ALPHA)
        regressions += log_capital(y, (1 - MARGIN) / 2, bets, "regression").max() >= math.log(1 / ALPHA)
    assert len(looks) == n
    assert passes / reps <= ALPHA + slack(reps) and regressions / reps <= ALPHA + slack(reps)


def test_without_replacement_false_passes_stay_within_alpha_on_a_suite_at_the_margin() -> None:
    rng = np.random.default_rng(16)
    suite = np.array([-1.0] * 12 + [1.0] * 2 + [0.0] * 186)  # a 200-case suite whose mean difference is exactly -0.05
    reps, passes, mu0 = 1000, 0, (1 - MARGIN) / 2
    for _ in range(reps):
        y = (rng.permutation(suite) + 1) / 2
        passes += log_capital(y, mu0, plug_in_bets(y, ALPHA), "pass", population=200).max() >= math.log(1 / ALPHA)
    assert passes / reps <= ALPHA + slack(reps)


def test_betting_verdicts_agree_with_the_confidence_sequence() -> None:
    rng = np.random.default_rng(17)
    seen = set()
    for rep in range(30):
        base, cand = flips(rng, 800, 0.08, [0.0, -0.05, -0.12][rep % 3])
        for look in betting_paired("acc", base, cand, list(range(100, 801, 100)), MARGIN, final=True):
            seen.add(look.verdict)
            assert (look.verdict in ("pass", "improvement")) == (look.e_pass >= 1 / ALPHA) == (look.ci_low >= -MARGIN - 1e-9)
            assert (look.verdict == "regression") == (look.e_regression >= 1 / ALPHA) == (look.ci_high <= -MARGIN + 1e-9)
            assert look.p_noninferior == pytest.approx(min(1.0, 1 / look.e_pass))
    assert {"pass", "regression", "continue"} <= seen
