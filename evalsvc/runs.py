"""Executing runs: suite version x variant fingerprint x slot.

Each response is scored as it arrives and written with the others that arrived in the
same quarter second, so a process killed at any point loses at most the requests in
flight and the answers of that last moment; the next invocation of the same run key
sends only what is missing. A request that fails after its retries makes the
case *errored* (with the cause), and errored cases never enter statistics. Too many
errors fail the run; a run of consecutive errors, or a managed server that died,
trips a breaker that stops it early instead of hammering a dead endpoint.

A run key executes in one process at a time: a second invocation while the first is
still at work reports the run as running elsewhere and sends nothing. A store that
fails mid-run stops the run at once (a StoreError); what was stored is kept and the
run stays resumable, as after a kill.

All suites of one variant share one managed server start.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from tqdm import tqdm

from evalsvc import aggregate, harness, upstream
from evalsvc.config import Config
from evalsvc.endpoint import Completion, EndpointClient
from evalsvc.errors import EndpointError, EvalsvcError, StoreError, SuiteError
from evalsvc.grading import Grader, needs_judge
from evalsvc.identity import content_hash
from evalsvc.scorers import score_output
from evalsvc.serving import Served, serve
from evalsvc.store import repo
from evalsvc.store.schema import CaseResult, MetricPoint, Run, utcnow
from evalsvc.suites import Case, Suite
from evalsvc.variants import VariantConfig, fingerprint, serving_identity


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


FLUSH_S = 0.25  # answers are written together this often: a killed process loses at most the last FLUSH_S of them


@dataclass(frozen=True)
class _Item:
    case: Case
    sample: int
    messages: list[dict[str, str]]
    cache_key: str


ITEM_BATCH = 500  # cases looked up together in the store (finished answers) and the response cache


@dataclass
class _Job:
    """One run in progress: what is left to send and what happened so far."""

    suite: Suite
    run_id: int
    run_ts: datetime
    params: dict[str, Any]
    samples: int
    to_send: int = 0  # answers neither in the store nor in the cache, counted before the server starts
    finished: bool = False  # the run key had already succeeded, or another process is executing it: nothing to do
    busy: str | None = None  # why another process has it
    sent: int = 0
    from_cache: int = 0
    consecutive_errors: int = 0
    breaker_open: bool = False
    last_error: str | None = None
    fatal: str | None = None
    store_lost: SQLAlchemyError | None = None  # a write failed: stop sending, raise once the requests in flight end
    extra: list[aggregate.Aggregate] = field(default_factory=list)  # run-level metrics (judge canary rates)
    harness_metrics: list[str] = field(default_factory=list)  # metric names an lm-eval task reported

    @property
    def needs_server(self) -> bool:
        return not self.finished and not self.fatal and (self.to_send > 0 or self.suite.harness is not None)


class _Writer:
    """Buffers a run's case results and writes them in one transaction at a time (one per row made the
    store, not the endpoint, the bottleneck). A failed write stops the run: ``job.store_lost``."""

    def __init__(self, engine: Engine, job: _Job) -> None:
        self.engine, self.job = engine, job
        self.rows: list[CaseResult] = []
        self.caches: list[tuple[str, str, dict[str, Any]]] = []

    def add(self, row: CaseResult, cache: tuple[str, str, dict[str, Any]] | None) -> None:
        self.rows.append(row)
        if cache is not None:
            self.caches.append(cache)

    def flush(self) -> None:
        if not self.rows or self.job.store_lost is not None:
            return
        rows, caches, self.rows, self.caches = self.rows, self.caches, [], []
        try:
            repo.save_results(self.engine, rows, caches)
        except SQLAlchemyError as exc:
            self.job.store_lost, self.job.breaker_open = exc, True


class Runner:
    """Runs suites against variants and records everything in the store."""

    def __init__(self, cfg: Config, engine: Engine, *, progress: bool | None = None, log_dir: Path | None = None):
        self.cfg = cfg
        self.engine = engine
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log_dir = log_dir or Path(".evalsvc/logs")

    def run(self, suite: Suite, variant: VariantConfig, slot: str | None = None) -> Outcome:
        return self.run_variant([suite], variant, slot)[0]

    def run_variant(self, suites: list[Suite], variant: VariantConfig, slot: str | None = None) -> list[Outcome]:
        """Run every suite on one variant, starting its managed server at most once."""
        fp = fingerprint(variant, self.cfg.generation_for(variant))
        try:
            with repo.RunLocks(self.engine) as locks:
                return self._run_locked(suites, variant, fp, slot, locks)
        except SQLAlchemyError as exc:
            url = self.engine.url.render_as_string(hide_password=True)
            raise StoreError(f"lost the store at {url} during the run: {getattr(exc, 'orig', None) or exc}. "
                             "Results stored before are kept; re-run the same command to resume once it is back") from None

    def _run_locked(self, suites: list[Suite], variant: VariantConfig, fp: str, slot: str | None,
                    locks: repo.RunLocks) -> list[Outcome]:
        jobs = [self._plan(suite, variant, fp, slot, locks) for suite in suites]
        for job in jobs:
            if not job.finished and job.suite.harness is None:
                try:
                    self._answer_from_cache(variant, fp, job)
                except SuiteError as exc:  # the cases could not be read again
                    job.fatal = str(exc)
        try:
            self._generate_all(jobs, variant, fp)
            self._judge_all(jobs)
        except KeyboardInterrupt:
            for job in jobs:
                if not job.finished:
                    self._finish(job, "cancelled", "interrupted by the user; re-run the same command to resume")
            raise
        return [self._outcome_of(job) if job.finished else self._close(job) for job in jobs]

    def _generate_all(self, jobs: list[_Job], variant: VariantConfig, fp: str) -> None:
        pending = [j for j in jobs if j.needs_server]
        if not pending:
            return
        try:
            with serve(variant, self.log_dir) as served:
                for job in pending:
                    if job.suite.harness is not None:
                        self._run_harness(served, variant, job)
                    else:
                        self._generate(served, variant, fp, job)
        except EvalsvcError as exc:  # the server did not start or died: every unfinished run here fails with the cause
            for job in pending:
                job.fatal = job.fatal or str(exc)

    def _judge_all(self, jobs: list[_Job]) -> None:
        judged = [j for j in jobs if not j.finished and not j.fatal and j.suite.model_graded]
        if not judged:
            return
        try:
            rates = Grader(self.cfg, self.engine, self.log_dir).grade([(j.suite, j.run_id) for j in judged])
        except EvalsvcError as exc:
            for job in judged:
                job.fatal = f"judge phase: {exc}"
            return
        for job in judged:
            job.extra = [aggregate.Aggregate(name, "continuous", False, value, n, None, None)
                         for name, (value, n) in rates.get(job.run_id, {}).items() if n]

    def _plan(self, suite: Suite, variant: VariantConfig, fp: str, slot: str | None, locks: repo.RunLocks) -> _Job:
        gen = self.cfg.generation_for(variant)
        params = gen.model_copy(update=suite.header.generation)
        request_params: dict[str, Any] = params.model_dump(exclude={"samples"}, exclude_none=True)
        if not request_params.get("stop"):
            request_params.pop("stop", None)
        for attempt in range(3):  # another process may insert the same variant, suite or run key between our read and write
            try:
                with Session(self.engine) as session, session.begin():
                    repo.record_variant(session, fp, variant.name, variant.family, variant.quantization,
                                        {"serving": serving_identity(variant), "generation": gen.model_dump(mode="json"),
                                         "quantization": variant.quantization, "system_prompt": variant.system_prompt})
                    repo.record_suite(session, suite.version, suite.name, suite.header.model_dump(mode="json"),
                                      ((c.id, c.spec) for c in suite.cases), len(suite.cases))
                    run = repo.claim_run(session, suite.version, suite.name, fp, variant.name,
                                         len(suite.cases) * params.samples, slot)
                    job = _Job(suite, run.id, run.created_at, request_params, params.samples)
                    claimed = run.status
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        if claimed != "succeeded" and not locks.acquire(job.run_id):
            job.finished = True
            job.busy = ("being executed by another evalsvc process right now; not started twice. Wait for it, "
                        "or re-run later to resume it if that process died")
            return job
        with Session(self.engine) as session, session.begin():
            locked = session.get(Run, job.run_id)  # read again under the lock: the other process may have just finished it
            assert locked is not None
            if locked.status == "succeeded":
                job.finished = True
                return job
            locked.status, locked.started_at, locked.attempts, locked.error = "running", utcnow(), locked.attempts + 1, None
        return job

    def _unfinished(self, job: _Job, variant: VariantConfig, fp: str) -> Iterator[_Item]:
        """What the run still lacks, in suite order: made as the cases are read, a batch at a time, never all at once."""
        cases = iter(job.suite.cases)
        while batch := list(islice(cases, ITEM_BATCH)):
            with Session(self.engine) as session:
                done = repo.finished_among(session, job.run_id, [c.id for c in batch])
            for case in batch:
                messages = job.suite.messages(case, variant.system_prompt)
                for s in range(job.samples):
                    if (case.id, s) not in done:
                        request = {"messages": messages, **job.params}
                        sample = s if job.params.get("temperature", 0.0) > 0 else 0
                        key = content_hash({"fp": fp, "request": request, "sample": sample}, 64)
                        yield _Item(case, s, messages, key)

    def _answer_from_cache(self, variant: VariantConfig, fp: str, job: _Job) -> None:
        """Store the answers the response cache has (when the variant uses it) and count what is left to send."""
        items = self._unfinished(job, variant, fp)
        while batch := list(islice(items, ITEM_BATCH)):
            hits = repo.cached_many(self.engine, [i.cache_key for i in batch]) if variant.use_cache else {}
            answered = [self._ok_row(job, i, hits[i.cache_key], cached=True) for i in batch if i.cache_key in hits]
            if answered:  # (samples of a temperature-0 request share one key)
                repo.save_results(self.engine, answered, [])
            job.from_cache += len(answered)
            job.to_send += len(batch) - len(answered)

    @staticmethod
    def _ok_row(job: _Job, item: _Item, resp: dict[str, Any], cached: bool) -> CaseResult:
        status = "generated" if needs_judge(item.case) else "ok"
        return CaseResult(run_id=job.run_id, case_id=item.case.id, sample_index=item.sample, run_ts=job.run_ts,
                          status=status, output=resp["text"], error=None, latency_ms=resp["latency_ms"],
                          prompt_tokens=resp["prompt_tokens"], completion_tokens=resp["completion_tokens"],
                          finish_reason=resp["finish_reason"],
                          scores=score_output(list(item.case.checks), resp["text"], item.case),
                          cached=cached, created_at=utcnow())

    def _run_harness(self, served: Served, variant: VariantConfig, job: _Job) -> None:
        """An lm-eval task: all-or-nothing, so its samples are written together when it returns."""
        spec = job.suite.harness
        assert spec is not None
        try:
            samples, job.harness_metrics = harness.run_task(
                spec, job.suite.path.parent, variant, served, concurrency=self.cfg.concurrency,
                timeout_s=self.cfg.request_timeout_s, max_retries=self.cfg.max_retries)
        except EndpointError as exc:
            job.fatal = str(exc)
            return
        with Session(self.engine) as session, session.begin():
            repo.record_cases(session, job.suite.version, [(s.case_id, s.doc) for s in samples])
            run = session.get(Run, job.run_id)
            assert run is not None
            run.n_cases = len(samples)
            for s in samples:
                session.merge(CaseResult(run_id=job.run_id, case_id=s.case_id, sample_index=0, run_ts=job.run_ts,
                                         status="ok", output=s.output, scores=s.scores, cached=False, created_at=utcnow()))
        job.sent = len(samples)

    def _generate(self, served: Served, variant: VariantConfig, fp: str, job: _Job) -> None:
        client = EndpointClient.for_served(served, self.cfg)
        try:
            asyncio.run(self._send_all(client, served, variant, fp, job))
        finally:
            job.sent = client.requests_sent

    async def _send_all(self, client: EndpointClient, served: Served, variant: VariantConfig, fp: str,
                        job: _Job) -> None:
        writer = _Writer(self.engine, job)
        bar = tqdm(total=job.to_send, desc=f"{job.suite.name} × {variant.name}", unit="case",
                   disable=not self.progress, file=sys.stderr)

        async def one(item: _Item) -> None:
            c: Completion | None = None
            failure: EndpointError | None = None
            try:
                c = await client.complete(client.body(item.messages, job.params))
            except EndpointError as exc:
                failure = exc
            if job.store_lost:
                return
            if failure is not None:
                self._record_error(job, item, failure, served, writer)
            else:
                assert c is not None
                job.consecutive_errors = 0
                resp = {"text": c.text, "latency_ms": c.latency_ms, "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
                writer.add(self._ok_row(job, item, resp, cached=False),
                           (item.cache_key, fp, resp) if variant.use_cache else None)
            bar.update(1)

        queue = self._unfinished(job, variant, fp)  # the cache's answers are in the store now: only misses come out

        async def worker() -> None:  # `concurrency` workers share one iterator: memory stays flat however many cases
            for item in queue:
                if job.breaker_open:
                    return
                await one(item)

        async def tick() -> None:
            while True:
                await asyncio.sleep(FLUSH_S)
                writer.flush()

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, job.to_send))))
        finally:
            ticker.cancel()
            writer.flush()
            bar.close()
            await client.aclose()
        if job.store_lost is not None:
            raise job.store_lost

    def _record_error(self, job: _Job, item: _Item, exc: EndpointError, served: Served, writer: _Writer) -> None:
        job.consecutive_errors += 1
        job.last_error = str(exc)
        writer.add(CaseResult(
            run_id=job.run_id, case_id=item.case.id, sample_index=item.sample, run_ts=job.run_ts,
            status="errored", error=f"{type(exc).__name__}: {exc}", cached=False, created_at=utcnow()), None)
        death = served.failure()
        if death:
            job.fatal, job.breaker_open = death, True
        elif job.consecutive_errors >= self.cfg.circuit_breaker:
            job.breaker_open = True

    def _close(self, job: _Job) -> Outcome:
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
        elif missing > 0:
            status, error = "failed", f"{missing} cases have no result; re-run to resume"
        elif awaiting:
            status, error = "failed", f"{awaiting} answers still await their judge verdict; re-run to resume"
        else:
            status, error = "succeeded", None
        outcome = self._finish(job, status, error)
        outcome.sent, outcome.from_cache = job.sent, job.from_cache
        return outcome

    def _finish(self, job: _Job, status: str, error: str | None) -> Outcome:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, job.run_id)
            assert run is not None
            n = repo.counts(session, job.run_id)
            run.status, run.error, run.finished_at = status, error, utcnow()
            run.n_ok, run.n_errored = n.get("ok", 0), n.get("errored", 0)
            if status == "succeeded":
                specs = harness.metric_specs(job.harness_metrics) if job.suite.harness else job.suite.metrics()
                aggs = aggregate.aggregate(specs, repo.ok_scores(session, job.run_id))
                repo.write_metric_points(session, run, aggs + job.extra)
                if job.params.get("temperature", 0.0) == 0.0:
                    run.output_hash = upstream.output_hash(session, run.id)
                    session.flush()
                    run.upstream_change = upstream.check(session, run)
        return self._outcome_of(job)

    def _outcome_of(self, job: _Job) -> Outcome:
        with Session(self.engine) as session:
            run = session.get(Run, job.run_id)
            assert run is not None
            points = session.scalars(select(MetricPoint).where(MetricPoint.run_id == run.id))
            error = job.busy if job.busy and run.status != "succeeded" else run.error
            return Outcome(run_id=run.id, suite=run.suite_name, variant=run.variant_name, status=run.status,
                           n_cases=run.n_cases, n_ok=run.n_ok, n_errored=run.n_errored, error=error,
                           metrics={p.metric: p.value for p in points}, upstream_change=run.upstream_change)
