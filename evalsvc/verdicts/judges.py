"""Which judge graded what, in a comparison: judge identities per case, the canary rates of both runs, the judges
with an open judge alert. A case's pass holds its judge verdicts, so the comparison never pairs them across judges.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.store import queries
from evalsvc.store.schema import Alert


def judge_ids(judge: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    return {label: (d.get("fingerprint"), d.get("template")) for label, d in (judge or {}).items()}


def canaries(s: Session, suite: str, base_run: int, cand_run: int, limit: float, notes: list[str]) -> set[str]:
    """The judge canary rate of both runs, in the report wherever a suite is judged; the judge labels over the limit."""
    base, cand = queries.canary_rates(s, base_run), queries.canary_rates(s, cand_run)
    over = set()
    for label in sorted(base.keys() | cand.keys()):
        shown = []
        for who, rates in (("baseline", base), ("candidate", cand)):
            if label in rates:
                value, n = rates[label]
                shown.append(f"{round(value * n)} of {n} ({value:.0%}) in the {who} run")
                over |= {label} if value > limit else set()
        notes.append(f"{suite}: judge canaries ({label}): answers written to manipulate the judge that it let through: "
                     + ", ".join(shown))
    return over


def drifting_judges(s: Session) -> set[str]:
    """Fingerprints of judges with an open judge alert (their canary failure rate rose): their verdicts decide nothing."""
    return {str((a.detail or {}).get("fingerprint")) for a in s.scalars(select(Alert).where(Alert.kind == "judge",
                                                                                          Alert.status == "open"))}
