"""Overview: every variant x suite with its newest verdict against the baseline; problems first."""

from datetime import timedelta

import streamlit as st

from evalsvc.dashboard import charts, sequential, ui
from evalsvc.verdicts.compare import POOLED

cfg = ui.config()
st.title("Overview")
frame = ui.query(cfg, "overview", dict(cfg.baselines), timedelta(hours=cfg.dashboard.stale_after_hours))
if frame.empty:
    st.info("The store has no runs yet: `evalsvc run` (or `evalsvc serve` with schedules) fills it.")
    st.stop()
variants = ui.pick_many("Variants", "variant", sorted(frame["variant"].unique()))
suites = ui.pick_many("Suites", "suite", sorted(frame["suite"].unique()))
if variants:
    frame = frame[frame["variant"].isin(variants)]
if suites:
    frame = frame[frame["suite"].isin(suites)]

pooled = ui.query(cfg, "latest_verdicts")  # each row carries its comparison's stored overall verdict
pooled = pooled[(pooled["scope"] == POOLED) & pooled["metric"].isin(cfg.gate.primary)] if not pooled.empty else pooled
if variants and not pooled.empty:
    pooled = pooled[pooled["candidate"].isin(variants)]
cells = frame[frame["status"] == "regression"]
# the verdict its newest comparison stored (the gate's decision), never decided again here from the rows shown
regressed = sorted(set(pooled[pooled["overall"] == "regression"]["candidate"]) if not pooled.empty else set(cells["variant"]))

counts = frame["status"].value_counts()
cols = st.columns(4)
cols[0].metric("Regressions", len(regressed), help="candidates whose newest comparison with the baseline regressed")
cols[1].metric("Failed runs", int(counts.get("failed run", 0)))
cols[2].metric("Upstream changes", int(counts.get("upstream change", 0)))
cols[3].metric("Stale", int(frame["stale"].sum()), help=f"no succeeded run in {cfg.dashboard.stale_after_hours:g} h")

for name in regressed:  # one callout per regressed candidate, like the alert
    gate = pooled[pooled["candidate"] == name] if not pooled.empty else pooled
    parts, baseline = [], None
    for r in gate.itertuples():
        baseline = r.baseline
        parts.append(f"all suites pooled: {r.metric} Δ {ui.fmt_delta(r.delta, r.ci_low, r.ci_high)} ({r.overall})")
    for r in cells[cells["variant"] == name].itertuples():
        baseline = baseline or r.baseline
        parts.append(f"{r.suite}: {r.metric} Δ {ui.fmt_delta(r.delta, r.ci_low, r.ci_high)}")
    stop = next((s for s in gate["sequential"] if isinstance(s, dict)), None) if not gate.empty else None
    st.error(f"**Regression: {name} vs {baseline}**: " + "; ".join(parts) + " (margin and intervals as in `evalsvc gate`"
             + (f"; {sequential.note(stop)}" if stop else "") + "). "
             f"[Compare]({ui.link('compare', baseline=baseline or '', candidate=name)})")
for r in frame[frame["status"] == "failed run"].itertuples():
    st.warning(f"**Failed run: {r.variant} on {r.suite}** (an endpoint problem, not a quality verdict): {r.error or ''} "
               f"[Runs]({ui.link('runs', variant=r.variant, suite=r.suite)})")
for r in frame[frame["status"] == "upstream change"].itertuples():
    st.warning(f"**Upstream change: {r.variant} on {r.suite}**: {r.upstream_change} "
               f"[Trends]({ui.link('trends', suite=r.suite, variant=r.variant)})")

st.altair_chart(charts.status_matrix(frame), width="stretch")

if not pooled.empty:
    st.subheader("Gate verdict per candidate")
    st.caption("Each candidate's newest comparison with its baseline, as stored when `evalsvc gate` or a schedule made "
               "it; Δ is the gate metric pooled over the suites. *Sequential*: where an `evalsvc gate --sequential` "
               "stopped (blank for a fixed comparison).")
    ui.table(pooled.assign(delta_ci=[ui.fmt_delta(d, lo, hi) for d, lo, hi in
                                     zip(pooled["delta"], pooled["ci_low"], pooled["ci_high"], strict=True)],
                           sequential=[sequential.note(s).removeprefix("sequential: ") if isinstance(s, dict) else ""
                                       for s in pooled["sequential"]]),
             ["candidate", "baseline", "overall", "metric", "delta_ci", "margin", "n", "flips_down", "flips_up", "sequential",
              "compared_at"])

st.subheader("Every variant x suite")
table = frame.assign(delta_ci=[ui.fmt_delta(d, lo, hi) for d, lo, hi in
                               zip(frame["delta"], frame["ci_low"], frame["ci_high"], strict=True)])
ui.table(table, ["variant", "suite", "status", "metric", "delta_ci", "baseline", "last_run", "last_status", "stale"])
