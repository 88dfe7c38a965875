"""`evalsvc runs`, `cases` and `export`: stored results read back on the command line, checked against the store."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.schema import CaseResult, MetricPoint, Run
from tests.conftest import echo_cases, write_config, write_suite
from tests.fake_endpoint import FakeEndpoint

BROKEN = {1, 4}  # the cases the "worse" variant answers wrong


def _reply(body: dict[str, Any]) -> str:
    i = int(body["messages"][-1]["content"].split()[-1])
    return "no idea" if body["model"] == "worse" and i in BROKEN else f"echo: say {i}"


@pytest.fixture
def project(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two variants on the fake endpoint, each run twice on a 6-case suite (the second variant fails c1 and c4)."""
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    monkeypatch.setenv("EVALSVC_STORE", store_url)
    write_suite(tmp_path / "suites", "echo", echo_cases(6))
    with FakeEndpoint(reply=_reply) as fake:
        cfg = write_config(tmp_path, f"""\
            store: sqlite:///ignored.db
            concurrency: 2
            max_retries: 1
            variants:
              - {{name: good, family: f, endpoint: {{base_url: "{fake.base_url}", model: good}}}}
              - {{name: worse, family: f, endpoint: {{base_url: "{fake.base_url}", model: worse}}}}
            """)
        for slot in ("2026-11-01T00:00Z", "2026-11-02T00:00Z"):
            out = CliRunner().invoke(main, ["run", "-c", str(cfg), "--slot", slot, "--no-progress", "--no-compare"])
            assert out.exit_code == 0, out.output
    engine = open_engine(store_url)
    yield str(cfg), engine
    engine.dispose()


def _cli(cfg: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "-c", cfg])


