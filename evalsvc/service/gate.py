"""The pre-deploy gate: run what is missing, compare case by case, store the verdict, write the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from evalsvc.config import Config
from evalsvc.engine.runner import Outcome, Runner
from evalsvc.errors import ConfigError
from evalsvc.suites import Suite
from evalsvc.verdicts import Report, compare, record, without_runs
from evalsvc.verdicts.gate_report import exit_code, write_outputs


@dataclass
class GateResult:
    exit_code: int
    report: Report | None = None
    markdown: str = ""
    failed: list[Outcome] = field(default_factory=list)  # runs that could not be made: nothing was compared


def baseline_of(cfg: Config, candidate: str, baseline: str | None) -> str:
    """The baseline named, else the candidate family's configured one."""
    if baseline is not None:
        return baseline
    family = cfg.variant(candidate).family
    found = cfg.baselines.get(family)
    if found is None:
        raise ConfigError("--baseline", f"none given and evalsvc.yaml has no baselines.{family}",
                          f"pass --baseline NAME or add 'baselines: {{{family}: NAME}}' to evalsvc.yaml")
    return found


def run_gate(cfg: Config, engine: Engine, suites: list[Suite], candidate: str, baseline: str, *, run_missing: bool = True,
             fail_on_inconclusive: bool | None = None, markdown_path: Path | None = None, junit_path: Path | None = None,
             progress: bool | None = None, logs: Path | None = None) -> GateResult:
    """Is the candidate non-inferior to the baseline on these suites? Exit code 0/1/2/3 as the CLI documents."""
    if run_missing:
        runner = Runner(cfg, engine, progress=progress, log_dir=logs)
        for name in dict.fromkeys([baseline, candidate]):
            todo = without_runs(engine, suites, cfg.fingerprint(name))
            failed = [o for o in runner.run_variant(todo, cfg.variant(name)) if o.status != "succeeded"] if todo else []
            if failed:
                return GateResult(2, failed=failed)
    report = compare(engine, cfg, suites, baseline, candidate)
    record(engine, report)
    fail_inc = cfg.gate.fail_on_inconclusive if fail_on_inconclusive is None else fail_on_inconclusive
    md = write_outputs(report, markdown_path, junit_path, fail_inc, cfg.gate.top_flips)
    return GateResult(exit_code(report, fail_inc), report, md)
