"""`evalsvc serve`: scheduled runs, comparisons and alerts, one scheduler per store.

The jobs are rebuilt from evalsvc.yaml at every start in an in-memory APScheduler 3; the store keeps only plain rows
of each schedule (paused, and the time from which its slots are owed: ``service.schedule_state``), never pickled
jobs that a store writer could turn into code run here. APScheduler's defaults would bite: a 1-second misfire grace
silently skips a late run, so late runs are never dropped here (``misfire_grace_time=None``) and a backlog is
coalesced into one run of the latest slot; ``max_instances=1`` keeps one run of a schedule at a time.
Each firing runs under the slot of its own fire time, and a run key never executes twice. At start, a slot owed
with no firing row fires once, and a firing cut off by a killed serve fires again under its own slot (its runs
resume), so a restart mid-schedule neither loses nor repeats a slot.
A slot that falls due while the store cannot be reached (a PostgreSQL restart) waits for it, up to two minutes, and
then fires under the slot it stands for; a firing whose store goes away before its row is written is fired again
once the store is back (one written is fired again by the tick, as a cut-off firing). Two schedulers on one store
would both fire every job, so ``serve`` takes the store's scheduler lock as a lease (``store.locks.SchedulerLease``)
that it proves on every tick and before every firing; a serve that loses it stops.
The tick (every ``TICK_S``) also applies `evalsvc schedule pause/resume` made from other shells and retries
undelivered alerts. With executor type ray a firing is submitted as a Ray Job and watched (``service.ray_firings``).
What a firing does is the service's (``service.schedule``); this module only decides when.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from evalsvc import alerts
from evalsvc.config import Config, ScheduleSpec, load_config
from evalsvc.errors import StoreError
from evalsvc.service import schedule as service_schedule
from evalsvc.service import schedule_state as state
from evalsvc.store.locks import SchedulerLease

log = logging.getLogger(__name__)
TICK_S = 5.0  # how often serve proves its lease, reads pause/resume and retries undelivered alerts
STORE_WAIT_S, STORE_CHECKS = 2.0, 60  # a slot due while the store is away waits up to 2 min for it, checked every 2 s
stopping = threading.Event()  # set by `evalsvc serve` when it stops: a firing watched on Ray is left running there
lease: SchedulerLease | None = None  # the serving process's lease: no firing starts while it is not proven


def trigger(spec: ScheduleSpec) -> Any:
    """The cron's trigger in UTC; six fields put the second in front (``from_crontab`` reads five only)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = spec.cron.split()
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone="UTC")
    return CronTrigger.from_crontab(spec.cron, timezone="UTC")


def slot_at(spec: ScheduleSpec, now: datetime) -> datetime:
    """The latest fire time at or before ``now``: the slot a (possibly late, coalesced) firing stands for."""
    return state.last_fire_time(trigger(spec), now - timedelta(days=3000), now) or now


def execute(config_path: str, schedule: str, slot: str | None = None, firing_id: int | None = None) -> dict[str, Any]:
    """One firing of a schedule (APScheduler calls this): runs, comparisons, alerts. ``slot`` and ``firing_id``: an
    interrupted firing fired again under its own slot."""
    due = datetime.now(UTC)  # the slot is the one due now, however long the store takes to answer
    if lease is not None and not _verified(lease, schedule):
        log.error("schedule %s not fired: this serve does not hold the store's scheduler lock", schedule)
        return {}
    cfg = load_config(config_path)
    spec = next((s for s in cfg.schedules if s.name == schedule), None)
    if spec is None:
        log.warning("schedule %s is no longer in %s; skipping", schedule, config_path)
        return {}
    slot = slot or state.slot_name(slot_at(spec, due))
    if cfg.executor.type == "ray":  # a Ray Job on the cluster (its driver is `evalsvc fire`); this thread watches it
        from evalsvc.service import ray_firings

        return ray_firings.submit_and_watch(cfg, config_path, spec, slot, stopping)
    try:
        return service_schedule.fire(cfg, config_path, spec, slot, firing_id=firing_id)
    except StoreError:  # lost before its firing row was written, the slot would be owed by nothing: fire it again
        if firing_id is not None or lease is None or not _verified(lease, schedule) or \
                state.firing_written(lease.engine, spec.name, slot):
            raise  # (a written firing left running with its lock free is fired again by the tick: ``refire``)
        log.warning("schedule %s slot %s: the store went away before its firing was recorded; firing it again", schedule,
                    slot)
        return service_schedule.fire(cfg, config_path, spec, slot)


