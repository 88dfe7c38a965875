"""`evalsvc import lm-eval` on damaged lm-eval 0.4 outputs: each is refused naming the file (and line), exit 2,
nothing written. The outputs are written here in lm-eval's --log_samples layout (results_<time>.json beside
samples_<task>_<time>.jsonl); tests/test_import_lm_eval.py imports ones made by lm-eval itself."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evalsvc.cli import main

STAMP = "2025-01-01T00-00-00.000000"


def _results(task: str = "t", **over: Any) -> dict[str, Any]:
    data = {"results": {task: {"exact_match,none": 0.5}},
            "configs": {task: {"task": task, "output_type": "generate_until", "metric_list": [{"metric": "exact_match"}]}},
            "versions": {task: 1}, "n-shot": {task: 0},
            "config": {"model": "local-chat-completions", "model_args": "model=m", "limit": None},
            "date": 1735689600.0, "lm_eval_version": "0.4.9"}
    return data | over


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {"doc_id": i, "doc": {"question": f"q{i}", "answer": str(i)}, "target": str(i), "arguments": [],
           "resps": [[str(i)]], "filtered_resps": [str(i)], "filter": "none", "metrics": ["exact_match"],
           "exact_match": float(i % 2), "doc_hash": f"h{i}", "prompt_hash": "p", "target_hash": f"t{i}"}
    return row | over


def _write(folder: Path, results: dict[str, Any], rows: list[dict[str, Any]], raw: list[bytes] = ()) -> Path:
    folder.mkdir()
    (folder / f"results_{STAMP}.json").write_text(json.dumps(results))
    lines = [json.dumps(r, allow_nan=True).encode() for r in rows] + list(raw)
    (folder / f"samples_t_{STAMP}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "evalsvc.yaml").write_text("store: sqlite:///store.db\n")
    return tmp_path


def _import(project: Path, folder: Path, name: str):
    return CliRunner().invoke(main, ["import", "lm-eval", str(folder), "-v", name, "--family", "fam",
                                     "-c", str(project / "evalsvc.yaml")])


def _rows(project: Path) -> tuple[int, int]:
    if not (project / "store.db").exists():
        return 0, 0
    with sqlite3.connect(project / "store.db") as db:
        return db.execute("select count(*) from runs").fetchone()[0], db.execute("select count(*) from case_results").fetchone()[0]


GOOD = [_row(i) for i in range(6)]
# damage -> (results, sample rows, raw lines after them, the place the error names, what it says)
DAMAGED: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[bytes], str, str]] = {
    "a samples line not UTF-8": (_results(), GOOD[:2], [b'{"doc_id": 9, "doc": {"q": "\xff\xfe"}, "filter": "none"}'],
                                 f"samples_t_{STAMP}.jsonl:3", "not UTF-8 text"),
    "resps [[]] (no answer)": (_results(), [*GOOD[:2], _row(2, resps=[[]])], [], f"samples_t_{STAMP}.jsonl:3",
                               "field 'resps' is not what lm-eval writes"),
    "resps [5]": (_results(), [*GOOD[:2], _row(2, resps=[5])], [], f"samples_t_{STAMP}.jsonl:3",
                  "field 'resps' is not what lm-eval writes"),
    "a NaN metric": (_results(), [*GOOD[:3], _row(3, exact_match=float("nan"))], [], f"samples_t_{STAMP}.jsonl:4",
                     "field 'exact_match' (a metric the line lists) is missing or not a finite number"),
    "date 1e20": (_results(date=1e20), GOOD, [], f"results_{STAMP}.json", "field 'date' (1e+20) is not a time"),
    "configs.t a number": (_results(configs={"t": 5}), GOOD, [], f"results_{STAMP}.json",
                           "field 'configs.t' is not a mapping"),
    "generation_kwargs a list": (_results(configs={"t": {"task": "t", "generation_kwargs": [1], "metadata": "x"}}), GOOD, [],
                                 "", "stored as run"),  # optional fields of another shape are read as absent
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_output_is_refused_naming_the_place_and_nothing_is_written(project: Path, damage: str) -> None:
    results, rows, raw, where, says = DAMAGED[damage]
    done = _import(project, _write(project / "out", results, rows, raw), "damaged")
    if says == "stored as run":
        assert done.exit_code == 0 and says in done.output, done.output
        return
    assert done.exit_code == 2, done.output
    assert where in done.output, done.output
    assert says in done.output and "fix:" in done.output and "Traceback" not in done.output, done.output
    assert _rows(project) == (0, 0)


def test_documents_that_share_an_id_are_stored_as_cases_of_their_own(project: Path) -> None:
    """Two documents with one doc["id"] were one case id twice (IntegrityError, a traceback): each task whose ids repeat
    names every case doc-<doc_id>, as a harness suite run here does."""
    rows = [_row(0, doc={"id": "same", "q": "a"}), _row(1, doc={"id": "same", "q": "b"}), _row(2, doc={"id": "other"})]
    done = _import(project, _write(project / "out", _results(), rows), "dupes")
    assert done.exit_code == 0 and "stored as run" in done.output, done.output
    with sqlite3.connect(project / "store.db") as db:
        assert sorted(r[0] for r in db.execute("select case_id from case_results")) == ["doc-0", "doc-1", "doc-2"]


def test_distinct_document_ids_stay_the_case_ids(project: Path) -> None:
    rows = [_row(i, doc={"id": f"q-{i}"}) for i in range(3)]
    assert _import(project, _write(project / "out", _results(), rows), "ids").exit_code == 0
    with sqlite3.connect(project / "store.db") as db:
        assert sorted(r[0] for r in db.execute("select case_id from case_results")) == ["q-0", "q-1", "q-2"]
