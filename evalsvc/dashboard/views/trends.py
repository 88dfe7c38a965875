"""Trends: one metric over time per variant, with interval bands, the baseline overlaid and event markers."""

from datetime import timedelta

import streamlit as st

from evalsvc.dashboard import charts, ui
from evalsvc.store.schema import utcnow

cfg = ui.config()
st.title("Trends")
names = ui.query(cfg, "names")
suite = ui.pick("Suite", "suite", names["suites"])
if suite is None:
    st.info("The store has no runs yet: `evalsvc run` fills it.")
    st.stop()
divergence = ui.query(cfg, "divergence_metrics", suite)  # kld & co: measured by comparisons with the baseline
metric = ui.pick("Metric", "metric", ui.query(cfg, "metrics_of", suite) + divergence, default="pass")
variants = ui.pick_many("Variants", "variant", names["variants"])
window = ui.pick("Window (days)", "days", ["7", "30", "90", "365", "all"], default="90")
since = None if window in (None, "all") else (utcnow() - timedelta(days=int(window))).replace(minute=0, second=0, microsecond=0)
if metric is None:
    st.info(f"No metric points on {suite} yet.")
    st.stop()
vs_baseline = metric in divergence
points = ui.query(cfg, "divergence_series" if vs_baseline else "series", suite, metric, tuple(variants) or None, since)
if points.empty:
    st.info(f"No points of {metric} on {suite} in this window; widen it in the sidebar.")
    st.stop()
marks = ui.query(cfg, "markers", suite, metric, tuple(variants) or None, since)
baselines = sorted(set(cfg.baselines.values()) & set(points["variant"]))
colours = charts.variant_colours(names["variants"], set(cfg.baselines.values()))
higher = bool(points["higher_is_better"].iloc[0])
if vs_baseline:
    against = ", ".join(sorted(set(points["baseline"])))
    st.caption(f"{metric} on {suite}: each candidate run's divergence from its baseline ({against}) as the comparison "
               f"with it measured it, {'higher' if higher else 'lower'} is better; bands are that comparison's interval "
               "(docs/divergence.md); markers: ▼ regression vs baseline (where gate.margins makes it decide), ◆ upstream "
               "change.")
else:
    st.caption(f"{metric} on {suite}, {'higher' if higher else 'lower'} is better; bands are each run's 95% interval"
               + (f"; dark and dashed: the baseline {', '.join(baselines)}" if baselines else "")
               + "; markers: ▼ regression vs baseline, ◆ upstream change, ■ new checkpoint (fingerprint).")
st.altair_chart(charts.trend(points, marks, metric, baselines, colours), width="stretch")
if not marks.empty:
    st.subheader("Events")
    against = marks["event"] == "regression"  # a regression's detail is the baseline it was compared with
    ui.table(marks.assign(detail=marks["detail"].where(~against, "vs " + marks["detail"].astype(str))),
             ["run_ts", "event", "variant", "detail"], detail="large")
