"""Several comparisons at once: Holm's step-down and the intersection-union test.

[holm1979] Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat 1979;6:65-70.
[berger1982] Berger RL. Multiparameter hypothesis testing and acceptance sampling. Technometrics 1982;24:295-300.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from evalsvc.stats.comparison import Comparison, Verdict, at_level

_SEVERITY: dict[str, int] = {"pass": 0, "inconclusive": 1, "regression": 2}


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
    return [at_level(c, noninferior[i] if c.p_noninferior <= c.p_inferior else inferior[i]) for i, c in enumerate(comparisons)]


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
    return [at_level(c, alpha if c.p_noninferior <= c.p_inferior or flags[i] else holm[i]) for i, c in enumerate(comparisons)]


def overall(comparisons: Sequence[Comparison]) -> Verdict:
    """The worst verdict: regression > inconclusive > pass > improvement (improvement only if every metric improves)."""
    if not comparisons:
        raise ValueError("no comparisons to summarise")
    if all(c.verdict == "improvement" for c in comparisons):
        return "improvement"
    verdicts: list[Verdict] = ["pass" if c.verdict == "improvement" else c.verdict for c in comparisons]
    return max(verdicts, key=_SEVERITY.__getitem__)
