"""`evalsvc drift` on series written by real runs (stand-in endpoint whose quality drops)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint


def test_a_variant_that_gets_worse_alarms_down_and_exits_1(tmp_path: Path) -> None:
    state = {"broken": False}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return "no idea" if state["broken"] and i % 3 == 0 else f"answer {i}"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(90))
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=reply) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """)
        cfg = str(tmp_path / "evalsvc.yaml")
        runner = CliRunner()
        for slot in range(9):
            state["broken"] = slot >= 6
            assert runner.invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{slot + 1:02d}T00:00Z"]).exit_code == 0
            if slot == 5:
                calm = runner.invoke(main, ["drift", "-c", cfg])
        out = runner.invoke(main, ["drift", "-c", cfg])
    assert calm.exit_code == 0 and "in control" in calm.output
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+9\s+0\.667\s+.*ALARM down since 2026-11-0[789]", out.output)


def _rate_endpoint(tmp_path: Path, fake: FakeEndpoint, n: int = 100) -> str:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "s", cases)
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
        """)
    return str(tmp_path / "evalsvc.yaml")


def test_an_improvement_does_not_hide_a_later_collapse(tmp_path: Path) -> None:
    """8 nightly runs at 0.70, 4 at 0.85, 8 at 0.40: the rise alarms up, the detector restarts there, and the
    collapse after it alarms down: exit 1, naming the drop (the first alarm used to freeze the series: exit 0)."""
    state = {"rate": 0.70}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return f"answer {i}" if i < state["rate"] * 100 else "no idea"

    with FakeEndpoint(reply=reply) as fake:
        cfg = _rate_endpoint(tmp_path, fake)
        runner = CliRunner()
        for night in range(20):
            state["rate"] = 0.70 if night < 8 else 0.85 if night < 12 else 0.40
            assert runner.invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{night + 1:02d}T00:00Z"]).exit_code == 0
        out = runner.invoke(main, ["drift", "-c", cfg])
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+20\s+0\.400\s+.*ALARM down since 2026-11-1[3-9]", out.output), out.output
    assert "up 2026-11-09" in out.output or "up 2026-11-10" in out.output  # the rise is reported too, as history


def test_an_acknowledged_drop_stops_failing_and_a_pinned_reference_starts_the_series_again(tmp_path: Path) -> None:
    state = {"rate": 0.9}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return f"answer {i}" if i < state["rate"] * 100 else "no idea"

    with FakeEndpoint(reply=reply) as fake:
        cfg = _rate_endpoint(tmp_path, fake)
        runner = CliRunner()
        for night in range(10):
            state["rate"] = 0.9 if night < 6 else 0.6
            assert runner.invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{night + 1:02d}T00:00Z"]).exit_code == 0
        before = runner.invoke(main, ["drift", "-c", cfg])
        nothing = runner.invoke(main, ["drift", "ack", "v/s/rouge1", "-c", cfg])
        acked = runner.invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--note", "new tokenizer, expected", "--by", "ana"])
        after = runner.invoke(main, ["drift", "-c", cfg])
        pinned = runner.invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--reference", "2026-11-07"])
        fresh = runner.invoke(main, ["drift", "-c", cfg])
    assert before.exit_code == 1 and "ALARM down since 2026-11-07" in before.output
    assert nothing.exit_code != 0 and "no such series" in nothing.output
    assert acked.exit_code == 0 and "acknowledged by ana" in acked.output
    assert after.exit_code == 0 and "acknowledged by ana: new tokenizer, expected" in after.output
    assert pinned.exit_code == 0 and "reference pinned at 2026-11-07" in pinned.output
    assert fresh.exit_code == 0 and "warming up (4/6)" in fresh.output  # the 4 runs since the pin: a new reference
