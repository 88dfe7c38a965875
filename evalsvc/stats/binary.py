"""Pass/fail pairs: Tango's score interval and test, and McNemar's test.

[tango1998] Tango T. Equivalence test and confidence interval for the difference in proportions for the
paired-sample design. Stat Med 1998;17:891-908. [mcnemar1947] McNemar Q. Note on the sampling error of the
difference between correlated proportions or percentages. Psychometrika 1947;12:153-157.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import bdtr, chdtrc, ndtri  # scipy.stats costs seconds to import

from evalsvc.stats.comparison import Comparison, at_level, check_args, paired_arrays, phi, undecided
from evalsvc.stats.power import n_for_noninferiority


def mcnemar(b: int, c: int) -> float:
    """Two-sided McNemar p-value for delta = 0 from the discordant counts [mcnemar1947].

    Exact binomial on the b + c discordant pairs when b + c < 25, else chi-square (1 df) with the
    continuity correction, as ``statsmodels.stats.contingency_tables.mcnemar`` computes them; unlike
    statsmodels, |b - c| - 1 is floored at 0, so b == c gives p = 1 rather than slightly less.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    discordant = b + c
    if discordant == 0:
        return 1.0
    if discordant < 25:
        return min(1.0, 2.0 * float(bdtr(min(b, c), discordant, 0.5)))
    return float(chdtrc(1, max(abs(b - c) - 1, 0) ** 2 / discordant))


def tango_score(n: int, up: int, down: int, delta0: float) -> float:
    """Tango's score statistic for H0: delta = delta0, delta = (up - down) / n [tango1998].

    ``up`` counts fail -> pass pairs, ``down`` pass -> fail. The variance is evaluated at the maximum
    likelihood estimate of P(down) restricted to H0, the root of 2n x^2 + B x + C = 0 below (the same
    statistic as Nam 1997). At delta0 = 0 it is McNemar's uncorrected z, (up - down) / sqrt(up + down).
    It decreases in delta0 (checked on a fine grid for every table with n <= 60), so inverting it gives an interval.
    """
    numerator = up - down - n * delta0
    if numerator == 0:
        return 0.0
    b = -(up + down) + (2 * n - up + down) * delta0
    c = -down * delta0 * (1.0 - delta0)
    p_down = (math.sqrt(max(b * b - 8.0 * n * c, 0.0)) - b) / (4.0 * n)
    variance = n * (2.0 * p_down + delta0 * (1.0 - delta0))
    if variance <= 0.0:  # only at delta0 = +-1, where H0 allows one kind of pair only
        return math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _root_of_decreasing(f: Callable[[float], float], low: float, high: float) -> float:
    """Where a decreasing f crosses 0 in [low, high] (f(low) > 0 >= f(high)), by bisection to the last bit."""
    while True:
        mid = 0.5 * (low + high)
        if mid in (low, high):
            return high
        if f(mid) > 0:
            low = mid
        else:
            high = mid


@dataclass(frozen=True)
class _Discordant:
    """Binary evidence: the discordant counts, all that the paired 2x2 table's delta depends on."""

    n: int
    up: int
    down: int

    def interval(self, alpha: float) -> tuple[float, float]:
        z = float(ndtri(1 - alpha))
        estimate = (self.up - self.down) / self.n
        low = -1.0 if estimate == -1 else _root_of_decreasing(lambda d: tango_score(self.n, self.up, self.down, d) - z, -1.0, estimate)
        high = 1.0 if estimate == 1 else _root_of_decreasing(lambda d: tango_score(self.n, self.up, self.down, d) + z, estimate, 1.0)
        return low, high

    def p_values(self, theta: float) -> tuple[float, float]:
        score = tango_score(self.n, self.up, self.down, theta)
        return 1.0 - phi(score), phi(score)

    def n_needed(self, margin: float, alpha: float) -> int | None:
        return n_for_noninferiority(margin, alpha, discordance=(self.up + self.down) / self.n, delta=(self.up - self.down) / self.n)


def compare_binary(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, margin: float, alpha: float = 0.05) -> Comparison:
    """Paired pass/fail comparison by Tango's score interval and score test [tango1998].

    The interval is the set of delta0 whose two one-sided score tests are not rejected at ``alpha``
    (endpoints found by bisection), and the p-values are those same tests at delta0 = -m, which is why
    the interval and the p-values agree (the non-inferiority test is Nam's and Tango's score test).
    Among the intervals for paired proportions it is one of the few recommended for small and moderate n
    (Fagerland, Lydersen & Laake 2014, Stat Med 33:2850); unlike the Wald interval it stays in [-1, 1]
    and does not collapse when there are no discordant pairs. Its correctness is tested against an
    independent brute-force inversion (a numerically maximised restricted likelihood and scipy root
    finding) rather than the paper's worked example, whose table values we could not confirm.
    """
    b, c = paired_arrays(metric, base, cand)
    if not (np.isin(b, (0.0, 1.0)).all() and np.isin(c, (0.0, 1.0)).all()):
        raise ValueError(f"{metric}: binary scores must be 0 or 1 (use compare_continuous for graded scores)")
    check_args(metric, margin, alpha, max_margin=1.0)
    n = len(b)
    down = int(np.count_nonzero((b == 1) & (c == 0)))
    up = int(np.count_nonzero((b == 0) & (c == 1)))
    test = "exact binomial" if up + down < 25 else "chi-square with continuity correction"
    method = (f"Tango score interval and score test for paired proportions [tango1998]; "
              f"McNemar p={mcnemar(down, up):.3g} for delta=0 ({test}) [mcnemar1947]")
    return at_level(undecided(metric, "binary", b, c, (up - down) / n, margin, down, up, method, _Discordant(n, up, down)), alpha)
