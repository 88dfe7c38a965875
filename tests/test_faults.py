"""Fault injection at the run level: every fault ends in a clear status, with no row lost or duplicated, and resume works.

How one request is classified and retried is in test_endpoint.py; a SIGKILL between two writes is in
test_resume.py. Here a real ``evalsvc run`` meets each fault, and the store is checked row by row:
exactly one row per (run, case, sample), errored cases never scored, and a re-run after the fault
clears resumes the same run and sends only what is missing (counted at the fake endpoint).
docs/reliability.md tabulates what each test proves.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.store.db import current_revision, head_revision, upgrade
from evalsvc.store.schema import CachedResponse, CaseResult, MetricPoint, Run
from tests.conftest import ROOT, write_config, write_suite
from tests.fake_endpoint import MALFORMED, FakeEndpoint, Override, Reset, Trickle, Truncated, answer
from tests.pg import PostgresServer, _as_postgres, pg_bin

OK_BODY = b'{"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "echo"}}]}'


def _hang(n: int, body: dict[str, Any]) -> None:
    time.sleep(1.5)  # past request_timeout_s (0.5 s); the late answer goes to a closed socket
    return None


# fault -> (what the fake does instead of answering, the error class and the cause stored with an errored case)
FAULTS: dict[str, tuple[Callable[[int, dict[str, Any]], Override | None], str, str]] = {
    "http_500": (lambda n, b: (500, {}, b'{"error": "internal"}'), "TransientEndpointError", r"HTTP 500"),
    "http_429_retry_after": (lambda n, b: (429, {"Retry-After": "1"}, b"slow down"), "RateLimitedError",
                             r"rate limited \(HTTP 429\)"),
    "invalid_json": (lambda n, b: (200, {}, b"<html>502 upstream</html>"), "MalformedResponseError",
                     r"unexpected response body \(JSONDecodeError"),
    "truncated_json": (lambda n, b: (200, {}, OK_BODY[:40]), "MalformedResponseError",
                       r"unexpected response body \(JSONDecodeError"),
    "truncated_body": (lambda n, b: Truncated(OK_BODY, 30), "TransientEndpointError",
                       r"connection failed: RemoteProtocolError: peer closed connection"),
    "hang_past_timeout": (_hang, "TransientEndpointError", r"timed out: (ReadTimeout|no whole response within 0.5 s)"),
    "slow_drip_past_timeout": (lambda n, b: Trickle(OK_BODY, 0.1), "TransientEndpointError",
                               r"timed out: no whole response within 0.5 s"),
    "connection_reset": (lambda n, b: Reset(), "TransientEndpointError",
                         r"connection failed: ReadError: ConnectionResetError: .*reset by peer"),
}
# 200 answers of the wrong shape (the fake's MALFORMED): errored and retried like a transient fault, never a crash
for _name in ("content_number", "usage_not_object", "tokens_past_2_31", "finish_reason_object", "broken_gzip"):
    FAULTS[f"malformed_{_name}"] = ((lambda reply: lambda n, b: reply)(MALFORMED[_name][0]), "MalformedResponseError",
                                    ".*" + MALFORMED[_name][1])


def _case(body: dict[str, Any]) -> str:
    return "c" + re.findall(r"\d+", body["messages"][-1]["content"])[0]


def _project(folder: Path, fake: FakeEndpoint, n: int, store: str = "sqlite:///store.db", extra: str = "",
             timeout_s: float = 0.5) -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(folder / "suites", "echo", cases)
    write_config(folder, f"""\
        store: {store}
        concurrency: 2
        max_retries: 1
        circuit_breaker: 3
        request_timeout_s: {timeout_s}
        variants:
          - name: fake
            family: fake
            endpoint: {{base_url: "{fake.base_url}", model: fake}}
        """ + extra)
    return folder / "evalsvc.yaml"


def _cli_run(config: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["run", "-c", str(config), "--no-progress", *args], env=env)


def _rows(url: str) -> list[CaseResult]:
    engine = create_engine(url)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(CaseResult).order_by(CaseResult.run_id, CaseResult.case_id)))
    finally:
        engine.dispose()


def _runs(url: str) -> list[Run]:
    engine = create_engine(url)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(Run).order_by(Run.id)))
    finally:
        engine.dispose()


def _count(url: str) -> int:
    try:
        return len(_rows(url))
    except Exception:  # the store is still being created
        return 0


def _assert_one_row_per_case(rows: list[CaseResult], n: int, runs: int = 1) -> None:
    keys = Counter((r.run_id, r.case_id, r.sample_index) for r in rows)
    assert all(k == 1 for k in keys.values()), f"duplicated rows: {keys}"
    assert len(keys) == n * runs, f"{len(keys)} rows for {n} cases x {runs} runs"


def _assert_errored_never_scored(rows: list[CaseResult]) -> None:
    for r in rows:
        if r.status == "errored":
            assert r.scores is None and r.output is None and r.error, r.case_id
        else:
            assert r.status == "ok" and r.scores is not None and r.scores["pass"] == 1.0, r.case_id


# ---------------------------------------------------------------- endpoint faults


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_some_cases_errors_only_them_and_the_rerun_sends_only_those(fault: str, tmp_path: Path) -> None:
    """c1 meets the fault once (the retry recovers it); c3 and c4 meet it on every attempt."""
    make, kind, cause = FAULTS[fault]
    n = 6
    seen: dict[str, list[float]] = {}

    def behaviour(number: int, body: dict[str, Any]) -> Override | None:
        case = _case(body)
        seen.setdefault(case, []).append(time.monotonic())
        if case in ("c3", "c4") or (case == "c1" and len(seen[case]) == 1):
            return make(number, body)
        return None

    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, n)
        url = f"sqlite:///{tmp_path / 'store.db'}"
        fake.behaviour = behaviour
        out = _cli_run(config)
        assert out.exit_code == 2, out.output
        assert "failed" in out.output and "2/6 cases errored" in out.output and "Traceback" not in out.output
        rows = _rows(url)
        _assert_one_row_per_case(rows, n)
        _assert_errored_never_scored(rows)
        by_case = {r.case_id: r for r in rows}
        assert {c for c, r in by_case.items() if r.status == "errored"} == {"c3", "c4"}
        assert all(re.match(f"{kind}: {cause}", by_case[c].error) for c in ("c3", "c4")), by_case["c3"].error
        assert Counter(_case(b) for b in fake.requests) == {"c0": 1, "c1": 2, "c2": 1, "c3": 2, "c4": 2, "c5": 1}
        if fault == "http_429_retry_after":
            assert seen["c1"][1] - seen["c1"][0] >= 1.0, "the retry must wait for Retry-After"
        (run,) = _runs(url)
        assert run.status == "failed" and re.search(cause, run.error) and "Re-run" in run.error
        with Session(create_engine(url)) as s:
            assert not s.scalars(select(MetricPoint)).all(), "a failed run writes no metric points"

        fake.behaviour = None
        sent = len(fake.requests)
        again = _cli_run(config)
        assert again.exit_code == 0, again.output
        assert sorted(_case(b) for b in fake.requests[sent:]) == ["c3", "c4"]
        rows = _rows(url)
        _assert_one_row_per_case(rows, n)
        assert all(r.status == "ok" for r in rows)
        (resumed,) = _runs(url)
        assert (resumed.id, resumed.status, resumed.attempts, resumed.n_ok) == (run.id, "succeeded", 2, n)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_every_request_trips_the_breaker_and_the_rerun_completes(fault: str, tmp_path: Path) -> None:
    make, kind, cause = FAULTS[fault]
    n = 10
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, n)
        url = f"sqlite:///{tmp_path / 'store.db'}"
        fake.behaviour = make
        started = time.monotonic()
        out = _cli_run(config)
        assert out.exit_code == 2 and "failed" in out.output, out.output
        rows = _rows(url)
        assert rows and all(r.status == "errored" and r.scores is None and re.match(f"{kind}: {cause}", r.error)
                            for r in rows)
        _assert_one_row_per_case(rows, len(rows))
        assert len(rows) < n, "the breaker stops the run before every case has been tried"
        # every errored case had its retry, and no case without a row was sent
        assert Counter(_case(b) for b in fake.requests) == {r.case_id: 2 for r in rows}
        (run,) = _runs(url)
        assert run.status == "failed" and "3 requests in a row failed" in run.error and re.search(cause, run.error)
        assert f"{n - len(rows)} cases not attempted" in run.error
        assert time.monotonic() - started < 15

        fake.behaviour = None
        sent = len(fake.requests)
        again = _cli_run(config)
        assert again.exit_code == 0, again.output
        assert Counter(_case(b) for b in fake.requests[sent:]) == {f"c{i}": 1 for i in range(n)}
        rows = _rows(url)
        _assert_one_row_per_case(rows, n)
        assert all(r.status == "ok" for r in rows)
        (resumed,) = _runs(url)
        assert (resumed.id, resumed.status, resumed.attempts) == (run.id, "succeeded", 2)


def test_a_retry_after_beyond_the_longest_backoff_errors_the_case_instead_of_sleeping(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, 4)
        fake.behaviour = lambda n, b: (429, {"Retry-After": "3600"}, b"come back in an hour") if _case(b) == "c2" else None
        started = time.monotonic()
        out = _cli_run(config)
        assert time.monotonic() - started < 15, "a one-hour Retry-After must not stall the run"
        assert out.exit_code == 2 and "1/4 cases errored" in out.output, out.output
        rows = {r.case_id: r for r in _rows(f"sqlite:///{tmp_path / 'store.db'}")}
        assert rows["c2"].status == "errored" and rows["c2"].scores is None
        assert "asks to wait 3600 s (Retry-After)" in rows["c2"].error
        assert Counter(_case(b) for b in fake.requests)["c2"] == 1, "retrying inside the window is pointless"


def test_an_answer_past_the_size_cap_errors_its_case_unread_and_is_not_retried(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, 4, extra="generation: {max_tokens: 32}\n")
        huge = answer("z" * (4 << 20))  # 4 MB for a 32-token request
        fake.behaviour = lambda n, b: huge if _case(b) == "c2" else None
        out = _cli_run(config)
        assert out.exit_code == 2 and "1/4 cases errored" in out.output and "Traceback" not in out.output, out.output
        rows = {r.case_id: r for r in _rows(f"sqlite:///{tmp_path / 'store.db'}")}
        assert rows["c2"].status == "errored" and rows["c2"].output is None and rows["c2"].scores is None
        assert rows["c2"].error.startswith("ResponseTooLargeError: response too large"), rows["c2"].error
        assert Counter(_case(b) for b in fake.requests)["c2"] == 1, "the same request would get the same answer"


def test_an_answer_the_store_refuses_is_stored_as_an_errored_case_not_dropped(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the database driver cannot take (an OverflowError, not a lost store) in one row of a batch: the batch's
    other answers are stored, that case is errored with the cause, and the re-run asks it again."""
    from evalsvc.store import repo

    real = repo.save_results

    def refusing(engine, results, caches):  # the driver's error for a value it cannot bind, as sqlite3 raises it
        if any(r.case_id == "c3" and r.status == "ok" for r in results):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(engine, results, caches)

    monkeypatch.setattr(repo, "save_results", refusing)
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, 6)
        url = f"sqlite:///{tmp_path / 'store.db'}"
        out = _cli_run(config)
        assert out.exit_code == 2 and "1/6 cases errored" in out.output and "Traceback" not in out.output, out.output
        rows = _rows(url)
        _assert_one_row_per_case(rows, 6)
        _assert_errored_never_scored(rows)
        (c3,) = [r for r in rows if r.status == "errored"]
        assert c3.case_id == "c3" and "the answer could not be stored (OverflowError: Python int too large" in c3.error
        monkeypatch.setattr(repo, "save_results", real)
        sent = len(fake.requests)
        again = _cli_run(config)
        assert again.exit_code == 0, again.output
        assert [_case(b) for b in fake.requests[sent:]] == ["c3"]


