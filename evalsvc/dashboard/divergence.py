"""The dashboard's divergence queries: the candidate's divergence from the baseline per case (Compare), over time
(Trends) and per candidate (Quality vs speed), read as the gate computes it and as comparisons stored it
(``verdicts/divergence.py``, docs/divergence.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.dashboard.frames import frame as read
from evalsvc.store.schema import Run, VerdictRecord
from evalsvc.verdicts import divergence as div
from evalsvc.verdicts.compare import POOLED


def divergence_metrics(engine: Engine, suite: str) -> list[str]:
    """The divergence statistics stored comparisons on a suite hold (kld, same_output, delta_p): Trends plots them."""
    with engine.connect() as conn:
        return sorted(conn.scalars(select(VerdictRecord.metric).where(
            VerdictRecord.scope == suite, VerdictRecord.metric.in_(list(div.OWN_VALUE))).distinct()).all())


def divergence_series(engine: Engine, suite: str, metric: str, variants: list[str] | None = None,
                      since: datetime | None = None) -> pd.DataFrame:
    """A divergence statistic over time, as ``series`` gives a metric: one point per candidate run that a comparison
    with the baseline measured it on (the newest comparison of that run), at the candidate run's time, with its
    interval in the statistic's own units. The baselines have none: they are what the others diverge from."""
    q = select(VerdictRecord.id, VerdictRecord.candidate_run_ts.label("run_ts"), VerdictRecord.candidate.label("variant"),
               Run.variant_fingerprint.label("fingerprint"), VerdictRecord.candidate_mean.label("value"),
               VerdictRecord.baseline_mean, VerdictRecord.ci_low, VerdictRecord.ci_high, VerdictRecord.lower_is_better,
               VerdictRecord.n, VerdictRecord.candidate_run_id.label("run_id"), VerdictRecord.baseline).join(
        Run, Run.id == VerdictRecord.candidate_run_id).where(VerdictRecord.scope == suite, VerdictRecord.metric == metric)
    if variants:
        q = q.where(VerdictRecord.candidate.in_(variants))
    if since is not None:
        q = q.where(VerdictRecord.candidate_run_ts >= since)
    frame = read(engine, q)
    columns = ["run_ts", "variant", "fingerprint", "value", "ci_low", "ci_high", "n", "run_id", "higher_is_better", "baseline"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.sort_values("id").groupby("run_id", as_index=False).tail(1)  # a run compared twice: its newest
    bands = [measured_interval(r) for _, r in frame.iterrows()]
    frame = frame.assign(ci_low=[b[0] for b in bands], ci_high=[b[1] for b in bands],
                         higher_is_better=~frame["lower_is_better"].astype(bool))
    frame["run_ts"] = pd.to_datetime(frame["run_ts"], utc=True)
    return frame[columns].sort_values("run_ts").reset_index(drop=True)


def case_divergence(engine: Engine, base_run: int, cand_run: int) -> pd.DataFrame:
    """Per case of two runs, the candidate's divergence from the baseline (``verdicts/divergence.py``): kld, same
    output, Δp, and where the answers first differ with the two tokens there (quoted, so a space shows), with the mode
    each case was measured in and, teacher-forced, its top-1 agreement; the most diverged first. Empty when the runs
    stored no log-probabilities for the same cases."""
    columns = ["case_id", "kld", "same_output", "first_divergence", "baseline_token", "candidate_token", "delta_p",
               "top1_agreement", "mode"]
    with Session(engine) as s:
        found = div.per_case(s, base_run, cand_run)
    rows = [{"case_id": cid, "kld": d.kld, "same_output": bool(d.same_output), "first_divergence": d.first_divergence,
             "baseline_token": _token(d.baseline_token, d.same_output), "candidate_token": _token(d.candidate_token, d.same_output),
             "delta_p": d.delta_p, "top1_agreement": d.top1_agreement, "mode": d.mode.replace("_", " ")}
            for cid, d in found.items()]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("kld", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _token(token: str | None, same: int) -> str:
    if same:
        return ""
    return "(end of answer)" if token is None else json.dumps(token, ensure_ascii=False)


def kld_of(rows: pd.DataFrame) -> dict[str, Any]:
    """A candidate's kld from its newest comparison: pooled over the suites, or its one suite's; blank without one."""
    kld = rows[rows["metric"] == "kld"]
    pooled = kld[kld["scope"] == POOLED]
    row = pooled.iloc[0] if len(pooled) else kld.iloc[0] if len(kld) == 1 else None
    if row is None:
        return {"kld": None, "kld_low": None, "kld_high": None, "kld_max": None}
    low, high = measured_interval(row)
    return {"kld": row["candidate_mean"], "kld_low": low, "kld_high": high,
            "kld_max": row["margin"] if row["kind"] != div.KIND else None}


def measured_interval(row: Any) -> tuple[float, float]:
    """A stored row's interval in the metric's own units (the stored one is of the oriented difference)."""
    base, low, high = row["baseline_mean"], row["ci_low"], row["ci_high"]
    return (base - high, base - low) if row["lower_is_better"] else (base + low, base + high)
