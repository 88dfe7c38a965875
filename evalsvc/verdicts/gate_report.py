"""The pre-deploy gate's outputs: an exit code, a Markdown summary and JUnit XML.

Exit codes: 0 pass (or improvement), 1 regression, 2 could not evaluate, 3 inconclusive
when the config asks to fail on it (otherwise inconclusive exits 0 with a warning).
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree as ET

from evalsvc.stats import Comparison
from evalsvc.verdicts.compare import Report

EXIT = {"pass": 0, "improvement": 0, "regression": 1, "inconclusive": 0}
ICON = {"pass": "✅ pass", "improvement": "🟢 improvement", "regression": "❌ regression", "inconclusive": "⚠️ inconclusive"}


def exit_code(report: Report, fail_on_inconclusive: bool) -> int:
    if report.verdict == "inconclusive" and fail_on_inconclusive:
        return 3
    return EXIT[report.verdict]


def _row(scope: str, c: Comparison, report: Report) -> str:
    need = f" (n≈{c.n_needed} to decide)" if c.verdict == "inconclusive" and c.n_needed else ""
    base, cand = report.measured_means(c)
    name = f"{c.metric} (lower is better)" if c.metric in report.lower_is_better else c.metric
    return (f"| {scope} | {name} | {c.n} | {base:.3f} | {cand:.3f} | {c.delta:+.3f} "
            f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.margin:.3f} | {c.flips_down} / {c.flips_up} | {ICON[c.verdict]}{need} |")


HEADER = ("| scope | metric | n | baseline | candidate | Δ [CI] | margin | flips ↓/↑ | verdict |\n"
          "|---|---|---|---|---|---|---|---|---|")


def markdown(report: Report, top_flips: int = 10) -> str:
    lines = [f"## evalsvc gate: {report.candidate} vs {report.baseline}: {ICON[report.verdict]}", "",
             "Primary (decides the exit code; Holm-adjusted):", "", HEADER]
    lines += [_row(scope, c, report) for scope, c in report.primary]
    regressed = [f"{scope}/{c.metric}" for scope, c in report.primary + report.secondary if c.verdict == "regression"]
    if regressed:
        lines += ["", f"**Regressed:** {', '.join(regressed)}"]
    lines += ["", "<details><summary>Per suite and metric (informational; Holm-adjusted among themselves)</summary>", "",
              HEADER, *(_row(scope, c, report) for scope, c in report.secondary), "", "</details>"]
    down = [f for f in report.flips if f.direction == "down"][:top_flips]
    if down:
        lines += ["", f"Top cases that flipped pass → fail ({sum(f.direction == 'down' for f in report.flips)} in all):", "",
                  "| suite | case | baseline output | candidate output |", "|---|---|---|---|"]
        lines += [f"| {f.suite} | {f.case_id} | {_cell(f.baseline_output)} | {_cell(f.candidate_output)} |" for f in down]
    if report.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in report.notes)]
    lines += ["", "Means are as measured; Δ is candidate − baseline oriented so that a negative Δ is always a loss "
              "(for lower-is-better metrics Δ = baseline − candidate); CI is the two-sided interval at the metric's "
              "Holm-adjusted level; verdicts use the non-inferiority margin: pass when CI low > −margin, regression "
              "when CI high < −margin."]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def junit(report: Report, fail_on_inconclusive: bool) -> str:
    """One test case per comparison: regressions fail; inconclusive fails only when configured, else is skipped."""
    cases = report.primary + report.secondary
    suite = ET.Element("testsuite", name=f"evalsvc gate {report.candidate} vs {report.baseline}", tests=str(len(cases)))
    failures = skipped = 0
    for i, (scope, c) in enumerate(cases):
        kind = "primary" if i < len(report.primary) else "secondary"
        tc = ET.SubElement(suite, "testcase", classname=f"evalsvc.{kind}.{scope}", name=c.metric)
        detail = (f"delta {c.delta:+.4f} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}] margin {c.margin:.4f} n {c.n} "
                  f"flips down {c.flips_down} up {c.flips_up}; {c.method}")
        if c.verdict == "regression":
            failures += 1
            ET.SubElement(tc, "failure", message=f"regression: {detail}")
        elif c.verdict == "inconclusive":
            if fail_on_inconclusive and kind == "primary":
                failures += 1
                ET.SubElement(tc, "failure", message=f"inconclusive: {detail}")
            else:
                skipped += 1
                ET.SubElement(tc, "skipped", message=f"inconclusive: {detail}")
        ET.SubElement(tc, "system-out").text = detail
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True)


def write_outputs(report: Report, markdown_path: Path | None, junit_path: Path | None, fail_on_inconclusive: bool,
                  top_flips: int) -> str:
    md = markdown(report, top_flips)
    if markdown_path:
        markdown_path.write_text(md, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md)
    if junit_path:
        junit_path.write_text(junit(report, fail_on_inconclusive), encoding="utf-8")
    return md
