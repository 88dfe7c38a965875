"""Drift: each series against its own history: values, the detector's statistic against its threshold, alarms,
acknowledgements and upstream flags. Drift alerts link here."""

import pandas as pd
import streamlit as st

from evalsvc.dashboard import charts, ui
from evalsvc.service.drift_family import spec

cfg = ui.config()
st.title("Drift")
names = ui.query(cfg, "names")
suite = ui.pick("Suite", "suite", names["suites"])
if suite is None:
    st.info("The store has no runs yet: `evalsvc run` on a schedule fills it.")
    st.stop()
watched = spec(cfg)  # the families evalsvc.yaml watches, as `evalsvc drift` and the service check them
findings = ui.query(cfg, "drift_findings", suite, watched)
if findings.empty:
    st.info(f"No series on {suite} yet.")
    st.stop()
st.caption(f"Watched series of {suite} (variant x metric, newest checkpoint): the state `evalsvc drift` reports, each "
           f"scanned at its family's level (alpha {cfg.drift.alpha:g} for any false alarm in 20 looks across the family: "
           "every variant x suite x drift.metrics, and x drift.speed_metrics). Acknowledge an alarm with "
           "`evalsvc drift ack VARIANT/SUITE/METRIC --note ...`.")
ui.table(findings.rename(columns={"threshold": "h"}), ["variant", "metric", "runs", "latest", "reference", "h", "state",
                                                        "regression"], state="large")
variant = ui.pick("Variant", "variant", sorted(findings["variant"].unique()))
metric = ui.pick("Metric", "metric", sorted(findings[findings["variant"] == variant]["metric"].unique()), default="pass")
if variant is None or metric is None:
    st.stop()
view = ui.query(cfg, "drift_series", suite, variant, metric, watched)
points, events = view["points"], view["events"]
if points.empty:
    st.info(f"No points of {metric} for {variant} on {suite}.")
    st.stop()
st.subheader(f"{variant} · {suite} · {metric}: {view['state']['state'].iloc[0]}")
colour = charts.variant_colours(names["variants"], set(cfg.baselines.values()))[variant]  # its colour on Trends too
st.altair_chart(charts.drift_values(points, events, metric, colour), width="stretch")
st.caption(f"The detector's statistic at each run (a self-starting CUSUM, restarted at each alarm) against its threshold "
           f"h = {view['state']['threshold'].iloc[0]:.2f}: the h in the table above, for its family's share of alpha "
           "(alpha / the family's size).")
span = pd.concat([points["run_ts"], events["run_ts"]]) if not events.empty else points["run_ts"]
st.altair_chart(charts.drift_statistic(points.dropna(subset=["statistic"]), colour, span), width="stretch")
if not events.empty:
    st.subheader("Events")
    ui.table(events.sort_values("run_ts"), ["run_ts", "event", "detail"], detail="large")
