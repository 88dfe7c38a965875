"""The store on SQLite and on a real PostgreSQL: migrations, partitions, idempotent writes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from evalsvc.errors import StoreError
from evalsvc.store import repo
from evalsvc.store.db import current_revision, head_revision, make_engine, open_engine, upgrade
from evalsvc.store.schema import CaseResult

ROOT = Path(__file__).resolve().parent.parent


def partition_names(engine, table: str) -> list[str]:
    """Names of the partitions of ``table`` (PostgreSQL only; empty elsewhere)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t ORDER BY 1"), {"t": table})
        return [r[0] for r in rows]


def test_upgrade_from_empty_reaches_head_and_alembic_check_is_clean(store_url: str) -> None:
    upgrade(store_url)
    assert current_revision(make_engine(store_url)) == head_revision()
    check = subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={store_url}", "check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_case_results_are_time_partitioned_on_postgresql(store_url: str) -> None:
    upgrade(store_url)
    engine = make_engine(store_url)
    parts = partition_names(engine, "case_results")
    if engine.dialect.name != "postgresql":
        assert parts == []
        return
    assert parts, "case_results must be a partitioned table"
    with engine.connect() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'case_results'")).scalar()
    assert kind == "p"
    assert partition_names(engine, "metric_points")


def _seed_run(engine, ts: datetime) -> int:
    with Session(engine) as s, s.begin():
        repo.record_variant(s, "fp1", "v", "fam", "F16", {})
        repo.record_suite(s, "sv1", "suite", {}, [("c1", {"id": "c1"})], 1)
        run = repo.claim_run(s, "sv1", "suite", "fp1", "v", 1, slot="2026-01-01T00:00Z")
        run.created_at = ts
        return run.id


def test_resaving_a_case_result_replaces_it_instead_of_duplicating(store_url: str) -> None:
    engine = open_engine(store_url) if store_url.startswith("sqlite") else (upgrade(store_url) or make_engine(store_url))
    ts = datetime(2026, 11, 21, 12, tzinfo=UTC)
    run_id = _seed_run(engine, ts)
    for status in ("errored", "ok"):
        repo.save_results(engine, [CaseResult(run_id=run_id, case_id="c1", sample_index=0, run_ts=ts, status=status,
                                              output="x" if status == "ok" else None, cached=False)], [])
    with Session(engine) as s:
        rows = s.scalars(select(CaseResult)).all()
        assert [(r.case_id, r.status) for r in rows] == [("c1", "ok")]


def test_a_batch_upserts_fills_column_defaults_and_ignores_a_cache_entry_stored_first(store_url: str) -> None:
    engine = open_engine(store_url) if store_url.startswith("sqlite") else (upgrade(store_url) or make_engine(store_url))
    ts = datetime(2026, 11, 21, 12, tzinfo=UTC)
    run_id = _seed_run(engine, ts)
    entry = ("key-1", "fp", {"text": "first"})
    repo.save_results(engine, [CaseResult(run_id=run_id, case_id="c1", run_ts=ts, status="errored")], [entry])
    batch = [CaseResult(run_id=run_id, case_id=f"c{i}", run_ts=ts, status="ok", output=f"answer {i}") for i in (1, 2, 3)]
    repo.save_results(engine, batch, [("key-1", "fp", {"text": "second"}), ("key-2", "fp", {"text": "other"})])
    with Session(engine) as s:
        rows = s.scalars(select(CaseResult).order_by(CaseResult.case_id)).all()
        assert [(r.case_id, r.status, r.output, r.sample_index, r.cached) for r in rows] == [
            (f"c{i}", "ok", f"answer {i}", 0, False) for i in (1, 2, 3)]
        assert all(r.created_at is not None for r in rows)
    assert repo.cached_many(engine, ["key-1", "key-2", "key-3"]) == {"key-1": {"text": "first"}, "key-2": {"text": "other"}}


