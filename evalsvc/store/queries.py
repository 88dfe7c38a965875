"""Read paths over case results and metric points: column selects into plain rows, never entities.

Nothing read here can be written back by accident (a read-only dashboard session stays
read-only), and only the columns a caller needs leave the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from evalsvc.store.latest import BY_NAME, latest_ids
from evalsvc.store.schema import Alert, CaseResult, Firing, MetricPoint, Run


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
               MetricPoint.n, MetricPoint.ci_low, MetricPoint.ci_high, MetricPoint.suite_version,
               MetricPoint.variant_fingerprint, MetricPoint.run_id, MetricPoint.run_ts).where(
        MetricPoint.run_id.in_(latest_ids(BY_NAME)))
    if suite_names:
        q = q.where(MetricPoint.suite_name.in_(suite_names))
    return list(session.execute(q.order_by(MetricPoint.suite_name, MetricPoint.variant_name, MetricPoint.metric)).all())


def newest_attempts(session: Session) -> list[Any]:
    """The newest run of each (suite, variant name), any status: its version, fingerprint, status and case counts."""
    return list(session.execute(select(Run.id, Run.suite_name, Run.suite_version, Run.variant_name, Run.variant_fingerprint,
                                       Run.status, Run.n_cases, Run.n_ok, Run.n_errored).where(
        Run.id.in_(latest_ids(BY_NAME, status=None))).order_by(Run.suite_name, Run.variant_name)).all())


def open_alert_counts(session: Session) -> dict[str, int]:
    """kind -> how many alerts of that kind are open."""
    return dict(session.execute(select(Alert.kind, func.count()).where(Alert.status == "open").group_by(Alert.kind)).all())


def firing_counts(session: Session) -> list[Any]:
    """(schedule, status, count) of every recorded firing."""
    return list(session.execute(select(Firing.schedule, Firing.status, func.count().label("count"))
                                .group_by(Firing.schedule, Firing.status).order_by(Firing.schedule, Firing.status)).all())


def last_finished_firings(session: Session) -> list[Any]:
    """The newest finished firing of each schedule: schedule, slot, status, started_at, finished_at."""
    newest = select(func.max(Firing.id)).where(Firing.finished_at.is_not(None)).group_by(Firing.schedule)
    return list(session.execute(select(Firing.schedule, Firing.slot, Firing.status, Firing.started_at, Firing.finished_at)
                                .where(Firing.id.in_(newest)).order_by(Firing.schedule)).all())


RUN_FIELDS = (Run.id, Run.suite_name, Run.suite_version, Run.variant_name, Run.variant_fingerprint, Run.slot, Run.status,
              Run.created_at, Run.started_at, Run.finished_at, Run.n_cases, Run.n_ok, Run.n_errored, Run.attempts, Run.error,
              Run.upstream_change, Run.evalsvc_version)
CASE_FIELDS = (CaseResult.case_id, CaseResult.sample_index, CaseResult.status, CaseResult.output, CaseResult.error,
               CaseResult.latency_ms, CaseResult.prompt_tokens, CaseResult.completion_tokens, CaseResult.finish_reason,
               CaseResult.scores, CaseResult.judge, CaseResult.cached, CaseResult.created_at)
POINT_FIELDS = (MetricPoint.metric, MetricPoint.kind, MetricPoint.higher_is_better, MetricPoint.value, MetricPoint.n,
                MetricPoint.ci_low, MetricPoint.ci_high)


def _run_filters(q: Any, suite: str | None = None, variant: str | None = None, status: str | None = None,
                 since: datetime | None = None, run_id: int | None = None) -> Any:
    conds = [c for c in (Run.suite_name == suite if suite else None, Run.variant_name == variant if variant else None,
                         Run.status == status if status else None, Run.created_at >= since if since else None,
                         Run.id == run_id if run_id is not None else None) if c is not None]
    return q.where(*conds) if conds else q


def run_list(session: Session, suite: str | None = None, variant: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[Any]:
    """Runs newest first (every status), with their counts and error: `evalsvc runs list`."""
    return list(session.execute(_run_filters(select(*RUN_FIELDS), suite, variant, status).order_by(Run.id.desc())
                                .limit(limit)).all())


def run_row(session: Session, run_id: int) -> Any | None:
    """One run's row, or None when the store has no run of that id."""
    return session.execute(select(*RUN_FIELDS).where(Run.id == run_id)).first()


def run_points(session: Session, run_id: int) -> list[Any]:
    """A run's metric points (value, n, interval), by metric."""
    return list(session.execute(select(*POINT_FIELDS).where(MetricPoint.run_id == run_id).order_by(MetricPoint.metric)).all())


def run_cases(session: Session, run_id: int) -> list[Any]:
    """Every case result of a run (each sample), by case id and sample."""
    return list(session.execute(select(*CASE_FIELDS).where(CaseResult.run_id == run_id)
                                .order_by(CaseResult.case_id, CaseResult.sample_index)).all())


def export_rows(session: Session, what: str, suite: str | None = None, variant: str | None = None,
                since: datetime | None = None, run_id: int | None = None, chunk: int = 1000) -> Iterator[Any]:
    """Case results (``what`` "cases") or metric points ("points") of the runs these filters select, with each run's
    identity, streamed ``chunk`` rows at a time in run, then case (or metric) order: `evalsvc export`."""
    ident = (Run.suite_name, Run.suite_version, Run.variant_name, Run.variant_fingerprint)
    if what == "cases":
        q = select(CaseResult.run_id, CaseResult.run_ts, *ident, *CASE_FIELDS).join(Run, Run.id == CaseResult.run_id).order_by(
            CaseResult.run_id, CaseResult.case_id, CaseResult.sample_index)
    else:
        q = select(MetricPoint.run_id, MetricPoint.run_ts, *ident, *POINT_FIELDS).join(Run, Run.id == MetricPoint.run_id).order_by(
            MetricPoint.run_id, MetricPoint.metric)
    yield from session.execute(_run_filters(q, suite, variant, since=since, run_id=run_id).execution_options(
        yield_per=chunk))
