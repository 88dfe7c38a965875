"""`evalsvc serve`: scheduled runs, comparisons and alerts, one scheduler per store.

APScheduler 3 keeps the jobs in the evalsvc database (SQLAlchemyJobStore), so schedules
survive restarts. Its defaults would bite: a 1-second misfire grace silently skips a late run,
so late runs are never dropped here (``misfire_grace_time=None``) and a backlog is coalesced
into one run of the latest slot; ``max_instances=1`` keeps one run of a schedule at a time.
Each firing runs under the slot of its own fire time, and a run key never executes twice, so a
restart mid-schedule neither loses nor repeats a slot. Two schedulers on one store would both
fire every job, so ``serve`` first takes the store's scheduler lock (``store.locks.single_scheduler``).
With executor type ray a firing is submitted as a Ray Job and watched (``service.ray_firings``).
What a firing does is the service's (``service.schedule``); this module only decides when.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from evalsvc.config import ScheduleSpec, load_config
from evalsvc.service import schedule as service_schedule

log = logging.getLogger(__name__)
JOBS_TABLE = "apscheduler_jobs"
stopping = threading.Event()  # set by `evalsvc serve` when it stops: a firing watched on Ray is left running there


def trigger(spec: ScheduleSpec) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(spec.cron, timezone="UTC")


def slot_at(spec: ScheduleSpec, now: datetime) -> datetime:
    """The latest fire time at or before ``now``: the slot a (possibly late, coalesced) firing stands for."""
    trig = trigger(spec)
    t = trig.get_next_fire_time(None, now - timedelta(days=31))
    prev = t
    while t is not None and t <= now:
        prev, t = t, trig.get_next_fire_time(t, t + timedelta(seconds=1))
    return prev if prev is not None and prev <= now else now


def execute(config_path: str, schedule: str) -> dict[str, Any]:
    """One firing of a schedule (APScheduler calls this by reference): runs, comparisons, alerts."""
    cfg = load_config(config_path)
    spec = next((s for s in cfg.schedules if s.name == schedule), None)
    if spec is None:
        log.warning("schedule %s is no longer in %s; skipping", schedule, config_path)
        return {}
    slot = slot_at(spec, datetime.now(UTC)).strftime("%Y-%m-%dT%H:%MZ")
    if cfg.executor.type == "ray":  # a Ray Job on the cluster (its driver is `evalsvc fire`); this thread watches it
        from evalsvc.service import ray_firings

        return ray_firings.submit_and_watch(cfg, config_path, spec, slot, stopping)
    return service_schedule.fire(cfg, config_path, spec, slot)


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
        if existing is not None and str(existing.trigger) == str(trigger(spec)) and list(existing.args) == args:
            continue
        paused = existing is not None and existing.next_run_time is None
        scheduler.add_job("evalsvc.scheduler:execute", trigger(spec), id=name, name=name, args=args, replace_existing=True)
        if paused:
            scheduler.pause_job(name)