def _json(cfg: str, *args: str) -> Any:
    out = _cli(cfg, *args, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def _runs(engine: Any) -> dict[int, Any]:
    with Session(engine) as s:
        return {r.id: r for r in s.execute(select(Run)).scalars()}


def _utc(value: Any) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_runs_list_and_show_match_the_store(project: Any) -> None:
    cfg, engine = project
    runs = _runs(engine)
    listed = _json(cfg, "runs", "list")
    assert [r["id"] for r in listed] == sorted(runs, reverse=True)
    for row in listed:
        run = runs[row["id"]]
        assert (row["suite_name"], row["variant_name"], row["status"], row["n_ok"], row["n_cases"]) == (
            run.suite_name, run.variant_name, run.status, run.n_ok, run.n_cases)
        assert datetime.fromisoformat(row["created_at"]) == _utc(run.created_at)
    worse = _json(cfg, "runs", "list", "--variant", "worse", "--status", "succeeded", "--limit", "1")
    assert [r["id"] for r in worse] == [max(i for i, r in runs.items() if r.variant_name == "worse")]
    table = _cli(cfg, "runs", "list", "--suite", "echo")
    assert table.exit_code == 0 and all(f"{i} " in table.output for i in runs)

    run_id = worse[0]["id"]
    shown = _json(cfg, "runs", "show", str(run_id))
    run = runs[run_id]
    assert (shown["suite_version"], shown["variant_fingerprint"], shown["slot"], shown["evalsvc_version"]) == (
        run.suite_version, run.variant_fingerprint, run.slot, run.evalsvc_version)
    with Session(engine) as s:
        points = {p.metric: p for p in s.execute(select(MetricPoint).where(MetricPoint.run_id == run_id)).scalars()}
    assert {p["metric"]: (p["value"], p["n"], p["ci_low"], p["ci_high"]) for p in shown["points"]} == {
        m: (p.value, p.n, p.ci_low, p.ci_high) for m, p in points.items()}
    assert math.isclose(points["pass"].value, 4 / 6)
    text = _cli(cfg, "runs", "show", str(run_id))
    assert text.exit_code == 0 and run.variant_fingerprint in text.output and "pass" in text.output


def test_cases_shows_each_result_and_vs_flipped_lists_only_the_flips(project: Any) -> None:
    cfg, engine = project
    runs = _runs(engine)
    good = max(i for i, r in runs.items() if r.variant_name == "good")
    worse = max(i for i, r in runs.items() if r.variant_name == "worse")
    with Session(engine) as s:
        stored = {r.case_id: r for r in s.execute(select(CaseResult).where(CaseResult.run_id == worse)).scalars()}
    shown = _json(cfg, "cases", "--run", str(worse))
    assert [r["case_id"] for r in shown] == sorted(stored)
    for row in shown:
        want = stored[row["case_id"]]
        assert (row["status"], row["output"], row["scores"]) == (want.status, want.output, want.scores)
        assert (row["input"], row["expected"]) == (f"say {row['case_id'][1:]}", f"contains: {row['case_id'][1:]}")

    both = _json(cfg, "cases", "--run", str(good), "--vs", str(worse))
    assert [r["case_id"] for r in both] == [f"c{i}" for i in range(6)]
    assert {r["case_id"] for r in both if r["flip"]} == {f"c{i}" for i in BROKEN}
    flipped = _json(cfg, "cases", "--run", str(good), "--vs", str(worse), "--flipped")
    assert [(r["case_id"], r["flip"], r["pass_a"], r["pass_b"], r["output_b"]) for r in flipped] == [
        (f"c{i}", "down", 1.0, 0.0, "no idea") for i in sorted(BROKEN)]
    none = _json(cfg, "cases", "--run", str(good), "--vs", str(min(i for i, r in runs.items() if r.variant_name == "good")),
                 "--flipped")
    assert none == []
    assert [r["expected"] for r in flipped] == [f"contains: {i}" for i in sorted(BROKEN)]
    table = _cli(cfg, "cases", "--run", str(good), "--vs", str(worse), "--flipped")
    assert table.exit_code == 0 and "c1" in table.output and "c0" not in table.output
    assert "contains: 1" in table.output
    one = _cli(cfg, "cases", "--run", str(worse))
    assert "say 4" in one.output and "contains: 4" in one.output


def test_export_to_standard_output(project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = project
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["export", "-c", cfg, "--format", "jsonl", "-v", "good", "--out", "-"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 2 * 6 and {r["variant_name"] for r in rows} == {"good"}
    assert "wrote 12 case results to -" in done.stderr and not (tmp_path / "-").exists()
    parquet = CliRunner().invoke(main, ["export", "-c", cfg, "--format", "parquet", "--out", "-"])
    assert parquet.exit_code == 2 and "give a file name" in parquet.output


def _norm(value: Any) -> Any:
    """A value read back by pandas as the plain Python value it stands for (NaN is a missing value)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_round_trips_the_stored_case_results_through_pandas(project: Any, tmp_path: Path, fmt: str) -> None:
    pd = pytest.importorskip("pandas")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    cfg, engine = project
    out = tmp_path / f"cases.{fmt}"
    done = _cli(cfg, "export", "--format", fmt, "--suite", "echo", "--since", "2000-01-01", "--out", str(out))
    assert done.exit_code == 0, done.output
    if fmt == "jsonl":
        frame = pd.read_json(out, lines=True, dtype=False, convert_dates=False, precise_float=True)
    elif fmt == "csv":
        frame = pd.read_csv(out, float_precision="round_trip",
                            dtype={"suite_version": str, "variant_fingerprint": str, "case_id": str, "output": str})
    else:
        frame = pd.read_parquet(out)
    runs = _runs(engine)
    with Session(engine) as s:
        stored = list(s.execute(select(CaseResult).order_by(CaseResult.run_id, CaseResult.case_id,
                                                            CaseResult.sample_index)).scalars())
    assert len(frame) == len(stored) == 4 * 6
    own = ["run_id", "run_ts", "case_id", "sample_index", "input", "expected", "status", "output", "error", "latency_ms",
           "prompt_tokens", "completion_tokens", "finish_reason", "scores", "judge", "cached", "created_at"]
    ident = ["suite_name", "suite_version", "variant_name", "variant_fingerprint"]
    assert list(frame.columns) == [*own[:2], *ident, *own[2:]]
    for column in frame.columns:
        got = [_norm(v) for v in frame[column]]
        if column in ident:
            want = [getattr(runs[r.run_id], column) for r in stored]
        elif column in ("input", "expected"):  # what the case asked, from the suite (echo_cases: "say i", contains i)
            want = [f"say {r.case_id[1:]}" if column == "input" else f"contains: {r.case_id[1:]}" for r in stored]
        else:
            want = [getattr(r, column) for r in stored]
        if column in ("scores", "judge"):
            got = [v if fmt == "jsonl" or v is None else json.loads(v) for v in got]
        elif column in ("run_ts", "created_at"):
            got = [_utc(pd.Timestamp(v).to_pydatetime()) for v in frame[column]]
            want = [_utc(v) for v in want]
        assert got == want, column


def test_export_filters_by_run_and_writes_metric_points(project: Any, tmp_path: Path) -> None:
    cfg, engine = project
    runs = _runs(engine)
    run_id = max(runs)
    out = tmp_path / "points.jsonl"
    assert _cli(cfg, "export", "--format", "jsonl", "--what", "points", "--run", str(run_id), "--out", str(out)).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with Session(engine) as s:
        stored = {p.metric: p.value for p in s.execute(select(MetricPoint).where(MetricPoint.run_id == run_id)).scalars()}
    assert {r["metric"]: r["value"] for r in rows} == stored and {r["run_id"] for r in rows} == {run_id}
    later = tmp_path / "later.jsonl"
    assert _cli(cfg, "export", "--format", "jsonl", "--since", "2999-01-01", "--out", str(later)).exit_code == 0
    assert later.read_text() == ""
    mine = tmp_path / "worse.csv"
    assert _cli(cfg, "export", "--format", "csv", "-v", "worse", "--out", str(mine)).exit_code == 0
    assert len(mine.read_text().splitlines()) == 1 + 2 * 6


@pytest.mark.parametrize(("args", "says"), [
    (["runs", "show", "999"], "evalsvc runs list"),
    (["cases", "--run", "999"], "evalsvc runs list"),
    (["cases", "--run", "1", "--vs", "999"], "evalsvc runs list"),
    (["export", "--format", "xml", "--out", "x"], "'jsonl', 'csv', 'parquet'"),
    (["export", "--format", "csv", "--run", "999", "--out", "x"], "evalsvc runs list"),
    (["export", "--format", "csv", "--since", "yesterday", "--out", "x"], "ISO 8601"),
    (["cases", "--run", "1", "--flipped"], "--vs"),
])
def test_bad_input_exits_2_naming_the_fix(echo_project: Path, store_url: str, monkeypatch: pytest.MonkeyPatch,
                                          args: list[str], says: str) -> None:
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    monkeypatch.setenv("EVALSVC_STORE", store_url)
    monkeypatch.chdir(echo_project)
    out = _cli(str(echo_project / "evalsvc.yaml"), *args)
    assert out.exit_code == 2, out.output
    assert says in out.output and "Traceback" not in out.output


def test_parquet_without_pyarrow_says_which_extra_to_install(echo_project: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    out = _cli(str(echo_project / "evalsvc.yaml"), "export", "--format", "parquet", "--out", str(tmp_path / "x.parquet"))
    assert out.exit_code == 2 and "evalsvc[export]" in out.output and not (tmp_path / "x.parquet").exists()


def test_cases_are_listed_in_natural_order(tmp_path: Path, fake: FakeEndpoint) -> None:
    write_suite(tmp_path / "suites", "echo", echo_cases(12))
    cfg = write_config(tmp_path, f"""\
        store: sqlite:///store.db
        variants:
          - {{name: fake, family: f, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
        """)
    assert CliRunner().invoke(main, ["run", "-c", str(cfg), "--no-progress"]).exit_code == 0
    shown = _json(str(cfg), "cases", "--run", "1")
    assert [r["case_id"] for r in shown] == [f"c{i}" for i in range(12)]  # c2 before c10, not c10 after c1
    both = _json(str(cfg), "cases", "--run", "1", "--vs", "1")
    assert [r["case_id"] for r in both] == [f"c{i}" for i in range(12)]


def test_wide_prints_errors_and_outputs_whole(echo_project: Path, fake: FakeEndpoint) -> None:
    cfg = str(echo_project / "evalsvc.yaml")
    reason = "invalid api key: " + "x" * 120 + " END"
    fake.behaviour = lambda n, body: (401, {}, json.dumps({"error": reason}).encode())
    assert CliRunner().invoke(main, ["run", "-c", cfg, "--no-progress"]).exit_code == 2
    for argv in (["runs", "list"], ["cases", "--run", "1"]):
        cut, whole = _cli(cfg, *argv), _cli(cfg, *argv, "--wide")
        assert cut.exit_code == whole.exit_code == 0, whole.output
        assert "END" not in cut.output and "END" in whole.output, (argv, whole.output)
