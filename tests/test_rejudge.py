"""A stored run judged by another judge than its pair: its answers are judged again with the current judge, else the
suite is undecided (engine/rejudge.py, and the gate's use of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.store.db import open_engine
from evalsvc.store.latest import latest_runs
from evalsvc.store.schema import CaseResult, Run
from evalsvc.suites import resolve
from evalsvc.verdicts import series
from tests.conftest import echo_cases, write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_judge import RUBRIC, sound_judge

N = 60  # identical cases per suite: enough for a pass at the default margin


def _project(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, judge: FakeEndpoint, model: str) -> Path:
    """Two suites (one judged, one not), a baseline and a candidate that answer alike, and the judge variant ``judge``
    served by ``judge`` as model ``model`` (another model: another judge identity)."""
    write_suite(tmp_path / "suites", "plain", echo_cases(N))
    write_suite(tmp_path / "suites", "judged", "\n".join(f'{{"id": "q{i}", "input": "question {i}"}}' for i in range(N)),
                f"""\
        checks:
          - {{type: judge, judge: judge, rubric: "{RUBRIC}", threshold: 6}}
        """)
    return write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_retries: 0
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
          - {{name: judge, family: j, endpoint: {{base_url: "{judge.base_url}", model: {model}}}}}
        """)


def _run(config: Path, variant: str) -> dict[str, int]:
    """Run both suites on ``variant``: its run id per suite."""
    cfg = load_config(config)
    outcomes = Runner(cfg, open_engine(cfg.store_url()), progress=False).run_variant(
        resolve(cfg.suites_dir, ["plain", "judged"]), cfg.variant(variant))
    assert all(o.status == "succeeded" for o in outcomes), [o.error for o in outcomes]
    return {o.suite: o.run_id for o in outcomes}


def _rows(config: Path, run_id: int) -> list[tuple[Any, ...]]:
    with Session(open_engine(load_config(config).store_url())) as s:
        return [(r.case_id, r.status, r.output, r.scores, r.judge) for r in s.scalars(
            select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.case_id))]


def _answers_judged(judge: FakeEndpoint) -> int:
    """How many requests asked the judge about a suite's answer (not a canary)."""
    return sum(1 for r in judge.requests if "echo: question" in str(r["messages"]))


def test_a_pinned_baseline_judged_by_another_judge_is_re_judged_and_the_gate_decides(tmp_path: Path) -> None:
    """The pinned release run was judged by judge A; the judge is B now. The gate judges the pinned run's stored answers
    again with B (in a run of their own: the pinned run's rows stay as they were) and pairs the two runs under B: an
    identical candidate passes (it used to be undecided, exit 3). A second gate finds the re-judged run done."""
    with FakeEndpoint() as base, FakeEndpoint() as cand, FakeEndpoint(reply=sound_judge(8)) as judge_a, \
            FakeEndpoint(reply=sound_judge(8)) as judge_b:
        config = _project(tmp_path, base, cand, judge_a, "a")
        pinned = _run(config, "base")
        before = _rows(config, pinned["judged"])
        _project(tmp_path, base, cand, judge_b, "b")
        gate = ["gate", "-c", str(config), "--candidate", "cand", "--baseline", "base",
                "--baseline-run", str(pinned["plain"]), "--baseline-run", str(pinned["judged"])]
        first = CliRunner().invoke(main, gate)
        asked = _answers_judged(judge_b)
        again = CliRunner().invoke(main, [*gate, "--reuse"])
        asked_again = _answers_judged(judge_b) - asked
    assert first.exit_code == 0, first.output
    assert f"judged: baseline re-judged with judge (its answers from run {pinned['judged']}" in first.output
    assert "pass not compared" not in first.output
    assert asked == 2 * N  # the candidate's answers and the pinned run's, each once
    assert _rows(config, pinned["judged"]) == before  # the pinned run is only read
    assert again.exit_code == 0 and asked_again == 0, again.output  # the re-judged run is found, not made again
    engine = open_engine(load_config(config).store_url())
    with Session(engine) as s:
        rejudged = s.scalars(select(Run).where(Run.slot.like(f"rejudge:{pinned['judged']}:%"))).one()
        assert rejudged.status == "succeeded" and rejudged.output_hash is None
        assert {r.judge["judge"]["fingerprint"] for r in s.scalars(select(CaseResult).where(
            CaseResult.run_id == rejudged.id))} == {load_config(config).fingerprint("judge")}
        # never "the latest run" of the baseline's series: its answers are the pinned run's, not the newest
        assert latest_runs(s, rejudged.suite_version, rejudged.variant_fingerprint)[0].id != rejudged.id
    # nor a new point of the baseline's time series (drift would count its source's answers twice)
    points = {p.run_id for one in series.load(engine, ["judged"], ["base"]) for p in one.points}
    assert pinned["judged"] in points and rejudged.id not in points


