"""The docs say what the code does: every setting documented, none called unconfigurable, the gate's outputs as written."""

from __future__ import annotations

import re
from dataclasses import replace

from evalsvc.config import Config
from evalsvc.config.gate import GateConfig
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.verdicts.compare import Report
from evalsvc.verdicts.decision import Decision
from evalsvc.verdicts.gate_report import _fails, roles
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SETTINGS = [name for model in (Config, GateConfig) for name in model.model_fields]


def _text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


def test_every_setting_of_evalsvc_yaml_is_named_in_the_docs() -> None:
    text = _text()
    missing = [name for name in SETTINGS if not re.search(rf"(`|\b){name}(`|:)", text)]
    assert not missing, f"settings no doc names: {missing}"


def test_no_doc_calls_a_setting_not_configurable() -> None:
    wrong = [(p.name, line.strip()) for p in DOCS for line in p.read_text(encoding="utf-8").splitlines()
             if "not configurable" in line and any(f"`{name}`" in line for name in SETTINGS)]
    assert not wrong


def test_the_gate_doc_names_every_json_role_and_every_junit_row_that_can_fail() -> None:
    c = replace(compare_continuous("pass", [0.9, 0.8, 0.7], [0.1, 0.2, 0.3], 0.05), verdict="regression")
    decision = Decision("pooled", "regression")
    report = Report("base", "cand", [("s", c)], [("s", c)], "regression", pooled=[("all", c)], bounds=[("s", c)],
                    health=c, speed=[("s", c)], decision=decision, bound_decision=decision)
    named = {role for role, _, _ in roles(report)} | {role for role, _, _ in roles(replace(report, decision=None))}
    gate_md = (ROOT / "docs" / "gate.md").read_text(encoding="utf-8")
    json_part = gate_md[gate_md.index("`--json FILE`"):]
    assert [r for r in sorted(named) if f"`{r}`" not in json_part] == []
    phrase = {"decides": "deciding regression", "veto": "suite that regressed or blocks", "bound": "worst-case bound",
              "health": "serving health"}
    assert {r for r in named if _fails(r, "s", c, report, True, True)} == set(phrase)
    junit_part = " ".join(gate_md[gate_md.index("JUnit XML in `--junit FILE`"):].split("never fail")[0].split())
    assert [r for r, words in phrase.items() if words not in junit_part] == []
