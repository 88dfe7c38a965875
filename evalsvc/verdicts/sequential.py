"""The sequential gate's looks: where a partly asked comparison stands, and whether its verdict is decided.

The cases of every gated suite are asked in one seeded random order (``case_order``), both arms together, in
batches that end at the looks (``equal_looks``: K equally spaced case counts). At look k the first n_k cases of
that order are compared, and only they: an answer that came back early waits for the cases before it (latency goes
with difficulty, so the order answers arrive in is not random).

Each primary metric pooled over the suites is a group-sequential test (``stats.sequential``: Lan-DeMets alpha
spending at the observed information fraction, the fixed gate's statistic at delta0 = -m, repeated confidence
intervals [jt1989]). The whole of the fixed gate's rule is then applied at the look's own nominal level
1 - Phi(b_k) (``compare_runs`` with ``alpha`` = that level): the suites' vetoes, the health check, the worst-case
bound. The gate stops

- with a **regression** as soon as the rule at the look's level finds one: the pooled metric's and the suites'
  regression claims form one Holm family, as in the fixed gate, at the boundary's level (the pooled test's own
  lower crossing is shown, but a regression is claimed only within that family);
- with a **pass** as soon as every pooled primary metric crosses its upper boundary and the rule at the look's
  level passes too (a pass needs both: an intersection-union test, so the false-pass rate stays that of the
  sequential test [berger1982]). Suites decided by a judge, critical suites and speed margins never pass early:
  a judge's canaries and a speed metric's timings are checked on complete runs, and a critical suite is a test of
  its own; such a gate passes at its last look;
- at the **last look**, whatever the fixed rule says at the last boundary's level: the fixed gate, at b_K instead
  of z_{1-alpha}.

With more than one primary metric each is tested at alpha / (their number) (Bonferroni across the metrics: any
one may stop with a regression).

[jt1989] Jennison C, Turnbull BW. J R Stat Soc B 1989;51:305-361. [berger1982] Berger RL. Technometrics
1982;24:295-300.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from evalsvc.config import GateConfig
from evalsvc.stats.betting import betting_paired
from evalsvc.stats.comparison import margin_from
from evalsvc.stats.sequential import equal_looks, sequential_binary, sequential_continuous
from evalsvc.suites import Suite
from evalsvc.verdicts.compare import POOLED, NotComparable, Report, compare_runs, per_case

_GOOD = ("pass", "improvement")


@dataclass(frozen=True)
class LookRecord:
    """One look as the report shows it."""

    look: int
    asked: int  # cases asked so far, over all gated suites (both arms)
    verdict: str  # continue, pass, improvement, regression, inconclusive
    level: float  # the nominal one-sided level the look decided at, 1 - Phi(b_k)
    rows: list[Any]  # one per primary metric pooled over the suites: stats.sequential.Look or stats.betting.BettingLook


@dataclass
class SequentialSummary:
    """How a sequential gate went: its order, its looks and what stopping saved."""

    seed: int
    slot: str
    planned: list[int]  # cases asked by each planned look
    total: int  # cases of all gated suites
    spending: str
    looks: list[LookRecord] = field(default_factory=list)
    requests_saved: int = 0  # requests the cases not asked would have taken (both arms)
    resumed: bool = False  # started again on the runs of a gate that was stopped

    @property
    def asked(self) -> int:
        return self.looks[-1].asked if self.looks else 0

    @property
    def stopped_early(self) -> bool:
        return bool(self.looks) and self.asked < self.total


def case_order(suites: Sequence[Suite], seed: int) -> list[tuple[str, str]]:
    """Every (suite, case id) of the gated suites in one seeded random order (Python's Mersenne Twister shuffle)."""
    order = [(s.name, c.id) for s in suites for c in s.cases]
    random.Random(seed).shuffle(order)
    return order


def looks_for(total: int, looks: int) -> list[int]:
    """Case counts at the looks: ``looks`` equally spaced, fewer where the suites are too small (at least 2 per look)."""
    return equal_looks(total, max(1, min(looks, total // 2)))


def anytime_looks(budget: int, every: int | None) -> list[int]:
    """Case counts at the anytime test's looks: every ``every`` cases (default a twentieth of the budget, at least 20)
    up to the budget, which is the last."""
    step = every or max(20, budget // 20)
    return [*range(step, budget, step), budget]


def kinds_of(suites: Sequence[Suite]) -> dict[str, dict[str, tuple[str, bool]]]:
    """metric -> (kind, higher is better) per suite, from the suites' checks (runs asked in part have no metric points);
    an lm-eval task's metrics are known from its run (run whole at the first look, its metric points stored)."""
    return {s.name: {m: (spec.kind, spec.higher_is_better) for m, spec in s.metrics().items()}
            for s in suites if s.harness is None}


@dataclass(frozen=True)
class Rule:
    """How the looks decide: group-sequential boundaries over ``n_max`` cases, or the anytime betting test."""

    mode: str  # "looks" or "anytime"
    n_max: int  # the planned last look (all gated cases, or the anytime budget)
    spending: str = "obrien-fleming"
    early_pass: bool = True  # False: judged, critical or speed-decided suites pass only at the last look
    population: int | None = None  # anytime, a claim about the finite suites: their size


def evaluate_look(s: Session, gate: GateConfig, baseline: str, candidate: str, runs: dict[str, tuple[Any, Any]],
                  order: list[tuple[str, str]], sizes: list[int], rule: Rule,
                  kinds: dict[str, dict[str, tuple[str, bool]]], notes: list[str]) -> tuple[LookRecord, Report | None]:
    """The look after the first ``sizes[-1]`` cases of ``order`` were asked (``sizes``: the looks so far).

    Returns the look and, when it decides (or is the last), the report to publish; None while the gate goes on."""
    final = sizes[-1] >= rule.n_max
    alpha = gate.alpha / max(1, len(gate.primary))
    scored = {name: (per_case(s, b.id, gate.samples_pass), per_case(s, c.id, gate.samples_pass))
              for name, (b, c) in runs.items()}
    rows = [look for metric in gate.primary
            if (look := _pooled_look(gate, metric, scored, order, sizes, alpha, rule, final, kinds)) is not None]
    if rule.mode == "anytime":
        can_pass = rule.early_pass or sizes[-1] >= len(order)  # (a judged or critical suite: on complete runs only)
        return _anytime(s, gate, baseline, candidate, runs, sizes, rule, final, can_pass, rows, kinds, notes)
    level = min((r.level for r in rows), default=gate.alpha if final else 0.0)
    verdicts = [r.verdict for r in rows]
    if not final and level <= 0.0:  # this look spends nothing: it cannot decide
        return LookRecord(len(sizes), sizes[-1], "continue", level, rows), None
    report = compare_runs(s, gate.model_copy(update={"alpha": level}), baseline, candidate, runs, list(notes),
                          kinds=kinds)
    if final or report.verdict == "regression":  # regressions: the rule's one Holm family, at the look's level
        verdict = report.verdict
    elif rule.early_pass and rows and all(v in _GOOD for v in verdicts) and report.verdict in _GOOD:
        verdict = report.verdict
    else:
        return LookRecord(len(sizes), sizes[-1], "continue", level, rows), None
    return LookRecord(len(sizes), sizes[-1], verdict, level, rows), report


def _regressed(report: Report, rows: Sequence[Any], how: str) -> None:
    report.verdict = "regression"
    if report.decision is not None:
        report.decision.reasons.extend(f"{POOLED}/{r.metric} {how} at look {r.look}: Δ {r.delta:+.3f} "
                                       f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}] below −{r.margin:.3f}"
                                       for r in rows if r.verdict == "regression")


def _anytime(s: Session, gate: GateConfig, baseline: str, candidate: str, runs: dict[str, tuple[Any, Any]], sizes: list[int],
             rule: Rule, final: bool, can_pass: bool, rows: list[Any], kinds: dict[str, dict[str, tuple[str, bool]]],
             notes: list[str]) -> tuple[LookRecord, Report | None]:
    """The anytime rule: only the e-processes claim (a fixed-n test re-read at every look would not hold its level);
    the pooled rule's vetoes, at alpha, can only stop a pass. At the budget, no crossing is inconclusive."""
    verdicts = [r.verdict for r in rows]
    crossed_down = "regression" in verdicts
    crossed_up = bool(rows) and all(v in _GOOD for v in verdicts)
    if not (final or crossed_down or crossed_up):
        return LookRecord(len(sizes), sizes[-1], "continue", gate.alpha, rows), None
    report = compare_runs(s, gate, baseline, candidate, runs, list(notes), kinds=kinds)
    report.pooled = [(scope, _with_sequence(c, rows)) for scope, c in report.pooled]
    if report.decision is not None:  # the pooled rows' reasons, read off the confidence sequence
        report.decision.reasons[:] = [r for r in report.decision.reasons if not r.startswith(f"{POOLED}/")] + [
            f"{POOLED}/{r.metric} {r.verdict if r.verdict != 'continue' else 'not decided'} by its e-process: Δ {r.delta:+.3f}, "
            f"confidence sequence [{r.ci_low:+.3f}, {r.ci_high:+.3f}], margin {r.margin:.3f}, n {r.n}"
            for r in rows if r.verdict not in _GOOD]
    if crossed_down:
        _regressed(report, rows, "was shown below the margin by its e-process")
    elif crossed_up and can_pass and report.verdict in _GOOD:
        pass
    elif crossed_up and not final:
        return LookRecord(len(sizes), sizes[-1], "continue", gate.alpha, rows), None
    else:
        report.verdict = "inconclusive"
        if report.decision is not None and not crossed_up:
            report.decision.reasons.append(f"the budget of {rule.n_max} cases was reached with no e-process at "
                                           f"1/alpha = {1 / gate.alpha:g}")
        elif report.decision is not None and not can_pass:
            report.decision.reasons.append("a judged or critical suite, or a speed margin, is decided on complete runs, "
                                           "and the budget left these partial")
    return LookRecord(len(sizes), sizes[-1], report.verdict, gate.alpha, rows), report


def _with_sequence(c: Any, rows: list[Any]) -> Any:
    """A pooled row with the confidence sequence and the anytime p-values in place of the fixed-n interval."""
    from dataclasses import replace

    row = next((r for r in rows if r.metric == c.metric), None)
    if row is None:
        return c
    return replace(c, ci_low=row.ci_low, ci_high=row.ci_high, p_noninferior=row.p_noninferior, p_inferior=row.p_inferior,
                   verdict="inconclusive" if row.verdict == "continue" else row.verdict, n_needed=None, method=row.method)


def _pooled_look(gate: GateConfig, metric: str, scored: dict[str, tuple[Any, Any]], order: list[tuple[str, str]],
                 sizes: list[int], alpha: float, rule: Rule, final: bool,
                 kinds: dict[str, dict[str, tuple[str, bool]]]) -> Any:
    """The sequential test of one primary metric pooled over the suites, its pairs in the seeded order."""
    pairs = _pairs(gate, metric, scored, order, sizes, kinds)
    if pairs is None:
        return None  # too few pairs yet (or none new at this look)
    base, cand, looks, binary, scale = pairs
    m = gate.margin_for(metric)
    margin = margin_from(sum(base) / len(base), m.absolute, m.relative)
    if rule.mode == "anytime":
        if min(base + cand) < 0 or max(base + cand) > scale:
            raise NotComparable(f"{metric}: the anytime test needs scores in [0, 1] (pass/fail, or a score of that range); "
                                "use --sequential looks for it")
        return betting_paired(metric, base, cand, looks, margin, alpha, scale, rule.population, final)[-1]
    test = sequential_binary if binary else sequential_continuous
    return test(metric, base, cand, looks, rule.n_max, margin, alpha, rule.spending, final=final)[-1]  # (or the look that decided)


def _pairs(gate: GateConfig, metric: str, scored: dict[str, tuple[Any, Any]], order: list[tuple[str, str]],
           sizes: list[int], kinds: dict[str, dict[str, tuple[str, bool]]]
           ) -> tuple[list[float], list[float], list[int], bool, float] | None:
    """The metric's oriented pairs among the first ``sizes[-1]`` cases of the order (``scored``: each suite's cases
    per run), the paired count at each look that added pairs, whether they are pass/fail, and the largest value a
    scaled score can take."""
    base: list[float] = []
    cand: list[float] = []
    weights: list[float] = []
    paired_at: list[int] = []  # pairs among the first n_k cases, at each look
    ends = iter(sizes)
    end = next(ends)
    binary = True
    for i, (suite, cid) in enumerate(order[: sizes[-1]]):
        rows = scored.get(suite)
        spec = kinds.get(suite, {}).get(metric)
        if rows is not None and spec is not None and cid in rows[0] and cid in rows[1]:
            bv, cv = rows[0][cid].scores.get(metric), rows[1][cid].scores.get(metric)
            if bv is not None and cv is not None:
                kind, up = spec
                bv, cv = (float(bv), float(cv)) if up else ((1.0 - bv, 1.0 - cv) if kind == "binary" else (-bv, -cv))
                binary = binary and kind == "binary" and bv in (0.0, 1.0) and cv in (0.0, 1.0)
                base.append(bv)
                cand.append(cv)
                weights.append(gate.suite(suite).weight)
        if i + 1 == end:
            paired_at.append(len(base))
            end = next(ends, -1)
    looks = [n for k, n in enumerate(paired_at) if n >= 2 and (k == 0 or n > max(paired_at[:k]))]
    if not looks or looks[-1] != len(base):
        return None
    scale = 1.0
    if len(set(weights)) > 1:  # weighted pooling, as the fixed gate does it (compare._compare_pooled): scaled values
        k = [w * len(weights) / sum(weights) for w in weights]
        base, cand, binary = [b * f for b, f in zip(base, k, strict=True)], [c * f for c, f in zip(cand, k, strict=True)], False
        scale = max(k)
    return base, cand, looks, binary, scale


def markdown_lines(summary: SequentialSummary) -> list[str]:
    """The looks as a table: where the gate stopped, what it asked, the boundary and each pooled metric's interval."""
    how = ("anytime-valid betting test: intervals are its confidence sequence, valid at any look and any stop "
           "[wsr2024]" if summary.spending == "anytime" else
           "intervals are repeated confidence intervals, valid at whatever look the gate stops [jt1989]; the gate column "
           "is the pooled rule at the look's level (the pooled test passing, no suite vetoing; regressions claimed in "
           "one Holm family with the suites)")
    head = (f"Sequential gate: {summary.asked} of {summary.total} cases asked in {len(summary.looks)} of "
            f"{len(summary.planned)} looks ({summary.spending}{'' if summary.spending == 'anytime' else ' spending'}, "
            f"seed {summary.seed})"
            + (f", {summary.requests_saved} requests saved" if summary.stopped_early else ", every case asked")
            + f"; {how}:")
    lines = [head, "", "| look | cases asked | metric | Δ | interval | evidence | pooled test | gate |",
             "|---|---|---|---|---|---|---|---|"]
    for look in summary.looks:
        for r in look.rows or [None]:
            if r is None:
                lines.append(f"| {look.look} | {look.asked} | – | – | – | – | – | too few pairs | {look.verdict} |")
                continue
            test = r.verdict if r.look == look.look else f"{r.verdict} (at look {r.look}, which it holds)"
            lines.append(f"| {look.look} | {look.asked} | {r.metric} | {r.delta:+.3f} | [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
                         f"| {evidence(r)} | {test} | {look.verdict} |")
    return [*lines, ""]


def evidence(r: Any) -> str:
    """What a look's pooled test saw against what would decide."""
    if hasattr(r, "boundary"):
        return f"z at −m {r.statistic:+.2f} vs ±{r.boundary:.2f}"
    return f"e {r.e_pass:.3g} (pass) / {r.e_regression:.3g} (regression) vs {1 / r.alpha:g}"


def as_dict(summary: SequentialSummary) -> dict[str, Any]:
    """The looks for the JSON report."""
    def num(x: float) -> float | None:
        return x if x == x and abs(x) != float("inf") else None

    return {"seed": summary.seed, "slot": summary.slot, "spending": summary.spending, "planned_looks": summary.planned,
            "cases_total": summary.total, "cases_asked": summary.asked, "stopped_early": summary.stopped_early,
            "requests_saved": summary.requests_saved, "resumed": summary.resumed,
            "looks": [{"look": k.look, "cases_asked": k.asked, "verdict": k.verdict, "level": k.level,
                       "metrics": [{"metric": r.metric, "n": r.n, "delta": num(r.delta), "ci_low": num(r.ci_low),
                                    "ci_high": num(r.ci_high), "margin": r.margin, "verdict": r.verdict, "method": r.method,
                                    **({"statistic": num(r.statistic), "boundary": num(r.boundary), "fraction": r.fraction}
                                       if hasattr(r, "boundary") else
                                       {"e_pass": num(r.e_pass), "e_regression": num(r.e_regression)})}
                                   for r in k.rows]} for k in summary.looks]}
