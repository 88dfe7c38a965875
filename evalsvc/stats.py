"""Paired candidate-vs-baseline comparison: the intervals, tests and verdicts of the gate (docs/gate.md).

Both runs score the same cases, so every metric is compared through per-case pairs. Pairing removes the
between-case spread that dominates eval scores (Miller 2024, arXiv 2411.00640 [miller2024]).
Scores arrive oriented so that higher is better (lower-is-better metrics already negated).

Each metric is a non-inferiority question with margin m >= 0, every claim one-sided at level alpha:

    improvement   lo > +m
    pass          lo > -m    (rejects H0: delta <= -m, i.e. p_noninferior < alpha)
    regression    hi < -m    (rejects H0: delta >= -m, i.e. p_inferior < alpha)
    inconclusive  otherwise, with the n that would decide it if the observed delta and spread held

[lo, hi] is the two-sided (1 - 2 alpha) interval got by inverting the very test that gives the p-values,
so a bound crosses -m exactly when the p-value crosses alpha: the verdict read off the interval and the
verdict read off the test cannot disagree (``Comparison`` states the invariant).

- Binary (pass/fail checks): Tango's score interval and score test for the difference of paired
  proportions [tango1998]; McNemar's test of delta = 0 is reported alongside [mcnemar1947].
- Continuous: paired bootstrap of the mean difference, BCa [efron-tibshirani1993] with Hesterberg's
  small-sample expansion [hesterberg2015]; p-values by inverting the BCa bounds.
- Several metrics: Holm's step-down [holm1979] sets each metric's level before deciding (``decide``);
  across suites an overall pass is an intersection-union test [berger1982] (``decide_suites``).

References (the keys in ``Comparison.method``; full entries and simulations in docs/statistics.md):
[tango1998] Tango T. Stat Med 1998;17:891-908. [nam1997] Nam J. Biometrics 1997;53:1422-1430.
[connor1987] Connor RJ. Biometrics 1987;43:207-211. [mcnemar1947] McNemar Q. Psychometrika 1947;12:153-157.
[efron-tibshirani1993] Efron B, Tibshirani RJ. An Introduction to the Bootstrap, 1993, ch. 14.
[hesterberg2015] Hesterberg TC. Am Stat 2015;69:371-386. [holm1979] Holm S. Scand J Stat 1979;6:65-70.
[berger1982] Berger RL. Technometrics 1982;24:295-300 (intersection-union tests).
[miller2024] Miller E. arXiv 2411.00640, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy.special import bdtr, chdtrc, ndtri, stdtr, stdtrit  # scipy.stats costs seconds to import

Verdict = Literal["pass", "regression", "improvement", "inconclusive"]
Floats = npt.NDArray[np.float64]

POWER = 0.8  # the power that n_needed is computed for
_SQRT2 = math.sqrt(2.0)
_SEVERITY: dict[str, int] = {"pass": 0, "inconclusive": 1, "regression": 2}


def _phi(x: float) -> float:
    """Standard normal CDF for a Python float (inf-safe, no numpy round trip)."""
    return 0.5 * math.erfc(-x / _SQRT2)


class Evidence(Protocol):
    """What a comparison keeps so that ``decide`` can redo its interval and test at another level."""

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided (1 - 2 alpha) interval for delta."""
        ...

    def p_values(self, theta: float) -> tuple[float, float]:
        """One-sided p-values for H0: delta <= theta and for H0: delta >= theta."""
        ...

    def n_needed(self, margin: float, alpha: float) -> int | None:
        """Paired n for POWER to decide against this margin if the true delta and spread are the observed ones."""
        ...


