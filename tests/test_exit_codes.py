"""The exit-code contract of every command: 1 means a regression and nothing else.

Every other failure (a typo in -s/-v/-m, an empty selection, a missing checkpoint, a missing extra, click's own usage
errors, a bug) exits 2 with its cause and fix and no traceback of evalsvc's own, and the gate still writes the files CI
uploads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def stored(echo_project: Path, fake: FakeEndpoint) -> str:
    """The echo project with one succeeded run of suite 'echo' by variant 'fake'."""
    cfg = str(echo_project / "evalsvc.yaml")
    assert _cli("run", "-c", cfg, "--no-progress").exit_code == 0
    return cfg


def test_every_command_exits_2_on_what_is_not_a_regression(stored: str, tmp_path: Path) -> None:
    c, empty = ["-c", stored], tmp_path / "empty"
    empty.mkdir()
    cases = [  # (argv, a phrase of the cause or fix)
        (["drift", *c, "-v", "fak"], "did you mean 'fake'"),
        (["drift", *c, "-s", "ech"], "did you mean 'echo'"),
        (["drift", *c, "-m", "nosuch"], "no metric of that name"),
        (["results", *c, "-s", "nosuch"], "no suite of that name"),
        (["results", *c, "-m", "pas"], "did you mean 'pass'"),
        (["runs", "list", *c, "-v", "nosuch"], "no variant of that name"),
        (["runs", "list", *c, "-s", "ech"], "did you mean 'echo'"),
        (["runs", "show", *c, "999"], "no such run"),
        (["cases", *c, "--run", "999"], "no such run"),
        (["export", *c, "--format", "jsonl", "-v", "fak", "--out", str(tmp_path / "x.jsonl")], "did you mean 'fake'"),
        (["run", *c, "-s", "nosuch"], "no such suite"),
        (["gate", *c, "--candidate", "fak"], "did you mean 'fake'"),
        (["schedule", "run-now", *c, "nightly"], "no schedule 'nightly'"),
        (["schedule", "history", *c, "nightly"], "no schedule of that name"),
        (["fire", *c, "nightly"], "no schedule 'nightly'"),
        (["init", "--path", stored], "exists; pass --force"),
        (["run", *c, "--no-such-option"], "No such option"),
        (["no-such-command"], "No such command"),
        (["suites", "validate", "--suites-dir", str(empty)], "no suite headers"),
        (["arena", *c, "-s", "ech", "-v", "fake", "-v", "fake", "-j", "checks"], "did you mean 'echo'"),
        (["variants", "-c", str(empty / "missing.yaml")], "file not found"),
        (["db", "status", "-c", str(empty / "missing.yaml")], "file not found"),
        (["dashboard", "-c", str(empty / "missing.yaml")], "file not found"),
        (["serve", *c], "has no 'schedules:'"),
        (["schedule", "pause", *c, "nightly"], "no schedule 'nightly'"),
        (["import", "lm-eval", str(empty), *c, "-v", "imported", "--family", "f"], "results_"),
    ]
    for argv, phrase in cases:
        out = _cli(*argv)
        assert out.exit_code == 2, f"evalsvc {' '.join(argv)} exited {out.exit_code}:\n{out.output}"
        assert phrase in out.output, f"evalsvc {' '.join(argv)}: {phrase!r} not in\n{out.output}"
        assert "Traceback" not in out.output, out.output
    assert not (tmp_path / "x.jsonl").exists()


def test_drift_all_metrics_is_every_stored_metric(stored: str) -> None:
    out = _cli("drift", "-c", stored, "-m", "all")
    assert out.exit_code == 0, out.output
    assert {"pass", "latency_p95"} <= {line.split()[2] for line in out.output.splitlines()[2:]}, out.output


def test_no_suites_is_exit_2_for_run_and_gate_with_the_files_written(tmp_path: Path, fake: FakeEndpoint) -> None:
    (tmp_path / "suites").mkdir()
    cfg = str(write_config(tmp_path, f"""\
        store: sqlite:///store.db
        baselines: {{fake: base}}
        variants:
          - {{name: base, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
          - {{name: cand, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
        """))
    run = _cli("run", "-c", cfg, "--no-progress")
    assert run.exit_code == 2 and "no suite to run" in run.output and "evalsvc init --quickstart" in run.output
    files = [tmp_path / f"g.{ext}" for ext in ("json", "xml", "md")]
    gate = _cli("gate", "-c", cfg, "--candidate", "cand", "--json", str(files[0]), "--junit", str(files[1]),
                "--markdown", str(files[2]))
    assert gate.exit_code == 2 and "no suite to run" in gate.output and "set gate.primary" not in gate.output
    assert json.loads(files[0].read_text())["exit_code"] == 2 and all(f.exists() for f in files)
    assert not fake.requests


def test_a_missing_local_checkpoint_is_exit_2_naming_models_build_and_the_gate_writes_its_files(tmp_path: Path) -> None:
    write_suite(tmp_path / "suites", "echo", '{"id": "a", "input": "x", "checks": [{"type": "exact", "value": "x"}]}')
    cfg = str(write_config(tmp_path, """\
        store: sqlite:///store.db
        baselines: {tiny: tiny-f16}
        variants:
          - {name: tiny-f16, family: tiny, local: {model_path: models/tiny-f16.gguf}}
          - {name: tiny-q8_0, family: tiny, local: {model_path: models/tiny-q8_0.gguf}}
        """))
    run = _cli("run", "-c", cfg, "--no-progress")
    assert run.exit_code == 2, run.output
    assert "tiny-f16.gguf does not exist" in run.output and "evalsvc models build" in run.output
    assert "Traceback" not in run.output
    files = [tmp_path / f"g.{ext}" for ext in ("json", "xml", "md")]
    gate = _cli("gate", "-c", cfg, "--candidate", "tiny-q8_0", "--json", str(files[0]), "--junit", str(files[1]),
                "--markdown", str(files[2]))
    assert gate.exit_code == 2, gate.output
    assert "evalsvc models build" in json.loads(files[0].read_text())["error"]
    assert "could not evaluate" in files[1].read_text() and "exit 2" in files[2].read_text()


def test_an_unexpected_exception_is_exit_2_and_the_gate_still_writes_its_files(
        stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsvc.service import gate, runs, schedule

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    for module, name in ((gate, "run_gate"), (runs, "run_suites"), (schedule, "fire")):
        monkeypatch.setattr(module, name, boom)
    files = [tmp_path / f"g.{ext}" for ext in ("json", "xml", "md")]
    out = _cli("gate", "-c", stored, "--candidate", "fake", "--baseline", "fake", "--json", str(files[0]), "--junit", str(files[1]),
               "--markdown", str(files[2]))
    assert out.exit_code == 2, out.output
    assert "failed unexpectedly (RuntimeError: a bug)" in json.loads(files[0].read_text())["error"]
    assert all(f.exists() for f in files)
    assert _cli("run", "-c", stored, "--no-progress").exit_code == 2
    Path(stored).write_text(Path(stored).read_text() + "schedules: [{name: nightly, cron: '0 3 * * *'}]\n")
    fired = _cli("fire", "-c", stored, "nightly")
    assert fired.exit_code == 2 and "failed unexpectedly" in fired.output


def test_a_missing_extra_names_the_pip_install_that_fixes_it(stored: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "inspect_ai", None)  # import inspect_ai now fails as if it were not installed
    for name in [m for m in sys.modules if m.startswith("inspect_ai.")]:
        monkeypatch.delitem(sys.modules, name)
    log = tmp_path / "log.eval"
    log.write_bytes(b"PK")
    out = _cli("import", "inspect", str(log), "-c", stored, "-v", "imported", "--family", "fake")
    assert out.exit_code == 2, out.output
    assert "pip install 'evalsvc[inspect]'" in out.output and "Traceback" not in out.output


def test_every_extra_named_in_a_message_is_one_pyproject_declares() -> None:
    import tomllib

    from evalsvc.cli import EXTRAS
    from tests.conftest import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(declared), set(EXTRAS.values()) - set(declared)


def test_version() -> None:
    out = _cli("--version")
    assert out.exit_code == 0 and out.output.startswith("evalsvc ")


def test_schedule_suites_and_variants_are_checked_when_the_file_is_checked(echo_project: Path) -> None:
    cfg = echo_project / "evalsvc.yaml"
    base = cfg.read_text()
    cfg.write_text(base + "schedules: [{name: nightly, cron: '0 3 * * *', suites: [echoo]}]\n")
    for argv in (["variants"], ["suites", "validate"], ["schedule", "list"]):
        out = _cli(*argv, "-c", str(cfg))
        assert out.exit_code == 2, f"evalsvc {' '.join(argv)}: {out.output}"
        assert "schedules: nightly" in out.output and "did you mean 'echo'" in out.output, out.output
    cfg.write_text(base + "schedules: [{name: nightly, cron: '0 3 * * *', variants: [fak]}]\n")
    out = _cli("variants", "-c", str(cfg))
    assert out.exit_code == 2 and "schedules: nightly" in out.output and "did you mean 'fake'" in out.output, out.output


def test_a_firing_whose_run_failed_exits_2(echo_project: Path, fake: FakeEndpoint) -> None:
    cfg = echo_project / "evalsvc.yaml"
    cfg.write_text(cfg.read_text() + "schedules: [{name: nightly, cron: '0 3 * * *'}]\n")
    fake.behaviour = lambda n, body: (500, {}, b'{"error": "down"}')
    out = _cli("fire", "-c", str(cfg), "nightly", "--slot", "2026-11-20T03:00Z")
    assert out.exit_code == 2, out.output
    assert "failed" in out.output
    fake.behaviour = None
    again = _cli("fire", "-c", str(cfg), "nightly", "--slot", "2026-11-20T03:00Z")  # resumes the slot: now it succeeds
    assert again.exit_code == 0, again.output
