"""`gate --reuse --max-age` counts a run's age from when it finished, not from its slot: a nightly slot fired late
(or backfilled) is as fresh as the moment its run was made."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.store.db import open_engine
from evalsvc.store.schema import Run
from tests.fake_endpoint import FakeEndpoint
from tests.test_gate import _gate, _project


def test_max_age_counts_from_when_the_run_finished(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand)
        cfg = str(project / "evalsvc.yaml")
        ran = CliRunner().invoke(main, ["run", "-c", cfg, "--slot", "2026-11-20T02:00Z", "--no-progress", "--no-compare"])
        assert ran.exit_code == 0, ran.output
        fresh = _gate(project, "--reuse", "--no-run", "--max-age", "1h")
        engine = open_engine(f"sqlite:///{project / 'store.db'}")
        with Session(engine) as s, s.begin():
            for run in s.scalars(select(Run)):
                run.finished_at -= timedelta(hours=5)
        engine.dispose()
        stale = _gate(project, "--reuse", "--no-run", "--max-age", "1h")
    assert fresh.exit_code == 0, fresh.output
    assert "slot 2026-11-20 02:00Z" in fresh.output and "finished" in fresh.output
    assert stale.exit_code == 2 and "finished 5h 0m ago, more than --max-age 1h 0m" in stale.output, stale.output
