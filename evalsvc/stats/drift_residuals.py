"""The drift detector's residuals and CUSUM, vectorised over many series (the detector and its simulations share them).

Self-starting residuals (Hawkins 1987; Quesenberry 1991) of pass rates (Anscombe's transform, scaled by the fixed
cases' design effect where case results are given), of continuous means with a known SD (the cases' own run-to-run
variance where case results are given) or an estimated SD, and the two-sided CUSUM over them (Page 1954).
`evalsvc.stats.drift` documents the method; docs/drift.md derives and simulates it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from scipy.special import ndtri, stdtr  # scipy.stats costs 2.5 s to import

SdMode = Literal["binary", "known", "estimated"]


def _anscombe(value: np.ndarray, n: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.arcsin(np.sqrt((value * n + 0.375) / (n + 0.75)))
    return out


def _unseen_flip_variance(m: np.ndarray) -> np.ndarray:
    """The posterior mean of p(1 - p) for a case that gave the same outcome in all of its m runs, under Jeffreys'
    Beta(1/2, 1/2) prior (Jeffreys 1946): (m + 1/2)(1/2) / ((m + 1)(m + 2)), 0.071 after 5 runs, 0.023 after 20. A
    case that has not flipped yet may still flip; this keeps it from counting as noise-free."""
    out: np.ndarray = (m + 0.5) * 0.5 / ((m + 1) * (m + 2))
    return out


def _case_moments(cases: np.ndarray, warmup: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each look t >= warmup of series re-running one fixed case set, with every case's running moments over the runs
    before it: yields (t, use, seen, mean, spread), ``use`` the cases ok now and seen before, ``spread`` each case's
    unbiased variance over its earlier runs (West 1979's running update; 0 before a second run)."""
    rows, count, width = cases.shape
    seen = np.zeros((rows, width))
    mean = np.zeros((rows, width))
    sum_sq = np.zeros((rows, width))
    for t in range(count):
        x = cases[:, t, :]
        here = ~np.isnan(x)
        if t >= warmup:
            yield t, here & (seen >= 1), seen, mean, np.where(seen >= 2, sum_sq / np.maximum(seen - 1, 1), 0.0)
        value = np.where(here, x, 0.0)
        grown = seen + here
        delta = np.where(here, value - mean, 0.0)
        mean = mean + np.where(here, delta / np.maximum(grown, 1), 0.0)
        sum_sq = sum_sq + np.where(here, delta * (value - mean), 0.0)
        seen = grown


def design_effects(cases: np.ndarray, warmup: int = 5) -> np.ndarray:
    """The design effect of each look of pass-rate series that re-run one fixed case set: shape (series, points), 1
    during warm-up.

    ``cases`` is shaped (series, points, cases): each case's value in each run (a pass, or the share of its samples
    that passed), NaN where it was not an ``ok`` case. A pass rate over fixed cases varies from run to run only through
    the cases whose answers are not stable, so its variance is sum p_i (1 - p_i) / n^2 <= p (1 - p) / n (Hoeffding
    1956, "On the distribution of the number of successes in independent trials", Ann. Math. Statist. 27:713-721):
    the binomial variance is an upper bound. The design effect (Kish 1965, *Survey Sampling*) is the ratio of the two,
    estimated at look t from the runs before it: each case's variance is its unbiased sample variance over its earlier
    runs, but at least `_unseen_flip_variance` (a case that has not flipped yet is not taken as stable), against the
    binomial p(1 - p) at the reference's pass rate; both include the reference's own error (1 + 1/m_i). It is capped
    at 1, the bound, and is 1 where the reference passes or fails everything. `residuals` scales the Anscombe
    variance by it; docs/drift.md simulates the false-alarm rate it keeps and the delay it saves.
    """
    cases = np.asarray(cases, dtype=float)
    out = np.ones(cases.shape[:2])
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, use, seen, mean, spread in _case_moments(cases, warmup):
            own = np.maximum(spread, _unseen_flip_variance(seen)) * (1 + 1 / np.maximum(seen, 1))
            weight = np.where(use, 1 + 1 / np.maximum(seen, 1), 0.0)
            n = use.sum(axis=1)
            level = np.where(use, mean, 0.0).sum(axis=1) / np.maximum(n, 1)
            bound = level * (1 - level) * weight.sum(axis=1)
            ratio = np.where(use, own, 0.0).sum(axis=1) / bound
            out[:, t] = np.where((n > 0) & (bound > 0), np.minimum(ratio, 1.0), 1.0)
    return out


