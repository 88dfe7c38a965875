"""Metric time series from the store, and drift verdicts on them.

A series is one variant fingerprint x suite version x metric, in run order: a new checkpoint
or an edited suite starts a new series, so drift is always a variant moving against its own
history under unchanged conditions (anything else is a new series, not drift).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any

from scipy.special import stdtrit
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config.drift import RUN_LEVEL
from evalsvc.stats import drift, speed
from evalsvc.store.latest import rejudged_ids
from evalsvc.store.schema import CaseResult, MetricPoint


@dataclass(frozen=True)
class Series:
    variant: str
    fingerprint: str
    suite: str
    suite_version: str
    metric: str
    kind: str
    higher_is_better: bool
    points: tuple[Any, ...]  # rows: run_ts, run_id, value, n, ci_low, ci_high, sd
    # quality metrics: run id -> each ok case's value (its samples averaged), for the fixed-case noise model
    cases: Mapping[int, Mapping[str, float]] = field(default_factory=dict, compare=False)


def load(engine: Engine, suites: list[str] | None = None, variants: list[str] | None = None,
         metrics: list[str] | None = None) -> list[Series]:
    """The variants' series; run-level points (a judge's canary failure rate) are the judge's, never a variant's, and a
    re-judged run (its source's answers judged again, ``engine/rejudge.py``) is no new point of its variant's series."""
    q = select(MetricPoint.variant_name, MetricPoint.variant_fingerprint, MetricPoint.suite_name, MetricPoint.suite_version,
               MetricPoint.metric, MetricPoint.kind, MetricPoint.higher_is_better, MetricPoint.run_ts, MetricPoint.run_id,
               MetricPoint.value, MetricPoint.n, MetricPoint.ci_low, MetricPoint.ci_high, MetricPoint.sd
               ).where(MetricPoint.run_id.not_in(rejudged_ids())).order_by(MetricPoint.run_ts, MetricPoint.run_id)
    if suites:
        q = q.where(MetricPoint.suite_name.in_(suites))
    if variants:
        q = q.where(MetricPoint.variant_name.in_(variants))
    if metrics:
        q = q.where(MetricPoint.metric.in_(metrics))
    groups: dict[tuple[str, str, str], list[Any]] = {}
    with Session(engine) as s:
        for p in s.execute(q):
            groups.setdefault((p.variant_fingerprint, p.suite_version, p.metric), []).append(p)
    out = []
    for (fp, version, metric), pts in groups.items():
        if metric.endswith(RUN_LEVEL):
            continue
        last = pts[-1]
        out.append(Series(last.variant_name, fp, last.suite_name, version, metric, last.kind, last.higher_is_better, tuple(pts)))
    return sorted(out, key=lambda x: (x.suite, x.variant, x.metric))


def with_cases(engine: Engine, series: list[Series]) -> list[Series]:
    """The same series, the quality ones (pass rates and continuous scores, not speed) with each run's case values:
    what the fixed-case noise model reads."""
    fixed = [x for x in series if _fixed_cases(x)]
    with Session(engine) as s:
        cases = _case_values(s, sorted({p.run_id for x in fixed for p in x.points}), {x.metric for x in fixed})
    return [replace(x, cases={p.run_id: cases[p.run_id][x.metric] for p in x.points if x.metric in cases.get(p.run_id, {})})
            if _fixed_cases(x) else x for x in series]


def _fixed_cases(series: Series) -> bool:
    return series.kind == "binary" or series.metric not in speed.METRICS


def _case_values(session: Session, run_ids: list[int], metrics: set[str]) -> dict[int, dict[str, dict[str, float]]]:
    """run id -> metric -> case id -> the case's value (the mean over its ok samples), for the metrics named."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for chunk in range(0, len(run_ids), 500):
        rows = session.execute(select(CaseResult.run_id, CaseResult.case_id, CaseResult.scores)
                               .where(CaseResult.run_id.in_(run_ids[chunk:chunk + 500]), CaseResult.status == "ok")
                               .order_by(CaseResult.run_id, CaseResult.case_id).execution_options(yield_per=5000))
        for (run_id, case_id), group in groupby(rows, key=lambda r: (r.run_id, r.case_id)):
            samples = [r.scores or {} for r in group]
            for metric in metrics:
                values = [x[metric] for x in samples if x.get(metric) is not None]
                if values:
                    out.setdefault(run_id, {}).setdefault(metric, {})[case_id] = sum(values) / len(values)
    return out


def _sd(p: Any) -> float | None:
    """The per-case SD as stored; rows stored before it was (sd is None) recover it exactly from their Student-t
    interval, half-width = t(n - 1, 0.975) * sd / sqrt(n)."""
    if p.sd is not None:
        return float(p.sd)
    if p.ci_low is None or p.ci_high is None or p.n < 2:
        return None
    return (p.ci_high - p.ci_low) / (2 * float(stdtrit(p.n - 1, 0.975))) * math.sqrt(p.n)


def points_of(series: Series) -> list[drift.Point]:
    """The detector's points. Quality series carry their cases' values where every run has them: a series re-runs
    fixed cases, so its mean moves from run to run only by each case's own run-to-run noise (the fixed-case noise
    model, `drift.design_effects`), for pass rates and continuous scores alike. Speed series take their SD from the
    spread of the run values themselves (a percentile's interval is not a t interval, and run-to-run load moves
    latency far more than the within-run spread says)."""
    binary = series.kind == "binary"
    own_sd = not binary and series.metric not in speed.METRICS
    fixed = _fixed_cases(series) and all(p.run_id in series.cases for p in series.points if p.n)
    cases = series.cases if fixed else {}
    return [drift.Point(value=p.value, n=p.n, kind="binary" if binary else "continuous", sd=_sd(p) if own_sd else None,
                        cases=cases.get(p.run_id)) for p in series.points]


def check(series: Series, warmup: int = 5, alpha: float = 0.05, start: int = 0) -> drift.Scan:
    return drift.scan(points_of(series), warmup=warmup, alpha=alpha, higher_is_better=series.higher_is_better, start=start)


def statistic_path(series: Series, scan: drift.Scan, warmup: int = 5, alpha: float = 0.05) -> list[float | None]:
    """The detector's statistic at each point as a live monitor saw it (None before a regime's first look): each regime
    runs from its start (the scan's start, then each alarm point) up to and including the point where it alarmed."""
    pts = points_of(series)
    alarms = [a.index for a in scan.alarms]
    out: list[float | None] = [None] * len(pts)
    for k, lo in enumerate([scan.start, *alarms]):
        hi = alarms[k] if k < len(alarms) else len(pts) - 1
        for t in range(lo + warmup, hi + 1):
            out[t] = drift.detect(pts[lo:t + 1], warmup=warmup, alpha=alpha, higher_is_better=series.higher_is_better).statistic
    return out