def test_a_baseline_that_cannot_be_re_judged_leaves_its_suite_undecided_and_says_why(tmp_path: Path) -> None:
    """The current judge does not answer: the pinned run cannot be re-judged, so its suite cannot be decided. It vetoes
    the pass (exit 3) with the reason, while the other suite is compared as before; the pinned run is untouched."""
    with FakeEndpoint() as base, FakeEndpoint() as cand, FakeEndpoint(reply=sound_judge(8)) as judge_a:
        config = _project(tmp_path, base, cand, judge_a, "a")
        pinned = _run(config, "base")
        before = _rows(config, pinned["judged"])
        with FakeEndpoint(reply=sound_judge(8)) as judge_b:
            _project(tmp_path, base, cand, judge_b, "b")
            _run(config, "cand")  # the candidate's runs, judged by B while it answered
        gate = CliRunner().invoke(main, ["gate", "-c", str(config), "--candidate", "cand", "--baseline", "base", "--reuse",
                                         "--baseline-run", str(pinned["plain"]), "--baseline-run", str(pinned["judged"])])
    assert gate.exit_code == 3, gate.output
    assert (f"judged: the two runs were judged by different judges or prompt templates, and the baseline answers (run "
            f"{pinned['judged']}) could not be re-judged with the current judge: the judge did not answer") in gate.output
    assert (f"judged could not be decided: its runs were judged by different judges or prompt templates, and the "
            f"baseline answers (run {pinned['judged']}) could not be re-judged with the current judge: the judge did not "
            "answer") in gate.output  # what blocked the pass, with why
    assert "plain | pass | 60" in gate.output
    assert _rows(config, pinned["judged"]) == before
    with Session(open_engine(load_config(config).store_url())) as s:  # kept failed, saying why: a later gate resumes it
        attempt = s.scalars(select(Run).where(Run.slot.like(f"rejudge:{pinned['judged']}:%"))).one()
    assert attempt.status == "failed" and "re-judging: " in (attempt.error or "")


def test_a_baseline_whose_answers_are_not_stored_cannot_be_re_judged(tmp_path: Path) -> None:
    """The pinned run kept its scores but not its answers (as an imported run may): there is nothing to judge again,
    so its suite cannot be decided (exit 3), saying so; nothing is asked of the judge about the pinned run."""
    with FakeEndpoint() as base, FakeEndpoint() as cand, FakeEndpoint(reply=sound_judge(8)) as judge_a, \
            FakeEndpoint(reply=sound_judge(8)) as judge_b:
        config = _project(tmp_path, base, cand, judge_a, "a")
        pinned = _run(config, "base")
        with Session(open_engine(load_config(config).store_url())) as s, s.begin():
            for row in s.scalars(select(CaseResult).where(CaseResult.run_id == pinned["judged"])):
                row.output = None
        _project(tmp_path, base, cand, judge_b, "b")
        gate = CliRunner().invoke(main, ["gate", "-c", str(config), "--candidate", "cand", "--baseline", "base",
                                         "--baseline-run", str(pinned["plain"]), "--baseline-run", str(pinned["judged"])])
        asked = _answers_judged(judge_b)
    assert gate.exit_code == 3, gate.output
    assert (f"the baseline answers (run {pinned['judged']}) could not be re-judged with the current judge: run "
            f"{pinned['judged']} holds no answer for case") in gate.output
    assert asked == N  # the candidate's answers only


def test_a_re_judging_the_judge_broke_off_is_resumed_by_the_next_gate(tmp_path: Path) -> None:
    """The judge fails while the pinned run is being re-judged: that gate is undecided, and the next one resumes the
    same re-judging run (its run key) once the judge answers, and decides."""
    with FakeEndpoint() as base, FakeEndpoint() as cand, FakeEndpoint(reply=sound_judge(8)) as judge_a, \
            FakeEndpoint(reply=sound_judge(8)) as judge_b:
        config = _project(tmp_path, base, cand, judge_a, "a")
        pinned = _run(config, "base")
        _project(tmp_path, base, cand, judge_b, "b")
        _run(config, "cand")
        gate = ["gate", "-c", str(config), "--candidate", "cand", "--baseline", "base", "--reuse",
                "--baseline-run", str(pinned["plain"]), "--baseline-run", str(pinned["judged"])]
        judge_b.behaviour = lambda n, body: (503, {}, b"overloaded")
        broken = CliRunner().invoke(main, gate)
        judge_b.behaviour = None
        resumed = CliRunner().invoke(main, gate)
    assert broken.exit_code == 3 and "could not be re-judged with the current judge" in broken.output, broken.output
    assert resumed.exit_code == 0, resumed.output
    with Session(open_engine(load_config(config).store_url())) as s:
        run = s.scalars(select(Run).where(Run.slot.like(f"rejudge:{pinned['judged']}:%"))).one()
    assert run.status == "succeeded" and run.attempts == 2
    assert f"(its answers from run {pinned['judged']}, judged again in run {run.id})" in resumed.output
