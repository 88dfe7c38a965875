"""What `evalsvc serve` keeps of its schedules and finds at start: plain rows, never code.

- ``ScheduleState`` rows (name, cron, paused, since): the jobs are rebuilt from evalsvc.yaml at every start, and
  `evalsvc schedule pause/resume` from any shell only flips ``paused``, which a running serve reads on its next tick.
- A slot is owed from ``since`` on: the latest owed slot with no firing row was missed while no serve ran and
  fires once at start (a backlog is coalesced into that one slot).
- A firing holds its firing lock (``RunLocks(engine, "firings")``) while its process lives: one left ``running``
  whose lock is free was cut off (SIGKILL, OOM, a lost node). It is fired again under its own slot (its runs resume,
  only missing cases are sent), or closed as ``interrupted`` when its schedule is gone or it was cut off
  ``MAX_ATTEMPTS`` times. Runs left ``running`` with their run lock free (a killed `evalsvc gate` or `run`) are
  closed as ``cancelled``; re-invoking their run key resumes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import ScheduleSpec
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import Firing, Run, ScheduleState, utcnow

MAX_ATTEMPTS = 3  # a firing cut off this many times (a slot that kills its serve) is closed, not fired again
SLOT_FORMAT = "%Y-%m-%dT%H:%MZ"  # a fire time off the minute (a cron with a seconds field) names its second too


def slot_name(t: datetime) -> str:
    return t.strftime(SLOT_FORMAT if t.second == 0 else "%Y-%m-%dT%H:%M:%SZ")


def sync_states(engine: Engine, schedules: list[ScheduleSpec], now: datetime | None = None) -> dict[str, bool]:
    """Make the rows match the config's schedules (new or re-timed ones owe slots from now); {name: paused}."""
    now = now or utcnow()
    wanted = {s.name: s for s in schedules}
    with Session(engine) as s, s.begin():
        rows = {r.name: r for r in s.scalars(select(ScheduleState))}
        for name, row in rows.items():
            if name not in wanted:
                s.delete(row)
        for name, spec in wanted.items():
            row = rows.get(name)
            if row is None:
                s.add(ScheduleState(name=name, cron=spec.cron, paused=False, since=now))
            elif row.cron != spec.cron:
                row.cron, row.since = spec.cron, now
        return {name: bool(rows[name].paused) if name in rows else False for name in wanted}


def paused(engine: Engine) -> dict[str, bool]:
    with Session(engine) as s:
        return {name: bool(p) for name, p in s.execute(select(ScheduleState.name, ScheduleState.paused))}


def set_paused(engine: Engine, name: str, value: bool) -> None:
    """Pause or resume; a resumed schedule owes slots from now on (not those it skipped while paused)."""
    with Session(engine) as s, s.begin():
        row = s.get(ScheduleState, name)
        assert row is not None, "sync_states first"
        if row.paused and not value:
            row.since = utcnow()
        row.paused = value


def last_fire_time(trigger: Any, since: datetime, now: datetime) -> datetime | None:
    """The trigger's latest fire time in [since, now], or None: looked for in growing windows back from now, so a
    minutely cron costs a handful of steps and a yearly one stays bounded."""
    for back in (timedelta(minutes=2), timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367),
                 timedelta(days=3000)):
        start = max(since, now - back)
        t = trigger.get_next_fire_time(None, start)
        latest = None
        while t is not None and t <= now:
            latest, t = t, trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        if latest is not None or start == since:
            return latest
    return None


def missed(engine: Engine, spec: ScheduleSpec, trigger: Any, now: datetime | None = None) -> str | None:
    """The latest slot this schedule owes with no firing row (fire it once now), else None."""
    now = now or utcnow()
    with Session(engine) as s:
        row = s.get(ScheduleState, spec.name)
        if row is None or row.paused:
            return None
        since = row.since if row.since.tzinfo else row.since.replace(tzinfo=now.tzinfo)
        t = last_fire_time(trigger, since, now)
        if t is None:
            return None
    slot = slot_name(t)
    return None if firing_written(engine, spec.name, slot) else slot


def firing_written(engine: Engine, schedule: str, slot: str) -> bool:
    """Whether a firing row of this schedule's slot exists."""
    with Session(engine) as s:
        return s.scalars(select(Firing.id).where(Firing.schedule == schedule, Firing.slot == slot)).first() is not None


@dataclass(frozen=True)
class Interrupted:
    firing_id: int
    schedule: str
    slot: str
    attempt: int


def interrupted_firings(engine: Engine) -> list[Interrupted]:
    """Firings left ``running`` here (no Ray Job carries them) whose process is gone: their firing lock is free."""
    with Session(engine) as s:
        rows = list(s.execute(select(Firing.id, Firing.schedule, Firing.slot, Firing.attempt)
                              .where(Firing.status == "running", Firing.submission_id.is_(None))
                              .order_by(Firing.id)))
    out = []
    with RunLocks(engine, "firings") as locks:
        for fid, schedule, slot, attempt in rows:
            if locks.acquire(fid):  # free: released again when the block ends
                out.append(Interrupted(fid, schedule, slot, attempt or 1))
    return out


def close_firing(engine: Engine, firing_id: int, status: str, error: str) -> None:
    with Session(engine) as s, s.begin():
        row = s.get(Firing, firing_id)
        if row is not None and row.status == "running":
            row.status, row.error, row.finished_at = status, error, utcnow()


def close_abandoned_runs(engine: Engine, why: str, status: str = "cancelled", slot: str | None = None,
                         variant: str | None = None, slot_prefix: str | None = None) -> list[int]:
    """Mark runs left ``running`` whose run lock is free (their process is gone, or gave up on them) as ``status``;
    the ids. Narrowed to one slot (or slots starting with ``slot_prefix``) and variant when given. Re-invoking the
    run key resumes such a run."""
    q = select(Run.id).where(Run.status == "running")
    if slot is not None:
        q = q.where(Run.slot == slot)
    if slot_prefix is not None:
        q = q.where(Run.slot.startswith(slot_prefix, autoescape=True))
    if variant is not None:
        q = q.where(Run.variant_name == variant)
    with Session(engine) as s:
        ids = list(s.scalars(q.order_by(Run.id)))
    closed = []
    with RunLocks(engine) as locks:
        for run_id in ids:
            if not locks.acquire(run_id):  # a live process executes it
                continue
            with Session(engine) as s, s.begin():
                run = s.get(Run, run_id)
                if run is not None and run.status == "running":
                    run.status, run.error, run.finished_at = status, why, utcnow()
                    closed.append(run_id)
    return closed
