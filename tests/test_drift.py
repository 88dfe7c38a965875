from __future__ import annotations

import math

import numpy as np
import pytest

from evalsvc.stats.drift import H_TABLE, Point, calibrate_h, cusum, design_effects, detect, null_max_statistic, residuals, threshold

WARMUP, LOOKS, ALPHA = 5, 20, 0.05
LENGTH = WARMUP + LOOKS


def binary_series(rng: np.random.Generator, p: float | np.ndarray = 0.7, n: int = 100) -> list[Point]:
    return [Point(float(x) / n, n) for x in rng.binomial(n, p, size=LENGTH)]


def continuous_series(rng: np.random.Generator, n: int = 100, sd: float | None = 1.0, mean: np.ndarray | float = 3.0) -> list[Point]:
    values = mean + rng.standard_normal(LENGTH) * 2.0 / math.sqrt(n)  # per-case SD 2
    return [Point(float(v), n, "continuous", None if sd is None else 2.0) for v in values]


def alarm_share(series: list[list[Point]]) -> float:
    return float(np.mean([detect(s).alarm for s in series]))


def test_false_alarms_over_20_looks_stay_at_alpha_for_pass_rates() -> None:
    rng = np.random.default_rng(11)
    share = alarm_share([binary_series(rng) for _ in range(3000)])
    assert 0.02 <= share <= ALPHA + 0.015  # 3 SEs at 3000 series; and calibrated, not merely conservative


@pytest.mark.parametrize("sd", [2.0, None], ids=["sd-given", "sd-estimated"])
def test_false_alarms_over_20_looks_stay_at_alpha_for_continuous_scores(sd: float | None) -> None:
    rng = np.random.default_rng(12)
    share = alarm_share([continuous_series(rng, sd=sd) for _ in range(1500)])
    assert 0.02 <= share <= ALPHA + 0.025


def test_sustained_drop_of_ten_points_is_caught_soon_after_it_starts() -> None:
    rng = np.random.default_rng(13)
    change = WARMUP + 8 - 1  # first visible at look 8
    p = np.full(LENGTH, 0.7)
    p[change:] = 0.6
    results = [detect(binary_series(rng, p)) for _ in range(500)]
    caught = [r for r in results if r.alarm and r.index is not None and r.index >= change]
    assert len(caught) / len(results) >= 0.8
    assert all(r.direction == "down" and r.regression for r in caught)
    delays = [r.index - change + 1 for r in caught if r.index is not None]
    assert np.median(delays) <= 4  # 2.2 run SEs: about 2 runs
    early = [r for r in results if r.alarm and r.index is not None and r.index < change]
    assert len(early) / len(results) <= 0.05


def test_rise_in_a_higher_is_better_metric_is_up_and_not_a_regression() -> None:
    rng = np.random.default_rng(14)
    p = np.full(LENGTH, 0.6)
    p[10:] = 0.8
    result = detect(binary_series(rng, p))
    assert result.alarm and result.direction == "up" and not result.regression


def test_lower_is_better_metric_inverts_the_direction() -> None:
    rng = np.random.default_rng(15)
    mean = np.full(LENGTH, 3.0)
    mean[10:] = 3.8  # e.g. latency or error rate went up: worse
    series = continuous_series(rng, mean=mean)
    worse = detect(series, higher_is_better=False)
    assert worse.alarm and worse.direction == "down" and worse.regression
    assert detect(series, higher_is_better=True).direction == "up"


def test_tabulated_h_matches_calibrate_h_within_monte_carlo_error() -> None:
    assert calibrate_h(LOOKS, ALPHA, 1.0, reps=200_000, seed=7) == pytest.approx(H_TABLE[(LOOKS, 1.0)][ALPHA], abs=0.05)
    # The residuals are independent N(0, 1) whatever the warm-up and with an estimated SD, so the same h holds there too.
    top = null_max_statistic(LOOKS, 1.0, sd="estimated", warmup=3, reps=100_000, seed=8)
    exceed = float(np.mean(top > H_TABLE[(LOOKS, 1.0)][ALPHA]))
    assert abs(exceed - ALPHA) <= 4 * math.sqrt(ALPHA * (1 - ALPHA) / 100_000)


