"""Is a run's self-divergence beyond its series' own noise?

At temperature 0 a run of an unchanged fingerprint should predict every token as the previous run did, but batched
kernels (vLLM, hosted APIs) are not batch-invariant: each run's log-probabilities move a little, so the mean top-k
KL from the previous run of the series (its *self-divergence*, ``stats.divergence``) is small and positive, at a level
each series shows for itself. A model swapped behind the same URL moves it by orders of magnitude (docs/divergence.md:
Q8_0 0.004 nats from F16 on the demo variants, Q4_0 0.2), on its first run, even where the answers stay the same.

The rule: the series' earlier unflagged self-divergences x_1..x_n (n >= ``MIN_HISTORY``; the newest ``HISTORY``) are
taken as log-normal, and a run is flagged when its value x lies above the one-sided (1 - level) prediction bound for
one more observation,

    log x  >  mean(log x_i) + WIDEN · t_{n-1, 1-level} · sd(log x_i) · sqrt(1 + 1/n)

(Meeker, Hahn and Escobar, *Statistical Intervals*, 2nd ed., Wiley 2017, ch. 4: prediction bound for one future
observation of a normal sample, applied to the logs), and above ``MIN_KLD``. With WIDEN = 1 a stable log-normal run is
flagged with probability exactly ``level``; the caller takes level = alpha / 40 (Bonferroni over 20 looks, alpha split
with the moved-outputs test). Real self-divergences are not quite log-normal: simulated from token-level batch jitter
(``bench/simulate_self_divergence.py``, docs/divergence.md) their logs stay right-skewed (skew 0.3 to 0.4) and
consecutive ones share a run (lag-1 correlation about 0.2), and the unwidened bound flagged 5 to 6% of stable series
over 20 looks against the 2.5% it promises. WIDEN = 1.5 is calibrated on that simulation: at most 1% there, while a
swap ten times the noise is still flagged on its first run.

``MIN_KLD`` is a floor of practical size: a deterministic server's history is all zeros (no spread to learn), where
any change of the stored 4-decimal log-probabilities would otherwise be a flag; below a quarter of Q8_0's measured
divergence from F16, a change is not called a swap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_HISTORY = 5  # earlier self-divergences a series needs before a run can be flagged (it only learns before)
HISTORY = 50  # the newest unflagged self-divergences that make the series' noise (a slow change of noise is followed)
MIN_KLD = 0.001  # nats: never flagged below (a quarter of Q8_0's kld from F16 on the demo variants)
WIDEN = 1.5  # the normal-theory bound's width is multiplied by this (calibrated by simulation, see above)
TINY = 1e-6  # nats: a zero self-divergence (identical stored log-probabilities) counts as this on the log scale


@dataclass(frozen=True)
class Excess:
    value: float  # this run's self-divergence (nats)
    bound: float  # the series' one-sided prediction bound at the level, never below MIN_KLD
    typical: float  # the geometric mean of the history (its zeros as TINY)
    history: int  # earlier self-divergences used
    flagged: bool


def excess(value: float, history: Sequence[float], level: float, widen: float = WIDEN) -> Excess | None:
    """``value`` against the prediction bound of ``history`` at ``level`` (its width times ``widen``); None while the
    history is shorter than MIN_HISTORY (the series is still learning its noise)."""
    from scipy.stats import t

    if len(history) < MIN_HISTORY:
        return None
    logs = [math.log(max(x, TINY)) for x in history]
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((y - mean) ** 2 for y in logs) / (n - 1))
    bound = max(MIN_KLD, math.exp(mean + widen * float(t.ppf(1 - level, n - 1)) * sd * math.sqrt(1 + 1 / n)))
    return Excess(value, bound, math.exp(mean), n, value > bound)
