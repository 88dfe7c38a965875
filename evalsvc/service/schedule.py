"""One firing of a schedule: its runs, the comparisons with each family's baseline, drift, and the alerts.

Each firing is recorded (schedule, slot, status, runs, alerts) so `evalsvc schedule history`
and the dashboard can show it. The slot is the schedule's fire time: a run key never executes
twice, so a firing repeated after a restart resumes instead of repeating.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc import alerts
from evalsvc.config import Config, ScheduleSpec
from evalsvc.engine.runner import Runner
from evalsvc.service.drift import check_drift, judge_findings
from evalsvc.service.runs import choose, log_dir, open_store
from evalsvc.store.schema import Firing, utcnow
from evalsvc.verdicts.record import compare_with_baselines

log = logging.getLogger(__name__)


def fire(cfg: Config, config_path: str, spec: ScheduleSpec, slot: str, submission_id: str | None = None) -> dict[str, Any]:
    """Run the schedule's suites x variants under ``slot``, compare, alert; returns the firing's summary.

    ``submission_id``: this is the driver of that Ray Job (`evalsvc fire`), whose firing row `evalsvc serve` made."""
    engine = open_store(cfg)
    with Session(engine) as s, s.begin():
        row = s.scalars(select(Firing).where(Firing.submission_id == submission_id)).first() if submission_id else None
        if row is None:
            row = Firing(schedule=spec.name, slot=slot, status="running", runs={}, alerts={}, submission_id=submission_id)
            s.add(row)
        row.status, row.error = "running", None
        s.flush()
        firing_id = row.id
    try:
        summary = _fire(cfg, config_path, spec, slot, engine)
    except Exception as exc:
        _close(engine, firing_id, "error", error=f"{type(exc).__name__}: {exc}")
        raise
    _close(engine, firing_id, "done", runs={f"{v}/{su}": st for v, su, st in summary["runs"]},
           alerts={"firing": summary["alerts_firing"]})
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
    outcomes = []
    if cfg.executor.type == "ray":  # one Ray task per variant, placed by its resources (evalsvc.cluster)
        from evalsvc.cluster.executor import run_on_ray

        outcomes = run_on_ray(cfg, engine, chosen, variants, slot, logs)
    else:
        for v in variants:
            outcomes.extend(Runner(cfg, engine, progress=False, log_dir=logs).run_variant(chosen, v, slot=slot))
    dash = cfg.alerts.dashboard_url if cfg.alerts else None
    firing, checked = alerts.run_conditions(outcomes, dash)
    if spec.compare:
        names = {v.name for v in variants}
        paired = [v for v in variants if cfg.baselines.get(v.family) in names]
        made = ({(o.variant, o.suite): o.run_id for o in outcomes if o.status == "succeeded"}
                if cfg.executor.type == "ray" else None)  # exactly the runs made: a worker's fingerprint may differ
        for report in compare_with_baselines(engine, cfg, chosen, paired, made):
            f, c = alerts.regression_conditions(report, dash)
            firing += f
            checked += c
    if cfg.drift.alerts:  # every series the firing touched, decided together (Holm across them)
        findings = check_drift(engine, sorted({o.suite for o in outcomes}), sorted({o.variant for o in outcomes}),
                               cfg.drift.metrics, cfg.drift.warmup, cfg.drift.alpha)
        f, c = alerts.drift_conditions(findings, dash)
        firing += f
        checked += c
        f, c = alerts.judge_conditions(judge_findings(engine, cfg.drift.warmup, cfg.drift.alpha), dash)
        firing += f
        checked += c
    alerter = alerts.Alerter(engine, alerts.build_sinks(cfg.alerts))
    checked += alerter.retired_keys({v.name for v in cfg.variants})  # a removed variant's problems are over
    alerter.sync(firing, checked)
    summary = {"schedule": spec.name, "slot": slot, "runs": [(o.variant, o.suite, o.status) for o in outcomes],
               "errors": [o.error if o.status != "succeeded" else None for o in outcomes],
               "alerts_firing": sorted({c.key for c in firing})}
    log.info("schedule %s slot %s: %s", spec.name, slot, summary)
    return summary


def history(engine: Engine, name: str | None = None, limit: int = 20) -> list[Any]:
    """Past firings, newest first, as plain rows."""
    q = select(Firing.schedule, Firing.slot, Firing.started_at, Firing.finished_at, Firing.status, Firing.runs,
               Firing.alerts, Firing.error).order_by(Firing.id.desc()).limit(limit)
    if name:
        q = q.where(Firing.schedule == name)
    with Session(engine) as s:
        return list(s.execute(q).all())



