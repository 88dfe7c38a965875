"""What `evalsvc serve` finds at start and keeps proving: cut-off firings and runs, plain schedule rows, pause/resume
from another shell, and the PostgreSQL scheduler lease across a server restart."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from evalsvc import scheduler as sched
from evalsvc.cli import main
from evalsvc.config import ScheduleSpec, load_config
from evalsvc.errors import StoreError
from evalsvc.service import schedule_state as state
from evalsvc.store.db import make_engine, open_engine
from evalsvc.store.locks import RunLocks, SchedulerBusy, single_scheduler
from evalsvc.store.schema import CaseResult, Firing, Run, ScheduleState
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.pg import PostgresServer, _as_postgres, pg_bin


def _config(tmp_path: Path, url: str, cron: str = "0 3 1 1 *", n: int = 12) -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "echo", cases)
    return write_config(tmp_path, f"""\
        store: sqlite:///store.db
        concurrency: 1
        schedules: [{{name: yearly, cron: '{cron}'}}]
        variants: [{{name: v, family: f, endpoint: {{base_url: "{url}", model: m}}}}]
        """)


def _wait(predicate, what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_firing_cut_off_by_sigkill_is_fired_again_under_its_slot_when_serve_starts(tmp_path: Path) -> None:
    """`evalsvc fire` (what serve runs for a slot) is SIGKILLed with 4 of 12 answers stored; the next `evalsvc serve`
    finds the firing running with its lock free, fires that slot again: the run completes, every case once, the
    firing ends done, nothing is left running."""
    with FakeEndpoint(delay_s=0.3) as fake:
        config = _config(tmp_path, fake.base_url)
        engine = open_engine(load_config(config).store_url())
        cmd = [sys.executable, "-m", "evalsvc.cli"]
        cut = subprocess.Popen([*cmd, "fire", "yearly", "-c", str(config), "--slot", "2026-01-01T03:00Z"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stored() -> int:
            with Session(engine) as s:
                return len(s.scalars(select(CaseResult.case_id)).all())

        _wait(lambda: stored() >= 4 or cut.poll() is not None, "4 stored answers")
        cut.kill()
        cut.wait()
        with Session(engine) as s:
            assert s.scalars(select(Firing.status)).all() == ["running"]
            assert s.scalars(select(Run.status)).all() == ["running"] and stored() < 12
        serve = subprocess.Popen([*cmd, "serve", "-c", str(config), "--metrics-port", "0"], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def firing_over() -> bool:
                with Session(engine) as s:
                    return s.scalars(select(Firing.status)).all() != ["running"]

            _wait(lambda: firing_over() or serve.poll() is not None, "the firing to be fired again")
        finally:
            serve.terminate()
            _, err = serve.communicate(timeout=60)
    assert "its process was gone; firing it again" in err, err
    with Session(engine) as s:
        assert [(f.slot, f.status, f.attempt) for f in s.scalars(select(Firing))] == [("2026-01-01T03:00Z", "done", 2)]
        assert [(r.slot, r.status) for r in s.scalars(select(Run))] == [("2026-01-01T03:00Z", "succeeded")]
        rows = s.execute(select(CaseResult.case_id, CaseResult.sample_index)).all()
    assert len(rows) == 12 and len(set(rows)) == 12


def test_runs_left_running_by_a_gone_process_are_cancelled_at_start_and_live_ones_are_not(tmp_path: Path) -> None:
    """A killed `evalsvc gate` leaves its runs running for good (the next gate uses a new slot): serve's start closes
    those whose run lock is free, and leaves a run that a live process holds alone."""
    from evalsvc.engine.runner import Runner
    from evalsvc.service.runs import choose, open_store

    with FakeEndpoint() as fake:
        config = _config(tmp_path, fake.base_url)
        cfg = load_config(config)
        engine = open_store(cfg)
        suites, variants = choose(cfg, None, None)
        for slot in ("gate:a", "gate:b"):
            Runner(cfg, engine, progress=False).run_variant(suites, variants[0], slot=slot)
    with Session(engine) as s, s.begin():
        for run in s.scalars(select(Run)):
            run.status = "running"  # as a killed `evalsvc gate` leaves them
        live = s.scalars(select(Run.id).where(Run.slot == "gate:b")).one()
    with RunLocks(engine) as held:  # a live process executes gate:b
        assert held.acquire(live)
        said = sched.start_jobs(sched.build(), engine, str(config), cfg.schedules)
    with Session(engine) as s:
        statuses = dict(s.execute(select(Run.slot, Run.status)).all())
        error = s.scalars(select(Run.error).where(Run.slot == "gate:a")).one()
    assert statuses == {"gate:a": "cancelled", "gate:b": "running"}
    assert "process was gone" in error and "resume" in error
    assert any("marked cancelled" in line for line in said)


def test_a_firing_cut_off_too_often_or_whose_schedule_is_gone_is_closed_as_interrupted(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/v1")
    cfg = load_config(config)
    from evalsvc.service.runs import open_store

    engine = open_store(cfg)
    with Session(engine) as s, s.begin():
        s.add(Firing(schedule="yearly", slot="2026-01-01T03:00Z", status="running", runs={}, alerts={},
                     attempt=state.MAX_ATTEMPTS))
        s.add(Firing(schedule="removed", slot="2026-01-01T03:00Z", status="running", runs={}, alerts={}))
    scheduler = sched.build()
    said = sched.start_jobs(scheduler, engine, str(config), cfg.schedules)
    with Session(engine) as s:
        rows = [(f.schedule, f.status) for f in s.scalars(select(Firing).order_by(Firing.id))]
    assert rows == [("yearly", "interrupted"), ("removed", "interrupted")]
    assert [job.id for job in scheduler.get_jobs()] == ["yearly"] and len(said) == 2


def test_the_store_keeps_plain_schedule_rows_and_a_planted_pickle_is_never_loaded(tmp_path: Path) -> None:
    """A store writer plants APScheduler's job table holding a pickle that would run code when loaded; `schedule
    list`, `pause` and `resume` read plain rows and never load it."""
    config = _config(tmp_path, "http://127.0.0.1:9/v1")
    cfg = load_config(config)
    from evalsvc.service.runs import open_store

    engine = open_store(cfg)
    canary = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {canary}",))

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, next_run_time FLOAT, "
                          "job_state BLOB NOT NULL)"))
        conn.execute(text("INSERT INTO apscheduler_jobs VALUES ('yearly', 1.0, :p)"), {"p": pickle.dumps(Evil())})
    runner = CliRunner()
    for command in (["schedule", "list"], ["schedule", "pause", "yearly"], ["schedule", "resume", "yearly"]):
        out = runner.invoke(main, [*command[:2], "-c", str(config), *command[2:]])
        assert out.exit_code == 0, out.output
    assert not canary.exists()
    with Session(engine) as s:
        assert [(r.name, r.cron, r.paused) for r in s.scalars(select(ScheduleState))] == [("yearly", "0 3 1 1 *", False)]
    assert "schedule_states" in inspect(engine).get_table_names()


def test_pause_and_resume_from_another_shell_reach_a_running_serve_on_its_next_tick(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/v1", cron="* * * * *")
    cfg = load_config(config)
    from evalsvc.service.runs import open_store

    engine = open_store(cfg)
    scheduler = sched.build()
    scheduler.start(paused=True)
    try:
        sched.start_jobs(scheduler, engine, str(config), cfg.schedules)
        assert scheduler.get_job("yearly").next_run_time is not None
        assert CliRunner().invoke(main, ["schedule", "pause", "-c", str(config), "yearly"]).exit_code == 0
        sched.tick(scheduler, engine, None)
        assert scheduler.get_job("yearly").next_run_time is None
        assert CliRunner().invoke(main, ["schedule", "resume", "-c", str(config), "yearly"]).exit_code == 0
        sched.tick(scheduler, engine, None)
        assert scheduler.get_job("yearly").next_run_time is not None
    finally:
        scheduler.shutdown(wait=False)


def test_a_slot_missed_while_no_serve_ran_fires_once_at_start_and_a_fired_one_does_not(tmp_path: Path) -> None:
    spec = ScheduleSpec(name="s", cron="0 3 * * *")
    config = _config(tmp_path, "http://127.0.0.1:9/v1")
    from evalsvc.service.runs import open_store

    engine = open_store(load_config(config))
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    state.sync_states(engine, [spec], now=now - timedelta(days=3))
    assert state.missed(engine, spec, sched.trigger(spec), now) == "2026-12-07T03:00Z"  # the latest of three: once
    with Session(engine) as s, s.begin():
        s.add(Firing(schedule="s", slot="2026-12-07T03:00Z", status="done", runs={}, alerts={}))
    assert state.missed(engine, spec, sched.trigger(spec), now) is None
    state.sync_states(engine, [ScheduleSpec(name="s", cron="0 4 * * *")], now=now)  # re-timed: owes from now on
    assert state.missed(engine, spec, sched.trigger(spec), now) is None


def _restart(server: PostgresServer) -> None:
    """Stop the server at once (as a crash or failover does) and start it again on the same data."""
    subprocess.run(_as_postgres([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]),
                   check=True, capture_output=True)
    opts = f"-p {server.port} -k {server.data} -h 127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-o", opts, "-w",
                                 "-l", str(server.data / "log"), "start"]), check=True, capture_output=True)


@pytest.mark.postgres
@pytest.mark.skipif(pg_bin() is None, reason="no PostgreSQL server binaries")
def test_the_scheduler_lease_survives_a_postgres_restart_or_is_lost_to_whoever_took_it(tmp_path: Path) -> None:
    """After a restart the advisory lock is gone. A holder that proves its lease first takes it again (a second
    serve is then refused); one that was beaten to it by a second serve knows it lost, and fires nothing."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="evalsvc-pg-lease-"))
    server = PostgresServer(root)
    url = server.start()
    try:
        a_engine, b_engine = make_engine(url), make_engine(url)  # the lease needs no schema
        with single_scheduler(a_engine) as lease:
            assert lease.verify()
            with pytest.raises(SchedulerBusy):
                with single_scheduler(b_engine):
                    pass
            _restart(server)
            assert lease.verify() and not lease.lost  # taken again on a new connection
            with pytest.raises(SchedulerBusy):
                with single_scheduler(b_engine):
                    pass
            _restart(server)
            with single_scheduler(b_engine) as b_lease:  # B is first after this restart
                assert not lease.verify() and lease.lost
                assert b_lease.verify()
                sched.lease = lease
                try:
                    assert sched.execute(str(tmp_path / "never-read.yaml"), "nightly") == {}  # fires nothing
                finally:
                    sched.lease = None
    finally:
        server.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_a_firing_cut_off_while_serve_runs_is_fired_again_on_its_next_tick(tmp_path: Path) -> None:
    """A firing that lost the store mid-way (or whose `evalsvc fire` was killed) is left running with its lock free:
    the running serve's next tick fires it again, once."""
    config = _config(tmp_path, "http://127.0.0.1:9/v1")
    cfg = load_config(config)
    from evalsvc.service.runs import open_store

    engine = open_store(cfg)
    scheduler = sched.build()
    scheduler.start(paused=True)
    try:
        sched.start_jobs(scheduler, engine, str(config), cfg.schedules)
        with Session(engine) as s, s.begin():
            cut = Firing(schedule="yearly", slot="2026-01-01T03:00Z", status="running", runs={}, alerts={})
            s.add(cut)
            s.flush()
            cut_id = cut.id
        sched.tick(scheduler, engine, None, str(config), {"yearly"})
        sched.tick(scheduler, engine, None, str(config), {"yearly"})
        jobs = [job for job in scheduler.get_jobs() if job.id.startswith("refire-")]
        assert [(job.id, job.args[1:]) for job in jobs] == [(f"refire-{cut_id}", ("yearly", "2026-01-01T03:00Z", cut_id))]
    finally:
        scheduler.shutdown(wait=False)


class _StoreAway:
    """A lease whose store answers again after ``away`` checks (PostgreSQL restarting), never lost to another serve."""

    def __init__(self, away: int) -> None:
        self.away, self.lost = away, False

    def verify(self) -> bool:
        self.away -= 1
        return self.away < 0


def test_a_slot_due_while_the_store_restarts_fires_under_its_own_slot_once_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store away at the moment a slot falls due: the firing waits for it instead of losing the slot for good."""
    config = _config(tmp_path, "http://127.0.0.1:9/v1", cron="*/5 * * * *")
    fired: list[str] = []
    monkeypatch.setattr(sched.service_schedule, "fire", lambda cfg, path, spec, slot, firing_id=None: fired.append(slot))
    monkeypatch.setattr(sched, "STORE_WAIT_S", 0.01, raising=False)
    monkeypatch.setattr(sched, "lease", _StoreAway(away=3))
    spec = ScheduleSpec(name="yearly", cron="*/5 * * * *")
    before = state.slot_name(sched.slot_at(spec, datetime.now(UTC)))
    sched.execute(str(config), "yearly")
    after = state.slot_name(sched.slot_at(spec, datetime.now(UTC)))
    assert len(fired) == 1 and fired[0] in {before, after}, fired


class _Proven:
    """A lease that holds, over a real store."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.lost = engine, False

    def verify(self) -> bool:
        return True


@pytest.mark.parametrize("row_written", [False, True])
def test_a_firing_whose_store_goes_away_before_its_row_is_written_is_fired_again_once_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_written: bool) -> None:
    """The store lost between the lease check and the firing row: nothing would owe that slot (no row to fire again,
    not a missed slot for the running serve), so the firing is made again under its slot once the store answers. A
    row already written is left to the tick (``refire``), never fired twice."""
    with FakeEndpoint() as fake:
        config = _config(tmp_path, fake.base_url, cron="*/5 * * * *")
        cfg = load_config(config)
        engine = open_engine(cfg.store_url())
        real, calls = sched.service_schedule.fire, []

        def store_lost_once(cfg: Any, path: str, spec: Any, slot: str, firing_id: int | None = None) -> Any:
            calls.append(slot)
            if len(calls) == 1:
                if row_written:
                    with Session(engine) as s, s.begin():
                        s.add(Firing(schedule=spec.name, slot=slot, status="running", runs={}, alerts={}))
                raise StoreError("lost the store at sqlite:///store.db: disk I/O error")
            return real(cfg, path, spec, slot, firing_id=firing_id)

        monkeypatch.setattr(sched.service_schedule, "fire", store_lost_once)
        monkeypatch.setattr(sched, "lease", _Proven(engine))
        if row_written:
            with pytest.raises(StoreError):
                sched.execute(str(config), "yearly")
            assert len(calls) == 1  # the row is there: the tick fires it again, not this
            return
        summary = sched.execute(str(config), "yearly")
        assert len(calls) == 2 and calls[0] == calls[1] and summary["slot"] == calls[0]
        with Session(engine) as s:
            firings = s.scalars(select(Firing).where(Firing.slot == calls[0])).all()
            assert [f.status for f in firings] == ["done"]
            assert [r.status for r in s.scalars(select(Run))] == ["succeeded"]
