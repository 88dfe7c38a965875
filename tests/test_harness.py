"""lm-eval harness tasks as suites: per-sample case results, failures, refusals, data-only YAML."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.errors import SuiteError
from evalsvc.store.db import open_engine
from evalsvc.store.schema import CaseResult, MetricPoint, SuiteCase
from evalsvc.suites import load_suite, resolve
from tests.conftest import ROOT, write_config
from tests.fake_endpoint import FakeEndpoint


def _adder(body: dict[str, Any]) -> str:
    a, b = map(int, re.findall(r"(\d+) \+ (\d+)", body["messages"][-1]["content"])[0])
    return "The answer is 99." if (a, b) == (9, 9) or a + b == 7 else f"{a} + {b} = {a + b}"


def _project(tmp_path: Path, fake: FakeEndpoint) -> Path:
    shutil.copytree(ROOT / "suites" / "harness", tmp_path / "suites" / "harness")
    shutil.copy(ROOT / "suites" / "addition_harness.yaml", tmp_path / "suites")
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_retries: 0
        variants:
          - {{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}
        """)
    return tmp_path


def _run(project: Path, suite: str = "addition_harness"):
    cfg = load_config(project / "evalsvc.yaml")
    engine = open_engine(cfg.store_url())
    return Runner(cfg, engine, progress=False).run(resolve(cfg.suites_dir, [suite])[0], cfg.variants[0]), engine


def test_harness_task_results_are_stored_per_sample(tmp_path: Path) -> None:
    with FakeEndpoint(reply=_adder) as fake:
        outcome, engine = _run(_project(tmp_path, fake))
        sent = len(fake.requests)
    assert outcome.status == "succeeded", outcome.error
    with Session(engine) as s:
        rows = s.scalars(select(CaseResult)).all()
        docs = s.scalars(select(SuiteCase)).all()
        point = s.scalars(select(MetricPoint).where(MetricPoint.metric == "exact_match")).one()
    assert sent == len(rows) == len(docs) == 20
    wrong = {r.case_id for r in rows if r.scores["exact_match"] == 0.0}
    expected_wrong = {f"add-{a}-{b}" for a in range(1, 10) for b in range(1, 10) if a + b == 7 or (a, b) == (9, 9)}
    assert wrong == {r.case_id for r in rows} & expected_wrong and wrong
    assert all(r.scores["pass"] == r.scores["exact_match"] for r in rows)
    assert point.value == pytest.approx(1 - len(wrong) / 20) and point.n == 20


def test_harness_requests_carry_the_variants_generation_settings_and_system_prompt(tmp_path: Path) -> None:
    """Temperature, top_p, seed and the system prompt are in the fingerprint, so they must reach lm-eval's requests."""
    with FakeEndpoint(reply=_adder) as fake:
        project = _project(tmp_path, fake)
        cfg_file = project / "evalsvc.yaml"
        cfg_file.write_text(cfg_file.read_text().replace(
            "model: m}}", "model: m}, generation: {temperature: 0.7, top_p: 0.9, seed: 41}, system_prompt: Be terse.}"))
        outcome, _ = _run(project)
        bodies = list(fake.requests)
    assert outcome.status == "succeeded", outcome.error
    assert bodies and all(b["temperature"] == 0.7 and b["top_p"] == 0.9 for b in bodies)
    assert all(b["messages"][0] == {"role": "system", "content": "Be terse."} for b in bodies)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_harness_requests_when_sampling_get_a_seed_per_document_as_plain_cases_do(tmp_path: Path, temperature: float) -> None:
    """One seed for every request would make a whole run one draw (plan.sample_params); at temperature 0 it is kept."""
    with FakeEndpoint(reply=_adder) as fake:
        project = _project(tmp_path, fake)
        cfg_file = project / "evalsvc.yaml"
        cfg_file.write_text(cfg_file.read_text().replace(
            "model: m}}", f"model: m}}, generation: {{temperature: {temperature}, seed: 41}}, system_prompt: Be terse.}}"))
        outcome, _ = _run(project)
        bodies = list(fake.requests)
    assert outcome.status == "succeeded", outcome.error
    seeds = [b["seed"] for b in bodies]
    if temperature == 0.0:
        assert set(seeds) == {41}
    else:
        assert len(set(seeds)) == len(bodies) == 20 and 41 not in seeds
        from evalsvc.engine.harness import document_seed

        assert seeds == [document_seed(b["messages"], 41, 0.7) for b in bodies]
        without_system = [document_seed(b["messages"][1:], 41, 0.7) for b in bodies]
        assert without_system == seeds  # the system prompt does not move a document's seed


