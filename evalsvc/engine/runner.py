"""Executing runs: suite version x variant fingerprint x slot, stage by stage.

plan (claim, lock, answer from the cache) -> generate (or an lm-eval task) -> judge phase ->
finish. All suites of one variant share one managed server start. See each stage's module."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from evalsvc.config import Config, VariantConfig
from evalsvc.engine.finish import Finisher, Outcome
from evalsvc.engine.generate import Generator
from evalsvc.engine.judge_phase import Grader
from evalsvc.engine.plan import CacheUse, Job, Planner
from evalsvc.errors import EvalsvcError, StoreError, SuiteError
from evalsvc.serving import serve
from evalsvc.stats import aggregate
from evalsvc.store.locks import RunLocks
from evalsvc.suites import Suite

__all__ = ["Outcome", "Runner"]


class Runner:
    """Runs suites against variants and records everything in the store."""

    def __init__(self, cfg: Config, engine: Engine, *, progress: bool | None = None, log_dir: Path | None = None,
                 cache: CacheUse = "variant", seed_offset: int = 0, lock_wait_s: float = 0.0):
        """``cache``: "variant" reads the response cache where the variant uses it; "pinned" only where its
        fingerprint pins the checkpoint bytes (local files: an endpoint can change behind its name); "off" never.
        ``seed_offset`` is added to every request's seed (an A/A gate's second run draws fresh samples).
        ``lock_wait_s``: how long to wait for a run key another process is executing before standing back."""
        self.cfg = cfg
        self.engine = engine
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log_dir = log_dir or Path(".evalsvc/logs")
        self.planner = Planner(cfg, engine, cache, seed_offset, lock_wait_s)
        self.finisher = Finisher(cfg, engine)

    def run(self, suite: Suite, variant: VariantConfig, slot: str | None = None) -> Outcome:
        return self.run_variant([suite], variant, slot)[0]

    def run_variant(self, suites: list[Suite], variant: VariantConfig, slot: str | None = None) -> list[Outcome]:
        """Run every suite on one variant, starting its managed server at most once."""
        fp = self.cfg.fingerprint(variant.name)
        try:
            with RunLocks(self.engine) as locks:
                return self._run_locked(suites, variant, fp, slot, locks)
        except SQLAlchemyError as exc:
            url = self.engine.url.render_as_string(hide_password=True)
            raise StoreError(f"lost the store at {url} during the run: {getattr(exc, 'orig', None) or exc}. "
                             "Results stored before are kept; re-run the same command to resume once it is back") from None

    def _run_locked(self, suites: list[Suite], variant: VariantConfig, fp: str, slot: str | None,
                    locks: RunLocks) -> list[Outcome]:
        jobs = [self.planner.plan(suite, variant, fp, slot, locks) for suite in suites]
        for job in jobs:
            if not job.finished and job.suite.harness is None:
                try:
                    self.planner.answer_from_cache(variant, fp, job)
                except SuiteError as exc:  # the cases could not be read again
                    job.fatal = str(exc)
        try:
            self._generate_all(jobs, variant, fp)
            self._judge_all(jobs)
        except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM (the CLI turns it into SystemExit)
            why = "interrupted by the user" if isinstance(stop, KeyboardInterrupt) else f"stopped by a signal (exit {stop.code})"
            for job in jobs:
                if not job.finished:
                    self.finisher.finish(job, "cancelled", f"{why}; re-run the same command to resume")
            raise
        return [self.finisher.outcome_of(job) if job.finished else self.finisher.close(job) for job in jobs]

    def _generate_all(self, jobs: list[Job], variant: VariantConfig, fp: str) -> None:
        pending = [j for j in jobs if j.needs_server]
        if not pending:
            return
        try:
            generator = Generator(self.cfg, self.engine, self.planner, self.progress, self.log_dir)
            with serve(variant, self.log_dir) as served:
                for job in pending:
                    if job.suite.harness is not None:
                        generator.run_harness(served, variant, job)
                    else:
                        generator.generate(served, variant, fp, job)
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
