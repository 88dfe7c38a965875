"""Drift: has a variant's own level moved against its own history?

One series is one variant x suite version x metric, one point per scheduled run (the run's
mean over its ``ok`` cases, with its n). This is separate from the candidate-vs-baseline
verdict: no second variant, no pairing, only the series' own past.

Because the series is looked at after every run, the false-alarm guarantee is over repeated
looks: with no change, P(any alarm within ``looks`` looks) <= ``alpha``.

Method (docs/drift.md has the derivation, the alternatives tried and the simulated error rates):

1. Each point becomes a self-starting residual (Hawkins 1987, "Self-starting cusum charts for
   location and scale", The Statistician 36:299-315; Quesenberry 1991, "SPC Q charts for start-up
   processes and short or long runs", JQT 23:213-224): its distance from the precision-weighted mean
   of *all* earlier points, divided by the SE of that difference, which includes the reference's own
   estimation error. Under no change these residuals are independent N(0, 1) (exactly for normal run
   means, closely for pass rates) whatever the warm-up length and the n of each run, so the estimated
   reference does not inflate false alarms (the problem of Jones, Champ & Rigdon 2004, "The run length
   distribution of the CUSUM with estimated parameters", JQT 36:95-108) and no per-series calibration
   is needed.
   - binary: Anscombe's arcsine transform arcsin(sqrt((x + 3/8) / (n + 3/4))), variance 1/(4n + 2)
     times the fixed cases' design effect where each run's case values are given (`design_effects`)
     (Anscombe 1948, Biometrika 35:246-254). The variance does not depend on the unknown rate, so a
     suite that always passes needs no pseudo-count, and it keeps the false-alarm rate near alpha at
     rates where sqrt(p(1-p)/n) does not (p=0.9, n=50: 0.053 against 0.059; p=0.97, n=100: 0.047
     against 0.067; docs/drift.md).
   - continuous with each point's per-case ``sd``: the pooled SD of the earlier points, taken as known; where each
     run's case values are given, each case's own run-to-run variance instead (`case_variances`): a series re-runs
     fixed cases, and its mean moves only by that.
   - continuous without ``sd``: the SD estimated from the spread of the earlier run means, and the
     Student-t residual mapped to N(0, 1) through its CDF (Hawkins 1987). Exact, but with few points
     the t tails cost power; the spread includes any extra run-to-run variance, which is the point.
2. A two-sided CUSUM (Page 1954, "Continuous inspection schemes", Biometrika 41:100-115) over the
   residuals, reference value k = shift / 2, restarted every ``looks`` looks.
3. h is the (1 - alpha) quantile of the CUSUM's maximum over ``looks`` looks, tabulated below from
   `null_max_statistic`, which simulates the whole procedure (reference estimated from the warm-up,
   SD estimated or not); `calibrate_h` recomputes any entry.

Points with n = 0 (a run with no ``ok`` case) carry no information and are skipped; indices still
refer to positions in the input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from evalsvc.stats.drift_residuals import SdMode, case_variances, cusum, design_effects, residuals

Kind = Literal["binary", "continuous"]
__all__ = ["H_TABLE", "Alarm", "DriftResult", "Point", "Scan", "SdMode", "calibrate_h", "case_variances", "cusum",
           "design_effects", "detect", "null_max_statistic", "residuals", "scan", "threshold"]


@dataclass(frozen=True)
class Point:
    value: float  # the run's mean (a pass rate in [0,1] for binary metrics, any real for continuous)
    n: int  # cases behind it
    kind: Kind = "binary"
    sd: float | None = None  # per-case SD for continuous metrics, if known (ignored for binary)
    # each ok case's value in this run (1 passed, 0 failed, the share of its samples that passed, or its score); given
    # on every point, the mean's variance is read from the cases' own run-to-run spread (`design_effects`,
    # `case_variances`)
    cases: Mapping[str, float] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DriftResult:
    alarm: bool
    direction: Literal["down", "up"] | None  # in quality terms: "down" is worse, whatever the metric's sense
    index: int | None  # first point (0-based, in the input) at which the alarm fired
    statistic: float  # CUSUM statistic at the alarm, or at the latest point when there is none
    threshold: float  # the h it was compared with
    reference_mean: float  # the in-control level that point was compared with (weighted mean of all earlier points)
    method: str

    @property
    def regression(self) -> bool:
        """An alarm that says quality got worse; an improvement alarms too but is not a regression."""
        return self.alarm and self.direction == "down"


# h such that P(max over `looks` looks of the two-sided CUSUM > h | no change) = alpha, keyed by (looks, shift)
# then alpha. From `null_max_statistic(..., sd="known", warmup=5, reps=2_000_000, seed=1)`, i.e.
# `python bench/simulate_drift.py --table --reps 2000000 --seed 1` (4 minutes; MC error of h about 0.003).
# The residuals are independent N(0, 1), so the same h holds for every warm-up length and for estimated
# SDs (tests/test_drift.py checks both).
H_TABLE: dict[tuple[int, float], dict[float, float]] = {
    (10, 0.5): {0.01: 6.618, 0.05: 5.108, 0.1: 4.401},
    (10, 1.0): {0.01: 4.949, 0.05: 3.720, 0.1: 3.166},
    (10, 1.5): {0.01: 3.741, 0.05: 2.774, 0.1: 2.352},
    (10, 2.0): {0.01: 2.910, 0.05: 2.147, 0.1: 1.814},
    (20, 0.5): {0.01: 8.683, 0.05: 6.731, 0.1: 5.831},
    (20, 1.0): {0.01: 5.961, 0.05: 4.544, 0.1: 3.923},
    (20, 1.5): {0.01: 4.313, 0.05: 3.283, 0.1: 2.834},
    (20, 2.0): {0.01: 3.296, 0.05: 2.507, 0.1: 2.164},
    (30, 0.5): {0.01: 9.983, 0.05: 7.743, 0.1: 6.729},
    (30, 1.0): {0.01: 6.493, 0.05: 5.014, 0.1: 4.361},
    (30, 1.5): {0.01: 4.613, 0.05: 3.578, 0.1: 3.116},
    (30, 2.0): {0.01: 3.508, 0.05: 2.717, 0.1: 2.369},
    (50, 0.5): {0.01: 11.585, 0.05: 9.041, 0.1: 7.894},
    (50, 1.0): {0.01: 7.121, 0.05: 5.591, 0.1: 4.912},
    (50, 1.5): {0.01: 4.998, 0.05: 3.937, 0.1: 3.471},
    (50, 2.0): {0.01: 3.780, 0.05: 2.981, 0.1: 2.627},
}


def null_max_statistic(
    looks: int, shift: float, *, sd: Literal["known", "estimated"] = "known", warmup: int = 5, reps: int = 200_000, seed: int = 0
) -> np.ndarray:
    """The CUSUM's maximum over ``looks`` looks for ``reps`` in-control series run through the whole procedure.

    Series are normal (n = 100 per run, true SD 1) and go through `residuals`, so the reference and,
    for ``sd="estimated"``, the SD are estimated from the same warm-up the live detector has.
    """
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, reps, 250_000):
        rows = min(250_000, reps - start)
        values = rng.standard_normal((rows, warmup + looks)) / 10.0
        sds = np.ones(1) if sd == "known" else None
        z = residuals(values, np.full(1, 100.0), sd, sds, warmup)[:, warmup:]
        out.append(_max_cusum(z, shift / 2))
    return np.concatenate(out)


def _max_cusum(z: np.ndarray, k: float) -> np.ndarray:
    up = np.zeros(z.shape[0])
    down = np.zeros(z.shape[0])
    top = np.zeros(z.shape[0])
    for t in range(z.shape[1]):
        up = np.maximum(0.0, up + z[:, t] - k)
        down = np.maximum(0.0, down - z[:, t] - k)
        top = np.maximum(top, np.maximum(up, down))
    return top


def calibrate_h(
    looks: int = 20,
    alpha: float = 0.05,
    shift: float = 1.0,
    *,
    sd: Literal["known", "estimated"] = "known",
    warmup: int = 5,
    reps: int = 200_000,
    seed: int = 0,
) -> float:
    """Recompute h by simulation: the (1 - alpha) quantile of `null_max_statistic`."""
    return float(np.quantile(null_max_statistic(looks, shift, sd=sd, warmup=warmup, reps=reps, seed=seed), 1 - alpha))


@lru_cache(maxsize=256)
def threshold(looks: int = 20, alpha: float = 0.05, shift: float = 1.0) -> float:
    """h from `H_TABLE`; other combinations are simulated once and cached: 200,000 series (about 1 s), or more for a
    small alpha (a Holm level across many series), so that at least 200 simulated maxima lie beyond h."""
    tabulated = H_TABLE.get((looks, float(shift)), {}).get(float(alpha))
    reps = min(2_000_000, max(200_000, int(200 / alpha)))
    return tabulated if tabulated is not None else calibrate_h(looks, alpha, shift, seed=1, reps=reps)


def _check(series: Sequence[Point], warmup: int, looks: int, alpha: float, shift: float) -> list[int]:
    """Validate; return the positions of the points that carry information (n > 0)."""
    if looks < 1 or warmup < 1 or not 0 < alpha < 1 or not shift > 0:
        raise ValueError(f"need warmup >= 1, looks >= 1, 0 < alpha < 1, shift > 0; got {warmup}, {looks}, {alpha}, {shift}")
    kinds = {point.kind for point in series}
    if len(kinds) > 1:
        raise ValueError(f"one series holds one kind of metric; got {sorted(kinds)}")
    usable = []
    for i, point in enumerate(series):
        if point.kind not in ("binary", "continuous"):
            raise ValueError(f"point {i}: kind must be 'binary' or 'continuous', got {point.kind!r}")
        if point.n < 0:
            raise ValueError(f"point {i}: n must be >= 0, got {point.n}")
        if point.n == 0:
            continue  # no ok case: nothing to learn, and a failed run is never a regression
        if not math.isfinite(point.value):
            raise ValueError(f"point {i}: value must be finite when n > 0, got {point.value}")
        if point.kind == "binary" and not -1e-9 <= point.value <= 1 + 1e-9:
            raise ValueError(f"point {i}: a binary metric's value is a pass rate in [0, 1], got {point.value}")
        if point.sd is not None and not (math.isfinite(point.sd) and point.sd >= 0):
            raise ValueError(f"point {i}: sd must be finite and >= 0, got {point.sd}")
        usable.append(i)
    return usable


def detect(
    series: Sequence[Point],
    warmup: int = 5,
    looks: int = 20,
    alpha: float = 0.05,
    shift: float = 1.0,
    higher_is_better: bool = True,
) -> DriftResult:
    """First drift alarm in ``series`` (oldest first), with P(any false alarm in each block of ``looks`` looks) <= alpha.

    ``shift`` is the step, in SEs of one run's mean, that the CUSUM is tuned to catch fastest; smaller
    steps are still caught, later. The scan is causal (point t is judged on points 0..t only), so the
    index is where a live monitor would have fired; the alarm then sticks: acknowledge it by starting
    the series again after the change. With fewer than ``warmup`` + 1 usable points there is no look yet.

    A pass-rate series whose every usable point has ``cases`` is read with the fixed-case noise model (its design
    effect, `design_effects`); otherwise with the binomial variance, an upper bound for fixed cases.
    A continuous series whose every usable point has ``cases`` is read with the fixed-case noise model too (each case's
    run-to-run variance, `case_variances`); otherwise it uses the pooled per-case SD if every usable point has ``sd``,
    and else estimates the spread from the run means (needs ``warmup`` >= 2). Points with n = 0 are skipped;
    invalid points (n < 0, a non-finite value, a pass rate outside [0, 1], mixed kinds) raise ValueError.
    """
    usable = _check(series, warmup, looks, alpha, shift)
    points = [series[i] for i in usable]
    kind = points[0].kind if points else "binary"
    fixed = bool(points) and all(p.cases is not None for p in points)  # each run's case values: the fixed-case model
    mode: SdMode = ("binary" if kind == "binary" else "known" if fixed or all(p.sd is not None for p in points)
                    else "estimated")
    if mode == "estimated" and warmup < 2:
        raise ValueError("a continuous metric without per-case sd needs warmup >= 2 to estimate the spread")
    h = threshold(looks, alpha, shift)
    if len(points) <= warmup:
        total = sum(p.n for p in points)
        level = sum(p.value * p.n for p in points) / total if total else math.nan
        return DriftResult(False, None, None, 0.0, h, level, f"warming up ({len(points)} of {warmup} points)")
    values = np.array([p.value for p in points])
    ns = np.array([float(p.n) for p in points])
    sds = np.array([p.sd if p.sd is not None else np.nan for p in points], dtype=float) if mode == "known" else None
    design, design_df = _design(points, warmup, mode) if fixed else (None, None)
    z = residuals(values, ns, mode, sds, warmup, design, design_df)
    first, sign, stat = cusum(z, h, shift / 2, looks)
    at = int(first[0]) if first[0] >= 0 else len(points) - 1
    level = float(np.dot(values[:at], ns[:at]) / ns[:at].sum())
    on = {"binary": "Anscombe-transformed pass rates", "known": "run means (pooled per-case SD)",
          "estimated": "run means (SD from the runs' spread, t to normal)"}[mode]
    if design is not None and mode == "binary":
        on += f", variance scaled by the fixed cases' design effect ({design[0, at]:.2f} there)"
    elif design is not None:
        on = f"run means over fixed cases (each case's run-to-run SD, {math.sqrt(max(design[0, at], 0.0)):.3g} there)"
    method = (f"self-starting two-sided CUSUM (Page 1954; Hawkins 1987) on {on}, k={shift / 2:g}, "
              f"h={h:.3f} for P(any false alarm in {looks} looks)={alpha:g}")
    if first[0] < 0:
        return DriftResult(False, None, None, float(stat[0]), h, level, method)
    rose = sign[0] > 0
    direction: Literal["down", "up"] = "up" if rose == higher_is_better else "down"
    return DriftResult(True, direction, usable[at], float(stat[0]), h, level, method)


def _design(points: Sequence[Point], warmup: int, mode: SdMode) -> tuple[np.ndarray, np.ndarray | None]:
    ids = sorted({case for p in points for case in (p.cases or {})})
    column = {case: j for j, case in enumerate(ids)}
    cases = np.full((1, len(points), len(ids)), np.nan)
    for t, p in enumerate(points):
        for case, value in (p.cases or {}).items():
            cases[0, t, column[case]] = value
    return (design_effects(cases, warmup), None) if mode == "binary" else case_variances(cases, warmup)


@dataclass(frozen=True)
class Alarm:
    index: int  # position in the input at which it fired
    direction: Literal["down", "up"]  # in quality terms
    statistic: float
    reference_mean: float  # the level it departed from


@dataclass(frozen=True)
class Scan:
    """Every alarm of a series, restarting the detector at each, and the detector's state since the last one."""

    alarms: tuple[Alarm, ...]
    current: DriftResult  # the regime since the last alarm (or since ``start``)
    since: int  # position where the current regime starts
    start: int = 0  # position where the first regime started (a pinned reference)

    @property
    def last(self) -> Alarm | None:
        return self.alarms[-1] if self.alarms else None


def scan(
    series: Sequence[Point],
    warmup: int = 5,
    looks: int = 20,
    alpha: float = 0.05,
    shift: float = 1.0,
    higher_is_better: bool = True,
    start: int = 0,
) -> Scan:
    """All alarms in ``series``: after each, the detector restarts from the alarm point (a new reference is learned
    from the new regime), so a rise and a later drop are both reported, in order, and neither freezes the series.

    Each regime has the false-alarm guarantee of ``detect``. ``start`` pins where the first reference begins (an
    acknowledged change, or a pinned reference window): earlier points are history and are not looked at.
    """
    alarms: list[Alarm] = []
    pos = start
    while True:
        result = detect(series[pos:], warmup, looks, alpha, shift, higher_is_better)
        if not result.alarm or result.index is None or result.direction is None:
            return Scan(tuple(alarms), result, pos, start)
        at = pos + result.index
        alarms.append(Alarm(at, result.direction, result.statistic, result.reference_mean))
        pos = at
