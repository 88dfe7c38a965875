"""Anytime-valid non-inferiority: betting e-processes on paired differences and their confidence sequence.

Each paired difference D in [-w, w] (w: the score range, 1 for pass/fail and [0, 1] scores) is rescaled to
Y = (D / w + 1) / 2 in [0, 1], so that delta = E[D] = w (2 E[Y] - 1) and the margin -m sits at
mu0 = (1 - m / w) / 2. Two capital processes bet against the two null hypotheses of the fixed gate
[wsr2024, sec. 4]:

    pass        K+_t = prod_{i<=t} (1 + l_i (Y_i - mu0)),  l_i in [0, c / mu0]        H0: E[Y] <= mu0
    regression  K-_t = prod_{i<=t} (1 - l_i (Y_i - mu0)),  l_i in [0, c / (1 - mu0)]  H0: E[Y] >= mu0

With the bet l_i chosen from Y_1 .. Y_{i-1} only, each is a nonnegative supermartingale under its null, so by
Ville's inequality P(K_t >= 1 / alpha for some t) <= alpha: the claim holds at level alpha whatever the number
of looks and whatever rule decides to stop or go on. The bet is the predictable plug-in of [wsr2024] (their
PrPl bet, as in the hedged capital process of their Theorem 3),

    l_t = sqrt(2 log(1 / alpha) / (s2_{t-1} t log(1 + t))),  truncated at c / mu0 (c / (1 - mu0)), c = 1/2,

with s2_t = (1/4 + sum_{i<=t} (Y_i - Ybar_i)^2) / (t + 1) and Ybar_i = (1/2 + sum_{j<=i} Y_j) / (i + 1).

Without replacement from a finite suite of N cases [wsr2020], the claims are about the suite's own mean, and the
centre mu0 becomes what the remaining cases must average for the suite's mean to be mu0,
mu_t = (N mu0 - sum_{i<t} Y_i) / (N - t + 1). When mu_t leaves [0, 1] the null is settled by the cases already
seen, and once all N cases are in the suite's mean is known, so the confidence sequence closes on it.

The confidence sequence is {mu : K+_t(mu) < 1/alpha and K-_t(mu) < 1/alpha}, intersected over the looks so far:
each capital process is monotone in mu (each factor is), so the set is an interval and its lower bound crosses
mu0 exactly when K+ at mu0 reaches 1/alpha. Each bound holds at level alpha at every look at once; the interval
is the anytime analogue of the fixed gate's (1 - 2 alpha) interval [wsr2024, Theorem 3 with theta = 1/2 at 2 alpha].

[wsr2024] Waudby-Smith I, Ramdas A. Estimating means of bounded random variables by betting. J R Stat Soc B
2024;86:1-27 (arXiv 2010.09686).
[wsr2020] Waudby-Smith I, Ramdas A. Confidence sequences for sampling without replacement. NeurIPS 2020
(arXiv 2006.04347).
[ville1939] Ville J. Etude critique de la notion de collectif. Gauthier-Villars, 1939.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt

from evalsvc.stats.comparison import check_args, paired_arrays

Floats = npt.NDArray[np.float64]
Side = Literal["pass", "regression"]
BettingVerdict = Literal["pass", "improvement", "regression", "continue", "inconclusive"]
TRUNCATION = 0.5  # c: the largest share of capital a bet may risk [wsr2024 recommend 1/2 or 3/4]
_ROUNDING = 1e-9  # how far above the centre a case must be to rule the null out for certain


def plug_in_bets(y: Floats, alpha: float) -> Floats:
    """The predictable plug-in (PrPl) bets l_1 .. l_n of [wsr2024], before truncation (l_t uses Y_1 .. Y_{t-1})."""
    t = np.arange(1, len(y) + 1, dtype=np.float64)
    mean = (0.5 + np.cumsum(y)) / (t + 1)
    var = (0.25 + np.cumsum((y - mean) ** 2)) / (t + 1)
    var_prev = np.concatenate(([0.25], var[:-1]))
    return np.asarray(np.sqrt(2.0 * math.log(1.0 / alpha) / (var_prev * t * np.log1p(t))), dtype=np.float64)


def log_capital(y: Floats, mu: float, bets: Floats, side: Side, population: int | None = None,
                truncation: float = TRUNCATION) -> Floats:
    """log K_t(mu) for t = 1 .. n, for the ``pass`` side (H0: mean <= mu) or the ``regression`` side (H0: mean >= mu).

    ``population`` N switches to sampling without replacement [wsr2020]: the mean is the suite's, and the centre
    moves with what has been seen. A factor is infinite where the data have already ruled the null out.
    """
    if side == "regression":  # K-(mu) on Y is K+(1 - mu) on 1 - Y, the bets' caps swapping with it
        return log_capital(1.0 - y, 1.0 - mu, bets, "pass", population, truncation)
    n = len(y)
    if population is None:
        centre = np.full(n, float(mu))
    else:
        t = np.arange(1, n + 1, dtype=np.float64)
        seen = np.concatenate(([0.0], np.cumsum(y)[:-1]))
        centre = (population * mu - seen) / (population - t + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bet = np.minimum(bets, truncation / centre)
        factor = np.log1p(bet * (y - centre))
    factor = np.where(centre > 1.0, 0.0, factor)  # the remaining cases cannot lift the mean above mu: H0 holds
    above = y > centre + _ROUNDING  # a suite mean exactly at mu must not be ruled out by rounding
    impossible = (centre <= 0.0) & above  # already above mu whatever the remaining cases are
    if population is not None and n == population:
        impossible[-1] |= bool(above[-1])  # the last case is known under H0: it is exactly the centre or less
    factor = np.where(impossible, np.inf, np.where(centre <= 0.0, 0.0, factor))
    return np.asarray(np.cumsum(factor), dtype=np.float64)


def _bound(y: Floats, bets: Floats, side: Side, threshold: float, population: int | None, truncation: float) -> float:
    """The mu where log K_n(mu) crosses ``threshold``: K+ falls in mu, K- rises, so a bisection finds it."""
    def excluded(mu: float) -> bool:
        return bool(log_capital(y, mu, bets, side, population, truncation)[-1] >= threshold)

    low, high = 0.0, 1.0
    if side == "pass":
        if not excluded(0.0):
            return 0.0
        if excluded(1.0):
            return 1.0
    else:
        if not excluded(1.0):
            return 1.0
        if excluded(0.0):
            return 0.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if excluded(mid) == (side == "pass"):
            low = mid
        else:
            high = mid
    return low if side == "pass" else high


def confidence_sequence(y: npt.ArrayLike, times: Sequence[int], alpha: float = 0.05, population: int | None = None,
                        truncation: float = TRUNCATION) -> list[tuple[float, float]]:
    """The betting confidence sequence for the mean of Y in [0, 1] at the given times, intersected over them [wsr2024].

    Each bound is one-sided at level alpha uniformly over time (the two together cover with >= 1 - 2 alpha). With
    ``population`` N the mean is that of a finite population sampled without replacement [wsr2020].
    """
    arr = np.asarray(y, dtype=np.float64)
    bets = plug_in_bets(arr, alpha)
    threshold, low, high, out = math.log(1.0 / alpha), 0.0, 1.0, []
    for t in times:
        low = max(low, _bound(arr[:t], bets[:t], "pass", threshold, population, truncation))
        high = min(high, _bound(arr[:t], bets[:t], "regression", threshold, population, truncation))
        out.append((low, max(low, high)))
    return out


@dataclass(frozen=True)
class BettingLook:
    """One look at an anytime-valid comparison: the e-values so far, the confidence sequence and the verdict."""

    metric: str
    look: int  # 1-based
    n: int  # paired cases seen
    population: int | None  # N of a finite suite sampled without replacement, else None (claims about the task)
    delta: float  # mean difference over the n cases (biased at a data-dependent stop: read the interval)
    ci_low: float  # confidence sequence for delta, valid at any stop
    ci_high: float
    e_pass: float  # the largest K+ at -m over the looks so far; >= 1/alpha passes
    e_regression: float  # likewise K- at -m; >= 1/alpha is a regression
    p_noninferior: float  # anytime-valid p-value, min(1, 1 / e_pass)
    p_inferior: float
    margin: float
    alpha: float
    verdict: BettingVerdict
    method: str


def betting_paired(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, look_sizes: Sequence[int], margin: float,
                   alpha: float = 0.05, score_range: float = 1.0, population: int | None = None, final: bool = False,
                   truncation: float = TRUNCATION) -> list[BettingLook]:
    """Paired scores in their asked order, decided at each look by the two betting e-processes until one crosses.

    Scores must lie in an interval of width ``score_range`` (1 for pass/fail and [0, 1] scores), so that
    differences lie in [-score_range, score_range]. Looks may come at any case counts and be as many as wanted.
    ``population`` is the suite's size when cases are drawn from it without replacement (the claim is then about
    the suite, and the look at n = population is exact); ``final`` marks the last look the budget allows, where
    no crossing is inconclusive. Returns the looks up to the first that decides.
    """
    b, c = paired_arrays(metric, base, cand)
    check_args(metric, margin, alpha, max_margin=score_range)
    if not 0 < truncation < 1:
        raise ValueError(f"truncation must be in (0, 1), got {truncation}")
    d = c - b
    if np.abs(d).max() > score_range:
        raise ValueError(f"{metric}: a paired difference of {np.abs(d).max():g} is outside +-{score_range} (give score_range)")
    sizes = [int(x) for x in look_sizes]
    if not sizes or sizes[0] < 1 or any(q <= p for p, q in pairwise(sizes)) or sizes[-1] > len(d):
        raise ValueError(f"{metric}: looks must be increasing case counts within the {len(d)} given, got {sizes}")
    if population is not None and not len(d) <= population:
        raise ValueError(f"{metric}: {len(d)} cases drawn from a suite of {population}")
    y = (d / score_range + 1.0) / 2.0
    mu0 = (1.0 - margin / score_range) / 2.0
    bets = plug_in_bets(y, alpha)
    log_up = log_capital(y[:sizes[-1]], mu0, bets[:sizes[-1]], "pass", population, truncation)
    log_down = log_capital(y[:sizes[-1]], mu0, bets[:sizes[-1]], "regression", population, truncation)
    threshold = math.log(1.0 / alpha)
    scope = "the suite's mean, sampled without replacement [wsr2020]" if population else "i.i.d. cases"
    method = (f"betting e-processes at delta0=-m, predictable plug-in bets, c={truncation} [wsr2024]; {scope}; "
              f"Ville's inequality [ville1939]")
    out: list[BettingLook] = []
    up = down = -math.inf
    for k, (n, (lo, hi)) in enumerate(zip(sizes, confidence_sequence(y, sizes, alpha, population, truncation), strict=True)):
        up, down = max(up, float(log_up[n - 1])), max(down, float(log_down[n - 1]))  # looked at at the looks, as the interval is
        ci_low, ci_high = score_range * (2.0 * lo - 1.0), score_range * (2.0 * hi - 1.0)
        verdict: BettingVerdict
        if up >= threshold:
            verdict = "improvement" if ci_low > margin else "pass"
        elif down >= threshold:
            verdict = "regression"
        else:
            verdict = "inconclusive" if (final and k == len(sizes) - 1) or n == population else "continue"
        out.append(BettingLook(metric=metric, look=k + 1, n=n, population=population, delta=float(d[:n].mean()),
                               ci_low=ci_low, ci_high=ci_high, e_pass=math.exp(min(up, 700.0)),
                               e_regression=math.exp(min(down, 700.0)),
                               p_noninferior=min(1.0, math.exp(-up)), p_inferior=min(1.0, math.exp(-down)), margin=margin,
                               alpha=alpha, verdict=verdict, method=method))
        if verdict != "continue":
            break
    return out
