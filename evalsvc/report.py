"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalsvc.compare import Report
    from evalsvc.runs import Outcome
    from evalsvc.store.schema import MetricPoint


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def outcome_table(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        pass_rate = f"{o.metrics['pass']:.3f}" if "pass" in o.metrics else "-"
        note = o.error or o.upstream_change or ""
        rows.append([o.variant, o.suite, o.status, f"{o.n_ok}/{o.n_cases}", str(o.n_errored), pass_rate,
                     f"{o.sent}/{o.from_cache}", note[:120]])
    return table(["variant", "suite", "status", "ok", "errored", "pass", "sent/cached", "note"], rows)


def results_table(points: Sequence[MetricPoint], metric: str = "pass") -> str:
    """Variant rows x suite columns of ``metric`` (or every metric as long rows with 'all')."""
    if not points:
        return "no results yet: run `evalsvc run`"
    if metric == "all":
        rows = [[p.variant_name, p.suite_name, p.metric, _fmt(p)] for p in points]
        return table(["variant", "suite", "metric", "value [95% CI] (n)"], rows)
    chosen = [p for p in points if p.metric == metric]
    if not chosen:
        known = sorted({p.metric for p in points})
        return f"no metric '{metric}' in the latest results; known: {', '.join(known)}"
    suites = sorted({p.suite_name for p in chosen})
    variants = sorted({p.variant_name for p in chosen})
    cell = {(p.variant_name, p.suite_name): _fmt(p) for p in chosen}
    rows = [[v, *(cell.get((v, s), "-") for s in suites)] for v in variants]
    return f"metric: {metric}\n" + table(["variant", *suites], rows)


def _fmt(p: MetricPoint) -> str:
    if p.ci_low is None or p.ci_high is None:
        return f"{p.value:.3f} (n={p.n})"
    return f"{p.value:.3f} [{p.ci_low:.2f},{p.ci_high:.2f}] (n={p.n})"


def verdict_lines(reports: Sequence[Report]) -> str:
    """One row per comparison: its verdict and the pooled primary deltas with their intervals."""
    rows = [[r.candidate, r.baseline, r.verdict,
             "; ".join(f"{c.metric} {c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] (n={c.n})" for _, c in r.primary)]
            for r in reports]
    return table(["candidate", "baseline", "verdict", "Δ [CI]"], rows)
