"""`evalsvc serve`: scheduled runs, comparisons and alerts, one scheduler per store.

APScheduler 3 keeps the jobs in the evalsvc database (SQLAlchemyJobStore), so schedules
survive restarts. Its defaults would bite: a 1-second misfire grace silently skips a late run,
so late runs are never dropped here (``misfire_grace_time=None``) and a backlog is coalesced
into one run of the latest slot; ``max_instances=1`` keeps one run of a schedule at a time.
Each firing runs under the slot of its own fire time, and a run key never executes twice, so a
restart mid-schedule neither loses nor repeats a slot. Two schedulers on one store would both
fire every job, so ``serve`` first takes a lock: an advisory lock on PostgreSQL, a file lock
beside the SQLite file.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from evalsvc.errors import EvalsvcError
from evalsvc.store.schema import Firing, utcnow
from evalsvc.variants import Strict

log = logging.getLogger(__name__)
JOBS_TABLE = "apscheduler_jobs"
ADVISORY_KEY = 0x65766C73  # "evls"


class ScheduleSpec(Strict):
    """One entry of ``schedules:`` in evalsvc.yaml."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="crontab expression in UTC, e.g. '0 3 * * *' (daily at 03:00)")
    suites: list[str] | None = Field(None, description="default: the config's suites")
    variants: list[str] | None = Field(None, description="default: every variant")
    compare: bool = Field(True, description="after the runs, compare each variant with its family's baseline and alert")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(cron, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid crontab expression {cron!r}: {exc} (five fields: minute hour day month weekday)") from None
        return cron

    def trigger(self):
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(self.cron, timezone="UTC")

    def slot_at(self, now: datetime) -> datetime:
        """The latest fire time at or before ``now``: the slot a (possibly late, coalesced) firing stands for."""
        trig = self.trigger()
        t = trig.get_next_fire_time(None, now - timedelta(days=31))
        prev = t
        while t is not None and t <= now:
            prev, t = t, trig.get_next_fire_time(t, t + timedelta(seconds=1))
        return prev if prev is not None and prev <= now else now


class SchedulerBusy(EvalsvcError):
    """Another `evalsvc serve` holds this store's scheduler lock."""


@contextmanager
def single_scheduler(engine: Engine, wait: bool = False) -> Iterator[None]:
    """Hold the store's scheduler lock for the life of the block (or raise SchedulerBusy)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if wait:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})
            elif not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar():
                raise SchedulerBusy("another `evalsvc serve` is already scheduling on this store (PostgreSQL advisory "
                                    "lock held); stop it first, or pass --wait to take over when it stops")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
        return
    db = engine.url.database
    lock_path = Path(f"{db}.scheduler.lock") if db and db != ":memory:" else Path(".evalsvc/scheduler.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise SchedulerBusy(f"another `evalsvc serve` (pid {holder}) is already scheduling on this store ({lock_path}); "
                                "stop it first, or pass --wait to take over when it stops") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def execute(config_path: str, schedule: str) -> dict[str, Any]:
    """One firing of a schedule (APScheduler calls this by reference): runs, comparisons, alerts."""
    from evalsvc.config import load_config
    from evalsvc.store.db import open_engine

    cfg = load_config(config_path)
    spec = next((s for s in cfg.schedules if s.name == schedule), None)
    if spec is None:
        log.warning("schedule %s is no longer in %s; skipping", schedule, config_path)
        return {}
    slot_time = spec.slot_at(datetime.now(UTC))
    slot = slot_time.strftime("%Y-%m-%dT%H:%MZ")
    engine = open_engine(cfg.store_url())
    with Session(engine) as s, s.begin():
        firing_row = Firing(schedule=schedule, slot=slot, status="running", runs={}, alerts={})
        s.add(firing_row)
        s.flush()
        firing_id = firing_row.id
    try:
        summary = _fire(cfg, config_path, spec, slot, engine)
    except Exception as exc:
        _close_firing(engine, firing_id, "error", error=f"{type(exc).__name__}: {exc}")
        raise
    _close_firing(engine, firing_id, "done", runs={f"{v}/{su}": st for v, su, st in summary["runs"]},
                  alerts={"firing": summary["alerts_firing"]})
    return summary


def _close_firing(engine: Engine, firing_id: int, status: str, **fields: Any) -> None:
    with Session(engine) as s, s.begin():
        row = s.get(Firing, firing_id)
        assert row is not None
        row.status, row.finished_at = status, utcnow()
        for key, value in fields.items():
            setattr(row, key, value)


def _fire(cfg: Any, config_path: str, spec: ScheduleSpec, slot: str, engine: Engine) -> dict[str, Any]:
    from evalsvc import alerts, verdicts
    from evalsvc import suites as suites_mod
    from evalsvc.runs import Runner

    schedule = spec.name
    chosen = suites_mod.resolve(cfg.suites_dir, spec.suites or cfg.suites)
    variants = [cfg.variant(v) for v in spec.variants] if spec.variants else cfg.variants
    log_dir = Path(config_path).resolve().parent / ".evalsvc" / "logs"
    outcomes = []
    for v in variants:
        outcomes.extend(Runner(cfg, engine, progress=False, log_dir=log_dir).run_variant(chosen, v, slot=slot))
    dash = cfg.alerts.dashboard_url if cfg.alerts else None
    firing, checked = alerts.run_conditions(outcomes, dash)
    if spec.compare:
        names = {v.name for v in variants}
        paired = [v for v in variants if cfg.baselines.get(v.family) in names]
        for report in verdicts.compare_with_baselines(engine, cfg, chosen, paired):
            f, c = alerts.regression_conditions(report, dash)
            firing += f
            checked += c
    alerter = alerts.Alerter(engine, alerts.build_sinks(cfg.alerts))
    checked += alerter.retired_keys({v.name for v in cfg.variants})  # a removed variant's problems are over
    alerter.sync(firing, checked)
    summary = {"schedule": schedule, "slot": slot, "runs": [(o.variant, o.suite, o.status) for o in outcomes],
               "alerts_firing": sorted({c.key for c in firing})}
    log.info("schedule %s slot %s: %s", schedule, slot, summary)
    return summary


def build(url: str) -> Any:
    """A BackgroundScheduler on the store's job table with the defaults this module's docstring explains."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url, tablename=JOBS_TABLE)},
               job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}, timezone=UTC)


def sync_jobs(scheduler: Any, config_path: str, schedules: list[ScheduleSpec]) -> None:
    """Make the job store hold exactly the config's schedules.

    An unchanged job is left alone, so a fire time missed while the service was down is still
    due (and runs, coalesced, at start); paused jobs stay paused.
    """
    wanted = {s.name: s for s in schedules}
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            scheduler.remove_job(job.id)
    for name, spec in wanted.items():
        args = [str(Path(config_path).resolve()), name]
        existing = scheduler.get_job(name)
        if existing is not None and str(existing.trigger) == str(spec.trigger()) and list(existing.args) == args:
            continue
        paused = existing is not None and existing.next_run_time is None
        scheduler.add_job("evalsvc.scheduler:execute", spec.trigger(), id=name, name=name, args=args, replace_existing=True)
        if paused:
            scheduler.pause_job(name)
