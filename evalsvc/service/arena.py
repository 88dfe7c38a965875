"""Arena battles: every pair of variants judged on a suite's prompts, and the Bradley-Terry leaderboard."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from evalsvc import suites as suites_mod
from evalsvc.checks.judge import DEFAULT_RUBRIC
from evalsvc.config import Config
from evalsvc.engine.battles import Arena
from evalsvc.stats import ratings


def default_anchor(cfg: Config, variants: list[str]) -> str:
    """The first variant's family baseline when it battles, else the first variant."""
    base = cfg.baselines.get(cfg.variant(variants[0]).family)
    return base if base in variants else variants[0]


def battle(cfg: Config, engine: Engine, suite_name: str, variants: list[str], judge: str, *, rubric: str | None = None,
           limit: int | None = None, logs: Path | None = None, progress: bool | None = None) -> list[ratings.Battle]:
    """Judge the missing battles (answers are generated first where a variant has none); return every stored one."""
    suite = suites_mod.resolve(cfg.suites_dir, [suite_name])[0]
    chosen = [cfg.variant(v) for v in variants]
    return Arena(cfg, engine, logs or Path(".evalsvc/logs"), progress=progress).battle(
        suite, chosen, judge, rubric or DEFAULT_RUBRIC, limit)
