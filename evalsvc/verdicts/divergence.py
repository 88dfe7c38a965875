"""The gate's divergence rows: how far the candidate's next-token distributions moved from the baseline's.

Shown next to the verdict (``Report.divergence``) unless ``gate.margins`` names one: ``kld: {max: 0.05}`` or
``same_output: {min: 0.9}`` make that statistic decide in every suite, like a speed metric with a margin of its own
(``decision.decide_gate``'s strict rows). A deciding statistic is a ``Comparison`` against the baseline's own value (a
KL of 0 from itself, always the same output), oriented like every comparison (higher is better), so the bound reads
as a non-inferiority margin:

- ``kld``, lower is better: Δ = 0 − kld and m = max, so a pass (lo > −m) is the upper end of the kld interval below
  max, a regression (hi < −m) its lower end above max; the paired BCa bootstrap over cases [efron-tibshirani1993].
- ``same_output``, pass/fail per case: Δ = share − 1 and m = 1 − min, so a pass is the lower end of the share's
  interval above min, a regression its upper end below min; Tango's score interval [tango1998].

KL measures how much the distribution moved, not whether the answers got worse (docs/divergence.md): a team that
makes it decide sets the bound it accepts. A suite has rows only when both of its runs stored log-probabilities
(``divergence.top_logprobs`` > 0 and endpoints that give them) for the same cases; where a deciding statistic has none,
the suite cannot be decided and vetoes a pass.

Each case is compared teacher-forced where the candidate run was scored on the baseline run's answer
(``store.schema.ForcedCase``, written by ``engine/teacher_forced.py`` while the gate's candidate server was up): its
``kld`` covers every token of the answer and ``top1_agreement`` is shown. Every other case both runs stored
log-probabilities for is compared on the shared prefix; a case that could not be forced (an endpoint error, another
tokenizer) falls back to it with a note. Every row, and a deciding statistic's method, names the mode it was measured in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config import GateConfig
from evalsvc.config.gate import DIVERGENCE_BOUNDS
from evalsvc.stats.binary import compare_binary
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.comparison import Comparison
from evalsvc.stats.divergence import MODES, CaseDivergence, Summary, compare_answers, from_stored, mode_of, summarise
from evalsvc.store.schema import CaseResult, ForcedCase

LOWER_IS_BETTER = frozenset({"kld"})
SHOWN = "shown"  # a stored divergence row's verdict: it decides nothing
KIND = "divergence"  # a stored divergence row's kind (a deciding one is stored as the comparison it is)
OWN_VALUE = {"kld": 0.0, "same_output": 1.0, "delta_p": 0.0}  # the baseline's value against itself (stored verdicts)
NO_LOGPROBS = ("both runs stored no log-probabilities for the same cases (divergence.top_logprobs: 0, or an endpoint "
               "that refuses them); measure both with divergence.top_logprobs > 0 on endpoints that return them")


@dataclass
class Divergence:
    """Per suite: the shown statistics, the deciding comparisons (``gate.margins``) and the suites that cannot decide."""

    shown: list[tuple[str, Summary]] = field(default_factory=list)
    gated: list[tuple[str, Comparison]] = field(default_factory=list)
    undecided: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # cases that fell back from teacher forcing, and why


def _logprobs(s: Session, run_id: int) -> dict[str, list[Any]]:
    """Each ok case's stored log-probabilities (its first sample: at temperature 0 a case has one answer)."""
    rows = s.execute(select(CaseResult.case_id, CaseResult.logprobs).where(
        CaseResult.run_id == run_id, CaseResult.status == "ok", CaseResult.sample_index == 0,
        CaseResult.logprobs.is_not(None)))
    return {case_id: value for case_id, value in rows if value is not None}


def per_case(s: Session, base_run_id: int, cand_run_id: int) -> dict[str, CaseDivergence]:
    """Each case scored by teacher forcing, and each other case both runs stored log-probabilities for, compared token
    by token on the shared prefix (the Compare page shows these)."""
    forced = {row.case_id: _forced(row) for row in _forced_rows(s, base_run_id, cand_run_id) if row.status == "ok"}
    b, c = _logprobs(s, base_run_id), _logprobs(s, cand_run_id)
    shared = {k: compare_answers(from_stored(b[k]), from_stored(c[k])) for k in b.keys() & c.keys() if k not in forced}
    return dict(sorted({**shared, **forced}.items()))


def fallbacks(s: Session, base_run_id: int, cand_run_id: int) -> dict[str, str]:
    """Per case that teacher forcing could not score (an endpoint error, or a skipped case), why."""
    return {row.case_id: row.note or row.status for row in _forced_rows(s, base_run_id, cand_run_id) if row.status != "ok"}


