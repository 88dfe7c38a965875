"""Speed in the verdict: latency p50/p95, tokens per second and output length, compared paired like quality.

Only answers both runs requested count (a cached answer has no latency of its own run). Each speed
metric is compared per suite on the cases timed in both runs, and pooled over the suites as a
summary. A speed metric decides only where ``gate.margins`` names it, with that margin (e.g.
``latency_p95: {relative: 0.90}``: the candidate keeps at least 90% of the baseline's speed, i.e. is at
most 10% slower); then it joins the suites' deciding comparisons, and a suite where it cannot be measured
on both runs (answers from the response cache, an lm-eval task, an imported run: no timing of its own)
is *undecided* for it: the gate cannot pass it. Otherwise it is shown, compared against a 10% margin and
Holm-adjusted among the speed rows, deciding nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from evalsvc.config import GateConfig, Margin
from evalsvc.stats import speed
from evalsvc.stats.bootstrap import compare_continuous, compare_quantile
from evalsvc.stats.comparison import Comparison, margin_from
from evalsvc.stats.multiplicity import decide
from evalsvc.stats.signed_rank import compare_shift
from evalsvc.store import queries

SHOWN_MARGIN = Margin(relative=0.90)  # for speed rows that decide nothing: 10% slower is called out
MIN_TIMED = 2  # cases timed in both runs below which speed is not compared
CACHE_FIX = ("measure both now without the response cache: drop --reuse (a gate with a deciding speed metric "
             "requests every answer of both arms), or set cache: false on the variants")


def compare_metric(metric: str, base: list[float], cand: list[float], margin: Margin, alpha: float) -> Comparison:
    """One speed metric, paired: percentiles by ``compare_quantile``, tokens_per_s by the signed-rank shift (robust to
    stalled requests), output_tokens by the bootstrap of the mean."""
    up = speed.HIGHER_IS_BETTER[metric]
    if metric in speed.LATENCY:
        return compare_quantile(metric, base, cand, speed.LATENCY[metric], margin.absolute, alpha, higher_is_better=up,
                                relative=margin.relative)
    if not up:
        base, cand = [-v for v in base], [-v for v in cand]
    m = margin_from(sum(base) / len(base), margin.absolute, margin.relative)
    if metric == speed.TOKENS_PER_S:  # heavy-tailed under stalls: ranks, not the mean (stats/signed_rank.py)
        return compare_shift(metric, base, cand, m, alpha)
    return compare_continuous(metric, base, cand, m, alpha)


def _untimed(name: str, cached: tuple[float, float], timed: int) -> str:
    """Why a suite's speed cannot be compared on its runs."""
    if any(cached):
        return (f"{name}: speed not measured: {cached[0]:.0%} of the baseline's and {cached[1]:.0%} of the candidate's "
                f"answers came from the response cache (no latency of this run), {timed} cases were timed in both runs")
    return f"{name}: speed not measured: {timed} cases were timed in both runs (an lm-eval task or imported results carry no latency)"


def compare_speed(s: Session, runs: dict[str, tuple[Any, Any]], gate: GateConfig, pooled_scope: str
                  ) -> tuple[list[tuple[str, Comparison]], list[tuple[str, Comparison]], list[str], list[tuple[str, str]]]:
    """(gated per-suite comparisons, shown comparisons already decided, notes, undecided) for the runs of each suite.

    ``undecided`` holds (suite, reason) for each suite where a deciding speed metric (one named in
    ``gate.margins``) could not be measured on both runs: no timed pairs, or answers from the response cache."""
    gated: list[tuple[str, Comparison]] = []
    shown: list[tuple[str, Comparison]] = []
    notes: list[str] = []
    undecided: list[tuple[str, str]] = []
    deciding = [m for m in speed.METRICS if m in gate.margins]
    pooled: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for name, (base_run, cand_run) in runs.items():
        b = speed.per_case(queries.speed_rows(s, base_run.id))
        c = speed.per_case(queries.speed_rows(s, cand_run.id))
        shared = sorted(b.keys() & c.keys())
        cached = (queries.cached_share(s, base_run.id), queries.cached_share(s, cand_run.id))
        if deciding and (any(cached) or len(shared) < MIN_TIMED):
            undecided.append((name, f"{', '.join(deciding)} decide (gate.margins) but {_untimed(name, cached, len(shared))}"
                                    f"; {CACHE_FIX}"))
        if len(shared) < MIN_TIMED:
            if (b or c or any(cached)) and not deciding:  # (a deciding metric says so in ``undecided`` instead)
                notes.append(f"{_untimed(name, cached, len(shared))}; the gate's fresh measurement of an endpoint, "
                             "or variants with cache: false, time every answer")
            continue
        for metric in speed.METRICS:
            ids = [cid for cid in shared if speed.values(b, metric, [cid]) and speed.values(c, metric, [cid])]
            if len(ids) < MIN_TIMED:
                continue
            bv, cv = speed.values(b, metric, ids), speed.values(c, metric, ids)
            pooled[metric][0].extend(bv)
            pooled[metric][1].extend(cv)
            own = gate.margins.get(metric)
            comparison = compare_metric(metric, bv, cv, own or SHOWN_MARGIN, gate.alpha)
            # a deciding metric on partly cached runs is undecided (above) and only shown, never decided on a subset
            (gated if own is not None and not any(cached) else shown).append((name, comparison))
    shown += [(pooled_scope, compare_metric(m, *pooled[m], gate.margins.get(m) or SHOWN_MARGIN, gate.alpha)) for m in speed.METRICS
              if len(pooled[m][0]) >= MIN_TIMED]  # the summary the dashboard's trade-off view plots
    decided = decide([c for _, c in shown], gate.alpha) if shown else []
    return gated, list(zip([n for n, _ in shown], decided, strict=True)), notes, undecided
