"""Firings as Ray Jobs (executor type ray): what `evalsvc serve` does instead of running a firing itself.

A firing row holds one slot of one schedule; each Ray Job that carries it is an attempt, recorded in the row
(``attempts``) with its submission id (the store's tag, schedule, slot, attempt). The job's driver, `evalsvc fire`,
runs the firing on the cluster and closes the row; the scheduler only watches the job, so a scheduler stopped or
restarted leaves the job running.

An attempt whose job ended (failed, stopped, or unknown to Ray: its head was replaced) while the row still says
``running`` never finished: its driver was killed or lost. The watcher then submits the next attempt, which resumes
the slot's runs, up to ``task_retries`` + 1 attempts; a driver that closed the row itself (done, or an error it
raised) is final. Firing a slot again whose firing has ended (`evalsvc schedule run-now`) starts a new attempt;
one whose job is still on its way is watched, not repeated. On start, ``reconcile`` does the same for every row left
``running``, and a head that does not answer is watched until it does, so `evalsvc serve` starts without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cluster.jobs import TERMINAL, DuplicateSubmission, JobsClient, JobsError, Unreachable, entrypoint, submission_id
from evalsvc.config import Config, ScheduleSpec
from evalsvc.config.executor import RayExecutor
from evalsvc.service.runs import open_store
from evalsvc.store.schema import Firing, StoreIdentity, utcnow

log = logging.getLogger(__name__)
POLL_S = 2.0
ENDED = TERMINAL | {"MISSING"}


def _client(cfg: Config, retry_s: float | None = None) -> JobsClient:
    assert isinstance(cfg.executor, RayExecutor)
    return JobsClient(cfg.executor.jobs_url, retry_s=cfg.executor.jobs_retry_s if retry_s is None else retry_s)


def store_tag(cfg: Config) -> str:
    """8 hex digits naming this store: its identity row (written once, when it was created) and where it is (so a copy
    restored elsewhere is another store). Two deployments sharing a Ray cluster never make the same job id."""
    from sqlalchemy.engine import make_url

    with Session(open_store(cfg)) as s:
        ident = s.scalars(select(StoreIdentity.id)).first()
    url = make_url(cfg.store_url())
    where = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return hashlib.sha256(f"{ident}|{where}".encode()).hexdigest()[:8]


def submit(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str) -> tuple[int, str]:
    """The slot's firing on Ray; (firing id, submission id to watch).

    A firing of the slot whose job is still pending or running is that job (not submitted twice); otherwise (none yet,
    or it ended: a re-fire) the next attempt is submitted and resumes the slot's runs."""
    engine = open_store(cfg)
    with Session(engine) as s:
        row = s.scalars(select(Firing).where(Firing.schedule == spec.name, Firing.slot == slot)
                        .order_by(Firing.id.desc())).first()
        last = (row.id, row.submission_id, row.attempt, row.status) if row is not None else None
    if last is None:
        return _attempt(cfg, config_path, spec, slot, 1, None)
    fid, sub, attempt, status = last
    if status == "running" and sub:
        client = _client(cfg)
        try:
            job, _ = client.status(sub)
        finally:
            client.close()
        if job not in ENDED:
            log.info("firing %s is on its way as Ray job %s; watching it", fid, sub)
            return fid, sub
        _record(cfg, fid, sub, ended=job)
    return _attempt(cfg, config_path, spec, slot, attempt + 1 if sub else 1, fid)


def _attempt(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str, attempt: int,
             firing_id: int | None) -> tuple[int, str]:
    """Record attempt ``attempt`` in the firing row (made if needed), then submit its job.

    No answer from the head (for ``jobs_retry_s``) leaves the row running: the watcher finds the job or, missing,
    submits the next attempt. A job Ray already has under this id is adopted only if it is this store's firing."""
    tag = store_tag(cfg)
    sub = submission_id(tag, spec.name, slot, attempt)
    with Session(open_store(cfg)) as s, s.begin():
        row = s.get(Firing, firing_id) if firing_id else None
        if row is None:
            row = Firing(schedule=spec.name, slot=slot, runs={}, alerts={})
            s.add(row)
        row.submission_id, row.attempt, row.status, row.error, row.finished_at = sub, attempt, "running", None, None
        row.attempts = [*(row.attempts or []), {"submission_id": sub, "submitted_at": utcnow().isoformat()}]
        s.flush()
        firing_id = row.id
    meta = {"evalsvc_store": tag, "evalsvc_firing": str(firing_id), "evalsvc_schedule": spec.name, "evalsvc_slot": slot,
            "evalsvc_attempt": str(attempt)}
    client = _client(cfg)
    try:
        client.submit(sub, entrypoint(os.path.abspath(config_path), spec.name, slot, sub), meta)  # not resolve(): a
        # Kubernetes ConfigMap mount is a link to a folder named differently on every pod
        log.info("firing %s submitted as Ray job %s", firing_id, sub)
    except DuplicateSubmission:
        theirs = (client.job(sub) or {}).get("metadata") or {}
        if any(theirs.get(k) != v for k, v in meta.items() if k in ("evalsvc_store", "evalsvc_firing")):
            why = f"Ray already has a job {sub} that is not this store's firing {firing_id} (its metadata: {theirs})"
            _end(cfg, firing_id, "error", why)
            raise JobsError(why) from None
        log.info("Ray already has job %s (this firing's); watching it", sub)
    except Unreachable as exc:
        log.warning("firing %s: %s; left running, the watcher submits it again if Ray never got it", firing_id, exc)
    except JobsError as exc:
        _end(cfg, firing_id, "error", str(exc))
        raise
    finally:
        client.close()
    return firing_id, sub