def case_variances(cases: np.ndarray, warmup: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The run-to-run variance of one case's score at each look of series that re-run one fixed case set: shape
    (series, points), NaN during warm-up.

    ``cases`` as for `design_effects`, continuous scores. A mean over fixed cases moves from run to run only by each
    case's own noise: its variance is sum v_i / n^2 with v_i case i's run-to-run variance, not the between-case
    variance over n that a fresh draw of cases would have. v_i is estimated at look t as case i's unbiased variance
    over its earlier runs, but at least a floor for a case not yet seen to move: 4 `_unseen_flip_variance` (0.28 after
    5 runs, 0.09 after 20) times the typical v_i of the cases that did move (the spread of the cases' own levels while
    none has): the same share of a moving case's variance that the pass-rate floor is of a coin flip's. Each includes
    the reference's own error (1 + 1/m_i); the result is their weighted mean, which `residuals` uses as sigma^2. It is
    0 only where no case ever moved and all cases score alike (then any move is a real change). Returned with its
    degrees of freedom, sum (m_i - 1): the residual is a t statistic on them, mapped to the normal score (Hawkins
    1987), so the estimate's own error does not raise the false-alarm rate at a family's small level.
    """
    cases = np.asarray(cases, dtype=float)
    out = np.full(cases.shape[:2], np.nan)
    dof = np.full(cases.shape[:2], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, use, seen, mean, spread in _case_moments(cases, warmup):
            n = use.sum(axis=1)
            level = np.where(use, mean, 0.0).sum(axis=1) / np.maximum(n, 1)
            levels = np.where(use, (mean - level[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n - 1, 1)
            moved = use & (spread > 0)
            typical = np.where(moved.any(axis=1), np.where(moved, spread, 0.0).sum(axis=1) / np.maximum(moved.sum(axis=1), 1),
                               levels)
            weight = np.where(use, 1 + 1 / np.maximum(seen, 1), 0.0)
            own = np.maximum(spread, 4 * _unseen_flip_variance(seen) * typical[:, None]) * weight
            out[:, t] = np.where(n > 0, np.where(use, own, 0.0).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-300), np.nan)
            dof[:, t] = np.where(use, np.maximum(seen - 1, 0), 0).sum(axis=1)
    return out, dof


def residuals(
    values: np.ndarray, ns: np.ndarray, mode: SdMode, sds: np.ndarray | None = None, warmup: int = 5,
    design: np.ndarray | None = None, design_df: np.ndarray | None = None,
) -> np.ndarray:
    """Self-starting residuals of many series at once: shape (series, points), NaN during warm-up.

    Residual t compares point t with the precision-weighted mean of points 0..t-1 (West 1979,
    "Updating mean and variance estimates: an improved method", CACM 22:532, for the weighted running
    mean and sum of squares). ``ns`` (and ``sds`` for mode "known") broadcast against ``values``.
    A zero SD with an unchanged value gives 0, with a changed value +-inf: no noise, so a real change.
    ``design`` (shaped like ``values``): for mode "binary", each look's design effect from `design_effects`, which
    scales the binomial variance; for mode "known", each look's run-to-run variance of one case from
    `case_variances`, used as sigma^2 in place of the pooled per-case SD (fixed cases), with ``design_df`` its degrees
    of freedom (the t residual is mapped to the normal score).
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    ns = np.broadcast_to(np.asarray(ns, dtype=float), values.shape)
    if mode == "binary":
        xs, weights = _anscombe(values, ns), 4 * ns + 2  # weights are precisions: var = 1 / (4n + 2)
    else:
        xs, weights = values, ns  # var = sigma^2 / n
    if mode == "known":
        assert sds is not None
        sd_df = np.broadcast_to(np.maximum(ns - 1, 0), values.shape)
        sd_ss = sd_df * np.broadcast_to(np.asarray(sds, dtype=float), values.shape) ** 2
    rows, count = values.shape
    z = np.full((rows, count), np.nan)
    total_w = np.zeros(rows)
    mean = np.zeros(rows)
    sum_sq = np.zeros(rows)  # sum of w * (x - mean)^2, estimates sigma^2 * (points - 1)
    pooled_ss = np.zeros(rows)
    pooled_df = np.zeros(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(count):
            x, w = xs[:, t], weights[:, t]
            if t >= warmup:
                diff = x - mean
                scale = np.sqrt(1 / w + 1 / total_w)  # SE of the difference, in units of sigma
                if mode == "binary":
                    z[:, t] = diff / scale if design is None else diff / (scale * np.sqrt(design[:, t]))
                elif mode == "known":
                    sigma = np.sqrt(np.where(pooled_df > 0, pooled_ss / pooled_df, 0.0))
                    if design is None:
                        z[:, t] = _ratio(diff, sigma * scale, mean)
                    else:
                        ratio = _ratio(diff, np.sqrt(design[:, t]) * scale, mean)
                        z[:, t] = ratio if design_df is None else _t_to_normal(ratio, np.maximum(design_df[:, t], 1))
                else:
                    sigma = np.sqrt(np.maximum(sum_sq, 0.0) / (t - 1))
                    z[:, t] = _t_to_normal(_ratio(diff, sigma * scale, mean), t - 1)
            new_w = total_w + w
            delta = x - mean
            mean = mean + delta * w / new_w
            sum_sq = sum_sq + w * delta * (x - mean)
            total_w = new_w
            if mode == "known":
                pooled_ss = pooled_ss + sd_ss[:, t]
                pooled_df = pooled_df + sd_df[:, t]
    return z


def _ratio(diff: np.ndarray, se: np.ndarray, level: np.ndarray) -> np.ndarray:
    """diff / se, where differences and SEs within rounding of zero are zero.

    A series whose points are all equal has a running mean and spread that are rounding noise; read
    literally they would give residuals of order 1 at random. Here it stays quiet until a point moves.
    """
    tiny = 1e-10 * np.maximum(1.0, np.abs(level))
    return np.where(np.abs(diff) <= tiny, 0.0, np.where(se <= tiny, np.sign(diff) * np.inf, diff / se))


def _t_to_normal(t: np.ndarray, df: int | np.ndarray) -> np.ndarray:
    """The normal score with the same tail probability as Student t on ``df`` (Hawkins 1987), computed from the far tail."""
    out: np.ndarray = np.sign(t) * -ndtri(stdtr(df, -np.abs(t)))
    return out


def cusum(z: np.ndarray, h: float, k: float, looks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided CUSUM (Page 1954) over residuals shaped (series, points), NaN columns skipped.

    Restarts at 0 every ``looks`` residuals, so each block of looks carries the calibrated alpha.
    Returns, per series: the first alarm's column (-1 if none), its sign (+1 the value rose, -1 it fell,
    0 none) and the statistic at that column (the last column when there is no alarm).
    """
    z = np.atleast_2d(z)
    rows = z.shape[0]
    up = np.zeros(rows)
    down = np.zeros(rows)
    first = np.full(rows, -1)
    sign = np.zeros(rows, dtype=int)
    stat = np.zeros(rows)
    looked = 0
    for t in range(z.shape[1]):
        if np.isnan(z[0, t]):
            continue
        if looked % looks == 0:
            up[:] = 0.0
            down[:] = 0.0
        looked += 1
        up = np.maximum(0.0, up + z[:, t] - k)
        down = np.maximum(0.0, down - z[:, t] - k)
        live = first < 0
        stat = np.where(live, np.maximum(up, down), stat)
        fired = live & (stat > h)
        first = np.where(fired, t, first)
        sign = np.where(fired, np.where(up >= down, 1, -1), sign)
    return first, sign, stat
