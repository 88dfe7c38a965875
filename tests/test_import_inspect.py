"""`evalsvc import inspect`: real inspect_ai eval logs (its mock model, made here), both formats, gated like runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalsvc.importers.imported import ImportFileError
from evalsvc.importers.inspect_log import read
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RIGHT, TWO_WRONG = "4,6,2,9,7", "4,5,2,8,7"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _log(out: Path, log_format: str, answers: str, epochs: int = 1) -> Path:
    done = subprocess.run([sys.executable, "-m", "tests.inspect_task", str(out), log_format, answers, str(epochs)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    return {"a.eval": _log(root / "a-eval", "eval", RIGHT), "a.json": _log(root / "a-json", "json", RIGHT),
            "b.eval": _log(root / "b-eval", "eval", TWO_WRONG), "epochs": _log(root / "epochs", "eval", f"{RIGHT},{RIGHT}", 2)}


def _evalsvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evalsvc.cli", *args, "-c", str(project / "evalsvc.yaml")], cwd=project,
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_both_log_formats_read_to_the_logs_own_samples_and_scores(logs: dict[str, Path]) -> None:
    from inspect_ai.log import read_eval_log

    eval_run, json_run = read(logs["a.eval"]), read(logs["a.json"])
    assert eval_run.cases == json_run.cases and eval_run.suite_version == json_run.suite_version
    own = read_eval_log(str(logs["b.eval"]))
    b = read(logs["b.eval"])
    assert b.suite_version == eval_run.suite_version  # same task and samples: the two variants' cases pair
    assert b.source.startswith("inspect_ai ") and b.error is None and set(b.metrics) == {"match", "includes", "pass"}
    expected = {str(s.id): (s.output.completion, float(all(v.value == "C" for v in s.scores.values()))) for s in own.samples}
    assert {c.case_id: (c.output, c.scores["pass"]) for c in b.cases} == expected
    assert sorted(v for _, v in expected.values()) == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_epochs_are_samples_of_one_case(logs: dict[str, Path]) -> None:
    run = read(logs["epochs"])
    assert len(run.cases) == 10 and {c.sample_index for c in run.cases} == {0, 1}
    assert len({c.case_id for c in run.cases}) == 5


def test_imported_logs_gate_case_by_case_and_a_reimport_changes_nothing(logs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "evalsvc.yaml").write_text(f"store: sqlite:///{tmp_path / 'store.db'}\nvariants: []\n")
    for name, log in (("mock-a", logs["a.eval"]), ("mock-b", logs["b.eval"])):
        done = _evalsvc(tmp_path, "import", "inspect", str(log), "-v", name, "--family", "mock")
        assert done.returncode == 0 and "stored as run" in done.stdout, done.stdout + done.stderr
    again = _evalsvc(tmp_path, "import", "inspect", str(logs["b.eval"]), "-v", "mock-b", "--family", "mock")
    assert "already imported as run 2" in again.stdout, again.stdout + again.stderr
    gate = _evalsvc(tmp_path, "gate", "--candidate", "mock-b", "--baseline", "mock-a", "--json", str(tmp_path / "g.json"))
    assert gate.returncode in (1, 3), gate.stdout + gate.stderr
    decides = next(c for c in json.loads((tmp_path / "g.json").read_text())["comparisons"] if c["role"] == "decides")
    assert (decides["n"], decides["baseline_mean"], decides["candidate_mean"], decides["flips_down"]) == (5, 1.0, 0.6, 2)


def test_a_file_that_is_no_inspect_log_is_refused_naming_it(logs: dict[str, Path], tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.json"
    garbled.write_text(logs["a.json"].read_text()[:500])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": {}}))
    for bad in (garbled, other):
        with pytest.raises(ImportFileError) as err:
            read(bad)
        assert str(bad) in str(err.value) and "fix:" in str(err.value)