@dataclass(frozen=True)
class Comparison:
    """One metric, candidate vs baseline, on the cases that are ``ok`` in both runs.

    Invariant (interval and test agree): verdict is pass or improvement iff p_noninferior < alpha, and
    regression iff p_inferior < alpha. The p-values are the raw ones; ``alpha`` is the level this
    metric was decided at (Holm-adjusted by ``decide``).
    """

    metric: str
    kind: Literal["binary", "continuous"]
    n: int  # paired cases
    baseline_mean: float
    candidate_mean: float
    delta: float  # candidate_mean - baseline_mean
    ci_low: float  # two-sided (1 - 2 alpha) interval: each side one-sided at alpha
    ci_high: float
    margin: float  # non-inferiority margin m >= 0, in the metric's units
    alpha: float  # one-sided level used for this metric (after Holm, once decided)
    p_noninferior: float  # H0: delta <= -m (small => non-inferior)
    p_inferior: float  # H0: delta >= -m (small => regression)
    verdict: Verdict
    flips_down: int  # binary: pass -> fail; continuous: cand < base - flip_tol
    flips_up: int  # binary: fail -> pass; continuous: cand > base + flip_tol
    n_needed: int | None  # inconclusive only: paired n for 80% power to decide, if the true delta is the observed one
    method: str  # how the interval and p-values were computed, with citation keys
    evidence: Evidence | None = field(default=None, repr=False, compare=False)


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


def n_for_noninferiority(margin: float, alpha: float = 0.05, power: float = POWER, *, discordance: float | None = None,
                         sd: float | None = None, delta: float = 0.0) -> int | None:
    """Paired n giving ``power`` to decide against the margin if the true delta is ``delta``.

    For delta > -m the claim is non-inferiority (lo > -m), for delta < -m a regression (hi < -m); the two
    are symmetric around -m, so one formula serves: n = ((z_a s0 + z_b s1) / |delta + m|)^2.
    Binary (``discordance`` = share of discordant pairs, psi; needs |delta| <= psi): the score-test sample
    size of Nam [nam1997], of the same form as Connor's [connor1987]. s1^2 = psi - delta^2 is the variance of
    a pair's difference at the assumed delta, with P(up) = (psi + delta) / 2 and P(down) = (psi - delta) / 2;
    s0^2 = 2 q + d0 (1 - d0) at d0 = -m, q being the limit of Tango's restricted estimate of P(down) there.
    Continuous (``sd`` = SD of the per-case differences): s0 = s1 = sd, the z-based calculation of Miller
    [miller2024]. None when delta = -m (no n decides a delta that sits on the margin), so in particular at
    m = 0 and delta = 0.
    """
    if (discordance is None) == (sd is None):
        raise ValueError("give exactly one of discordance (binary) or sd (continuous)")
    if not 0 < alpha < 0.5 or not 0 < power < 1:
        raise ValueError(f"need 0 < alpha < 0.5 and 0 < power < 1, got alpha={alpha}, power={power}")
    m, effect = margin, abs(delta + margin)
    if margin < 0 or effect == 0:
        return None
    z_a, z_b = float(ndtri(1 - alpha)), float(ndtri(power))
    if sd is not None:
        return max(2, math.ceil(((z_a + z_b) * sd / effect) ** 2))
    assert discordance is not None
    if not 0 <= discordance <= 1 or abs(delta) > discordance + 1e-12:
        raise ValueError(f"discordance is a share of pairs at least |delta|, got {discordance} with delta {delta}")
    psi = discordance
    p_down = (psi - delta) / 2
    b = -psi - m * (2 - delta)
    q = (math.sqrt(max(b * b - 8 * p_down * m * (1 + m), 0.0)) - b) / 4
    s0 = math.sqrt(max(2 * q - m * (1 + m), 0.0))
    s1 = math.sqrt(max(psi - delta * delta, 0.0))
    return max(1, math.ceil(((z_a * s0 + z_b * s1) / effect) ** 2))


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
        return 1.0 - _phi(score), _phi(score)

    def n_needed(self, margin: float, alpha: float) -> int | None:
        return n_for_noninferiority(margin, alpha, discordance=(self.up + self.down) / self.n, delta=(self.up - self.down) / self.n)


