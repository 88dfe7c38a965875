"""The pre-deploy gate's outputs: an exit code, a Markdown summary, JUnit XML and JSON.

Exit codes: 0 pass (or improvement), 1 regression, 2 could not evaluate, 3 inconclusive: not shown
to be no worse is not a pass (``--allow-inconclusive`` or ``gate.fail_on_inconclusive: false`` make it 0).
JUnit fails exactly the comparisons that decide the exit code.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from evalsvc.stats.comparison import Comparison
from evalsvc.verdicts import sequential
from evalsvc.verdicts.compare import POOLED, Report
from evalsvc.verdicts.health import HEALTH

EXIT = {"pass": 0, "improvement": 0, "regression": 1, "inconclusive": 0}  # inconclusive: 3 unless allowed
ICON = {"pass": "✅ pass", "improvement": "🟢 improvement", "regression": "❌ regression", "inconclusive": "⚠️ inconclusive"}


def exit_code(report: Report, fail_on_inconclusive: bool) -> int:
    if report.verdict == "inconclusive" and fail_on_inconclusive:
        return 3
    return EXIT[report.verdict]


def n_needed_text(c: Comparison) -> str:
    """The n that would decide, with its assumption: the observed delta and spread are the true ones."""
    claim = "show it no worse" if c.delta > -c.margin else "show the regression"
    return f"n≈{c.n_needed} to {claim}, if Δ {c.delta:+.3f} and its spread hold"


def _row(scope: str, c: Comparison, report: Report, veto: bool = False) -> str:
    need = f" ({n_needed_text(c)})" if c.verdict == "inconclusive" and c.n_needed else ""
    blocks = report.decision.blocks(scope, c) if veto and report.decision is not None else None
    need += f" **blocks the pass: {blocks}**" if blocks and blocks != "regressed" else ""
    base, cand = report.measured_means(c)
    name = f"{c.metric} (lower is better)" if c.metric in report.lower_is_better else c.metric
    return (f"| {scope} | {name} | {c.n} | {base:.3f} | {cand:.3f} | {c.delta:+.3f} "
            f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.margin:.3f} | {c.flips_down} / {c.flips_up} | {ICON[c.verdict]}{need} |")


HEADER = ("| scope | metric | n | baseline | candidate | Δ [CI] | margin | flips ↓/↑ | verdict |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _margins(report: Report) -> str:
    seen: dict[str, float] = {}
    for _, c in [*report.primary, *report.secondary]:
        seen.setdefault(c.metric, c.margin)
    return ", ".join(f"{m} {v:.3f}" for m, v in seen.items())


def markdown(report: Report, top_flips: int = 10, alpha: float | None = None) -> str:
    level = f"one-sided α = {alpha:g} ({1 - 2 * alpha:.0%} two-sided intervals before adjustment); " if alpha else ""
    lines = [f"## evalsvc gate: {report.candidate} vs {report.baseline}: {ICON[report.verdict]}", "",
             f"{level}non-inferiority margins: {_margins(report)}.", ""]
    if report.provenance:
        lines += ["Runs compared:", *(f"- {line}" for line in report.provenance), ""]
    pooled_rule = report.decision is not None and report.decision.rule == "pooled"
    alone = set(report.decision.alone) if report.decision else set()
    pooled_rows = [(scope, c) for scope, c in report.pooled if c.metric not in alone]
    lines += [how_decided(report), ""]
    regressed = [f"{scope}/{c.metric}" for scope, c in [*(pooled_rows if pooled_rule else []), *report.primary]
                 if c.verdict == "regression"]
    if regressed:
        lines += [f"**Regressed:** {', '.join(dict.fromkeys(regressed))}", ""]
    if report.decision is not None and report.decision.reasons:
        label = "Why" if report.decision.verdict == "regression" else "What blocked the pass"
        lines += [f"**{label}:**", *(f"- {r}" for r in report.decision.reasons), ""]
    if report.sequential is not None:
        lines += sequential.markdown_lines(report.sequential)
    if pooled_rule and pooled_rows:
        lines += ["Pooled over the suites (decides a pass):", "", HEADER, *(_row(scope, c, report) for scope, c in pooled_rows), ""]
    lines += ["Each suite (can veto: a regression, shown worse than the baseline, or a critical suite not shown "
              "non-inferior):" if pooled_rule else
              "Every suite decides (pass needs every suite to pass; regressions Holm-adjusted across suites):", "", HEADER]
    lines += [_row(scope, c, report, veto=True) for scope, c in report.primary]
    if report.bounds:
        lines += ["", "Worst case, where a case was not answered in one run (the candidate's count as failures, the "
                  "baseline's as passes); a pass that these could undo is inconclusive:", "", HEADER,
                  *(_row(scope, c, report) for scope, c in report.bounds)]
    if report.health is not None:
        lines += ["", "Serving health (share of cases answered; more errors than the margin, shown, is a regression):",
                  "", HEADER, _row(HEALTH, report.health, report)]
    elif report.primary:
        lines += ["", "Serving health: every case was answered in both runs."]
    if report.speed:
        lines += ["", "Speed, paired on the answers both runs requested (decides only where gate.margins names the "
                  "metric; shown here against a 10% margin):", "", HEADER, *(_row(scope, c, report) for scope, c in report.speed)]
    if report.pooled and not pooled_rule:
        lines += ["", "Pooled over the suites (a summary under gate.decide: every_suite; it decides nothing):", "", HEADER,
                  *(_row(scope, c, report) for scope, c in report.pooled)]
    if report.secondary:
        lines += ["", "<details><summary>Other metrics per suite (informational; Holm-adjusted among themselves)</summary>",
                  "", HEADER, *(_row(scope, c, report) for scope, c in report.secondary), "", "</details>"]
    if report.divergence:
        lines += ["", "Divergence from the baseline (informational; a statistic that gate.margins bounds decides in each "
                  "suite's table instead; docs/divergence.md): kld is the mean per-token KL(baseline ‖ candidate), a top-k "
                  "lower bound, in nats, over each case's positions that its mode compares: the shared prefix (up to the "
                  "answers' first difference) or, teacher-forced, every token of the baseline's answer, where top1_agreement "
                  "is the share of those tokens whose most likely token the two models agree on; delta_p (Δp) the mean "
                  "change in the probability of the baseline's chosen token over the same positions (before the answers "
                  "differ, on the shared prefix), candidate − baseline:", "",
                  "| suite | statistic | value | CI | n | mode |", "|---|---|---|---|---|---|",
                  *(f"| {scope} | {r.metric} | {r.estimate:.4g} | [{r.ci_low:.4g}, {r.ci_high:.4g}] | {r.n} | "
                    f"{r.mode.replace('_', ' ')} |" for scope, r in report.divergence)]
    down = [f for f in report.flips if f.direction == "down"][:top_flips]
    if down:
        lines += ["", f"Top cases that flipped pass → fail ({sum(f.direction == 'down' for f in report.flips)} in all):", "",
                  "| suite | case | baseline output | candidate output |", "|---|---|---|---|"]
        lines += [f"| {f.suite} | {f.case_id} | {_cell(f.baseline_output)} | {_cell(f.candidate_output)} |" for f in down]
    if report.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in report.notes)]
    lines += ["", "Means are as measured; Δ is candidate − baseline oriented so that a negative Δ is always a loss "
              "(for lower-is-better metrics Δ = baseline − candidate); CI is the two-sided interval at the level each "
              "comparison was decided at; pass when CI low > −margin, regression when CI high < −margin; n≈ is the "
              "paired n that would decide an inconclusive row with 80% power if its observed Δ and spread were the "
              "true ones."]
    return "\n".join(lines) + "\n"


def how_decided(report: Report) -> str:
    """One paragraph: which rule decided this verdict and how (the Markdown, the CLI and the dashboard say the same)."""
    d = report.decision
    if d is None:
        return "Decided by every suite."
    if d.rule == "every_suite":
        return ("How the verdict was reached (gate.decide: every_suite): a pass needs every suite shown non-inferior on "
                "its own; a regression is any suite's interval below its margin (Holm across suites).")
    crit = f" ({', '.join(d.critical)})" if d.critical else ""
    return ("How the verdict was reached (gate.decide: pooled): a pass needs the primary metric pooled over every gated "
            "suite's cases shown non-inferior at its margin, no suite shown worse than the baseline (Holm across suites) "
            f"and every critical suite{crit} non-inferior on its own; a suite that could not be decided vetoes the pass. "
            "A regression is the pooled interval, or any suite's, entirely below its margin (Holm across the pooled "
            "metric and the suites).")


def _cell(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def junit(report: Report, fail_on_inconclusive: bool) -> str:
    """One test case per comparison; only the deciding ones can fail, exactly as they set the exit code.

    A deciding regression fails, a deciding inconclusive one fails when it exits 3 (else it is skipped);
    so does a worst-case bound that turns a quality pass inconclusive, and serving health when it regressed;
    the pooled summary and the other metrics are informational and never fail.
    """
    rows = roles(report)
    quality_good = report.decision is not None and report.decision.verdict in ("pass", "improvement")
    suite = ET.Element("testsuite", name=f"evalsvc gate {report.candidate} vs {report.baseline}", tests=str(len(rows)))
    failures = skipped = 0
    for role, scope, c in rows:
        tc = ET.SubElement(suite, "testcase", classname=f"evalsvc.{role}.{scope}", name=c.metric)
        detail = (f"{c.verdict}: delta {c.delta:+.4f} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}] margin {c.margin:.4f} n {c.n} "
                  f"flips down {c.flips_down} up {c.flips_up}; {c.method}")
        if _fails(role, scope, c, report, quality_good, fail_on_inconclusive):
            failures += 1
            ET.SubElement(tc, "failure", message=detail)
        elif c.verdict in ("regression", "inconclusive"):
            skipped += 1
            ET.SubElement(tc, "skipped", message=detail if role == "decides" else f"{role}, did not set the exit code: {detail}")
        ET.SubElement(tc, "system-out").text = detail
    for name, why in (report.decision.undecided if report.decision else []):
        tc = ET.SubElement(suite, "testcase", classname=f"evalsvc.undecided.{name}", name="could not be decided")
        if fail_on_inconclusive:
            failures += 1
            ET.SubElement(tc, "failure", message=f"{name} could not be decided: {why}")
        else:
            skipped += 1
            ET.SubElement(tc, "skipped", message=f"{name} could not be decided: {why}")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True)


def as_json(report: Report, fail_on_inconclusive: bool, alpha: float | None = None) -> str:
    """Every verdict and number of the report, for a pipeline to read (the same facts as the Markdown)."""
    def row(role: str, scope: str, c: Comparison) -> dict[str, object]:
        base, cand = report.measured_means(c)
        return {"role": role, "scope": scope, "metric": c.metric, "kind": c.kind, "verdict": c.verdict, "n": c.n,
                "baseline_mean": _num(base), "candidate_mean": _num(cand), "delta": _num(c.delta), "ci_low": _num(c.ci_low),
                "ci_high": _num(c.ci_high), "margin": _num(c.margin), "alpha": _num(c.alpha),
                "p_noninferior": _num(c.p_noninferior), "p_inferior": _num(c.p_inferior),
                "flips_down": c.flips_down, "flips_up": c.flips_up, "n_needed": c.n_needed,
                "lower_is_better": c.metric in report.lower_is_better, "method": c.method,
                "blocks": report.decision.blocks(scope, c) if role in ("veto", "decides") and scope != POOLED and report.decision
                else None}

    d = report.decision
    decision = None if d is None else {"rule": d.rule, "quality_verdict": d.verdict, "reasons": d.reasons,
                                       "shown_worse": d.shown_worse, "critical": d.critical,
                                       "undecided": [{"suite": n, "reason": why} for n, why in d.undecided]}
    return json.dumps({
        "candidate": report.candidate, "baseline": report.baseline, "verdict": report.verdict,
        "exit_code": exit_code(report, fail_on_inconclusive), "alpha": alpha, "decision": decision, "runs": report.provenance,
        "comparisons": [row(role, sc, c) for role, sc, c in roles(report)],
        "flips": [{"suite": f.suite, "case_id": f.case_id, "direction": f.direction} for f in report.flips],
        "divergence": [{"scope": scope, "metric": r.metric, "estimate": _num(r.estimate), "ci_low": _num(r.ci_low),
                        "ci_high": _num(r.ci_high), "n": r.n, "method": r.method, "mode": r.mode}
                       for scope, r in report.divergence],
        "sequential": sequential.as_dict(report.sequential) if report.sequential is not None else None,
        "notes": report.notes}, indent=2, allow_nan=False)


def could_not_evaluate(candidate: str, baseline: str | None, message: str, outcomes: Sequence[Any], markdown_path: Path | None,
                       junit_path: Path | None, json_path: Path | None) -> None:
    """Exit 2 writes the requested files too, so CI has a report to upload: JSON with the exit code, the error and the
    runs that were made; JUnit with one test case in error; a Markdown summary (also to $GITHUB_STEP_SUMMARY)."""
    title = f"evalsvc gate {candidate} vs {baseline or '(no baseline)'}"
    runs = [{"suite": o.suite, "variant": o.variant, "run_id": o.run_id, "status": o.status, "n_cases": o.n_cases,
             "n_ok": o.n_ok, "n_errored": o.n_errored, "error": o.error} for o in outcomes]
    if json_path:
        json_path.write_text(json.dumps({
            "candidate": candidate, "baseline": baseline, "verdict": "could not evaluate", "exit_code": 2, "error": message,
            "alpha": None, "runs": [f"{r['suite']}: {r['variant']} run {r['run_id']} {r['status']}" for r in runs],
            "runs_made": runs, "comparisons": [], "flips": [], "notes": []}, indent=2), encoding="utf-8")
    if junit_path:
        suite = ET.Element("testsuite", name=title, tests="1", failures="0", errors="1", skipped="0")
        tc = ET.SubElement(suite, "testcase", classname="evalsvc.gate", name="could not evaluate")
        ET.SubElement(tc, "error", message=message, type="could not evaluate").text = message
        junit_path.write_text(ET.tostring(suite, encoding="unicode", xml_declaration=True), encoding="utf-8")
    _publish(f"## {title}: could not evaluate (exit 2)\n\n" + "".join(f"- {line}\n" for line in message.splitlines()),
             markdown_path)


def _publish(md: str, markdown_path: Path | None) -> None:
    """The Markdown summary to its file and, in GitHub Actions, to the job's step summary."""
    if markdown_path:
        markdown_path.write_text(md, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md)


