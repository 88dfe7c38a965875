"""A seeded store and a config on it, shared by the dashboard tests (AppTest and Chromium)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench.seed_store import BASELINE, FAMILY, Plan, seed
from evalsvc.store.db import open_engine, upgrade

PLAN = Plan(runs=10, cases=60, battles=150)


def seeded_project(folder: Path, url: str) -> Path:
    """Seed ``url`` (an empty store) with PLAN and write an evalsvc.yaml naming its variants; returns the config."""
    if not url.startswith("sqlite"):
        upgrade(url)
    seed(open_engine(url), PLAN)
    variants = "\n".join(f"  - {{name: {v}, family: {FAMILY}, endpoint: {{base_url: 'http://127.0.0.1:9/v1', model: m}}}}"
                         for v in PLAN.rates)
    path = folder / "evalsvc.yaml"
    path.write_text(textwrap.dedent(f"""\
        store: {url}
        baselines: {{{FAMILY}: {BASELINE}}}
        dashboard: {{cache_ttl_s: 0}}
        variants:
        """) + variants + "\n")
    return path
