"""The pre-deploy gate end to end on stand-in endpoints: exit codes, Markdown, JUnit, notes."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint

N = 60


def _number(body: dict[str, Any]) -> int:
    return int(re.findall(r"\d+", body["messages"][-1]["content"])[0])


def _project(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, n: int = N, extra: str = "") -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "echo", cases)
    return base_and_cand(tmp_path, base, cand, extra)


def base_and_cand(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, extra: str = "") -> Path:
    """evalsvc.yaml with variants ``base`` (the family's baseline) and ``cand`` on the two stand-ins."""
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_retries: 0
        baselines: {{f: base}}
        {extra}
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
        """)
    return tmp_path


def _gate(project: Path, *args: str):
    return CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", *args],
                              catch_exceptions=False)


def test_identical_candidate_passes(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        out = _gate(_project(tmp_path, base, cand))
    assert out.exit_code == 0, out.output
    assert "cand vs base: ✅ pass" in out.output


def test_clear_regression_exits_1_names_the_metric_and_lists_flips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    broken = lambda body: "no idea" if _number(body) % 3 == 0 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=broken) as cand:
        project = _project(tmp_path, base, cand)
        out = _gate(project, "--junit", str(tmp_path / "gate.xml"), "--markdown", str(tmp_path / "gate.md"),
                    "--json", str(tmp_path / "gate.json"))
    assert out.exit_code == 1, out.output
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["exit_code"] == 1 and report["verdict"] == "regression" and report["alpha"] == 0.05
    deciding = [c for c in report["comparisons"] if c["role"] == "decides"]
    assert [(c["scope"], c["metric"], c["verdict"], c["n"], c["flips_down"]) for c in deciding] == [
        ("echo", "pass", "regression", N, N // 3)]
    assert len(report["flips"]) == N // 3 and report["runs"][0].startswith("echo: baseline run ")
    assert "❌ regression" in out.output and "**Regressed:** echo/pass" in out.output
    assert "| echo | c0 | echo: say 0 | no idea |" in out.output
    assert summary.read_text() == (tmp_path / "gate.md").read_text()
    tree = ET.parse(tmp_path / "gate.xml").getroot()
    failed = [(tc.get("classname"), tc.get("name")) for tc in tree.iter("testcase") if tc.find("failure") is not None]
    assert failed == [("evalsvc.decides.echo", "pass")] and tree.get("failures") == "1"  # only what set the exit code


def test_small_suite_is_inconclusive_exits_3_unless_allowed(tmp_path: Path) -> None:
    one_wrong = lambda body: "no idea" if _number(body) == 0 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=one_wrong) as cand:
        project = _project(tmp_path, base, cand, n=8)
        strict = _gate(project, "--junit", str(tmp_path / "gate.xml"))
        lenient = _gate(project, "--no-run", "--allow-inconclusive", "--junit", str(tmp_path / "lenient.xml"))
    assert strict.exit_code == 3 and "⚠️ inconclusive" in strict.output
    assert "to show the regression, if Δ -0.125 and its spread hold" in strict.output  # n needed says its assumption
    assert "one-sided α = 0.05" in strict.output and "margins: pass 0.050" in strict.output
    assert lenient.exit_code == 0
    assert ET.parse(tmp_path / "gate.xml").getroot().get("failures") == "1"  # JUnit agrees with the exit code
    assert ET.parse(tmp_path / "lenient.xml").getroot().get("failures") == "0"


def test_the_json_report_of_an_unbounded_interval_is_valid_json() -> None:
    """One continuous pair has an unbounded interval: JSON has no infinity, so its bounds are null, not a crash."""
    from evalsvc.stats.bootstrap import compare_continuous
    from evalsvc.verdicts.compare import Report
    from evalsvc.verdicts.gate_report import as_json

    c = compare_continuous("rouge1", [0.5], [0.4], 0.05)
    assert c.ci_low == float("-inf")
    report = Report("base", "cand", [("s", c)], [], c.verdict)
    (row,) = json.loads(as_json(report, True))["comparisons"]
    assert row["n"] == 1 and row["ci_low"] is None and row["ci_high"] is None and row["delta"] == pytest.approx(-0.1)


def test_endpoint_down_is_could_not_evaluate_not_a_regression(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.behaviour = lambda n, body: (503, {}, b"down")
        out = _gate(_project(tmp_path, base, cand))
    assert out.exit_code == 2
    assert "could not evaluate: cand on echo" in out.output and "regression" not in out.output


def test_no_run_without_results_says_what_to_run(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        out = CliRunner().invoke(main, ["gate", "-c", str(_project(tmp_path, base, cand) / "evalsvc.yaml"),
                                        "--candidate", "cand", "--no-run"])
    assert out.exit_code == 2 and "evalsvc run -s echo -v base -v cand" in out.output


def test_errored_cases_are_not_scored_as_losses_but_a_pass_they_could_undo_is_inconclusive(tmp_path: Path) -> None:
    """One errored case of 60: quality passes on the 59 answered in both; counted as a failure it could undo the
    pass (the worst-case bound is inconclusive), so the gate exits 3, and JUnit fails exactly that bound."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.behaviour = lambda n, body: (500, {}, b"x") if _number(body) == 5 else None
        out = _gate(_project(tmp_path, base, cand, extra="max_error_rate: 0.1"), "--junit", str(tmp_path / "gate.xml"))
    assert out.exit_code == 3, out.output
    assert "1 cases left out" in out.output and "| echo | pass | 59 |" in out.output and "✅ pass" in out.output
    assert "the unanswered cases could hide a loss" in out.output
    failed = [tc.get("classname") for tc in ET.parse(tmp_path / "gate.xml").getroot() if tc.find("failure") is not None]
    assert failed == ["evalsvc.bound.echo"]


def test_errors_on_the_longest_prompts_cannot_hide_a_regression(tmp_path: Path) -> None:
    """A deployment with a smaller context answers 400 on the 8 longest of 160 prompts (5%, within max_error_rate):
    on the 152 cases both answered it is identical, which used to exit 0. Serving health shows the rise in errors
    beyond its margin: exit 1, and the worst-case bound counts the 8 as failures."""
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}{" please" * 60 if i % 20 == 7 else ""}", '
                      f'"checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(160))
    too_long = lambda n, body: (400, {}, b"context length exceeded") if len(body["messages"][-1]["content"]) > 200 else None  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.behaviour = too_long
        project = _project(tmp_path, base, cand, n=1)
        write_suite(project / "suites", "echo", cases)
        out = _gate(project, "--json", str(tmp_path / "gate.json"))
    assert out.exit_code == 1, out.output
    rows = {r["role"]: r for r in json.loads((tmp_path / "gate.json").read_text())["comparisons"]}
    assert rows["decides"]["verdict"] == "pass" and rows["decides"]["n"] == 152
    assert rows["health"]["verdict"] == "regression" and rows["health"]["candidate_mean"] == pytest.approx(152 / 160)
    assert rows["bound"]["n"] == 160 and rows["bound"]["delta"] == pytest.approx(-8 / 160)
    assert "serving health: the candidate answered 95.0% of the cases" in out.output


