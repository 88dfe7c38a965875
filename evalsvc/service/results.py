"""Stored results as plain records for the command line: runs, their cases, two runs side by side, exports.

Everything here only reads. Two runs are paired the way the gate and the dashboard's Compare page pair them
(``verdicts.compare.per_case`` reduces each case's samples, ``verdicts.compare.flip`` says whether its pass moved),
so `evalsvc cases --vs --flipped` lists exactly the flips a comparison of those two runs reports.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.errors import UserInputError
from evalsvc.store import queries
from evalsvc.store.schema import SuiteCase
from evalsvc.verdicts.compare import flip, per_case

FORMATS = ("jsonl", "csv", "parquet")
JSON_COLUMNS = ("scores", "judge")  # JSON in the store: nested in JSONL, JSON text in CSV and Parquet
_IDENT = [("run_id", "int"), ("run_ts", "time"), ("suite_name", "str"), ("suite_version", "str"), ("variant_name", "str"),
          ("variant_fingerprint", "str")]
COLUMNS = {  # queries.export_rows' columns in order, with Parquet types
    "cases": [*_IDENT, ("case_id", "str"), ("sample_index", "int"), ("input", "str"), ("expected", "str"), ("status", "str"),
              ("output", "str"), ("error", "str"),
              ("latency_ms", "float"), ("prompt_tokens", "int"), ("completion_tokens", "int"), ("finish_reason", "str"),
              ("scores", "str"), ("judge", "str"), ("cached", "bool"), ("created_at", "time")],
    "points": [*_IDENT, ("metric", "str"), ("kind", "str"), ("higher_is_better", "bool"), ("value", "float"), ("n", "int"),
               ("ci_low", "float"), ("ci_high", "float")],
}


def _plain(value: Any) -> Any:
    """A stored value as JSON can hold it: times as ISO 8601 in UTC (SQLite hands back naive UTC)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return value


def _record(row: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row._mapping.items()}


