"""Closing a run: its status from what is stored, its metric points, and the upstream-change check.

Too many errored cases fail the run (never a regression); a run that succeeded gets one metric
point per metric (mean and interval over its ok cases), its speed points (latency p50/p95, tokens
per second, output length, over the answers it requested; ``evalsvc.stats.speed``) and, at temperature 0,
the hash of its outputs that the upstream-change check compares."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import Config
from evalsvc.engine import upstream
from evalsvc.engine.plan import Job
from evalsvc.stats import aggregate, speed
from evalsvc.store import queries, repo
from evalsvc.store.schema import MetricPoint, Run, utcnow
from evalsvc.suites.harness import metric_specs

PARTIAL = ("a sequential gate asks the cases in looks and stops once its verdict is decided; `evalsvc run -s SUITE -v "
           "VARIANT --slot <this run's slot>` completes it, asking no case twice")


@dataclass
class Outcome:
    run_id: int
    suite: str
    variant: str
    status: str
    n_cases: int
    n_ok: int = 0
    n_errored: int = 0
    sent: int = 0
    from_cache: int = 0
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    upstream_change: str | None = None


class Finisher:
    """Decides and records how runs end."""

    def __init__(self, cfg: Config, engine: Engine) -> None:
        self.cfg, self.engine = cfg, engine

    def close(self, job: Job) -> Outcome:
        with Session(self.engine) as session:
            n = repo.counts(session, job.run_id)
            causes = repo.error_causes(session, job.run_id)
            run = session.get(Run, job.run_id)
            assert run is not None
            total = run.n_cases
        n_err = n.get("errored", 0) + n.get("judge_error", 0)
        cause = "; ".join(f"{c} (x{k})" for c, k in causes)
        missing = total - sum(n.values())
        awaiting = n.get("generated", 0)
        if job.fatal:
            status, error = "failed", f"{job.fatal}; {missing} cases not attempted, re-run to resume"
        elif job.breaker_open:
            status, error = "failed", (f"endpoint failing: {self.cfg.circuit_breaker} requests in a row failed, "
                                       f"last: {job.last_error}; {missing} cases not attempted. "
                                       "Fix the endpoint and re-run the same command to resume")
        elif total and n_err / total > self.cfg.max_error_rate:
            status, error = "failed", (f"{n_err}/{total} cases errored (limit {self.cfg.max_error_rate:.0%}): {cause}. "
                                       "Re-run to retry them")
        elif missing > 0 and job.only is not None and not awaiting:  # a sequential gate's look: the rest is not asked yet
            status, error = "cancelled", (f"{missing} cases not asked: {PARTIAL}")
        elif missing > 0:
            status, error = "failed", f"{missing} cases have no result; re-run to resume"
        elif awaiting:
            status, error = "failed", f"{awaiting} answers still await their judge verdict; re-run to resume"
        else:
            status, error = "succeeded", None
        outcome = self.finish(job, status, error)
        outcome.sent, outcome.from_cache = job.sent, job.from_cache
        return outcome

    def finish(self, job: Job, status: str, error: str | None) -> Outcome:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, job.run_id)
            assert run is not None
            n = repo.counts(session, job.run_id)
            run.status, run.error, run.finished_at = status, error, utcnow()
            run.n_ok, run.n_errored = n.get("ok", 0), n.get("errored", 0)
            if status == "succeeded":
                specs = metric_specs(job.harness_metrics) if job.suite.harness else job.suite.metrics()
                aggs = aggregate.aggregate(specs, repo.ok_scores(session, job.run_id))
                timed = [] if job.suite.harness else speed.aggregates(speed.per_case(queries.speed_rows(session, job.run_id)))
                repo.write_metric_points(session, run, aggs + timed + job.extra)
                if job.params.get("temperature", 0.0) == 0.0:
                    run.output_hash = upstream.output_hash(session, run.id)
                    session.flush()
                    run.upstream_change = upstream.check(session, run, self.cfg.drift.upstream_alpha)
        return self.outcome_of(job)

    def outcome_of(self, job: Job) -> Outcome:
        with Session(self.engine) as session:
            run = session.get(Run, job.run_id)
            assert run is not None
            points = session.scalars(select(MetricPoint).where(MetricPoint.run_id == run.id))
            error = job.busy if job.busy and run.status != "succeeded" else run.error
            return Outcome(run_id=run.id, suite=run.suite_name, variant=run.variant_name, status=run.status,
                           n_cases=run.n_cases, n_ok=run.n_ok, n_errored=run.n_errored, error=error,
                           metrics={p.metric: p.value for p in points}, upstream_change=run.upstream_change)