def test_untabulated_alpha_is_calibrated_on_demand() -> None:
    h = threshold(LOOKS, 0.02, 1.0)
    assert H_TABLE[(LOOKS, 1.0)][0.05] < h < H_TABLE[(LOOKS, 1.0)][0.01]


def test_detect_agrees_with_the_vectorised_engine() -> None:
    rng = np.random.default_rng(16)
    p = np.full(LENGTH, 0.7)
    p[12:] = 0.64
    counts = rng.binomial(100, p, size=(300, LENGTH))
    first, _, _ = cusum(residuals(counts / 100, np.full(1, 100.0), "binary", None, WARMUP), threshold(), 0.5, LOOKS)
    indices = [detect([Point(float(x) / 100, 100) for x in row]).index for row in counts]
    assert [-1 if i is None else i for i in indices] == first.tolist()
    assert 0 < np.mean(first >= 0) < 1  # both outcomes exercised


def test_alarm_index_is_where_a_live_monitor_would_have_fired() -> None:
    rng = np.random.default_rng(17)
    p = np.full(LENGTH, 0.7)
    p[12:] = 0.55
    series = binary_series(rng, p)
    result = detect(series)
    assert result.alarm and result.index is not None
    assert detect(series[: result.index + 1]).index == result.index
    assert not detect(series[: result.index]).alarm


def test_cusum_restarts_every_block_of_looks() -> None:
    z = np.array([[np.nan] * WARMUP + [1.5] * 25])
    _, _, stat = cusum(z, h=1e9, k=0.5, looks=20)
    assert stat[0] == pytest.approx(5.0)  # looks 21-25 only, not 25


def test_warming_up_reports_no_alarm_and_says_so() -> None:
    result = detect([Point(0.7, 100)] * 3)
    assert not result.alarm and result.statistic == 0.0 and result.index is None
    assert "warming up (3 of 5 points)" in result.method
    assert result.reference_mean == pytest.approx(0.7)


def test_constant_series_stay_quiet_until_they_move() -> None:
    assert not detect([Point(1.0, 50)] * 25).alarm  # a suite that always passes: no pseudo-count needed
    flat = [Point(0.8, 40, "continuous", 0.0)] * 10
    assert not detect(flat).alarm
    moved = detect([*flat, Point(0.7, 40, "continuous", 0.0)])  # no noise at all, so any move is real
    assert moved.alarm and moved.direction == "down" and moved.index == 10 and math.isinf(moved.statistic)
    spread_free = [Point(2.5, 40, "continuous")] * 10  # sd unknown and the runs never varied
    assert not detect(spread_free).alarm
    assert detect([*spread_free, Point(2.6, 40, "continuous")]).direction == "up"


def test_runs_without_ok_cases_are_skipped_but_keep_their_position() -> None:
    rng = np.random.default_rng(18)
    p = np.full(LENGTH, 0.7)
    p[12:] = 0.5
    series = binary_series(rng, p)
    result = detect(series)
    assert result.alarm and result.index is not None
    padded = [*series[:3], Point(math.nan, 0), *series[3:]]
    assert detect(padded).index == result.index + 1
    assert "warming up (0 of 5 points)" in detect([Point(0.0, 0)] * 4).method


@pytest.mark.parametrize(
    "series",
    [
        [Point(0.5, -1)],
        [Point(1.5, 10)],
        [Point(math.nan, 10)],
        [Point(0.5, 10), Point(0.5, 10, "continuous")],
        [Point(0.5, 10, "continuous", -1.0)],
    ],
    ids=["negative-n", "rate-above-1", "nan-value", "mixed-kinds", "negative-sd"],
)
def test_invalid_points_raise_value_error(series: list[Point]) -> None:
    with pytest.raises(ValueError):
        detect(series)


def test_estimated_spread_needs_two_warmup_points() -> None:
    with pytest.raises(ValueError, match="warmup >= 2"):
        detect([Point(1.0, 10, "continuous")] * 5, warmup=1)


