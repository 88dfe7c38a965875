"""A paired non-inferiority question decided at group-sequential looks (boundaries from ``group_sequential``).

Cases are asked in a seeded random order; at look k the first n_k of them are compared, and both claims of the
fixed gate are tested against one boundary b_k (``boundaries`` at one-sided level alpha, information measured by
the number of pairs, t_k = n_k / n_max):

    pass        Z_k(-m) >= b_k    (H0: delta <= -m rejected)
    regression  Z_k(-m) <= -b_k   (H0: delta >= -m rejected)
    continue    otherwise, before the last look; inconclusive at it

Z_k(-m) is the fixed gate's own statistic at delta0 = -m: Tango's score for pass/fail pairs [tango1998], a t
statistic for continuous ones. Each claim is a one-sided group-sequential test whose chance of a false claim over
all looks is alpha; the two cannot both cross.

The interval reported at look k is the repeated confidence interval of Jennison and Turnbull [jt1989;
jennison-turnbull2000, ch. 9]: the statistic inverted at the look's own boundary, {delta0 : |Z_k(delta0)| < b_k}.
The sequence of these intervals covers delta at every look at once with probability >= 1 - 2 alpha, so the
interval stays valid at whatever look the gate stops, even a stop the boundaries did not call for. Its bounds cross
-m exactly when Z_k(-m) crosses +-b_k, so the verdict is read off it with the fixed gate's rule
(``comparison.verdict_of``): the last look decides exactly as the fixed gate does, at b_K instead of z_{1-alpha}.

A look past n_max, or one marked final, spends all that is left of alpha (t = 1) at its actual information.

The boundaries assume Z_k is normal. Tango's score is close to normal once there are a few dozen discordant pairs;
with fewer its regression side runs liberal, in the fixed gate and more so at early looks (false regressions on
the margin: 5.8% fixed, 6.5% over five O'Brien-Fleming looks at n = 160 and 2% noise; docs/statistics.md).

[tango1998] Tango T. Stat Med 1998;17:891-908.
[jt1989] Jennison C, Turnbull BW. Interim analyses: the repeated confidence interval approach. J R Stat Soc B
1989;51:305-361.
[jennison-turnbull2000] Jennison C, Turnbull BW. Group Sequential Methods with Applications to Clinical Trials.
Chapman & Hall/CRC, 2000 (sec. 3.1: the canonical joint distribution; ch. 3: t statistics, the significance
level approach; ch. 9: repeated confidence intervals).
[jt1991] Jennison C, Turnbull BW. Exact calculations for sequential t, chi-square and F tests. Biometrika
1991;78:133-141.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri, stdtr, stdtrit  # scipy.stats costs seconds to import

from evalsvc.stats.binary import _Discordant, tango_score
from evalsvc.stats.comparison import check_args, paired_arrays, verdict_of
from evalsvc.stats.group_sequential import boundaries

LookVerdict = Literal["pass", "improvement", "regression", "continue", "inconclusive"]


@dataclass(frozen=True)
class Look:
    """One look at a sequential comparison: what was seen, the boundary it met and what it decided."""

    metric: str
    kind: Literal["binary", "continuous"]
    look: int  # 1-based
    n: int  # paired cases seen
    n_max: int  # planned cases at the last look
    fraction: float  # information fraction at which alpha is spent (1 at the last look)
    boundary: float  # one-sided z boundary for each claim at this look
    level: float  # its nominal one-sided level, 1 - Phi(boundary)
    delta: float  # candidate - baseline mean over the n cases (biased away from 0 at an early stop: read the interval)
    ci_low: float  # repeated confidence interval, valid at any stop [jt1989]
    ci_high: float
    statistic: float  # Z at delta0 = -m: >= boundary passes, <= -boundary is a regression
    margin: float
    alpha: float  # one-sided level of each claim over all looks
    verdict: LookVerdict
    final: bool
    flips_down: int  # binary: pass -> fail; continuous: candidate below baseline
    flips_up: int
    method: str


def _plan(metric: str, look_sizes: Sequence[int], available: int, n_max: int) -> list[int]:
    sizes = [int(x) for x in look_sizes]
    if n_max < 2:
        raise ValueError(f"{metric}: n_max must be >= 2, got {n_max}")
    if not sizes or sizes[0] < 2 or any(b <= a for a, b in pairwise(sizes)):
        raise ValueError(f"{metric}: looks must be increasing case counts, each >= 2, got {sizes}")
    if sizes[-1] > available:
        raise ValueError(f"{metric}: the last look needs {sizes[-1]} paired cases, only {available} given")
    if any(s >= n_max for s in sizes[:-1]):
        raise ValueError(f"{metric}: a look at or past n_max={n_max} is the last; no look may follow it, got {sizes}")
    return sizes


def _fractions(sizes: list[int], n_max: int, final: bool) -> list[float]:
    t = [min(s / n_max, 1.0) for s in sizes]
    if final:
        t[-1] = 1.0
    return t


class _Evaluate:
    """The estimate, interval, statistic and flips over the first n cases at a boundary."""

    def __call__(self, n: int, bound: float, level: float) -> tuple[float, float, float, float, int, int]:
        raise NotImplementedError


def _looks(metric: str, kind: Literal["binary", "continuous"], sizes: list[int], n_max: int, margin: float, alpha: float,
           spending: str, final: bool, evaluate: _Evaluate, method: str) -> list[Look]:
    t = _fractions(sizes, n_max, final)
    bounds = boundaries(t, alpha, spending, information=[float(s) for s in sizes])
    out = []
    for k, (n, tk, bk) in enumerate(zip(sizes, t, bounds, strict=True)):
        last = tk >= 1.0
        level = float(ndtr(-bk))
        delta, low, high, z, down, up = evaluate(n, bk, level)
        verdict: LookVerdict = verdict_of(low, high, margin)
        if verdict == "inconclusive" and not last:
            verdict = "continue"
        out.append(Look(metric=metric, kind=kind, look=k + 1, n=n, n_max=n_max, fraction=tk, boundary=bk, level=level,
                        delta=delta, ci_low=low, ci_high=high, statistic=z, margin=margin, alpha=alpha, verdict=verdict,
                        final=last, flips_down=down, flips_up=up, method=method))
        if verdict != "continue":
            break
    return out


class _BinaryLooks(_Evaluate):
    def __init__(self, b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], margin: float) -> None:
        self.downs = np.cumsum((b == 1) & (c == 0))
        self.ups = np.cumsum((b == 0) & (c == 1))
        self.margin = margin

    def __call__(self, n: int, bound: float, level: float) -> tuple[float, float, float, float, int, int]:
        up, down = int(self.ups[n - 1]), int(self.downs[n - 1])
        z = tango_score(n, up, down, -self.margin)
        low, high = _Discordant(n, up, down).interval(level) if math.isfinite(bound) else (-1.0, 1.0)
        return (up - down) / n, low, high, z, down, up


class _ContinuousLooks(_Evaluate):
    def __init__(self, b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], margin: float) -> None:
        self.d = c - b
        self.margin = margin

    def __call__(self, n: int, bound: float, level: float) -> tuple[float, float, float, float, int, int]:
        d = self.d[:n]
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        down, up = int(np.count_nonzero(d < 0)), int(np.count_nonzero(d > 0))
        if sd == 0.0 or not math.isfinite(bound):  # no spread seen yet: no claim (a batch of ties must not pass at once)
            return mean, -math.inf, math.inf, 0.0, down, up
        se = sd / math.sqrt(n)
        crit = float(stdtrit(n - 1, 1.0 - level))  # the t quantile at the boundary's nominal level
        t = (mean + self.margin) / se
        z = math.copysign(-float(ndtri(stdtr(n - 1, -abs(t)))), t)  # the z with t's tail
        return mean, mean - crit * se, mean + crit * se, z, down, up


def sequential_binary(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, look_sizes: Sequence[int], n_max: int,
                      margin: float, alpha: float = 0.05, spending: str = "obrien-fleming", final: bool = False) -> list[Look]:
    """Pass/fail pairs in their asked order, decided at each look until a claim is made or the last look is reached.

    ``look_sizes`` are the case counts at the looks so far (e.g. [200, 400]); the result has one ``Look`` per look up
    to the first that decides, and its last entry is where the comparison stands. The statistic is Tango's score at
    delta0 = -m and the interval its inversion at the look's boundary [tango1998; jt1989]; ``final`` marks the last
    look when it comes before n_max (a suite that ran out of cases), which then spends the rest of alpha.
    """
    b, c = paired_arrays(metric, base, cand)
    if not (np.isin(b, (0.0, 1.0)).all() and np.isin(c, (0.0, 1.0)).all()):
        raise ValueError(f"{metric}: binary scores must be 0 or 1 (use sequential_continuous for graded scores)")
    check_args(metric, margin, alpha, max_margin=1.0)
    sizes = _plan(metric, look_sizes, len(b), n_max)
    method = (f"group-sequential Tango score test at delta0=-m, {spending} spending over n_max={n_max} pairs "
              f"[lan-demets1983; tango1998]; repeated confidence interval [jt1989]")
    return _looks(metric, "binary", sizes, n_max, margin, alpha, spending, final, _BinaryLooks(b, c, margin), method)


def sequential_continuous(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, look_sizes: Sequence[int], n_max: int,
                          margin: float, alpha: float = 0.05, spending: str = "obrien-fleming",
                          final: bool = False) -> list[Look]:
    """Continuous pairs decided at looks like ``sequential_binary``, by the paired t statistic at delta0 = -m.

    The z boundary b_k is turned into a t quantile with the same nominal level, t_{n_k - 1}(Phi(b_k)), the
    significance level approach for an estimated variance [jennison-turnbull2000, ch. 3; jt1991]; the interval is
    mean +- that quantile x SE, so it crosses -m exactly when the t statistic crosses the boundary. ``statistic``
    reports the t statistic mapped to the z with the same tail. A look whose differences are all equal has no
    estimate of spread and makes no claim.
    """
    b, c = paired_arrays(metric, base, cand)
    check_args(metric, margin, alpha)
    sizes = _plan(metric, look_sizes, len(b), n_max)
    method = (f"group-sequential paired t test at delta0=-m, {spending} spending over n_max={n_max} pairs "
              f"[lan-demets1983]; t quantiles at the boundaries' levels [jennison-turnbull2000]; "
              f"repeated confidence interval [jt1989]")
    return _looks(metric, "continuous", sizes, n_max, margin, alpha, spending, final, _ContinuousLooks(b, c, margin), method)


def equal_looks(n_max: int, looks: int) -> list[int]:
    """Case counts for ``looks`` equally spaced looks up to n_max (rounded up, the last exactly n_max)."""
    if looks < 1 or n_max < 2 * looks:
        raise ValueError(f"need 1 <= looks <= n_max / 2, got looks={looks}, n_max={n_max}")
    return [math.ceil(n_max * (k + 1) / looks) for k in range(looks)]
