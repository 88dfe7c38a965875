"""Executing runs: suite version x variant fingerprint x slot, stage by stage.

plan (claim, lock, answer from the cache) -> generate (or an lm-eval task) -> judge phase ->
finish. All suites of one variant share one managed server start. ``run_pair`` runs two variants' suites with
their requests interleaved (the gate's two arms: ``engine.interleave``). See each stage's module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from evalsvc.config import Config, VariantConfig
from evalsvc.engine.finish import Finisher, Outcome
from evalsvc.engine.generate import Generator
from evalsvc.engine.interleave import Side, interleaved
from evalsvc.engine.judge_phase import Grader
from evalsvc.engine.plan import CacheUse, Job, Planner
from evalsvc.errors import EvalsvcError, StoreError, SuiteError
from evalsvc.serving import Served, serve
from evalsvc.stats import aggregate
from evalsvc.store.locks import RunLocks
from evalsvc.suites import Suite

__all__ = ["Outcome", "Runner"]

Arm = tuple[list[Suite], VariantConfig, str | None]  # what one arm of ``run_pair`` runs: suites, variant, slot


class Runner:
    """Runs suites against variants and records everything in the store."""

    def __init__(self, cfg: Config, engine: Engine, *, progress: bool | None = None, log_dir: Path | None = None,
                 cache: CacheUse = "variant", seed_offset: int = 0, lock_wait_s: float = 0.0,
                 held: dict[str, Served] | None = None):
        """``cache``: "variant" reads the response cache where the variant uses it; "pinned" only where its
        fingerprint pins the checkpoint bytes (local files: an endpoint can change behind its name); "off" never.
        ``seed_offset`` is added to every request's seed (an A/A gate's second run draws fresh samples).
        ``lock_wait_s``: how long to wait for a run key another process is executing before standing back.
        ``held``: servers already started, by variant name, used instead of starting one per call (a sequential
        gate's looks keep one server per variant for the whole gate)."""
        self.cfg = cfg
        self.engine = engine
        self.progress = (True if sys.stderr.isatty() else None) if progress is None else progress  # None: plain lines
        self.log_dir = log_dir or Path(".evalsvc/logs")
        self.planner = Planner(cfg, engine, cache, seed_offset, lock_wait_s)
        self.finisher = Finisher(cfg, engine)
        self.held = held or {}

    def _serve(self, stack: ExitStack, variant: VariantConfig) -> Served:
        held = self.held.get(variant.name)
        return held if held is not None else stack.enter_context(serve(variant, self.log_dir))

    def run(self, suite: Suite, variant: VariantConfig, slot: str | None = None) -> Outcome:
        return self.run_variant([suite], variant, slot)[0]

    def run_variant(self, suites: list[Suite], variant: VariantConfig, slot: str | None = None,
                    only: dict[str, frozenset[str]] | None = None) -> list[Outcome]:
        """Run every suite on one variant, starting its managed server at most once (``only``: as ``run_pair``)."""
        fp = self.cfg.fingerprint(variant.name)
        try:
            with RunLocks(self.engine) as locks:
                jobs = self._planned(suites, variant, fp, slot, locks, only)
                with _cancelling(jobs, self.finisher):
                    self._generate_all(jobs, variant, fp)
                    self._judge_all(jobs)
                return self._closed(jobs)
        except SQLAlchemyError as exc:
            raise self._lost(exc) from None

    def run_pair(self, second: Runner, first_arm: Arm, second_arm: Arm, seed: int,
                 only: dict[str, frozenset[str]] | None = None) -> tuple[list[Outcome], list[Outcome]]:
        """Two variants' runs (``(suites, variant, slot)`` each) with their requests interleaved in one time window,
        case by case (``engine.interleave``), so that the serving machine's load falls on both alike: this runner
        plans the first arm and ``second`` the other (an A/A gate's second arm draws other seeds). A suite only one
        arm runs, and an lm-eval task, runs on its own. Both variants are served at once (one server for an A/A).
        ``only``: per suite name, the cases to ask now (the rest is left for later: the runs end ``cancelled``)."""
        (suites_a, va, slot_a), (suites_b, vb, slot_b) = first_arm, second_arm
        fa, fb = self.cfg.fingerprint(va.name), self.cfg.fingerprint(vb.name)
        try:
            with RunLocks(self.engine) as locks:
                jobs_a = self._planned(suites_a, va, fa, slot_a, locks, only)
                jobs_b = second._planned(suites_b, vb, fb, slot_b, locks, only)
                with _cancelling(jobs_a + jobs_b, self.finisher):
                    self._generate_pair(second, (jobs_a, va, fa), (jobs_b, vb, fb), seed)
                    self._judge_all(jobs_a)
                    second._judge_all(jobs_b)
                return self._closed(jobs_a), second._closed(jobs_b)
        except SQLAlchemyError as exc:
            raise self._lost(exc) from None

    def _lost(self, exc: SQLAlchemyError) -> StoreError:
        url = self.engine.url.render_as_string(hide_password=True)
        return StoreError(f"lost the store at {url} during the run: {getattr(exc, 'orig', None) or exc}. "
                          "Results stored before are kept; re-run the same command to resume once it is back")

    def _planned(self, suites: list[Suite], variant: VariantConfig, fp: str, slot: str | None,
                 locks: RunLocks, only: dict[str, frozenset[str]] | None = None) -> list[Job]:
        jobs = [self.planner.plan(suite, variant, fp, slot, locks) for suite in suites]
        for job in jobs:
            if only is not None and job.suite.harness is None:  # (an lm-eval task runs whole)
                job.only = only.get(job.suite.name, frozenset())
            if not job.finished and job.suite.harness is None:
                try:
                    self.planner.answer_from_cache(variant, fp, job)
                except SuiteError as exc:  # the cases could not be read again
                    job.fatal = str(exc)
        return jobs

    def _closed(self, jobs: list[Job]) -> list[Outcome]:
        return [self.finisher.outcome_of(job) if job.finished else self.finisher.close(job) for job in jobs]

    def _generate_pair(self, second: Runner, a: tuple[list[Job], VariantConfig, str], b: tuple[list[Job], VariantConfig, str],
                       seed: int) -> None:
        (jobs_a, va, fa), (jobs_b, vb, fb) = a, b
        pending_a, pending_b = [j for j in jobs_a if j.needs_server], [j for j in jobs_b if j.needs_server]
        if not pending_a and not pending_b:
            return
        gen_a = Generator(self.cfg, self.engine, self.planner, self.progress, self.log_dir)
        gen_b = Generator(self.cfg, self.engine, second.planner, self.progress, self.log_dir)
        try:
            with ExitStack() as stack:
                served_a = self._serve(stack, va) if pending_a else None
                served_b = served_a if served_a is not None and fa == fb else (
                    self._serve(stack, vb) if pending_b else None)
                together = {j.suite.name: j for j in pending_a if j.suite.harness is None}
                for job in pending_b:
                    mate = together.pop(job.suite.name, None) if job.suite.harness is None else None
                    if mate is None:
                        assert served_b is not None
                        _alone(gen_b, served_b, vb, fb, job)
                        continue
                    assert served_a is not None and served_b is not None
                    arms = (Side(mate, va, fa, served_a, self.planner), Side(job, vb, fb, served_b, second.planner))
                    try:
                        interleaved(gen_a, arms, self.cfg.concurrency, seed, self.progress)
                    except SQLAlchemyError:
                        raise
                    except Exception as exc:  # (a bug: both runs fail with its cause, neither is left running)
                        for j in (mate, job):
                            j.fatal, j.breaker_open = f"stopped by an unexpected error: {type(exc).__name__}: {exc}", True
                for job in [j for j in pending_a if j.suite.name in together or j.suite.harness is not None]:
                    assert served_a is not None
                    _alone(gen_a, served_a, va, fa, job)
        except EvalsvcError as exc:  # a server did not start or died: every unfinished run here fails with the cause
            for job in pending_a + pending_b:
                job.fatal = job.fatal or str(exc)

    def _generate_all(self, jobs: list[Job], variant: VariantConfig, fp: str) -> None:
        pending = [j for j in jobs if j.needs_server]
        if not pending:
            return
        try:
            generator = Generator(self.cfg, self.engine, self.planner, self.progress, self.log_dir)
            with ExitStack() as stack:
                served = self._serve(stack, variant)
                for job in pending:
                    _alone(generator, served, variant, fp, job)
        except EvalsvcError as exc:  # the server did not start or died: every unfinished run here fails with the cause
            for job in pending:
                job.fatal = job.fatal or str(exc)

    def _judge_all(self, jobs: list[Job]) -> None:
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


def _alone(generator: Generator, served: Served, variant: VariantConfig, fp: str, job: Job) -> None:
    """One run's requests on their own (or its lm-eval task)."""
    if job.suite.harness is not None:
        generator.run_harness(served, variant, job)
    else:
        generator.generate(served, variant, fp, job)


@contextmanager
def _cancelling(jobs: list[Job], finisher: Finisher) -> Iterator[None]:
    """Ctrl-C, or SIGTERM (the CLI turns it into SystemExit): every unfinished run is cancelled, resumable. Any other
    unexpected exception (a bug) fails them with its cause before it is raised: none is left ``running`` in silence
    (a lost store is raised as it is: nothing could record the end)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as stop:
        why = "interrupted by the user" if isinstance(stop, KeyboardInterrupt) else f"stopped by a signal (exit {stop.code})"
        for job in jobs:
            if not job.finished:
                finisher.finish(job, "cancelled", f"{why}; re-run the same command to resume")
        raise
    except SQLAlchemyError:
        raise
    except Exception as exc:
        for job in jobs:
            if not job.finished:
                finisher.finish(job, "failed", f"stopped by an unexpected error: {type(exc).__name__}: {exc}; "
                                "re-run the same command to resume")
        raise
