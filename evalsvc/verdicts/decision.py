"""How the gate's comparisons become one verdict: the whole decides, every part can veto.

The pooled rule (``gate.decide: pooled``, the default), for each primary metric:

- **pass** needs (a) the metric pooled over the cases of every gated suite shown non-inferior at its margin
  (one-sided alpha), (b) no suite *shown worse* than the baseline (its own interval entirely below 0; Holm
  across the suites [holm1979]) and (c) every ``critical`` suite non-inferior on its own at alpha. A metric that
  one suite alone measures is decided by that suite as by the fixed non-inferiority test (nothing pools with it,
  so nothing can hide a loss in it). A false pass
  needs (a) to be false, so its rate stays <= alpha whatever (b) and (c) add (an intersection-union test
  [berger1982]: every extra condition only removes passes).
- **regression**: the pooled interval entirely below -m, or a suite's below its own margin. Both kinds of claim
  form one Holm family (the pooled hypothesis joins it only when more than one suite is pooled), so the chance of
  any false regression stays <= alpha; a critical suite is tested at alpha on its own, outside the family.
- **inconclusive** otherwise, naming what blocked the pass: the pooled n that would decide, the suite shown
  worse, the critical suite not shown non-inferior, a suite that could not be decided.

A suite that cannot be decided (its judge changed between the runs or its canaries fooled it, a deciding speed
metric with no timing) vetoes a pass with its reason; it is never dropped. Speed metrics and divergence statistics
with a margin of their own (``gate.margins``) must hold in every suite (they are tested as under ``every_suite``).

``gate.decide: every_suite`` keeps the stricter rule: every suite must show non-inferiority on its own (an
intersection-union test over the suites), regressions Holm-adjusted across suites; the pooled rows only inform.

[holm1979] Holm S. Scand J Stat 1979;6:65-70. [berger1982] Berger RL. Technometrics 1982;24:295-300.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from evalsvc.config import GateConfig
from evalsvc.stats.comparison import Comparison, Verdict, at_level
from evalsvc.stats.multiplicity import decide_suites, holm_levels

_GOOD = ("pass", "improvement")

Scoped = tuple[str, Comparison]


@dataclass(frozen=True)
class Decision:
    """Which rule decided, the quality verdict it gave, and why: what blocked a pass, what regressed."""

    rule: str  # "pooled" or "every_suite"
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)  # one line each: a regression, or a blocked pass
    shown_worse: list[str] = field(default_factory=list)  # "suite/metric" rows whose interval lies below 0
    undecided: list[tuple[str, str]] = field(default_factory=list)  # (suite, why it could not be decided)
    critical: list[str] = field(default_factory=list)  # the suites marked critical
    own: list[str] = field(default_factory=list)  # "suite/metric" rows that must be non-inferior on their own
    alone: list[str] = field(default_factory=list)  # metrics measured by one suite only: that suite decides them itself

    def blocks(self, scope: str, c: Comparison) -> str | None:
        """Why this suite row stops a pass, if it does (for the report's row and JUnit)."""
        if c.verdict == "regression":
            return "regressed"
        if f"{scope}/{c.metric}" in self.shown_worse:
            return "shown worse than the baseline"
        if f"{scope}/{c.metric}" in self.own and c.verdict not in _GOOD:
            return "critical: not shown non-inferior on its own" if scope in self.critical else "not shown non-inferior"
        return None


def _worse_levels(suites: Sequence[Scoped], alpha: float, weights: Sequence[float]) -> list[float]:
    """Holm levels of the tests "this suite is worse than the baseline" (H0: delta >= 0), and the p-values' order."""
    return holm_levels([_p_worse(c) for _, c in suites], alpha, weights)


def _p_worse(c: Comparison) -> float:
    """p-value of H0: delta >= 0 (small: the suite is shown worse than the baseline)."""
    return 1.0 if c.evidence is None else c.evidence.p_values(0.0)[1]


def decide_gate(pooled: Sequence[Scoped], suites: Sequence[Scoped], strict: Sequence[Scoped], gate: GateConfig,
                undecided: Sequence[tuple[str, str]] = ()) -> tuple[list[Scoped], list[Scoped], list[Scoped], Decision]:
    """Decide the pooled rows, the suite rows and the strict (speed) rows together; returns each decided and the Decision.

    ``pooled`` holds one comparison per primary metric over every gated suite's cases, ``suites`` each suite's
    primary comparisons, ``strict`` the speed comparisons and divergence statistics that ``gate.margins`` makes deciding
    (per suite: each must hold on its own, ``verdicts/timing.py``, ``verdicts/divergence.py``).
    """
    alpha = gate.alpha
    if gate.decide == "every_suite":
        rows = [*suites, *strict]
        decided = decide_suites([c for _, c in rows], alpha, [gate.suite(n).critical for n, _ in rows],
                                [gate.suite(n).weight for n, _ in rows])
        done = list(zip([n for n, _ in rows], decided, strict=True))
        suites_d, strict_d = done[: len(suites)], done[len(suites):]
        summary = [(n, at_level(c, alpha)) for n, c in pooled]
        decision = _verdict("every_suite", [], suites_d, strict_d, [], undecided, gate)
        return summary, suites_d, strict_d, decision

    counts = {c.metric: sum(1 for _, s in suites if s.metric == c.metric) for _, c in pooled}
    alone = sorted({m for m, k in counts.items() if k <= 1} | {c.metric for _, c in suites if c.metric not in counts})
    family: list[tuple[str, int]] = []  # ("pooled"|"suite"|"strict", index) of the Holm regression family
    fam_p: list[float] = []
    fam_w: list[float] = []
    for i, (_, c) in enumerate(pooled):
        if c.metric not in alone:  # a pool of one suite is that suite: it decides as itself
            family.append(("pooled", i))
            fam_p.append(c.p_inferior)
            fam_w.append(1.0)
    for kind, rows in (("suite", suites), ("strict", strict)):
        for i, (name, c) in enumerate(rows):
            if not gate.suite(name).critical:
                family.append((kind, i))
                fam_p.append(c.p_inferior)
                fam_w.append(gate.suite(name).weight)
    levels = dict(zip(family, holm_levels(fam_p, alpha, fam_w), strict=True))

    def level(kind: str, i: int, c: Comparison) -> float:  # pass-leaning rows at alpha, the others at their Holm level
        return alpha if c.p_noninferior <= c.p_inferior else levels.get((kind, i), alpha)

    pooled_d = [(n, at_level(c, level("pooled", i, c))) for i, (n, c) in enumerate(pooled)]
    suites_d = [(n, at_level(c, level("suite", i, c))) for i, (n, c) in enumerate(suites)]
    strict_d = [(n, at_level(c, level("strict", i, c))) for i, (n, c) in enumerate(strict)]
    pooled_parts = [(n, c) for n, c in suites if c.metric not in alone]  # a suite alone has no pool to hide in
    worse_at = _worse_levels(pooled_parts, alpha, [gate.suite(n).weight for n, _ in pooled_parts]) if pooled_parts else []
    worse = [f"{n}/{c.metric}" for (n, c), lv in zip(pooled_parts, worse_at, strict=True) if _p_worse(c) < lv]
    deciding = [(n, c) for n, c in pooled_d if c.metric not in alone]
    decision = _verdict("pooled", deciding, suites_d, strict_d, worse, undecided, gate, alone)
    return pooled_d, suites_d, strict_d, decision


def _verdict(rule: str, pooled: Sequence[Scoped], suites: Sequence[Scoped], strict: Sequence[Scoped], worse: list[str],
             undecided: Sequence[tuple[str, str]], gate: GateConfig, alone: Sequence[str] = ()) -> Decision:
    own_rows = [(n, c) for n, c in suites if gate.suite(n).critical or rule == "every_suite" or c.metric in alone]
    own_rows += list(strict)
    extra = {"critical": sorted({n for n, _ in suites if gate.suite(n).critical}),
             "own": [f"{n}/{c.metric}" for n, c in own_rows], "alone": list(alone)}
    deciding = [*pooled, *suites, *strict] if rule == "pooled" else [*suites, *strict]
    regressed = [f"{n}/{c.metric} regressed: Δ {c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] below −{c.margin:.3f}"
                 for n, c in deciding if c.verdict == "regression"]
    if regressed:
        return Decision(rule, "regression", regressed, worse, list(undecided), **extra)
    blocked: list[str] = []
    if rule == "pooled":
        for n, c in pooled:
            if c.verdict not in _GOOD:
                need = f"; about {c.n_needed} cases pooled would decide if Δ and its spread hold" if c.n_needed else ""
                blocked.append(f"{n}/{c.metric} not shown non-inferior: Δ {c.delta:+.3f} [{c.ci_low:+.3f}, "
                               f"{c.ci_high:+.3f}], margin {c.margin:.3f}, n {c.n}{need}")
        blocked += [f"{w} shown worse than the baseline (its interval lies below 0, Holm across suites)" for w in worse]
    for n, c in own_rows:
        if c.verdict not in _GOOD:
            need = f"; n≈{c.n_needed} would decide" if c.n_needed else ""
            what = "critical suite" if gate.suite(n).critical else ("the only suite" if c.metric in alone else "suite")
            blocked.append(f"{what} {n}/{c.metric} not shown non-inferior on its own: Δ {c.delta:+.3f} "
                           f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], margin {c.margin:.3f}{need}")
    blocked += [f"{n} could not be decided: {why}" for n, why in undecided]
    if blocked:
        return Decision(rule, "inconclusive", blocked, worse, list(undecided), **extra)
    head = [*pooled, *((n, c) for n, c in suites if c.metric in alone)] if rule == "pooled" else [*suites, *strict]
    if not head:
        return Decision(rule, "inconclusive", ["no comparison decided"], worse, list(undecided), **extra)
    verdict: Verdict = "improvement" if head and all(c.verdict == "improvement" for _, c in head) else "pass"
    return Decision(rule, verdict, [], worse, list(undecided), **extra)
