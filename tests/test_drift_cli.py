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


def _nights(tmp_path: Path, rates: list[float], n: int = 100) -> str:
    """One scheduled-style run a night against an endpoint that answers the first rate x n of the n cases right."""
    state = {"rate": rates[0]}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return f"answer {i}" if i < state["rate"] * n else "no idea"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=reply) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """)
        cfg = str(tmp_path / "evalsvc.yaml")
        for night, rate in enumerate(rates):
            state["rate"] = rate
            assert CliRunner().invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{night + 1:02d}T00:00Z"]).exit_code == 0
    return cfg


def test_an_improvement_does_not_hide_a_later_collapse(tmp_path: Path) -> None:
    """8 nightly runs at 0.70, 4 at 0.85, 8 at 0.40: the rise alarms up, the detector restarts there, and the
    collapse after it alarms down: exit 1, naming the drop (the first alarm used to freeze the series: exit 0)."""
    out = CliRunner().invoke(main, ["drift", "-c", _nights(tmp_path, [0.70] * 8 + [0.85] * 4 + [0.40] * 8)])
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+20\s+0\.400\s+.*ALARM down since 2026-11-1[3-9]", out.output), out.output
    assert "up 2026-11-09" in out.output or "up 2026-11-10" in out.output  # the rise is reported too, as history


def test_an_acknowledged_drop_stops_failing_and_a_pinned_reference_starts_the_series_again(tmp_path: Path) -> None:
    cfg = _nights(tmp_path, [0.9] * 6 + [0.6] * 4)
    runner = CliRunner()
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


def test_a_small_drop_on_a_deterministic_endpoint_is_read_with_the_cases_own_spread(tmp_path: Path) -> None:
    """Temperature-0 answers that never move: a pass rate over these fixed cases varies far less than a fresh binomial
    draw would, so 8 nights at 0.70 then 4 at 0.62 alarm down; read with the binomial bound, as before, they did not."""
    out = CliRunner().invoke(main, ["drift", "-c", _nights(tmp_path, [0.70] * 8 + [0.62] * 4)])
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+12\s+0\.620\s+.*ALARM down since 2026-11-(09|1[0-2])", out.output), out.output
