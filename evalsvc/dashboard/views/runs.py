"""Runs and alerts: run history with durations and errors, alerts and whether they were sent, schedule firings."""

import streamlit as st

from evalsvc.dashboard import charts, ui

cfg = ui.config()
st.title("Runs and alerts")
names = ui.query(cfg, "names")
variant = ui.pick("Variant", "variant", ["all", *names["variants"]])
suite = ui.pick("Suite", "suite", ["all", *names["suites"]])
status = ui.pick("Status", "status", ["all", "succeeded", "failed", "running", "cancelled", "planned"])
runs = ui.query(cfg, "runs", None if variant == "all" else variant, None if suite == "all" else suite,
                None if status == "all" else status)
totals = ui.query(cfg, "run_totals")
failed = runs[runs["status"] == "failed"]
cols = st.columns(3)
cols[0].metric("Runs shown", len(runs))
cols[1].metric("Failed", len(failed))
cols[2].metric("Median duration (s)", f"{runs['duration_s'].median():.0f}" if runs["duration_s"].notna().any() else "-")
if not failed.empty:
    st.warning(f"{len(failed)} failed runs: endpoint or infrastructure problems, never counted as quality. Newest: "
               f"{failed.iloc[0]['variant']} on {failed.iloc[0]['suite']}: {failed.iloc[0]['error']}")
if not runs.empty:
    st.altair_chart(charts.durations(runs), width="stretch")
ui.table(runs, error="large")
with st.expander("All-time totals per variant and status"):
    ui.table(totals)

st.subheader("Alerts")
alerts = ui.query(cfg, "alerts", None if variant == "all" else variant)
if alerts.empty:
    st.caption("No alerts.")
else:
    for a in alerts[alerts["status"] == "open"].itertuples():
        st.error(f"open {a.kind} alert: {a.summary} (since {ui.when(a.opened_at)}; {a.sent_to})")
    ui.table(alerts, summary="large")

st.subheader("Schedule firings")
ui.table(ui.query(cfg, "firings"))
