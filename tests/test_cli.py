from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.store.schema import CaseResult, Run
from tests.conftest import write_suite
from tests.fake_endpoint import FakeEndpoint


def _cli(project: Path, *args: str):
    return CliRunner().invoke(main, [*args, "-c", str(project / "evalsvc.yaml")] if args[0] in {"run", "results"}
                              else list(args), catch_exceptions=False)


def _rows(project: Path) -> int:
    engine = create_engine(f"sqlite:///{project / 'store.db'}")
    with Session(engine) as s:
        n = s.scalar(select(func.count()).select_from(CaseResult)) or 0
    engine.dispose()
    return n


def test_run_then_results_prints_a_table_per_variant(echo_project: Path, fake: FakeEndpoint) -> None:
    out = _cli(echo_project, "run", "--no-progress")
    assert out.exit_code == 0, out.output
    assert "fake" in out.output and "succeeded" in out.output and "6/6" in out.output
    table = _cli(echo_project, "results")
    assert "1.000 [0.61,1.00] (n=6)" in table.output


def test_malformed_suite_stops_before_anything_is_written_and_keeps_old_results(
        echo_project: Path, fake: FakeEndpoint) -> None:
    assert _cli(echo_project, "run", "--no-progress").exit_code == 0
    before = _rows(echo_project)
    sent = len(fake.requests)
    bad = echo_project / "suites" / "echo.jsonl"
    bad.write_text(bad.read_text() + '{"id": "c0", "input": "dup", "checks": [{"type": "exact", "value": "x"}]}\n')
    out = _cli(echo_project, "run", "--no-progress")
    assert out.exit_code == 2
    assert "echo.jsonl:7" in out.output and "duplicate case id" in out.output and "fix:" in out.output
    assert "Traceback" not in out.output
    assert _rows(echo_project) == before and len(fake.requests) == sent


def test_bad_config_is_exit_2_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "evalsvc.yaml").write_text("concurency: 4\n")
    out = CliRunner().invoke(main, ["run", "-c", str(tmp_path / "evalsvc.yaml")])
    assert out.exit_code == 2
    assert "evalsvc.yaml:1" in out.output and "did you mean 'concurrency'" in out.output


def test_unknown_variant_suggests_the_close_name(echo_project: Path) -> None:
    out = _cli(echo_project, "run", "-v", "fak")
    assert out.exit_code == 2 and "did you mean 'fake'" in out.output


def test_suites_validate_reports_every_broken_file(tmp_path: Path) -> None:
    write_suite(tmp_path, "good", '{"id": "a", "input": "x", "checks": [{"type": "exact", "value": "x"}]}')
    write_suite(tmp_path, "bad", '{"id": "a", "input": "x", "checks": [{"type": "regex", "pattern": "["}]}')
    out = CliRunner().invoke(main, ["suites", "validate", "--suites-dir", str(tmp_path)])
    assert out.exit_code == 2
    assert "ok   " in out.output and "suite 'good'" in out.output
    assert "FAIL" in out.output and "bad.jsonl:1" in out.output and "invalid regular expression" in out.output


def test_help_teaches_with_examples() -> None:
    top = CliRunner().invoke(main, ["--help"]).output
    assert "evalsvc init" in top and "resumes" in top
    run_help = CliRunner().invoke(main, ["run", "--help"]).output
    assert "Examples:" in run_help and "--slot" in run_help and "Exit code" in run_help


@pytest.mark.parametrize("command", ["run", "gate", "fire", "serve", "drift"])
def test_a_commands_help_exits_0_without_a_traceback(command: str) -> None:
    out = CliRunner().invoke(main, [command, "--help"])
    assert out.exit_code == 0 and "Traceback" not in out.output and "Usage:" in out.output, out.output


def test_failed_run_exit_code_and_table_name_the_cause(echo_project: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (401, {}, b'{"error": "invalid api key"}')
    out = _cli(echo_project, "run", "--no-progress")
    assert out.exit_code == 2
    assert "failed" in out.output and "401" in out.output
    engine = create_engine(f"sqlite:///{echo_project / 'store.db'}")
    with Session(engine) as s:
        assert s.scalars(select(Run.status)).one() == "failed"
    engine.dispose()


def test_the_command_list_shows_each_whole_first_sentence() -> None:
    top = CliRunner().invoke(main, ["--help"]).output
    commands = " ".join(top[top.index("Commands:"):].split())
    assert "..." not in commands
    assert "List configured variants with their fingerprints (what identifies their results)." in commands