def test_an_exception_while_scoring_an_answer_errors_that_case_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsvc.engine import plan

    real = plan.score_output

    def crashing(checks, text, case):
        if case.id == "c1":
            raise ZeroDivisionError("division by zero")
        return real(checks, text, case)

    monkeypatch.setattr(plan, "score_output", crashing)
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, 4)
        out = _cli_run(config)
        assert out.exit_code == 2 and "1/4 cases errored" in out.output and "Traceback" not in out.output, out.output
        rows = {r.case_id: r for r in _rows(f"sqlite:///{tmp_path / 'store.db'}")}
        assert rows["c1"].status == "errored" and rows["c1"].error == "ZeroDivisionError: division by zero"
        assert all(rows[c].status == "ok" for c in ("c0", "c2", "c3"))


def test_an_unexpected_exception_in_generation_fails_the_run_with_its_cause(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception outside any one answer's handling (here the progress bar's) stops sending; the run ends failed with
    the cause instead of being left running, and what was answered before is kept."""
    from evalsvc.engine.progress import RunBar

    def broken(self, n: int = 1, errored: int = 0) -> None:
        raise RuntimeError("the progress bar broke")

    monkeypatch.setattr(RunBar, "done", broken)
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake, 3)
        out = _cli_run(config)
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        (run,) = _runs(f"sqlite:///{tmp_path / 'store.db'}")
        assert run.status == "failed", "an unexpected exception must not leave the run running"
        assert "stopped by an unexpected error: RuntimeError: the progress bar broke" in run.error


def test_an_unexpected_exception_in_the_judge_phase_fails_the_run_instead_of_leaving_it_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsvc.engine import runner

    def broken(self, runs):
        raise RuntimeError("the judge phase broke")

    monkeypatch.setattr(runner.Grader, "grade", broken)
    write_suite(tmp_path / "suites", "judged", '{"id": "q", "input": "question"}',
                'checks: [{type: judge, judge: judge, rubric: "10 if right, 1 if wrong.", threshold: 6, retries: 0}]\n')
    with FakeEndpoint() as cand, FakeEndpoint() as judge:
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants:
              - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
              - {{name: judge, family: j, endpoint: {{base_url: "{judge.base_url}", model: j}}}}
            """)
        out = _cli_run(config, "-v", "cand")
    assert out.exit_code == 2, out.output
    (run,) = _runs(f"sqlite:///{tmp_path / 'store.db'}")
    assert run.status == "failed", "an unexpected exception must not leave the run running"
    assert "stopped by an unexpected error: RuntimeError: the judge phase broke" in run.error and "re-run" in run.error


