"""Comparing two variants by name from the store alone (what the dashboard's Compare page shows).

The gate compares the fingerprints the config names; this pairs the latest runs of two variant
names on each suite version both have, with the gate's own statistics. It only reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc.config import GateConfig
from evalsvc.store.latest import latest_pairs
from evalsvc.verdicts.compare import Report, compare_runs


def compare_latest(engine: Engine, gate: GateConfig, baseline: str, candidate: str,
                   suite_names: Sequence[str] = ()) -> Report | None:
    """The report, its ``runs`` naming each suite's pair; None when the two share no suite version.

    Raises NotComparable when they share runs but nothing in them can be paired.
    """
    with Session(engine) as s:
        pairs = latest_pairs(s, baseline, candidate, list(suite_names) or None)
        if not pairs:
            return None
        return compare_runs(s, gate, baseline, candidate, pairs)