def _verified(held: SchedulerLease, schedule: str) -> bool:
    """Whether the lease holds, waiting while the store cannot be reached (a restart takes seconds): a slot due then
    fires once the store is back, instead of being lost for good. A lease lost to another serve is not waited for."""
    deadline = time.monotonic() + STORE_WAIT_S * STORE_CHECKS
    while not held.verify():
        if held.lost or stopping.is_set() or time.monotonic() > deadline:
            return False
        log.warning("schedule %s: the store cannot be reached; waiting for it to fire the slot due", schedule)
        stopping.wait(STORE_WAIT_S)
    return True


def build() -> Any:
    """A BackgroundScheduler with an in-memory job store and the defaults this module's docstring explains."""
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
                               timezone=UTC)


def start_jobs(scheduler: Any, engine: Engine, config_path: str, schedules: list[ScheduleSpec]) -> list[str]:
    """Add the config's schedules as jobs (paused ones paused), fire each owed slot and each interrupted firing once,
    close runs whose process is gone; what was done, one line each, for the operator."""
    path = str(Path(config_path).resolve())
    paused = state.sync_states(engine, schedules)
    now = datetime.now(UTC)
    said = []
    for spec in schedules:
        scheduler.add_job(execute, trigger(spec), id=spec.name, name=spec.name, args=[path, spec.name],
                          replace_existing=True)
        if paused[spec.name]:
            scheduler.pause_job(spec.name)
        elif (owed := state.missed(engine, spec, trigger(spec), now)) is not None:
            scheduler.modify_job(spec.name, next_run_time=now)
            said.append(f"schedule {spec.name}: slot {owed} was missed while no serve ran; firing it now")
    said += refire(scheduler, engine, path, {s.name for s in schedules})
    closed = state.close_abandoned_runs(engine, "its process was gone (found by `evalsvc serve` at start); "
                                        "re-run the same command to resume")
    if closed:
        said.append(f"runs {', '.join(map(str, closed))}: left running by a process that is gone; marked cancelled")
    return said


def refire(scheduler: Any, engine: Engine, path: str, names: set[str]) -> list[str]:
    """Fire each firing cut off (left running, its lock free: a killed process, or one that lost the store) again under
    its own slot, unless its schedule is gone or it was cut off MAX_ATTEMPTS times; what was done."""
    said = []
    for cut in state.interrupted_firings(engine):
        job_id = f"refire-{cut.firing_id}"
        if scheduler.get_job(job_id) is not None:  # already due here
            continue
        if cut.schedule not in names or cut.attempt >= state.MAX_ATTEMPTS:
            why = "its schedule is gone" if cut.schedule not in names else f"cut off {cut.attempt} times"
            state.close_firing(engine, cut.firing_id, "interrupted", f"its process was gone; not fired again ({why})")
            said.append(f"firing {cut.firing_id} ({cut.schedule} {cut.slot}): interrupted, not fired again ({why})")
            continue
        scheduler.add_job(execute, "date", run_date=datetime.now(UTC), id=job_id,
                          args=[path, cut.schedule, cut.slot, cut.firing_id])
        said.append(f"firing {cut.firing_id} ({cut.schedule} {cut.slot}): its process was gone; firing it again")
    for line in said:
        log.warning("%s", line)
    return said


def tick(scheduler: Any, engine: Engine, alerter: alerts.Alerter | None, path: str | None = None,
         names: set[str] | None = None) -> None:
    """Apply pause/resume made from other shells, fire again what was cut off meanwhile, retry undelivered alerts."""
    for name, is_paused in state.paused(engine).items():
        job = scheduler.get_job(name)
        if job is None:
            continue
        if is_paused and job.next_run_time is not None:
            scheduler.pause_job(name)
            log.info("schedule %s paused", name)
        elif not is_paused and job.next_run_time is None:
            scheduler.resume_job(name)
            log.info("schedule %s resumed", name)
    if path is not None and names is not None:
        refire(scheduler, engine, path, names)
    if alerter is not None:
        alerter.retry_undelivered()


def keep(scheduler: Any, engine: Engine, cfg: Config, config_path: str, held: SchedulerLease,
         stop: threading.Event) -> None:
    """Serve's tick loop until ``stop``: prove the lease (lost: pause every job and stop serve), then ``tick``."""
    alerter = alerts.Alerter(engine, alerts.build_sinks(cfg.alerts)) if cfg.alerts else None
    path, names = str(Path(config_path).resolve()), {s.name for s in cfg.schedules}
    while not stop.wait(TICK_S):
        if not held.verify():
            if held.lost:
                scheduler.pause()
                stop.set()
                return
            continue
        try:
            tick(scheduler, engine, alerter, path, names)
        except Exception:  # the store is away for a moment: the next tick tries again
            log.warning("evalsvc serve: tick failed", exc_info=True)
