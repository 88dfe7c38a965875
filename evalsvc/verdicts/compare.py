"""Candidate vs baseline, paired case by case, read from the store.

Only cases that are ``ok`` in both runs are paired (an endpoint error is never a quality
loss), runs pair only within one suite version, and judge metrics pair only when both runs
were judged by the same judge identity. Metrics where lower is better are negated so every
comparison reads "higher is better" and a negative delta is always a loss.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc.config import Config, GateConfig
from evalsvc.config.drift import RUN_LEVEL  # metric points that describe a run, not its cases
from evalsvc.errors import EvalsvcError
from evalsvc.stats import speed
from evalsvc.stats.binary import compare_binary
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.comparison import Comparison, Verdict, margin_from
from evalsvc.stats.divergence import Summary
from evalsvc.stats.multiplicity import decide
from evalsvc.store import queries
from evalsvc.store.latest import latest_runs
from evalsvc.suites import Suite
from evalsvc.verdicts import divergence as div
from evalsvc.verdicts import health, timing
from evalsvc.verdicts.decision import Decision, decide_gate
from evalsvc.verdicts.judges import canaries, drifting_judges, judge_ids

POOLED = "all suites"  # the scope of the pooled summary


@dataclass(frozen=True)
class Flip:
    suite: str
    case_id: str
    direction: Literal["down", "up"]
    baseline_output: str
    candidate_output: str


@dataclass
class Report:
    baseline: str
    candidate: str
    primary: list[tuple[str, Comparison]]  # (suite, comparison) of each suite's primary metrics (and deciding speed): each can veto
    secondary: list[tuple[str, Comparison]]  # every other metric per suite: shown, Holm-adjusted among themselves
    verdict: Verdict
    flips: list[Flip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lower_is_better: set[str] = field(default_factory=set)  # metrics compared negated (their means shown as measured)
    runs: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # suite name -> (baseline run, candidate run) rows
    pooled: list[tuple[str, Comparison]] = field(default_factory=list)  # primary metrics over all suites: decide a pass
    provenance: list[str] = field(default_factory=list)  # the runs compared, one line per suite (the gate fills it)
    bounds: list[tuple[str, Comparison]] = field(default_factory=list)  # primary metrics, unanswered cases as losses
    health: Comparison | None = None  # share of cases answered, candidate vs baseline (verdicts/health.py)
    speed: list[tuple[str, Comparison]] = field(default_factory=list)  # speed metrics without a margin: shown only
    decision: Decision | None = None  # which rule decided quality, and why (verdicts/decision.py)
    bound_decision: Decision | None = None  # the same rule on the worst-case bounds
    divergence: list[tuple[str, Summary]] = field(default_factory=list)  # per suite, those no margin names (verdicts/divergence.py)
    sequential: Any = None  # a sequential gate's looks (verdicts/sequential.py: SequentialSummary)

    def measured_means(self, c: Comparison) -> tuple[float, float]:
        """Baseline and candidate means as measured (comparisons of lower-is-better metrics are oriented)."""
        base, cand = c.baseline_mean, c.candidate_mean
        if c.metric in self.lower_is_better:
            return (0.0 - base, 0.0 - cand) if c.kind == "continuous" else (1 - base, 1 - cand)  # 0.0 - 0.0 is 0.0, not -0.0
        return base, cand


@dataclass
class _Pairs:
    """Per metric: aligned baseline/candidate values, and the metric's kind and direction."""

    values: dict[str, tuple[list[float], list[float]]] = field(default_factory=lambda: defaultdict(lambda: ([], [])))
    kinds: dict[str, tuple[str, bool]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # per value (pooled: the suite's weight)


class NotComparable(EvalsvcError):
    """The store lacks what a comparison needs (no succeeded run, no shared cases)."""


def without_runs(engine: Engine, suites: list[Suite], fp: str) -> list[Suite]:
    """The suites on which this fingerprint has no succeeded run yet (what a gate must run first)."""
    with Session(engine) as session:
        return [suite for suite in suites if not latest_runs(session, suite.version, fp)]


def _pick_runs(session: Session, suite: Suite, baseline: tuple[str, str], candidate: tuple[str, str]) -> tuple[Any, Any]:
    """Latest run of each; for an A/A comparison (one fingerprint) the latest against the one before it."""
    (base_name, base_fp), (cand_name, cand_fp) = baseline, candidate
    if base_fp == cand_fp:
        runs = latest_runs(session, suite.version, cand_fp, 2)
        if len(runs) < 2:
            raise NotComparable(f"an A/A comparison on '{suite.name}' needs two succeeded runs of {cand_name}; "
                                f"found {len(runs)}: run `evalsvc run -s {suite.name} -v {cand_name}` again")
        return runs[1], runs[0]
    found = {name: latest_runs(session, suite.version, fp) for name, fp in (baseline, candidate)}
    missing = [name for name, runs in found.items() if not runs]
    if missing:
        raise NotComparable(f"no succeeded run of {', '.join(missing)} on suite '{suite.name}' (version {suite.version}); "
                            f"run `evalsvc run -s {suite.name} -v {' -v '.join(missing)}` first")
    return found[base_name][0], found[cand_name][0]


@dataclass(frozen=True)
class _Case:
    """One case of a run as compared: its scores (samples averaged) and its judges' identities (sample 0's)."""

    scores: dict[str, float]
    judges: dict[str, tuple[str, str]]


def per_case(session: Session, run_id: int, samples_pass: str = "mean") -> dict[str, _Case]:
    """Each ok case of a run as one value per metric: its samples' scores averaged, and its pass reduced as
    ``samples_pass`` says (mean, majority, any = pass@k); read into plain values, so nothing is written back."""
    by_case: dict[str, list[Any]] = defaultdict(list)
    for row in queries.ok_cases(session, run_id):
        by_case[row.case_id].append(row)
    out = {}
    for cid, group in by_case.items():
        first = min(group, key=lambda r: r.sample_index)
        scores = dict(first.scores or {})
        if len(group) > 1:
            keys = set.intersection(*(set(r.scores or {}) for r in group))
            scores = {k: sum((r.scores or {})[k] for r in group) / len(group) for k in keys}
            if "pass" in scores and samples_pass != "mean":
                passes = [(r.scores or {})["pass"] for r in group]
                scores["pass"] = float(max(passes) if samples_pass == "any" else sum(passes) > len(passes) / 2)
        out[cid] = _Case(scores, judge_ids(first.judge))
    return out


def flip(base: _Case, cand: _Case) -> Literal["down", "up"] | None:
    """How a case's (samples-reduced) pass moved between two runs: "down" pass to fail, "up" fail to pass, None if it did not."""
    bp, cp = base.scores.get("pass"), cand.scores.get("pass")
    if bp is None or cp is None or bp == cp:
        return None
    return "down" if cp < bp else "up"


def compare(engine: Engine, cfg: Config, suites: list[Suite], baseline: str, candidate: str) -> Report:
    runs, notes = stored_runs(engine, cfg, suites, baseline, candidate)
    with Session(engine) as s:
        return compare_runs(s, cfg.gate, baseline, candidate, runs, notes)


def stored_runs(engine: Engine, cfg: Config, suites: list[Suite], baseline: str, candidate: str
                ) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """The runs ``compare`` pairs, per suite (the latest of each; for one fingerprint its latest two), and its notes."""
    base_fp, cand_fp = cfg.fingerprint(baseline), cfg.fingerprint(candidate)
    notes: list[str] = []
    if base_fp == cand_fp:
        notes.append("baseline and candidate have the same fingerprint: an A/A comparison of its newest run against the "
                     "one before (the noise floor)")
    with Session(engine) as s:
        return {suite.name: _pick_runs(s, suite, (baseline, base_fp), (candidate, cand_fp)) for suite in suites}, notes


def compare_runs(s: Session, gate: GateConfig, baseline: str, candidate: str, runs: dict[str, tuple[Any, Any]],
                 notes: list[str] | None = None, kinds: dict[str, dict[str, tuple[str, bool]]] | None = None,
                 unjudged: dict[str, str] | None = None) -> Report:
    """Pair each suite's two runs case by case and decide every metric.

    ``unjudged``: per suite, why its runs, judged by different judges, could not be judged alike (engine/rejudge.py):
    said where that suite cannot be decided.

    Every suite decides: its primary metrics are the deciding comparisons (``Report.primary``), combined by
    ``decide_suites``: an overall pass needs every suite to pass, regressions are Holm-adjusted across
    suites. The primary metrics pooled over all suites are a summary (``Report.pooled``), never the decision.
    """
    notes = list(notes or [])
    drifting = drifting_judges(s)
    pooled = _Pairs()
    per_suite: dict[str, _Pairs] = {}
    states: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    scored: dict[str, tuple[dict[str, _Case], dict[str, _Case]]] = {}
    flips: list[Flip] = []
    measured: dict[str, set[str]] = {}
    why: dict[str, str] = {}  # suite -> why its primary metrics are left out (a veto, never a silent drop)
    for suite_name, (base_run, cand_run) in runs.items():
        for run, who in ((base_run, baseline), (cand_run, candidate)):
            if run.upstream_change:
                notes.append(f"{who} on {suite_name}: {run.upstream_change}")
        scored_by = (getattr(base_run, "evalsvc_version", None), getattr(cand_run, "evalsvc_version", None))
        if scored_by[0] != scored_by[1]:
            notes.append(f"{suite_name}: the runs were scored by different evalsvc versions ({scored_by[0] or 'unknown'} and "
                         f"{scored_by[1] or 'unknown'}): a scorer change can move the numbers; measure both now to be sure")
        # (``kinds``: per suite, for runs asked in part, which have no metric points yet: a sequential gate's looks)
        metric_kinds = kinds[suite_name] if kinds and suite_name in kinds else queries.metric_kinds(s, base_run.id)
        kinds_here = {m: k for m, k in metric_kinds.items() if not m.endswith(RUN_LEVEL)}
        measured[suite_name] = set(kinds_here)
        base_rows, cand_rows = per_case(s, base_run.id, gate.samples_pass), per_case(s, cand_run.id, gate.samples_pass)
        states[suite_name] = (queries.case_states(s, base_run.id), queries.case_states(s, cand_run.id))
        scored[suite_name] = (base_rows, cand_rows)
        shared = sorted(base_rows.keys() & cand_rows.keys())
        if not shared:
            raise NotComparable(f"suite '{suite_name}': no case is ok in both runs {base_run.id} and {cand_run.id}")
        dropped = len(base_rows.keys() ^ cand_rows.keys())
        if dropped:
            notes.append(f"{suite_name}: {dropped} cases left out (errored or judge errors in one of the runs)")
        pairs = per_suite.setdefault(suite_name, _Pairs())
        mismatched: set[str] = set()
        untrusted: set[str] = set()
        fooled = canaries(s, suite_name, base_run.id, cand_run.id, gate.max_canary_failure_rate, notes)
        flipped: list[tuple[str, str]] = []
        for cid in shared:  # judge identities first: a label judged differently on any case is left out on every case
            ids_b, ids_c = base_rows[cid].judges, cand_rows[cid].judges
            mismatched |= {label for label in ids_b.keys() & ids_c.keys() if ids_b[label] != ids_c[label]}
            untrusted |= {label for label, (fp, _) in [*ids_b.items(), *ids_c.items()] if fp in drifting}
        if untrusted or fooled or mismatched:  # a case's pass includes its judge verdicts: never paired across judges
            untrusted.add("pass")
        for cid in shared:
            b, c = base_rows[cid], cand_rows[cid]
            for metric, (kind, up) in kinds_here.items():
                if {metric, metric.removesuffix("_prob")} & (mismatched | untrusted | fooled):
                    continue
                bv, cv = b.scores.get(metric), c.scores.get(metric)
                if bv is None or cv is None:
                    continue
                for target in (pairs, pooled):
                    target.values[metric][0].append(float(bv))
                    target.values[metric][1].append(float(cv))
                    target.kinds[metric] = (kind, up)
                pooled.weights[metric].append(gate.suite(suite_name).weight)
            way = flip(b, c)
            if way is not None:
                flipped.append((cid, way))
        if flipped:  # the outputs of the flipped cases only, not of every case
            base_out = queries.outputs(s, base_run.id, [cid for cid, _ in flipped])
            cand_out = queries.outputs(s, cand_run.id, [cid for cid, _ in flipped])
            flips.extend(Flip(suite_name, cid, way, base_out.get(cid, ""), cand_out.get(cid, "")) for cid, way in flipped)
        if mismatched:
            notes.append(f"{suite_name}: {', '.join(sorted(mismatched | {'pass'}))} not compared: the two runs were judged "
                         "by different judges or prompt templates (a case's pass holds its judge verdicts); measure both "
                         "now, or re-judge the older run with the current judge")
            why[suite_name] = "its runs were judged by different judges or prompt templates" + (
                f", and {unjudged[suite_name]}" if unjudged and suite_name in unjudged else "")
        if untrusted - {"pass"} - mismatched:
            why[suite_name] = "its judge is fooled by its canaries more often than it was (a judge alert is open)"
            notes.append(f"{suite_name}: {', '.join(sorted(untrusted))} not decided: its judge is fooled by its canaries "
                         "more often than it was (a judge alert is open); resolve it, or judge with another judge")
        if fooled:
            why[suite_name] = f"its judge let more than {gate.max_canary_failure_rate:.0%} of its canaries through"
            notes.append(f"{suite_name}: {', '.join(sorted(fooled | {'pass'}))} not decided: its judge let more than "
                         f"{gate.max_canary_failure_rate:.0%} of its canaries through (gate.max_canary_failure_rate); "
                         "a judge that manipulative answers can talk round cannot decide a release: judge with another judge")
    for name, pairs in per_suite.items():
        for metric in [m for m in pairs.values if _unscaled(pairs, m, gate)]:
            if metric in gate.primary:
                raise NotComparable(f"suite '{name}': {metric} takes values outside [0, 1], so the default margin "
                                    f"(absolute {gate.margin_for(metric).absolute}) means nothing for it; set "
                                    f"gate.margins.{metric} in evalsvc.yaml (absolute, in its units, or relative)")
            notes.append(f"{name}: {metric} not compared: its values lie outside [0, 1] and it has no margin of its "
                         f"own (set gate.margins.{metric})")
            del pairs.values[metric]
    deciding = [(name, _compare(metric, pairs, gate)) for name, pairs in per_suite.items()
                for metric in gate.primary if metric in pairs.values]
    if not deciding:
        reasons = [n for n in notes if "its judge is fooled by its canaries" in n or "of its canaries through" in n
                   or "judged by different judges" in n]
        if reasons:
            rates = [n for n in notes if ": judge canaries (" in n]
            raise NotComparable("the primary metrics are judged by judges that cannot decide (a changed judge, or one "
                                "its canaries fool too often, or more often than before: a judge alert is open), so "
                                "nothing can be decided: " + "; ".join(reasons + rates))
        raise NotComparable(f"none of the primary metrics ({', '.join(gate.primary)}) is measured by these suites; "
                            "set gate.primary in evalsvc.yaml")
    undecided = [(name, why.get(name, f"{metric} could not be compared")) for name, pairs in per_suite.items()
                 for metric in gate.primary if metric in measured[name] and metric not in pairs.values]
    gated_speed, shown_speed, speed_notes, speed_undecided = timing.compare_speed(s, runs, gate, POOLED)
    notes += speed_notes
    undecided += speed_undecided
    divergence = div.measure(s, runs, gate, POOLED)  # a divergence statistic with a bound in gate.margins decides like speed
    undecided += divergence.undecided
    notes += divergence.notes  # cases that fell back from teacher forcing to the shared prefix
    summary = [(POOLED, _compare_pooled(metric, pooled, gate)) for metric in gate.primary if metric in pooled.values]
    summary, primary, strict, decision = decide_gate(summary, deciding, gated_speed + divergence.gated, gate, undecided)
    primary += strict  # a speed metric or divergence statistic with its own margin must hold in every suite
    others = []
    for name, pairs in per_suite.items():
        for metric in sorted(pairs.values):
            if metric in gate.primary:
                continue
            twin = _same_numbers(pairs, metric, gate.primary)
            if twin is not None:  # e.g. a one-check suite's check and its pass: one quantity, counted once
                notes.append(f"{name}: {metric} is the same number as {twin} on every case; decided once, as {twin}")
                continue
            others.append((name, _compare(metric, pairs, gate)))
    secondary = list(zip([p[0] for p in others], decide([p[1] for p in others], gate.alpha), strict=True)) if others else []
    flips.sort(key=lambda f: (f.direction != "down", f.suite, f.case_id))
    lower = {m for pairs in (pooled, *per_suite.values()) for m, (_, up) in pairs.kinds.items() if not up}
    lower |= {c.metric for _, c in [*gated_speed, *shown_speed] if not speed.HIGHER_IS_BETTER[c.metric]}
    lower |= {c.metric for _, c in divergence.gated if c.metric in div.LOWER_IS_BETTER}
    bounds, bound_decision = _bounds(per_suite, states, scored, gate)
    served = health.health(states.values(), gate.health_margin, gate.alpha)
    quality = decision.verdict
    verdict = health.combined(quality, bound_decision.verdict if bound_decision else None, served)
    if served is not None and served.verdict == "regression":
        notes.append(f"serving health: the candidate answered {served.candidate_mean:.1%} of the cases, the baseline "
                     f"{served.baseline_mean:.1%}: more errors than gate.health_margin ({served.margin:.1%}) allows")
    elif verdict != quality and bound_decision is not None:
        hiding = "; ".join(bound_decision.reasons)
        notes.append(f"quality passes on the cases answered in both runs, but the unanswered cases could hide a loss: "
                     f"a case answered in one run only counted as a failure of the candidate (or a pass of the baseline), "
                     f"{hiding}")
    return Report(baseline, candidate, primary, secondary, verdict, flips, notes, lower, dict(runs), summary, bounds=bounds,
                  health=served, speed=shown_speed, decision=decision, bound_decision=bound_decision,
                  divergence=divergence.shown)


def _bounds(per_suite: dict[str, _Pairs], states: dict[str, tuple[dict[str, str], dict[str, str]]],
            scored: dict[str, tuple[dict[str, _Case], dict[str, _Case]]], gate: GateConfig
            ) -> tuple[list[tuple[str, Comparison]], Decision | None]:
    """The worst-case bound of the primary metrics where some case was answered in one run only, pooled and per suite,
    decided by the gate's own rule; ([], None) when every case was answered in both runs or in neither."""
    found: list[tuple[str, Comparison]] = []
    pooled = _Pairs()
    for name, pairs in per_suite.items():
        rows_b, rows_c = scored[name]
        for metric in (m for m in gate.primary if m in pairs.values):
            kind, up = pairs.kinds[metric]
            seen = pairs.values[metric][0] + pairs.values[metric][1]
            lo, hi = (0.0, 1.0) if kind == "binary" else (min(seen), max(seen))
            filled = health.worst_case(states[name], {cid: r.scores.get(metric) for cid, r in rows_b.items()},
                                       {cid: r.scores.get(metric) for cid, r in rows_c.items()},
                                       worst=lo if up else hi, best=hi if up else lo)
            if filled is None:
                filled = pairs.values[metric]  # nothing unanswered here: the suite's own pairs stand in the pool
            else:
                one = _Pairs()
                one.values[metric], one.kinds[metric] = filled, (kind, up)
                found.append((name, _compare(metric, one, gate)))
            pooled.values[metric][0].extend(filled[0])
            pooled.values[metric][1].extend(filled[1])
            pooled.kinds[metric] = (kind, up)
            pooled.weights[metric].extend([gate.suite(name).weight] * len(filled[0]))
    if not found:
        return [], None
    summary = [(POOLED, _compare_pooled(metric, pooled, gate)) for metric in gate.primary if metric in pooled.values]
    summary, decided, _, decision = decide_gate(summary, found, [], gate)
    pooled_rows = [(n, c) for n, c in summary if c.metric not in decision.alone] if gate.decide == "pooled" else []
    return [*pooled_rows, *decided], decision


def _unscaled(pairs: _Pairs, metric: str, gate: GateConfig) -> bool:
    """A metric outside [0, 1] (a 1-10 judge score, sacrebleu's 0-100) whose margin would be the default."""
    base, cand = pairs.values[metric]
    return metric not in gate.margins and (min(base + cand) < 0 or max(base + cand) > 1)


def _same_numbers(pairs: _Pairs, metric: str, primary: list[str]) -> str | None:
    """The primary metric that has exactly this metric's paired values and direction, if one does."""
    for other in primary:
        if other in pairs.values and pairs.kinds[other] == pairs.kinds[metric] and pairs.values[other] == pairs.values[metric]:
            return other
    return None


def _compare_pooled(metric: str, pairs: _Pairs, gate: GateConfig) -> Comparison:
    """The pooled comparison: every case once, unless ``gate.suites.<name>.weight`` differ between the pooled suites.

    With unequal weights each case's values are scaled by its suite's weight over the mean weight, so the mean of the
    scaled differences is the weighted mean difference; the paired bootstrap (BCa) then gives its interval, for pass/fail
    metrics too (Tango's interval has no weighted form)."""
    w = pairs.weights.get(metric) or []
    if len(set(w)) <= 1:
        return _compare(metric, pairs, gate)
    base, cand = pairs.values[metric]
    k = [x * len(w) / sum(w) for x in w]
    _, up = pairs.kinds[metric]
    scaled = _Pairs()
    scaled.values[metric] = ([b * f for b, f in zip(base, k, strict=True)], [c * f for c, f in zip(cand, k, strict=True)])
    scaled.kinds[metric] = ("continuous", up)
    return _compare(metric, scaled, gate)


def _compare(metric: str, pairs: _Pairs, gate: GateConfig) -> Comparison:
    """Orient (higher is better), pick the margin, and compare with the method for the metric's kind."""
    base, cand = pairs.values[metric]
    kind, up = pairs.kinds[metric]
    m = gate.margin_for(metric)
    binary = kind == "binary" and all(v in (0.0, 1.0) for v in base + cand)
    if binary:
        if not up:
            base, cand = [1.0 - v for v in base], [1.0 - v for v in cand]
        margin = margin_from(sum(base) / len(base), m.absolute, m.relative)
        return compare_binary(metric, base, cand, margin, gate.alpha)
    if not up:
        base, cand = [-v for v in base], [-v for v in cand]
    margin = margin_from(sum(base) / len(base), m.absolute, m.relative)
    return compare_continuous(metric, base, cand, margin, gate.alpha)
