"""A paired candidate-vs-baseline comparison and its verdict (docs/gate.md).

Both runs score the same cases, so every metric is compared through per-case pairs. Pairing removes the
between-case spread that dominates eval scores [miller2024]. Scores arrive oriented so that higher is
better (lower-is-better metrics already negated).

Each metric is a non-inferiority question with margin m >= 0, every claim one-sided at level alpha:

    improvement   lo > +m
    pass          lo > -m    (rejects H0: delta <= -m, i.e. p_noninferior < alpha)
    regression    hi < -m    (rejects H0: delta >= -m, i.e. p_inferior < alpha)
    inconclusive  otherwise, with the n that would decide it if the observed delta and spread held

[lo, hi] is the two-sided (1 - 2 alpha) interval got by inverting the very test that gives the p-values,
so a bound crosses -m exactly when the p-value crosses alpha: the verdict read off the interval and the
verdict read off the test cannot disagree (``Comparison`` states the invariant). The methods that build
the evidence live beside this module: ``binary`` (Tango), ``bootstrap`` (BCa), ``power`` (sample size),
``multiplicity`` (Holm, intersection-union).

[miller2024] Miller E. Adding error bars to evals. arXiv 2411.00640, 2024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Verdict = Literal["pass", "regression", "improvement", "inconclusive"]
Floats = npt.NDArray[np.float64]
POWER = 0.8  # the power that n_needed is computed for
_SQRT2 = math.sqrt(2.0)


def phi(x: float) -> float:
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


@dataclass(frozen=True)
class NoSpread:
    """A single pair: nothing to resample, so nothing is known about the spread and no claim is made."""

    def interval(self, alpha: float) -> tuple[float, float]:
        return -math.inf, math.inf

    def p_values(self, theta: float) -> tuple[float, float]:
        return 1.0, 1.0

    def n_needed(self, margin: float, alpha: float) -> int | None:
        return None


def verdict_of(low: float, high: float, margin: float) -> Verdict:
    if low > margin:
        return "improvement"
    if low > -margin:
        return "pass"
    if high < -margin:
        return "regression"
    return "inconclusive"


def at_level(comparison: Comparison, alpha: float) -> Comparison:
    """The comparison decided at one-sided level ``alpha``: interval, p-values, verdict and n_needed."""
    evidence = comparison.evidence
    if evidence is None:
        raise ValueError(f"{comparison.metric}: no evidence to decide from; build comparisons with compare_binary/compare_continuous")
    low, high = evidence.interval(alpha)
    p_noninferior, p_inferior = evidence.p_values(-comparison.margin)
    verdict = verdict_of(low, high, comparison.margin)
    n_needed = evidence.n_needed(comparison.margin, alpha) if verdict == "inconclusive" else None
    return replace(comparison, ci_low=low, ci_high=high, alpha=alpha, p_noninferior=p_noninferior, p_inferior=p_inferior,
                   verdict=verdict, n_needed=n_needed)


def paired_arrays(metric: str, base: npt.ArrayLike, cand: npt.ArrayLike) -> tuple[Floats, Floats]:
    b, c = np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    if b.ndim != 1 or c.ndim != 1 or len(b) != len(c):
        raise ValueError(f"{metric}: baseline and candidate must be two equal-length 1-d sequences aligned by case, "
                         f"got shapes {b.shape} and {c.shape}")
    if len(b) == 0:
        raise ValueError(f"{metric}: no paired cases to compare (n=0); a case enters only when it is ok in both runs")
    if not (np.isfinite(b).all() and np.isfinite(c).all()):
        raise ValueError(f"{metric}: scores must be finite numbers (drop cases that were not scored)")
    return b, c


def undecided(metric: str, kind: Literal["binary", "continuous"], b: Floats, c: Floats, delta: float, margin: float,
               flips_down: int, flips_up: int, method: str, evidence: Evidence) -> Comparison:
    """The parts of a comparison that do not depend on the level; ``at_level`` fills in the rest."""
    return Comparison(metric=metric, kind=kind, n=len(b), baseline_mean=float(b.mean()), candidate_mean=float(c.mean()), delta=delta,
                      ci_low=math.nan, ci_high=math.nan, margin=margin, alpha=math.nan, p_noninferior=math.nan,
                      p_inferior=math.nan, verdict="inconclusive", flips_down=flips_down, flips_up=flips_up, n_needed=None,
                      method=method, evidence=evidence)


def check_args(metric: str, margin: float, alpha: float, max_margin: float = math.inf) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"{metric}: alpha is a one-sided level and must be in (0, 0.5), got {alpha}")
    if not 0 <= margin < max_margin:
        raise ValueError(f"{metric}: margin must be >= 0 (and < {max_margin} for this kind), got {margin}")


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
