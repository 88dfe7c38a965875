"""`evalsvc init` writes the production starter (endpoint baseline, vLLM candidate, explicit margins, nightly schedule,
Slack alerts, PostgreSQL store from the environment); `evalsvc init --demo` the local SmolLM2 one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from evalsvc.config import GateConfig, load_config
from evalsvc.errors import ConfigError
from tests.conftest import ROOT


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGUSER", "PGPORT", "PGDATABASE", "EVALSVC_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGHOST", "db.internal")


def _init(tmp_path: Path, *args: str) -> Path:
    target = tmp_path / "evalsvc.yaml"
    out = CliRunner().invoke(main, ["init", "--path", str(target), *args])
    assert out.exit_code == 0, out.output
    return target


def test_init_writes_a_production_starter_that_loads_once_its_variables_are_set(tmp_path: Path, pg_env: None) -> None:
    cfg = load_config(_init(tmp_path))
    base, cand = cfg.variant(cfg.baselines["my-model"]), cfg.variant("candidate-fp8")
    assert base.endpoint is not None and base.endpoint.api_key_env == "BASELINE_API_KEY"
    assert cand.family == base.family and cand.local is not None and cand.local.engine == "vllm"
    assert cand.local.tensor_parallel_size >= 1 and cand.quantization == "FP8"
    assert "default" in cfg.gate.margins and cfg.gate.margins != GateConfig().margins  # chosen, not the default
    assert [(s.name, s.cron) for s in cfg.schedules] == [("nightly", "0 2 * * *")]
    assert cfg.store == "postgresql+psycopg://evalsvc@db.internal:5432/evalsvc"


def test_the_starters_secrets_come_from_the_environment(tmp_path: Path, pg_env: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = _init(tmp_path)
    monkeypatch.setenv("EVALSVC_SLACK_WEBHOOK", "https://hooks.slack.example/T0/B0/x")
    monkeypatch.setenv("PGUSER", "evaluator")
    cfg = load_config(target)
    assert cfg.alerts is not None and cfg.alerts.slack is not None
    assert cfg.alerts.slack.url() == "https://hooks.slack.example/T0/B0/x"
    assert cfg.store.startswith("postgresql+psycopg://evaluator@db.internal:")
    assert "hooks.slack" not in target.read_text()


def test_the_starter_without_its_store_host_names_the_variable_and_the_line(tmp_path: Path, pg_env: None,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    target = _init(tmp_path)
    monkeypatch.delenv("PGHOST")
    line = next(i for i, text in enumerate(target.read_text().splitlines(), 1) if text.startswith("store:"))
    with pytest.raises(ConfigError, match=rf"evalsvc.yaml:{line}: .*\$\{{PGHOST\}} is not set"):
        load_config(target)


def test_evalsvc_variants_reads_the_starter(tmp_path: Path, pg_env: None) -> None:
    out = CliRunner().invoke(main, ["variants", "-c", str(_init(tmp_path))])
    assert out.exit_code == 0, out.output
    assert "prod " in out.output and "candidate-fp8" in out.output


def test_init_demo_writes_the_local_smollm2_variants(tmp_path: Path) -> None:
    cfg = load_config(_init(tmp_path, "--demo"))
    assert cfg.baselines == {"smollm2-135m": "smollm2-f16"}
    assert [v.quantization for v in cfg.variants] == ["F16", "Q8_0", "Q4_0", "Q2_K"]


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    target = _init(tmp_path, "--demo")
    assert CliRunner().invoke(main, ["init", "--path", str(target)]).exit_code != 0
    assert "smollm2" in target.read_text()
    assert CliRunner().invoke(main, ["init", "--path", str(target), "--force"]).exit_code == 0
    assert "candidate-fp8" in target.read_text()


def test_the_demo_script_and_the_models_group_say_they_are_the_demo() -> None:
    assert "evalsvc init --demo" in (ROOT / "scripts" / "run-local.sh").read_text()
    assert "evalsvc init --demo" in CliRunner().invoke(main, ["models", "--help"]).output.replace("\n  ", " ")


def test_evalsvc_store_replaces_the_starters_store_so_pghost_is_not_needed(tmp_path: Path, pg_env: None,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = _init(tmp_path)
    monkeypatch.delenv("PGHOST")
    monkeypatch.setenv("EVALSVC_STORE", f"sqlite:///{tmp_path / 'x.db'}")
    assert load_config(target).store_url() == f"sqlite:///{tmp_path / 'x.db'}"
    out = CliRunner().invoke(main, ["variants", "-c", str(target)])
    assert out.exit_code == 0 and "candidate-fp8" in out.output, out.output


def test_init_quickstart_writes_two_endpoints_a_sample_suite_and_the_next_commands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BASELINE_URL", "CANDIDATE_URL", "EVALSVC_STORE"):
        monkeypatch.delenv(var, raising=False)
    out = CliRunner().invoke(main, ["init", "--quickstart", "-c", str(tmp_path / "evalsvc.yaml")])
    assert out.exit_code == 0, out.output
    assert all(cmd in out.output for cmd in ("evalsvc variants", "evalsvc gate --candidate candidate", "evalsvc dashboard"))
    assert "scripts/" not in out.output
    with pytest.raises(ConfigError, match=r"\$\{BASELINE_URL\} is not set"):
        load_config(tmp_path / "evalsvc.yaml")
    monkeypatch.setenv("BASELINE_URL", "http://base:8000/v1")
    monkeypatch.setenv("BASELINE_MODEL", "org/model")
    monkeypatch.setenv("CANDIDATE_URL", "http://cand:8000/v1")
    monkeypatch.setenv("CANDIDATE_MODEL", "org/model-fp8")
    cfg = load_config(tmp_path / "evalsvc.yaml")
    assert cfg.store_url() == f"sqlite:///{tmp_path / 'evalsvc.db'}"
    assert cfg.baselines == {"my-model": "baseline"}
    assert [(v.name, v.endpoint.base_url) for v in cfg.variants if v.endpoint] == [
        ("baseline", "http://base:8000/v1"), ("candidate", "http://cand:8000/v1")]
    monkeypatch.chdir(tmp_path)
    valid = CliRunner().invoke(main, ["suites", "validate"])
    assert valid.exit_code == 0, valid.output
    assert "suite 'sample'" in valid.output and "60 cases" in valid.output
    pooled = next(line for line in valid.output.splitlines() if line.strip().startswith("pooled"))
    assert pooled.split()[1:5] == ["60", "25", "56", "enough"], valid.output
    again = CliRunner().invoke(main, ["init", "--quickstart", "-c", str(tmp_path / "other.yaml")])
    assert again.exit_code == 2 and "sample.yaml" in again.output and "--force" in again.output


def test_the_starters_margin_comments_carry_the_cases_the_gate_needs(tmp_path: Path) -> None:
    from evalsvc.config.starter import PRODUCTION, QUICKSTART, SAMPLE_CASES
    from evalsvc.stats.power import n_for_noninferiority

    def needs(margin: float) -> tuple[int | None, int | None]:
        return (n_for_noninferiority(margin, 0.05, discordance=0.0), n_for_noninferiority(margin, 0.05, discordance=0.05))

    assert needs(0.02) == (133, 837) and needs(0.05) == (52, 167) and needs(0.10) == (25, 56)
    assert ">= 133 to pass even when nothing changed, and 837" in " ".join(PRODUCTION.replace("#", "").split())
    assert "(0.05: 52 and 167)" in PRODUCTION
    quick = " ".join(QUICKSTART.replace("#", "").split())
    assert ">= 25 cases to pass when nothing changed and 56 where 5% of cases flip" in quick
    assert "At 0.05: 52 and 167; at 0.02: 133 and 837" in quick
    assert SAMPLE_CASES >= needs(0.10)[1]  # the sample suite can pass at the quickstart's margin


def test_init_demo_names_commands_a_pip_user_has(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["init", "--demo", "--path", str(tmp_path / "evalsvc.yaml")])
    assert out.exit_code == 0 and "evalsvc models build" in out.output and "scripts/" not in out.output
