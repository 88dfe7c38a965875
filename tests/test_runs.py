from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.engine.generate import Generator
from evalsvc.engine.plan import Planner
from evalsvc.engine.runner import Runner
from evalsvc.store.db import open_engine
from evalsvc.store.schema import CaseResult, MetricPoint, Run
from evalsvc.suites import resolve
from tests.fake_endpoint import FakeEndpoint


def _run(project: Path, slot: str | None = None):
    cfg = load_config(project / "evalsvc.yaml")
    engine = open_engine(cfg.store_url())
    suite = resolve(cfg.suites_dir, ["echo"])[0]
    return Runner(cfg, engine, progress=False).run(suite, cfg.variants[0], slot=slot), engine


def test_run_stores_every_case_with_scores_and_a_metric_point(echo_project: Path, fake: FakeEndpoint) -> None:
    outcome, engine = _run(echo_project)
    assert outcome.status == "succeeded"
    assert len(fake.requests) == 6
    with Session(engine) as s:
        rows = s.scalars(select(CaseResult)).all()
        assert sorted(r.case_id for r in rows) == [f"c{i}" for i in range(6)]
        assert all(r.scores == {"contains": 1.0, "pass": 1.0} and r.output.startswith("echo:") for r in rows)
        point = s.scalars(select(MetricPoint).where(MetricPoint.metric == "pass")).one()
        assert (point.value, point.n) == (1.0, 6)
        assert point.ci_low < 1.0 == point.ci_high


def test_finished_slot_is_not_executed_twice(echo_project: Path, fake: FakeEndpoint) -> None:
    _run(echo_project, slot="2026-11-21T00:00Z")
    again, engine = _run(echo_project, slot="2026-11-21T00:00Z")
    assert again.status == "succeeded"
    assert len(fake.requests) == 6
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1