def test_null_content_in_a_harness_task_is_an_error_not_a_wrong_answer(tmp_path: Path) -> None:
    """lm-eval fills a null answer with a placeholder (""), which its metric scores as wrong: here it is an error."""
    def null_on_7_9(n: int, body: dict[str, Any]):
        if "7 + 9" in body["messages"][-1]["content"]:
            reply = {"id": "x", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "length"}]}
            return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()
        return None

    with FakeEndpoint(reply=_adder) as fake:
        fake.behaviour = null_on_7_9
        outcome, engine = _run(_project(tmp_path, fake))
    with Session(engine) as s:
        rows = {r.case_id: r for r in s.scalars(select(CaseResult))}
    assert rows["add-7-9"].status == "errored" and rows["add-7-9"].scores is None
    assert "null content" in rows["add-7-9"].error
    assert all(r.status == "ok" for cid, r in rows.items() if cid != "add-7-9")
    assert outcome.n_errored == 1 and outcome.status == "succeeded"  # 1 of 20 is within max_error_rate 0.05


def test_endpoint_failure_fails_the_harness_run_and_scores_nothing(tmp_path: Path) -> None:
    with FakeEndpoint(reply=_adder) as fake:
        fake.behaviour = lambda n, body: (500, {}, b"boom")
        outcome, engine = _run(_project(tmp_path, fake))
    assert outcome.status == "failed" and "lm-eval task 'single_digit_addition' failed" in outcome.error
    with Session(engine) as s:
        assert s.scalars(select(CaseResult)).all() == [] and s.scalars(select(MetricPoint)).all() == []


def test_loglikelihood_task_is_refused_on_an_endpoint_without_echo_logprobs(tmp_path: Path) -> None:
    project_dir = tmp_path
    with FakeEndpoint(reply=_adder) as fake:
        project = _project(project_dir, fake)
        (project / "suites" / "harness" / "mc.yaml").write_text(textwrap.dedent("""\
            task: tiny_mc
            dataset_path: json
            dataset_kwargs: {data_files: {test: single_digit_addition.jsonl}}
            test_split: test
            output_type: multiple_choice
            doc_to_text: "{{question}}"
            doc_to_choice: ["{{answer}}", "0"]
            doc_to_target: 0
            metric_list: [{metric: acc}]
            """))
        (project / "suites" / "mc.yaml").write_text("name: mc\nharness: {task: tiny_mc, include: harness}\n")
        outcome, _ = _run(project, "mc")
        assert fake.requests == []
    assert outcome.status == "failed"
    assert "needs prompt log-probabilities (multiple_choice)" in outcome.error and "echo_logprobs" in outcome.error


def test_function_tags_are_refused_suites_are_data_only(tmp_path: Path) -> None:
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "t.yaml").write_text("task: t\nprocess_docs: !function utils.process\n")
    (tmp_path / "s.yaml").write_text("name: s\nharness: {task: t, include: harness}\n")
    with pytest.raises(SuiteError, match=r"(?s)t\.yaml:2.*unsupported YAML tag.*data only"):
        load_suite(tmp_path / "s.yaml")


def test_editing_the_task_data_changes_the_suite_version(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        project = _project(tmp_path, fake)
    header = project / "suites" / "addition_harness.yaml"
    before = load_suite(header).version
    data = project / "suites" / "harness" / "single_digit_addition.jsonl"
    data.write_text(data.read_text().replace('"answer": "2"', '"answer": "3"', 1))
    assert load_suite(header).version != before
