"""bench/soak.py at 10 firings of serve's own cron: injected faults of every kind, SIGKILLs of serve and of a model
server, PostgreSQL restarts, one regression window."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.pg import pg_bin

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(pg_bin() is None, reason="no PostgreSQL server binaries")
def test_ten_firings_under_faults_kills_and_restarts_lose_nothing_repeat_nothing_and_alert_once(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from soak import soak

    out = soak(10, seed=3, work=tmp_path, kill_p=0.4, restart_p=0.2, server_kill_p=0.3)
    assert out["serve_kills"] >= 1 and out["server_kills"] >= 1 and out["pg_restarts"] >= 1, out  # the kills happened
    assert out["faults"] >= 10, out  # and the injected faults
    assert out["slots"] >= 10 and out["slots_repeated"] == 0, out
    assert out["runs_once"] == f"{2 * out['slots']}/{2 * out['slots']}", out
    assert (out["lost_rows"], out["duplicated_rows"], out["runs_running"], out["firings_not_done"]) == (0, 0, 0, 0), out
    assert out["orphans"] == 0 and out["secret_leaks"] == 0, out
    assert (out["regression_alerts"], out["resolutions"], out["other_alerts"]) == (1, 1, 0), out
    assert out["ok"], out