def test_run_compares_with_the_baseline_and_stores_every_verdict(tmp_path: Path) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Run, VerdictRecord

    broken = lambda body: "no idea" if _number(body) % 3 == 0 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=broken) as cand:
        project = _project(tmp_path, base, cand)
        cfg = str(project / "evalsvc.yaml")
        quiet = CliRunner().invoke(main, ["run", "-c", cfg, "--no-compare"], catch_exceptions=False)
        out = CliRunner().invoke(main, ["run", "-c", cfg], catch_exceptions=False)
    assert "Against the family baseline" not in quiet.output
    assert re.search(r"cand\s+base\s+regression\s+pass -0\.3\d\d \[", out.output), out.output
    with Session(open_engine(f"sqlite:///{project / 'store.db'}")) as s:
        rows = s.scalars(select(VerdictRecord)).all()
        newest_cand = s.scalars(select(Run.id).where(Run.variant_name == "cand").order_by(Run.id.desc())).first()
    # contains is the same number as pass on every case of a one-check suite: decided once, as pass; with one suite
    # the pool is that suite, so only the suite's row is stored as deciding (primary)
    speed = {"latency_p50", "latency_p95", "tokens_per_s", "output_tokens"}  # stored too, deciding nothing
    assert {(r.scope, r.metric, r.verdict, r.primary) for r in rows if r.metric not in speed} == {
        ("all suites", "pass", "regression", False), ("echo", "pass", "regression", True)}
    assert not any(r.primary for r in rows if r.metric in speed)
    assert {(r.scope, r.metric) for r in rows if r.metric in speed} == {(sc, m) for sc in ("all suites", "echo") for m in speed}
    echo = next(r for r in rows if r.scope == "echo" and r.metric == "pass")
    assert echo.candidate_run_id == newest_cand and echo.flips_down == N // 3 and echo.overall == "regression"
    assert echo.baseline_mean == 1.0 and abs(echo.candidate_mean - 2 / 3) < 1e-9


