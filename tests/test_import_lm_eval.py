"""`evalsvc import lm-eval`: real lm-eval --log_samples outputs, made here against llama.cpp, gated like runs made here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from evalsvc.config import load_config
from evalsvc.local_models import starter_config, variant_path
from evalsvc.serving import serve
from evalsvc.store.schema import CaseResult, MetricPoint, Run
from tests.conftest import MODELS, ROOT

pytestmark = [pytest.mark.model, pytest.mark.slow]
QUANTS = ["F16", "Q2_K"]


def _evalsvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evalsvc.cli", *args, "-c", str(project / "evalsvc.yaml")],
                          cwd=project, capture_output=True, text=True, timeout=900)


def _lm_eval(project: Path, variant: str, out: Path) -> None:
    """lm-eval's own CLI, with --log_samples, on the bundled task, against the variant served by llama.cpp."""
    cfg = load_config(project / "evalsvc.yaml")
    tasks = project / "suites" / "harness"
    with serve(cfg.variant(variant), project / "logs") as served:
        args = f"model={served.model},base_url={served.base_url}/chat/completions,num_concurrent=1,tokenized_requests=False"
        done = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "local-chat-completions", "--model_args", args,
                               "--tasks", "single_digit_addition", "--include_path", str(tasks), "--apply_chat_template",
                               "--gen_kwargs", "temperature=0", "--log_samples", "--output_path", str(out)],
                              cwd=tasks, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not all(variant_path(MODELS, q).is_file() for q in QUANTS):
        if os.environ.get("EVALSVC_REQUIRE_MODELS"):
            pytest.fail(f"local variants missing in {MODELS}; scripts/setup.sh builds them")
        pytest.skip("local variants not built; run `bash scripts/setup.sh`")
    root = tmp_path_factory.mktemp("imports")
    shutil.copytree(ROOT / "suites" / "harness", root / "suites" / "harness")
    shutil.copy(ROOT / "suites" / "addition_harness.yaml", root / "suites")
    (root / "evalsvc.yaml").write_text(starter_config(str(MODELS), QUANTS).replace("concurrency: 2", "concurrency: 1"))
    ran = _evalsvc(root, "run", "-s", "addition_harness", "--no-progress", "--no-compare")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for variant in ("smollm2-f16", "smollm2-q2_k"):
        _lm_eval(root, variant, root / "lm-eval" / variant)
        done = _evalsvc(root, "import", "lm-eval", str(root / "lm-eval" / variant), "-v", f"{variant}-lm-eval",
                        "--family", "smollm2", "--suite", "addition_harness")
        assert done.returncode == 0 and "stored as run" in done.stdout, done.stdout + done.stderr
    return root


def _gate(project: Path, candidate: str, baseline: str) -> dict:
    out = project / f"{candidate}.json"
    done = _evalsvc(project, "gate", "--candidate", candidate, "--baseline", baseline, "--reuse", "--no-run",
                    "--json", str(out))
    assert done.returncode in (0, 1, 3), done.stdout + done.stderr
    return json.loads(out.read_text())


def _cases(project: Path, variant: str) -> dict[str, tuple[str | None, dict | None]]:
    engine = create_engine(f"sqlite:///{project / 'evalsvc.db'}")
    with Session(engine) as s:
        rows = s.execute(select(CaseResult.case_id, CaseResult.output, CaseResult.scores).join(Run, Run.id == CaseResult.run_id)
                         .where(Run.variant_name == variant)).all()
    engine.dispose()
    return {r.case_id: (r.output, r.scores) for r in rows}


def _counts(project: Path) -> tuple[int, int, int]:
    engine = create_engine(f"sqlite:///{project / 'evalsvc.db'}")
    with Session(engine) as s:
        counts = tuple(s.scalar(select(func.count()).select_from(t)) for t in (Run, CaseResult, MetricPoint))
    engine.dispose()
    return counts  # type: ignore[return-value]


def test_imported_outputs_gate_to_the_same_verdict_as_the_task_run_here(project: Path) -> None:
    for variant in ("smollm2-f16", "smollm2-q2_k"):
        here, imported = _cases(project, variant), _cases(project, f"{variant}-lm-eval")
        assert len(here) == 20 and here == imported  # same documents, outputs and per-sample scores
    ours = _gate(project, "smollm2-q2_k", "smollm2-f16")
    theirs = _gate(project, "smollm2-q2_k-lm-eval", "smollm2-f16-lm-eval")
    assert ours["verdict"] == theirs["verdict"] and ours["exit_code"] == theirs["exit_code"]
    assert ours["comparisons"] == theirs["comparisons"] and ours["comparisons"][0]["n"] == 20
    assert ours["flips"] == theirs["flips"] and ours["flips"]
    assert any("stored results compared" in n for n in theirs["notes"])
    assert any("scored by lm-eval" in line for line in theirs["runs"])


def test_importing_the_same_output_again_changes_nothing(project: Path) -> None:
    before = _counts(project)
    again = _evalsvc(project, "import", "lm-eval", str(project / "lm-eval" / "smollm2-f16"), "-v", "smollm2-f16-lm-eval",
                     "--family", "smollm2", "--suite", "addition_harness")
    assert again.returncode == 0 and "already imported as run" in again.stdout, again.stdout + again.stderr
    assert _counts(project) == before


@pytest.mark.parametrize(("damage", "field"), [
    (lambda row: row.pop("doc_id"), "doc_id"),
    (lambda row: row.__setitem__("exact_match", "yes"), "exact_match"),
    (None, "not JSON"),
])
def test_a_damaged_samples_line_is_refused_naming_file_line_and_field_and_nothing_is_written(
        project: Path, tmp_path: Path, damage, field: str) -> None:
    copy = tmp_path / "out"
    shutil.copytree(project / "lm-eval" / "smollm2-q2_k", copy)
    samples = next(copy.rglob("samples_*.jsonl"))
    lines = samples.read_text().splitlines()
    if damage is None:
        lines[2] = lines[2][: len(lines[2]) // 2]
    else:
        row = json.loads(lines[2])
        damage(row)
        lines[2] = json.dumps(row)
    samples.write_text("\n".join(lines) + "\n")
    before = _counts(project)
    done = _evalsvc(project, "import", "lm-eval", str(copy), "-v", "damaged", "--family", "smollm2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{samples.name}:3" in done.stderr and field in done.stderr and "fix:" in done.stderr
    assert _counts(project) == before


def test_a_configured_variant_name_is_refused(project: Path) -> None:
    done = _evalsvc(project, "import", "lm-eval", str(project / "lm-eval" / "smollm2-f16"), "-v", "smollm2-f16",
                    "--family", "smollm2")
    assert done.returncode == 2 and "configures a variant of that name" in done.stderr
