"""docs/examples/evalsvc-gate.yml works as written: its steps run here, with its environment, against fake endpoints.

The workflow's `run:` steps are executed in order by bash, as a GitHub runner does (`bash -e`, the job's and the
step's `env:`, `$GITHUB_ENV` carried between steps, `$GITHUB_STEP_SUMMARY`, `if:` with always() and hashFiles()).
`${{ vars.* }}`, `${{ secrets.* }}` and `${{ github.* }}` come from a table; `gh` is a stand-in that records the PR
comment; `evalsvc` is this checkout's. Only the install step is left out (evalsvc is installed here already).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalsvc.config.starter import QUICKSTART, sample_suite
from tests.conftest import ROOT
from tests.fake_endpoint import FakeEndpoint

WORKFLOW = ROOT / "docs" / "examples" / "evalsvc-gate.yml"


def _sum(body: dict[str, Any]) -> str:
    a, b = re.findall(r"\d+", body["messages"][-1]["content"])
    return str(int(a) + int(b))


def _worse(body: dict[str, Any]) -> str:
    """A candidate that gets the sums with an odd first addend wrong (30 of the 60)."""
    a, _ = re.findall(r"\d+", body["messages"][-1]["content"])
    return "I am not sure" if int(a) % 2 else _sum(body)


def _workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _expand(text: str, context: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        expr = m[1].strip()
        assert expr in context, f"{WORKFLOW.name}: ${{{{ {expr} }}}} has no value in this test's context"
        return context[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def _condition(expr: str, cwd: Path, failed: bool) -> bool:
    parts = [p.strip() for p in expr.split("&&")]
    ok = True
    for p in parts:
        if p == "always()":
            continue
        found = re.fullmatch(r"hashFiles\('([^']+)'\) != ''", p)
        assert found, f"{WORKFLOW.name}: the condition {p!r} is not one this test can evaluate"
        ok = ok and (cwd / found[1]).exists()
    return ok if "always()" in parts else ok and not failed


def _run_workflow(repo: Path, context: dict[str, str], tools: Path) -> dict[str, Any]:
    """Every run: step of the gate job; the exit code of each by name, the summary, the PR comment."""
    job = _workflow()["jobs"]["gate"]
    github_env, summary = repo / ".github_env", repo / ".step_summary"
    github_env.write_text("")
    summary.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EVALSVC_", "BASELINE_", "CANDIDATE_"))}
    base |= {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "GITHUB_ENV": str(github_env),
             "GITHUB_STEP_SUMMARY": str(summary), "GH_LOG": str(repo / ".gh_log"), "GH_BODY": str(repo / ".gh_body")}
    job_env = {k: _expand(str(v), context) for k, v in job.get("env", {}).items()}
    codes: dict[str, int] = {}
    failed = False
    for step in job["steps"]:
        if "run" not in step or step.get("name") == "Install evalsvc":
            continue
        if not (_condition(step["if"], repo, failed) if "if" in step else not failed):
            continue
        carried = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
        env = base | job_env | carried | {k: _expand(str(v), context) for k, v in step.get("env", {}).items()}
        done = subprocess.run(["bash", "-e", "-c", _expand(step["run"], context)], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        codes[step.get("name", step["run"][:30])] = done.returncode
        if done.returncode != 0:
            failed = True
    body = repo / ".gh_body"
    return {"codes": codes, "summary": summary.read_text(), "comment": body.read_text() if body.exists() else None,
            "gh": (repo / ".gh_log").read_text() if (repo / ".gh_log").exists() else ""}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository as the workflow expects it: the quickstart's evalsvc.yaml with both keys, its sample suite."""
    (tmp_path / "suites").mkdir()
    header, cases = sample_suite()
    (tmp_path / "suites" / "sample.yaml").write_text(header)
    (tmp_path / "suites" / "sample.jsonl").write_text(cases)
    (tmp_path / "evalsvc.yaml").write_text(QUICKSTART.replace("# api_key_env:", "api_key_env:"))
    (tmp_path / "deploy").mkdir()
    return tmp_path


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "evalsvc").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m evalsvc.cli "$@"\n')
    (folder / "gh").write_text('#!/bin/sh\necho "$@" >> "$GH_LOG"\n'
                               'while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "$GH_BODY"; shift; done\n')
    for f in folder.iterdir():
        f.chmod(0o755)
    return folder


