"""`evalsvc gate --sequential` end to end on stand-in endpoints: it stops at the first look that decides, asks each
case at most once across a stop and a restart, and reports its looks (the statistics: tests/test_sequential.py)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_gate import base_and_cand

N = 1000


def _number(body: dict[str, Any]) -> int:
    return int(re.findall(r"\d+", body["messages"][-1]["content"])[0])


def _wrong_every(k: int):
    return lambda body: "no idea" if _number(body) % k == 0 else f"echo {_number(body)}"


def _project(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, n: int = N, extra: str = "") -> Path:
    half = n // 2
    for name, lo, hi in (("first", 0, half), ("second", half, n)):  # two suites: one order over both
        write_suite(tmp_path / "suites", name, "\n".join(
            f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(lo, hi)))
    return base_and_cand(tmp_path, base, cand, "concurrency: 8\n        " + extra)


def _gate(project: Path, *args: str):
    return CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", "--sequential",
                                     "--json", str(project / "gate.json"), *args], catch_exceptions=False)


def _report(project: Path) -> dict[str, Any]:
    return json.loads((project / "gate.json").read_text())


def test_a_collapse_stops_at_the_first_look_with_a_regression(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint(reply=_wrong_every(3)) as cand:
        out = _gate(_project(tmp_path, base, cand), "--seed", "7")
        asked = len(cand.requests)
    assert out.exit_code == 1, out.output
    seq = _report(tmp_path)["sequential"]
    assert seq["stopped_early"] and seq["cases_asked"] == 200 == asked and len(seq["looks"]) == 1
    assert seq["requests_saved"] == 2 * 800 and seq["seed"] == 7
    assert seq["looks"][0]["verdict"] == "regression" and seq["looks"][0]["metrics"][0]["verdict"] == "regression"
    assert "Sequential gate: 200 of 1000 cases asked in 1 of 5 looks" in out.output
    asked_ids = {f"c{_number(b)}" for b in cand.requests}
    assert len({i for i in asked_ids if int(i[1:]) < 500}) not in (0, 200)  # the seeded order mixes both suites


def test_an_identical_candidate_passes_before_the_last_look(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        out = _gate(_project(tmp_path, base, cand))
        asked = len(cand.requests)
    assert out.exit_code == 0, out.output
    seq = _report(tmp_path)["sequential"]
    assert seq["stopped_early"] and asked == seq["cases_asked"] < N and seq["looks"][-1]["verdict"] == "pass"
    look = seq["looks"][-1]["metrics"][0]
    assert look["ci_low"] > -look["margin"] and look["statistic"] >= look["boundary"]


def test_a_marginal_candidate_runs_to_the_last_look_and_decides_as_the_fixed_gate(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint(reply=_wrong_every(20)) as cand:  # 5% lost: the margin itself
        out = _gate(_project(tmp_path, base, cand), "--seed", "3")
        asked = len(cand.requests)
    assert out.exit_code == 3, out.output
    report = _report(tmp_path)
    seq = report["sequential"]
    assert not seq["stopped_early"] and asked == N and [k["verdict"] for k in seq["looks"]] == ["continue"] * 4 + [
        "inconclusive"]
    assert report["verdict"] == "inconclusive" and "ran to its last look" in out.output


def test_a_sequential_gate_stopped_midway_resumes_its_slot_and_asks_no_case_twice(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, extra="circuit_breaker: 3")
        cand.behaviour = lambda n, body: (500, {}, b'{"error": "down"}') if n > 250 else None  # dies during look 2
        first = _gate(project, "--seed", "11")
        assert first.exit_code == 2, first.output
        cand.behaviour = None
        second = _gate(project)  # no seed given: the stopped gate's own is used
    assert second.exit_code == 0, second.output
    seq = _report(project)["sequential"]
    assert seq["resumed"] and seq["seed"] == 11
    asked = Counter(_number(b) for b in base.requests)
    assert max(asked.values()) == 1  # the baseline's answers of the first attempt were kept
    ok_cand = Counter(_number(b) for b in cand.requests[:250]) + Counter(_number(b) for b in cand.requests[250 + 3:])
    assert ok_cand and max(ok_cand.values()) <= 2  # only the few answers that errored were asked again


def test_sequential_goes_with_fresh_measurement_only(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        out = _gate(_project(tmp_path, base, cand, n=20), "--reuse")
    assert out.exit_code == 2 and "--sequential" in out.output and "--reuse" in out.output


@pytest.mark.parametrize("args", [["--looks", "3"], ["--seed", "1"]])
def test_looks_and_seed_need_sequential(tmp_path: Path, args: list[str]) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, n=20)
        out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", *args])
    assert out.exit_code == 2 and "--sequential" in out.output


@pytest.mark.parametrize(("wrong_every", "exit_code", "early"), [(3, 1, True), (None, 0, True), (20, 3, False)],
                         ids=["collapse", "identical", "marginal"])
def test_the_anytime_mode_decides_within_its_budget_or_is_inconclusive_at_it(
        tmp_path: Path, wrong_every: int | None, exit_code: int, early: bool) -> None:
    reply = _wrong_every(wrong_every) if wrong_every else None
    with FakeEndpoint() as base, (FakeEndpoint(reply=reply) if reply else FakeEndpoint()) as cand:
        out = _gate(_project(tmp_path, base, cand), "--sequential", "anytime", "--budget", "400", "--seed", "2")
        asked = len(cand.requests)
    assert out.exit_code == exit_code, out.output
    report = _report(tmp_path)
    seq = report["sequential"]
    assert seq["spending"] == "anytime" and seq["planned_looks"] == list(range(20, 401, 20))
    assert asked == seq["cases_asked"] and (asked < 400) == early and seq["stopped_early"]  # 400 of 1000 at most
    last = seq["looks"][-1]["metrics"][0]
    assert "e_pass" in last and "betting" in last["method"]
    pooled = next(c for c in report["comparisons"] if c["scope"] == "all suites" and c["metric"] == "pass")
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((last["ci_low"], last["ci_high"]))  # the sequence, not fixed-n
    if exit_code == 3:
        assert "budget of 400 cases was reached" in out.output and "confidence sequence" in out.output


def _stored(url: str) -> dict[str, set[int]]:
    """Case numbers with an answer, by variant name."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from evalsvc.store.schema import CaseResult, Run

    engine = create_engine(url)
    try:
        with Session(engine) as s:
            rows = s.execute(select(Run.variant_name, CaseResult.case_id).join(Run, Run.id == CaseResult.run_id)
                             .where(CaseResult.status != "errored")).all()
    except Exception:  # not created yet
        return {}
    finally:
        engine.dispose()
    out: dict[str, set[int]] = {}
    for name, cid in rows:
        out.setdefault(name, set()).add(int(cid[1:]))
    return out