def _forced_rows(s: Session, base_run_id: int, cand_run_id: int) -> Sequence[ForcedCase]:
    return s.scalars(select(ForcedCase).where(ForcedCase.baseline_run_id == base_run_id,
                                              ForcedCase.candidate_run_id == cand_run_id)).all()


def _forced(row: ForcedCase) -> CaseDivergence:
    return CaseDivergence(kld=row.kld, same_output=row.same_output or 0, first_divergence=row.first_divergence or 0,
                          delta_p=row.delta_p, positions=row.positions or 0, baseline_token=row.baseline_token,
                          candidate_token=row.candidate_token, top1_agreement=row.top1_agreement, mode="teacher_forced")


def _fallback_note(name: str, why: dict[str, str]) -> str:
    first = next(iter(sorted(why.items())))
    return (f"{name}: {len(why)} case(s) could not be scored teacher-forced and are compared on the shared prefix "
            f"instead (where both runs stored log-probabilities), e.g. {first[0]}: {first[1]}")


def gated_comparison(metric: str, cases: Sequence[CaseDivergence], gate: GateConfig) -> Comparison | None:
    """The deciding comparison of one divergence statistic against its bound (module docstring); None when no case
    has a value."""
    bound = gate.margins[metric]
    if metric == "kld":
        values = [c.kld for c in cases if c.kld is not None]
        if not values or bound.max is None:
            return None
        return compare_continuous("kld", [0.0] * len(values), [-v for v in values], bound.max, gate.alpha)
    if not cases or bound.min is None:
        return None
    return compare_binary("same_output", [1.0] * len(cases), [float(c.same_output) for c in cases], 1.0 - bound.min,
                          gate.alpha)


def measure(s: Session, runs: dict[str, tuple[Any, Any]], gate: GateConfig, pooled_scope: str) -> Divergence:
    """Per suite, the candidate's divergence from the baseline over the cases both runs have log-probabilities for;
    with more than one such suite, the statistics over all their cases too (``pooled_scope``: shown, every case once)."""
    out = Divergence()
    deciding = [m for m in DIVERGENCE_BOUNDS if m in gate.margins]
    pooled: list[CaseDivergence] = []
    suites = 0
    for name, (base, cand) in runs.items():
        if base is None or cand is None:
            continue
        cases = list(per_case(s, base.id, cand.id).values())
        why = fallbacks(s, base.id, cand.id)
        if why:
            out.notes.append(_fallback_note(name, why))
        pooled += cases
        suites += bool(cases)
        gated = {m: _named(gated_comparison(m, cases, gate), cases) for m in deciding}
        out.gated += [(name, c) for c in gated.values() if c is not None]
        out.notes += [f"{name}: {c.metric} decides (gate.margins) on {c.n} cases, measured "
                      f"{MODES.get(mode_of(cases), 'in both modes (some cases fell back to the shared prefix)')}"
                      for c in gated.values() if c is not None]
        missing = [m for m, c in gated.items() if c is None]
        if missing:
            out.undecided.append((name, f"{', '.join(missing)} decide (gate.margins) but {NO_LOGPROBS}"))
        if cases:
            out.shown += [(name, row) for row in summarise(cases, gate.alpha) if row.metric not in gated]
    if suites > 1:
        out.shown += [(pooled_scope, row) for row in summarise(pooled, gate.alpha)]
    return out


def _named(c: Comparison | None, cases: Sequence[CaseDivergence]) -> Comparison | None:
    """A deciding statistic's comparison, its method naming the mode its cases were measured in."""
    return None if c is None else replace(c, method=f"{c.method}; {MODES.get(mode_of(cases), 'mixed modes')}")


def recorded(row: Summary) -> dict[str, Any] | None:
    """A shown statistic as a stored verdict row's numbers, read like a comparison's: the baseline's own value, the
    candidate's, and the difference oriented so that a negative one is a loss (``store.schema.VerdictRecord``); None
    for a statistic with no baseline value to hold it against (the median first divergence)."""
    own = OWN_VALUE.get(row.metric)
    if own is None:
        return None
    lower = row.metric in LOWER_IS_BETTER
    low, high = (own - row.ci_high, own - row.ci_low) if lower else (row.ci_low - own, row.ci_high - own)
    return {"metric": row.metric, "kind": KIND, "lower_is_better": lower, "n": row.n, "baseline_mean": own,
            "candidate_mean": row.estimate, "delta": own - row.estimate if lower else row.estimate - own,
            "ci_low": low, "ci_high": high}