def _fails(role: str, scope: str, c: Comparison, report: Report, quality_good: bool, fail_on_inconclusive: bool) -> bool:
    """Whether this comparison sets a non-zero exit code (so JUnit fails exactly those)."""
    if role == "decides":
        return c.verdict == "regression" or (c.verdict == "inconclusive" and fail_on_inconclusive)
    if role == "veto":  # a suite row: fails when it regressed or blocks the pass
        blocks = report.decision.blocks(scope, c) if report.decision else None
        return c.verdict == "regression" or (blocks is not None and fail_on_inconclusive)
    if role == "health":
        return c.verdict == "regression"
    if role == "bound":  # a quality pass the unanswered cases could undo is inconclusive
        bd = report.bound_decision
        if not quality_good or bd is None or bd.verdict in ("pass", "improvement") or not fail_on_inconclusive:
            return False
        return (scope == POOLED and c.verdict not in ("pass", "improvement")) or bd.blocks(scope, c) is not None
    return False


def roles(report: Report) -> list[tuple[str, str, Comparison]]:
    """Every comparison with its role: decides (the pooled rows under the pooled rule, and the rows that must hold on
    their own: a critical suite's, a suite that decides a metric alone, a speed metric with a margin; under every_suite
    each suite's primary rows), veto (the other suite rows under the pooled rule), bound (worst case), health, summary (pooled,
    under every_suite), speed (no margin of its own) or informational."""
    pooled_rule = report.decision is not None and report.decision.rule == "pooled"
    alone = set(report.decision.alone) if report.decision else set()
    own = set(report.decision.own) if report.decision else set()  # rows that must hold on their own: they decide
    head = ([("summary" if c.metric in alone else "decides", scope, c) for scope, c in report.pooled]
            + [("decides" if f"{scope}/{c.metric}" in own else "veto", scope, c) for scope, c in report.primary]
            if pooled_rule else [("decides", scope, c) for scope, c in report.primary])
    return (head + [("bound", scope, c) for scope, c in report.bounds]
            + ([("health", HEALTH, report.health)] if report.health is not None else [])
            + ([] if pooled_rule else [("summary", scope, c) for scope, c in report.pooled])
            + [("speed", scope, c) for scope, c in report.speed]
            + [("informational", scope, c) for scope, c in report.secondary])


def _num(value: float | None) -> float | None:
    """JSON has no inf or NaN (a single paired case has an unbounded interval): those are null."""
    return value if value is not None and math.isfinite(value) else None


def write_outputs(report: Report, markdown_path: Path | None, junit_path: Path | None, fail_on_inconclusive: bool,
                  top_flips: int, alpha: float | None = None, json_path: Path | None = None) -> str:
    if json_path:
        json_path.write_text(as_json(report, fail_on_inconclusive, alpha), encoding="utf-8")
    md = markdown(report, top_flips, alpha)
    _publish(md, markdown_path)
    if junit_path:
        junit_path.write_text(junit(report, fail_on_inconclusive), encoding="utf-8")
    return md