def natural(case_id: str) -> list[Any]:
    """Sort key that puts c2 before c10: the digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", case_id)]


def asked(spec: dict[str, Any] | None) -> dict[str, Any]:
    """What a case asked and what it expected, from its stored spec: the input (chat messages as JSON text) and the
    expected values (references, each check's value, values or pattern), one text each."""
    if not spec:
        return {"input": None, "expected": None}
    given = spec.get("input")
    expected = [f"reference: {r}" for r in spec.get("references") or []]
    for c in spec.get("checks") or []:
        for key in ("value", "any_of", "pattern", "reference"):
            if c.get(key) is not None:
                expected.append(f"{c.get('type')}: {c[key]}" if key != "any_of" else f"{c.get('type')}: any of {c[key]}")
    return {"input": given if isinstance(given, str) or given is None else json.dumps(given, ensure_ascii=False),
            "expected": "; ".join(expected) or None}


class _Specs:
    """Each suite version's case specs, read once per version as rows stream by."""

    def __init__(self, session: Session) -> None:
        self.session, self.by_version = session, {}

    def __call__(self, version: str, case_id: str) -> dict[str, Any]:
        if version not in self.by_version:
            self.by_version[version] = dict(self.session.execute(
                select(SuiteCase.case_id, SuiteCase.spec).where(SuiteCase.suite_version == version)).tuples().all())
        return asked(self.by_version[version].get(case_id))


def _with_asked(row: dict[str, Any], specs: _Specs, version: str) -> dict[str, Any]:
    """``row`` with input and expected placed after sample_index (the COLUMNS order)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = v
        if k == "sample_index":
            out |= specs(version, row["case_id"])
    return out


def _run(s: Session, run_id: int) -> Any:
    row = queries.run_row(s, run_id)
    if row is None:
        raise UserInputError(f"run {run_id}", "no such run in the store", "`evalsvc runs list` shows the run ids")
    return row


def list_runs(engine: Engine, suite: str | None = None, variant: str | None = None, status: str | None = None,
              limit: int | None = 50) -> list[dict[str, Any]]:
    with Session(engine) as s:
        return [_record(r) for r in queries.run_list(s, suite, variant, status, limit)]


def show_run(engine: Engine, run_id: int) -> dict[str, Any]:
    """A run's key, status, times, counts, error, fingerprint and evalsvc version, and its metric points."""
    with Session(engine) as s:
        out = _record(_run(s, run_id))
        out["points"] = [_record(p) for p in queries.run_points(s, run_id)]
        return out


def run_cases(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """Every case result of a run, one record per sample."""
    with Session(engine) as s:
        version, specs = _run(s, run_id).suite_version, _Specs(s)
        rows = sorted(queries.run_cases(s, run_id), key=lambda r: (natural(r.case_id), r.sample_index))
        return [_with_asked(_record(r), specs, version) for r in rows]


def side_by_side(engine: Engine, run_a: int, run_b: int, samples_pass: str = "mean",
                 flipped_only: bool = False) -> list[dict[str, Any]]:
    """The two runs' cases by case id: each run's case state and (samples-reduced) pass, the flip, sample 0's outputs.

    Cases only in one run show None for the other; a flip needs the case ok in both, as in a comparison.
    """
    with Session(engine) as s:
        a, b = _run(s, run_a), _run(s, run_b)
        if a.suite_version != b.suite_version:
            raise UserInputError(f"runs {run_a} and {run_b}", f"they ran different suite versions ({a.suite_name} "
                                 f"{a.suite_version}, {b.suite_name} {b.suite_version}), so their cases do not pair",
                                 "compare runs of one suite version (`evalsvc runs list -s SUITE` shows them)")
        states = queries.case_states(s, run_a), queries.case_states(s, run_b)
        scored = per_case(s, run_a, samples_pass), per_case(s, run_b, samples_pass)
        ids = sorted(states[0].keys() | states[1].keys(), key=natural)
        ways = {cid: flip(scored[0][cid], scored[1][cid]) for cid in ids if cid in scored[0] and cid in scored[1]}
        if flipped_only:
            ids = [cid for cid in ids if ways.get(cid)]
        outs = queries.outputs(s, run_a, ids), queries.outputs(s, run_b, ids)
        rows, specs = [], _Specs(s)
        for cid in ids:
            row: dict[str, Any] = {"case_id": cid, **specs(a.suite_version, cid)}
            for side, run_id, n in (("a", run_a, 0), ("b", run_b, 1)):
                case = scored[n].get(cid)
                row |= {f"run_{side}": run_id, f"status_{side}": states[n].get(cid),
                        f"pass_{side}": None if case is None else case.scores.get("pass"),
                        f"output_{side}": outs[n].get(cid)}
            row["flip"] = ways.get(cid)
            rows.append(row)
        return rows


def parse_since(text: str | None) -> datetime | None:
    """A date or time (ISO 8601; UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserInputError(f"--since {text}", "not a date", "give an ISO 8601 date or time, e.g. 2026-11-01 or "
                             "2026-11-01T06:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def export(engine: Engine, fmt: str, out: Path, what: str = "cases", suite: str | None = None, variant: str | None = None,
           since: datetime | None = None, run_id: int | None = None) -> int:
    """Write the selected case results (or metric points) to ``out`` (``-``: standard output, for jsonl and csv); the
    number of rows written."""
    if what not in COLUMNS:
        raise UserInputError(f"--what {what}", "unknown kind of rows", "use cases or points")
    if fmt not in FORMATS:
        raise UserInputError(f"--format {fmt}", "unknown export format", f"use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and str(out) == "-":
        raise UserInputError("--out -", "Parquet is binary and is not written to standard output", "give a file name")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserInputError("--format parquet", "needs pyarrow, which is not installed",
                                 "pip install 'evalsvc[export]' (or pip install pyarrow), or use --format jsonl|csv") from None
    with Session(engine) as s:
        if run_id is not None:
            _run(s, run_id)
        specs = _Specs(s)
        rows = (_with_asked(_record(r), specs, r.suite_version) if what == "cases" else _record(r)
                for r in queries.export_rows(s, what, suite, variant, since, run_id))
        if fmt == "jsonl":
            return _jsonl(rows, out)
        return (_csv if fmt == "csv" else _parquet)(rows, out, what)


def _text_out(out: Path) -> Any:
    """The file to write, or standard output for ``-``."""
    return contextlib.nullcontext(sys.stdout) if str(out) == "-" else out.open("w", encoding="utf-8", newline="")


def _jsonl(rows: Iterator[dict[str, Any]], out: Path) -> int:
    n = 0
    with _text_out(out) as f:
        for n, row in enumerate(rows, 1):  # noqa: B007
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return n


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula (OWASP: CSV injection)


def _inert(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (a model's output ``=HYPERLINK(...)``) behind a ``'``, which shows it
    as text; numbers stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def _csv(rows: Iterator[dict[str, Any]], out: Path, what: str) -> int:
    n = 0
    with _text_out(out) as f:
        writer = csv.DictWriter(f, fieldnames=[name for name, _ in COLUMNS[what]])
        writer.writeheader()
        for n, row in enumerate(rows, 1):  # noqa: B007
            writer.writerow({k: _inert(v) for k, v in _flat(row).items()})
    return n


def _parquet(rows: Iterator[dict[str, Any]], out: Path, what: str, batch: int = 5000) -> int:
    """Times as UTC timestamps, scores and judge as JSON text (their keys differ from suite to suite)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "time": pa.timestamp("us", tz="UTC")}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS[what]])
    n, chunk = 0, []
    with pq.ParquetWriter(str(out), schema) as writer:
        for row in rows:
            chunk.append({k: datetime.fromisoformat(v) if k in ("run_ts", "created_at") and v else v
                          for k, v in _flat(row).items()})
            n += 1
            if len(chunk) == batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return n
