"""Running suites against variants, then comparing each variant with its family's baseline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc import suites as suites_mod
from evalsvc.config import Config, VariantConfig
from evalsvc.engine.runner import Outcome, Runner
from evalsvc.errors import ConfigError
from evalsvc.store import queries
from evalsvc.store.db import open_engine
from evalsvc.suites import Suite
from evalsvc.verdicts.compare import Report
from evalsvc.verdicts.record import compare_with_baselines


def log_dir(config_path: str | Path) -> Path:
    """Where managed servers' logs go: ``.evalsvc/logs`` beside the config file."""
    return Path(config_path).resolve().parent / ".evalsvc" / "logs"


def open_store(cfg: Config) -> Engine:
    """The configured store (EVALSVC_STORE overrides the file), at the schema this evalsvc needs."""
    return open_engine(cfg.store_url())


def new_manual_slot() -> str:
    """A slot no run has: `evalsvc run --new`."""
    return f"manual:{uuid.uuid4()}"


def choose(cfg: Config, suite_names: list[str] | None, variant_names: list[str] | None) -> tuple[list[Suite], list[VariantConfig]]:
    """The named suites and variants; none named: the config's suites (else every suite) and every variant."""
    suites = suites_mod.resolve(cfg.suites_dir, suite_names or cfg.suites)
    variants = [cfg.variant(v) for v in variant_names] if variant_names else list(cfg.variants)
    return suites, variants


@dataclass
class RunResult:
    outcomes: list[Outcome] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)  # each variant against its family baseline, stored

    @property
    def ok(self) -> bool:
        return all(o.status == "succeeded" for o in self.outcomes)


def run_suites(cfg: Config, engine: Engine, suites: list[Suite], variants: list[VariantConfig], *, slot: str | None = None,
               progress: bool | None = None, logs: Path | None = None, compare: bool = True) -> RunResult:
    """Run every suite on every variant (one managed server start per variant), then store the baseline verdicts."""
    if not variants:
        raise ConfigError("variants", "the config defines no variants", "add one under 'variants:' (see `evalsvc init`)")
    runner = Runner(cfg, engine, progress=progress, log_dir=logs)
    result = RunResult()
    for variant in variants:
        result.outcomes.extend(runner.run_variant(suites, variant, slot=slot))
    if compare:
        result.reports = compare_with_baselines(engine, cfg, suites, variants)
    return result


def latest_results(engine: Engine, suite_names: list[str] | None = None) -> list:
    """The metric points of each variant's latest run on each suite (`evalsvc results`)."""
    with Session(engine) as session:
        return queries.latest_points(session, suite_names)
