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
        found = series_mod.check(s, warmup=warmup, alpha=alpha)
        r, last = found.current, found.last
        if last is not None:
            earlier = "; ".join(f"{a.direction} {s.points[a.index].run_ts:%Y-%m-%d}" for a in found.alarms[:-1])
            state = f"ALARM {last.direction} since {s.points[last.index].run_ts:%Y-%m-%d %H:%M}" + (
                f" (earlier: {earlier})" if earlier else "")
        elif len(s.points) <= warmup:
            state = f"warming up ({len(s.points)}/{warmup + 1})"
        else:
            state = "in control"
        reference = last.reference_mean if last is not None else r.reference_mean
        findings.append(DriftFinding(s.variant, s.suite, s.metric, len(s.points), s.points[-1].value, reference,
                                     r.statistic, r.threshold, state, bool(last is not None and last.direction == "down")))
    return findings
