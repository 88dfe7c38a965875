"""A gate killed mid-way leaves its runs `running` under a slot no gate measures again: the next gate closes them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.store.db import open_engine
from evalsvc.store.schema import Run
from tests.fake_endpoint import FakeEndpoint
from tests.test_gate import _gate, _project


def test_the_next_gate_cancels_the_runs_a_killed_gate_left_running_and_nothing_else(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, n=5)
        assert _gate(project, "--allow-inconclusive").exit_code == 0
        engine = open_engine(f"sqlite:///{project / 'store.db'}")
        with Session(engine) as s, s.begin():  # as a gate SIGKILLed mid-run, and a scheduled run, leave them
            runs = s.scalars(select(Run).order_by(Run.id)).all()
            runs[0].status, runs[1].status, runs[1].slot = "running", "running", "2026-12-01T02:00Z"
            killed, scheduled = runs[0].id, runs[1].id
        assert CliRunner().invoke(main, ["runs", "list", "-c", str(project / "evalsvc.yaml"), "--status", "running"]
                                  ).output.count("running") >= 2
        again = _gate(project, "--allow-inconclusive")
        with Session(engine) as s:
            status = {r.id: (r.status, r.error) for r in s.scalars(select(Run))}
    assert again.exit_code == 0, again.output
    assert status[killed][0] == "cancelled" and "its gate was stopped before it finished" in status[killed][1]
    assert status[scheduled][0] == "running"  # not a gate's: left to serve's own recovery