@dataclass(frozen=True, eq=False)
class _Bootstrap:
    """Continuous evidence: the sorted bootstrap means and the BCa constants [efron-tibshirani1993, ch. 14].

    Quantiles interpolate linearly (as numpy's and scipy's do); ``_cdf`` and ``_tail`` invert them and
    the BCa map exactly, so a p-value is the level at which a BCa bound reaches theta. The normal
    quantile z_alpha that BCa starts from is replaced by sqrt(n / (n - 1)) t_{n-1, alpha}, Hesterberg's
    expanded bootstrap [hesterberg2015]: the bootstrap spread divides by n, not n - 1, and ignores the
    uncertainty of the spread itself, so plain BCa is too narrow at small n (one-sided size 6.3% at
    n = 20, 5.4% at n = 50 for alpha = 0.05 on normal differences); the expansion restores the t test's
    size there and fades as n grows (0.7% wider at n = 200).
    """

    means: Floats  # sorted
    z0: float  # bias correction
    accel: float  # acceleration
    sd: float  # SD of the per-case differences
    df: int  # n - 1
    mean: float = 0.0  # the observed mean difference

    def _z(self, alpha: float) -> float:
        """The expanded quantile, in place of the normal quantile at ``alpha``."""
        return math.sqrt((self.df + 1) / self.df) * float(stdtrit(self.df, alpha))

    def _alpha(self, z: float) -> float:
        """Inverse of ``_z``."""
        return float(stdtr(self.df, z * math.sqrt(self.df / (self.df + 1))))

    def _quantile(self, q: float) -> float:
        x = self.means
        if len(x) == 1:
            return float(x[0])
        h = q * (len(x) - 1)
        i = min(int(h), len(x) - 2)
        return float(x[i] + (h - i) * (x[i + 1] - x[i]))

    def _bca_level(self, z: float) -> float:
        """The quantile level BCa reads for the normal quantile z: Phi(z0 + (z0 + z) / (1 - a (z0 + z)))."""
        y = self.z0 + z
        denominator = 1.0 - self.accel * y
        if denominator <= 0.0:
            return 1.0 if y > 0 else 0.0
        return _phi(self.z0 + y / denominator)

    def _tail(self, q: float) -> float:
        """The alpha whose lower BCa bound sits at quantile level q: _bca_level(_z(alpha)) == q."""
        if q <= 0.0:
            return 0.0
        if q >= 1.0:
            return 1.0
        w = float(ndtri(q)) - self.z0
        if 1.0 + self.accel * w <= 0.0:
            return 0.0 if w < 0 else 1.0
        return self._alpha(w / (1.0 + self.accel * w) - self.z0)

    def _cdf(self, theta: float, side: Literal["left", "right"]) -> float:
        """Inverse of ``_quantile`` at theta: the largest q with quantile(q) <= theta ("right"), or the
        smallest q with quantile(q) >= theta ("left"); the two differ only where resamples tie at theta."""
        x, b = self.means, len(self.means)
        j = int(np.searchsorted(x, theta, side=side))
        if j == 0 or j == b:
            return 0.0 if j == 0 else 1.0
        return float(((j - 1) + (theta - x[j - 1]) / (x[j] - x[j - 1])) / (b - 1))

    def interval(self, alpha: float) -> tuple[float, float]:
        return self._quantile(self._bca_level(self._z(alpha))), self._quantile(self._bca_level(self._z(1 - alpha)))

    def p_values(self, theta: float) -> tuple[float, float]:
        return self._tail(self._cdf(theta, "right")), 1.0 - self._tail(self._cdf(theta, "left"))

    def n_needed(self, margin: float, alpha: float) -> int | None:
        return n_for_noninferiority(margin, alpha, sd=self.sd, delta=self.mean)


@dataclass(frozen=True)
class _NoSpread:
    """A single pair: nothing to resample, so nothing is known about the spread and no claim is made."""

    def interval(self, alpha: float) -> tuple[float, float]:
        return -math.inf, math.inf

    def p_values(self, theta: float) -> tuple[float, float]:
        return 1.0, 1.0

    def n_needed(self, margin: float, alpha: float) -> int | None:
        return None


