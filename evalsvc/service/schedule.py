"""One firing of a schedule: its runs, the comparisons with each family's baseline, drift, and the alerts.

Each firing is recorded (schedule, slot, status, runs, alerts) so `evalsvc schedule history`
and the dashboard can show it. The slot is the schedule's fire time: a run key never executes
twice, so a firing repeated after a restart resumes instead of repeating.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc import alerts
from evalsvc.config import Config, ScheduleSpec
from evalsvc.config.sequential import SequentialGate
from evalsvc.engine.finish import Outcome
from evalsvc.engine.runner import Runner
from evalsvc.errors import ConfigError, StoreError
from evalsvc.service.drift import check_drift, judge_findings
from evalsvc.service.drift_family import families
from evalsvc.service.runs import choose, log_dir, open_store
from evalsvc.service.schedule_state import close_abandoned_runs
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import Firing, utcnow
from evalsvc.verdicts.compare import Report
from evalsvc.verdicts.record import compare_with_baselines

log = logging.getLogger(__name__)


def fire(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str, submission_id: str | None = None,
         firing_id: int | None = None) -> dict[str, Any]:
    """Run the schedule's suites x variants under ``slot``, compare, alert; returns the firing's summary.

    ``submission_id``: this is the driver of that Ray Job (`evalsvc fire`), whose firing row `evalsvc serve` made.
    ``firing_id``: fire that interrupted firing again (its row, its slot; the runs resume). The firing's lock is held
    while this process executes it, so a firing left ``running`` with its lock free is known to be cut off.
    Each variant is isolated: an unexpected error fails that variant's runs (an endpoint alert) and is listed under
    ``problems``; the other variants still run, compare and alert, and the alerts are always synced."""
    engine = open_store(cfg)
    with RunLocks(engine, "firings") as lock:
        with Session(engine) as s, s.begin():
            row = None
            if submission_id:
                row = s.scalars(select(Firing).where(Firing.submission_id == submission_id)).first()
            elif firing_id is not None:
                row = s.get(Firing, firing_id)
            again = row is not None and not submission_id  # an interrupted firing, fired again
            if row is None:
                row = Firing(schedule=spec.name, slot=slot, status="running", runs={}, alerts={},
                             submission_id=submission_id)
                s.add(row)
            s.flush()
            firing_id = row.id
            if not lock.acquire(firing_id):  # taken before the row is seen running, so never seen running unlocked
                log.info("firing %s of %s is being executed by another process; not fired twice", firing_id, spec.name)
                return {"schedule": spec.name, "slot": slot, "runs": [], "errors": [], "alerts_firing": [],
                        "problems": [f"firing {firing_id} is being executed by another process"]}
            if again:
                row.attempt = (row.attempt or 1) + 1
            row.status, row.error = "running", None
        try:
            summary = _fire(cfg, config_path, spec, slot, engine)
        except StoreError:  # left running with its lock free: `evalsvc serve` fires it again once the store is back
            raise
        except Exception as exc:
            _close(engine, firing_id, "error", error=f"{type(exc).__name__}: {exc}")
            raise
        _close(engine, firing_id, "error" if summary["problems"] else "done",
               runs={f"{v}/{su}": st for v, su, st in summary["runs"]}, alerts={"firing": summary["alerts_firing"]},
               error="; ".join(summary["problems"])[:4000] or None)
    return summary


def _close(engine: Engine, firing_id: int, status: str, **fields: Any) -> None:
    with Session(engine) as s, s.begin():
        row = s.get(Firing, firing_id)
        assert row is not None
        row.status, row.finished_at = status, utcnow()
        for key, value in fields.items():
            setattr(row, key, value)


def _fire(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str, engine: Engine) -> dict[str, Any]:
    chosen, variants = choose(cfg, spec.suites, spec.variants)
    logs = log_dir(config_path)
    problems: list[str] = []
    outcomes: list[Any] = []
    names = {v.name for v in variants}
    gated = {v.name: cfg.baselines[v.family] for v in variants if spec.sequential and cfg.baselines.get(v.family) in names
             and cfg.baselines[v.family] != v.name}  # compared by a sequential gate: asked only in it
    if cfg.executor.type == "ray":  # one Ray task per variant, placed by its resources (evalsvc.cluster)
        from evalsvc.cluster.executor import run_on_ray

        try:
            outcomes = run_on_ray(cfg, engine, chosen, variants, slot, logs)
        except ConfigError:  # refused before any task ran (the cluster, the store, a variant no node takes): a
            raise  # configuration error of the firing, not an endpoint problem of each variant
        except Exception as exc:
            for v in variants:
                outcomes += _failed(engine, chosen, v.name, slot, exc, problems)
    else:
        for v in variants:
            if v.name in gated:
                continue
            try:
                outcomes.extend(Runner(cfg, engine, progress=False, log_dir=logs).run_variant(chosen, v, slot=slot))
            except StoreError:  # no variant can run, nothing can be alerted: the firing stops (resumed later)
                raise
            except Exception as exc:  # this variant fails; the others still run, compare and alert
                outcomes += _failed(engine, chosen, v.name, slot, exc, problems)
    reports = {}
    for name, base in gated.items():
        try:
            reports[name], made = _sequential(cfg, engine, chosen, spec, slot, name, base, logs)
            outcomes += made
        except StoreError:
            raise
        except Exception as exc:
            outcomes += _failed(engine, chosen, name, slot, exc, problems)
    dash = cfg.alerts.dashboard_url if cfg.alerts else None
    firing, checked = alerts.run_conditions(outcomes, dash)

    def add(what: str, step: Any) -> None:
        try:
            f, c = step()
        except Exception as exc:  # this part decides nothing this time; the rest still alerts
            log.exception("schedule %s slot %s: %s failed", spec.name, slot, what)
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
            return
        firing.extend(f)
        checked.extend(c)

    if spec.compare:
        made = ({(o.variant, o.suite): o.run_id for o in outcomes if o.status == "succeeded"}
                if cfg.executor.type == "ray" else None)  # exactly the runs made: a worker's fingerprint may differ
        for name, report in reports.items():
            if report is not None:
                add(f"comparing {name} with {gated[name]} sequentially",
                    lambda report=report: alerts.regression_conditions(report, dash))
        for v in variants:
            if v.name in gated:
                continue
            if cfg.baselines.get(v.family) in names and cfg.baselines.get(v.family) != v.name:
                add(f"comparing {v.name} with {cfg.baselines[v.family]}", lambda v=v: _regressions(engine, cfg, chosen,
                                                                                                   v, dash, made))
    if cfg.drift.alerts:  # every watched series the firing touched
        add("the drift check", lambda: alerts.drift_conditions(check_drift(  # each series at its family's level
            engine, families(cfg, engine), sorted({o.suite for o in outcomes}), sorted({o.variant for o in outcomes})), dash))
        add("the judge check", lambda: alerts.judge_conditions(judge_findings(engine, cfg.drift.warmup, cfg.drift.alpha),
                                                               dash))
    alerter = alerts.Alerter(engine, alerts.build_sinks(cfg.alerts))
    checked += alerter.retired_keys({v.name for v in cfg.variants})  # a removed variant's problems are over
    alerter.sync(firing, checked)
    summary = {"schedule": spec.name, "slot": slot, "runs": [(o.variant, o.suite, o.status) for o in outcomes],
               "errors": [o.error if o.status != "succeeded" else None for o in outcomes],
               "alerts_firing": sorted({c.key for c in firing}), "problems": problems}
    log.info("schedule %s slot %s: %s", spec.name, slot, summary)
    return summary


def _sequential(cfg: Config, engine: Engine, chosen: list[Any], spec: ScheduleSpec, slot: str, candidate: str,
                baseline: str, logs: Any) -> tuple[Report | None, list[Outcome]]:
    """The candidate against its baseline by the sequential gate (``service.sequential_gate``): the report (None where
    a run failed) and the runs it made. The case order's seed comes from the schedule, the slot and the candidate, so
    a firing fired again after a kill resumes its gate where it stopped (no case asked twice)."""
    from evalsvc.service.gate import run_gate

    seed = int(hashlib.sha256(f"{spec.name}:{slot}:{candidate}".encode()).hexdigest()[:8], 16) % 2**31
    seq = (cfg.gate.sequential or SequentialGate()).model_copy(update={"seed": seed})
    result = run_gate(cfg, engine, chosen, candidate, baseline, sequential=seq, progress=False, logs=logs)
    return result.report, result.made


def _regressions(engine: Engine, cfg: Config, chosen: list[Any], v: Any, dash: str | None,
                 made: dict[tuple[str, str], int] | None = None) -> tuple[list[Any], list[str]]:
    firing: list[Any] = []
    checked: list[str] = []
    for report in compare_with_baselines(engine, cfg, chosen, [v], made):
        f, c = alerts.regression_conditions(report, dash)
        firing += f
        checked += c
    return firing, checked


def _failed(engine: Engine, suites: list[Any], variant: str, slot: str, exc: Exception, problems: list[str]) -> list[Outcome]:
    """A variant whose runs raised what no run should: its runs fail with the cause (an endpoint alert names it)."""
    log.error("variant %s in slot %s failed", variant, slot, exc_info=exc)
    cause = f"{type(exc).__name__}: {exc}"
    problems.append(f"{variant}: {cause}")
    try:
        close_abandoned_runs(engine, f"evalsvc failed: {cause}; re-run to resume", status="failed", slot=slot,
                             variant=variant)
    except Exception:  # the store itself is gone: the runs stay running, and serve's next start closes them
        log.exception("could not mark the runs of %s failed", variant)
    return [Outcome(run_id=0, suite=s.name, variant=variant, status="failed", n_cases=len(getattr(s, "cases", [])),
                    error=f"evalsvc failed: {cause}") for s in suites]


def history(engine: Engine, name: str | None = None, limit: int = 20) -> list[Any]:
    """Past firings, newest first, as plain rows."""
    q = select(Firing.schedule, Firing.slot, Firing.started_at, Firing.finished_at, Firing.status, Firing.runs,
               Firing.alerts, Firing.error).order_by(Firing.id.desc()).limit(limit)
    if name:
        q = q.where(Firing.schedule == name)
    with Session(engine) as s:
        return list(s.execute(q).all())