def _context(base: FakeEndpoint) -> dict[str, str]:
    return {"vars.BASELINE_URL": base.base_url, "vars.BASELINE_MODEL": "prod", "secrets.BASELINE_API_KEY": "sk-base",
            "secrets.CANDIDATE_API_KEY": "sk-cand", "secrets.EVALSVC_STORE": "", "github.token": "gh-token",
            "github.event.pull_request.number": "7"}


def test_the_workflow_declares_what_its_steps_need() -> None:
    flow = _workflow()
    assert flow["permissions"] == {"contents": "read", "checks": "write", "pull-requests": "write"}
    job = flow["jobs"]["gate"]
    assert {"BASELINE_URL", "BASELINE_MODEL", "BASELINE_API_KEY", "CANDIDATE_API_KEY"} <= set(job["env"])
    install = next(s for s in job["steps"] if s.get("name") == "Install evalsvc")
    assert "pip install" in install["run"] and "evalsvc" in install["run"]
    assert any(s.get("uses", "").startswith("mikepenz/action-junit-report") for s in job["steps"])
    assert "deploy/candidate.env" in flow[True]["pull_request"]["paths"]  # PyYAML reads the key `on` as True


def test_the_prs_candidate_passes_and_the_verdict_is_commented(repo: Path, tools: Path) -> None:
    with FakeEndpoint(reply=_sum) as base, FakeEndpoint(reply=_sum) as cand:
        (repo / "deploy" / "candidate.env").write_text(f"CANDIDATE_URL={cand.base_url}\nCANDIDATE_MODEL=prod-fp8\n")
        result = _run_workflow(repo, _context(base), tools)
        assert len(cand.requests) == 60 and {r["model"] for r in cand.requests} == {"prod-fp8"}  # the PR's candidate
        assert len(base.requests) == 60  # the baseline measured now too
    assert result["codes"] == {"The candidate this PR proposes": 0, "Gate the candidate against the baseline": 0,
                               "The verdict as a PR comment": 0}, result
    md = (repo / "gate.md").read_text()
    assert "pass" in md and result["comment"] == md and md in result["summary"]
    assert result["gh"].startswith("pr comment 7 --body-file gate.md")
    assert all((repo / f).exists() for f in ("gate.xml", "gate.json"))


def test_a_regression_fails_the_job_and_is_still_commented(repo: Path, tools: Path) -> None:
    with FakeEndpoint(reply=_sum) as base, FakeEndpoint(reply=_worse) as cand:
        (repo / "deploy" / "candidate.env").write_text(f"CANDIDATE_URL={cand.base_url}\nCANDIDATE_MODEL=prod-int4\n")
        result = _run_workflow(repo, _context(base), tools)
    assert result["codes"]["Gate the candidate against the baseline"] == 1, result
    assert result["codes"]["The verdict as a PR comment"] == 0
    assert "regression" in result["comment"].lower() and "failures=\"0\"" not in (repo / "gate.xml").read_text()


def test_a_candidate_that_cannot_be_reached_is_exit_2_with_its_report(repo: Path, tools: Path) -> None:
    with FakeEndpoint(reply=_sum) as base:
        (repo / "deploy" / "candidate.env").write_text("CANDIDATE_URL=http://127.0.0.1:9/v1\nCANDIDATE_MODEL=x\n")
        result = _run_workflow(repo, _context(base), tools)
    assert result["codes"]["Gate the candidate against the baseline"] == 2, result
    assert "could not evaluate" in result["comment"] and "could not evaluate" in result["summary"]
