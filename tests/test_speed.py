"""Serving speed as metrics: the quantile interval, the paired quantile comparison, the per-run speed points."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sqlalchemy.orm import Session

from evalsvc.stats import speed
from evalsvc.stats.aggregate import quantile_interval
from evalsvc.stats.bootstrap import compare_quantile
from evalsvc.verdicts.timing import compare_speed

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


def test_a_percentile_with_few_cases_beyond_it_is_not_decided() -> None:
    """The bootstrap of p95 from fewer than 5 cases beyond it passed a candidate at the margin 11% of the time at
    n = 10: below n min(q, 1 - q) = 5 no claim is made, however clear the data look, and n_needed says where it is."""
    rng = np.random.default_rng(5)
    base, cand = _latencies(rng, 100, 3.0)  # three times slower: a regression anyone could see
    few = compare_quantile("latency_p95", base[:99], cand[:99], 0.95, 0.1, ALPHA)
    median = compare_quantile("latency_p50", base[:9], cand[:9], 0.5, 0.1, ALPHA)
    assert (few.verdict, few.ci_low, few.n_needed) == ("inconclusive", -math.inf, 100) and "fewer than 5" in few.method
    assert (median.verdict, median.n_needed) == ("inconclusive", 10)
    assert compare_quantile("latency_p95", base, cand, 0.95, 0.1, ALPHA).verdict == "regression"  # n = 100 decides


@pytest.mark.parametrize(("q", "recovery", "n", "sd_prompt", "sd_noise", "reps"), [
    (0.95, 0.5, 200, 0.2, 0.5, 600),  # a large relative margin, weak pairing: 8.7-9.8% with the margin held fixed
    (0.95, 0.9, 100, 0.5, 0.3, 300),  # the smallest n that decides p95
    (0.5, 0.5, 50, 0.2, 0.5, 400),  # the median, noise in both arms
    (0.5, 0.9, 10, 0.5, 0.3, 300),  # the smallest n that decides the median
])
def test_a_candidate_at_a_relative_margin_passes_no_more_than_alpha(q: float, recovery: float, n: int, sd_prompt: float,
                                                                    sd_noise: float, reps: int) -> None:
    """The gate's setting: both arms with serving noise, the margin relative to the baseline's own quantile, the
    candidate's true quantile exactly (2 - r) times the baseline's (the boundary): a false pass in at most alpha."""
    rng = np.random.default_rng(int(n * 10 + q * 100 + recovery * 10))
    passed = 0
    for i in range(reps):
        prompt = rng.lognormal(0.0, sd_prompt, n)
        base, cand = prompt * rng.lognormal(0.0, sd_noise, n), (2 - recovery) * prompt * rng.lognormal(0.0, sd_noise, n)
        passed += compare_quantile("latency", base, cand, q, None, ALPHA, n_boot=1000, seed=i,
                                   relative=recovery).verdict in ("pass", "improvement")
    assert passed / reps <= ALPHA + slack(reps)


def test_a_relative_margin_is_the_share_of_the_baseline_quantile_and_decides_with_its_interval() -> None:
    rng = np.random.default_rng(6)
    base = rng.lognormal(0.0, 0.5, 300)
    cand = base * rng.lognormal(0.0, 0.02, 300)
    c = compare_quantile("latency_p95", base, cand, 0.95, None, ALPHA, relative=0.9)
    assert c.margin == pytest.approx(0.1 * np.quantile(base, 0.95)) and c.verdict == "pass"
    assert (c.ci_low > -c.margin) == (c.p_noninferior < ALPHA)
    with pytest.raises(ValueError, match="exactly one of margin"):
        compare_quantile("latency_p95", base, cand, 0.95, 0.1, ALPHA, relative=0.9)


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

    row = namedtuple("row", "run_ts run_id value n ci_low ci_high sd")  # sd None: as stored before it was kept
    rng = np.random.default_rng(4)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values = 1.0 + 0.1 * rng.standard_normal(20)  # 20 nightly runs, no change: 10% run-to-run load noise
    points = tuple(row(start + timedelta(days=i), i, v, 100, v - 0.01, v + 0.01, None) for i, v in enumerate(values))

    def series(metric: str) -> Series:
        return Series("v", "fp", "s", "sv", metric, "continuous", False, points)

    assert not check(series("latency_p95")).alarms
    assert check(series("judge_score")).alarms  # the same numbers read with interval-based noise: a false alarm


def _timed_and_cached_runs(tmp_path: Path, margins: str) -> tuple[Any, dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]],
                                                                   Session]:
    """Two endpoints that keep a response cache, run twice: first requested (timed), then answered from the cache."""
    from click.testing import CliRunner

    from evalsvc.cli import main
    from evalsvc.config import load_config
    from tests.conftest import write_config, write_suite
    from tests.fake_endpoint import FakeEndpoint

    write_suite(tmp_path / "suites", "echo", "\n".join(
        f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(20)))
    with FakeEndpoint() as base, FakeEndpoint(delay_s=0.01) as cand:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            gate: {{margins: {{default: {{absolute: 0.05}}, {margins}}}}}
            baselines: {{f: base}}
            variants:
              - {{name: base, family: f, cache: true, endpoint: {{base_url: "{base.base_url}", model: b}}}}
              - {{name: cand, family: f, cache: true, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
            """)
        for extra in ([], ["--new"]):
            out = CliRunner().invoke(main, ["run", "-c", str(tmp_path / "evalsvc.yaml"), "--no-compare", *extra],
                                     catch_exceptions=False)
            assert out.exit_code == 0, out.output
        sent = len(base.requests), len(cand.requests)
    assert sent == (20, 20)  # the second runs were answered from the cache
    from sqlalchemy import select

    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Run

    cfg = load_config(tmp_path / "evalsvc.yaml")
    s = Session(open_engine(cfg.store_url()))
    first, second = ({v: r for v in ("base", "cand") for r in s.scalars(select(Run).where(Run.variant_name == v).order_by(Run.id))
                      .all()[k:k + 1]} for k in (0, 1))
    return cfg, {"echo": (first["base"], first["cand"])}, {"echo": (second["base"], second["cand"])}, s