def _verdict(low: float, high: float, margin: float) -> Verdict:
    if low > margin:
        return "improvement"
    if low > -margin:
        return "pass"
    if high < -margin:
        return "regression"
    return "inconclusive"


def _at_level(comparison: Comparison, alpha: float) -> Comparison:
    """The comparison decided at one-sided level ``alpha``: interval, p-values, verdict and n_needed."""
    evidence = comparison.evidence
    if evidence is None:
        raise ValueError(f"{comparison.metric}: no evidence to decide from; build comparisons with compare_binary/compare_continuous")
    low, high = evidence.interval(alpha)
    p_noninferior, p_inferior = evidence.p_values(-comparison.margin)
    verdict = _verdict(low, high, comparison.margin)
    n_needed = evidence.n_needed(comparison.margin, alpha) if verdict == "inconclusive" else None
    return replace(comparison, ci_low=low, ci_high=high, alpha=alpha, p_noninferior=p_noninferior, p_inferior=p_inferior,
                   verdict=verdict, n_needed=n_needed)


def _paired(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike) -> tuple[Floats, Floats]:
    b, c = np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    if b.ndim != 1 or c.ndim != 1 or len(b) != len(c):
        raise ValueError(f"{metric}: baseline and candidate must be two equal-length 1-d sequences aligned by case, "
                         f"got shapes {b.shape} and {c.shape}")
    if len(b) == 0:
        raise ValueError(f"{metric}: no paired cases to compare (n=0); a case enters only when it is ok in both runs")
    if not (np.isfinite(b).all() and np.isfinite(c).all()):
        raise ValueError(f"{metric}: scores must be finite numbers (drop cases that were not scored)")
    return b, c


def _undecided(metric: str, kind: Literal["binary", "continuous"], b: Floats, c: Floats, delta: float, margin: float,
               flips_down: int, flips_up: int, method: str, evidence: Evidence) -> Comparison:
    """The parts of a comparison that do not depend on the level; ``_at_level`` fills in the rest."""
    return Comparison(metric=metric, kind=kind, n=len(b), baseline_mean=float(b.mean()), candidate_mean=float(c.mean()), delta=delta,
                      ci_low=math.nan, ci_high=math.nan, margin=margin, alpha=math.nan, p_noninferior=math.nan,
                      p_inferior=math.nan, verdict="inconclusive", flips_down=flips_down, flips_up=flips_up, n_needed=None,
                      method=method, evidence=evidence)


def _check(metric: str, margin: float, alpha: float, max_margin: float = math.inf) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"{metric}: alpha is a one-sided level and must be in (0, 0.5), got {alpha}")
    if not 0 <= margin < max_margin:
        raise ValueError(f"{metric}: margin must be >= 0 (and < {max_margin} for this kind), got {margin}")


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
    b, c = _paired(metric, base, cand)
    if not (np.isin(b, (0.0, 1.0)).all() and np.isin(c, (0.0, 1.0)).all()):
        raise ValueError(f"{metric}: binary scores must be 0 or 1 (use compare_continuous for graded scores)")
    _check(metric, margin, alpha, max_margin=1.0)
    n = len(b)
    down = int(np.count_nonzero((b == 1) & (c == 0)))
    up = int(np.count_nonzero((b == 0) & (c == 1)))
    test = "exact binomial" if up + down < 25 else "chi-square with continuity correction"
    method = (f"Tango score interval and score test for paired proportions [tango1998]; "
              f"McNemar p={mcnemar(down, up):.3g} for delta=0 ({test}) [mcnemar1947]")
    return _at_level(_undecided(metric, "binary", b, c, (up - down) / n, margin, down, up, method, _Discordant(n, up, down)), alpha)


