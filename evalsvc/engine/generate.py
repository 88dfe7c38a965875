"""Generation: a fixed pool of workers sends what a run lacks; each answer is scored as it arrives.

Answers are written with the others that arrived in the same quarter second, so a process
killed at any point loses at most the requests in flight and the answers of that last moment.
A request that fails after its retries, or an answer that cannot be scored or stored, makes the
case *errored* (with the cause: nothing received is dropped in silence); a run of
consecutive errors, or a managed server that died, trips a breaker that stops the run early
instead of hammering a dead endpoint. A store that fails mid-run stops the run at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from evalsvc.config import Config, VariantConfig
from evalsvc.engine import harness
from evalsvc.engine.plan import Item, Job, Planner
from evalsvc.engine.progress import RunBar
from evalsvc.errors import EndpointError, FatalEndpointError
from evalsvc.serving import Served, logprobs
from evalsvc.serving.endpoint import Completion, EndpointClient, storable
from evalsvc.store import repo
from evalsvc.store.schema import CaseResult, Run, utcnow
from evalsvc.suites.lm_eval_samples import SampleError

log = logging.getLogger(__name__)
FLUSH_S = 0.25  # answers are written together this often: a killed process loses at most the last FLUSH_S of them


class Writer:
    """Buffers a run's case results and writes them in one transaction at a time (one per row made the
    store, not the endpoint, the bottleneck). A store that cannot be reached stops the run: ``job.store_lost``.

    A batch refused for any other reason (a value one row holds that the store cannot take) is written again row
    by row, and a row still refused is stored as an *errored* case that says why, so nothing received is dropped
    in silence; should even that fail, the run fails naming how many answers were lost (``job.fatal``)."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine, self.job = engine, job
        self.items: list[tuple[CaseResult, tuple[str, str, dict[str, Any]] | None]] = []
        self.unstored = 0  # answers that could not be stored even as errored cases

    def add(self, row: CaseResult, cache: tuple[str, str, dict[str, Any]] | None) -> None:
        self.items.append((row, cache))

    def flush(self) -> None:
        if not self.items or self.job.store_lost is not None:
            return
        items, self.items = self.items, []
        try:
            repo.save_results(self.engine, [r for r, _ in items], [c for _, c in items if c is not None])
        except OperationalError as exc:  # unreachable, down or locked past its timeout
            self.job.store_lost, self.job.breaker_open = exc, True
        except Exception:  # a value, not the store: find the row it is in and keep the others
            for row, cache in items:
                if self.job.store_lost is None:
                    self._one(row, cache)

    def _one(self, row: CaseResult, cache: tuple[str, str, dict[str, Any]] | None) -> None:
        try:
            repo.save_results(self.engine, [row], [cache] if cache is not None else [])
            return
        except OperationalError as exc:
            self.job.store_lost, self.job.breaker_open = exc, True
            return
        except Exception as exc:
            why = f"the answer could not be stored ({type(exc).__name__}: {str(exc)[:300]}); re-run to ask again"
        errored = CaseResult(run_id=row.run_id, case_id=row.case_id, sample_index=row.sample_index, run_ts=row.run_ts,
                             status="errored", error=why, cached=False, created_at=utcnow())
        try:
            repo.save_results(self.engine, [errored], [])
        except SQLAlchemyError as exc:  # not even a row of known-good values: the store itself fails
            self.job.store_lost, self.job.breaker_open = exc, True
        except Exception as exc:
            self.unstored += 1
            self.job.fatal = (f"{self.unstored} answers received could not be stored, not even as errored cases "
                              f"(last: {type(exc).__name__}: {str(exc)[:300]})")
            self.job.breaker_open = True


