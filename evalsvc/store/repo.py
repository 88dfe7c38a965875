"""Reads and writes of the store that more than one command needs.

Writes are idempotent: re-recording a variant or suite is a no-op, and a case result
is upserted on (run, case, sample), so resuming never duplicates a row. A run key is
executed by one process at a time (``RunLocks``), and the response cache, which runs
of one variant share, ignores an entry another process stored first.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import groupby, islice
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from evalsvc.stats.aggregate import Aggregate
from evalsvc.store.schema import CachedResponse, CaseResult, MetricPoint, Run, Suite, SuiteCase, Variant, utcnow

RESUMABLE = ("planned", "running", "failed", "cancelled")
_CHUNK = 500  # keys per IN (...) query


def record_variant(session: Session, fp: str, name: str, family: str, quantization: str | None,
                   spec: dict[str, Any]) -> None:
    if session.get(Variant, fp) is None:
        session.add(Variant(fingerprint=fp, name=name, family=family, quantization=quantization, spec=spec))


def record_suite(session: Session, version: str, name: str, header: dict[str, Any],
                 cases: Iterable[tuple[str, dict[str, Any]]], n_cases: int) -> None:
    """Record a suite version and its cases (read from ``cases`` only when the version is new)."""
    if session.get(Suite, version) is not None:
        return
    session.add(Suite(version=version, name=name, header=header, n_cases=n_cases))
    session.flush()
    it = iter(cases)
    position = 0
    while chunk := list(islice(it, _CHUNK)):  # Core inserts in chunks: no ORM object per case, no list of them all
        session.execute(insert(SuiteCase), [{"suite_version": version, "case_id": cid, "position": position + i, "spec": spec}
                                            for i, (cid, spec) in enumerate(chunk)])
        position += len(chunk)


def record_cases(session: Session, version: str, cases: list[tuple[str, dict[str, Any]]]) -> None:
    """Case contents learnt only when a suite runs (lm-eval documents); existing ones are kept."""
    known = set(session.scalars(select(SuiteCase.case_id).where(SuiteCase.suite_version == version)))
    session.add_all(SuiteCase(suite_version=version, case_id=cid, position=i, spec=spec)
                    for i, (cid, spec) in enumerate(cases) if cid not in known)


def slot_time(slot: str) -> datetime:
    """A scheduled slot is its fire time, and that is the run's place in the time series; manual runs are 'now'."""
    try:
        when = datetime.fromisoformat(slot.replace("Z", "+00:00"))
    except ValueError:
        return utcnow()
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def evalsvc_version() -> str:
    """This evalsvc's version (its scorers' code): stored with each run it makes."""
    try:
        return importlib.metadata.version("evalsvc")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def claim_run(session: Session, suite_version: str, suite_name: str, fp: str, variant_name: str,
              n_cases: int, slot: str | None, resume_within: timedelta | None = None) -> Run:
    """The run for this run key: an explicit slot, else the newest unfinished manual run made within
    ``resume_within`` (an older one is not completed today under its old time), else a new one."""
    if slot is None:
        q = select(Run).where(Run.suite_version == suite_version, Run.variant_fingerprint == fp,
                              Run.slot.like("manual:%"), Run.status.in_(RESUMABLE))
        if resume_within is not None:
            q = q.where(Run.created_at >= utcnow() - resume_within)
        run = session.scalars(q.order_by(Run.id.desc()).limit(1)).first()
        slot = f"manual:{uuid.uuid4()}"
    else:
        run = session.scalars(select(Run).where(Run.suite_version == suite_version,
                                                Run.variant_fingerprint == fp, Run.slot == slot)).first()
    if run is None:
        run = Run(suite_version=suite_version, suite_name=suite_name, variant_fingerprint=fp,
                  variant_name=variant_name, slot=slot, status="planned", n_cases=n_cases, created_at=slot_time(slot),
                  evalsvc_version=evalsvc_version())
        session.add(run)
        session.flush()
    return run


def finished_among(session: Session, run_id: int, case_ids: list[str]) -> set[tuple[str, int]]:
    """(case id, sample) pairs of these cases that already have a usable answer; errored ones are retried on resume."""
    rows = session.execute(select(CaseResult.case_id, CaseResult.sample_index)
                           .where(CaseResult.run_id == run_id, CaseResult.status != "errored",
                                  CaseResult.case_id.in_(case_ids)))
    return {(r[0], r[1]) for r in rows}


def cached(session: Session, key: str) -> dict[str, Any] | None:
    row = session.get(CachedResponse, key)
    return row.response if row else None


