"""A sequential gate's verdict as the Compare page marks it: the look it stopped at and the cases it asked, read from
the stop its verdict rows keep (``verdicts/record.py``, docs/gate.md "Sequential gate")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from evalsvc.store.schema import VerdictRecord


def sequential_verdict(engine: Engine, baseline: str, candidate: str) -> dict[str, Any] | None:
    """The newest stored comparison of ``candidate`` with ``baseline`` when a sequential gate made it: its stop
    (look, looks, asked, total, seed, slot, stopped_early, requests_saved) with its ``verdict``, when it was stored
    (``at``) and its candidate runs (``runs``); None when that comparison was a fixed one, or there is none."""
    mine = (VerdictRecord.candidate == candidate, VerdictRecord.baseline == baseline)
    top = select(func.max(VerdictRecord.id)).where(*mine).scalar_subquery()  # read from the index alone
    newest = select(VerdictRecord.report_id).where(VerdictRecord.id == top).scalar_subquery()
    with engine.connect() as conn:
        rows = conn.execute(select(VerdictRecord.sequential, VerdictRecord.overall, VerdictRecord.created_at,
                                   VerdictRecord.candidate_run_id).where(*mine, VerdictRecord.report_id == newest)).all()
    stop = next((r.sequential for r in rows if r.sequential), None)
    if stop is None:
        return None
    return {**stop, "verdict": rows[0].overall, "at": rows[0].created_at,
            "runs": sorted({r.candidate_run_id for r in rows if r.candidate_run_id is not None})}


def note(stop: dict[str, Any]) -> str:
    """Where the gate stopped, in one line: "sequential: stopped at look 2 of 5 (400 of 1000 cases asked, ...)"."""
    if stop["stopped_early"]:
        return (f"sequential: stopped at look {stop['look']} of {stop['looks']} ({stop['asked']} of {stop['total']} "
                f"cases asked, {stop['requests_saved']} requests not sent; seed {stop['seed']})")
    return (f"sequential: ran to its last look ({stop['look']} of {stop['looks']}, all {stop['total']} cases asked; "
            f"seed {stop['seed']})")
