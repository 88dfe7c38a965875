"""Stored verdicts: every comparison the gate, a schedule or `evalsvc run` makes is kept, metric by metric.

The dashboard's Overview reads these rows instead of re-pairing case results on every page
load, so it stays fast on a big store and shows exactly the verdict that was alerted on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, null
from sqlalchemy.orm import Session

from evalsvc.store.schema import Run, VerdictRecord
from evalsvc.verdicts import divergence
from evalsvc.verdicts.compare import NotComparable, Report, compare, compare_runs
from evalsvc.verdicts.health import HEALTH
from evalsvc.verdicts.sequential import SequentialSummary

log = logging.getLogger(__name__)
MAX_N_NEEDED = 2**31 - 1  # verdicts.n_needed is an INTEGER: past it (a delta next to its margin) no n is stored


def _storable(n_needed: int | None) -> int | None:
    """``n_needed`` as the column can hold it: billions of cases decide nothing in practice, so none is kept."""
    return n_needed if n_needed is None or n_needed <= MAX_N_NEEDED else None


def record(engine: Engine, report: Report) -> str:
    """Write one row per (scope, metric) of the report; returns the report id that groups them."""
    report_id = uuid.uuid4().hex
    pooled_rule = report.decision is not None and report.decision.rule == "pooled"
    alone = set(report.decision.alone) if report.decision else set()
    pooled = [c for _, c in report.pooled if pooled_rule and c.metric not in alone]
    deciding = {id(c) for c in [*(c for _, c in report.primary), *pooled]}  # the rows that decide or can veto
    stop = stopped(report.sequential) or null()  # SQL NULL for a fixed comparison, not the JSON value null
    rows = []
    served = [(HEALTH, report.health)] if report.health is not None else []
    for scope, c in [*report.pooled, *report.primary, *report.secondary, *served, *report.speed]:
        base_run, cand_run = report.runs.get(scope, (None, None))
        base, cand = report.measured_means(c)
        lower = c.metric in report.lower_is_better
        rows.append(VerdictRecord(
            report_id=report_id, baseline=report.baseline, candidate=report.candidate, scope=scope,
            baseline_run_id=base_run.id if base_run else None, candidate_run_id=cand_run.id if cand_run else None,
            candidate_run_ts=cand_run.created_at if cand_run else None, metric=c.metric, kind=c.kind,
            primary=id(c) in deciding, lower_is_better=lower, n=c.n, baseline_mean=base, candidate_mean=cand,
            delta=c.delta, ci_low=c.ci_low, ci_high=c.ci_high, margin=c.margin, verdict=c.verdict,
            flips_down=c.flips_down, flips_up=c.flips_up, n_needed=_storable(c.n_needed), overall=report.verdict,
            sequential=stop))
    for scope, summary in report.divergence:  # shown, never deciding (the Trends and Quality-vs-speed pages plot kld)
        numbers = divergence.recorded(summary)
        if numbers is not None:
            base_run, cand_run = report.runs.get(scope, (None, None))
            rows.append(VerdictRecord(
                report_id=report_id, baseline=report.baseline, candidate=report.candidate, scope=scope,
                baseline_run_id=base_run.id if base_run else None, candidate_run_id=cand_run.id if cand_run else None,
                candidate_run_ts=cand_run.created_at if cand_run else None, primary=False, margin=0.0,
                verdict=divergence.SHOWN, flips_down=0, flips_up=0, n_needed=None, overall=report.verdict, sequential=stop,
                **numbers))
    with Session(engine) as s, s.begin():
        s.add_all(rows)
    return report_id


def stopped(summary: SequentialSummary | None) -> dict[str, Any] | None:
    """Where a sequential gate stopped, as its verdict rows keep it (None for a fixed comparison)."""
    if summary is None or not summary.looks:
        return None
    return {"look": summary.looks[-1].look, "looks": len(summary.planned), "asked": summary.asked, "total": summary.total,
            "seed": summary.seed, "slot": summary.slot, "stopped_early": summary.stopped_early,
            "requests_saved": summary.requests_saved}


def compare_with_baselines(engine: Engine, cfg, suites: list, variants: Iterable,
                           made: Mapping[tuple[str, str], int] | None = None) -> list[Report]:
    """Compare each variant with its family's baseline on ``suites`` and store the verdicts.

    Variants without a configured baseline, and the baselines themselves, are skipped; so is a
    pair the store cannot compare yet (no succeeded run of one of them): that is logged, not raised.
    ``made`` ((variant, suite) -> run id, the succeeded runs a firing just made): exactly those runs are paired,
    not the latest of the fingerprints this process computes (a Ray worker may have computed another).
    """
    reports = []
    for v in variants:
        base = cfg.baselines.get(v.family)
        if base is None or base == v.name:
            continue
        try:
            report = compare(engine, cfg, suites, base, v.name) if made is None else _compare_made(
                engine, cfg, suites, base, v.name, made)
        except NotComparable as exc:
            log.info("no comparison of %s with %s: %s", v.name, base, exc)
            continue
        record(engine, report)
        reports.append(report)
    return reports


def _compare_made(engine: Engine, cfg, suites: list, baseline: str, candidate: str,
                  made: Mapping[tuple[str, str], int]) -> Report:
    missing = [f"{who} on {suite.name}" for suite in suites for who in (baseline, candidate) if (who, suite.name) not in made]
    if missing:
        raise NotComparable(f"no succeeded run of {', '.join(missing)} in this firing")
    if any(made[(baseline, suite.name)] == made[(candidate, suite.name)] for suite in suites):
        raise NotComparable(f"{baseline} and {candidate} share their runs (one fingerprint): nothing to compare")
    with Session(engine) as s:
        runs = {suite.name: (s.get(Run, made[(baseline, suite.name)]), s.get(Run, made[(candidate, suite.name)]))
                for suite in suites}
        return compare_runs(s, cfg.gate, baseline, candidate, runs)
