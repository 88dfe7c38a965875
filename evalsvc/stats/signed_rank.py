"""Paired comparison by the Wilcoxon signed-rank test and its Hodges-Lehmann shift, for heavy-tailed differences.

Output tokens per second of a request moves with every stall of a busy serving machine: a request held up for tens
of milliseconds halves its rate, so per-case rate differences are heavy-tailed (excess kurtosis 4 to 27 in
``bench/speed_aa.py``'s A/A gates), and the paired bootstrap of their mean (BCa) gave 90% intervals that excluded 0
in 13-19% of A/A gates instead of 10%. The signed-rank test needs only that a case's difference is symmetric about
the shift under the null, which exchangeable arms (an A/A gate, interleaved requests) give whatever the tails
[wilcoxon1945]. Its estimate is the Hodges-Lehmann shift, the median of the Walsh averages (d_i + d_j) / 2, i <= j
[hodges-lehmann1963], and the interval is the set of shifts theta the test does not reject (d - theta), at each side
one-sided ``alpha`` [hollander-wolfe1999, section 3.2]: its bounds are Walsh averages, exactly as the textbook
construction from the signed-rank critical values gives them. P-values are scipy's ``wilcoxon`` (exact below 50
cases without ties, else the normal approximation with the ties correction) and the bounds are found by bisection
on the same p-values, so the interval and the test always agree.

Simulated (tests/test_speed_signed_rank.py): A/A exclusion at its nominal 10% where the BCa mean gave 15%, and more
power against a true 3% slowdown than the mean (the ranks are not dragged by stalls).

[wilcoxon1945] Wilcoxon F. Individual comparisons by ranking methods. Biometrics Bulletin 1945;1:80-83.
[hodges-lehmann1963] Hodges JL, Lehmann EL. Estimates of location based on rank tests. Ann Math Stat 1963;34:598-611.
[hollander-wolfe1999] Hollander M, Wolfe DA. Nonparametric Statistical Methods, 2nd ed. Wiley 1999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri
from scipy.stats import wilcoxon

from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.comparison import Comparison, Floats, at_level, check_args, paired_arrays, undecided
from evalsvc.stats.power import n_for_noninferiority

_WALSH_MAX = 1500  # up to this many cases the Walsh averages are formed (1.1 million), beyond they are counted
_STEPS = 60  # bisection steps on theta (beyond _WALSH_MAX cases): the span halved 60 times, below float resolution


def _p(d: Floats, theta: float, alternative: str) -> float:
    """One-sided signed-rank p-value of d - theta (``greater``: H1 shift > theta)."""
    x = d - theta
    if not np.any(x):
        return 1.0
    return float(wilcoxon(x, alternative=alternative, zero_method="wilcox").pvalue)


def hodges_lehmann(d: npt.ArrayLike) -> float:
    """The median of the Walsh averages (d_i + d_j) / 2 over i <= j [hodges-lehmann1963].

    Up to ``_WALSH_MAX`` cases from the averages themselves; beyond, without forming them: bisection on theta of the
    number of averages above it, counted from the sorted differences (n log n per step)."""
    x = np.sort(np.asarray(d, dtype=float))
    if len(x) <= _WALSH_MAX:
        i, j = np.triu_indices(len(x))
        return float(np.median((x[i] + x[j]) / 2.0))
    half = len(x) * (len(x) + 1) / 4.0

    def above(theta: float) -> float:  # pairs i <= j with x_i + x_j > 2 theta
        ordered = len(x) * len(x) - int(np.searchsorted(x, 2.0 * theta - x, side="right").sum())
        return (ordered + int(np.count_nonzero(x > theta))) / 2.0

    low, high = float(x[0]), float(x[-1])
    for _ in range(_STEPS):
        mid = (low + high) / 2.0
        low, high = (mid, high) if above(mid) > half else (low, mid)
    return (low + high) / 2.0


@dataclass(frozen=True)
class _SignedRank:
    """The per-case differences; every interval and p-value is the signed-rank test's, inverted where needed.

    The signed-rank statistic of d - theta is the number of Walsh averages above theta [hollander-wolfe1999], so
    the p-value is constant between two neighbouring Walsh averages and each bound is one of them: up to
    ``_WALSH_MAX`` cases the bound is found by bisection over their sorted list (the test evaluated between two of
    them, never on one, where a zero or a tie would change the method), beyond by bisection on theta."""

    d: Floats
    shift: float  # the Hodges-Lehmann estimate
    _bounds: dict[tuple[float, str], float] = field(default_factory=dict, compare=False, repr=False)

    def _walsh(self) -> Floats:
        i, j = np.triu_indices(len(self.d))
        return np.unique((self.d[i] + self.d[j]) / 2.0)

    def _bound(self, alpha: float, alternative: str) -> float:
        """The shift where the one-sided p-value crosses alpha: the lower bound (``greater``) or the upper (``less``)."""
        key = (alpha, alternative)
        if key not in self._bounds:
            self._bounds[key] = self._search(alpha, alternative)
        return self._bounds[key]

    def _search(self, alpha: float, alternative: str) -> float:
        span = float(np.ptp(self.d)) or 1.0
        low, high = float(self.d.min()) - span, float(self.d.max()) + span
        lower = alternative == "greater"  # p rises with theta: the lower bound is the largest theta still rejected
        if _p(self.d, low if lower else high, alternative) >= alpha:
            return -math.inf if lower else math.inf  # too few cases for the test to reject anything at this level
        if len(self.d) <= _WALSH_MAX:
            w = self._walsh()
            between = np.concatenate([[low], (w[:-1] + w[1:]) / 2.0, [high]])  # gap k lies below w[k]
            # rejected gaps: 0..r (lower bound: their right edge w[r]) or r..len (upper bound: their left edge w[r-1])
            if lower:
                rejected, kept = 0, len(between) - 1
            else:
                rejected, kept = len(between) - 1, 0
            while abs(kept - rejected) > 1:
                mid = (rejected + kept) // 2
                if _p(self.d, float(between[mid]), alternative) < alpha:
                    rejected = mid
                else:
                    kept = mid
            return float(w[rejected]) if lower else float(w[rejected - 1])
        rejected_t, kept_t = (low, high) if lower else (high, low)
        for _ in range(_STEPS):
            mid_t = (rejected_t + kept_t) / 2.0
            if _p(self.d, mid_t, alternative) < alpha:
                rejected_t = mid_t
            else:
                kept_t = mid_t
        return rejected_t

    def interval(self, alpha: float) -> tuple[float, float]:
        return self._bound(alpha, "greater"), self._bound(alpha, "less")

    def p_values(self, theta: float) -> tuple[float, float]:
        return _p(self.d, theta, "greater"), _p(self.d, theta, "less")

    def n_needed(self, margin: float, alpha: float) -> int | None:
        low, high = self.interval(alpha)
        if not (math.isfinite(low) and math.isfinite(high)):
            return None
        se = (high - low) / (2.0 * float(ndtri(1.0 - alpha)))  # the estimate's standard error, read off its interval
        return n_for_noninferiority(margin, alpha, sd=se * math.sqrt(len(self.d)), delta=self.shift)


def compare_shift(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, margin: float, alpha: float = 0.05,
                  flip_tol: float = 0.0) -> Comparison:
    """Paired comparison of a higher-is-better metric by the signed-rank test: delta is the Hodges-Lehmann shift of
    the per-case differences (candidate - baseline), the interval inverts the test; the means are shown as measured."""
    b, c = paired_arrays(metric, base, cand)
    check_args(metric, margin, alpha)
    d = c - b
    if len(d) == 1 or np.ptp(d) == 0:  # no spread to rank: the bootstrap's own no-claim and unvarying bounds
        return compare_continuous(metric, b, c, margin, alpha, flip_tol=flip_tol)
    shift = hodges_lehmann(d)
    method = ("Wilcoxon signed-rank test on the paired differences [wilcoxon1945], delta the Hodges-Lehmann shift "
              "[hodges-lehmann1963], interval by inverting the test [hollander-wolfe1999]: robust to stalled requests")
    flips_down, flips_up = int(np.count_nonzero(d < -flip_tol)), int(np.count_nonzero(d > flip_tol))
    return at_level(undecided(metric, "continuous", b, c, shift, margin, flips_down, flips_up, method,
                              _SignedRank(d, shift)), alpha)
