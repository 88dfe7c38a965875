"""Suite loading: every malformed input names file:line (or the case) and the fix."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from evalsvc.errors import SuiteError
from evalsvc.identity import content_hash
from evalsvc.suites import load_suite
from tests.conftest import write_suite

GOOD = '{"id": "a", "input": "2+2?", "checks": [{"type": "numeric", "value": 4}]}'


def _error(tmp_path: Path, cases: str, header_extra: str = "") -> str:
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(tmp_path, "s", cases, header_extra))
    return str(err.value)


def test_bad_json_line_names_file_line_and_fix(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD + '\n{"id": "b", "input": "x",}')
    assert "s.jsonl:2" in msg and "invalid JSON" in msg and "fix:" in msg


def test_missing_field_names_case_and_field(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD + '\n{"id": "b", "checks": [{"type": "exact", "value": "x"}]}')
    assert "s.jsonl:2" in msg and "'b'" in msg and "input" in msg and "add 'input'" in msg


def test_unknown_check_type_suggests_the_close_name(tmp_path: Path) -> None:
    msg = _error(tmp_path, '{"id": "a", "input": "x", "checks": [{"type": "contain", "value": "x"}]}')
    assert "s.jsonl:1" in msg and "unknown check type 'contain'" in msg and "did you mean 'contains'" in msg


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD + "\n" + GOOD)
    assert "s.jsonl:2" in msg and "duplicate case id" in msg and "line 1" in msg


def test_bad_regex_is_caught_at_load(tmp_path: Path) -> None:
    msg = _error(tmp_path, '{"id": "r", "input": "x", "checks": [{"type": "regex", "pattern": "(unclosed"}]}')
    assert "s.jsonl:1" in msg and "'r'" in msg and "invalid regular expression" in msg


def test_check_that_needs_references_says_so(tmp_path: Path) -> None:
    msg = _error(tmp_path, '{"id": "r", "input": "x", "checks": [{"type": "rouge"}]}')
    assert "needs 'references'" in msg and "fix:" in msg


def test_unknown_header_key_gets_line_and_suggestion(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD, "prompt_templat: '{input}'\n")
    assert "s.yaml:3" in msg and "did you mean 'prompt_template'" in msg


def test_case_without_checks_is_refused(tmp_path: Path) -> None:
    assert "no checks" in _error(tmp_path, '{"id": "a", "input": "x"}')


def test_version_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = load_suite(write_suite(tmp_path / "a", "s", GOOD))
    reordered = '{"checks": [{"value": 4, "type": "numeric"}],   "input": "2+2?", "id": "a"}'
    b = load_suite(write_suite(tmp_path / "b", "s", reordered, "description: other words\n"))
    c = load_suite(write_suite(tmp_path / "c", "s", GOOD.replace("2+2?", "2+3?")))
    assert a.version == b.version != c.version


def test_bundled_suites_are_valid_and_large_enough() -> None:
    root = Path(__file__).resolve().parent.parent / "suites"
    suites = [load_suite(p) for p in sorted(root.glob("*.yaml"))]
    assert sum(len(s.cases) for s in suites) >= 80
    kinds = {c.type for s in suites for case in s.cases for c in case.checks}
    assert {"rouge", "grounding", "numeric", "contains"} <= kinds


def test_version_is_the_hash_of_header_and_every_case(tmp_path: Path) -> None:
    """The version is fed case by case while the file streams; it must equal the hash of the whole document."""
    lines = [GOOD.replace('"a"', f'"c{i}"').replace("2+2?", f"{i}+{i}?") for i in range(1200)]
    suite = load_suite(write_suite(tmp_path, "s", "\n".join(lines), "prompt_template: 'Q: {input}'\n"))
    header = suite.header.model_dump(mode="json", exclude={"cases", "description"}, exclude_defaults=True)
    assert suite.version == content_hash({"header": header, "cases": [c.spec for c in suite.cases]})
    assert header["prompt_template"] == "Q: {input}" and len(suite.cases) == 1200


def test_cases_are_read_again_from_a_copy_taken_at_load_so_an_edit_cannot_change_them(tmp_path: Path) -> None:
    header = write_suite(tmp_path, "s", GOOD + "\n" + GOOD.replace('"a"', '"b"'))
    suite = load_suite(header)
    assert [c.id for c in suite.cases] == ["a", "b"] == [c.id for c in suite.cases]  # iterable again and again
    assert suite.cases[-1].id == "b" and [c.id for c in suite.cases[:1]] == ["a"]
    assert suite.metrics().keys() == {"numeric", "pass"}
    (tmp_path / "s.jsonl").write_text(GOOD.replace("2+2?", "2+3?") + "\n")
    assert [(c.id, c.input) for c in suite.cases] == [("a", "2+2?"), ("b", "2+2?")]  # still the loaded version
    assert load_suite(header).version != suite.version
    copy = suite.cases.source
    assert copy is not None and copy.is_file()
    del suite
    gc.collect()
    assert not copy.exists()  # the copy goes with the suite


def test_a_suite_that_fails_to_load_leaves_no_copy_behind(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("evalsvc-*-s-*"))
    _error(tmp_path, GOOD + "\n" + GOOD)
    assert set(Path(tempfile.gettempdir()).glob("evalsvc-*-s-*")) == before


def test_copies_left_by_a_killed_process_are_removed_by_the_next_load(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = Path(tempfile.gettempdir())
    orphan, mine = tmp / f"evalsvc-{dead.pid}-s-x.jsonl", tmp / f"evalsvc-{os.getpid()}-s-y.jsonl"
    for f in (orphan, mine):
        f.write_text(GOOD)
    try:
        load_suite(write_suite(tmp_path, "s", GOOD))
        assert not orphan.exists() and mine.exists()
    finally:
        mine.unlink(missing_ok=True)


def test_a_literal_input_placeholder_inside_a_context_passage_is_not_substituted(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, "s", '{"id": "a", "input": "Which field?", "context": "Templates use {input} '
                                   'and {context}.", "checks": [{"type": "contains", "value": "x"}]}'))
    prompt = suite.messages(next(iter(suite.cases)))[-1]["content"]
    assert prompt == "Templates use {input} and {context}.\n\nWhich field?"


def test_editing_a_vendored_metric_script_is_a_new_suite_version(tmp_path: Path) -> None:
    """Answers scored by different code are never paired: the script's bytes are part of the version."""
    import json
    import uuid

    data = Path(__file__).parent / "data" / "word_overlap" / "word_overlap.py"
    folder = tmp_path / "suites" / f"overlap{uuid.uuid4().hex[:8]}"  # a fresh module name: evaluate caches by name
    folder.mkdir(parents=True)
    script = folder / f"{folder.name}.py"
    script.write_text(data.read_text())
    case = {"id": "a", "input": "x", "references": ["r"],
            "checks": [{"type": "hf_metric", "metric": f"{folder.name}/{script.name}", "key": "overlap"}]}
    header = write_suite(tmp_path / "suites", "s", json.dumps(case))
    before = load_suite(header).version
    assert load_suite(header).version == before  # stable
    script.write_text(data.read_text() + "\n# a scorer change\n")
    assert load_suite(header).version != before