def cached_many(engine: Engine, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The cached responses among keys, in a few queries (the keys are fetched in chunks)."""
    out: dict[str, dict[str, Any]] = {}
    with Session(engine) as session:
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            out.update(session.execute(select(CachedResponse.key, CachedResponse.response)
                                       .where(CachedResponse.key.in_(chunk))).tuples().all())
    return out


def save_results(engine: Engine, results: list[CaseResult], caches: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Upsert case results on (run, case, sample) and add cache entries, all in one transaction."""
    with Session(engine) as session, session.begin():
        dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(session.get_bind().dialect.name)
        if dialect is None:
            for result in results:
                session.merge(result)
        elif results:
            table = CaseResult.__table__
            keys = [c.name for c in table.primary_key.columns]
            rows = [_core_row(table, r) for r in results]
            stmt = dialect.insert(table)
            session.execute(stmt.on_conflict_do_update(
                index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}), rows)
        _add_cached_many(session, caches)


def store_cache(engine: Engine, key: str, fp: str, response: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        _add_cached(session, key, fp, response)


def _core_row(table: Any, obj: Any) -> dict[str, Any]:
    """An ORM object as a Core row, with the columns' Python-side defaults for attributes left unset."""
    row = {}
    for c in table.columns:
        value = getattr(obj, c.key)
        if value is None and c.default is not None:
            value = c.default.arg(None) if c.default.is_callable else c.default.arg
        row[c.name] = value
    return row


def _add_cached(session: Session, key: str, fp: str, response: dict[str, Any]) -> None:
    _add_cached_many(session, [(key, fp, response)])


def _add_cached_many(session: Session, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Insert unless present; ON CONFLICT DO NOTHING, as two runs of one variant may store the same answer at once."""
    if not entries:
        return
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(session.get_bind().dialect.name)
    if dialect is None:
        for key, fp, response in entries:
            if session.get(CachedResponse, key) is None:
                session.add(CachedResponse(key=key, variant_fingerprint=fp, response=response))
        return
    session.execute(dialect.insert(CachedResponse).on_conflict_do_nothing(index_elements=["key"]),
                    [{"key": key, "variant_fingerprint": fp, "response": response} for key, fp, response in entries])


def _row(session: Session, row: CaseResult) -> CaseResult:
    found = session.get(CaseResult, (row.run_id, row.case_id, row.sample_index, row.run_ts))
    assert found is not None, f"case result {row.case_id} of run {row.run_id} vanished"
    return found


def save_verdict(engine: Engine, row: CaseResult, label: str, detail: dict[str, Any]) -> None:
    """Add one judge check's verdict (with the judge's identity) to a stored answer."""
    with Session(engine) as session, session.begin():
        stored = _row(session, row)
        stored.judge = {**(stored.judge or {}), label: detail}


def reopen_for_judge(engine: Engine, row: CaseResult, verdicts: dict[str, Any]) -> None:
    """A judge_error answer awaits the judge again, keeping the verdicts it already has."""
    with Session(engine) as session, session.begin():
        stored = _row(session, row)
        stored.status, stored.error, stored.judge = "generated", None, verdicts


def set_status(engine: Engine, row: CaseResult, status: str, *, scores: dict[str, float] | None = None,
               error: str | None = None) -> None:
    with Session(engine) as session, session.begin():
        stored = _row(session, row)
        stored.status, stored.error = status, error
        if scores is not None:
            stored.scores = scores


def counts(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(select(CaseResult.status, func.count()).where(CaseResult.run_id == run_id)
                           .group_by(CaseResult.status))
    return {status: n for status, n in rows}


def ok_scores(session: Session, run_id: int) -> Iterator[dict[str, float]]:
    """One score row per ok case, streamed (not fetched all at once): the samples of a case are averaged, metric by
    metric over the metrics every sample has, so that a run's n counts cases, not cases x samples."""
    stmt = (select(CaseResult.case_id, CaseResult.scores).where(CaseResult.run_id == run_id, CaseResult.status == "ok")
            .order_by(CaseResult.case_id, CaseResult.sample_index))
    for _, group in groupby(session.execute(stmt.execution_options(yield_per=2000)), key=lambda r: r.case_id):
        rows = [r.scores or {} for r in group]
        if len(rows) == 1:
            yield rows[0]
        else:
            keys = set.intersection(*(set(r) for r in rows))
            yield {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def error_causes(session: Session, run_id: int, limit: int = 3) -> list[tuple[str, int]]:
    rows = session.execute(select(CaseResult.error, func.count()).where(
        CaseResult.run_id == run_id, CaseResult.status.in_(("errored", "judge_error"))).group_by(CaseResult.error)
        .order_by(func.count().desc()).limit(limit))
    return [(e or "unknown", n) for e, n in rows]


def write_metric_points(session: Session, run: Run, aggregates: list[Aggregate]) -> None:
    for a in aggregates:
        session.merge(MetricPoint(run_id=run.id, metric=a.metric, run_ts=run.created_at, suite_name=run.suite_name,
                                  suite_version=run.suite_version, variant_name=run.variant_name,
                                  variant_fingerprint=run.variant_fingerprint, kind=a.kind,
                                  higher_is_better=a.higher_is_better, value=a.value, n=a.n,
                                  ci_low=a.ci_low, ci_high=a.ci_high, sd=a.sd))
