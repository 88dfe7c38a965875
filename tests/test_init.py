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
