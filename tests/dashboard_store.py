"""A seeded store and a config on it, shared by the dashboard tests (AppTest and Chromium)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.seed_store import BASELINE, FAMILY, Plan, seed
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.schema import CaseResult, SuiteCase

PLAN = Plan(runs=10, cases=60, battles=150)
# A team's first store: the baseline and one candidate, two suites, nothing failing, no upstream change, one checkpoint
PAIR = Plan(runs=10, cases=60, battles=150, suites=["echo", "numbers"], rates={BASELINE: 0.80, "smollm2-q4_0": 0.62},
            failing=None, upstream=None, new_checkpoint=None)


def seeded_project(folder: Path, url: str, plan: Plan = PLAN) -> Path:
    """Seed ``url`` (an empty store) with ``plan`` and write an evalsvc.yaml naming its variants; returns the config."""
    if not url.startswith("sqlite"):
        upgrade(url)
    seed(open_engine(url), plan)
    variants = "\n".join(f"  - {{name: {v}, family: {FAMILY}, endpoint: {{base_url: 'http://127.0.0.1:9/v1', model: m}}}}"
                         for v in plan.rates)
    path = folder / "evalsvc.yaml"
    path.write_text(textwrap.dedent(f"""\
        store: {url}
        baselines: {{{FAMILY}: {BASELINE}}}
        dashboard: {{cache_ttl_s: 0}}
        variants:
        """) + variants + "\n")
    return path


def answer(case_id: str) -> str:
    """The expected answer of a PAIR case: "say N" echoes N (the echo suite), "what is N x 7 + 3" (numbers)."""
    suite, i = case_id.rsplit("-", 1)
    return f"echo {i}" if suite == "echo" else str(int(i) * 7 + 3)


def seeded_pair_project(folder: Path, url: str) -> Path:
    """A team's first store (PAIR), reading like real runs: each case asks a question with an exact check of its
    expected answer, and each stored answer is that answer when the case passed and a wrong one when it failed."""
    config = seeded_project(folder, url, PAIR)
    with Session(open_engine(url)) as s, s.begin():
        for case in s.scalars(select(SuiteCase)):
            i = case.case_id.rsplit("-", 1)[1]
            question = f"say {i}" if case.case_id.startswith("echo") else f"what is {i} x 7 + 3?"
            case.spec = {"input": question, "checks": [{"type": "exact", "value": answer(case.case_id)}]}
        for row in s.scalars(select(CaseResult).where(CaseResult.status == "ok")):
            passed = (row.scores or {}).get("pass") == 1.0
            row.output = answer(row.case_id) if passed else "no idea"
            row.scores = {**row.scores, "exact": row.scores["pass"]}
    return config