class Generator:
    """Sends a run's missing requests through a served variant (or runs its lm-eval task)."""

    def __init__(self, cfg: Config, engine: Engine, planner: Planner, progress: bool | None, log_dir: Path) -> None:
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
            except (EndpointError, SampleError) as exc:  # SampleError: a record lm-eval returned is not of its shape
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
        """Send what the run lacks. A store lost mid-run is raised (the runner names the store); any other
        exception that escapes fails the run with its cause (``job.fatal``), never leaves it ``running``."""
        client = EndpointClient.for_served(served, self.cfg)
        try:
            asyncio.run(self._send_all(client, served, variant, fp, job))
        except SQLAlchemyError:
            raise
        except Exception as exc:  # a bug: the run fails with its cause instead of staying `running`
            log.debug("run %s (%s on %s) stopped by an unexpected error", job.run_id, job.suite.name, variant.name,
                      exc_info=True)
            job.fatal, job.breaker_open = f"stopped by an unexpected error: {type(exc).__name__}: {exc}", True
        finally:
            job.sent = client.requests_sent

    async def _send_all(self, client: EndpointClient, served: Served, variant: VariantConfig, fp: str,
                        job: Job) -> None:
        writer = Writer(self.engine, job)
        total = job.asked
        bar = RunBar(job.suite.name, variant.name, total, total - job.to_send, enabled=self.progress)

        queue = self.planner.unfinished(job, variant, fp)  # the cache's answers are in the store now: only misses come out

        async def worker() -> None:  # `concurrency` workers share one iterator: memory stays flat however many cases
            for item in queue:
                if job.breaker_open:
                    return
                await self.send_one(client, served, variant, fp, job, item, writer, bar)

        async def tick() -> None:
            while True:
                await asyncio.sleep(FLUSH_S)
                writer.flush()

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, job.to_send))))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker  # an exception the ticker died of is raised here, not lost with the task
            writer.flush()
            bar.close()
            await client.aclose()
        if job.store_lost is not None:
            raise job.store_lost

    async def send_one(self, client: EndpointClient, served: Served, variant: VariantConfig, fp: str, job: Job,
                       item: Item, writer: Writer, bar: RunBar) -> None:
        """Send one request and record its answer, or its case as errored with the cause (a run sends every
        request through this, and so does each arm of an interleaved gate: ``engine.interleave``)."""
        try:
            c = await self._complete(client, job, client.body(item.messages, item.params))
            if job.store_lost:
                return
            resp = {"text": c.text, "latency_ms": c.latency_ms, "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
            if job.logprobs:
                resp["logprobs"] = logprobs.compact(c.raw["choices"][0].get("logprobs"), client.api, job.top_logprobs)
            row = self.planner.ok_row(job, item, resp, cached=False)
        except Exception as exc:  # an endpoint error, or one nothing foresaw: the case is errored with it
            if job.store_lost:
                return
            if not isinstance(exc, EndpointError):
                log.debug("case %s of run %s: unexpected error", item.case.id, job.run_id, exc_info=True)
            self._record_error(job, item, exc, served, writer)
            bar.done(errored=1)
            return
        job.consecutive_errors = 0
        writer.add(row, (item.cache_key, fp, resp) if variant.use_cache else None)
        bar.done()

    async def _complete(self, client: EndpointClient, job: Job, body: dict[str, Any]) -> Completion:
        """Send ``body`` asking for the top log-probabilities too (``divergence.top_logprobs``), where the endpoint
        gives them. Whether it does is found out once per run, as the judge client does: until the first answer
        settles it, requests wait; a 400 naming logprobs, then an answer without them, means they are refused (noted,
        never an error). A 400 both ways is this request's fault: it is raised, and settles nothing."""
        asked = logprobs.request_params(client.api, job.top_logprobs)
        if not asked:
            job.logprobs = False
            return await client.complete(body)
        if job.logprobs is None:
            async with job.finding_out:
                if job.logprobs is None:
                    try:
                        c = await client.complete({**body, **asked})
                    except FatalEndpointError as exc:
                        if not logprobs.refuses(exc):
                            raise
                        try:
                            c = await client.complete(body)
                        except FatalEndpointError:
                            raise exc from None
                        job.logprobs = False
                        log.warning("run %s (%s): the endpoint refuses log-probabilities (%s); its answers are "
                                    "stored without them, and its divergence from the baseline is not measured",
                                    job.run_id, job.suite.name, str(exc)[:200])
                        return c
                    job.logprobs = True
                    return c
        return await client.complete({**body, **asked} if job.logprobs else body)

    def _record_error(self, job: Job, item: Item, exc: Exception, served: Served, writer: Writer) -> None:
        job.consecutive_errors += 1
        job.last_error = str(exc)
        writer.add(CaseResult(
            run_id=job.run_id, case_id=item.case.id, sample_index=item.sample, run_ts=job.run_ts,
            status="errored", error=f"{type(exc).__name__}: {storable(str(exc))}", cached=False, created_at=utcnow()), None)
        death = served.failure()
        if death:
            job.fatal, job.breaker_open = death, True
        elif job.consecutive_errors >= self.cfg.circuit_breaker:
            job.breaker_open = True
