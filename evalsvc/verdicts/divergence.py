"""The gate's divergence rows: how far the candidate's next-token distributions moved from the baseline's.

Informational only: shown next to the verdict (``Report.divergence``), never deciding it. KL measures how much the
distribution moved, not whether the answers got worse (docs/divergence.md). A suite has rows only when both of its
runs stored log-probabilities (``divergence.top_logprobs`` > 0 and endpoints that give them) for the same cases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.stats.divergence import Summary, compare_answers, from_stored, summarise
from evalsvc.store.schema import CaseResult


def _logprobs(s: Session, run_id: int) -> dict[str, list[Any]]:
    """Each ok case's stored log-probabilities (its first sample: at temperature 0 a case has one answer)."""
    rows = s.execute(select(CaseResult.case_id, CaseResult.logprobs).where(
        CaseResult.run_id == run_id, CaseResult.status == "ok", CaseResult.sample_index == 0,
        CaseResult.logprobs.is_not(None)))
    return {case_id: value for case_id, value in rows if value is not None}


def divergence_rows(s: Session, runs: dict[str, tuple[Any, Any]], alpha: float) -> list[tuple[str, Summary]]:
    """Per suite, the candidate's divergence from the baseline over the cases both runs have log-probabilities for."""
    out: list[tuple[str, Summary]] = []
    for name, (base, cand) in runs.items():
        if base is None or cand is None:
            continue
        b, c = _logprobs(s, base.id), _logprobs(s, cand.id)
        shared = sorted(b.keys() & c.keys())
        if shared:
            cases = [compare_answers(from_stored(b[k]), from_stored(c[k])) for k in shared]
            out += [(name, row) for row in summarise(cases, alpha)]
    return out