def test_comparing_runs_with_several_samples_reads_without_writing(tmp_path: Path) -> None:
    """Samples of a case are averaged into plain values: the read-only dashboard can compare them, and the gate's
    session holds nothing to flush (it used to assign the averages to the rows it read, and autoflush wrote them)."""
    from sqlalchemy.orm import Session

    from evalsvc.config import load_config
    from evalsvc.dashboard import queries
    from evalsvc.store.db import open_engine
    from evalsvc.store.latest import latest_pairs
    from evalsvc.store.readonly import open_readonly
    from evalsvc.store.schema import CaseResult
    from evalsvc.verdicts.compare import compare_runs

    def every_other(first_right: bool):  # samples of a case disagree (sample k has seed k), so their average is no stored value
        return lambda body: f"echo {_number(body)}" if (body["seed"] % 2 == 0) == first_right else "no idea"

    with FakeEndpoint(reply=every_other(True)) as base, FakeEndpoint(reply=every_other(False)) as cand:
        project = _project(tmp_path, base, cand, n=12, extra="generation: {temperature: 0.7, samples: 2}")
        out = CliRunner().invoke(main, ["run", "-c", str(project / "evalsvc.yaml"), "--no-compare"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    cfg = load_config(project / "evalsvc.yaml")
    url = cfg.store_url()
    engine = open_engine(url)
    with Session(engine) as s:
        before = sorted((r.case_id, r.sample_index, r.scores["pass"]) for r in s.query(CaseResult))
    assert {p for *_, p in before} == {0.0, 1.0}

    shown = queries.comparison(open_readonly(url), cfg.gate.model_dump(), "base", "cand")
    assert shown is not None and "error" not in shown
    assert shown["metrics"]["n"].max() == 12  # one value per case
    with Session(engine) as s:
        report = compare_runs(s, cfg.gate, "base", "cand", latest_pairs(s, "base", "cand"))
        assert not s.dirty and not s.new  # no row was read as an entity, so none can be written back
    assert report.primary and report.primary[0][1].n == 12
    reduced = {}
    with Session(engine) as s:
        for how in ("mean", "majority", "any"):
            gate = cfg.gate.model_copy(update={"samples_pass": how})
            c = compare_runs(s, gate, "base", "cand", latest_pairs(s, "base", "cand")).primary[0][1]
            reduced[how] = (c.kind, c.baseline_mean, c.candidate_mean)
    # each case passed one of its two samples in both runs: half (a score), no majority, pass@2
    assert reduced == {"mean": ("continuous", 0.5, 0.5), "majority": ("binary", 0.0, 0.0), "any": ("binary", 1.0, 1.0)}
    with Session(engine) as s:
        after = sorted((r.case_id, r.sample_index, r.scores["pass"]) for r in s.query(CaseResult))
    assert after == before  # nothing stored changed


def test_a_second_gate_after_a_bad_deploy_measures_again_and_exits_1(tmp_path: Path) -> None:
    """An endpoint's fingerprint cannot see a checkpoint swapped behind its URL: the gate measures both variants now."""
    deployed = {"broken": False}
    reply = lambda body: "no idea" if deployed["broken"] and _number(body) % 3 == 0 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=reply) as cand:
        project = _project(tmp_path, base, cand)
        first = _gate(project)
        sent_before = len(cand.requests)
        deployed["broken"] = True  # a bad checkpoint behind the same URL and model name
        second = _gate(project)
    assert first.exit_code == 0, first.output
    assert len(cand.requests) - sent_before == N and len(base.requests) == 2 * N  # both measured again
    assert second.exit_code == 1, second.output
    assert "Runs compared:" in second.output and "0% from the cache" in second.output and "evalsvc " in second.output


def test_a_collapsing_small_suite_is_not_hidden_by_a_large_unchanged_one(tmp_path: Path) -> None:
    """140 unchanged cases and a 15-case suite going 15/15 -> 8/15: pooled it is inconclusive, but the suite vetoes: a
    regression that names it."""
    big = "\n".join(f'{{"id": "b{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(140))
    small = "\n".join(f'{{"id": "s{i}", "input": "say {1000 + i}", "checks": [{{"type": "contains", "value": "{1000 + i}"}}]}}'
                      for i in range(15))
    collapse = lambda body: "no idea" if 1000 <= _number(body) < 1007 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=collapse) as cand:
        project = _project(tmp_path, base, cand, n=1)
        (project / "suites" / "echo.yaml").unlink()
        write_suite(project / "suites", "big", big)
        write_suite(project / "suites", "small", small)
        out = _gate(project)
    assert out.exit_code == 1, out.output
    assert "**Regressed:** small/pass" in out.output
    pooled = next(line for line in out.output.splitlines() if line.startswith("| all suites | pass | 155 |"))
    assert "inconclusive" in pooled  # the pool alone would have hidden it

    cfg = project / "evalsvc.yaml"  # a suite weight reaches the Holm family (pooled 1, big 1, small 3): 3 of 5 shares
    cfg.write_text(cfg.read_text().replace("baselines:", "gate: {suites: {small: {weight: 3}}}\nbaselines:", 1))
    weighted = _gate(project, "--reuse", "--no-run", "--json", str(tmp_path / "gate.json"))
    alphas = {r["scope"]: r["alpha"] for r in json.loads((tmp_path / "gate.json").read_text())["comparisons"]
              if r["role"] == "veto"}
    assert weighted.exit_code == 1 and alphas["small"] == pytest.approx(0.05 * 3 / 5)


def test_reuse_refuses_runs_older_than_max_age_and_a_pinned_baseline_run_is_used(tmp_path: Path) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Run

    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand)
        assert _gate(project).exit_code == 0
        engine = open_engine(f"sqlite:///{project / 'store.db'}")
        with Session(engine) as s, s.begin():
            base_run = s.scalars(select(Run.id).where(Run.variant_name == "base")).one()
            for run in s.scalars(select(Run)):  # made 3 days ago: its slot and when it finished
                run.created_at -= timedelta(days=3)
                run.finished_at -= timedelta(days=3)
        sent = len(base.requests) + len(cand.requests)
        stale = _gate(project, "--reuse", "--max-age", "36h")
        fresh_enough = _gate(project, "--reuse", "--max-age", "7d")
        assert len(base.requests) + len(cand.requests) == sent  # --reuse measured nothing
        pinned = _gate(project, "--baseline-run", str(base_run))
    assert stale.exit_code == 2 and "more than --max-age 1d 12h" in stale.output and "drop --reuse" in stale.output
    assert fresh_enough.exit_code == 0, fresh_enough.output
    assert pinned.exit_code == 0 and f"baseline run {base_run} (" in pinned.output and "3d 0h ago" in pinned.output