def test_a_sequential_gate_killed_mid_way_is_resumed_by_the_next_and_asks_no_stored_case_again(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    n = 200
    with FakeEndpoint(delay_s=0.05) as base, FakeEndpoint(delay_s=0.05) as cand:
        project = _project(tmp_path, base, cand, n=n, extra="concurrency: 2")
        url = f"sqlite:///{project / 'store.db'}"
        cmd = [sys.executable, "-m", "evalsvc.cli", "gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand",
               "--sequential", "--seed", "5", "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while len(_stored(url).get("cand", ())) < 50 and time.monotonic() < deadline:  # inside look 2 (40 cases a look)
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _stored(url)
        sent = (len(base.requests), len(cand.requests))
        assert 40 < len(before["cand"]) < n, "the kill must land mid-way"
        again = _gate(project)  # no --seed: the killed gate's slot and seed are found
        assert again.exit_code == 0, again.output
        seq = _report(project)["sequential"]
        assert seq["resumed"] and seq["seed"] == 5
        for fake, name, k in ((base, "base", 0), (cand, "cand", 1)):
            resent = {_number(b) for b in fake.requests[sent[k]:]} & before[name]
            assert not resent, f"{name}: cases stored before the kill were asked again: {sorted(resent)}"
        after = _stored(url)
        assert before["cand"] <= after["cand"] and len(after["cand"]) == seq["cases_asked"]


def _adds(body: dict[str, Any]) -> str:
    found = re.findall(r"(\d+) \+ (\d+)", body["messages"][-1]["content"])
    if not found:
        return f"echo {_number(body)}"
    a, b = map(int, found[0])
    return f"{a} + {b} = {a + b}"


def test_an_lm_eval_task_run_whole_at_the_first_look_still_decides(tmp_path: Path) -> None:
    """Its documents are lm-eval's, not in the seeded order: the pooled rule at each look decides on them."""
    import shutil

    from tests.conftest import ROOT

    forgets_sums = lambda body: "no idea" if "+" in body["messages"][-1]["content"] else _adds(body)  # noqa: E731
    with FakeEndpoint(reply=_adds) as base, FakeEndpoint(reply=forgets_sums) as cand:
        project = _project(tmp_path, base, cand, n=200)
        shutil.copytree(ROOT / "suites" / "harness", project / "suites" / "harness")
        shutil.copy(ROOT / "suites" / "addition_harness.yaml", project / "suites")
        out = _gate(project, "--seed", "4")
    assert out.exit_code == 1, out.output  # every one of the task's 20 sums lost, the other 200 cases unchanged
    report = _report(project)
    assert report["sequential"]["stopped_early"] and "addition_harness is an lm-eval task" in out.output
    assert any(c["scope"] == "addition_harness" and c["verdict"] == "regression" for c in report["comparisons"])


def test_an_anytime_gate_with_a_critical_suite_passes_once_every_case_is_asked(tmp_path: Path) -> None:
    """A critical suite cannot pass early; asked in full, the pass the e-process showed stands."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, n=400, extra="gate: {suites: {first: {critical: true}}}")
        out = _gate(project, "--sequential", "anytime")
        asked = len(cand.requests)
    assert out.exit_code == 0, out.output
    seq = _report(project)["sequential"]
    assert asked == seq["cases_asked"] == 400 and seq["looks"][-1]["verdict"] == "pass"
    assert any(k["metrics"][0]["verdict"] == "pass" for k in seq["looks"][:-1])  # shown before, held back until then
