"""Per-run aggregates of each metric, with confidence intervals, for the time series.

These describe one run on its own. Comparing runs (paired, case by case) is a
different question with different statistics and lives elsewhere.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scipy.special import bdtr, ndtri, stdtrit  # quantiles; scipy.stats costs 2.5 s to import


class MetricKind(Protocol):
    """What aggregation needs to know of a metric (evalsvc.checks.MetricSpec is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def higher_is_better(self) -> bool: ...


@dataclass(frozen=True)
class Aggregate:
    metric: str
    kind: str
    higher_is_better: bool
    value: float
    n: int
    ci_low: float | None
    ci_high: float | None
    sd: float | None = None  # per-case SD (continuous metrics, n >= 2): drift reads it as stored, not from the interval


def wilson_interval(successes: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927, JASA 22:209).

    Unlike the Wald interval it stays inside [0, 1] and keeps near-nominal coverage
    at the small n and extreme rates typical of eval suites (Brown, Cai & DasGupta 2001).
    ``successes`` may be fractional (arena ties count half a win).
    """
    if n == 0:
        return (0.0, 1.0)
    z = float(ndtri(1 - alpha / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float] | tuple[None, None]:
    """Student-t interval for a mean (the CLT interval of Miller 2024, arXiv 2411.00640, eq. 2)."""
    n = len(values)
    if n < 2:
        return (None, None)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 1 - alpha / 2)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    x = sorted(values)
    h = q * (len(x) - 1)
    i = min(int(h), len(x) - 2) if len(x) > 1 else 0
    return x[0] if len(x) == 1 else x[i] + (h - i) * (x[i + 1] - x[i])


def quantile_interval(values: Sequence[float], q: float, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Distribution-free interval for the q-quantile from order statistics (Hahn & Meeker 1991, Statistical
    Intervals, sec. 5.2; Conover 1999, Practical Nonparametric Statistics, sec. 3.2).

    With X ~ Binomial(n, q) counting values below the quantile, [x_(l), x_(u)] covers it with probability
    P(l <= X < u) >= 1 - alpha; l is the largest rank with P(X < l) <= alpha / 2 and u the smallest with
    P(X < u) >= 1 - alpha / 2. Latencies are skewed and heavy-tailed, which is why no normal approximation
    is used. A side that no rank reaches (small n, a tail quantile) is None: p95 has an upper bound at
    this 95% level only from n = 72 on (1 - 0.95^n >= 0.975).
    """
    x, n = sorted(values), len(values)
    if n == 0:
        return (None, None)
    below = [float(bdtr(k - 1, n, q)) if k > 0 else 0.0 for k in range(n + 2)]  # below[k] = P(X <= k - 1) = P(X < k)
    lows = [k for k in range(1, n + 1) if below[k] <= alpha / 2]
    highs = [k for k in range(1, n + 1) if below[k] >= 1 - alpha / 2]
    return (x[max(lows) - 1] if lows else None, x[min(highs) - 1] if highs else None)


def aggregate(specs: Mapping[str, MetricKind], score_rows: Iterable[dict[str, float]]) -> list[Aggregate]:
    """Mean of each metric over the rows that carry it (only ``ok`` cases are passed in)."""
    columns: dict[str, array[float]] = {name: array("d") for name in specs}  # 8 bytes a value
    for row in score_rows:
        for name, value in row.items():
            if name in columns and value is not None:
                columns[name].append(float(value))
    out = []
    for name, values in columns.items():
        if not values:
            continue
        spec = specs[name]
        n = len(values)
        mean = sum(values) / n
        sd = None
        if spec.kind == "binary":
            lo, hi = wilson_interval(sum(values), n)
        else:
            lo, hi = t_interval(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        out.append(Aggregate(name, spec.kind, spec.higher_is_better, mean, n, lo, hi, sd))
    return out