def test_scan_restarts_at_each_alarm_so_a_rise_cannot_hide_a_later_drop() -> None:
    from evalsvc.stats.drift import scan

    series = [Point(0.70, 100)] * 8 + [Point(0.85, 100)] * 4 + [Point(0.40, 100)] * 8
    assert detect(series).direction == "up"  # one scan stops at the first alarm
    found = scan(series)
    assert [a.direction for a in found.alarms] == ["up", "down"]
    up, down = found.alarms
    assert 8 <= up.index <= 9 and 12 <= down.index <= 19 and found.since == down.index
    assert scan(series, start=up.index).alarms[0].direction == "down"  # a pinned reference after the rise
    assert scan([Point(0.7, 100)] * 20).alarms == ()


def fixed_case_runs(rng: np.random.Generator, runs: int = LENGTH, drop_at: int | None = None) -> np.ndarray:
    """(runs, 100) passes of one fixed case set on a nondeterministic server: 60 cases always pass, 20 always fail, 20
    pass with their own probability (uniform on 0.2-0.8); from ``drop_at`` on, 10 always-passing cases fail."""
    p = np.concatenate([np.ones(60), np.zeros(20), rng.uniform(0.2, 0.8, 20)])
    passes = (rng.random((runs, 100)) < p).astype(float)
    if drop_at is not None:
        passes[drop_at:, :10] = 0.0
    return passes


def case_points(passes: np.ndarray) -> list[Point]:
    return [Point(float(row.mean()), len(row), cases={f"c{i}": float(v) for i, v in enumerate(row)}) for row in passes]


def test_the_design_effect_estimates_the_fixed_case_variance_against_the_binomial() -> None:
    """Against its definition, sum p_i(1 - p_i) / (n p(1 - p)) (Kish's design effect; Hoeffding's bound says <= 1): with
    many runs the estimate converges to it; for cases that all share one rate (fresh binomial draws) it is about 1."""
    rng = np.random.default_rng(5)
    p = np.concatenate([np.ones(60), np.zeros(20), rng.uniform(0.2, 0.8, 20)])
    truth = np.sum(p * (1 - p)) / (100 * p.mean() * (1 - p.mean()))
    long = (rng.random((1, 2000, 100)) < p).astype(float)
    assert design_effects(long)[0, -1] == pytest.approx(truth, rel=0.05)  # about 0.18
    assert np.all(design_effects(long)[0, :5] == 1.0)  # warming up
    same = (rng.random((200, LENGTH, 100)) < 0.7).astype(float)
    assert 0.95 < np.mean(design_effects(same)[:, WARMUP:]) <= 1.0
    missing = long[:, :40].copy()
    missing[0, 10:, 60:80] = np.nan  # the always-failing cases errored from run 10 on: they leave the estimate
    assert design_effects(missing)[0, -1] == pytest.approx(design_effects(long[:, :40, np.r_[0:60, 80:100]])[0, -1], rel=0.02)


def test_a_case_not_yet_seen_to_flip_is_not_taken_as_noise_free() -> None:
    """An endpoint whose warm-up showed no flip at all: one later flip is not an alarm."""
    stable = np.tile(np.concatenate([np.ones(70), np.zeros(30)]), (LENGTH, 1))
    stable[WARMUP + 3, 0] = 0.0
    result = detect(case_points(stable), alpha=0.05 / 50)
    assert not result.alarm and "design effect" in result.method


def test_fixed_case_variance_finds_a_drop_sooner_and_keeps_false_alarms_under_alpha() -> None:
    """The same 10-point drop, scanned at a Holm level for 50 series: read with the cases' own spread it is found sooner
    than with the binomial bound; and over 600 unchanged series the false-alarm rate at alpha stays <= alpha."""
    rng = np.random.default_rng(9)
    level, change = ALPHA / 50, WARMUP + 7
    delays = {"cases": [], "binomial": []}
    for _ in range(60):
        points = case_points(fixed_case_runs(rng, drop_at=change))
        for label, series in (("cases", points), ("binomial", [Point(p.value, p.n) for p in points])):
            result = detect(series, alpha=level)
            delays[label].append(result.index - change + 1 if result.alarm and result.index >= change else LOOKS)
    assert np.median(delays["cases"]) <= 4 < np.median(delays["binomial"])  # 3 runs against 7 (docs/drift.md)
    false = np.mean([detect(case_points(fixed_case_runs(rng))).alarm for _ in range(600)])
    assert false <= ALPHA