def test_rows_far_in_the_past_still_land(store_url: str) -> None:
    """Backfilled history older than any premade partition must not be rejected."""
    upgrade(store_url)
    engine = make_engine(store_url)
    ts = datetime(2019, 3, 1, tzinfo=UTC)
    run_id = _seed_run(engine, ts)
    repo.save_results(engine, [CaseResult(run_id=run_id, case_id="c1", sample_index=0, run_ts=ts, status="ok",
                                          output="x", cached=False)], [])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(CaseResult)) == 1


def test_unmigrated_postgresql_store_says_to_run_db_upgrade(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        engine = open_engine(store_url)  # the embedded store migrates itself
        assert current_revision(engine) == head_revision()
        return
    with pytest.raises(StoreError, match="evalsvc db upgrade"):
        open_engine(store_url)


def test_unreachable_store_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot reach the store"):
        open_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_postgresql_sessions_have_keepalives_on_both_ends_so_a_lost_workers_locks_end_within_a_minute(postgres) -> None:
    url = postgres.create_database("t_keepalive")
    engine = make_engine(url)
    with engine.connect() as conn:  # the server's side: it probes an idle client and drops a vanished one
        shown = {name: conn.execute(text(f"SHOW {name}")).scalar() for name in
                 ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")}
        dsn = conn.connection.dbapi_connection.info.get_parameters()
    assert shown == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "6",
                     "tcp_user_timeout": "40000"}, shown  # seconds, seconds, probes, milliseconds
    idle, interval, count = 10, 5, 6
    assert idle + interval * count <= 60  # a dead peer is noticed in under a minute
    assert dsn.get("keepalives") == "1" and dsn.get("keepalives_idle") == "10"  # the client's side (libpq)
    with make_engine(url + "?keepalives_idle=30").connect() as conn:  # a URL's own setting wins over the default
        assert conn.connection.dbapi_connection.info.get_parameters().get("keepalives_idle") == "30"


def _open_at(url: str, start: float) -> str:
    import time
    while time.time() < start:
        pass
    try:
        open_engine(url).dispose()
        return "ok"
    except StoreError as exc:
        return str(exc)


def test_processes_opening_a_new_sqlite_store_at_the_same_instant_all_get_it(tmp_path: Path) -> None:
    """The first connection turns a new file to WAL; two doing it at once got "database is locked" without waiting."""
    import multiprocessing
    import time
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        for i in range(8):
            url, start = f"sqlite:///{tmp_path / f'store{i}.db'}", time.time() + 0.3
            assert pool.starmap(_open_at, [(url, start)] * 4) == ["ok"] * 4, i


def test_a_verdict_needing_more_cases_than_the_column_holds_is_stored_without_that_number(store_url: str) -> None:
    """A speed delta sitting next to its margin asks for billions of cases: past 2^31 - 1 (PostgreSQL's integer) the
    verdict row is stored with no n_needed instead of failing the comparison (and the firing) whole."""
    from evalsvc.stats.comparison import Comparison
    from evalsvc.store.schema import VerdictRecord
    from evalsvc.verdicts.compare import Report
    from evalsvc.verdicts.record import record

    upgrade(store_url)
    engine = make_engine(store_url)
    c = Comparison(metric="tokens_per_s", kind="continuous", n=60, baseline_mean=428.2, candidate_mean=369.9,
                   delta=-42.81, ci_low=-176.9, ci_high=90.2, margin=42.82, alpha=0.05, p_noninferior=0.5,
                   p_inferior=0.5, verdict="inconclusive", flips_down=28, flips_up=32, n_needed=8_482_959_906,
                   method="BCa bootstrap")
    record(engine, Report(baseline="base", candidate="cand", primary=[], secondary=[], verdict="inconclusive",
                          speed=[("echo", c)]))
    with Session(engine) as s:
        row = s.scalars(select(VerdictRecord)).one()
    assert (row.metric, row.n_needed) == ("tokens_per_s", None)