@pytest.mark.parametrize("bundled", [True, False])
def test_upgrading_lm_eval_is_a_new_version_of_a_harness_suite_bundled_or_from_its_registry(
        bundled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's metrics and filters score a harness task: its version is part of the suite's, for a task whose YAML is
    bundled too (only a registry task's was, before)."""
    import importlib.metadata as md

    from evalsvc.config.harness import HarnessSpec
    from evalsvc.suites.harness import content_identity

    root = Path(__file__).resolve().parent.parent / "suites"
    spec = HarnessSpec(task="single_digit_addition", include="harness") if bundled else HarnessSpec(task="arc_easy")
    real = md.version

    def version(name: str) -> str:
        return "0.4.99" if name == "lm_eval" else real(name)

    before = content_identity(spec, root)
    monkeypatch.setattr(md, "version", version)
    assert content_identity(spec, root) != before


@pytest.mark.parametrize("where", ["../private/secrets.jsonl", "{abs}", "data/../../private/secrets.jsonl"])
def test_a_cases_file_outside_the_suite_folder_is_refused_unread(tmp_path: Path, where: str) -> None:
    """A suite's lines are sent to endpoints and stored in suite_cases: a header may not point them at another folder
    (was: ``cases: ../private/secrets.jsonl`` or an absolute path was read, sent and stored)."""
    secret = tmp_path / "private" / "secrets.jsonl"
    secret.parent.mkdir()
    secret.write_text('{"id": "k", "input": "sk-SECRET", "checks": [{"type": "exact", "value": "x"}]}\n')
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "s.yaml").write_text(f"name: s\ncases: {where.format(abs=secret)}\n")
    with pytest.raises(SuiteError) as err:
        load_suite(suites / "s.yaml")
    assert "s.yaml" in str(err.value) and "lies outside the suite's folder" in str(err.value) and "fix:" in str(err.value)


def test_a_cases_file_below_the_suite_folder_or_linked_from_it_is_read(tmp_path: Path) -> None:
    data = tmp_path / "shared-data"
    data.mkdir()
    (data / "s.jsonl").write_text(GOOD + "\n")
    suites = tmp_path / "suites"
    (suites / "cases").mkdir(parents=True)
    (suites / "cases" / "s.jsonl").write_text(GOOD + "\n")
    (suites / "s.yaml").write_text("name: s\ncases: cases/s.jsonl\n")
    (suites / "data").symlink_to(data)  # the suite folder's owner links the data in: followed
    (suites / "t.yaml").write_text("name: t\ncases: data/s.jsonl\n")
    below, linked = load_suite(suites / "s.yaml"), load_suite(suites / "t.yaml")
    assert [c.id for c in below.cases] == [c.id for c in linked.cases] == ["a"]
