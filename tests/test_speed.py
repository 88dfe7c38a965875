"""Serving speed as metrics: the quantile interval, the paired quantile comparison, the per-run speed points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evalsvc.stats import speed
from evalsvc.stats.aggregate import quantile_interval
from evalsvc.stats.bootstrap import compare_quantile

ALPHA = 0.05


def slack(reps: int, rate: float = ALPHA) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / reps)


def test_the_median_interval_has_the_published_ranks() -> None:
    """Conover (1999), Practical Nonparametric Statistics, table A3 / sec. 3.2: for n = 100 the 95% interval for the
    median runs from the 40th to the 61st order statistic; binomial tail sums give the same ranks by definition."""
    assert quantile_interval(list(range(1, 101)), 0.5) == (40, 61)
    # p95's upper bound at this level is the maximum, once 1 - 0.95^n >= 0.975: from n = 72 on, not at 71
    assert 1 - 0.95**71 < 0.975 <= 1 - 0.95**72
    assert quantile_interval(list(range(1, 72)), 0.95)[1] is None
    assert quantile_interval(list(range(1, 73)), 0.95)[1] == 72


def test_the_quantile_interval_covers_at_least_its_level_on_skewed_latencies() -> None:
    rng, reps, n = np.random.default_rng(1), 2000, 200
    true_p95 = math.exp(0.6 * sps.norm.ppf(0.95))
    covered = 0
    for _ in range(reps):
        lo, hi = quantile_interval(list(rng.lognormal(0.0, 0.6, n)), 0.95)
        covered += lo is not None and hi is not None and lo <= true_p95 <= hi
    assert 0.95 - slack(reps) <= covered / reps <= 0.985  # conservative by the discreteness of ranks, not by much


def _latencies(rng: np.random.Generator, n: int, slower: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired request latencies: one case's two requests share its prompt length (base), plus serving noise."""
    base = rng.lognormal(0.0, 0.5, n)
    return base, base * slower * rng.lognormal(0.0, 0.2, n)


def test_a_candidate_exactly_at_the_margin_passes_no_more_than_alpha() -> None:
    """Candidate p95 exactly (1 + m) times the baseline's: claiming "no worse than m" must fail >= 95% of the time."""
    rng, reps, n = np.random.default_rng(2), 300, 200
    z = sps.norm.ppf(0.95)
    q_base = math.exp(0.5 * z)
    scale = 1.10 * q_base / math.exp(math.sqrt(0.5**2 + 0.2**2) * z)  # so that the candidate's true p95 is 1.10 q_base
    margin = 0.10 * q_base
    passed = sum(compare_quantile("latency_p95", *_latencies(rng, n, scale), 0.95, margin, ALPHA, n_boot=1000, seed=i)
                 .verdict in ("pass", "improvement") for i in range(reps))
    assert passed / reps <= ALPHA + slack(reps)


def test_a_clearly_slower_candidate_is_a_speed_regression_and_an_unchanged_one_passes() -> None:
    rng = np.random.default_rng(3)
    base, cand = _latencies(rng, 300, 1.5)
    slow = compare_quantile("latency_p95", base, cand, 0.95, 0.10 * np.quantile(base, 0.95), ALPHA)
    same = compare_quantile("latency_p50", base, base * rng.lognormal(0, 0.02, 300), 0.5, 0.10 * np.median(base), ALPHA)
    assert slow.verdict == "regression" and slow.delta < 0 and slow.baseline_mean == pytest.approx(-np.quantile(base, 0.95))
    assert same.verdict == "pass"


def test_per_run_speed_points_skip_what_was_not_measured() -> None:
    rows = [("a", 1000.0, 50), ("a", 3000.0, 50), ("b", 500.0, 10), ("c", None, None), ("d", 250.0, None)]
    cases = speed.per_case(rows)
    assert set(cases) == {"a", "b", "d"}  # c has no latency (an answer without timing)
    assert cases["a"].latency_s == 2.0 and cases["a"].tokens_per_s == pytest.approx((50 / 1 + 50 / 3) / 2)
    points = {a.metric: a for a in speed.aggregates(cases)}
    assert set(points) == set(speed.METRICS)
    assert points["latency_p50"].value == pytest.approx(0.5) and not points["latency_p50"].higher_is_better
    assert points["output_tokens"].n == 2 and points["tokens_per_s"].higher_is_better


def test_a_latency_series_takes_its_noise_from_run_to_run_spread_not_from_its_intervals() -> None:
    """Load moves latency between runs far more than the within-run interval says: read as a t interval, that
    interval would make ordinary run-to-run noise an alarm. Speed series use the spread of their own run values."""
    from collections import namedtuple
    from datetime import UTC, datetime, timedelta

    from evalsvc.verdicts.series import Series, check

    row = namedtuple("row", "run_ts run_id value n ci_low ci_high")
    rng = np.random.default_rng(4)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values = 1.0 + 0.1 * rng.standard_normal(20)  # 20 nightly runs, no change: 10% run-to-run load noise
    points = tuple(row(start + timedelta(days=i), i, v, 100, v - 0.01, v + 0.01) for i, v in enumerate(values))

    def series(metric: str) -> Series:
        return Series("v", "fp", "s", "sv", metric, "continuous", False, points)

    assert not check(series("latency_p95")).alarms
    assert check(series("judge_score")).alarms  # the same numbers read with interval-based noise: a false alarm
