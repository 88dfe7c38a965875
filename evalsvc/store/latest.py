"""Which run is "the" run: one answer for the gate, the arena, the dashboard and `evalsvc results`.

The latest run of a series (suite version x variant fingerprint) is its newest succeeded run, never a re-judged
copy of an older run's answers (slot ``rejudge:...``, ``engine/rejudge.py``): those answers are not the newest.
Callers that know a variant only by name (the dashboard, `evalsvc results`) get the latest run
of the series that name's newest succeeded run belongs to: the same run, found by name. The
*newest attempt* (any status) is a different question, asked only to show failures.

Everything here selects columns into plain rows; nothing returns an entity to mutate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from evalsvc.store.schema import Run

BY_SERIES = (Run.suite_version, Run.variant_fingerprint)
BY_NAME = (Run.suite_name, Run.variant_name)
REJUDGED = "rejudge:"  # the slot prefix of a run that holds another run's answers judged again
RUN_COLUMNS = (Run.id, Run.suite_name, Run.suite_version, Run.variant_name, Run.variant_fingerprint, Run.created_at,
               Run.upstream_change, Run.evalsvc_version)


def latest_ids(by: Sequence = BY_SERIES, status: str | None = "succeeded") -> Select:
    """Ids of the latest run per group (``by``: BY_SERIES or BY_NAME); ``status=None``: the newest attempt."""
    q = select(func.max(Run.id).label("id")).where(Run.slot.not_like(f"{REJUDGED}%")).group_by(*by)
    return q.where(Run.status == status) if status else q


def rejudged_ids() -> Select:
    """Ids of the runs that hold another run's answers judged again: no new observation of their variant, so they are
    left out of its time series (drift, the dashboard's trends) as out of "the latest run"."""
    return select(Run.id).where(Run.slot.like(f"{REJUDGED}%"))


def latest_runs(session: Session, suite_version: str, fingerprint: str, k: int = 1) -> list:
    """The ``k`` newest succeeded runs of one series, newest first (k=2: an A/A comparison's pair)."""
    return list(session.execute(select(*RUN_COLUMNS).where(
        Run.suite_version == suite_version, Run.variant_fingerprint == fingerprint, Run.status == "succeeded",
        Run.slot.not_like(f"{REJUDGED}%"))
        .order_by(Run.id.desc()).limit(k)).all())


def latest_pairs(session: Session, baseline: str, candidate: str, suite_names: Sequence[str] | None = None) -> dict:
    """By variant name, from the store alone: per suite, the latest runs of both names on the newest suite version
    both have one on: {suite: (baseline row, candidate row)} (what the dashboard compares)."""
    if baseline == candidate:
        return {}
    q = select(*RUN_COLUMNS).where(Run.id.in_(latest_ids((Run.suite_name, Run.suite_version, Run.variant_name))),
                                   Run.variant_name.in_((baseline, candidate)))
    if suite_names:
        q = q.where(Run.suite_name.in_(tuple(suite_names)))
    newest = {(r.suite_name, r.suite_version, r.variant_name): r for r in session.execute(q.order_by(Run.id))}
    pairs: dict = {}
    for (suite, version, name), run in sorted(newest.items(), key=lambda kv: kv[1].id):
        other = newest.get((suite, version, candidate if name == baseline else baseline))
        if other is not None:
            pairs[suite] = (run, other) if name == baseline else (other, run)
    return pairs


def runs_by_id(session: Session, ids: Sequence[int]) -> dict[int, Any]:
    """These runs as plain rows (with status, finish time and evalsvc version), by id."""
    rows = session.execute(select(*RUN_COLUMNS, Run.status, Run.finished_at).where(Run.id.in_(tuple(ids))))
    return {r.id: r for r in rows}
