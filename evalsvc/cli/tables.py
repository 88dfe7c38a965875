"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalsvc.engine.battles import CHECKS_JUDGE
from evalsvc.engine.runner import Outcome
from evalsvc.service.drift import DriftFinding
from evalsvc.stats import ratings
from evalsvc.verdicts.compare import Report


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


def results_table(points: Sequence[Any], metric: str = "pass") -> str:
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


def _fmt(p: Any) -> str:
    if p.ci_low is None or p.ci_high is None:
        return f"{p.value:.3f} (n={p.n})"
    return f"{p.value:.3f} [{p.ci_low:.2f},{p.ci_high:.2f}] (n={p.n})"


def verdict_lines(reports: Sequence[Report]) -> str:
    """One row per comparison: its verdict and the pooled primary deltas with their intervals (a summary)."""
    rows = [[r.candidate, r.baseline, r.verdict,
             "; ".join(f"{c.metric} {c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] (n={c.n})" for _, c in r.pooled)]
            for r in reports]
    return table(["candidate", "baseline", "verdict", "pooled Δ [CI]"], rows)


def leaderboard_table(battles: list[ratings.Battle], anchor: str, judge: str, n_boot: int = 1000) -> str:
    rows = ratings.leaderboard(battles, anchor, n_boot=n_boot)
    lines = []
    for r in rows:
        win = "-" if r.win_rate_vs_anchor is None else f"{r.win_rate_vs_anchor:.2f} [{r.win_ci_low:.2f},{r.win_ci_high:.2f}]"
        lc = "-"
        if r.model != anchor and all(b.len_a is not None for b in battles):
            try:
                lc = f"{ratings.length_controlled_win_rate(battles, r.model, anchor):.2f}"
            except ValueError:
                lc = "-"
        lines.append([r.model, f"{r.rating:.0f}", f"[{r.ci_low:.0f},{r.ci_high:.0f}]", str(r.n_battles), win, lc])
    ties = sum(1 for b in battles if b.outcome == 0.5)
    why = "equal check scores" if judge == CHECKS_JUDGE else "including verdicts that flipped with the order"
    header = f"{len(battles)} battles judged by '{judge}', {ties} ties ({why}); anchor: {anchor}\n"
    return header + table(["variant", "rating", "95% CI", "battles", f"win rate vs {anchor}", "LC win rate"], lines)


def drift_table(findings: Sequence[DriftFinding]) -> str:
    rows = [[f.variant, f.suite, f.metric, str(f.runs), f"{f.latest:.3f}", f"{f.reference:.3f}",
             f"{f.statistic:.2f}/{f.threshold:.2f}", f.state] for f in findings]
    return table(["variant", "suite", "metric", "runs", "latest", "reference", "cusum/h", "state"], rows)


def firings_table(firings: Sequence[Any]) -> str:
    rows = [[f.schedule, f.slot, f.started_at.strftime("%Y-%m-%d %H:%M:%S"),
             f"{(f.finished_at - f.started_at).total_seconds():.0f}s" if f.finished_at else "-", f.status,
             f"{sum(v == 'succeeded' for v in f.runs.values())}/{len(f.runs)} ok",
             ", ".join(f.alerts.get("firing", [])) or (f.error or "")[:80]] for f in firings]
    return table(["schedule", "slot", "started", "took", "status", "runs", "alerts / error"], rows)
