"""The drift state of each live metric series (a variant fingerprint x suite version x metric)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from evalsvc.verdicts import series as series_mod


@dataclass(frozen=True)
class DriftFinding:
    variant: str
    suite: str
    metric: str
    runs: int
    latest: float
    reference: float
    statistic: float
    threshold: float
    state: str  # "ALARM up|down [since ...]", "warming up (k/n)" or "in control"
    regression: bool  # an alarm in the worse direction


def check_drift(engine: Engine, suites: list[str] | None = None, variants: list[str] | None = None,
                metrics: list[str] | None = None, warmup: int = 5, alpha: float = 0.05) -> list[DriftFinding]:
    """One finding per live series: the newest series of each variant x suite x metric (older ones are history)."""
    newest: dict[tuple[str, str, str], series_mod.Series] = {}
    for s in series_mod.load(engine, suites, variants, metrics):
        key = (s.variant, s.suite, s.metric)
        if key not in newest or s.points[-1].run_ts > newest[key].points[-1].run_ts:
            newest[key] = s
    findings = []
    for s in newest.values():
        r = series_mod.check(s, warmup=warmup, alpha=alpha)
        if r.alarm:
            since = s.points[r.index].run_ts if r.index is not None else None
            state = f"ALARM {r.direction}" + (f" since {since:%Y-%m-%d %H:%M}" if since else "")
        elif len(s.points) <= warmup:
            state = f"warming up ({len(s.points)}/{warmup + 1})"
        else:
            state = "in control"
        findings.append(DriftFinding(s.variant, s.suite, s.metric, len(s.points), s.points[-1].value, r.reference_mean,
                                     r.statistic, r.threshold, state, bool(r.alarm and r.regression)))
    return findings
