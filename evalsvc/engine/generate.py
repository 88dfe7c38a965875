"""Generation: a fixed pool of workers sends what a run lacks; each answer is scored as it arrives.

Answers are written with the others that arrived in the same quarter second, so a process
killed at any point loses at most the requests in flight and the answers of that last moment.
A request that fails after its retries makes the case *errored* (with the cause); a run of
consecutive errors, or a managed server that died, trips a breaker that stops the run early
instead of hammering a dead endpoint. A store that fails mid-run stops the run at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from evalsvc.config import Config, VariantConfig
from evalsvc.engine import harness
from evalsvc.engine.plan import Item, Job, Planner
from evalsvc.engine.progress import RunBar
from evalsvc.errors import EndpointError
from evalsvc.serving import Served
from evalsvc.serving.endpoint import Completion, EndpointClient
from evalsvc.store import repo
from evalsvc.store.schema import CaseResult, Run, utcnow

FLUSH_S = 0.25  # answers are written together this often: a killed process loses at most the last FLUSH_S of them


class Writer:
    """Buffers a run's case results and writes them in one transaction at a time (one per row made the
    store, not the endpoint, the bottleneck). A failed write stops the run: ``job.store_lost``."""

    def __init__(self, engine: Engine, job: Job) -> None:
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


class Generator:
    """Sends a run's missing requests through a served variant (or runs its lm-eval task)."""

    def __init__(self, cfg: Config, engine: Engine, planner: Planner, progress: bool, log_dir: Path) -> None:
        self.cfg, self.engine, self.planner, self.progress, self.log_dir = cfg, engine, planner, progress, log_dir

    def run_harness(self, served: Served, variant: VariantConfig, job: Job) -> None:
        """An lm-eval task: all-or-nothing, so its samples are written together when it returns. lm-eval's own
        bars and messages go to ``<log_dir>/<variant>.<suite>.lm-eval.log``, not to the terminal."""
        spec = job.suite.harness
        assert spec is not None
        log = self.log_dir / f"{variant.name}.{job.suite.name}.lm-eval.log"
        with RunBar(job.suite.name, variant.name, None, enabled=self.progress) as bar:
            try:
                samples, job.harness_metrics = harness.run_task(
                    spec, job.suite.path.parent, variant, served, job.params, concurrency=self.cfg.concurrency,
                    timeout_s=self.cfg.request_timeout_s, max_retries=self.cfg.max_retries, log=log)
            except EndpointError as exc:
                job.fatal = str(exc)
                return
            bar.finish(len(samples), sum(s.error is not None for s in samples))
        with Session(self.engine) as session, session.begin():
            repo.record_cases(session, job.suite.version, [(s.case_id, s.doc) for s in samples])
            run = session.get(Run, job.run_id)
            assert run is not None
            run.n_cases = len(samples)
            for s in samples:
                session.merge(CaseResult(run_id=job.run_id, case_id=s.case_id, sample_index=0, run_ts=job.run_ts,
                                         status="errored" if s.error else "ok", output=None if s.error else s.output,
                                         error=s.error, scores=None if s.error else s.scores, cached=False,
                                         created_at=utcnow()))
        job.sent = len(samples)

    def generate(self, served: Served, variant: VariantConfig, fp: str, job: Job) -> None:
        client = EndpointClient.for_served(served, self.cfg)
        try:
            asyncio.run(self._send_all(client, served, variant, fp, job))
        finally:
            job.sent = client.requests_sent

    async def _send_all(self, client: EndpointClient, served: Served, variant: VariantConfig, fp: str,
                        job: Job) -> None:
        writer = Writer(self.engine, job)
        total = len(job.suite.cases) * job.samples
        bar = RunBar(job.suite.name, variant.name, total, total - job.to_send, enabled=self.progress)

        async def one(item: Item) -> None:
            c: Completion | None = None
            failure: EndpointError | None = None
            try:
                c = await client.complete(client.body(item.messages, item.params))
            except EndpointError as exc:
                failure = exc
            if job.store_lost:
                return
            if failure is not None:
                self._record_error(job, item, failure, served, writer)
                bar.done(errored=1)
                return
            else:
                assert c is not None
                job.consecutive_errors = 0
                resp = {"text": c.text, "latency_ms": c.latency_ms, "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
                writer.add(self.planner.ok_row(job, item, resp, cached=False),
                           (item.cache_key, fp, resp) if variant.use_cache else None)
            bar.done()

        queue = self.planner.unfinished(job, variant, fp)  # the cache's answers are in the store now: only misses come out

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

    def _record_error(self, job: Job, item: Item, exc: EndpointError, served: Served, writer: Writer) -> None:
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
