"""The drift detector's residuals and CUSUM, vectorised over many series (the detector and its simulations share them).

Self-starting residuals (Hawkins 1987; Quesenberry 1991) of pass rates (Anscombe's transform, scaled by the fixed
cases' design effect where case results are given), of continuous means with a known or an estimated SD, and the
two-sided CUSUM over them (Page 1954). `evalsvc.stats.drift` documents the method; docs/drift.md derives and simulates it.
"""

from __future__ import annotations

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


def design_effects(cases: np.ndarray, warmup: int = 5) -> np.ndarray:
    """The design effect of each look of series that re-run one fixed case set: shape (series, points), 1 during warm-up.

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
    rows, count, width = cases.shape
    out = np.ones((rows, count))
    seen = np.zeros((rows, width))
    mean = np.zeros((rows, width))
    sum_sq = np.zeros((rows, width))
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(count):
            x = cases[:, t, :]
            here = ~np.isnan(x)
            if t >= warmup:
                use = here & (seen >= 1)
                spread = np.where(seen >= 2, sum_sq / np.maximum(seen - 1, 1), 0.0)
                own = np.maximum(spread, _unseen_flip_variance(seen)) * (1 + 1 / np.maximum(seen, 1))
                weight = np.where(use, 1 + 1 / np.maximum(seen, 1), 0.0)
                n = use.sum(axis=1)
                level = np.where(use, mean, 0.0).sum(axis=1) / np.maximum(n, 1)
                bound = level * (1 - level) * weight.sum(axis=1)
                ratio = np.where(use, own, 0.0).sum(axis=1) / bound
                out[:, t] = np.where((n > 0) & (bound > 0), np.minimum(ratio, 1.0), 1.0)
            value = np.where(here, x, 0.0)
            grown = seen + here
            delta = np.where(here, value - mean, 0.0)
            mean = mean + np.where(here, delta / np.maximum(grown, 1), 0.0)
            sum_sq = sum_sq + np.where(here, delta * (value - mean), 0.0)
            seen = grown
    return out


def residuals(
    values: np.ndarray, ns: np.ndarray, mode: SdMode, sds: np.ndarray | None = None, warmup: int = 5,
    design: np.ndarray | None = None,
) -> np.ndarray:
    """Self-starting residuals of many series at once: shape (series, points), NaN during warm-up.

    Residual t compares point t with the precision-weighted mean of points 0..t-1 (West 1979,
    "Updating mean and variance estimates: an improved method", CACM 22:532, for the weighted running
    mean and sum of squares). ``ns`` (and ``sds`` for mode "known") broadcast against ``values``.
    A zero SD with an unchanged value gives 0, with a changed value +-inf: no noise, so a real change.
    ``design`` (binary only, shaped like ``values``): each look's design effect from `design_effects`; the binomial
    variance is scaled by it.
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
                    z[:, t] = _ratio(diff, sigma * scale, mean)
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


def _t_to_normal(t: np.ndarray, df: int) -> np.ndarray:
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
