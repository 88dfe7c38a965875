"""Drift: each series against its own history: values, the detector's statistic against its threshold, alarms,
acknowledgements and upstream flags. Drift alerts link here."""

import streamlit as st

from evalsvc.dashboard import charts, ui

cfg = ui.config()
st.title("Drift")
names = ui.query(cfg, "names")
suite = ui.pick("Suite", "suite", names["suites"])
if suite is None:
    st.info("The store has no runs yet: `evalsvc run` on a schedule fills it.")
    st.stop()
findings = ui.query(cfg, "drift_findings", suite, cfg.drift.warmup, cfg.drift.alpha)
if findings.empty:
    st.info(f"No series on {suite} yet.")
    st.stop()
st.caption(f"Series of {suite} (variant x metric, newest checkpoint): the state `evalsvc drift` reports, decided together "
           f"(Holm, alpha {cfg.drift.alpha:g} for any false alarm in 20 looks across them). Acknowledge an alarm with "
           "`evalsvc drift ack VARIANT/SUITE/METRIC --note ...`.")
st.dataframe(findings[["variant", "metric", "runs", "latest", "reference", "state", "regression"]], hide_index=True,
             width="stretch")
variant = ui.pick("Variant", "variant", sorted(findings["variant"].unique()))
metric = ui.pick("Metric", "metric", sorted(findings[findings["variant"] == variant]["metric"].unique()), default="pass")
if variant is None or metric is None:
    st.stop()
view = ui.query(cfg, "drift_series", suite, variant, metric, cfg.drift.warmup, cfg.drift.alpha)
points, events = view["points"], view["events"]
if points.empty:
    st.info(f"No points of {metric} for {variant} on {suite}.")
    st.stop()
st.subheader(f"{variant} · {suite} · {metric}: {view['state']['state'].iloc[0]}")
colour = charts.variant_colours(names["variants"], set(cfg.baselines.values()))[variant]  # its colour on Trends too
st.altair_chart(charts.drift_values(points, events, metric, colour), width="stretch")
st.caption("The detector's statistic at each run (a self-starting CUSUM, restarted at each alarm) against its threshold "
           "for this series alone; the service shares alpha across the series of a firing, so its threshold is higher.")
st.altair_chart(charts.drift_statistic(points.dropna(subset=["statistic"]), colour), width="stretch")
if not events.empty:
    st.subheader("Events")
    st.dataframe(events, hide_index=True, width="stretch")
