"""The gate's decision rule: the pooled metric decides, every suite can veto, nothing undecided is dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.config import GateConfig
from evalsvc.stats.binary import compare_binary
from evalsvc.store.db import open_engine
from evalsvc.store.schema import CaseResult, Run
from evalsvc.verdicts.decision import decide_gate
from evalsvc.verdicts.health import worst_case
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_judge import _judged_project, _with_baseline, sound_judge

M, ALPHA = 0.05, 0.05


def pairs(n: int, down: int = 0, up: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n paired pass/fail cases of which ``down`` went pass -> fail and ``up`` fail -> pass."""
    base, cand = np.ones(n), np.ones(n)
    cand[:down] = 0.0
    base[down:down + up] = 0.0
    return base, cand


def decide(data: dict[str, tuple[np.ndarray, np.ndarray]], **gate: Any):
    rows = [(name, compare_binary("pass", b, c, M, ALPHA)) for name, (b, c) in data.items()]
    pooled = [("all suites", compare_binary("pass", np.concatenate([b for b, _ in data.values()]),
                                            np.concatenate([c for _, c in data.values()]), M, ALPHA))]
    return decide_gate(pooled, rows, [], GateConfig(**gate))


def test_300_identical_cases_and_a_12_case_identical_suite_pass_though_the_small_suite_alone_cannot() -> None:
    _, rows, _, decision = decide({"big": pairs(300), "small": pairs(12)})
    assert decision.verdict == "pass" and decision.rule == "pooled" and decision.reasons == []
    assert dict((n, c.verdict) for n, c in rows)["small"] == "inconclusive"  # too small to show anything alone
    strict = decide({"big": pairs(300), "small": pairs(12)}, decide="every_suite")[3]
    assert strict.verdict == "inconclusive" and any("small/pass not shown non-inferior" in r for r in strict.reasons)


def test_a_15_case_suite_falling_to_8_of_15_inside_140_unchanged_cases_is_a_regression_naming_it() -> None:
    pooled, _, _, decision = decide({"big": pairs(140), "small": pairs(15, down=7)})
    assert pooled[0][1].verdict != "regression"  # pooled, the loss is inside the margin's reach: the pool alone hides it
    assert decision.verdict == "regression" and [r.split(" ")[0] for r in decision.reasons] == ["small/pass"]


def test_a_suite_shown_worse_blocks_the_pass_and_is_named() -> None:
    """A pooled pass, but one suite's own interval lies wholly below 0 (9 of 120 lost, none won): inconclusive."""
    pooled, rows, _, decision = decide({"a": pairs(400), "b": pairs(400), "c": pairs(120, down=9)})
    assert pooled[0][1].verdict == "pass"
    assert decision.verdict == "inconclusive" and decision.shown_worse == ["c/pass"]
    assert decision.reasons == ["c/pass shown worse than the baseline (its interval lies below 0, Holm across suites)"]
    assert decision.blocks("c", dict(rows)["c"]) == "shown worse than the baseline"


def test_a_critical_suite_must_be_non_inferior_on_its_own() -> None:
    plain = decide({"big": pairs(400), "safety": pairs(20)})[3]
    critical = decide({"big": pairs(400), "safety": pairs(20)}, suites={"safety": {"critical": True}})[3]
    assert plain.verdict == "pass"
    assert critical.verdict == "inconclusive" and critical.critical == ["safety"]
    assert critical.reasons[0].startswith("critical suite safety/pass not shown non-inferior on its own")


def test_a_suite_that_cannot_be_decided_vetoes_the_pass_with_its_reason() -> None:
    rows = [("big", compare_binary("pass", *pairs(400), M, ALPHA))]
    pooled = [("all suites", rows[0][1])]
    decision = decide_gate(pooled, rows, [], GateConfig(), [("judged", "its judge changed")])[3]
    assert decision.verdict == "inconclusive" and decision.reasons == ["judged could not be decided: its judge changed"]