def _resampled_means(d: Floats, n_boot: int, rng: np.random.Generator) -> Floats:
    """Means of ``n_boot`` resamples of ``d`` (cases drawn with replacement), in cache-sized chunks.

    Vectorised: 10000 resamples of 2000 cases take about 0.25 s on one core. 16-bit indices when they
    suffice, as they are drawn faster.
    """
    n = len(d)
    dtype = np.uint16 if n <= 2**16 else np.intp
    rows = max(1, 2**16 // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        out[start:stop] = d[rng.integers(0, n, size=(stop - start, n), dtype=dtype)].mean(axis=1)
    return out


def compare_continuous(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, margin: float, alpha: float = 0.05,
                       n_boot: int = 10000, seed: int = 0, flip_tol: float = 0.0) -> Comparison:
    """Paired bootstrap of the mean difference with a BCa interval [efron-tibshirani1993, ch. 14].

    Cases are resampled with replacement, keeping each case's two scores together. BCa rather than the
    percentile interval: it corrects for the bias and skew of the bootstrap distribution (score
    differences are often skewed and bounded). It copies ``scipy.stats.bootstrap(method="BCa")``'s
    conventions (mid-rank bias correction, jackknife acceleration, linear quantiles) and, run at the
    expanded level of ``_Bootstrap`` [hesterberg2015], agrees with it. The p-values invert the BCa bounds:
    p_noninferior is the level at which the lower bound reaches -m; zero means -m lies below every resample.
    The bootstrap cannot see spread the sample does not show: if every case has the same difference the
    interval has zero width, and with n = 1 we make no claim at all (an unbounded interval).
    """
    b, c = _paired(metric, base, cand)
    _check(metric, margin, alpha)
    if n_boot < 2 or flip_tol < 0:
        raise ValueError(f"{metric}: need n_boot >= 2 and flip_tol >= 0, got n_boot={n_boot}, flip_tol={flip_tol}")
    d = c - b
    n = len(d)
    evidence: Evidence
    if n == 1:
        evidence = _NoSpread()
        method = "one paired case: no spread to resample, no claim made"
    else:
        if np.ptp(d) == 0:  # every resample is the same; skip drawing them
            means, z0, accel, sd = np.array([float(d.mean())]), 0.0, 0.0, 0.0
        else:
            means = np.sort(_resampled_means(d, n_boot, np.random.default_rng(seed)))
            mean = float(d.mean())
            share_below = (np.count_nonzero(means < mean) + np.count_nonzero(means <= mean)) / (2 * n_boot)
            z0 = float(ndtri(min(max(share_below, 0.5 / n_boot), 1 - 0.5 / n_boot)))
            centred = d - mean
            accel = float((centred**3).sum() / (6.0 * float((centred**2).sum()) ** 1.5))
            sd = float(d.std(ddof=1))
        evidence = _Bootstrap(means, z0, accel, sd, n - 1, float(d.mean()))
        method = (f"paired bootstrap of the mean difference, BCa [efron-tibshirani1993] expanded for small n [hesterberg2015], "
                  f"{n_boot} resamples (seed {seed}); p-values by inverting the BCa bounds; paired design [miller2024]")
    flips_down, flips_up = int(np.count_nonzero(d < -flip_tol)), int(np.count_nonzero(d > flip_tol))
    return _at_level(_undecided(metric, "continuous", b, c, float(d.mean()), margin, flips_down, flips_up, method, evidence), alpha)


def _resampled_quantile_differences(b: Floats, c: Floats, q: float, n_boot: int, rng: np.random.Generator) -> Floats:
    """Quantile(c) - quantile(b) over ``n_boot`` paired resamples (cases drawn with replacement), in chunks."""
    n = len(b)
    rows = max(1, 2**16 // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.quantile(c[idx], q, axis=1) - np.quantile(b[idx], q, axis=1)
    return out


def compare_quantile(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike, q: float, margin: float, alpha: float = 0.05,
                     higher_is_better: bool = False, n_boot: int = 10000, seed: int = 0) -> Comparison:
    """Paired comparison of a quantile (latency p95): the difference of the two runs' q-quantiles over the same cases.

    Cases are resampled with replacement, each case's two values together, and the interval is the bootstrap
    percentile interval [efron-tibshirani1993, ch. 13] at Hesterberg's expanded level [hesterberg2015] (as in
    ``compare_continuous``; BCa's jackknife acceleration is unreliable for a quantile, which is not a smooth
    statistic). Oriented so that higher is better: for a latency (``higher_is_better=False``) delta is
    quantile(base) - quantile(cand), and the means reported are the negated quantiles (the report shows them
    as measured). Its error rates at the margin are simulated in tests/test_stats.py.
    """
    b, c = _paired(metric, base, cand)
    _check(metric, margin, alpha)
    if not 0 < q < 1 or n_boot < 2:
        raise ValueError(f"{metric}: need 0 < q < 1 and n_boot >= 2, got q={q}, n_boot={n_boot}")
    sign = 1.0 if higher_is_better else -1.0
    qb, qc = float(np.quantile(b, q)), float(np.quantile(c, q))
    delta = sign * (qc - qb)
    n = len(b)
    evidence: Evidence
    if n == 1:
        evidence, method = _NoSpread(), "one paired case: no spread to resample, no claim made"
    else:
        diffs = np.sort(sign * _resampled_quantile_differences(b, c, q, n_boot, np.random.default_rng(seed)))
        evidence = _Bootstrap(diffs, 0.0, 0.0, float(diffs.std(ddof=1)) * math.sqrt(n), n - 1, delta)
        method = (f"paired bootstrap of the difference of the {q:.0%} quantiles, percentile interval "
                  f"[efron-tibshirani1993] expanded for small n [hesterberg2015], {n_boot} resamples (seed {seed})")
    d = sign * (c - b)
    flips_down, flips_up = int(np.count_nonzero(d < 0)), int(np.count_nonzero(d > 0))
    out = _undecided(metric, "continuous", b, c, delta, margin, flips_down, flips_up, method, evidence)
    return _at_level(replace(out, baseline_mean=sign * qb, candidate_mean=sign * qc), alpha)


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05, weights: Sequence[float] | None = None) -> list[float]:
    """The level Holm's step-down tests each hypothesis at [holm1979], optionally weighted.

    Unweighted, the smallest p-value is tested at alpha / k, the next at alpha / (k - 1), ... until one
    fails; that one and every later one keep the level at which the procedure stopped. Weighted (Holm's
    weighted version, the closed test of weighted Bonferroni tests): hypotheses are taken in order of
    p / w, each tested at alpha w_i / (sum of the weights not yet rejected), so a heavier hypothesis gets a
    larger share of alpha; the family's error rate stays <= alpha for any positive weights. Either way
    p[i] < levels[i] exactly for the hypotheses Holm rejects, and an interval at levels[i] excludes the
    null value exactly then.
    """
    w = [1.0] * len(pvalues) if weights is None else [float(x) for x in weights]
    if len(w) != len(pvalues) or any(not x > 0 or not math.isfinite(x) for x in w):
        raise ValueError(f"need one finite weight > 0 per p-value, got {list(w)} for {len(pvalues)} p-values")
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i] / w[i])
    levels, remaining, stopped = [0.0] * len(pvalues), sum(w), None
    for i in order:
        share = alpha / remaining if stopped is None else stopped
        level = share * w[i]
        if stopped is None and not pvalues[i] < level:
            stopped = share
        levels[i] = level
        remaining -= w[i] if stopped is None else 0.0
    return levels


