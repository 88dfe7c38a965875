"""A sequential gate's verdict as the store keeps it and the Compare page marks it: where the gate stopped, how many
cases it asked; a fixed gate's verdict carries nothing of the kind."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.schema import VerdictRecord
from tests.conftest import ROOT
from tests.fake_endpoint import FakeEndpoint
from tests.test_sequential_gate import _project, _wrong_every

COMPARE = ROOT / "evalsvc" / "dashboard" / "views" / "compare.py"
OVERVIEW = COMPARE.with_name("overview.py")


def _gate(project: Path, *args: str) -> dict:
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand",
                                    "--json", str(project / "gate.json"), *args], catch_exceptions=False)
    assert out.exit_code in (0, 1, 3), out.output
    return json.loads((project / "gate.json").read_text())


def _rows(project: Path) -> dict[str, list[dict | None]]:
    """Each stored report's ``sequential`` values, by report id, oldest report first."""
    with Session(open_engine(load_config(project / "evalsvc.yaml").store_url())) as s:
        rows = s.execute(select(VerdictRecord.report_id, VerdictRecord.sequential).order_by(VerdictRecord.id)).all()
    out: dict[str, list[dict | None]] = {}
    for report_id, seq in rows:
        out.setdefault(report_id, []).append(seq)
    return out


def _page(project: Path, monkeypatch, page: Path = COMPARE) -> AppTest:
    monkeypatch.setenv("EVALSVC_CONFIG", str(project / "evalsvc.yaml"))
    at = AppTest.from_file(str(page), default_timeout=60)
    if page == COMPARE:
        at.query_params["baseline"] = "base"
        at.query_params["candidate"] = "cand"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> str:
    return " ".join(e.value for kind in ("error", "warning", "success", "info", "caption", "markdown")
                    for e in getattr(at, kind))


def test_a_sequential_verdict_is_stored_with_its_stopping_look_and_compare_marks_it(tmp_path: Path, store_url: str,
                                                                                      monkeypatch) -> None:
    """A gate that stopped at its first look on a collapse: every stored row of its report says where it stopped; the
    Compare page (whose live comparison needs complete runs, which a stopped gate leaves partial) shows the gate's
    verdict marked sequential with its look and the cases asked, and so does the Overview. A fixed gate after it stores
    none, and neither page then marks anything."""
    with FakeEndpoint() as base, FakeEndpoint(reply=_wrong_every(3)) as cand:
        project = _project(tmp_path, base, cand, extra="dashboard: {cache_ttl_s: 0}")
        config = project / "evalsvc.yaml"
        config.write_text(config.read_text().replace("store: sqlite:///store.db", f"store: {store_url}"))
        if not store_url.startswith("sqlite"):
            upgrade(store_url)
        seq = _gate(project, "--sequential", "--seed", "7")["sequential"]
        assert seq["stopped_early"]
        (stored,) = _rows(project).values()
        look = len(seq["looks"])
        expected = {"look": look, "looks": len(seq["planned_looks"]), "asked": seq["cases_asked"],
                    "total": seq["cases_total"], "seed": 7, "stopped_early": True, "slot": seq["slot"],
                    "requests_saved": seq["requests_saved"]}
        assert stored and all(row == expected for row in stored)
        at = _page(project, monkeypatch)
        shown = _shown(at)
        assert [e.value.split("**")[1] for e in at.error] == ["cand vs base: regression"]
        assert (f"sequential: stopped at look {look} of {expected['looks']} ({seq['cases_asked']} of 1000 cases asked"
                in shown)
        assert f"--slot {seq['slot']}" in shown  # how to complete its partial runs
        overview = _page(project, monkeypatch, OVERVIEW)
        gate = overview.dataframe[0].value.set_index("candidate")
        assert gate.loc["cand", "sequential"].startswith(f"stopped at look {look} of {expected['looks']} (")
        assert f"sequential: stopped at look {look} of" in overview.error[0].value  # the regression's callout

        _gate(project)  # the fixed gate: both runs asked in full
        fixed = list(_rows(project).values())[-1]
        assert fixed and all(row is None for row in fixed)
        with open_engine(store_url).connect() as conn:  # SQL NULL, not the JSON value null: IS NULL finds them
            assert conn.scalar(select(func.count()).where(VerdictRecord.sequential.is_(None))) == len(fixed)
        after = _page(project, monkeypatch)
        assert [e.value.split("**")[1] for e in after.error] == ["cand vs base: regression"]
        assert "sequential" not in _shown(after)
        overview = _page(project, monkeypatch, OVERVIEW)
        assert set(overview.dataframe[0].value.set_index("candidate")["sequential"]) == {""}
        assert "sequential" not in overview.error[0].value


def test_a_sequential_gate_that_ran_to_its_last_look_is_marked_on_the_runs_compare_pairs(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """A critical suite cannot pass early: an identical candidate's gate runs to its last look and leaves complete
    runs, which Compare pairs live; the badge says it ran to its last look, on the runs compared here."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, extra="gate: {suites: {first: {critical: true}}}")
        with (project / "evalsvc.yaml").open("a") as config:
            config.write("dashboard: {cache_ttl_s: 0}\n")
        seq = _gate(project, "--sequential", "--seed", "3")["sequential"]
    assert not seq["stopped_early"] and seq["cases_asked"] == seq["cases_total"]
    at = _page(project, monkeypatch)
    assert [e.value.split("**")[1] for e in at.success] == ["cand vs base: pass"]
    shown = _shown(at)
    assert f"sequential: ran to its last look ({len(seq['looks'])} of {len(seq['planned_looks'])}, all 1000" in shown
    assert "on the runs compared here" in shown and "--slot" not in shown


def test_the_mark_says_whether_the_gate_stopped_early_or_ran_to_its_last_look() -> None:
    from evalsvc.dashboard.sequential import note

    ran = {"look": 5, "looks": 5, "asked": 1000, "total": 1000, "seed": 3, "stopped_early": False,
           "slot": "gate:seq:3:x", "requests_saved": 0}
    assert note(ran).startswith("sequential: ran to its last look (5 of 5, all 1000 cases asked")
    early = {**ran, "look": 2, "asked": 400, "stopped_early": True, "requests_saved": 1200}
    assert note(early).startswith("sequential: stopped at look 2 of 5 (400 of 1000 cases asked")
    assert "1200 requests not sent" in note(early)
