"""Trade-off: each candidate's quality change with its interval against its speed change, from its newest comparison."""

import streamlit as st

from evalsvc.dashboard import charts, ui

cfg = ui.config()
st.title("Quality vs speed")
frame = ui.query(cfg, "tradeoff", list(cfg.gate.primary))
timed = frame[frame["tokens_per_s_ratio"].notna()] if not frame.empty else frame
if timed.empty:
    st.info("No comparison with speed yet: `evalsvc gate` (or a schedule with a family baseline) compares quality and "
            "speed paired; speed needs answers the runs requested (the response cache answers without timing).")
    st.stop()
axis = ui.pick("Vertical axis", "y", ["quality", "kld"], default="quality")
if axis == "kld":
    timed = timed[timed["kld"].notna()]
    if timed.empty:
        st.info("No comparison with both runs' log-probabilities yet: kld needs divergence.top_logprobs > 0 and "
                "endpoints that return them (docs/divergence.md).")
        st.stop()
    st.caption("kld from the baseline (mean per-token KL(baseline ‖ candidate), nats, a top-k lower bound) pooled over "
               "the suites with its interval, coloured by the verdict its comparison stored, against the speed ratio to "
               "the family's baseline (tokens per second of the candidate ÷ the baseline's). Down and to the right is "
               "better; above a dashed line the kld exceeds the bound gate.margins.kld.max sets, where one does.")
    st.altair_chart(charts.tradeoff(timed, y="kld"), width="stretch")
    shown = timed.assign(kld_ci=[f"{k:.4f} [{lo:.4f}, {hi:.4f}]" for k, lo, hi in
                                 zip(timed["kld"], timed["kld_low"], timed["kld_high"], strict=True)])
    ui.table(shown, ["candidate", "baseline", "verdict", "kld_ci", "kld_max", "tokens_per_s_ratio", "latency_p50_ratio",
                     "latency_p95_ratio", "compared_at"])
    st.stop()
st.caption("Δ quality pooled over the suites with its interval, coloured by the verdict its comparison stored, "
           "against the speed ratio to the family's baseline: output tokens per second of the candidate ÷ the "
           "baseline's, paired on the cases both runs requested. Up and to the right is better; below the dashed line "
           "the quality loss exceeds the margin.")
st.altair_chart(charts.tradeoff(timed), width="stretch")
ui.table(timed.assign(delta_ci=[ui.fmt_delta(d, lo, hi) for d, lo, hi in
                                zip(timed["delta"], timed["ci_low"], timed["ci_high"], strict=True)]),
         ["candidate", "baseline", "verdict", "metric", "delta_ci", "margin", "tokens_per_s_ratio", "latency_p50_ratio",
          "latency_p95_ratio", "compared_at"])
