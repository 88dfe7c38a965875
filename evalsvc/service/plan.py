"""How many cases a gate needs: `evalsvc gate --plan` and `evalsvc suites validate` print it before any gate runs.

At a margin m a suite of n cases can only show non-inferiority when n is large enough, even when nothing changed at
all (no case flips): 52 cases at m = 0.05, 133 at m = 0.02 (one-sided alpha 0.05). What decides a pass is the pooled
primary metric over all gated suites' cases, plus each ``critical`` suite on its own (``gate.decide: every_suite``:
every suite on its own), so those are the n that matter. Binary metrics only: a continuous metric's n depends on the
SD of its per-case differences, which no run has measured before the first gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc.config import Config
from evalsvc.stats.power import n_for_noninferiority
from evalsvc.store import queries
from evalsvc.suites import Suite

TYPICAL_DISCORDANCE = 0.05  # share of cases that flip (either way) between two close variants: a typical quantization


@dataclass(frozen=True)
class PlanRow:
    name: str  # a suite, or "pooled"
    cases: int | None  # None: an lm-eval task (its document count is known when it runs)
    no_change: int | None  # cases needed when no case flips
    typical: int | None  # cases needed (power 0.8) when TYPICAL_DISCORDANCE of them flip, half each way
    decides: bool  # must pass on its own (the pool, a critical suite, or every suite under every_suite)

    def status(self) -> str:
        if self.cases is None or self.no_change is None:
            return "n unknown before it runs"
        if self.cases < self.no_change:
            return "too few: cannot pass even with no change" if self.decides else "too few to pass on its own"
        if self.typical is not None and self.cases < self.typical:
            return "enough with no change; too few where 5% of cases flip"
        return "enough"


def every_suite(cfg: Config) -> bool:
    return cfg.gate.decide == "every_suite"


def margin_of(cfg: Config, metric: str, baseline_mean: float | None) -> tuple[float, str]:
    """The margin in points, and how it was found (a relative one needs the baseline's mean: 1.0 when none is known,
    which gives the widest margin, so the n printed is then a least n)."""
    m = cfg.gate.margin_for(metric)
    if m.absolute is not None:
        return m.absolute, f"absolute {m.absolute:g}"
    assert m.relative is not None
    mean = 1.0 if baseline_mean is None else baseline_mean
    known = "no stored baseline run: assumed 1.0, so at least this n" if baseline_mean is None else "the latest baseline run"
    return (1 - m.relative) * mean, f"relative {m.relative:g} x baseline mean {mean:.3f} ({known})"


def needed(margin: float, alpha: float) -> tuple[int | None, int | None]:
    """Cases to pass with no change, and at a typical discordance (the true delta 0 in both)."""
    if margin <= 0:
        return None, None
    return (n_for_noninferiority(margin, alpha, discordance=0.0, delta=0.0),
            n_for_noninferiority(margin, alpha, discordance=TYPICAL_DISCORDANCE, delta=0.0))


def plan(cfg: Config, suites: list[Suite], metric: str, margin: float) -> list[PlanRow]:
    """One row per suite that measures ``metric`` (binary), then the pooled row."""
    no_change, typical = needed(margin, cfg.gate.alpha)
    rows = []
    for s in suites:
        spec = s.metrics().get(metric)
        if spec is None or spec.kind != "binary":
            continue
        cases = None if s.harness is not None else len(s.cases)
        rows.append(PlanRow(s.name, cases, no_change, typical, every_suite(cfg) or cfg.gate.suite(s.name).critical))
    if rows:
        known = [r.cases for r in rows]
        pooled = None if None in known else sum(c for c in known if c is not None)
        rows.append(PlanRow("pooled", pooled, no_change, typical, not every_suite(cfg)))
    return rows


def plan_lines(cfg: Config, suites: list[Suite], engine: Engine | None = None, baseline: str | None = None) -> list[str]:
    """The plan as text: per primary metric, a table of suites and the pool, and what decides."""
    rule = ("every suite must pass on its own (gate.decide: every_suite)" if every_suite(cfg) else
            "the pooled cases decide, with each critical suite on its own")
    lines = [f"Cases needed to pass the gate at one-sided alpha {cfg.gate.alpha:g}: {rule}."]
    for metric in cfg.gate.primary:
        mean = _baseline_mean(engine, baseline, suites, metric) if engine is not None and baseline else None
        margin, how = margin_of(cfg, metric, mean)
        rows = plan(cfg, suites, metric, margin)
        if not rows:
            lines.append(f"{metric}: no gated suite measures it as pass/fail (a continuous metric's n depends on the "
                         "spread of its per-case differences: the gate's report gives it as n≈ after a first run)")
            continue
        lines.append(f"\n{metric}: margin {margin:.4g} ({how})")
        width = max(len(r.name) for r in rows)
        lines.append(f"  {'suite':<{width}}  {'cases':>6}  {'no change':>9}  {'5% flip':>7}  ")
        for r in rows:
            label = "" if r.decides else "  (a summary)" if r.name == "pooled" else "  (in the pool)"
            lines.append(f"  {r.name:<{width}}  {_n(r.cases):>6}  {_n(r.no_change):>9}  {_n(r.typical):>7}  "
                         f"{r.status()}{label}")
    lines.append("\n'no change': the cases needed when no case flips between baseline and candidate (fewer can never "
                 "pass); '5% flip': when 5% of cases flip, half each way (power 0.8). Add cases or widen gate.margins.")
    return lines


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _baseline_mean(engine: Engine, baseline: str, suites: list[Suite], metric: str) -> float | None:
    """The case-weighted mean of ``metric`` over the baseline's latest stored points on these suites, if any."""
    names = {s.name for s in suites}
    with Session(engine) as s:
        points = [p for p in queries.latest_points(s, sorted(names))
                  if p.metric == metric and p.variant_name == baseline and p.value is not None and p.n]
    total = sum(p.n for p in points)
    return sum(p.value * p.n for p in points) / total if total else None