def test_the_pooled_rule_keeps_a_false_pass_at_the_margin_below_alpha_with_the_loss_in_one_suite() -> None:
    """A true pooled Δ of −m all in the 48-case suite of four (12, 24, 48, 76 cases): a pass is an error; 400 draws."""
    rng = np.random.default_rng(7)
    sizes, lossy = (12, 24, 48, 76), 48
    passes = 0
    for _ in range(400):
        suites = {}
        for n in sizes:
            p_down = 0.05 + (M * sum(sizes) / n if n == lossy else 0.0)
            u = rng.random(n)
            base, cand = np.ones(n), np.ones(n)
            cand[u < p_down] = 0.0
            base[(u >= p_down) & (u < p_down + 0.05)] = 0.0
            suites[f"s{n}"] = (base, cand)
        passes += decide(suites)[3].verdict in ("pass", "improvement")
    assert passes / 400 <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / 400) ** 0.5


def test_a_case_neither_run_answered_is_no_loss_in_the_worst_case_bound() -> None:
    states = ({"a": "ok", "b": "errored", "c": "ok"}, {"a": "ok", "b": "errored", "c": "errored"})
    filled = worst_case(states, {"a": 1.0, "c": 1.0}, {"a": 1.0}, worst=0.0, best=1.0)
    assert filled == ([1.0, 1.0], [1.0, 0.0])  # b (errored in both) is left out; c (baseline only) counts against
    assert worst_case(({"a": "ok", "b": "errored"}, {"a": "ok", "b": "errored"}), {"a": 1.0}, {"a": 1.0}, 0.0, 1.0) is None


def _number(body: dict[str, Any]) -> int:
    return int(re.findall(r"\d+", body["messages"][-1]["content"])[0])


