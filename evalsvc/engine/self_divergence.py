"""A temperature-0 run's self-divergence: its next-token distributions against the previous run of its series.

The upstream-change check (``engine/upstream.py``) compares each temperature-0 run with the previous run of the same
fingerprint and suite version. Where both stored log-probabilities (``divergence.top_logprobs``), this module measures
the mean per-case top-k KL(previous ‖ this run) over the cases answered in both (``stats.divergence.compare_answers``:
the positions predicted from a shared context), stores it on the run (``runs.self_kld``, ``runs.self_kld_cases``) and
judges it against the series' own earlier values (``stats.self_divergence.excess``). A continuous signal next to the
count of moved outputs: a model swapped for one that gives the same answers from other distributions moves it on its
first run.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, aliased

from evalsvc.stats.divergence import compare_answers, from_stored
from evalsvc.stats.self_divergence import HISTORY, Excess, excess
from evalsvc.store.schema import CaseResult, Run

ANSWERED = ("ok", "judge_error", "generated")


def measure(session: Session, run: Run, prev: Run) -> None:
    """Set ``run.self_kld`` (None where no case has log-probabilities in both runs) and ``run.self_kld_cases``; the
    pairs stream through, so a run of any size costs the memory of one case."""
    before, now = aliased(CaseResult), aliased(CaseResult)
    pairs = select(before.logprobs, now.logprobs).join(
        now, (now.case_id == before.case_id) & (now.sample_index == before.sample_index)).where(
        before.run_id == prev.id, now.run_id == run.id, before.sample_index == 0, before.status.in_(ANSWERED),
        now.status.in_(ANSWERED), before.logprobs.is_not(None), now.logprobs.is_not(None))
    total, cases = 0.0, 0
    for b, c in session.execute(pairs.execution_options(yield_per=500)):
        if b is None or c is None:  # a JSON null
            continue
        kld = compare_answers(from_stored(b), from_stored(c)).kld
        if kld is not None:
            total, cases = total + kld, cases + 1
    run.self_kld, run.self_kld_cases = (total / cases, cases) if cases else (None, None)


def judge(session: Session, run: Run, series: tuple[ColumnElement[Any], ...], level: float) -> Excess | None:
    """``run.self_kld`` against the newest HISTORY self-divergences of the series' earlier unflagged runs; None while it
    has too few (or the run has none)."""
    if run.self_kld is None:
        return None
    history = session.scalars(select(Run.self_kld).where(*series, Run.self_kld.is_not(None), Run.upstream_change.is_(None))
                              .order_by(Run.id.desc()).limit(HISTORY)).all()
    return excess(run.self_kld, [float(v) for v in history], level)


def describe(found: Excess, cases: int, prev_id: int) -> str:
    return (f"upstream change suspected: self-divergence {found.value:.4f} nats (mean top-k KL over {cases} cases from "
            f"run {prev_id} with the same fingerprint) beyond the series' own noise, typically {found.typical:.2g} over "
            f"its {found.history} earlier runs (one-sided prediction bound {found.bound:.2g})")