def test_a_family_of_fifty_fixed_case_series_at_alpha_over_its_size_keeps_any_false_alarm_under_alpha() -> None:
    """50 series re-running one fixed case set each on a nondeterministic server, 20 looks: each scanned at its
    family's fixed level, alpha / 50, with the fixed-case noise model, the chance of any false alarm across the family
    stays <= alpha, while one series' 10-point drop is found."""
    from evalsvc.service.drift_family import Family

    family = Family("quality", frozenset((f"v{k}", "s", "pass") for k in range(50)), 0.05, WARMUP)
    assert family.level == pytest.approx(0.001)
    rng = np.random.default_rng(8)
    reps = 40
    false = sum(any(detect(case_points(fixed_case_runs(rng)), alpha=family.level).alarm for _ in range(50))
                for _ in range(reps))
    assert false / reps <= 0.05 + 3 * (0.05 * 0.95 / reps) ** 0.5
    found = detect(case_points(fixed_case_runs(rng, drop_at=12)), alpha=family.level)
    assert found.direction == "down" and 12 <= found.index <= 12 + 3  # the binomial bound needs a median of 7 runs


def fixed_scores(rng: np.random.Generator, drop: float = 0.0, noise: float = 0.02, n: int = 100) -> list[Point]:
    """A continuous score (rougeL, a judge's grade) over n fixed cases: each case's own level ~ N(0.5, 0.2), re-scored
    every run with N(0, noise) of run-to-run noise; from look 8 on every case loses ``drop``."""
    base = rng.normal(0.5, 0.2, n)
    out = []
    for t in range(LENGTH):
        x = base + rng.normal(0, noise, n) - (drop if t >= WARMUP + 7 else 0.0)
        out.append(Point(float(x.mean()), n, "continuous", sd=float(x.std(ddof=1)),
                         cases={f"c{i}": float(v) for i, v in enumerate(x)}))
    return out


def test_continuous_scores_over_fixed_cases_are_read_with_each_cases_run_to_run_variance() -> None:
    """A series re-scores the same cases, so its mean moves from run to run by the cases' own noise (SD 0.02 / 10 =
    0.002 here), not by the between-case SD over sqrt(n) (0.02). A drop of 0.01 from look 8 is found by look 20 in
    nearly every series read with the cases' run-to-run variance, and in almost none read as fresh draws (what every
    continuous quality series got before); over unchanged series the false-alarm rate stays at alpha."""
    from dataclasses import replace

    rng = np.random.default_rng(21)
    change = WARMUP + 7
    fixed = [detect(fixed_scores(rng, drop=0.01)) for _ in range(100)]
    fresh = [detect([replace(p, cases=None) for p in fixed_scores(rng, drop=0.01)]) for _ in range(100)]
    assert np.mean([r.regression and r.index >= change for r in fixed]) >= 0.9
    assert np.mean([r.alarm for r in fresh]) <= 0.15
    assert "fixed cases" in fixed[0].method
    false = np.mean([detect(fixed_scores(rng)).alarm for _ in range(1000)])
    assert 0.01 <= false <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / 1000) ** 0.5


def test_a_score_not_yet_seen_to_move_is_not_taken_as_noise_free() -> None:
    """98 cases scored the same every run and 2 that move a little: one more case moving once, by 0.6, is no alarm (the
    floor keeps an unmoved case from counting as noise-free), while every case dropping by 0.05 is."""
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 0.9, 100)

    def points(shift_at: int | None, one_case: bool) -> list[Point]:
        out = []
        for t in range(LENGTH):
            x = base.copy()
            x[:2] += rng.normal(0, 0.05, 2)
            if shift_at is not None and t == shift_at and one_case:
                x[50] -= 0.6
            elif shift_at is not None and t >= shift_at and not one_case:
                x -= 0.05
            out.append(Point(float(x.mean()), 100, "continuous", sd=float(x.std(ddof=1)),
                             cases={f"c{i}": float(v) for i, v in enumerate(x)}))
        return out

    assert not detect(points(WARMUP + 3, one_case=True), alpha=0.05 / 50).alarm
    assert detect(points(WARMUP + 3, one_case=False), alpha=0.05 / 50).regression


