"""Firings as Ray Jobs (executor type ray): what `evalsvc serve` does instead of running a firing itself.

The firing row is written first, with the submission id of its attempt (schedule, slot, attempt), then the job is
submitted through Ray's Jobs REST API; its driver, `evalsvc fire`, runs the firing on the cluster and closes the row.
The scheduler only watches the job's status, so a scheduler stopped or restarted leaves the job running. On start,
``reconcile`` looks at every firing left ``running``: a job still running is watched again, one that ended without
closing its row (its driver was killed, the job stopped, the head replaced) is submitted again as the next attempt.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cluster.jobs import TERMINAL, DuplicateSubmission, JobsClient, JobsError, entrypoint, submission_id
from evalsvc.config import Config, ScheduleSpec
from evalsvc.config.executor import RayExecutor
from evalsvc.service.runs import open_store
from evalsvc.store.schema import Firing, utcnow

log = logging.getLogger(__name__)
POLL_S = 2.0


def _client(cfg: Config) -> JobsClient:
    assert isinstance(cfg.executor, RayExecutor)
    return JobsClient(cfg.executor.jobs_url)


def submit(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str, attempt: int = 1,
           firing_id: int | None = None) -> tuple[int, str]:
    """Write (or re-use) the firing row for this attempt and submit its Ray Job; (firing id, submission id)."""
    sub = submission_id(spec.name, slot, attempt)
    engine = open_store(cfg)
    with Session(engine) as s, s.begin():
        row = s.get(Firing, firing_id) if firing_id else s.scalars(select(Firing).where(Firing.submission_id == sub)).first()
        if row is None:
            row = Firing(schedule=spec.name, slot=slot, runs={}, alerts={})
            s.add(row)
        row.submission_id, row.attempt, row.status, row.error, row.finished_at = sub, attempt, "running", None, None
        s.flush()
        firing_id = row.id
    client = _client(cfg)
    try:
        client.submit(sub, entrypoint(os.path.abspath(config_path), spec.name, slot, sub),  # not resolve(): a
                      # Kubernetes ConfigMap mount is a link to a folder named differently on every pod
                      {"evalsvc_schedule": spec.name, "evalsvc_slot": slot, "evalsvc_attempt": str(attempt)})
        log.info("firing %s submitted as Ray job %s", firing_id, sub)
    except DuplicateSubmission:  # submitted before (the scheduler restarted in between): watch that one
        log.info("Ray already has job %s; watching it", sub)
    except JobsError as exc:
        _end(cfg, firing_id, "error", str(exc))
        raise
    finally:
        client.close()
    return firing_id, sub


def watch(cfg: Config, firing_id: int, sub: str, stop: threading.Event | None = None) -> str:
    """Poll the job until it ends (its status) or ``stop`` is set ("left running": the job goes on without us).

    A job that ended while its firing row still says running (the driver never closed it) gets the row closed as an
    error with Ray's message."""
    client = _client(cfg)
    stop = stop or threading.Event()
    try:
        while True:
            try:
                status, message = client.status(sub)
            except JobsError as exc:  # the head restarting: keep watching (the job, if it survives, goes on)
                log.warning("firing %s: %s", firing_id, exc)
                status = "UNREACHABLE"
            if status in TERMINAL or status == "MISSING":
                break
            if stop.wait(POLL_S):
                return "left running"
    finally:
        client.close()
    if status != "SUCCEEDED":
        _end(cfg, firing_id, "error", f"Ray job {sub} {status.lower()}: {message[-500:]}")
    return status


def submit_and_watch(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str,
                     stop: threading.Event | None = None) -> dict[str, Any]:
    firing_id, sub = submit(cfg, config_path, spec, slot)
    return {"schedule": spec.name, "slot": slot, "submission_id": sub, "status": watch(cfg, firing_id, sub, stop),
            "runs": [], "alerts_firing": []}


def reconcile(cfg: Config, config_path: str, stop: threading.Event | None = None) -> list[tuple[int, str, str]]:
    """Bring every firing left ``running`` in line with its Ray job; (firing id, submission id, what was done).

    Still pending or running: watched again (in a thread). Succeeded: its driver closed it. Failed, stopped or unknown
    to Ray: submitted again with the next attempt number, up to ``task_retries`` + 1 attempts, else closed as an error."""
    assert isinstance(cfg.executor, RayExecutor)
    engine = open_store(cfg)
    with Session(engine) as s:
        left = list(s.execute(select(Firing.id, Firing.schedule, Firing.slot, Firing.submission_id, Firing.attempt)
                              .where(Firing.status == "running", Firing.submission_id.is_not(None))).all())
    specs = {spec.name: spec for spec in cfg.schedules}
    done = []
    client = _client(cfg)
    try:
        for fid, schedule, slot, sub, attempt in left:
            status, message = client.status(sub)
            if status not in TERMINAL and status != "MISSING":
                threading.Thread(target=watch, args=(cfg, fid, sub, stop), daemon=True, name=f"watch-{sub}").start()
                done.append((fid, sub, "watching"))
            elif status == "SUCCEEDED":
                _end(cfg, fid, "done", None)
                done.append((fid, sub, "succeeded"))
            elif schedule not in specs or attempt > cfg.executor.task_retries:
                _end(cfg, fid, "error", f"Ray job {sub} {status.lower()}: {message[-300:]}; not submitted again "
                     f"({'the schedule is gone' if schedule not in specs else f'{attempt} attempts made'})")
                done.append((fid, sub, "given up"))
            else:
                new_id, new_sub = submit(cfg, config_path, specs[schedule], slot, attempt + 1, firing_id=fid)
                threading.Thread(target=watch, args=(cfg, new_id, new_sub, stop), daemon=True,
                                 name=f"watch-{new_sub}").start()
                done.append((fid, new_sub, f"resubmitted after {status.lower()}"))
    finally:
        client.close()
    for fid, sub, what in done:
        log.info("firing %s (%s): %s", fid, sub, what)
    return done


def _end(cfg: Config, firing_id: int, status: str, error: str | None) -> None:
    with Session(open_store(cfg)) as s, s.begin():
        row = s.get(Firing, firing_id)
        if row is not None and row.status == "running":
            row.status, row.error, row.finished_at = status, error, utcnow()