def test_endpoint_down_fails_the_run_with_its_cause_and_scores_nothing(echo_project: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (503, {}, b'{"error": "overloaded"}')
    outcome, engine = _run(echo_project)
    assert outcome.status == "failed"
    assert "503" in outcome.error and "re-run" in outcome.error
    with Session(engine) as s:
        rows = s.scalars(select(CaseResult)).all()
        assert rows and all(r.status == "errored" and r.scores is None and "503" in r.error for r in rows)
        assert s.scalar(select(func.count()).select_from(MetricPoint)) == 0


def test_failures_mid_run_make_errored_cases_never_quality_failures(echo_project: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (500, {}, b"boom") if "say 3" in json.dumps(body) else None
    outcome, engine = _run(echo_project)
    assert outcome.status == "failed"  # 1/6 errored is above the default 5% limit
    with Session(engine) as s:
        by_case = {r.case_id: r for r in s.scalars(select(CaseResult))}
    assert by_case["c3"].status == "errored" and by_case["c3"].scores is None
    assert all(by_case[f"c{i}"].scores["pass"] == 1.0 for i in (0, 1, 2, 4, 5))


def test_rerun_after_failure_resends_only_errored_cases(echo_project: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (500, {}, b"boom") if "say 3" in json.dumps(body) else None
    first, _ = _run(echo_project)
    sent_first = len(fake.requests)
    fake.behaviour = None
    second, engine = _run(echo_project)
    assert second.run_id == first.run_id and second.status == "succeeded"
    assert [json.dumps(b) for b in fake.requests[sent_first:]] == [json.dumps(fake.requests[sent_first])]
    assert "say 3" in json.dumps(fake.requests[sent_first])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(CaseResult)) == 6


def test_ctrl_c_marks_the_run_cancelled_and_the_next_invocation_resumes_it(
        echo_project: Path, fake: FakeEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    real, real_unfinished = Generator.generate, Planner.unfinished

    def interrupted(self, served, variant, fp, job):  # Ctrl-C arrives after two answers
        real(self, served, variant, fp, job)
        raise KeyboardInterrupt

    monkeypatch.setattr(Planner, "unfinished", lambda self, *args: islice(real_unfinished(self, *args), 2))
    monkeypatch.setattr(Generator, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(echo_project)
    monkeypatch.setattr(Generator, "generate", real)
    monkeypatch.setattr(Planner, "unfinished", real_unfinished)
    assert len(fake.requests) == 2
    cfg = load_config(echo_project / "evalsvc.yaml")
    with Session(open_engine(cfg.store_url())) as s:
        assert s.scalars(select(Run.status)).one() == "cancelled"
    resumed, _ = _run(echo_project)
    assert resumed.status == "succeeded" and len(fake.requests) == 6


def test_sigterm_during_a_run_marks_it_cancelled_not_running_and_the_next_invocation_resumes_it(
        echo_project: Path, fake: FakeEndpoint) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    fake.delay_s = 0.4  # slow enough that the signal lands mid-run
    config = str(echo_project / "evalsvc.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "run", "-c", config, "--no-progress", "--no-compare"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not fake.requests and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    cfg = load_config(echo_project / "evalsvc.yaml")
    with Session(open_engine(cfg.store_url())) as s:
        run = s.scalars(select(Run)).one()
    assert run.status == "cancelled" and "stopped by a signal" in (run.error or "")  # was left "running" for good
    fake.delay_s = 0.0
    resumed, _ = _run(echo_project)
    assert resumed.status == "succeeded"


def test_a_suite_larger_than_a_batch_resumes_and_answers_from_the_cache_case_by_case(
        echo_project: Path, fake: FakeEndpoint) -> None:
    """Cases stream through the run in batches: errors and cache hits spread over every batch are each found."""
    n = 1234
    (echo_project / "suites" / "echo.jsonl").write_text("".join(
        f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}\n' for i in range(n)))
    config = echo_project / "evalsvc.yaml"
    config.write_text(config.read_text().replace("concurrency: 2", "concurrency: 8\nmax_error_rate: 0")
                      .replace("model: fake}", "model: fake}\n    cache: true"))
    broken = {f"say {i}" for i in range(7, n, 100)}
    fake.behaviour = lambda k, body: (500, {}, b"boom") if body["messages"][-1]["content"] in broken else None
    first, engine = _run(echo_project)
    assert first.status == "failed" and first.n_errored == len(broken) == 13
    fake.behaviour, sent = None, len(fake.requests)
    second, _ = _run(echo_project)
    assert (second.run_id, second.status, second.n_ok, second.sent) == (first.run_id, "succeeded", n, 13)
    assert sorted(b["messages"][-1]["content"] for b in fake.requests[sent:]) == sorted(broken)
    third, _ = _run(echo_project, slot="2026-12-01T00:00Z")
    assert (third.status, third.sent, third.from_cache, third.n_ok) == ("succeeded", 0, n, n)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(CaseResult)) == 2 * n
        assert s.scalar(select(func.count(func.distinct(CaseResult.case_id))).where(CaseResult.run_id == third.run_id)) == n


def test_a_suite_file_edited_during_a_run_changes_nothing_in_it(echo_project: Path, fake: FakeEndpoint) -> None:
    cases = echo_project / "suites" / "echo.jsonl"
    cases.write_text("".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}\n'
                             for i in range(1200)))

    def edit_once(k: int, body: dict) -> None:  # the first request arrives while most cases are still unread
        if k == 1:
            cases.write_text(cases.read_text().replace("say 1199", "say something else"))

    fake.behaviour = edit_once
    outcome, _ = _run(echo_project)
    assert outcome.status == "succeeded" and outcome.n_ok == 1200
    assert sorted(b["messages"][-1]["content"] for b in fake.requests) == sorted(f"say {i}" for i in range(1200))
    edited, _ = _run(echo_project)  # the next command loads the edited file: a new version, a new run
    assert edited.run_id != outcome.run_id and edited.status == "succeeded"
    again = {b["messages"][-1]["content"] for b in fake.requests[1200:]}
    assert len(fake.requests) == 2400 and "say something else" in again and "say 1199" not in again


def test_a_copy_of_the_cases_removed_before_the_run_fails_it_naming_the_file(echo_project: Path, fake: FakeEndpoint) -> None:
    first, _ = _run(echo_project)
    cfg = load_config(echo_project / "evalsvc.yaml")
    suite = resolve(cfg.suites_dir, ["echo"])[0]
    assert suite.cases.source is not None
    suite.cases.source.unlink()  # as a temp-file cleaner might
    outcome = Runner(cfg, open_engine(cfg.store_url()), progress=False).run(suite, cfg.variants[0], slot="2026-12-01T00:00Z")
    assert first.status == "succeeded" and outcome.status == "failed" and len(fake.requests) == 6
    assert "echo.jsonl" in outcome.error and "cannot read the copy of its cases" in outcome.error


def test_samples_at_temperature_0_are_refused_as_a_config_error(echo_project: Path, fake: FakeEndpoint) -> None:
    """k samples of one request with one seed are one answer k times: they would shrink intervals for nothing."""
    header = echo_project / "suites" / "echo.yaml"
    header.write_text(header.read_text() + "generation: {samples: 3}\n")
    out = CliRunner().invoke(main, ["run", "-c", str(echo_project / "evalsvc.yaml"), "--no-progress"])
    assert out.exit_code == 2 and "samples: 3 at temperature 0" in out.output and "seed + k" in out.output
    assert fake.requests == []
    config = echo_project / "evalsvc.yaml"
    config.write_text(config.read_text() + "generation: {samples: 2}\n")
    bad = CliRunner().invoke(main, ["run", "-c", str(config)])
    assert bad.exit_code == 2 and "variant 'fake': samples: 2 at temperature 0" in bad.output


def test_samples_are_epochs_with_distinct_seeds_and_a_case_counts_once(echo_project: Path, fake: FakeEndpoint) -> None:
    from evalsvc.engine.plan import case_offset

    header = echo_project / "suites" / "echo.yaml"
    header.write_text(header.read_text() + "generation: {samples: 3, temperature: 0.7, seed: 10}\n")
    config = echo_project / "evalsvc.yaml"
    config.write_text(config.read_text().replace("model: fake}", "model: fake}\n    cache: true"))
    first, _ = _run(echo_project)
    assert (first.status, first.sent, first.from_cache, first.n_ok) == ("succeeded", 18, 0, 18)
    seeds = sorted((r["messages"][-1]["content"], r["seed"]) for r in fake.requests)
    own = (10 + case_offset("c0")) % 2**31  # each case its own seed (a run is not one shared random draw)
    assert seeds[:3] == [("say 0", own), ("say 0", own + 1), ("say 0", own + 2)]  # sample k is sent with seed + k
    again, _ = _run(echo_project, slot="2026-12-01T00:00Z")  # each sample has its own cache entry
    assert (again.status, again.sent, again.from_cache) == ("succeeded", 0, 18)
    cfg = load_config(config)
    with Session(open_engine(cfg.store_url())) as s:
        point = s.scalars(select(MetricPoint).where(MetricPoint.metric == "pass")).first()
    assert point is not None and point.n == 6  # n counts cases, not cases x samples


def test_an_unfinished_manual_run_is_resumed_only_while_recent_and_new_starts_afresh(echo_project: Path, fake: FakeEndpoint) -> None:
    from datetime import timedelta

    fake.behaviour = lambda n, body: (503, {}, b"down")
    config = str(echo_project / "evalsvc.yaml")
    CliRunner().invoke(main, ["run", "-c", config, "--no-progress", "--no-compare"])  # fails: resumable
    fake.behaviour = None
    engine = open_engine(load_config(echo_project / "evalsvc.yaml").store_url())
    with Session(engine) as s, s.begin():
        failed = s.scalars(select(Run)).one()
        failed.created_at -= timedelta(days=3)  # a run that failed three days ago
        failed_id = failed.id
    CliRunner().invoke(main, ["run", "-c", config, "--no-progress", "--no-compare"], catch_exceptions=False)
    CliRunner().invoke(main, ["run", "-c", config, "--no-progress", "--no-compare", "--new"], catch_exceptions=False)
    with Session(engine) as s:
        runs = {r.id: r.status for r in s.scalars(select(Run))}
    assert runs[failed_id] == "failed"  # not completed today under its old time
    assert sorted(v for k, v in runs.items() if k != failed_id) == ["succeeded", "succeeded"]  # a new run, then --new