def test_runs_scored_by_different_evalsvc_versions_are_flagged(tmp_path: Path) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Run

    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand)
        same = _gate(project)
        with Session(open_engine(f"sqlite:///{project / 'store.db'}")) as s, s.begin():
            s.scalars(select(Run).where(Run.variant_name == "base")).one().evalsvc_version = "0.0.9"
        mixed = _gate(project, "--reuse")
    assert "different evalsvc versions" not in same.output
    assert "echo: the runs were scored by different evalsvc versions (0.0.9 and " in mixed.output


def test_speed_is_compared_paired_and_decides_where_it_has_a_margin(tmp_path: Path) -> None:
    """A candidate as right as the baseline but 40 ms slower per request: shown as a speed regression that decides
    nothing by default (exit 0); with gate.margins.latency_p50 (at most 10% slower) the gate fails on it (exit 1)."""
    with FakeEndpoint() as base, FakeEndpoint(delay_s=0.04) as cand:
        project = _project(tmp_path, base, cand)
        shown = _gate(project, "--json", str(tmp_path / "shown.json"))
        cfg = project / "evalsvc.yaml"
        cfg.write_text(cfg.read_text().replace("baselines:", "gate: {margins: {default: {absolute: 0.05}, "
                                                              "latency_p50: {relative: 0.9}}}\nbaselines:", 1))
        gated = _gate(project, "--reuse", "--no-run", "--json", str(tmp_path / "gated.json"))
    assert shown.exit_code == 0, shown.output
    rows = {(r["role"], r["metric"]): r for r in json.loads((tmp_path / "shown.json").read_text())["comparisons"]}
    p50 = rows[("speed", "latency_p50")]
    # the sleep bounds the candidate's median from below; the baseline's depends on the machine's load, which
    # (the two arms interleaved) falls on both alike
    assert p50["verdict"] == "regression" and p50["lower_is_better"]
    assert p50["candidate_mean"] >= 0.04 and p50["candidate_mean"] > p50["baseline_mean"]
    assert p50["n"] == N and {("speed", m) for m in ("latency_p95", "tokens_per_s", "output_tokens")} <= rows.keys()
    assert "Speed, paired on the answers both runs requested" in shown.output
    assert gated.exit_code == 1, gated.output
    deciding = {r["metric"]: r["verdict"] for r in json.loads((tmp_path / "gated.json").read_text())["comparisons"]
                if r["role"] == "decides"}
    assert deciding == {"pass": "pass", "latency_p50": "regression"}


