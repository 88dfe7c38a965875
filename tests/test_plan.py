"""The cases a gate needs, before the first gate: `evalsvc suites validate -c` and `evalsvc gate --plan`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from evalsvc.stats.power import n_for_noninferiority
from tests.conftest import echo_cases, write_config, write_suite
from tests.fake_endpoint import FakeEndpoint, answer_from_prompt


def _rows(output: str) -> dict[str, list[str]]:
    """The plan table's rows by name: [cases, no change, 5% flip, status...]."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0]] = parts[1:]
    return out


@pytest.fixture
def two_suites(tmp_path: Path, fake: FakeEndpoint) -> Path:
    """A 150-case and a 40-case suite (the second critical), margin 0.02, suites_dir outside the current folder."""
    write_suite(tmp_path / "cases", "echo", echo_cases(150))
    write_suite(tmp_path / "cases", "numbers", echo_cases(40))
    return write_config(tmp_path, f"""\
        store: sqlite:///store.db
        suites_dir: cases
        baselines: {{fake: base}}
        variants:
          - {{name: base, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
          - {{name: cand, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}
        gate:
          margins: {{default: {{absolute: 0.02}}}}
          suites: {{numbers: {{critical: true}}}}
        """)


def test_suites_validate_with_c_reads_the_configs_suites_and_prints_the_cases_needed(
        two_suites: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = CliRunner().invoke(main, ["suites", "validate", "-c", str(two_suites)])
    assert out.exit_code == 0, out.output
    n0, n5 = n_for_noninferiority(0.02, 0.05, discordance=0.0), n_for_noninferiority(0.02, 0.05, discordance=0.05)
    assert (n0, n5) == (133, 837)
    rows = _rows(out.output)
    assert rows["echo"][:3] == ["150", "133", "837"] and "(in the pool)" in " ".join(rows["echo"])
    assert rows["numbers"][:3] == ["40", "133", "837"] and "cannot pass even with no change" in " ".join(rows["numbers"])
    assert rows["pooled"][:3] == ["190", "133", "837"] and "too few where 5% of cases flip" in " ".join(rows["pooled"])


def test_gate_plan_prints_the_plan_and_measures_nothing(two_suites: Path, fake: FakeEndpoint) -> None:
    out = CliRunner().invoke(main, ["gate", "-c", str(two_suites), "--candidate", "cand", "--plan"])
    assert out.exit_code == 0, out.output
    assert _rows(out.output)["pooled"][:3] == ["190", "133", "837"]
    assert "margin 0.02 (absolute 0.02)" in out.output
    assert not fake.requests


def test_a_relative_margin_uses_the_baselines_stored_mean(two_suites: Path, fake: FakeEndpoint) -> None:
    two_suites.write_text(two_suites.read_text().replace("{absolute: 0.02}", "{relative: 0.95}"))
    before = CliRunner().invoke(main, ["gate", "-c", str(two_suites), "--candidate", "cand", "--plan"])
    assert before.exit_code == 0 and "no stored baseline run: assumed 1.0" in before.output, before.output
    assert _rows(before.output)["pooled"][1] == str(n_for_noninferiority(0.05, 0.05, discordance=0.0))
    fake.reply = lambda body: "no idea" if body["messages"][-1]["content"].endswith("7") else answer_from_prompt(body)
    assert CliRunner().invoke(main, ["run", "-c", str(two_suites), "-v", "base", "--no-progress"]).exit_code == 0
    after = CliRunner().invoke(main, ["gate", "-c", str(two_suites), "--candidate", "cand", "--plan"])
    mean = (150 - 15 + 40 - 4) / 190  # ids ending in 7 fail
    assert f"baseline mean {mean:.3f} (the latest baseline run)" in after.output, after.output
    assert _rows(after.output)["pooled"][1] == str(n_for_noninferiority(0.05 * mean, 0.05, discordance=0.0))


def test_under_every_suite_each_suite_needs_the_cases_on_its_own(two_suites: Path) -> None:
    two_suites.write_text(two_suites.read_text().replace("gate:\n", "gate:\n  decide: every_suite\n"))
    out = CliRunner().invoke(main, ["gate", "-c", str(two_suites), "--candidate", "cand", "--plan"])
    assert out.exit_code == 0, out.output
    rows = _rows(out.output)
    assert "every suite must pass on its own" in out.output
    assert "(in the pool)" not in " ".join(rows["echo"]) and "too few where 5%" in " ".join(rows["echo"])
    assert "(a summary)" in " ".join(rows["pooled"])


def test_plan_for_an_imported_variant_measures_nothing_and_says_why(two_suites: Path, fake: FakeEndpoint) -> None:
    assert CliRunner().invoke(main, ["run", "-c", str(two_suites), "-v", "base", "--no-progress"]).exit_code == 0
    from sqlalchemy import update

    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Run

    engine = open_engine(f"sqlite:///{two_suites.parent / 'store.db'}")
    with engine.begin() as conn:  # the same runs stored again under a name the config does not know: "imported"
        conn.execute(update(Run).values(variant_name="imported"))
    engine.dispose()
    sent = len(fake.requests)
    out = CliRunner().invoke(main, ["gate", "-c", str(two_suites), "--candidate", "imported", "--baseline", "base", "--plan"])
    assert out.exit_code == 2 and "--plan" in out.output and "imported" in out.output, out.output
    assert len(fake.requests) == sent
