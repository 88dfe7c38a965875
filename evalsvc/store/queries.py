"""Read paths over case results and metric points: column selects into plain rows, never entities.

Nothing read here can be written back by accident (a read-only dashboard session stays
read-only), and only the columns a caller needs leave the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from evalsvc.store.latest import BY_NAME, latest_ids
from evalsvc.store.schema import CaseResult, MetricPoint


def ok_cases(session: Session, run_id: int) -> list[Any]:
    """(case_id, sample_index, scores, judge) of each ok answer of a run."""
    return list(session.execute(select(CaseResult.case_id, CaseResult.sample_index, CaseResult.scores, CaseResult.judge)
                                .where(CaseResult.run_id == run_id, CaseResult.status == "ok")).all())


def speed_rows(session: Session, run_id: int) -> list[Any]:
    """(case_id, latency_ms, completion_tokens) of each ok answer the run requested (cached answers were timed by another run)."""
    return list(session.execute(select(CaseResult.case_id, CaseResult.latency_ms, CaseResult.completion_tokens).where(
        CaseResult.run_id == run_id, CaseResult.status == "ok", CaseResult.cached.is_(False))).all())


def case_states(session: Session, run_id: int) -> dict[str, str]:
    """Each case of a run as one state: ok when any sample is ok, else errored when any errored, else its status
    (judge_error, or generated when the judge has not answered yet)."""
    rank = {"ok": 0, "errored": 1}
    out: dict[str, str] = {}
    for cid, status in session.execute(select(CaseResult.case_id, CaseResult.status).where(CaseResult.run_id == run_id)):
        if cid not in out or rank.get(status, 2) < rank.get(out[cid], 2):
            out[cid] = status
    return out


def outputs(session: Session, run_id: int, case_ids: Sequence[str]) -> dict[str, str]:
    """Sample 0's output of each of these cases (the flipped ones a report shows), a chunk of ids at a time."""
    out: dict[str, str] = {}
    ids = list(case_ids)
    for i in range(0, len(ids), 500):
        out.update((cid, text or "") for cid, text in session.execute(select(CaseResult.case_id, CaseResult.output).where(
            CaseResult.run_id == run_id, CaseResult.sample_index == 0, CaseResult.case_id.in_(ids[i:i + 500]))))
    return out


def cached_share(session: Session, run_id: int) -> float:
    """Share of a run's answers that came from the response cache (0 for a run with none)."""
    total, cached = session.execute(select(func.count(), func.sum(case((CaseResult.cached, 1), else_=0))).where(
        CaseResult.run_id == run_id)).one()
    return (cached or 0) / total if total else 0.0


def metric_kinds(session: Session, run_id: int) -> dict[str, tuple[str, bool]]:
    """metric -> (kind, higher_is_better) of a run's metric points."""
    return {m: (k, up) for m, k, up in session.execute(
        select(MetricPoint.metric, MetricPoint.kind, MetricPoint.higher_is_better).where(MetricPoint.run_id == run_id))}


def canary_rates(session: Session, run_id: int) -> dict[str, tuple[float, int]]:
    """Judge check label -> (share of the canaries that fooled its judge in this run, canaries judged)."""
    suffix = "_canary_failure_rate"
    return {m.removesuffix(suffix): (value, n) for m, value, n in session.execute(
        select(MetricPoint.metric, MetricPoint.value, MetricPoint.n).where(MetricPoint.run_id == run_id,
                                                                          MetricPoint.metric.like(f"%{suffix}")))}


def latest_points(session: Session, suite_names: list[str] | None = None) -> list[Any]:
    """The metric points of the latest run of each (suite, variant name), by suite, variant and metric."""
    q = select(MetricPoint.suite_name, MetricPoint.variant_name, MetricPoint.metric, MetricPoint.kind, MetricPoint.value,
               MetricPoint.n, MetricPoint.ci_low, MetricPoint.ci_high).where(MetricPoint.run_id.in_(latest_ids(BY_NAME)))
    if suite_names:
        q = q.where(MetricPoint.suite_name.in_(suite_names))
    return list(session.execute(q.order_by(MetricPoint.suite_name, MetricPoint.variant_name, MetricPoint.metric)).all())
