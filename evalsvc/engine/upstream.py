"""Upstream change detection: temperature-0 outputs that move while the variant's fingerprint does not.

Behind an API, a model can be swapped, re-quantized or re-templated without notice. At
temperature 0 the same requests to the same fingerprint should give the same answers; when
a run's outputs differ from the previous run with the identical fingerprint and suite
version, evalsvc flags "upstream change suspected". This is a separate signal from quality:
the answers may be just as good, only different. (Sampling noise and batch-dependent kernels
can also flip a few tokens at temperature 0; the message says how many outputs moved so a
reader can tell one flip from a swap.)
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Subquery, func, select
from sqlalchemy.orm import Session

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


def check(session: Session, run: Run) -> str | None:
    """Compare ``run`` (hash already set) with the previous run of the same fingerprint and suite version.

    Only outputs of cases answered in both runs count: a case that errored in one of them is no change.
    """
    prev = session.scalars(select(Run).where(
        Run.suite_version == run.suite_version, Run.variant_fingerprint == run.variant_fingerprint, Run.id < run.id,
        Run.status == "succeeded", Run.output_hash.is_not(None)).order_by(Run.id.desc()).limit(1)).first()
    if prev is None or prev.output_hash == run.output_hash:
        return None
    now, before = _outputs(run.id), _outputs(prev.id)
    shared = select(now.c.case_id).select_from(now.join(
        before, (now.c.case_id == before.c.case_id) & (now.c.sample_index == before.c.sample_index)))
    moved = shared.where(now.c.out != before.c.out)
    n_moved = session.scalar(select(func.count()).select_from(moved.subquery()))
    if not n_moved:
        return None
    n_shared = session.scalar(select(func.count()).select_from(shared.subquery()))
    examples = ", ".join(session.scalars(moved.order_by(now.c.case_id, now.c.sample_index).limit(5)))
    return (f"upstream change suspected: {n_moved} of {n_shared} temperature-0 outputs differ from run {prev.id} "
            f"with the same fingerprint (e.g. {examples})")