def test_a_deciding_speed_metric_on_answers_from_the_cache_is_undecided_not_dropped(tmp_path: Path) -> None:
    """A cached answer has no latency of its run: a speed metric that gate.margins makes deciding cannot be compared
    there, and the suite is reported undecided for it (the gate cannot pass it), where it used to vanish with a note."""
    cfg, timed, cached, s = _timed_and_cached_runs(tmp_path, "latency_p50: {relative: 0.9}")
    with s:
        gated, shown, _, undecided = compare_speed(s, timed, cfg.gate, "all suites")
        assert undecided == [] and [(n, c.metric) for n, c in gated] == [("echo", "latency_p50")]
        assert {c.metric for n, c in shown if n == "echo"} == {"latency_p95", "tokens_per_s", "output_tokens"}
        gated, shown, notes, undecided = compare_speed(s, cached, cfg.gate, "all suites")
    assert gated == [] and shown == []
    assert len(undecided) == 1 and undecided[0][0] == "echo", undecided
    assert "latency_p50 decide (gate.margins)" in undecided[0][1] and "came from the response cache" in undecided[0][1]
    assert "drop --reuse" in undecided[0][1] and notes == []  # said once, as what keeps the suite undecided


def test_speed_that_decides_nothing_leaves_nothing_undecided(tmp_path: Path) -> None:
    cfg, _, cached, s = _timed_and_cached_runs(tmp_path, "pass: {absolute: 0.05}")
    with s:
        gated, shown, notes, undecided = compare_speed(s, cached, cfg.gate, "all suites")
    assert (gated, shown, undecided) == ([], [], []) and any("speed not measured" in n for n in notes)