def test_a_metric_point_keeps_its_per_case_sd_and_drift_reads_it_as_stored() -> None:
    """The run's per-case SD is stored with its point; a row stored before it was recovers it from its Student-t
    interval exactly (z in place of t made it 9.4% too large at n = 15)."""
    import statistics
    from collections import namedtuple
    from datetime import UTC, datetime

    from evalsvc.checks import MetricSpec
    from evalsvc.stats.aggregate import aggregate
    from evalsvc.verdicts.series import Series, points_of

    values = [0.1, 0.4, 0.35, 0.8, 0.55, 0.6, 0.2, 0.9, 0.75, 0.3, 0.45, 0.5, 0.65, 0.7, 0.25]
    (agg,) = aggregate({"score": MetricSpec("score", "continuous")}, [{"score": v} for v in values])
    assert agg.sd == pytest.approx(statistics.stdev(values), rel=1e-12)
    row = namedtuple("row", "run_ts run_id value n ci_low ci_high sd")
    stored = row(datetime(2026, 11, 1, tzinfo=UTC), 1, agg.value, agg.n, agg.ci_low, agg.ci_high, agg.sd)
    older = stored._replace(run_id=2, sd=None)
    points = points_of(Series("v", "fp", "s", "sv", "score", "continuous", True, (stored, older)))
    assert points[0].sd == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert points[1].sd == pytest.approx(statistics.stdev(values), rel=1e-9)


def test_the_drift_config_watches_fixed_families_and_refuses_what_is_not_a_variants_quality() -> None:
    """Quality and speed are separate families; a judge's canary failure rate describes the judge's run, never the
    variant (the judge's own canary series watches it); `metrics: null` (every metric) is no fixed family."""
    from pydantic import ValidationError

    from evalsvc.config.drift import SPEED_METRICS, DriftConfig
    from evalsvc.stats.speed import METRICS

    assert SPEED_METRICS == METRICS
    assert DriftConfig().metrics == ["pass"] and DriftConfig().speed_metrics == ["latency_p95", "tokens_per_s"]
    with pytest.raises(ValidationError, match="describes the judge's run"):
        DriftConfig(metrics=["pass", "judge_canary_failure_rate"])
    with pytest.raises(ValidationError, match="speed metric: list it under drift"):
        DriftConfig(metrics=["latency_p95"])
    with pytest.raises(ValidationError, match="not a fixed family"):
        DriftConfig.model_validate({"metrics": None})
    with pytest.raises(ValidationError):
        DriftConfig(speed_metrics=["rougeL"])


def test_the_watched_family_holds_every_suite_a_schedule_runs(tmp_path) -> None:
    """A schedule may run a suite that `suites:` (the default of `evalsvc run`) leaves out: its series are the
    service's to watch, so the family counts them and the level is alpha over all of them."""
    from evalsvc.config import Config
    from evalsvc.service.drift_family import build, spec
    from tests.conftest import echo_cases, write_suite

    for name in ("a", "b"):
        write_suite(tmp_path / "suites", name, echo_cases(2))
    cfg = Config.model_validate({
        "suites_dir": str(tmp_path / "suites"), "suites": ["a"],
        "variants": [{"name": "v", "family": "f", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}],
        "schedules": [{"name": "nightly", "cron": "0 3 * * *", "suites": ["a", "b"]}]})
    quality, speed = build(spec(cfg))
    assert quality.members == {("v", "a", "pass"), ("v", "b", "pass")} and quality.level == pytest.approx(0.025)
    assert {s for _, s, _ in speed.members} == {"a", "b"}
