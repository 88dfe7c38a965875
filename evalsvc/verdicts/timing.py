"""Speed in the verdict: latency p50/p95, tokens per second and output length, compared paired like quality.

Only answers both runs requested count (a cached answer has no latency of its own run). Each speed
metric is compared per suite on the cases timed in both runs, and pooled over the suites as a
summary. A speed metric decides only where ``gate.margins`` names it, with that margin (e.g.
``latency_p95: {relative: 0.90}``: the candidate keeps at least 90% of the baseline's speed, i.e. is at
most 10% slower); then it joins the suites' deciding comparisons. Otherwise it is shown, compared
against a 10% margin and Holm-adjusted among the speed rows, deciding nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from evalsvc.config import GateConfig, Margin
from evalsvc.stats import speed
from evalsvc.stats.aggregate import quantile
from evalsvc.stats.bootstrap import compare_continuous, compare_quantile
from evalsvc.stats.comparison import Comparison, margin_from
from evalsvc.stats.multiplicity import decide
from evalsvc.store import queries

SHOWN_MARGIN = Margin(relative=0.90)  # for speed rows that decide nothing: 10% slower is called out
MIN_TIMED = 2  # cases timed in both runs below which speed is not compared


def _one(metric: str, base: list[float], cand: list[float], margin: Margin, alpha: float) -> Comparison:
    up = speed.HIGHER_IS_BETTER[metric]
    if metric in speed.LATENCY:
        q = speed.LATENCY[metric]
        m = margin_from(quantile(base, q), margin.absolute, margin.relative)
        return compare_quantile(metric, base, cand, q, m, alpha, higher_is_better=up)
    if not up:
        base, cand = [-v for v in base], [-v for v in cand]
    m = margin_from(sum(base) / len(base), margin.absolute, margin.relative)
    return compare_continuous(metric, base, cand, m, alpha)


def compare_speed(s: Session, runs: dict[str, tuple[Any, Any]], gate: GateConfig, pooled_scope: str
                  ) -> tuple[list[tuple[str, Comparison]], list[tuple[str, Comparison]], list[str]]:
    """(gated per-suite comparisons, shown comparisons already decided, notes) for the runs of each suite."""
    gated: list[tuple[str, Comparison]] = []
    shown: list[tuple[str, Comparison]] = []
    notes: list[str] = []
    pooled: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for name, (base_run, cand_run) in runs.items():
        b = speed.per_case(queries.speed_rows(s, base_run.id))
        c = speed.per_case(queries.speed_rows(s, cand_run.id))
        shared = sorted(b.keys() & c.keys())
        if len(shared) < MIN_TIMED:
            if b or c or queries.cached_share(s, base_run.id) or queries.cached_share(s, cand_run.id):
                notes.append(f"{name}: speed not compared: {len(shared)} cases were requested (not answered from the "
                             "response cache) and answered in both runs; the gate's fresh measurement of an endpoint, "
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
            comparison = _one(metric, bv, cv, own or SHOWN_MARGIN, gate.alpha)
            (gated if own is not None else shown).append((name, comparison))
    shown += [(pooled_scope, _one(m, *pooled[m], gate.margins.get(m) or SHOWN_MARGIN, gate.alpha)) for m in speed.METRICS
              if len(pooled[m][0]) >= MIN_TIMED]  # the summary the dashboard's trade-off view plots
    decided = decide([c for _, c in shown], gate.alpha) if shown else []
    return gated, list(zip([n for n, _ in shown], decided, strict=True)), notes