def watch(cfg: Config, config_path: str, firing_id: int, sub: str,
          stop: threading.Event | None = None) -> tuple[str, str]:
    """Poll the firing's job until the firing ends or ``stop`` is set; (the last job's status, its submission id).

    A job that ended without its driver closing the firing is followed by the next attempt (``settle``);
    "left running" when stopped first (the job goes on without us)."""
    stop = stop or threading.Event()
    client = _client(cfg, retry_s=0)
    try:
        while True:
            try:
                status, message = client.status(sub)
            except JobsError as exc:  # the head restarting: keep watching (the job, if it survives, goes on)
                log.warning("firing %s: %s", firing_id, exc)
                status, message = "UNREACHABLE", ""
            if status in ENDED:
                nxt = settle(cfg, config_path, firing_id, sub, status, message)
                if nxt is None:
                    return status, sub
                sub = nxt
            elif stop.wait(POLL_S):
                return "left running", sub
    finally:
        client.close()


def settle(cfg: Config, config_path: str, firing_id: int, sub: str, status: str, message: str) -> str | None:
    """The job ``sub`` ended with ``status``: record it; submit the next attempt when its driver never closed the firing
    (and attempts are left), else close the firing. The next attempt's submission id, or None."""
    assert isinstance(cfg.executor, RayExecutor)
    _record(cfg, firing_id, sub, ended=status, why=message[-300:] or None)
    with Session(open_store(cfg)) as s:
        row = s.get(Firing, firing_id)
        state = (row.status, row.submission_id, row.schedule, row.slot, row.attempt) if row is not None else None
    if state is None or state[0] != "running" or state[1] != sub:
        return None  # its driver closed it, or another attempt took over
    _, _, schedule, slot, attempt = state
    spec = next((x for x in cfg.schedules if x.name == schedule), None)
    said = f"Ray job {sub} {status.lower()}" + (f": {message[-300:]}" if message else "")
    if status == "SUCCEEDED":  # `evalsvc fire` closes its row before it exits: this job was not its driver
        _end(cfg, firing_id, "error", f"{said}, without closing its firing")
        return None
    if spec is None or attempt > cfg.executor.task_retries:
        _end(cfg, firing_id, "error", f"{said}; not submitted again ("
             + ("the schedule is gone)" if spec is None else f"{attempt} attempts made, task_retries {cfg.executor.task_retries})"))
        return None
    log.warning("firing %s: %s before its driver closed it; submitting attempt %d", firing_id, said, attempt + 1)
    try:
        return _attempt(cfg, config_path, spec, slot, attempt + 1, firing_id)[1]
    except JobsError:
        return None  # refused: _attempt closed the firing with Ray's answer


def submit_and_watch(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str,
                     stop: threading.Event | None = None) -> dict[str, Any]:
    firing_id, sub = submit(cfg, config_path, spec, slot)
    status, sub = watch(cfg, config_path, firing_id, sub, stop)
    return {"schedule": spec.name, "slot": slot, "submission_id": sub, "status": status, "runs": [], "alerts_firing": []}


def reconcile(cfg: Config, config_path: str, stop: threading.Event | None = None) -> list[tuple[int, str, str]]:
    """Bring every firing left ``running`` in line with its Ray job; (firing id, submission id, what was done).

    Pending or running (or the head not answering now): watched in a thread, which settles it when it ends. Ended:
    settled now (the next attempt submitted, or the firing closed)."""
    engine = open_store(cfg)
    with Session(engine) as s:
        left = list(s.execute(select(Firing.id, Firing.submission_id)
                              .where(Firing.status == "running", Firing.submission_id.is_not(None))).all())
    done = []
    assert isinstance(cfg.executor, RayExecutor)
    client = _client(cfg, retry_s=min(cfg.executor.jobs_retry_s, 10.0))
    try:
        for fid, sub in left:
            try:
                status, message = client.status(sub)
            except JobsError as exc:
                log.warning("firing %s: %s; watching it until the head answers", fid, exc)
                status, message = "UNREACHABLE", ""
            if status in ENDED:
                nxt = settle(cfg, config_path, fid, sub, status, message)
                what = f"resubmitted after {status.lower()}" if nxt else f"closed after {status.lower()}"
                sub = nxt or sub
            else:
                nxt, what = sub, "watching" if status != "UNREACHABLE" else "the Ray head does not answer; watching"
            if nxt:
                threading.Thread(target=watch, args=(cfg, config_path, fid, nxt, stop), daemon=True,
                                 name=f"watch-{nxt}").start()
            done.append((fid, sub, what))
    finally:
        client.close()
    for fid, sub, what in done:
        log.info("firing %s (%s): %s", fid, sub, what)
    return done


def _record(cfg: Config, firing_id: int, sub: str, **fields: Any) -> None:
    """Note how attempt ``sub`` of the firing ended in its ``attempts`` list."""
    with Session(open_store(cfg)) as s, s.begin():
        row = s.get(Firing, firing_id)
        if row is None:
            return
        row.attempts = [{**a, **{k: v for k, v in fields.items() if v is not None}} if a.get("submission_id") == sub
                        else a for a in (row.attempts or [])]


def _end(cfg: Config, firing_id: int, status: str, error: str | None) -> None:
    with Session(open_store(cfg)) as s, s.begin():
        row = s.get(Firing, firing_id)
        if row is not None and row.status == "running":
            row.status, row.error, row.finished_at = status, error, utcnow()