def test_the_two_arms_are_interleaved_case_by_case_in_one_time_window(tmp_path: Path) -> None:
    """Each case's baseline and candidate requests are sent together, so the arms share the time window: run one
    after the other, every baseline request would precede every candidate request."""
    arrivals: list[tuple[str, int]] = []

    def seen(arm: str) -> Any:
        return lambda number, body: arrivals.append((arm, _number(body)))  # type: ignore[func-returns-value]

    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.behaviour, cand.behaviour = seen("base"), seen("cand")
        out = _gate(_project(tmp_path, base, cand, extra="concurrency: 1"))
    assert out.exit_code == 0, out.output
    position = {arrival: i for i, arrival in enumerate(arrivals)}
    assert len(position) == 2 * N
    assert max(abs(position[("base", k)] - position[("cand", k)]) for k in range(N)) == 1  # one worker at concurrency 1
    firsts = [min(("base", "cand"), key=lambda arm: position[(arm, k)]) for k in range(N)]
    assert 10 <= firsts.count("base") <= N - 10  # neither arm is always first


def test_machine_load_that_changes_during_an_a_a_gate_falls_on_both_arms(tmp_path: Path) -> None:
    """The serving machine gets busy half-way through the gate (5 ms per request, then 40 ms). Run one after the
    other, the first arm met the idle machine and the second the busy one: an A/A gate showed a latency regression
    of 35 ms that its interval, which resamples cases, could not see. Interleaved, both arms meet the load alike."""
    def load(number: int, body: dict[str, Any]) -> None:
        time.sleep(0.005 if number <= N else 0.04)

    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.behaviour = load
        project = _project(tmp_path, base, cand, extra="concurrency: 2")
        out = _gate(project, "--baseline", "cand", "--allow-inconclusive", "--json", str(tmp_path / "aa.json"))
    assert out.exit_code == 0, out.output
    rows = {(r["role"], r["scope"], r["metric"]): r for r in json.loads((tmp_path / "aa.json").read_text())["comparisons"]}
    p50 = rows[("speed", "echo", "latency_p50")]
    assert p50["verdict"] != "regression" and abs(p50["delta"]) < 0.01, p50


