"""Writing an imported run: its variant, suite version and cases, the run (slot ``import:<file hash>``), its case
results and metric points, all in one transaction, so a failure leaves nothing behind and a second import of the
same file finds its run and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from evalsvc.importers.imported import ImportedRun, ImportFileError, variant_fingerprint
from evalsvc.stats import aggregate
from evalsvc.store import repo
from evalsvc.store.schema import CaseResult, Run, utcnow


@dataclass(frozen=True)
class Recorded:
    run_id: int
    suite: str
    variant: str
    status: str
    n_cases: int
    new: bool  # False: this file was imported before, nothing was written


def record(engine: Engine, run: ImportedRun, name: str, family: str, quantization: str | None) -> Recorded:
    """Store ``run`` (nothing at all if any row is refused: the store's constraint names what, the error the file)."""
    try:
        return _record(engine, run, name, family, quantization)
    except IntegrityError as exc:
        raise ImportFileError(run.file, f"cannot be stored as read: {str(exc.orig)[:300]}",
                              "check the file for repeated documents or empty values; nothing was written") from None


def _record(engine: Engine, run: ImportedRun, name: str, family: str, quantization: str | None) -> Recorded:
    fp = variant_fingerprint(name, family, quantization, run.variant_identity)
    slot, version = f"import:{run.file_hash}", run.suite_version
    with Session(engine) as s, s.begin():
        found = s.scalars(select(Run).where(Run.suite_version == version, Run.variant_fingerprint == fp,
                                            Run.slot == slot)).first()
        if found is not None:
            return Recorded(found.id, found.suite_name, found.variant_name, found.status, found.n_cases, False)
        repo.record_variant(s, fp, name, family, quantization, {"imported": {"source": run.source, **run.variant_identity}})
        cases = {c.case_id: c.spec for c in run.cases}
        repo.record_suite(s, version, run.suite_name, {**run.header, "name": run.suite_name}, cases.items(), len(cases))
        n_err = sum(1 for c in run.cases if c.error)
        row = Run(suite_version=version, suite_name=run.suite_name, variant_fingerprint=fp, variant_name=name, slot=slot,
                  status="failed" if run.error else "succeeded", error=run.error, created_at=run.created_at,
                  started_at=run.created_at, finished_at=utcnow(), n_cases=len(cases), n_ok=len(run.cases) - n_err,
                  n_errored=n_err, attempts=1, evalsvc_version=run.source[:32])
        s.add(row)
        s.flush()
        s.add_all(CaseResult(run_id=row.id, case_id=c.case_id, sample_index=c.sample_index, run_ts=row.created_at,
                             status="errored" if c.error else "ok", output=c.output, error=c.error,
                             scores=None if c.error else c.scores, cached=False) for c in run.cases)
        s.flush()
        if not run.error:
            repo.write_metric_points(s, row, aggregate.aggregate(run.metrics, repo.ok_scores(s, row.id)))
        return Recorded(row.id, row.suite_name, name, row.status, row.n_cases, True)