def decide(comparisons: list[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """Decide several metrics together, each at its Holm level, keeping each family's error rate <= alpha.

    Two Holm families [holm1979]: the non-inferiority p-values (false "pass" claims) and, separately, the
    inferiority p-values (false "regression" claims). A metric whose data lean towards non-inferiority
    (p_noninferior <= p_inferior) cannot be a regression at any level below 0.5, so it takes its level from
    the first family, otherwise from the second; its interval is recomputed at that level and the verdict
    read off it (docs/gate.md), which rejects exactly what Holm rejects. "improvement" is read off the same
    interval: a nested claim inside a shown non-inferiority (the usual switch from non-inferiority to
    superiority) that is not separately adjusted across metrics.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha is a one-sided level and must be in (0, 0.5), got {alpha}")
    noninferior = holm_levels([c.p_noninferior for c in comparisons], alpha)
    inferior = holm_levels([c.p_inferior for c in comparisons], alpha)
    return [_at_level(c, noninferior[i] if c.p_noninferior <= c.p_inferior else inferior[i]) for i, c in enumerate(comparisons)]


def decide_suites(comparisons: list[Comparison], alpha: float = 0.05, critical: Sequence[bool] | None = None,
                  weights: Sequence[float] | None = None) -> list[Comparison]:
    """Decide the suites' primary metrics together, so that every suite decides and none can hide in a pool.

    "Pass" overall is an intersection-union test [berger1982]: every comparison must show non-inferiority on
    its own at the full level alpha, and the chance of a false overall pass stays <= alpha with no adjustment
    (the claim "all are non-inferior" is false as soon as one is not). "Regression" claims are Holm-adjusted
    across the comparisons [holm1979], so the chance of naming any suite regressed when none is stays <= alpha;
    a comparison marked ``critical`` is tested for regression at alpha on its own instead (more power for the
    suites a team cannot lose, at the price of up to alpha more false regressions per critical suite).
    ``weights`` share alpha unequally within the Holm family (weighted Holm): a suite of weight 2 is tested
    at twice the level of one of weight 1. Each comparison's level is chosen as in ``decide`` (by the side
    its data lean to) and its verdict read off its interval at that level.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha is a one-sided level and must be in (0, 0.5), got {alpha}")
    flags = list(critical) if critical is not None else [False] * len(comparisons)
    if len(flags) != len(comparisons):
        raise ValueError(f"critical has {len(flags)} flags for {len(comparisons)} comparisons")
    w = list(weights) if weights is not None else [1.0] * len(comparisons)
    if len(w) != len(comparisons):
        raise ValueError(f"weights has {len(w)} entries for {len(comparisons)} comparisons")
    family = [i for i, flag in enumerate(flags) if not flag]
    holm = dict(zip(family, holm_levels([comparisons[i].p_inferior for i in family], alpha, [w[i] for i in family]),
                    strict=True))
    return [_at_level(c, alpha if c.p_noninferior <= c.p_inferior or flags[i] else holm[i]) for i, c in enumerate(comparisons)]


def overall(comparisons: Sequence[Comparison]) -> Verdict:
    """The worst verdict: regression > inconclusive > pass > improvement (improvement only if every metric improves)."""
    if not comparisons:
        raise ValueError("no comparisons to summarise")
    if all(c.verdict == "improvement" for c in comparisons):
        return "improvement"
    verdicts: list[Verdict] = ["pass" if c.verdict == "improvement" else c.verdict for c in comparisons]
    return max(verdicts, key=_SEVERITY.__getitem__)


def margin_from(baseline_mean: float, absolute: float | None, relative_recovery: float | None) -> float:
    """Non-inferiority margin: ``absolute`` as given, or (1 - r) * |baseline mean| for a recovery r.

    Recovery is how compression results are usually stated (llm-compressor reports "95% recovery",
    r = 0.95): the candidate may lose at most 5% of the baseline's score.
    """
    if (absolute is None) == (relative_recovery is None):
        raise ValueError("give exactly one of an absolute margin or a relative recovery")
    if absolute is not None:
        if not 0 <= absolute < math.inf:
            raise ValueError(f"absolute margin must be a finite number >= 0, got {absolute}")
        return float(absolute)
    assert relative_recovery is not None
    if not 0 <= relative_recovery <= 1:
        raise ValueError(f"relative recovery is a share of the baseline in [0, 1] (0.95 = 95%), got {relative_recovery}")
    return (1.0 - relative_recovery) * abs(baseline_mean)