def _two_suites(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, big: int, small: int, gate: str = "") -> list[str]:
    for name, n, start in (("big", big, 0), ("small", small, 1000)):
        write_suite(tmp_path / "suites", name, "\n".join(
            f'{{"id": "{name}{i}", "input": "say {start + i}", "checks": [{{"type": "contains", "value": "{start + i}"}}]}}'
            for i in range(n)))
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_retries: 0
        baselines: {{f: base}}
        {gate}
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
        """)
    return ["gate", "-c", str(tmp_path / "evalsvc.yaml"), "--candidate", "cand"]


def test_the_gate_passes_300_plus_12_identical_cases_and_says_how_it_decided(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        gate = _two_suites(tmp_path, base, cand, 300, 12)
        out = CliRunner().invoke(main, [*gate, "--json", str(tmp_path / "g.json")], catch_exceptions=False)
        strict = _two_suites(tmp_path, base, cand, 300, 12, "gate: {decide: every_suite}")
        old = CliRunner().invoke(main, [*strict, "--reuse", "--no-run"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "How the verdict was reached (gate.decide: pooled)" in out.output and "| all suites | pass | 312 |" in out.output
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["decision"]["rule"] == "pooled" and report["decision"]["reasons"] == []
    assert {(c["scope"], c["role"]) for c in report["comparisons"] if c["metric"] == "pass"} == {
        ("all suites", "decides"), ("big", "veto"), ("small", "veto")}
    assert old.exit_code == 3 and "small/pass not shown non-inferior on its own" in old.output, old.output


def test_the_gate_names_a_suite_that_collapsed_inside_unchanged_ones(tmp_path: Path) -> None:
    collapse = lambda body: "no idea" if 1000 <= _number(body) < 1007 else f"echo {_number(body)}"  # noqa: E731
    with FakeEndpoint() as base, FakeEndpoint(reply=collapse) as cand:
        out = CliRunner().invoke(main, _two_suites(tmp_path, base, cand, 140, 15), catch_exceptions=False)
    assert out.exit_code == 1 and "**Regressed:** small/pass" in out.output, out.output


def _judged_and_plain(tmp_path: Path, cand: FakeEndpoint, judge: FakeEndpoint, base: FakeEndpoint) -> list[str]:
    project = _judged_project(tmp_path, cand, judge)
    write_suite(project / "suites", "plain", "\n".join(
        f'{{"id": "p{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(200)))
    return _with_baseline(project, base, "{}")[1]


def test_pass_is_never_paired_across_judges_a_changed_judge_leaves_its_suite_undecided(tmp_path: Path) -> None:
    """Identical models; the baseline's run was judged under another prompt template (as a pinned release reference
    judged months ago would be) and the judge is down, so its answers cannot be judged again (engine/rejudge.py): its
    pass holds the old verdicts, so the judged suite cannot be decided (exit 3, named); it used to be paired as if the
    judges were one, a regression (exit 1) under a stricter judge."""
    with FakeEndpoint() as cand, FakeEndpoint() as base, FakeEndpoint(reply=sound_judge(8)) as judge:
        gate = _judged_and_plain(tmp_path, cand, judge, base)
        first = CliRunner().invoke(main, gate, catch_exceptions=False)
        with Session(open_engine(f"sqlite:///{tmp_path / 'store.db'}")) as s, s.begin():
            for row in s.scalars(select(CaseResult).join(Run, Run.id == CaseResult.run_id)
                                 .where(Run.variant_name == "base", CaseResult.case_id.like("q%"))):
                row.judge = {"judge": {**row.judge["judge"], "template": "a-stricter-template"}}
                row.scores = {**row.scores, "pass": 0.0, "judge": 1.0}
        judge.behaviour = lambda n, body: (503, {}, b"down")
        again = CliRunner().invoke(main, [*gate, "--reuse", "--no-run", "--json", str(tmp_path / "g.json")],
                                   catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert again.exit_code == 3, again.output
    report = json.loads((tmp_path / "g.json").read_text())
    [undecided] = report["decision"]["undecided"]
    assert undecided["suite"] == "judged" and undecided["reason"].startswith(
        "its runs were judged by different judges or prompt templates, and the baseline answers (run ")
    assert "could not be re-judged with the current judge: the judge did not answer" in undecided["reason"]
    assert not [c for c in report["comparisons"] if c["scope"] == "judged" and c["metric"] == "pass"]


def test_a_suite_whose_judge_its_canaries_fool_vetoes_the_pass(tmp_path: Path) -> None:
    """The judged suite's answers fell (the judge now grades the candidate 3 of 10), but the judge lets a canary
    through: it cannot decide, and the plain suite's pass used to carry the gate (exit 0); now it is inconclusive."""
    state = {"score": 8, "fooled": 0}
    with FakeEndpoint() as cand, FakeEndpoint() as base, \
            FakeEndpoint(reply=lambda body: sound_judge(state["score"], state["fooled"])(body)) as judge:
        gate = _judged_and_plain(tmp_path, cand, judge, base)
        config = Path(gate[2])
        config.write_text(config.read_text().replace("variants:", "concurrency: 1\nvariants:", 1))
        CliRunner().invoke(main, ["run", "-c", str(config), "-v", "base"], catch_exceptions=False)
        state.update(score=3, fooled=1)
        out = CliRunner().invoke(main, [*gate, "--reuse"], catch_exceptions=False)
    assert out.exit_code == 3, out.output
    assert "judged could not be decided: its judge let more than 5% of its canaries through" in out.output


def test_two_identical_deployments_failing_the_same_cases_pass(tmp_path: Path) -> None:
    """Both endpoints refuse the same 6 long prompts (a shared context limit): nothing says the candidate is worse."""
    def too_long(number: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        return (400, {}, b'{"error": {"message": "context length exceeded"}}') if _number(body) % 25 == 0 else None
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.behaviour = cand.behaviour = too_long
        gate = _two_suites(tmp_path, base, cand, 150, 0)
        (tmp_path / "suites" / "small.yaml").unlink()
        out = CliRunner().invoke(main, gate, catch_exceptions=False)
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("rule", ["pooled", "every_suite"])
def test_the_markdown_says_which_rule_decided(tmp_path: Path, rule: str) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        out = CliRunner().invoke(main, _two_suites(tmp_path, base, cand, 60, 60, f"gate: {{decide: {rule}}}"),
                                 catch_exceptions=False)
    assert f"How the verdict was reached (gate.decide: {rule})" in out.output