def _stand_in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpus: tuple[int, int]) -> Path:
    """Two local vLLM variants served by stand-in processes (echo answers), logging each request to served.jsonl."""
    from tests.conftest import ROOT

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "served.jsonl"))
    for name in ("base", "cand"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(f'{{"architectures": ["LlamaForCausalLM"], "name": "{name}"}}')
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(20))
    write_suite(tmp_path / "suites", "echo", cases)
    local = "local: {{engine: vllm, model_path: {0}, entrypoint: tests.stand_in_server, gpu_ids: [{1}]}}"
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        baselines: {{f: base}}
        variants:
          - {{name: base, family: f, {local.format("base", gpus[0])}}}
          - {{name: cand, family: f, {local.format("cand", gpus[1])}}}
        """)
    return tmp_path / "served.jsonl"


def test_two_vllm_variants_on_one_gpu_are_measured_one_after_the_other_and_the_report_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two vLLM servers on the same GPU cannot both be up: the gate serves them in turn instead of interleaving."""
    log = _stand_in_project(tmp_path, monkeypatch, (0, 0))
    out = _gate(tmp_path, "--allow-inconclusive")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert out.exit_code == 0, out.output
    assert "vLLM servers on the same GPUs, so they were served one after the other" in out.output
    order = [e["model"] for e in events if e["event"] in ("start", "stop")]
    assert order == ["base", "base", "cand", "cand"]  # the baseline's server stopped before the candidate's started


def test_a_deciding_speed_metric_times_both_arms_of_local_variants_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Local variants read the response cache by default, also in the gate. Where gate.margins makes a speed metric
    decide, no stored answer may stand in for a request (it has no latency of this gate): both arms are requested."""
    log = _stand_in_project(tmp_path, monkeypatch, (0, 1))

    def requests() -> int:
        return sum(json.loads(line)["event"] == "request" for line in log.read_text().splitlines())

    assert _gate(tmp_path, "--allow-inconclusive").exit_code == 0 and requests() == 40
    assert _gate(tmp_path, "--allow-inconclusive").exit_code == 0 and requests() == 40  # answered from the cache
    cfg = tmp_path / "evalsvc.yaml"
    cfg.write_text(cfg.read_text().replace("baselines:", "gate: {margins: {default: {absolute: 0.05}, "
                                                         "latency_p50: {absolute: 1.0}}}\nbaselines:", 1))
    timed = _gate(tmp_path, "--allow-inconclusive", "--json", str(tmp_path / "timed.json"))
    assert requests() == 80, timed.output
    rows = json.loads((tmp_path / "timed.json").read_text())["comparisons"]
    assert any(r["scope"] == "echo" and r["metric"] == "latency_p50" and r["verdict"] == "pass" for r in rows), rows
    assert timed.exit_code == 0, timed.output


def test_an_a_a_gate_at_temperature_above_0_draws_two_independent_runs(tmp_path: Path) -> None:
    """Same fingerprint: both runs are requested (cache off) and the second with other seeds, or a seeded sampler
    would replay the first run and the noise floor would read as zero."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand, n=10, extra="generation: {temperature: 0.7, seed: 5}")
        out = _gate(project, "--baseline", "cand", "--allow-inconclusive")
        seeds: dict[str, list[int]] = {}
        for r in cand.requests:
            seeds.setdefault(r["messages"][-1]["content"], []).append(r["seed"])
    assert out.exit_code == 0, out.output
    assert "an A/A comparison of two fresh runs" in out.output
    # per arm (the arms of a case go in a random order)
    assert len(seeds) == 10 and all(len(s) == 2 and abs(s[1] - s[0]) == 1_000_003 for s in seeds.values())
    assert len({s[0] for s in seeds.values()}) == 10  # and per case: no two cases share their random draws