# ---------------------------------------------------------------- SIGKILL inside a database write

# Runs the real CLI with one change: the store session stalls inside save_results' transaction, after
# the INSERT of the batch holding case STALL_CASE went to the database and before COMMIT, so the kill
# lands mid-write. The endpoint answers every 0.3 s, longer than the writer's flush interval, so each
# batch holds one case.
STALLING_CLI = """\
import os, sys, time
from sqlalchemy.orm import Session
from evalsvc.store import repo

class StallingSession(Session):
    def execute(self, statement, params=None, **kw):
        result = super().execute(statement, params, **kw)
        rows = params if isinstance(params, list) else []
        if any(isinstance(r, dict) and r.get("case_id") == os.environ["STALL_CASE"] for r in rows):
            open(os.environ["STALL_MARK"], "w").close()
            time.sleep(600)
        return result

repo.Session = StallingSession
from evalsvc.cli import main
main()
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_inside_a_database_write_keeps_the_store_consistent_and_resumes(store_url: str, tmp_path: Path) -> None:
    n = 8
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    with FakeEndpoint(delay_s=0.3) as fake:
        # timeout_s: room for a resumed process's first request (its client warms up while PostgreSQL clears the killed
        # session), so that a retry after a client time-out is not mistaken for a case sent twice
        config = _project(tmp_path, fake, n, store=store_url, extra="concurrency: 1\n", timeout_s=5)
        (tmp_path / "stalling_cli.py").write_text(STALLING_CLI)
        mark = tmp_path / "in-transaction"
        cmd = [sys.executable, str(tmp_path / "stalling_cli.py"), "run", "-c", str(config), "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(STALL_CASE="c4", STALL_MARK=str(mark)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_for(mark.exists, what="the write of c4 to begin")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        rows = _rows(store_url)
        assert [r.case_id for r in rows] == ["c0", "c1", "c2", "c3"], "c4's uncommitted INSERT must vanish"
        (run,) = _runs(store_url)
        assert run.status == "running"  # what a killed process leaves; the next invocation resumes it
        if store_url.startswith("sqlite"):
            with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        sent = len(fake.requests)
        done = subprocess.run([sys.executable, "-m", "evalsvc.cli", *cmd[2:]], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(_case(b) for b in fake.requests[sent:]) == [f"c{i}" for i in range(4, n)]
        rows = _rows(store_url)
        _assert_one_row_per_case(rows, n)
        assert all(r.status == "ok" for r in rows)
        (resumed,) = _runs(store_url)
        assert (resumed.id, resumed.status, resumed.attempts) == (run.id, "succeeded", 2)


# ---------------------------------------------------------------- two runs at once on one store


def _answer_two_then_wait_for(event: threading.Event) -> Callable[[int, dict[str, Any]], None]:
    """A behaviour: the first two requests are answered at once, later ones when ``event`` is set."""
    def behaviour(number: int, body: dict[str, Any]) -> None:
        if number > 2:
            event.wait(60)

    return behaviour


def _start(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "run", "-c", str(config), "--no-progress", *args],
                            cwd=config.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("slot", ["2026-11-21T06:00Z", None], ids=["same-slot", "no-slot"])
def test_a_second_process_on_a_running_run_key_leaves_it_to_the_first(store_url: str, slot: str | None,
                                                                       tmp_path: Path) -> None:
    n = 12
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    held = threading.Event()  # the first run's requests after its first two wait until the second process is done
    with FakeEndpoint() as fake:
        fake.behaviour = _answer_two_then_wait_for(held)
        config = _project(tmp_path, fake, n, store=store_url, timeout_s=90)
        args = ["--slot", slot] if slot else []
        first = _start(config, *args)
        try:
            _wait_for(lambda: _count(store_url) >= 2, what="the first run to store results")
            second = _start(config, *args)
            out2, _ = second.communicate(timeout=60)
        finally:
            held.set()
        out1, _ = first.communicate(timeout=60)
        assert first.returncode == 0, out1
        assert second.returncode == 2, out2
        assert "another evalsvc process" in out2 and "Traceback" not in out2
        assert Counter(_case(b) for b in fake.requests) == {f"c{i}": 1 for i in range(n)}, "the run key ran twice"
        _assert_one_row_per_case(_rows(store_url), n)
        (run,) = _runs(store_url)
        assert (run.status, run.attempts) == ("succeeded", 1)


def test_two_processes_started_together_on_one_slot_of_a_fresh_store_execute_it_once(store_url: str,
                                                                                      tmp_path: Path) -> None:
    """Both insert the variant, the suite and the run key at the same moment; one executes, the other stands back."""
    n = 8
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    held = threading.Event()
    with FakeEndpoint() as fake:
        fake.behaviour = _answer_two_then_wait_for(held)
        config = _project(tmp_path, fake, n, store=store_url, timeout_s=90)
        procs = [_start(config, "--slot", "2026-11-21T06:00Z") for _ in range(2)]
        try:
            _wait_for(lambda: any(p.poll() is not None for p in procs), what="one process to stand back")
        finally:
            held.set()
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert sorted(p.returncode for p in procs) == [0, 2], outs
        assert "another evalsvc process" in outs[[p.returncode for p in procs].index(2)]
        assert not any("Traceback" in o for o in outs), outs
        assert Counter(_case(b) for b in fake.requests) == {f"c{i}": 1 for i in range(n)}, "the run key ran twice"
        _assert_one_row_per_case(_rows(store_url), n)
        (run,) = _runs(store_url)
        assert (run.status, run.attempts) == ("succeeded", 1)


def test_two_processes_on_different_slots_of_a_fresh_store_both_complete(store_url: str, tmp_path: Path) -> None:
    """Started together: the SQLite store is created and migrated by one of them, the response cache is shared."""
    n = 12
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    with FakeEndpoint(delay_s=0.05) as fake:
        config = _project(tmp_path, fake, n, store=store_url, extra="    cache: true\n", timeout_s=10)
        procs = [_start(config, "--slot", slot) for slot in ("2026-11-21T06:00Z", "2026-11-21T07:00Z")]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outs)
        rows = _rows(store_url)
        _assert_one_row_per_case(rows, n, runs=2)
        assert all(r.status == "ok" for r in rows)
        assert [r.status for r in _runs(store_url)] == ["succeeded", "succeeded"]
        assert n <= len(fake.requests) <= 2 * n  # answers one run stored first may serve the other from the cache
        engine = create_engine(store_url)
        with Session(engine) as s:
            assert len(s.scalars(select(CachedResponse)).all()) == n
        engine.dispose()


def test_processes_opening_a_new_sqlite_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    for trial in range(2):
        url = f"sqlite:///{tmp_path / f'store{trial}.db'}"
        code = f"from evalsvc.store.db import open_engine; open_engine({url!r})"
        procs = [subprocess.Popen([sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors  # was: "table ... already exists"
        assert current_revision(create_engine(url)) == head_revision()


# ---------------------------------------------------------------- the store unavailable


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own, so stopping it disturbs no other test."""
    if pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    root = Path(tempfile.mkdtemp(prefix="evalsvc-pg-faults-"))
    server = PostgresServer(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _pg_start_again(server: PostgresServer) -> None:
    opts = f"-p {server.port} -k {server.data} -h 127.0.0.1 -c fsync=off -c shared_preload_libraries=''"
    subprocess.run(_as_postgres([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-o", opts, "-w",
                                 "-l", str(server.data / "log"), "start"]), check=True, capture_output=True)


def _with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


def test_postgresql_down_at_start_is_exit_2_naming_the_store_without_its_password(
        own_postgres: PostgresServer, tmp_path: Path) -> None:
    url = own_postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    own_postgres.stop()
    try:
        with FakeEndpoint() as fake:
            config = _project(tmp_path, fake, 3)
            out = _cli_run(config, env={"EVALSVC_STORE": _with_password(url, "hunter2")})
            assert out.exit_code == 2, out.output
            assert f"cannot reach the store at {_with_password(url, '***')}" in out.output
            assert "hunter2" not in out.output and "Traceback" not in out.output
            assert fake.requests == []
    finally:
        _pg_start_again(own_postgres)


@pytest.mark.parametrize("problem", ["missing-folder", "not-a-database"])
def test_unusable_sqlite_file_at_start_is_exit_2_naming_the_file(problem: str, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "store.db" if problem == "missing-folder" else tmp_path / "store.db"
    if problem == "not-a-database":
        path.write_bytes(b"this is not an SQLite file" * 100)
    with FakeEndpoint() as fake:
        out = _cli_run(_project(tmp_path, fake, 3, store=f"sqlite:///{path}"))
        assert out.exit_code == 2 and f"cannot reach the store at sqlite:///{path}" in out.output, out.output
        assert "Traceback" not in out.output and fake.requests == []


def test_postgresql_stopped_mid_run_is_exit_2_keeps_what_was_stored_and_resumes(
        own_postgres: PostgresServer, tmp_path: Path) -> None:
    n = 16
    url = own_postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    with FakeEndpoint(delay_s=0.1) as fake:
        config = _project(tmp_path, fake, n, store=url, timeout_s=10)  # no retry on a busy machine
        proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "run", "-c", str(config), "--no-progress"],
                                cwd=tmp_path, env=_env(EVALSVC_STORE=_with_password(url, "hunter2")),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(lambda: _count(url) >= 4, what="results before the database stops")
            own_postgres.stop()
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            _pg_start_again(own_postgres)
        assert proc.returncode == 2, out
        assert f"lost the store at {_with_password(url, '***')}" in out and "re-run" in out, out
        assert "hunter2" not in out and "Traceback" not in out
        kept = _rows(url)
        assert 4 <= len(kept) < n and all(r.status == "ok" for r in kept)
        sent_before = len(fake.requests)

        again = _cli_run(config, env={"EVALSVC_STORE": url})
        assert again.exit_code == 0, again.output
        resent = [_case(b) for b in fake.requests[sent_before:]]
        assert sorted(resent) == sorted({f"c{i}" for i in range(n)} - {r.case_id for r in kept})
        _assert_one_row_per_case(_rows(url), n)
        (run,) = _runs(url)
        assert (run.status, run.attempts) == ("succeeded", 2)


def test_postgresql_restarted_between_two_writes_is_transparent(own_postgres: PostgresServer, tmp_path: Path) -> None:
    """Pooled connections die with the server; each is tested before use, so the run reconnects and goes on."""
    n = 8
    url = own_postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    held = threading.Event()
    with FakeEndpoint() as fake:
        fake.behaviour = _answer_two_then_wait_for(held)
        config = _project(tmp_path, fake, n, store=url, timeout_s=90)
        proc = _start(config)
        try:
            _wait_for(lambda: _count(url) >= 2, what="results before the restart")
            own_postgres.stop()
            _pg_start_again(own_postgres)
        finally:
            held.set()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        _assert_one_row_per_case(_rows(url), n)
        assert Counter(_case(b) for b in fake.requests) == {f"c{i}": 1 for i in range(n)}
        (run,) = _runs(url)
        assert (run.status, run.attempts) == ("succeeded", 1)


@pytest.mark.slow
def test_sqlite_locked_mid_run_past_the_busy_timeout_is_exit_2_and_resumes(tmp_path: Path) -> None:
    """Another program holds the SQLite write lock longer than evalsvc's 30 s busy timeout."""
    n = 12
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with FakeEndpoint(delay_s=0.1) as fake:
        config = _project(tmp_path, fake, n, timeout_s=10)
        proc = _start(config)
        _wait_for(lambda: _count(url) >= 3, what="results before the lock")
        blocker = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            out, _ = proc.communicate(timeout=90)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert proc.returncode == 2, out
        assert f"lost the store at {url}" in out and "database is locked" in out and "Traceback" not in out
        kept = _rows(url)
        assert 3 <= len(kept) < n
        sent_before = len(fake.requests)
        again = _cli_run(config)
        assert again.exit_code == 0, again.output
        assert len(fake.requests) - sent_before == n - len(kept)
        _assert_one_row_per_case(_rows(url), n)
        (run,) = _runs(url)
        assert (run.status, run.attempts) == ("succeeded", 2)
