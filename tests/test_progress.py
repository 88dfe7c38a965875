"""Quiet, informative output: one evalsvc bar per run with its errors and rate; lm-eval's own output kept in the log."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.store.db import open_engine
from evalsvc.suites import resolve
from tests.conftest import ROOT, echo_cases, write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_harness import _adder


def _bars(stderr: str) -> dict[str, list[str]]:
    """Every state a bar was drawn in, by its description ("suite × variant"); anything else on stderr is kept under ''."""
    drawn: dict[str, list[str]] = {}
    for segment in filter(None, (s.strip() for s in re.split(r"[\r\n]", stderr))):
        m = re.match(r"^(\S+ × \S+): ", segment)
        drawn.setdefault(m[1] if m else "", []).append(segment)
    return drawn


def _project(tmp_path: Path, fake: FakeEndpoint) -> Path:
    write_suite(tmp_path / "suites", "echo", echo_cases(6))
    write_suite(tmp_path / "suites", "more", echo_cases(4))
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        concurrency: 2
        max_retries: 0
        circuit_breaker: 5
        variants:
          - {{name: fake, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
        """)
    return tmp_path


def _fail_say_1_and_4(n: int, body: dict[str, Any]):
    return (500, {}, b"boom") if body["messages"][-1]["content"] in ("say 1", "say 4") else None


def test_each_run_has_one_bar_with_its_cases_errors_and_rate(tmp_path: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = _fail_say_1_and_4
    config = str(_project(tmp_path, fake) / "evalsvc.yaml")
    out = CliRunner().invoke(main, ["run", "-c", config, "--progress", "--no-compare"])
    bars = _bars(out.stderr)
    assert set(bars) == {"echo × fake", "more × fake"}, out.stderr  # one bar per run, nothing else on stderr
    echo, more = bars["echo × fake"][-1], bars["more × fake"][-1]
    assert "6/6" in echo and "errors=2" in echo and re.search(r"case/s", echo)
    assert "4/4" in more and "errors=1" in more  # c0..c3: only "say 1" fails


def test_a_resumed_run_starts_its_bar_at_the_answers_it_has(tmp_path: Path, fake: FakeEndpoint) -> None:
    fake.behaviour = _fail_say_1_and_4
    config = str(_project(tmp_path, fake) / "evalsvc.yaml")
    CliRunner().invoke(main, ["run", "-c", config, "-s", "echo", "--no-progress", "--no-compare"])  # 2 of 6 errored
    fake.behaviour = None
    again = _bars(CliRunner().invoke(main, ["run", "-c", config, "-s", "echo", "--progress", "--no-compare"]).stderr)
    assert again["echo × fake"][0].split("|")[-1].lstrip().startswith("4/6")
    assert "6/6" in again["echo × fake"][-1] and "errors=0" in again["echo × fake"][-1]


def test_no_bar_by_default_when_stderr_is_not_a_terminal(tmp_path: Path, fake: FakeEndpoint) -> None:
    config = str(_project(tmp_path, fake) / "evalsvc.yaml")
    out = CliRunner().invoke(main, ["run", "-c", config, "--no-compare"])
    assert out.exit_code == 0 and out.stderr == ""


def test_lm_evals_bars_and_messages_go_to_the_runs_log_not_the_terminal(tmp_path: Path, capfd, monkeypatch) -> None:
    shutil.copytree(ROOT / "suites" / "harness", tmp_path / "suites" / "harness")
    shutil.copy(ROOT / "suites" / "addition_harness.yaml", tmp_path / "suites")
    monkeypatch.chdir(tmp_path)  # no git repository here: lm-eval's git call complains on file descriptor 2
    with FakeEndpoint(reply=_adder) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            max_retries: 0
            variants:
              - {{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}
            """)
        cfg = load_config(tmp_path / "evalsvc.yaml")
        runner = Runner(cfg, open_engine(cfg.store_url()), progress=True, log_dir=tmp_path / "logs")
        outcome = runner.run(resolve(cfg.suites_dir, ["addition_harness"])[0], cfg.variants[0])
    assert outcome.status == "succeeded", outcome.error
    captured = capfd.readouterr()
    bars = _bars(captured.err)
    assert set(bars) == {"addition_harness × v"}, captured.err  # evalsvc's bar alone
    assert "20/20" in bars["addition_harness × v"][-1] and "errors=0" in bars["addition_harness × v"][-1]
    log = (tmp_path / "logs" / "v.addition_harness.lm-eval.log").read_text()
    for lm_eval_output in ("Requesting API", "Building contexts for single_digit_addition", "Generating test split"):
        assert lm_eval_output in log and lm_eval_output not in captured.err + captured.out
    assert "not a git repository" not in captured.err


def _stderr_on_a_terminal(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` with its stderr on a pseudo-terminal; what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a new pty is 0 columns wide
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave, timeout=120)
    finally:
        os.close(slave)
    drawn = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and everything was read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert proc.returncode == 0, drawn
    return drawn.decode()


def test_arena_draws_its_bars_by_default_when_stderr_is_a_terminal(tmp_path: Path, fake: FakeEndpoint) -> None:
    write_suite(tmp_path / "suites", "echo", echo_cases(3))
    config = write_config(tmp_path, f"""\
        store: sqlite:///store.db
        variants:
          - {{name: a, family: f, endpoint: {{base_url: "{fake.base_url}", model: a}}}}
          - {{name: b, family: f, endpoint: {{base_url: "{fake.base_url}", model: b}}}}
        """)
    drawn = _stderr_on_a_terminal([sys.executable, "-m", "evalsvc.cli", "arena", "-c", str(config), "-s", "echo", "-v", "a",
                                   "-v", "b", "-j", "checks"], tmp_path)
    assert set(_bars(drawn)) == {"echo × a", "echo × b"}, drawn


def test_where_stderr_is_not_a_terminal_a_run_prints_a_plain_line_every_interval_and_no_bar() -> None:
    import io
    import time

    from evalsvc.engine.progress import RunBar

    out = io.StringIO()
    with RunBar("echo", "fake", 10, 2, enabled=None, file=out, plain_every_s=0.05) as bar:
        bar.done(3, errored=1)
        deadline = time.monotonic() + 10
        while "echo × fake: 5/10 cases, errors=1" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert lines and all(re.fullmatch(r"echo × fake: \d+/10 cases, errors=\d, [\d.]+ cases/s", line) for line in lines), lines
    assert "\r" not in out.getvalue()  # no bar redrawn in a log


def test_a_runner_left_to_decide_prints_plain_lines_where_stderr_is_not_a_terminal(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    write_config(tmp_path, "store: sqlite:///store.db\nvariants: []\n")
    cfg = load_config(tmp_path / "evalsvc.yaml")
    runner = Runner(cfg, open_engine(cfg.store))
    assert runner.progress is None  # RunBar's "plain lines" setting
    assert Runner(cfg, open_engine(cfg.store), progress=False).progress is False