def test_sampled_cases_each_get_their_own_seed_and_keep_it_across_runs() -> None:
    """One seed for every request would make all cases share one random stream, so a whole run would be one draw;
    each case gets seed + k + a hash of its id, the same on every run (reproducible), none at temperature 0."""
    from evalsvc.engine.plan import case_offset, sample_params

    sampled = {"temperature": 0.7, "seed": 5}
    a, b = sample_params(sampled, 0, "c1"), sample_params(sampled, 0, "c2")
    assert a["seed"] != b["seed"] and a == sample_params(sampled, 0, "c1")
    assert sample_params(sampled, 3, "c1")["seed"] == (5 + 3 + case_offset("c1")) % 2**31
    greedy = {"temperature": 0.0, "seed": 5}
    assert sample_params(greedy, 0, "c1") is greedy  # at temperature 0 the request (and its cache key) is unchanged


def _refused_url() -> str:
    """An http URL on 127.0.0.1 that refuses connections (a port bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_gate_that_cannot_evaluate_still_writes_its_json_and_junit(tmp_path: Path) -> None:
    """Exit 2 (the candidate's endpoint refuses connections) leaves CI a report to upload: the error and the runs made."""
    from types import SimpleNamespace

    with FakeEndpoint() as base:
        project = _project(tmp_path, base, SimpleNamespace(base_url=_refused_url()), n=6)  # type: ignore[arg-type]
        out = _gate(project, "--json", str(tmp_path / "gate.json"), "--junit", str(tmp_path / "gate.xml"),
                    "--markdown", str(tmp_path / "gate.md"))
    assert out.exit_code == 2, out.output
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["exit_code"] == 2 and report["verdict"] == "could not evaluate" and report["comparisons"] == []
    assert report["error"].startswith("cand on echo: ") and "could not evaluate" in (tmp_path / "gate.md").read_text()
    made = {(r["variant"], r["status"]) for r in report["runs_made"]}
    assert made == {("base", "succeeded"), ("cand", "failed")} and all(isinstance(r["run_id"], int) for r in report["runs_made"])
    tree = ET.parse(tmp_path / "gate.xml").getroot()
    (case,) = tree.iter("testcase")
    assert tree.get("errors") == "1" and case.find("error").get("message") == report["error"]  # type: ignore[union-attr]


def test_a_config_error_in_the_gate_still_writes_its_json_and_junit(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        project = _project(tmp_path, base, cand)
        out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "nope",
                                        "--json", str(tmp_path / "gate.json"), "--junit", str(tmp_path / "gate.xml")])
    assert out.exit_code == 2
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["exit_code"] == 2 and "nope" in report["error"] and report["runs_made"] == []
    assert ET.parse(tmp_path / "gate.xml").getroot().get("errors") == "1"
