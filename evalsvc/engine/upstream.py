"""Upstream change detection: temperature-0 outputs that move while the variant's fingerprint does not.

Behind an API, a model can be swapped, re-quantized or re-templated without notice. At
temperature 0 the same requests to the same fingerprint should give the same answers, but
vLLM and hosted APIs are not batch-invariant: a few percent of outputs move on every run with
nothing changed. So each run stores how many of its outputs differ from the previous run of the
series (fingerprint x suite version), the series learns its own output noise from its earlier
runs, and "upstream change suspected" is raised only when a run's share of moved outputs is
higher than that noise by more than chance: Fisher's exact one-sided test of the two shares
(this run against the earlier runs pooled), each run at alpha / 20, so the chance of any false
flag over 20 runs of a stable series is at most alpha (Bonferroni). The first comparison of a
series only learns. Where the runs stored log-probabilities, the run's self-divergence (mean top-k
KL from the previous run, ``engine/self_divergence.py``) is judged against the series' own too,
and alpha is split between the two tests (each at alpha / 40). This is a separate signal from
quality: the answers may be as good, only different.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from sqlalchemy import Select, Subquery, func, select
from sqlalchemy.orm import Session

from evalsvc.engine import self_divergence
from evalsvc.store.schema import CaseResult, Run

_ANSWERED = ("ok", "judge_error", "generated")


def _outputs(run_id: int) -> Subquery:
    return select(CaseResult.case_id, CaseResult.sample_index, func.coalesce(CaseResult.output, "").label("out")).where(
        CaseResult.run_id == run_id, CaseResult.status.in_(_ANSWERED)).subquery()


def output_hash(session: Session, run_id: int) -> str:
    """A hash of the run's (case, sample, output) triples in any order: the sum, modulo 2^256, of each triple's
    sha256. The rows stream through it, so a run of any size costs constant memory."""
    total = 0
    for cid, s, out in session.execute(select(_outputs(run_id)).execution_options(yield_per=2000)):
        total += int.from_bytes(hashlib.sha256(f"{cid}\x1f{s}\x1f{out}".encode()).digest(), "big")
    return f"{total % (1 << 256):064x}"


LOOKS = 20  # runs over which the false-flag chance is bounded


def excess_p(moved: int, compared: int, moved_before: int, compared_before: int) -> float:
    """One-sided p-value of Fisher's exact test that this run's share moved exceeds the earlier runs' share:
    P(X >= moved) for X hypergeometric (all moved outputs, split between now and before by chance)."""
    total, drawn = moved + moved_before, compared
    population = compared + compared_before

    def log_choose(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    denominator = log_choose(population, total)
    terms = [log_choose(drawn, k) + log_choose(compared_before, total - k) - denominator
             for k in range(moved, min(total, drawn) + 1) if total - k <= compared_before]
    return min(1.0, sum(math.exp(t) for t in terms))


def check(session: Session, run: Run, alpha: float = 0.05) -> str | None:
    """Compare ``run`` (hash already set) with the previous run of the same fingerprint and suite version, record how
    many outputs moved, and say "upstream change suspected" when that is more than the series' own output noise.

    Only outputs of cases answered in both runs count: a case that errored in one of them is no change.
    """
    series = (Run.suite_version == run.suite_version, Run.variant_fingerprint == run.variant_fingerprint, Run.id < run.id,
              Run.status == "succeeded")
    prev = session.scalars(select(Run).where(*series, Run.output_hash.is_not(None)).order_by(Run.id.desc()).limit(1)).first()
    if prev is None:
        return None
    now, before = _outputs(run.id), _outputs(prev.id)
    shared = select(now.c.case_id).select_from(now.join(
        before, (now.c.case_id == before.c.case_id) & (now.c.sample_index == before.c.sample_index)))
    moved = shared.where(now.c.out != before.c.out)
    n_shared = session.scalar(select(func.count()).select_from(shared.subquery())) or 0
    n_moved = 0 if prev.output_hash == run.output_hash else session.scalar(select(func.count()).select_from(moved.subquery()))
    run.outputs_compared, run.outputs_moved = n_shared, n_moved or 0
    self_divergence.measure(session, run, prev)
    found = self_divergence.judge(session, run, series, alpha / (2 * LOOKS))
    flags = [self_divergence.describe(found, run.self_kld_cases or 0, prev.id)] if found and found.flagged else []
    moved_flag = _moved(session, run, series, prev, moved, now, n_moved or 0, n_shared, alpha / (LOOKS * (2 if found else 1)))
    return "; ".join(([moved_flag] if moved_flag else []) + flags) or None


def _moved(session: Session, run: Run, series: tuple[Any, ...], prev: Run, moved: Select[Any], now: Subquery,
           n_moved: int, n_shared: int, level: float) -> str | None:
    """The moved-outputs flag: this run's share of moved outputs against the series' earlier runs (Fisher)."""
    if not n_moved:
        return None
    moved_before, compared_before = session.execute(select(func.coalesce(func.sum(Run.outputs_moved), 0),
                                                           func.coalesce(func.sum(Run.outputs_compared), 0)).where(
        *series, Run.outputs_compared.is_not(None), Run.upstream_change.is_(None))).one()
    if not compared_before:
        return None  # the series' first comparison: its output noise is being learned
    p = excess_p(n_moved, n_shared, int(moved_before), int(compared_before))
    if p >= level:
        return None
    examples = ", ".join(session.scalars(moved.order_by(now.c.case_id, now.c.sample_index).limit(5)))
    return (f"upstream change suspected: {n_moved} of {n_shared} temperature-0 outputs differ from run {prev.id} "
            f"with the same fingerprint, against {moved_before} of {compared_before} "
            f"({moved_before / compared_before:.1%}) in its earlier runs (Fisher's exact test p = {p:.2g}; e.g. {examples})")
